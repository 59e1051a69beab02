"""Trivial reference predictors: a number only means something next to what no real model can miss."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import metrics
from .labels import VA_INVALID


def _pixels(dataset, size: int) -> np.ndarray:
    """Raw RGB pixels of every frame, downsampled to size x size, as float rows."""
    images = torch.stack([dataset.image(i) for i in range(len(dataset))]).float() / 255
    if images.shape[-1] != size:
        images = F.interpolate(images, size=(size, size), mode="area")
    return images.flatten(1).numpy()


def pixel_logistic_regression(train, val, size: int = 48, max_iter: int = 200, C: float = 0.01,
                              return_predictions: bool = False):
    """Multinomial logistic regression on standardised raw pixels of the same split.

    If this scores close to a trained CNN, the task is a matter of fixed pixel positions and teaches
    nothing. lbfgs is capped at `max_iter` iterations: a baseline need not be polished to be a baseline.
    `return_predictions`: (report, predicted class per frame of `val`), to compare a model with it frame
    by frame (compare.paired).
    """
    x_tr, x_va = _pixels(train, size), _pixels(val, size)
    y_tr, y_va = train.labels.numpy(), val.labels.numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    classes = list(getattr(train.table, "classes", range(int(y_tr.max()) + 1)))
    pred = clf.predict(x_va)
    report = metrics.expr_report(y_va, pred, num_classes=len(classes), class_names=classes)
    return (report, pred) if return_predictions else report


def majority_class(train, val) -> dict:
    """Always predict the most frequent training class."""
    y_tr, y_va = train.labels.numpy(), val.labels.numpy()
    classes = list(train.table.classes)
    pred = np.full_like(y_va, np.bincount(y_tr, minlength=len(classes)).argmax())
    return metrics.expr_report(y_va, pred, num_classes=len(classes), class_names=classes)


def mean_shape(train, val, size: float = 112.0) -> dict:
    """Predict the training faces' mean landmark shape for every frame: on aligned crops this already
    scores a low NME, so a landmark head localises only if it beats this (datasets with targets="landmarks")."""
    true = val.landmarks.numpy()
    return metrics.landmark_errors(mean_shape_landmarks(train, len(true)), true, size)


def mean_shape_landmarks(train, n: int) -> np.ndarray:
    """The training faces' mean landmark shape (normalised coordinates), repeated for n frames: the
    mean-shape predictor's output, to score it like a landmark head (e.g. metrics.landmark_region_errors)."""
    mean = np.nanmean(train.landmarks.numpy(), axis=0)                        # (68, 2)
    return np.broadcast_to(mean, (n, *mean.shape))


def trivial_multitask(train_table, val_table, au: str = "none") -> dict:
    """What knowing only the training label statistics scores on the multi-task split (paper D's P):
    the training mean VA for every frame (CCC 0), the majority expression, and for the AUs either none
    ever active (au="none": AU F1 0) or every AU always active (au="all": each AU's F1 is then
    2p / (1 + p) for its base rate p, the floor a real AU detector has to beat)."""
    if au not in ("none", "all"):
        raise ValueError(f"au must be 'none' or 'all'; got {au!r}")
    n = len(val_table)
    va_mean = np.nanmean(train_table.va, axis=0)
    counts = np.bincount(train_table.labels[train_table.labels >= 0], minlength=len(train_table.classes))
    outs = {"va": np.tile(va_mean, (n, 1)), "expr": np.tile(np.eye(len(counts))[counts.argmax()], (n, 1)),
            "au": np.full((n, val_table.au.shape[1]), 1.0 if au == "all" else 0.0)}
    targets = {"va": np.nan_to_num(val_table.va, nan=VA_INVALID), "expr": val_table.labels, "au": val_table.au}
    return metrics.mtl_report(outs, targets, val_table.classes)


def normalised_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """(N, 68, 2) landmarks -> (N, 136) features free of position, scale and roll: centred on the eyes'
    midpoint, rotated so the eyes are level, divided by the distance between the eyes."""
    left, right = landmarks[:, 36:42].mean(1), landmarks[:, 42:48].mean(1)
    d = right - left
    dist = np.linalg.norm(d, axis=1, keepdims=True)
    c, s = d[:, 0:1] / dist, d[:, 1:2] / dist
    p = landmarks - (left + right)[:, None] / 2
    x, y = p[..., 0] * c + p[..., 1] * s, -p[..., 0] * s + p[..., 1] * c
    return np.concatenate([x, y], axis=1) / dist


def landmark_logistic_regression(train_table, val_table, class_weight: str | None = None, noise_px: float = 2.0,
                                 seed: int = 0, C: float = 1.0) -> dict:
    """Logistic regression on normalised landmark geometry: a fast, transparent classifier, used in
    notebook 01 to show what class imbalance does when nothing corrects for it (class_weight=None).

    The synthetic landmarks are exact (the drawn geometry), which makes expression trivially readable;
    Gaussian noise of `noise_px` pixels stands in for a real landmark detector's error."""
    tables = (train_table, val_table)
    for t in tables:
        if t.landmarks is None:
            raise ValueError(f"{t.report.source} has no landmarks (only the synthetic data ships them)")
    rng = np.random.default_rng(seed)
    keep = [(t.labels >= 0) & np.isfinite(t.landmarks).all(axis=(1, 2)) for t in tables]
    points = [t.landmarks[k] + rng.normal(0, noise_px, t.landmarks[k].shape) for t, k in zip(tables, keep)]
    (x_tr, x_va), (y_tr, y_va) = [normalised_landmarks(p) for p in points], [t.labels[k] for t, k in zip(tables, keep)]
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=1000, class_weight=class_weight))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    classes = list(train_table.classes)
    return metrics.expr_report(y_va, clf.predict(x_va), num_classes=len(classes), class_names=classes)


def reference_sentence(name: str, score: float, references: dict[str, float], metric: str = "P") -> str:
    """The run's own reading of one score against its reference points: which it beats and which it
    does not (a single run: no interval, so a difference below 0.01 is called a tie)."""
    beats = [f"{k} ({v:.3f})" for k, v in references.items() if score > v + 0.01]
    short = [f"{k} ({v:.3f})" for k, v in references.items() if score < v - 0.01]
    ties = [f"{k} ({v:.3f})" for k, v in references.items() if abs(score - v) <= 0.01]
    parts = [f"{name}: {metric} {score:.3f}"]
    if beats:
        parts.append("beats " + ", ".join(beats))
    if ties:
        parts.append("ties with " + ", ".join(ties))
    if short:
        parts.append("does NOT beat " + ", ".join(short))
    return "; ".join(parts) + "."


def au_floors(report: dict) -> pd.DataFrame:
    """Per AU of an AU report (metrics.au_report, or a multi-task report): its base rate p on the scored
    frames, the model's F1, and the F1 2p / (1 + p) of answering "active" on every frame, hardest AU
    first. A rare AU's F1 is low for any detector: read each F1 against its own floor."""
    names = list(report["per_au_f1"])
    rate = np.array([report["support"][n] / max(report["valid"][n], 1) for n in names])
    table = pd.DataFrame({"base rate": rate, "F1": [report["per_au_f1"][n] for n in names],
                          "always-active F1": 2 * rate / (1 + rate)}, index=pd.Index(names, name="AU"))
    return table.sort_values(["F1", "base rate"])


def hardest_au_sentence(floors: pd.DataFrame) -> str:
    """What au_floors says about difficulty, in words computed from it: the hardest AU, the rarest, and
    whether F1 follows the base rate across the AUs (Spearman's rank correlation)."""
    hardest, rarest = floors.index[0], floors["base rate"].idxmin()
    rarity_rank = int(floors["base rate"].rank(method="min")[hardest])
    varies = floors["F1"].nunique() > 1 and floors["base rate"].nunique() > 1
    rho = floors["base rate"].corr(floors["F1"], method="spearman") if varies else float("nan")
    follows = ("F1 (or the base rate) does not vary across the AUs here, so one cannot explain the other" if not np.isfinite(rho) else
               f"rarer AUs score {'lower' if rho > 0 else 'higher'} (rank correlation of base rate and F1 {rho:+.2f}"
               f"{', weak' if abs(rho) < 0.4 else ''})")
    above = int((floors["F1"] > floors["always-active F1"] + 1e-9).sum())      # equal F1 is a tie, not a win
    tied = list(floors.index[floors["F1"] == floors["F1"].iloc[0]])
    hardest_is = hardest if len(tied) == 1 else f"{len(tied)} AUs tie ({', '.join(tied)}), the rarest of them {hardest}"
    return (f"hardest: {hardest_is}, F1 {floors.loc[hardest, 'F1']:.3f} at a base rate of {floors.loc[hardest, 'base rate']:.2f} "
            f"(rarity rank {rarity_rank} of {len(floors)}); the rarest is {rarest} (base rate "
            f"{floors.loc[rarest, 'base rate']:.2f}, F1 {floors.loc[rarest, 'F1']:.3f}); {follows}; {above} of {len(floors)} "
            f"AUs beat their always-active F1 2p/(1+p)")
