"""The kit's figures: each returns its matplotlib Figure and, given a path, saves it as PNG."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns


def _save(fig, path: str | Path | None):
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig


def sample_grid(images: Sequence, labels: Sequence[int], classes: Sequence[str], per_class: int = 6,
                path=None, title: str | None = None):
    """A row of faces per class; images are uint8 (3,H,W) tensors or (H,W,3) arrays."""
    from .data.plots import landmark_grid   # data.plots builds on this module

    return landmark_grid(images, labels, None, classes, per_class=per_class, path=path, title=title)


def class_counts(summary: pd.DataFrame, path=None, title="Frames per class"):
    """Grouped bars of per-class frame counts for each split (rows of `summary`)."""
    df = summary.drop(columns=[c for c in ("total",) if c in summary]).T
    fig, ax = plt.subplots(figsize=(8, 3.2))
    df.plot.bar(ax=ax, width=0.8)
    ax.set_ylabel("frames")
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return _save(fig, path)


def learning_curves(history: pd.DataFrame, path=None):
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2))
    loss_cols = [c for c in history if c.startswith("train_")]
    history.plot(x="epoch", y=loss_cols, ax=a, marker="o")
    a.set_title("training loss (paper A Eq. 3 and its terms)")
    a.set_yscale("log")
    history.plot(x="epoch", y=["val_p_expr", "val_accuracy"], ax=b, marker="o")
    b.set_title("validation")
    b.set_ylim(0, 1)
    fig.tight_layout()
    return _save(fig, path)


def per_class_f1(f1: dict[str, float], path=None, title="Per-class F1 (validation)", reference: float | None = None):
    fig, ax = plt.subplots(figsize=(8, 3.2))
    names, values = list(f1), list(f1.values())
    sns.barplot(x=names, y=values, hue=names, palette="viridis", legend=False, ax=ax)
    for i, v in enumerate(values):
        ax.text(i, v + 0.02, f"{v:.2f}", ha="center", fontsize=8)
    mean = float(np.mean(values))
    ax.axhline(mean, color="k", ls="--", lw=1, label=f"P_EXPR = mean F1 = {mean:.3f}")
    if reference is not None:
        ax.axhline(reference, color="tab:red", ls=":", lw=1.5, label=f"pixel logistic regression = {reference:.3f}")
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("F1")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(cm, classes: Sequence[str], path=None, normalize: bool = True, title="Confusion matrix (validation)"):
    """Rows are the true class; with normalize, each row sums to 1 (recall on the diagonal)."""
    cm = np.asarray(cm, dtype=float)
    shown = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    fig, ax = plt.subplots(figsize=(6.2, 5.2))
    sns.heatmap(shown, annot=True, fmt=".2f" if normalize else ".0f", cmap="Blues", xticklabels=classes,
                yticklabels=classes, vmin=0, vmax=1 if normalize else None, cbar=False, ax=ax, annot_kws={"fontsize": 8})
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
