"""The helpers behind the exercise solutions of notebooks 09 (voting), 10 (pointing) and 11 (tables)."""
import numpy as np
import pandas as pd
import pytest
import torch

from fer_kit import ensemble, explain, reproduce


def test_majority_vote_counts_votes_and_breaks_ties_by_the_mean_probability():
    # 3 members, 2 frames, 3 classes: frame 0 gets votes 0, 0, 2 -> class 0 although member 3 is very sure of 2
    logits = np.array([[[1.0, 0.0, 0.0], [5.0, 0.0, 0.0]],
                       [[1.0, 0.0, 0.0], [0.0, 5.0, 0.0]],
                       [[0.0, 0.0, 9.0], [0.0, 0.0, 1.0]]])
    classes, tied = ensemble.majority_vote(logits)
    assert classes[0] == 0 and not tied[0]
    assert ensemble.combine(logits, "soft").argmax(1)[0] == 2          # soft voting follows the sure member
    # frame 1: one vote each, a three-way tie: the highest mean probability wins (classes 0 and 1 are level
    # there, so argmax takes the first)
    assert tied[1] and classes[1] == np.argmax(ensemble.softmax(logits).mean(0)[1])


def test_first_k_scores_start_at_the_first_member_and_end_at_the_full_ensemble():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 8, 60)
    logits = rng.normal(size=(3, 60, 8))
    growth = ensemble.first_k_scores(logits, labels, 8)
    score = ensemble.score_fn(8)
    assert len(growth) == 3
    assert growth[0] == pytest.approx(score(labels, logits[0].argmax(1)))
    assert growth[-1] == pytest.approx(score(labels, ensemble.combine(logits, "soft").argmax(1)))


def _faces(n: int) -> explain.Faces:
    masks = np.zeros((n, 4, 4), bool)
    masks[:, :2] = True
    return explain.Faces(images=torch.zeros(n, 3, 4, 4), pixels=np.zeros((n, 4, 4, 3)), labels=np.ones(n, int),
                         classes=("Neutral", "Anger"), landmarks=np.zeros((n, 68, 2)), masks=masks,
                         videos=np.repeat([f"v{i}" for i in range(n // 2)], 2))


def _scores(correct, score, method="Grad-CAM", state="trained"):
    return pd.DataFrame({"face": range(len(score)), "class": "Anger", "method": method, "layer": "trunk",
                         "score": score, "empty_map": False, "correct": correct, "model": "dan", "state": state})


def test_pointing_by_outcome_splits_right_from_wrong_with_an_interval_over_videos():
    n = 40
    correct = np.arange(n) % 4 < 2                       # every video holds two right or two wrong faces
    score = np.where(correct, 1.8, 0.9) + np.linspace(0, 0.1, n)
    out = explain.pointing_by_outcome(_scores(correct, score), _faces(n), "trunk", seed=0)
    assert out["n_right"] == 20 and out["n_wrong"] == 20 and out["videos"] == 20
    assert out["right"] == pytest.approx(score[correct].mean()) and out["gap"]["verdict"] == "better"
    assert out["gap"]["low"] <= out["gap"]["gain"] <= out["gap"]["high"]
    assert "beyond the noise" in explain.outcome_sentence(out)
    assert explain.pointing_by_outcome(_scores(np.ones(n, bool), score), _faces(n), "trunk") is None
    assert "nothing to compare" in explain.outcome_sentence(None)


def test_method_gaps_reuse_the_scores_and_say_which_method_training_moved():
    n = 20
    correct = np.ones(n, bool)
    parts = [_scores(correct, np.full(n, 1.5), "Grad-CAM", "trained"), _scores(correct, np.full(n, 1.0), "Grad-CAM", "untrained"),
             _scores(correct, np.full(n, 1.9), "EigenCAM", "trained"), _scores(correct, np.full(n, 1.8), "EigenCAM", "untrained")]
    # nothing is missing, so the networks are never asked for a map
    gaps = explain.method_gaps(pd.concat(parts), _faces(n), {"trained": None, "untrained": None}, layer="trunk")
    assert gaps["Grad-CAM"]["gap"]["gain"] == pytest.approx(0.5) and gaps["EigenCAM"]["gap"]["gain"] == pytest.approx(0.1)
    sentence = explain.method_gaps_sentence(gaps)
    assert "EigenCAM scores highest, but training moved Grad-CAM most" in sentence


def test_headline_gaps_measure_the_kit_against_the_paper_and_its_floor():
    cells = pd.DataFrame([
        {"paper": "A", "table": "Table 3", "method": "DAN", "metric": "P_EXPR", "reported": 0.33, "kit": 0.20},
        {"paper": "A", "table": "Table 3", "method": "Ensemble", "metric": "P_EXPR", "reported": 0.35, "kit": None},
        {"paper": "C", "table": "Table 2", "method": "SCAN", "metric": "F1", "reported": 0.37, "kit": 0.1},
        {"paper": "E", "table": "Section 3", "method": "bag", "metric": "LSD_F1", "reported": 0.71, "kit": 0.05}])
    rep = reproduce.Reproduction(cells=cells, rows=pd.DataFrame(), runs=pd.DataFrame(), config=None,
                                 floors={("A", "Table 3"): ({"P_EXPR": 0.05}, None), ("E", "Section 3"): None})
    out = reproduce.headline_gaps(rep)
    assert list(out["method"]) == ["DAN", "bag"]          # headline metrics with a kit value only
    assert out.loc[0, "kit_minus_paper"] == pytest.approx(-0.13) and out.loc[0, "kit_minus_floor"] == pytest.approx(0.15)
    assert np.isnan(out.loc[1, "floor"]) and np.isnan(out.loc[1, "kit_minus_floor"])


def test_pointing_by_outcome_gives_no_interval_when_one_group_sits_in_one_video():
    n = 40
    correct = np.arange(n) < 2                            # the right faces all come from video v0
    out = explain.pointing_by_outcome(_scores(correct, np.linspace(1, 2, n)), _faces(n), "trunk")
    assert np.isnan(out["gap"]["low"]) and "too few videos" in explain.outcome_sentence(out)


def test_method_gaps_score_a_method_the_run_left_out():
    """Section 5 of notebook 10 scored Grad-CAM only: EigenCAM is scored here, on the same faces for both nets."""
    from fer_kit.data.synthetic import render_faces
    from fer_kit.labels import EXPR_CLASSES
    from fer_kit.models import create_model

    f = render_faces(n=12, size=112, seed=1)
    faces = explain.faces_from_arrays(f["images"], f["labels"], f["landmarks"], EXPR_CLASSES, size=48)
    torch.manual_seed(0)
    nets = {"trained": create_model("test_dan").eval(), "untrained": create_model("test_dan").eval()}
    layer = explain.target_layers(nets["trained"])[0]
    scores = pd.concat([explain.pointing_scores(net, faces, ["gradcam"]).assign(model="dan", state=state)
                        for state, net in nets.items()])
    scores["method"] = scores["method"].map(explain.METHOD_LABELS)
    gaps = explain.method_gaps(scores, faces, nets, ("gradcam", "eigencam"), layer=layer)
    assert set(gaps) == {"Grad-CAM", "EigenCAM"} and gaps["EigenCAM"]["faces"] == int(faces.scorable.sum())
    assert "scores highest" in explain.method_gaps_sentence(gaps)
