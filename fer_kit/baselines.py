"""Trivial reference predictors: a number only means something next to what no real model can miss."""
from __future__ import annotations

import warnings

import numpy as np
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


def pixel_logistic_regression(train, val, size: int = 48, max_iter: int = 200, C: float = 0.01) -> dict:
    """Multinomial logistic regression on standardised raw pixels of the same split.

    If this scores close to a trained CNN, the task is a matter of fixed pixel positions and teaches
    nothing. lbfgs is capped at `max_iter` iterations: a baseline need not be polished to be a baseline.
    """
    x_tr, x_va = _pixels(train, size), _pixels(val, size)
    y_tr, y_va = train.labels.numpy(), val.labels.numpy()
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, class_weight="balanced"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(x_tr, y_tr)
    classes = list(getattr(train.table, "classes", range(int(y_tr.max()) + 1)))
    return metrics.expr_report(y_va, clf.predict(x_va), num_classes=len(classes), class_names=classes)


def majority_class(train, val) -> dict:
    """Always predict the most frequent training class."""
    y_tr, y_va = train.labels.numpy(), val.labels.numpy()
    classes = list(train.table.classes)
    pred = np.full_like(y_va, np.bincount(y_tr, minlength=len(classes)).argmax())
    return metrics.expr_report(y_va, pred, num_classes=len(classes), class_names=classes)


def mean_shape(train, val, size: float = 112.0) -> dict:
    """Predict the training faces' mean landmark shape for every frame: on aligned crops this already
    scores a low NME, so a landmark head localises only if it beats this (datasets with targets="landmarks")."""
    mean = np.nanmean(train.landmarks.numpy(), axis=0)                        # (68, 2) normalised
    true = val.landmarks.numpy()
    return metrics.landmark_errors(np.broadcast_to(mean, true.shape), true, size)


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
