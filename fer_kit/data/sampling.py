"""Samplers that change how often each class is seen (paper A's "weighted data sampling")."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import WeightedRandomSampler


def class_weights(labels, num_classes: int) -> np.ndarray:
    """Inverse class frequency per sample, so every class is drawn equally often in expectation."""
    labels = np.asarray(labels)
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    per_class = np.where(counts > 0, 1.0 / np.maximum(counts, 1), 0.0)
    return per_class[labels]


def weighted_sampler(labels, num_classes: int, num_samples: int | None = None,
                     generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """Draw with replacement, weights 1/count(class), one epoch = len(labels) draws (as DAN's sampler)."""
    weights = torch.as_tensor(class_weights(labels, num_classes), dtype=torch.double)
    return WeightedRandomSampler(weights, num_samples or len(weights), replacement=True, generator=generator)
