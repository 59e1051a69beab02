"""Figures about data (notebooks 01 and 02): each returns its Figure and, given a path, saves a PNG."""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from ..labels import EXPR_CLASSES
from ..plots import _save
from .table import FrameTable


def _clean(ax):
    ax.set_xticks([])
    ax.set_yticks([])
    for s in ax.spines.values():
        s.set_visible(False)


def _grouped_bars(df: pd.DataFrame, ylabel: str, title: str, log: bool = False, uniform: float | None = None,
                  ylim=None, figsize=(9, 3.3)):
    """Bars per row of df (classes), one colour per column; pandas colours the columns C0, C1, ..."""
    fig, ax = plt.subplots(figsize=figsize)
    df.plot.bar(ax=ax, width=0.8)
    if uniform is not None:
        ax.axhline(uniform, color="k", ls="--", lw=1, label="uniform")
    if log:
        ax.set_yscale("log")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.tick_params(axis="x", rotation=30)
    ax.legend(fontsize=8)
    return fig, ax


def class_shares(df: pd.DataFrame, path=None, title="Share of frames per class"):
    """Each row's class shares in percent (rows of stats.class_table), log scale so the minority classes
    stay visible."""
    counts = df.drop(columns=[c for c in ("total",) if c in df])
    fig, _ = _grouped_bars((counts.div(counts.sum(axis=1), axis=0) * 100).T, "% of frames (log)", title, log=True)
    fig.tight_layout()
    return _save(fig, path)


def f1_by_setting(f1: dict[str, dict[str, float]], path=None, title="Per-class F1 (validation)"):
    """Bars of per-class F1, one colour per setting (e.g. class balance), dashed lines at their means."""
    df = pd.DataFrame(f1)
    fig, ax = _grouped_bars(df, "F1", title + "  (dashed: mean = P_EXPR)", ylim=(0, 1))
    for i, col in enumerate(df):
        ax.axhline(df[col].mean(), ls="--", lw=1, color=f"C{i}")
    fig.tight_layout()
    return _save(fig, path)


def frames_per_video(lengths: dict[str, pd.Series], path=None):
    fig, ax = plt.subplots(figsize=(6, 3))
    for name, s in lengths.items():
        ax.hist(s.values, bins=30, alpha=0.6, label=f"{name} ({len(s)} videos, median {int(s.median())})")
    ax.set_xlabel("kept frames per video")
    ax.set_ylabel("videos")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def va_density(table: FrameTable, path=None, title="Valence-arousal density"):
    """2-D density of valid VA labels, with each expression's mean marked (the circumplex)."""
    if table.va is None:
        raise ValueError(f"{table.report.source} has no valence-arousal labels")
    ok = np.isfinite(table.va).all(axis=1)
    va, labels = table.va[ok], table.labels[ok]
    fig, ax = plt.subplots(figsize=(5.2, 4.8))
    hb = ax.hexbin(va[:, 0], va[:, 1], gridsize=35, extent=(-1, 1, -1, 1), bins="log", cmap="Greys")
    fig.colorbar(hb, ax=ax, label="frames (log)")
    for c, name in enumerate(table.classes):
        sel = labels == c
        if sel.any():
            m = va[sel].mean(0)
            ax.scatter(*m, s=60, color=sns.color_palette("tab10")[c], edgecolor="k", zorder=3)
            ax.annotate(name, m, xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.axhline(0, color="k", lw=0.5)
    ax.axvline(0, color="k", lw=0.5)
    ax.set(xlim=(-1, 1), ylim=(-1, 1), xlabel="valence", ylabel="arousal", title=title)
    fig.tight_layout()
    return _save(fig, path)


def au_statistics(prevalence: pd.Series, cooccurrence: pd.DataFrame, path=None):
    """AU prevalence (bars) beside P(column AU | row AU) (heatmap)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw=dict(width_ratios=[1, 1.3]))
    sns.barplot(x=prevalence.index, y=prevalence.values, color="tab:blue", ax=a)
    a.set(xlabel="", ylabel="share of frames with the AU active", title="AU prevalence", ylim=(0, 1))
    a.tick_params(axis="x", rotation=60)
    sns.heatmap(cooccurrence, vmin=0, vmax=1, cmap="magma", annot=True, fmt=".1f", annot_kws={"fontsize": 6}, ax=b)
    b.set(title="P(column AU active | row AU active)")
    fig.tight_layout()
    return _save(fig, path)


_LANDMARK_GROUPS = ((0, 17), (17, 27), (27, 36), (36, 48), (48, 68))       # jaw, brows, nose, eyes, mouth
_LANDMARK_COLOURS = ("#ffd166", "#06d6a0", "#118ab2", "#ef476f", "#f78c6b")


def _show(ax, im, points=None):
    im = np.asarray(im)
    im = im.transpose(1, 2, 0) if im.ndim == 3 and im.shape[0] == 3 else im
    ax.imshow(np.clip(im, 0, 1) if im.dtype.kind == "f" else im)
    if points is not None and np.isfinite(points).all():
        for (s, e), col in zip(_LANDMARK_GROUPS, _LANDMARK_COLOURS):
            ax.scatter(points[s:e, 0], points[s:e, 1], s=1.5, c=col, linewidths=0)
        ax.set(xlim=(-0.5, im.shape[1] - 0.5), ylim=(im.shape[0] - 0.5, -0.5))   # points off the image stay off


def image_rows(rows: dict[str, Sequence], points: dict[str, Sequence] | None = None, path=None, title=None,
               size: float = 1.35):
    """One row of images per name (classes, augmentation recipes); images uint8/float (3,H,W) or (H,W,3),
    with optional 68 landmarks per image in `points` under the same names."""
    n = max(len(v) for v in rows.values())
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n, size * 1.04 * len(rows)), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for j in range(n):
            ax = axes[r, j]
            _clean(ax)
            if j < len(images):
                _show(ax, images[j], None if points is None or points.get(name) is None else points[name][j])
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _one_per_group(idx: np.ndarray, groups: np.ndarray | None, n: int) -> np.ndarray:
    """The first frame of each group (video) first, then the rest: n frames of as many people as exist."""
    if groups is None:
        return idx[:n]
    _, first = np.unique(groups[idx], return_index=True)
    lead = idx[np.sort(first)]
    return np.concatenate([lead, np.setdiff1d(idx, lead)])[:n]


def landmark_grid(images: Sequence, labels: Sequence[int], landmarks: np.ndarray | None,
                  classes: Sequence[str] = EXPR_CLASSES, per_class: int = 6, path=None, title=None, groups=None):
    """A row of faces per class, with their 68 landmarks when given; with `groups` (each frame's video)
    a row shows different videos (people) before it repeats one."""
    labels = np.asarray(labels)
    groups = None if groups is None else np.asarray(groups)
    picks = {name: _one_per_group(np.flatnonzero(labels == c), groups, per_class) for c, name in enumerate(classes)}
    rows = {name: [images[i] for i in idx] for name, idx in picks.items()}
    points = None if landmarks is None else {name: [landmarks[i] for i in idx] for name, idx in picks.items()}
    return image_rows(rows, points, path=path, title=title)


def sampled_classes(counts: dict[str, np.ndarray], classes: Sequence[str] = EXPR_CLASSES, path=None,
                    title="Classes in sampled training batches"):
    """How often each class was drawn, one colour per sampler."""
    df = pd.DataFrame({k: np.asarray(v) / np.sum(v) * 100 for k, v in counts.items()}, index=list(classes))
    fig, _ = _grouped_bars(df, "% of sampled frames", title, uniform=100 / len(classes))
    fig.tight_layout()
    return _save(fig, path)


def overlap_heatmap(overlap: np.ndarray, path=None, title="Jaccard overlap of bagging subsets"):
    fig, ax = plt.subplots(figsize=(4.2, 3.6))
    names = [f"bag {i}" for i in range(len(overlap))]
    sns.heatmap(overlap, vmin=0, vmax=1, annot=True, fmt=".2f", cmap="viridis", xticklabels=names, yticklabels=names, ax=ax)
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
