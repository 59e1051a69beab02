"""Paper D's reports: P over the three tasks, single-task scores, the trivial predictor, its table layout."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fer_kit import baselines, metrics, papers, plots
from fer_kit.data.table import DropReport, FrameTable
from fer_kit.labels import EXPR_CLASSES

from helpers import au_split


def _split(n=60, seed=0):
    rng = np.random.default_rng(seed)
    va = rng.uniform(-1, 1, (n, 2)).astype(np.float32)
    va[:5] = np.nan                                                   # invalid VA (ABAW's -5 once read)
    au = (rng.random((n, 12)) < 0.3).astype(np.float32)
    au[5:8] = -1
    labels = rng.integers(0, 8, n)
    labels[8:10] = -1
    return FrameTable([f"v{i // 10}/{i:05d}.jpg" for i in range(n)], labels, np.array([f"v{i // 10}" for i in range(n)]),
                      EXPR_CLASSES, DropReport("test"), va=va, au=au)


def _targets(t):
    return {"va": np.nan_to_num(t.va, nan=-5.0), "expr": t.labels, "au": t.au}


def test_task_report_scores_each_task_and_their_sum():
    t = _split()
    rng = np.random.default_rng(1)
    outs = {"va": rng.uniform(-1, 1, (60, 2)), "expr": rng.normal(size=(60, 8)), "au": rng.random((60, 12))}
    full = metrics.task_report(outs, _targets(t), EXPR_CLASSES)
    assert full["score"] == pytest.approx(full["ccc_mean"] + full["p_expr"] + full["au_f1_mean"])
    ok = t.labels >= 0
    assert full["p_expr"] == pytest.approx(metrics.p_expr(t.labels[ok], outs["expr"][ok].argmax(1)))
    va_only = metrics.task_report({"va": outs["va"]}, _targets(t), EXPR_CLASSES)
    assert va_only["score"] == full["ccc_mean"]
    au_only = metrics.task_report({"au": outs["au"]}, _targets(t), EXPR_CLASSES)
    assert au_only["score"] == full["au_f1_mean"]
    with pytest.raises(ValueError, match="no report"):
        metrics.task_report({"va": outs["va"], "au": outs["au"]}, _targets(t), EXPR_CLASSES)


def test_trivial_multitask_predictor():
    train_t, val_t = _split(seed=2), _split(seed=3)
    r = baselines.trivial_multitask(train_t, val_t)
    assert r["ccc_mean"] == 0.0 and r["au_f1_mean"] == 0.0          # constant VA, no AU ever active
    counts = np.bincount(train_t.labels[train_t.labels >= 0], minlength=8)
    ok = val_t.labels >= 0
    pred = np.full(ok.sum(), counts.argmax())
    assert r["p_expr"] == pytest.approx(metrics.p_expr(val_t.labels[ok], pred))
    assert r["p_mtl"] == pytest.approx(r["p_expr"])
    every = baselines.trivial_multitask(train_t, val_t, au="all")       # every AU always on: F1 = 2p / (1 + p)
    valid = val_t.au >= 0
    rate = np.array([val_t.au[valid[:, k], k].mean() for k in range(val_t.au.shape[1])])
    assert every["au_f1_mean"] == pytest.approx(np.mean(2 * rate / (1 + rate)))
    assert every["au_f1_mean"] > 0 and every["p_expr"] == r["p_expr"]
    with pytest.raises(ValueError, match="au must be"):
        baselines.trivial_multitask(train_t, val_t, au="some")


def test_paper_d_table_layout_and_row():
    report = {"ccc_valence": 0.5, "ccc_arousal": 0.3, "ccc_mean": 0.4, "p_expr": 0.25, "au_f1_mean": 0.45}
    row = papers.paper_d_row(report)
    assert row["P"] == pytest.approx(1.1) and row["CCC_VA"] == 0.4
    tuned = papers.paper_d_row(report, au_f1_mean=0.5)
    assert tuned["F1_AU"] == 0.5 and tuned["P"] == pytest.approx(1.15)
    table = papers.side_by_side_wide("D", "Table 3", {"kit": row}, "synthetic")
    assert list(table.columns) == ["source", "dataset", "method", "CCC_V", "CCC_A", "CCC_VA", "F1_expr", "F1_AU", "P"]
    reported = table[table["method"] == "DDAMFN fine-tuned (multi-task) + AU thresholds"].iloc[0]
    assert reported["F1_AU"] == 0.51 and reported["P"] == 1.327                       # paper D Table 3
    assert table.iloc[-1]["source"].startswith("fer_kit") and table.iloc[-1]["P"] == pytest.approx(1.1)


def test_multitask_figures(tmp_path):
    names = [f"AU{i}" for i in range(12)]
    plots.au_f1_thresholds(dict.fromkeys(names, 0.3), dict.fromkeys(names, 0.5), dict.fromkeys(names, 0.35),
                           path=tmp_path / "au.png")
    va = np.random.default_rng(0).uniform(-1, 1, (50, 2))
    va[:3] = -5
    plots.va_scatter(va, va * 0.5, path=tmp_path / "va.png")
    assert (tmp_path / "au.png").stat().st_size > 1000 and (tmp_path / "va.png").stat().st_size > 1000


def test_threshold_study_tunes_on_half_the_videos_and_scores_the_other():
    rng = np.random.default_rng(0)
    n = 400
    truth = (rng.random((n, 12)) < 0.3).astype(np.float32)
    prob = np.clip(0.2 + 0.2 * truth + rng.normal(0, 0.05, (n, 12)), 0, 1)   # miscalibrated: positives ~0.4
    videos = np.array([f"v{i % 10}" for i in range(n)])
    study = metrics.au_threshold_study(truth, prob, videos, seed=1)
    assert study["held_out"]["tuned"] > study["held_out"]["fixed"] + 0.2       # 0.5 misses every positive
    assert study["same_frames"]["tuned"] >= study["held_out"]["tuned"] - 0.05
    assert all(0.25 <= v <= 0.4 for v in study["thresholds"].values())
    with pytest.raises(ValueError, match="two validation videos"):
        metrics.au_threshold_study(truth, prob, np.array(["v"] * n))


def test_reference_sentence_says_what_a_score_does_not_beat():
    s = baselines.reference_sentence("run", 0.35, {"untrained": 0.10, "every AU": 0.40, "same": 0.345})
    assert s == ("run: P 0.350; beats untrained (0.100); ties with same (0.345); "
                 "does NOT beat every AU (0.400).")


def test_au_floors_reads_base_rates_and_hardest_first():
    truth, prob, _ = au_split(np.random.default_rng(2))
    truth[:, 3] = 0
    truth[:5, 3] = 1                                            # AU6: rare, and scored below the others
    prob[:, 3] = 0.1
    report = metrics.au_report(truth, prob)
    floors = baselines.au_floors(report)
    assert floors.index[0] == "AU6" and list(floors["F1"]) == sorted(floors["F1"])
    p = 5 / len(truth)
    assert floors.loc["AU6", "base rate"] == pytest.approx(p)
    assert floors.loc["AU6", "always-active F1"] == pytest.approx(2 * p / (1 + p))
    # the every-AU-active predictor scores exactly that floor
    always = metrics.au_report(truth, np.ones_like(prob))
    assert floors["always-active F1"].to_dict() == pytest.approx(always["per_au_f1"])
    sentence = baselines.hardest_au_sentence(floors)
    assert sentence.startswith("hardest: AU6, F1 0.000") and "the rarest is AU6" in sentence and "of 12 AUs beat" in sentence


def test_hardest_au_sentence_when_every_f1_is_the_same():
    truth, prob, _ = au_split(np.random.default_rng(3))
    floors = baselines.au_floors(metrics.au_report(truth, np.zeros_like(prob)))    # never active: every F1 is 0
    sentence = baselines.hardest_au_sentence(floors)
    assert "F1 (or the base rate) does not vary across the AUs" in sentence and "0 of 12 AUs beat" in sentence
    assert sentence.startswith("hardest: 12 AUs tie (")
    # answering "active" everywhere ties with the always-active floor: no AU beats it
    assert "0 of 12 AUs beat" in baselines.hardest_au_sentence(baselines.au_floors(metrics.au_report(truth, np.ones_like(prob))))


def test_mean_shape_landmarks_is_the_mean_shape_baselines_prediction():
    landmarks = torch.from_numpy(np.random.default_rng(6).uniform(-0.6, 0.6, (8, 68, 2)))
    train = SimpleNamespace(landmarks=landmarks[:5])
    mean = baselines.mean_shape_landmarks(train, 3)
    assert mean.shape == (3, 68, 2) and np.allclose(mean[2], landmarks[:5].numpy().mean(0))
    val = SimpleNamespace(landmarks=landmarks[5:])
    assert baselines.mean_shape(train, val) == metrics.landmark_errors(mean, landmarks[5:].numpy())


class _Frames:
    """A split as the baselines read one: len, image(i) as uint8 (3, H, W), labels, table.classes."""

    def __init__(self, images, labels):
        self.images, self.labels, self.table = images, labels, SimpleNamespace(classes=["down", "up"])

    def __len__(self):
        return len(self.labels)

    def image(self, i):
        return self.images[i]


def test_pixel_logistic_regression_returns_the_predictions_its_report_scores():
    rng = np.random.default_rng(0)

    def split(n):                                       # class 1 = a bright top half, class 0 = a bright bottom half
        labels = rng.integers(0, 2, n)
        images = rng.integers(0, 60, (n, 3, 16, 16)).astype(np.uint8)
        for i, k in enumerate(labels):
            images[i, :, :8] += 150 * int(k == 1)
            images[i, :, 8:] += 150 * int(k == 0)
        return _Frames(torch.from_numpy(images), torch.from_numpy(labels))

    train, val = split(40), split(30)
    report, pred = baselines.pixel_logistic_regression(train, val, size=8, return_predictions=True)
    assert pred.shape == (30,) and report == metrics.expr_report(val.labels.numpy(), pred, 2, ["down", "up"])
    assert report["accuracy"] == 1.0                    # the two classes differ in every pixel
    assert baselines.pixel_logistic_regression(train, val, size=8) == report
