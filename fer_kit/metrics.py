"""ABAW metrics, always computed over a whole split.

ABAW scores F1 over the entire validation/test set; averaging per-batch F1 (as paper C's published code
did) gives a different, batch-size-dependent number. Every class is counted, so a class the model
never predicts scores 0 and pulls the mean down.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score


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
    """Everything a notebook shows about expression predictions, as JSON-ready Python values."""
    names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")
    t, p = _check(y_true, y_pred, num_classes)
    f1 = per_class_f1(t, p, num_classes)
    return {
        "p_expr": float(f1.mean()),
        "accuracy": float((t == p).mean()),
        "per_class_f1": {n: float(v) for n, v in zip(names, f1)},
        "support": {n: int(c) for n, c in zip(names, np.bincount(t, minlength=num_classes))},
        "confusion": confusion(t, p, num_classes).tolist(),
        "n": int(len(t)),
    }
