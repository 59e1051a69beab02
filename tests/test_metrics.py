import json

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from fer_kit import metrics


def test_matches_sklearn_on_random_labels():
    rng = np.random.default_rng(0)
    t, p = rng.integers(0, 8, 500), rng.integers(0, 8, 500)
    assert metrics.per_class_f1(t, p) == pytest.approx(f1_score(t, p, average=None))
    assert metrics.p_expr(t, p) == pytest.approx(f1_score(t, p, average="macro"))
    assert metrics.accuracy(t, p) == pytest.approx(accuracy_score(t, p))


def test_class_never_predicted_counts_zero():
    t = np.array([0, 0, 1, 1])
    p = np.array([0, 0, 0, 0])                 # class 1 never predicted
    f1 = metrics.per_class_f1(t, p, num_classes=2)
    assert f1.tolist() == pytest.approx([2 * 0.5 / 1.5, 0.0])
    assert metrics.p_expr(t, p, num_classes=2) == pytest.approx(f1.mean())


def test_classes_absent_everywhere_still_count_over_eight():
    t = p = np.array([0, 1, 1])                # perfect on 2 classes, 6 classes never seen
    assert metrics.p_expr(t, p, num_classes=8) == pytest.approx(2 / 8)


def test_all_one_class():
    t = np.full(10, 4)
    assert metrics.p_expr(t, t) == pytest.approx(1 / 8)
    assert metrics.accuracy(t, np.zeros(10, int)) == 0.0


def test_confusion_and_report():
    t, p = torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 2])
    cm = metrics.confusion(t, p)
    assert cm.shape == (8, 8) and cm.sum() == 4 and cm[1, 2] == 1
    rep = metrics.expr_report(t, p, class_names=list("ABCDEFGH"))
    json.dumps(rep)
    assert rep["support"]["C"] == 2 and rep["n"] == 4 and rep["per_class_f1"]["A"] == 1.0


@pytest.mark.parametrize("t,p,match", [([0, 1], [0], "2 labels but y_pred has 1"),
                                       ([0, -1], [0, 0], r"\[-1\]"), ([], [], "no samples"),
                                       ([0, 8], [0, 0], r"\[8\]")])
def test_bad_input(t, p, match):
    with pytest.raises(ValueError, match=match):
        metrics.p_expr(np.array(t, int), np.array(p, int))
