"""Dataset statistics as tables: what notebook 01 shows before any model is trained.

The questions are the ones the papers answer about Aff-Wild2 before training: how imbalanced are the
classes (paper A Table 1), how long are the videos, where do frames sit in valence-arousal space, how
often is each AU active and which AUs come together.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..labels import AFFWILD2_EXPR_COUNTS, AU_NAMES, EXPR_CLASSES
from .table import FrameTable


def class_table(tables: dict[str, FrameTable], with_affwild2: bool = True) -> pd.DataFrame:
    """Frames per class for each named table, in the layout of paper A Table 1 (one row per set),
    with Aff-Wild2's training counts from that table as the first row when the classes are the 8."""
    rows = {}
    classes = next(iter(tables.values())).classes if tables else EXPR_CLASSES
    if with_affwild2 and tuple(classes) == EXPR_CLASSES:
        rows["Aff-Wild2 train (paper A Table 1)"] = list(AFFWILD2_EXPR_COUNTS)
    for name, t in tables.items():
        if tuple(t.classes) != tuple(classes):
            raise ValueError(f"table {name!r} has classes {t.classes}, the others {classes}")
        rows[name] = t.class_counts().tolist()
    df = pd.DataFrame(rows, index=list(classes)).T
    df["total"] = df.sum(axis=1)
    return df


def imbalance(df: pd.DataFrame) -> pd.DataFrame:
    """Per row of a class table: largest/smallest class ratio and each class's share in percent."""
    counts = df.drop(columns=[c for c in ("total",) if c in df])
    share = counts.div(counts.sum(axis=1), axis=0) * 100
    out = share.round(1).add_suffix(" %")
    out.insert(0, "largest / smallest", (counts.max(axis=1) / counts.replace(0, np.nan).min(axis=1)).round(1))
    return out


def frames_per_video(table: FrameTable) -> pd.Series:
    """Kept frames of each video, longest first."""
    return pd.Series(table.videos).value_counts().rename("frames")


def au_prevalence(table: FrameTable) -> pd.Series:
    """Share of frames (with valid AU labels) in which each AU is active."""
    au = _valid_au(table)
    return pd.Series(au.mean(axis=0), index=list(AU_NAMES), name="prevalence")


def au_cooccurrence(table: FrameTable) -> pd.DataFrame:
    """P(column AU active | row AU active): which AUs come together (the diagonal is 1)."""
    au = _valid_au(table)
    both = au.T @ au
    active = np.diag(both)
    cond = np.divide(both, active[:, None], out=np.zeros_like(both), where=active[:, None] > 0)
    return pd.DataFrame(cond, index=list(AU_NAMES), columns=list(AU_NAMES))


def va_histogram(table: FrameTable, bins: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """2-D histogram (bins x bins) of valence (rows) and arousal (columns) over [-1, 1]^2, and the edges."""
    if table.va is None:
        raise ValueError(f"{table.report.source} has no valence-arousal labels")
    va = table.va[np.isfinite(table.va).all(axis=1)]
    hist, edges, _ = np.histogram2d(va[:, 0], va[:, 1], bins=bins, range=[[-1, 1], [-1, 1]])
    return hist, edges


def _valid_au(table: FrameTable) -> np.ndarray:
    if table.au is None:
        raise ValueError(f"{table.report.source} has no AU labels")
    au = table.au[(table.au >= 0).all(axis=1)]
    if not len(au):
        raise ValueError(f"{table.report.source}: no frame has valid AU labels")
    return au.astype(np.float64)


def pick_per_class(labels, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of up to per_class random frames of each class (for sample grids), class by class."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    picks = [np.sort(rng.permutation(np.flatnonzero(labels == c))[:per_class]) for c in np.unique(labels[labels >= 0])]
    return np.concatenate(picks) if picks else np.zeros(0, np.int64)


def videos_per_class(table: FrameTable) -> pd.Series:
    """In how many distinct videos each class appears: a class seen in few videos is seen on few people."""
    return pd.Series([len(set(table.videos[table.labels == c])) for c in range(len(table.classes))],
                     index=list(table.classes), name="videos")


def always_one_class(counts, k: int | None = None) -> dict:
    """Scores of answering class k (default: the most frequent) for every frame of a split with these
    per-class frame counts: accuracy n_k / N, that class's F1 2 n_k / (N + n_k) (precision n_k / N, recall
    1), every other class's F1 0, so P_EXPR = F1_k / C. Why ABAW scores by mean F1, not accuracy."""
    n = np.asarray(counts, dtype=float)
    k = int(np.argmax(n)) if k is None else k
    f1 = 2 * n[k] / (n.sum() + n[k])
    return {"class": k, "accuracy": float(n[k] / n.sum()), "f1": float(f1), "p_expr": float(f1 / len(n))}


def strongest_pair(cooccurrence: pd.DataFrame) -> tuple[str, str, float]:
    """The (row AU, column AU) pair, off the diagonal, with the highest P(column | row)."""
    c = cooccurrence.to_numpy().copy()
    np.fill_diagonal(c, -np.inf)
    i, j = np.unravel_index(np.argmax(c), c.shape)
    return cooccurrence.index[i], cooccurrence.columns[j], float(c[i, j])
