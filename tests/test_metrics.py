import json

import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, f1_score

from fer_kit import metrics

from helpers import au_split


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


# ---- paper C (ABAW 2020) and paper E (LSD) scores ----

def test_abaw2020_matches_sklearn():
    rng = np.random.default_rng(1)
    t, p = rng.integers(0, 7, 300), rng.integers(0, 6, 300)      # class 6 never predicted
    want = 0.67 * f1_score(t, p, labels=range(7), average="macro", zero_division=0) + 0.33 * accuracy_score(t, p)
    assert metrics.abaw2020_score(t, p) == pytest.approx(want)
    with pytest.raises(ValueError, match=r"\[7\]"):              # "Other" is not an ABAW 2020 class
        metrics.abaw2020_score(np.array([0, 7]), np.array([0, 0]))


def test_lsd_mean_f1_absent_class_counts_zero():
    t = p = np.array([0, 1, 2, 3, 4, 4])                         # Surprise (5) never seen nor predicted
    assert metrics.lsd_mean_f1(t, p) == pytest.approx(5 / 6)
    rng = np.random.default_rng(2)
    t, p = rng.integers(0, 6, 200), rng.integers(0, 6, 200)
    assert metrics.lsd_mean_f1(t, p) == pytest.approx(f1_score(t, p, labels=range(6), average="macro"))
    with pytest.raises(ValueError, match=r"\[6\]"):
        metrics.lsd_mean_f1(np.array([0, 6]), np.array([0, 0]))


# ---- valence / arousal CCC ----

def test_ccc_hand_formula():
    t, p = np.array([1.0, 2.0, 3.0, 4.0]), np.array([2.0, 2.0, 4.0, 5.0])
    # means 2.5, 3.25; population var(t) = 1.25, var(p) = 1.6875, cov = (1.5*1.25 + 0.5*1.25 + 0.5*0.75
    # + 1.5*1.75) / 4 = 1.375
    want = 2 * 1.375 / (1.25 + 1.6875 + 0.75 ** 2)
    assert metrics.ccc(t, p) == pytest.approx(want)
    assert metrics.ccc(t, t) == pytest.approx(1.0)
    assert metrics.ccc(t, -t) < 0


def test_ccc_agrees_with_torch_loss_version():
    from fer_kit import losses
    rng = np.random.default_rng(3)
    t = rng.uniform(-1, 1, (200, 2))
    p = 0.6 * t + rng.normal(0.1, 0.3, (200, 2))
    got = metrics.ccc(t, p)
    assert got.shape == (2,)
    want = losses.ccc(torch.tensor(p), torch.tensor(t)).numpy()
    assert got == pytest.approx(want, abs=1e-6)


def test_ccc_constant_column_is_zero_not_nan():
    t = np.array([[0.1, 0.3], [0.2, 0.3], [0.4, 0.3]])
    p = np.array([[0.3, 0.3], [0.3, 0.3], [0.3, 0.3]])            # constant prediction; column 1 also constant truth
    assert metrics.ccc(t, p).tolist() == [0.0, 0.0]
    assert metrics.ccc(np.full(5, 0.1), np.full(5, 0.1)) == 0.0


def test_va_report_drops_minus5_rows_and_masks():
    rng = np.random.default_rng(4)
    t, p = rng.uniform(-1, 1, (50, 2)), rng.uniform(-1, 1, (50, 2))
    clean = metrics.va_report(t, p)
    t_bad = np.vstack([t, [[-5.0, -5.0], [0.2, -5.0]]])          # -5 in either column drops the row
    p_bad = np.vstack([p, [[0.9, -0.9], [0.5, 0.5]]])
    rep = metrics.va_report(t_bad, p_bad)
    json.dumps(rep)
    assert rep == pytest.approx(clean) and rep["n"] == 50
    assert rep["ccc_mean"] == pytest.approx((rep["ccc_valence"] + rep["ccc_arousal"]) / 2)
    assert rep["ccc_valence"] == pytest.approx(metrics.ccc(t[:, 0], p[:, 0]))
    mask = np.arange(50) < 30
    assert metrics.va_report(t, p, valid=mask)["ccc_arousal"] == pytest.approx(metrics.ccc(t[:30, 1], p[:30, 1]))


@pytest.mark.parametrize("t,p,valid,match", [
    (np.zeros((4, 3)), np.zeros((4, 3)), None, r"\(N, 2\)"),
    (np.zeros((4, 2)), np.zeros((3, 2)), None, r"\(4, 2\) and \(3, 2\)"),
    (np.full((3, 2), -5.0), np.zeros((3, 2)), None, "no valid VA frame"),
    (np.zeros((3, 2)), np.zeros((3, 2)), np.array([1, 0, 1]), "bool mask"),
    (np.zeros((3, 2)), np.full((3, 2), np.nan), None, "NaN"),
])
def test_va_report_bad_input(t, p, valid, match):
    with pytest.raises(ValueError, match=match):
        metrics.va_report(t, p, valid=valid)


# ---- action units ----

def _au_data(seed, n=400):
    rng = np.random.default_rng(seed)
    t = (rng.random((n, 12)) < rng.uniform(0.05, 0.5, 12)).astype(int)
    prob = np.clip(0.35 * t + rng.uniform(0, 0.65, (n, 12)), 0, 1)
    t[rng.random((n, 12)) < 0.1] = -1                           # scattered invalid entries, per AU
    return t, prob


def test_au_f1_ignores_minus1_per_au_like_sklearn():
    t, prob = _au_data(5)
    f1, mean = metrics.au_f1(t, prob)
    for j in range(12):
        keep = t[:, j] != -1                                     # a frame's -1 on AU j leaves other AUs alone
        assert f1[j] == pytest.approx(f1_score(t[keep, j], prob[keep, j] >= 0.5, zero_division=0))
    assert mean == pytest.approx(f1.mean())
    th = np.linspace(0.3, 0.7, 12)
    f1_th, _ = metrics.au_f1(t, prob, thresholds=th)
    assert f1_th[11] == pytest.approx(f1_score(t[t[:, 11] != -1, 11], prob[t[:, 11] != -1, 11] >= 0.7))


def test_tuning_fixes_miscalibrated_probabilities():
    rng = np.random.default_rng(6)
    t = (rng.random((300, 12)) < 0.3).astype(int)
    prob = np.where(t == 1, rng.uniform(0.3, 0.45, t.shape), rng.uniform(0.0, 0.25, t.shape))
    _, fixed = metrics.au_f1(t, prob)
    assert fixed == 0.0                                         # nothing reaches 0.5
    th = metrics.tune_au_thresholds(t, prob)
    assert np.all((th > 0.25) & (th <= 0.3))                   # the grid point that separates the classes
    _, tuned = metrics.au_f1(t, prob, thresholds=th)
    assert tuned == pytest.approx(1.0)
    # applied unchanged to a test split with the same miscalibration
    t2 = (rng.random((200, 12)) < 0.3).astype(int)
    prob2 = np.where(t2 == 1, rng.uniform(0.3, 0.45, t2.shape), rng.uniform(0.0, 0.25, t2.shape))
    rep = metrics.au_report(t2, prob2, thresholds=th)
    json.dumps(rep)
    assert rep["au_f1_mean"] == pytest.approx(1.0) and rep["thresholds"]["AU26"] == th[11]
    assert list(rep["per_au_f1"]) == ["AU1", "AU2", "AU4", "AU6", "AU7", "AU10", "AU12", "AU15", "AU23",
                                      "AU24", "AU25", "AU26"]


@pytest.mark.parametrize("seed", range(8))
def test_tuning_never_lowers_f1_on_the_tuning_set(seed):
    t, prob = _au_data(100 + seed, n=150)
    f1_fixed, _ = metrics.au_f1(t, prob)
    f1_tuned, _ = metrics.au_f1(t, prob, thresholds=metrics.tune_au_thresholds(t, prob))
    assert np.all(f1_tuned >= f1_fixed - 1e-12)


def test_tuning_ties_go_to_threshold_closest_to_half():
    t = np.zeros((4, 12), int)
    t[:2] = 1
    prob = np.tile([[0.9], [0.9], [0.1], [0.1]], (1, 12))       # every threshold in 0.15..0.9 is perfect
    assert metrics.tune_au_thresholds(t, prob).tolist() == [0.5] * 12
    t[:] = 0                                                    # no positive at all: every F1 is 0, keep 0.5
    assert metrics.tune_au_thresholds(t, prob).tolist() == [0.5] * 12


@pytest.mark.parametrize("t,p,kw,match", [
    (np.zeros((5, 11), int), np.zeros((5, 11)), {}, r"\(N, 12\).*\(5, 11\)"),
    (np.full((5, 12), 2), np.zeros((5, 12)), {}, r"0, 1 or -1.*\[2\]"),
    (np.zeros((5, 12), int), np.full((5, 12), 3.0), {}, "sigmoid"),
    (np.zeros((5, 12), int), np.zeros((4, 12)), {}, r"\(5, 12\) but au_prob has \(4, 12\)"),
    (np.zeros((5, 12), int), np.zeros((5, 12)), {"thresholds": np.full(11, 0.5)}, "12 values"),
])
def test_au_bad_input(t, p, kw, match):
    with pytest.raises(ValueError, match=match):
        metrics.au_f1(t, p, **kw)


# ---- multi-task P ----

def test_mtl_p():
    # paper D's validation components: CCC_V 0.549, CCC_A 0.524, F1_expr 0.277, F1_AU 0.510
    # -> 0.5365 + 0.277 + 0.510 = 1.3235 (the paper prints 1.327, presumably from unrounded components)
    assert metrics.mtl_p((0.549 + 0.524) / 2, 0.277, 0.510) == pytest.approx(1.3235)
    assert metrics.mtl_p(-0.2, 0.0, 0.0) == pytest.approx(-0.2)
    with pytest.raises(ValueError, match="au_f1_mean=6.1 .*not the sum"):
        metrics.mtl_p(0.5, 0.3, 6.1)


@pytest.mark.parametrize("tasks", [("va", "expr", "au"), ("va",), ("expr",), ("au",)])
def test_fast_task_score_is_the_report_s_score_on_any_frames(tasks):
    """The bootstrap's fast multi-task score equals task_report's on resampled (repeated) frames."""
    from fer_kit.metrics import task_report, task_score_fn

    rng = np.random.default_rng(0)
    n = 300
    targets = {"va": np.where(rng.random((n, 1)) < 0.1, -5.0, rng.uniform(-1, 1, (n, 2))),
               "expr": np.where(rng.random(n) < 0.1, -1, rng.integers(0, 8, n)),
               "au": np.where(rng.random((n, 12)) < 0.05, -1, (rng.random((n, 12)) < 0.3).astype(int))}
    outs = {"va": rng.uniform(-1, 1, (n, 2)), "expr": rng.normal(size=(n, 8)), "au": rng.random((n, 12))}
    outs = {k: outs[k] for k in tasks}
    fast = task_score_fn(outs, targets, 8)
    classes = [str(c) for c in range(8)]
    for idx in (np.arange(n), rng.integers(0, n, n), np.sort(rng.choice(n, 100, replace=False))):
        slow = task_report({k: v[idx] for k, v in outs.items()}, {k: v[idx] for k, v in targets.items()}, classes)
        assert fast(idx) == pytest.approx(slow["score"], abs=1e-9)


def test_video_bootstrap_can_leave_out_resamples_where_the_score_is_undefined():
    from fer_kit import metrics

    videos = np.arange(6).repeat(2)
    # undefined when a resample draws fewer than 3 distinct videos (about 2%): those resamples are left out
    rarely = lambda i: np.nan if len(np.unique(videos[i])) < 3 else float((i < 2).mean())
    assert np.isnan(metrics.video_bootstrap(rarely, videos, n_boot=2000)).all()
    lo, hi = metrics.video_bootstrap(rarely, videos, n_boot=2000, skip_nan=True)
    assert 0 <= lo <= hi < 1
    # undefined whenever video 0 is missing (a third of the resamples): too small a group to bound
    often = lambda i: np.nan if not (i < 2).any() else float((i < 2).mean())
    assert np.isnan(metrics.video_bootstrap(often, videos, n_boot=200, skip_nan=True)).all()


def test_au_threshold_gain_is_the_difference_of_the_two_au_f1s_with_a_paired_interval():
    truth, prob, videos = au_split(np.random.default_rng(0))
    tuned = metrics.tune_au_thresholds(truth, prob)
    gain = metrics.au_threshold_gain(truth, prob, videos, tuned, 0.5, n_boot=200)
    assert gain["gain"] == pytest.approx(metrics.au_f1(truth, prob, tuned)[1] - metrics.au_f1(truth, prob, 0.5)[1])
    assert gain["low"] <= gain["gain"] <= gain["high"] and gain["verdict"] == "better"   # tuned and scored on the same frames
    same = metrics.au_threshold_gain(truth, prob, videos, 0.5, 0.5, n_boot=50)
    assert (same["gain"], same["low"], same["high"], same["verdict"]) == (0, 0, 0, "within the noise")


def test_au_threshold_gain_ignores_invalid_au_labels():
    truth, prob, videos = au_split(np.random.default_rng(1))
    truth[:10, 0] = -1
    gain = metrics.au_threshold_gain(truth, prob, videos, 0.3, 0.5, n_boot=20)
    assert gain["gain"] == pytest.approx(metrics.au_f1(truth, prob, 0.3)[1] - metrics.au_f1(truth, prob, 0.5)[1])


def test_landmark_region_errors_finds_the_displaced_region_and_point():
    rng = np.random.default_rng(4)
    true = rng.uniform(-0.6, 0.6, (10, 68, 2))
    true[:, 36], true[:, 45] = (-0.4, 0.0), (0.4, 0.0)          # outer eye corners 0.8 apart
    pred = true.copy()
    pred[:, 48:68, 1] += 0.08                                     # the whole mouth 0.1 inter-ocular low
    pred[:, 57, 1] += 0.08                                        # its lower lip's middle even more
    errors = metrics.landmark_region_errors(pred, true)
    assert errors["regions"]["jaw"] == 0 and errors["regions"]["mouth"] == pytest.approx((19 * 0.1 + 0.2) / 20)
    assert (errors["worst_point"], errors["worst_point_region"]) == (57, "mouth")
    assert errors["worst_point_nme"] == pytest.approx(0.2)
    # the regions' NME, weighted by their points, is landmark_errors' NME
    overall = metrics.landmark_errors(pred, true)["landmark_nme"]
    sizes = {name: b - a for name, (a, b) in metrics.LANDMARK_REGIONS.items()}
    assert sum(errors["regions"][r] * sizes[r] for r in sizes) / 68 == pytest.approx(overall)


def test_landmark_region_errors_skips_unlabelled_faces_and_refuses_none():
    true = np.random.default_rng(5).uniform(-0.6, 0.6, (4, 68, 2))
    pred = true + 0.01
    true[0] = np.nan
    assert metrics.landmark_region_errors(pred, true)["regions"] == metrics.landmark_region_errors(pred[1:], true[1:])["regions"]
    with pytest.raises(ValueError, match="at least one labelled face"):
        metrics.landmark_region_errors(pred, np.full_like(true, np.nan))
