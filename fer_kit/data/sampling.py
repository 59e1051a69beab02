"""What the training loop sees, and how often: weighted sampling, per-class caps, bagging subsets.

Paper A draws frames with inverse-frequency weights ("weighted data sampling") and trains its ensemble
members on subsets; paper C caps each class ("max samples per class", Table 3) and oversamples what is left
(an imbalanced-dataset sampler: `weighted_sampler` on the capped frames); paper E trains members on
20% subsets. All of them are seeded, so a run can be repeated exactly.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import WeightedRandomSampler


def class_weights(labels, num_classes: int) -> np.ndarray:
    """Inverse class frequency per sample, so every class is drawn equally often in expectation.
    Frames without a valid class (-1, in multi-task tables) get weight 0."""
    labels = np.asarray(labels)
    valid = labels >= 0
    counts = np.bincount(labels[valid], minlength=num_classes).astype(np.float64)
    per_class = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return np.where(valid, per_class[np.where(valid, labels, 0)], 0.0)


def weighted_sampler(labels, num_classes: int, num_samples: int | None = None,
                     generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """Draw with replacement, weights 1/count(class), one epoch = len(labels) draws (as DAN's sampler)."""
    weights = torch.as_tensor(class_weights(labels, num_classes), dtype=torch.double)
    if not (weights > 0).any():
        raise ValueError("no frame has a valid class label to sample")
    return WeightedRandomSampler(weights, num_samples or len(weights), replacement=True, generator=generator)


def cap_per_class(labels, max_per_class: int, seed: int = 0) -> np.ndarray:
    """Sorted indices keeping at most max_per_class frames of each class, drawn at random (paper C
    Table 3's "max samples per class"). Paper C trims the majority classes this way *and* oversamples
    the rest (its Table 3 caption); pair the cap with `weighted_sampler` to do both."""
    if max_per_class < 1:
        raise ValueError(f"max_per_class must be >= 1; got {max_per_class}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:max_per_class] for c in np.unique(labels[labels >= 0])]
    return np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)


def bagging_subsets(n: int, k: int, fraction: float = 0.2, bootstrap: bool = False, seed: int = 0,
                    groups=None) -> list[np.ndarray]:
    """Index sets for k ensemble members over n frames.

    fraction: each member sees this share of the frames, drawn without replacement (paper E: 0.2).
    bootstrap: each member draws n frames with replacement instead (classic bagging).
    groups: per-frame video ids; whole videos are drawn, so no member's subset splits a video.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1; got {k}")
    if not bootstrap and not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1]; got {fraction}")
    rng = np.random.default_rng(seed)
    if groups is None:
        units = [np.array([i]) for i in range(n)]
    else:
        groups = np.asarray(groups)
        if len(groups) != n:
            raise ValueError(f"groups has {len(groups)} entries for {n} frames")
        _, inverse = np.unique(groups, return_inverse=True)
        units = [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)]
    subsets = []
    for _ in range(k):
        if bootstrap:
            pick = rng.integers(0, len(units), len(units))
        else:
            pick = rng.choice(len(units), size=max(1, int(round(fraction * len(units)))), replace=False)
        subsets.append(np.sort(np.concatenate([units[i] for i in pick])))
    return subsets


def subset_overlap(subsets: list[np.ndarray]) -> np.ndarray:
    """Jaccard overlap of the distinct frames of every pair of subsets (k, k): how different members' data is."""
    sets = [set(np.asarray(s).tolist()) for s in subsets]
    k = len(sets)
    out = np.eye(k)
    for i in range(k):
        for j in range(i + 1, k):
            out[i, j] = out[j, i] = len(sets[i] & sets[j]) / max(len(sets[i] | sets[j]), 1)
    return out


def sampled_class_counts(labels, num_classes: int, n_draws: int, weighted: bool, seed: int = 0) -> np.ndarray:
    """How often each class comes up in n_draws frames drawn as the training loop would draw them:
    shuffled without replacement (repeating epochs as needed), or with the weighted sampler."""
    labels = np.asarray(labels)
    g = torch.Generator().manual_seed(seed)
    if weighted:
        idx = torch.tensor(list(weighted_sampler(labels, num_classes, n_draws, generator=g)))
    else:
        idx = torch.cat([torch.randperm(len(labels), generator=g) for _ in range(-(-n_draws // len(labels)))])[:n_draws]
    drawn = labels[idx.numpy()]
    return np.bincount(drawn[drawn >= 0], minlength=num_classes)


def epoch_coverage(labels, num_classes: int, seed: int = 0) -> pd.DataFrame:
    """Per class, what one weighted epoch (len(labels) draws, as `weighted_sampler`) does to its frames:
    draws, distinct frames seen, and the share seen beside its expectation 1 - (1 - q)^N (q: one frame's
    draw probability). The sampler balances the classes by repeating rare frames and skipping common ones."""
    labels = np.asarray(labels)
    drawn = np.array(list(weighted_sampler(labels, num_classes, generator=torch.Generator().manual_seed(seed))))
    weights = class_weights(labels, num_classes)
    q = weights / weights.sum()
    rows = []
    for c in np.unique(labels[labels >= 0]):
        mine = labels[drawn] == c
        frames = int((labels == c).sum())
        rows.append({"class": int(c), "frames": frames, "draws": int(mine.sum()),
                     "distinct seen": len(np.unique(drawn[mine])),
                     "share seen": len(np.unique(drawn[mine])) / frames,
                     "expected share": 1 - (1 - q[labels == c][0]) ** len(labels)})
    return pd.DataFrame(rows).set_index("class")


def member_share(n_units: int, fraction: float = 0.2, bootstrap: bool = False) -> float:
    """Expected share s of the n_units videos one `bagging_subsets` member sees: the fraction, rounded as
    the draw rounds it, or 1 - (1 - 1/n)^n (about 63%) for a bootstrap. Two independent members then
    share s^2 on average, a Jaccard overlap of s / (2 - s), and (1 - s)^k of the videos reach none of k."""
    if bootstrap:
        return 1 - (1 - 1 / n_units) ** n_units
    return max(1, int(round(fraction * n_units))) / n_units


def cap_report(labels, caps, class_names, seed: int = 0) -> pd.DataFrame:
    """For each per-class cap (paper C Table 3), what `cap_per_class` keeps: frames kept and thrown away,
    the classes it trims, and the largest/smallest class ratio left (the imbalance the cap buys off)."""
    labels = np.asarray(labels)
    total = np.bincount(labels[labels >= 0], minlength=len(class_names))
    present = total > 0
    rows = []
    for cap in caps:
        kept = np.bincount(labels[cap_per_class(labels, cap, seed=seed)], minlength=len(class_names))
        rows.append({"cap": cap, "kept": int(kept.sum()), "thrown away": int(total.sum() - kept.sum()),
                     "share thrown away": 1 - kept.sum() / total.sum(),
                     "classes trimmed": [n for n, t, k in zip(class_names, total, kept) if k < t],
                     "imbalance before": total[present].max() / total[present].min(),
                     "imbalance after": kept[present].max() / kept[present].min()})
    return pd.DataFrame(rows).set_index("cap")
