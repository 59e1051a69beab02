"""ABAW metrics, always computed over a whole split.

ABAW scores F1 over the entire validation/test set; averaging per-batch F1 (as paper C's published code
did) gives a different, batch-size-dependent number. Every class is counted, so a class the model
never predicts scores 0 and pulls the mean down.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score

from .labels import AU_INVALID, AU_NAMES, VA_INVALID


def _labels(y, name: str) -> np.ndarray:
    if hasattr(y, "detach"):
        y = y.detach().cpu().numpy()
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D class indices; got shape {y.shape}")
    return y.astype(np.int64)


def _check(y_true, y_pred, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(t) != len(p):
        raise ValueError(f"y_true has {len(t)} labels but y_pred has {len(p)}")
    if len(t) == 0:
        raise ValueError("no samples to score")
    for name, y in (("y_true", t), ("y_pred", p)):
        bad = np.unique(y[(y < 0) | (y >= num_classes)])
        if len(bad):
            raise ValueError(f"{name} has labels outside 0..{num_classes - 1}: {bad.tolist()} "
                             f"(drop invalid frames, e.g. Aff-Wild2's -1, before scoring)")
    return t, p


def per_class_f1(y_true, y_pred, num_classes: int = 8) -> np.ndarray:
    """Binary F1 of each class; a class absent from both truth and predictions scores 0."""
    t, p = _check(y_true, y_pred, num_classes)
    return f1_score(t, p, labels=list(range(num_classes)), average=None, zero_division=0)


def p_expr(y_true, y_pred, num_classes: int = 8) -> float:
    """ABAW3+ EXPR performance P = (sum of the per-class F1) / 8 (paper A Eq. 4)."""
    return float(per_class_f1(y_true, y_pred, num_classes).mean())


def accuracy(y_true, y_pred) -> float:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if len(t) != len(p) or len(t) == 0:
        raise ValueError(f"need equally many labels and predictions; got {len(t)} and {len(p)}")
    return float((t == p).mean())


def confusion(y_true, y_pred, num_classes: int = 8) -> np.ndarray:
    """Counts with rows = true class, columns = predicted class."""
    t, p = _check(y_true, y_pred, num_classes)
    return confusion_matrix(t, p, labels=list(range(num_classes)))


def expr_report(y_true, y_pred, num_classes: int = 8, class_names: Sequence[str] | None = None) -> dict:
    """Everything a notebook shows about expression predictions, as JSON-ready Python values; 7-class
    (ABAW 2020) reports add that challenge's score, "abaw2020" = 0.67 F1 + 0.33 accuracy."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    t, p = _check(y_true, y_pred, num_classes)
    f1 = per_class_f1(t, p, num_classes)
    extra = {"abaw2020": abaw2020_score(t, p)} if num_classes == 7 else {}
    return {**extra,
        "p_expr": float(f1.mean()),
        "accuracy": float((t == p).mean()),
        "per_class_f1": {n: float(v) for n, v in zip(names, f1)},
        "support": {n: int(c) for n, c in zip(names, np.bincount(t, minlength=num_classes))},
        "confusion": confusion(t, p, num_classes).tolist(),
        "n": int(len(t)),
    }


# ----------------------------------------------------------------------------------------------------------
# Paper C (ABAW 2020 EXPR) and paper E (ABAW4 LSD) scores, built on per_class_f1 above.

def abaw2020_score(y_true, y_pred, num_classes: int = 7) -> float:
    """ABAW 2020 EXPR score (paper C) = 0.67 * macro F1 over all 7 classes + 0.33 * accuracy.

    ABAW 2020 had no "Other" class, so the labels must be 0..6; an 8th-class label is an error, not
    silently scored. Both terms are over the whole split, and an absent class still counts 0 in the F1.
    """
    t, p = _check(y_true, y_pred, num_classes)
    return float(0.67 * per_class_f1(t, p, num_classes).mean() + 0.33 * (t == p).mean())


def lsd_mean_f1(y_true, y_pred) -> float:
    """ABAW4 Learning-from-Synthetic-Data score (paper E): mean F1 over the 6 LSD classes.

    Labels follow labels.LSD_CLASSES (Anger..Surprise = 0..5); a class never seen nor predicted counts 0.
    """
    return p_expr(y_true, y_pred, num_classes=6)


def lsd_report(y_true, y_pred, class_names: Sequence[str] | None = None) -> dict:
    """expr_report over the 6 LSD classes, with the challenge's score under its own name."""
    report = expr_report(y_true, y_pred, num_classes=6, class_names=class_names)
    return {"lsd_mean_f1": report["p_expr"], **report}


# ----------------------------------------------------------------------------------------------------------
# Landmarks (paper E's auxiliary task).

OUTER_EYE_CORNERS = (36, 45)   # iBUG 68-point indices; their distance normalises the error (300-W's NME)


def _landmark_distances(pred, true) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, points) distances of the labelled frames (targets without NaN), their (n,) outer-eye-corner
    distances, and which frames those are; in the coordinates given."""
    pred, true = np.asarray(pred, np.float64), np.asarray(true, np.float64)    # NaN targets = no landmarks
    if pred.shape != true.shape or pred.ndim != 3 or pred.shape[-1] != 2:
        raise ValueError(f"landmarks must be (N, points, 2) alike; got {pred.shape} and {true.shape}")
    keep = np.isfinite(true).all(axis=(1, 2))
    i, j = OUTER_EYE_CORNERS
    return (np.linalg.norm(pred[keep] - true[keep], axis=2), np.linalg.norm(true[keep, i] - true[keep, j], axis=1),
            keep)


def landmark_errors(pred, true, size: float = 112.0) -> dict:
    """Landmark error of predictions (N, 68, 2) against targets, both in the kit's normalised coordinates
    (the image spans [-1, 1]). Frames whose target has a NaN are skipped.

    "landmark_error_px": mean point-to-point distance in pixels of a size x size crop (ABAW's 112);
    "landmark_nme": the same distance over the outer-eye-corner distance, per frame, averaged (300-W's
    inter-ocular NME); "landmark_frames": how many frames were scored.
    """
    dist, interocular, keep = _landmark_distances(pred, true)                   # (n, 68), (n,)
    if not keep.any():
        return {"landmark_error_px": float("nan"), "landmark_nme": float("nan"), "landmark_frames": 0}
    return {"landmark_error_px": float(dist.mean() * size / 2),                  # normalised -> px of the crop
            "landmark_nme": float((dist.mean(1) / interocular).mean()), "landmark_frames": int(keep.sum())}


# the iBUG 68-point layout's regions (first point, one past the last)
LANDMARK_REGIONS = {"jaw": (0, 17), "brows": (17, 27), "nose": (27, 36), "eyes": (36, 48), "mouth": (48, 68)}


def landmark_region_errors(pred, true) -> dict:
    """Where a landmark predictor errs: the NME (as in landmark_errors) of each iBUG region, and the
    single worst point. One NME hides that the regions an expression moves (brows, mouth, jaw) are the
    ones an expression model needs, and the ones the mean shape misses most."""
    dist, interocular, keep = _landmark_distances(pred, true)
    if not keep.any():
        raise ValueError("landmark_region_errors needs at least one labelled face; every target holds NaN")
    point = (dist / interocular[:, None]).mean(0)                                # (68,) NME per point
    worst = int(point.argmax())
    return {"regions": {name: float(point[a:b].mean()) for name, (a, b) in LANDMARK_REGIONS.items()},
            "worst_point": worst, "worst_point_nme": float(point[worst]),
            "worst_point_region": next(n for n, (a, b) in LANDMARK_REGIONS.items() if a <= worst < b)}


# ----------------------------------------------------------------------------------------------------------
# Valence/arousal: concordance correlation coefficient.

def _floats(x, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def ccc(y_true, y_pred):
    """Concordance correlation coefficient (Lin 1989), the ABAW VA metric, on numpy arrays (no gradient).

        CCC = 2 cov(t, p) / (var(t) + var(p) + (mean(t) - mean(p))^2)

    with population moments (divided by N), as the ABAW evaluation computes them; the differentiable
    torch version for training is losses.ccc. (N,) inputs give a float, (N, D) inputs an array of D values
    (one per column). Nothing is masked here; va_report drops Aff-Wild2's -5 frames.

    Degenerate columns score 0, never NaN: if the truth or the prediction column is constant, its
    covariance is 0 in exact arithmetic, so the column is set to 0 by an explicit check (no eps, and no
    rounding noise turning 0/0 into garbage when both are constant).
    """
    t, p = _floats(y_true, "y_true"), _floats(y_pred, "y_pred")
    if t.ndim not in (1, 2) or t.shape != p.shape:
        raise ValueError(f"ccc expects y_true and y_pred of the same shape, (N,) or (N, D); got "
                         f"{t.shape} and {p.shape}")
    if t.shape[0] == 0:
        raise ValueError("ccc: no samples to score")
    squeeze = t.ndim == 1
    if squeeze:
        t, p = t[:, None], p[:, None]
    constant = np.all(t == t[:1], axis=0) | np.all(p == p[:1], axis=0)           # (D,)
    # shift by the first row before centring: same moments, less cancellation for large offsets
    dt, dp = t - t[:1], p - p[:1]
    dt, dp = dt - dt.mean(axis=0), dp - dp.mean(axis=0)
    cov = (dt * dp).mean(axis=0)
    denom = (dt ** 2).mean(axis=0) + (dp ** 2).mean(axis=0) + (t.mean(axis=0) - p.mean(axis=0)) ** 2
    out = np.zeros(t.shape[1])
    out[~constant] = 2 * cov[~constant] / denom[~constant]        # denom > 0 once a column varies
    return float(out[0]) if squeeze else out


def va_report(va_true, va_pred, valid=None) -> dict:
    """ABAW VA score: CCC of valence and arousal over the whole split, and their mean (the VA P).

    va_true, va_pred: (N, 2), columns (valence, arousal). Rows whose truth is -5 (Aff-Wild2's invalid VA
    marker) in either column are dropped automatically; `valid`, an optional (N,) bool mask, drops more
    (e.g. paper D's strict filtering). "n" is the number of frames scored.
    """
    t, p = _floats(va_true, "va_true"), _floats(va_pred, "va_pred")
    if t.ndim != 2 or t.shape[1] != 2 or t.shape != p.shape:
        raise ValueError(f"va_report expects va_true and va_pred shaped (N, 2) (valence, arousal); got "
                         f"{t.shape} and {p.shape}")
    keep = ~np.any(t == VA_INVALID, axis=1)
    if valid is not None:
        if hasattr(valid, "detach"):
            valid = valid.detach().cpu().numpy()
        valid = np.asarray(valid)
        if valid.dtype != bool or valid.shape != (len(t),):
            raise ValueError(f"valid must be a bool mask shaped ({len(t)},); got {valid.dtype} shaped {valid.shape}")
        keep &= valid
    if not keep.any():
        raise ValueError("va_report: no valid VA frame left (all truth -5 or masked out)")
    cv, ca = ccc(t[keep], p[keep])
    return {"ccc_valence": float(cv), "ccc_arousal": float(ca), "ccc_mean": float((cv + ca) / 2),
            "n": int(keep.sum())}


# ----------------------------------------------------------------------------------------------------------
# Action units: per-AU binary F1, per-AU thresholds (paper D).

NUM_AUS = len(AU_NAMES)    # the 12 Aff-Wild2 AUs, in file column order
# Paper D's per-AU threshold search grid (the paper gives none; paper_code_notes §5.5). Rounded so 0.5 is
# exactly in it (then tuning can never score below the fixed 0.5) and the chosen values print cleanly.
AU_THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.05), 2)


def _au_inputs(au_true, au_prob) -> tuple[np.ndarray, np.ndarray]:
    if hasattr(au_true, "detach"):
        au_true = au_true.detach().cpu().numpy()
    t = np.asarray(au_true)
    p = _floats(au_prob, "au_prob")
    for name, a in (("au_true", t), ("au_prob", p)):
        if a.ndim != 2 or a.shape[1] != NUM_AUS:
            raise ValueError(f"{name} must be shaped (N, {NUM_AUS}) (the 12 Aff-Wild2 AUs); got {a.shape}")
    if t.shape != p.shape:
        raise ValueError(f"au_true has shape {t.shape} but au_prob has {p.shape}")
    if len(t) == 0:
        raise ValueError("no samples to score")
    bad = np.unique(t[(t != 0) & (t != 1) & (t != AU_INVALID)])
    if len(bad):
        raise ValueError(f"au_true must hold 0, 1 or -1 (invalid); got {bad.tolist()}")
    if p.min() < 0 or p.max() > 1:
        raise ValueError(f"au_prob must be probabilities in [0, 1]; got values in [{p.min():.3g}, {p.max():.3g}] "
                         f"(apply a sigmoid to logits first)")
    return t.astype(np.int64), p


def _au_thresholds(thresholds) -> np.ndarray:
    th = np.asarray(thresholds, dtype=np.float64)
    if th.ndim == 0:
        th = np.full(NUM_AUS, float(th))
    if th.shape != (NUM_AUS,):
        raise ValueError(f"thresholds must be a scalar or {NUM_AUS} values (one per AU); got shape {th.shape}")
    if not np.all((th >= 0) & (th <= 1)):
        raise ValueError(f"thresholds must lie in [0, 1]; got {th.tolist()}")
    return th


def _binary_f1(truth: np.ndarray, pred: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """F1 along axis 0 over the kept entries; 0 when there is no positive in truth nor prediction.

    Same as sklearn's f1_score(zero_division=0); counted by hand so the threshold search is vectorised.
    """
    pos, hit = (truth == 1) & keep, pred & keep
    tp = (pos & hit).sum(axis=0)
    denom = pos.sum(axis=0) + hit.sum(axis=0)                     # 2tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def au_f1(au_true, au_prob, thresholds=0.5) -> tuple[np.ndarray, float]:
    """Per-AU binary F1 over the whole split, and its mean (the ABAW AU P = sum F1 / 12).

    au_true (N, 12) in {0, 1, -1}; au_prob (N, 12) probabilities; an AU counts as active when
    prob >= its threshold (a scalar for all AUs, or 12 values, e.g. from tune_au_thresholds on validation).
    A -1 entry is ignored for that AU only, not the whole frame: the frame still counts for the AUs it
    labels. An AU with no positive in truth nor prediction scores 0 and still counts in the mean.
    """
    t, p = _au_inputs(au_true, au_prob)
    f1 = _binary_f1(t, p >= _au_thresholds(thresholds), t != AU_INVALID)
    return f1, float(f1.mean())


def tune_au_thresholds(au_true, au_prob, grid=AU_THRESHOLD_GRID) -> np.ndarray:
    """Paper D's per-AU threshold optimisation: for each AU, the grid threshold maximising its F1.

    Run it on the validation split and pass the result unchanged to au_f1 / au_report on test (tuning on
    test would overstate the score). Ties go to the threshold closest to 0.5 (the untuned default), then
    to the lower one; an AU with no positive on validation therefore keeps 0.5. When 0.5 is in the grid
    (it is in the default), the tuned F1 on the same split is never below the F1 at 0.5.
    """
    t, p = _au_inputs(au_true, au_prob)
    g = np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or len(g) == 0 or not np.all((g >= 0) & (g <= 1)):
        raise ValueError(f"grid must be a non-empty 1-D array of thresholds in [0, 1]; got {g!r}")
    keep = t != AU_INVALID
    f1 = np.stack([_binary_f1(t, p >= th, keep) for th in g])    # (G, 12)
    order = np.lexsort((g, np.abs(g - 0.5)))                      # grid by closeness to 0.5, then value
    best = order[np.argmax(f1[order], axis=0)]                    # argmax takes the first of equal maxima
    return g[best]


def au_report(au_true, au_prob, thresholds=0.5, names: Sequence[str] | None = None) -> dict:
    """Everything a notebook shows about AU predictions, as JSON-ready Python values.

    "support" is the number of positive frames of each AU and "valid" the frames labelled (not -1) for it.
    """
    names = list(AU_NAMES if names is None else names)
    if len(names) != NUM_AUS:
        raise ValueError(f"{len(names)} AU names for {NUM_AUS} AUs")
    t, p = _au_inputs(au_true, au_prob)
    th = _au_thresholds(thresholds)
    f1, mean = au_f1(t, p, th)
    return {
        "au_f1_mean": mean,
        "per_au_f1": {n: float(v) for n, v in zip(names, f1)},
        "thresholds": {n: float(v) for n, v in zip(names, th)},
        "support": {n: int(c) for n, c in zip(names, (t == 1).sum(axis=0))},
        "valid": {n: int(c) for n, c in zip(names, (t != AU_INVALID).sum(axis=0))},
        "n": int(len(t)),
    }


# ----------------------------------------------------------------------------------------------------------
# Multi-task (ABAW3/4/7 MTL, paper D).

def mtl_p(ccc_mean: float, expr_f1_mean: float, au_f1_mean: float) -> float:
    """ABAW MTL performance P = (CCC_V + CCC_A)/2 + sum F1_expr/8 + sum F1_AU/12 (paper D; range -1..3).

    Takes the three means (va_report's "ccc_mean", p_expr, au_f1's mean); a sum passed by mistake is
    caught by the range check.
    """
    for name, v, lo in (("ccc_mean", ccc_mean, -1.0), ("expr_f1_mean", expr_f1_mean, 0.0),
                        ("au_f1_mean", au_f1_mean, 0.0)):
        if not np.isfinite(v) or not lo <= v <= 1:
            raise ValueError(f"{name}={v} is outside [{lo:g}, 1]; pass the mean, not the sum")
    return float(ccc_mean + expr_f1_mean + au_f1_mean)


def mtl_report(outs: dict[str, np.ndarray], targets: dict[str, np.ndarray], classes, au_thresholds=0.5) -> dict:
    """Paper D's validation numbers: CCC per VA dimension, EXPR F1 over the frames with a valid
    expression, AU F1 at `au_thresholds`, and P = mean CCC + mean EXPR F1 + mean AU F1."""
    ok = targets["expr"] >= 0
    expr = expr_report(targets["expr"][ok], outs["expr"][ok].argmax(1), num_classes=len(classes),
                       class_names=list(classes))
    va = va_report(targets["va"], outs["va"])
    au = au_report(targets["au"], outs["au"], thresholds=au_thresholds)
    p = mtl_p(va["ccc_mean"], expr["p_expr"], au["au_f1_mean"])
    va.pop("n"), au.pop("n")
    return {"score": p, "p_mtl": p, **va, **expr, **au}


def task_report(outs: dict[str, np.ndarray], targets: dict[str, np.ndarray], classes) -> dict:
    """The validation report of a multi-task model or of one of its single-task variants (paper D
    Table 4): P for all three tasks, else the task's own number (mean CCC, P_EXPR or mean AU F1) as
    the "score"."""
    if set(outs) == {"va", "expr", "au"}:
        return mtl_report(outs, targets, classes)
    if set(outs) == {"va"}:
        report = va_report(targets["va"], outs["va"])
        return {"score": report["ccc_mean"], **report}
    if set(outs) == {"au"}:
        report = au_report(targets["au"], outs["au"])
        return {"score": report["au_f1_mean"], **report}
    if set(outs) == {"expr"}:
        ok = targets["expr"] >= 0
        report = expr_report(targets["expr"][ok], outs["expr"][ok].argmax(1), num_classes=len(classes),
                             class_names=list(classes))
        return {"score": report["p_expr"], **report}
    raise ValueError(f"no report for a model with outputs {sorted(outs)}")


def task_score_fn(outs: dict[str, np.ndarray], targets: dict[str, np.ndarray], num_classes: int):
    """Frame indices -> task_report's "score" on those frames, without its checks and reports: the same
    number (tested), fast enough for a bootstrap's thousand resamples of a multi-task split."""
    parts = []
    if "va" in outs:
        t_va, p_va = np.asarray(targets["va"], np.float64), np.asarray(outs["va"], np.float64)
        ok_va = ~np.any(t_va == VA_INVALID, axis=1)
        parts.append(lambda i: float(np.mean(ccc(t_va[i][ok_va[i]], p_va[i][ok_va[i]]))))
    if "expr" in outs:
        y, pred = np.asarray(targets["expr"]), np.asarray(outs["expr"]).argmax(1)
        ok = y >= 0
        parts.append(lambda i: mean_f1_fast(y[i][ok[i]], pred[i][ok[i]], num_classes))
    if "au" in outs:
        t_au = np.asarray(targets["au"]).astype(np.int64)
        hit = np.asarray(outs["au"]) >= 0.5
        parts.append(lambda i: float(_binary_f1(t_au[i], hit[i], t_au[i] != AU_INVALID).mean()))
    return lambda i: float(sum(part(i) for part in parts))


def au_threshold_study(au_true, au_prob, videos, seed: int = 0) -> dict:
    """Paper D's per-AU thresholds, measured honestly: chosen on half of the validation videos and
    applied unchanged to the other half ("held_out"), beside paper D's own way of tuning and scoring on
    the same frames ("same_frames", an optimistic number). Each entry holds F1 at 0.5 and tuned."""
    t, p = _au_inputs(au_true, au_prob)
    videos = np.asarray(videos)
    names = np.unique(videos)
    if len(names) < 2:
        raise ValueError("au_threshold_study needs at least two validation videos to hold half of them out")
    tune_videos = np.random.default_rng(seed).permutation(names)[: len(names) // 2]
    tune = np.isin(videos, tune_videos)
    th_half, th_all = tune_au_thresholds(t[tune], p[tune]), tune_au_thresholds(t, p)
    out = {"thresholds": {n: float(v) for n, v in zip(AU_NAMES, th_half)}}
    for name, rows, th in (("held_out", ~tune, th_half), ("same_frames", np.ones(len(t), bool), th_all)):
        fixed, tuned = au_report(t[rows], p[rows], 0.5), au_report(t[rows], p[rows], th)
        out[name] = {"fixed": fixed["au_f1_mean"], "tuned": tuned["au_f1_mean"],
                     "per_au_fixed": fixed["per_au_f1"], "per_au_tuned": tuned["per_au_f1"]}
    return out


def au_threshold_gain(au_true, au_prob, videos, thresholds_a, thresholds_b, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean AU F1 with thresholds a minus with thresholds b on the same frames, with a paired bootstrap
    interval over videos and its verdict (paired_gain): e.g. thresholds tuned on training vs validation."""
    t, p = _au_inputs(au_true, au_prob)
    keep = t != AU_INVALID
    hit_a, hit_b = p >= _au_thresholds(thresholds_a), p >= _au_thresholds(thresholds_b)
    return paired_gain(lambda i: float(_binary_f1(t[i], hit_a[i], keep[i]).mean()),
                       lambda i: float(_binary_f1(t[i], hit_b[i], keep[i]).mean()), np.asarray(videos), n_boot, seed)


def video_bootstrap(score, videos, n_boot: int = 1000, seed: int = 0, level: float = 0.95,
                    skip_nan: bool = False) -> tuple[float, float]:
    """Percentile interval of `score(frame_index)` over resampled videos.

    Frames of one video are strongly correlated (the same face, seconds apart), so resampling frames
    would make the interval far too narrow; whole videos are drawn with replacement instead, and
    `score` receives the frame indices of each resample (repeated videos repeated). For a paired
    comparison, let `score` return the difference of two models on the same indices. skip_nan: leave out
    resamples whose score is undefined (NaN, e.g. no wrong frame drawn); when more than 10% of them are,
    the groups are too small to bound and the interval is (NaN, NaN)."""
    videos = np.asarray(videos)
    names, inverse = np.unique(videos, return_inverse=True)
    if len(names) < 2:
        raise ValueError(f"a bootstrap over videos needs at least two videos; got {len(names)}")
    frames = [np.flatnonzero(inverse == v) for v in range(len(names))]
    rng = np.random.default_rng(seed)
    values = np.array([score(np.concatenate([frames[v] for v in rng.integers(0, len(names), len(names))]))
                       for _ in range(n_boot)])
    tail = (1 - level) / 2 * 100
    if skip_nan:
        if np.isnan(values).mean() > 0.1:
            return float("nan"), float("nan")
        values = values[~np.isnan(values)]
    return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def mean_f1_fast(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """p_expr from a bincount confusion matrix: the same number (tested) at a fraction of scikit-learn's
    per-call cost, for bootstraps that score thousands of resamples. Inputs are trusted index arrays."""
    cm = np.bincount(y_true * num_classes + y_pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1)
    return float(np.mean(np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)))


FRAME_SCORES = ("p_expr", "accuracy", "abaw2020")


def frame_score_fn(labels: np.ndarray, pred: np.ndarray, score: str, num_classes: int):
    """Frame indices -> the score of `pred` on those frames (fast enough for 1,000 resamples): P_EXPR,
    accuracy or ABAW2020 = 0.67 F1 + 0.33 accuracy."""
    if score not in FRAME_SCORES:
        raise ValueError(f"score must be one of {FRAME_SCORES}; got {score!r}")
    if score == "accuracy":
        return lambda i: float((labels[i] == pred[i]).mean())
    if score == "abaw2020":
        return lambda i: (0.67 * mean_f1_fast(labels[i], pred[i], num_classes)
                          + 0.33 * float((labels[i] == pred[i]).mean()))
    return lambda i: mean_f1_fast(labels[i], pred[i], num_classes)


def paired_gain(row_a, row_b, videos: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Row a's score minus row b's (row functions map frame indices to a score, as in
    `ensemble.interval_table`) with a paired bootstrap interval
    over videos (the same resampled videos for both), and the verdict the interval allows: "better",
    "worse" or "within the noise"."""
    diff = row_a(np.arange(len(videos))) - row_b(np.arange(len(videos)))
    lo, hi = video_bootstrap(lambda i: row_a(i) - row_b(i), videos, n_boot=n_boot, seed=seed)
    verdict = "better" if lo > 0 else "worse" if hi < 0 else "within the noise"
    return {"gain": diff, "low": lo, "high": hi, "verdict": verdict}


def gain_sentence(gain: dict, a: str, b: str) -> str:
    """The run's own reading of a paired comparison, e.g. for notebooks and the CLI."""
    reading = {"better": f"{a} is better beyond the noise",
               "worse": f"{a} is worse beyond the noise",
               "within the noise": f"within the noise: this run cannot tell {a} from {b}"}[gain["verdict"]]
    return f"{a} - {b}: {gain['gain']:+.3f} [{gain['low']:+.3f}, {gain['high']:+.3f}] (paired bootstrap over videos); {reading}"
