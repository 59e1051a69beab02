"""Toy problems on which each paper's loss shows what it rewards (notebook 03).

Each toy optimises a handful of free tensors (standing in for what a network would output) under one
of the kit's real losses, and returns the before/after state for a picture. The losses are the ones
training uses, imported from fer_kit.losses, so a picture cannot drift from the code it explains.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .losses import AffinityLoss, AttentionDiversityLoss, FocalLoss, PartitionLoss, ccc

__all__ = ["AffinityToy", "affinity_toy", "PartitionToy", "partition_toy", "ccc_vs_mse", "AttentionToy",
           "attention_diversity_toy", "focal_curves", "focal_gradient_ratio"]


def _adam_steps(params, loss_fn, steps: int, lr: float) -> list[float]:
    opt = torch.optim.Adam(params, lr=lr)
    history = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
    return history


def _spread_ratio(features: np.ndarray, labels: np.ndarray, centres: np.ndarray) -> float:
    """Mean squared distance of a feature to its class centre over the centres' summed variance."""
    within = ((features - centres[labels]) ** 2).sum(axis=1).mean()
    return float(within / centres.var(axis=0, ddof=1).sum())


@dataclass
class AffinityToy:
    labels: np.ndarray            # (N,)
    features_before: np.ndarray   # (N, 2)
    features_after: np.ndarray    # (N, 2)
    centres_before: np.ndarray    # (C, 2)
    centres_after: np.ndarray     # (C, 2)
    loss: list[float]             # per step

    @property
    def ratio_before(self) -> float:
        return _spread_ratio(self.features_before, self.labels, self.centres_before)

    @property
    def ratio_after(self) -> float:
        return _spread_ratio(self.features_after, self.labels, self.centres_after)


def affinity_toy(num_classes: int = 3, per_class: int = 40, steps: int = 150, lr: float = 0.03,
                 seed: int = 0) -> AffinityToy:
    """Paper A Eq. 1 on free 2-D features of overlapping classes: features gather at their class
    centre while the centres, learnable too, move apart (the variance in the denominator)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class)                      # (N,)
    offsets = torch.randn(num_classes, 2, generator=g) * 0.6
    features = (offsets[labels] + torch.randn(len(labels), 2, generator=g)).requires_grad_(True)   # (N, 2)
    loss_fn = AffinityLoss(num_classes, feat_dim=2)
    with torch.no_grad():
        loss_fn.centers.copy_(torch.randn(num_classes, 2, generator=g) * 0.5)
    before = (features.detach().numpy().copy(), loss_fn.centers.detach().numpy().copy())
    history = _adam_steps([features, loss_fn.centers], lambda: loss_fn(features, labels), steps, lr)
    return AffinityToy(labels.numpy(), before[0], features.detach().numpy(), before[1],
                       loss_fn.centers.detach().numpy(), history)


@dataclass
class PartitionToy:
    probs_before: np.ndarray      # (k, C) softmax across heads, per channel
    probs_after: np.ndarray       # (k, C)
    loss: list[float]


def partition_toy(num_heads: int = 4, channels: int = 16, steps: int = 150, lr: float = 0.3,
                  seed: int = 0) -> PartitionToy:
    """Paper A Eq. 2 on DAN's log-softmaxed heads of one face: heads that start almost equal split the
    channels among themselves, each channel ending up owned by one head."""
    g = torch.Generator().manual_seed(seed)
    raw = (torch.randn(1, num_heads, channels, generator=g) * 0.1).requires_grad_(True)   # (1, k, C)
    loss_fn = PartitionLoss()
    before = raw.detach().softmax(dim=1)[0].numpy()
    history = _adam_steps([raw], lambda: loss_fn(raw.log_softmax(dim=1)), steps, lr)    # as DAN: across heads
    return PartitionToy(before, raw.detach().softmax(dim=1)[0].numpy(), history)


def ccc_vs_mse(n: int = 300, seed: int = 0) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Four valence predictions of one smooth trace, scored by MSE and by CCC (population moments).

    The lesson of ABAW's VA metric: predicting the mean has a low MSE and a CCC of exactly 0, while a
    prediction that follows every swing but is offset has a higher MSE and a high CCC.
    """
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, n)
    truth = 0.45 * np.sin(2 * math.pi * 2 * t) + 0.15 * np.sin(2 * math.pi * 7 * t + 1.0)
    m = truth.mean()
    preds = {"constant at the mean": np.full(n, m),
             "timid: 0.3 x the swings": m + 0.3 * (truth - m),
             "right swings, offset +0.4": truth + 0.4,
             "noisy tracker (sd 0.25)": truth + rng.normal(0.0, 0.25, n)}
    tt = torch.as_tensor(truth)
    rows = [{"prediction": name, "MSE": float(((p - truth) ** 2).mean()),
             "CCC": float(ccc(torch.as_tensor(p), tt)), "Pearson r": float(np.corrcoef(p, truth)[0, 1])
             if p.std() > 0 else float("nan")} for name, p in preds.items()]
    df = pd.DataFrame(rows)
    df["1 - CCC (the loss)"] = 1 - df["CCC"]
    return df, {"truth": truth, **preds}


@dataclass
class AttentionToy:
    maps_before: np.ndarray       # (2, 7, 7) the two heads' attention maps
    maps_after: np.ndarray        # (2, 7, 7)
    loss: list[float]
    curve: pd.DataFrame           # loss against the heads' mean squared difference


def attention_diversity_toy(size: int = 7, steps: int = 150, lr: float = 0.3, seed: int = 0) -> AttentionToy:
    """DDAMFN's attention loss (#pairs / (sum of pairwise MSE + eps)) on two sigmoid maps that start
    almost equal: minimising it drives the heads apart, towards complementary maps."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(1, 1, size, size, generator=g)
    logits = (base.repeat(1, 2, 1, 1) + 0.05 * torch.randn(1, 2, size, size, generator=g)).requires_grad_(True)
    loss_fn = AttentionDiversityLoss()

    def maps():
        return logits.sigmoid()[:, :, None]                                   # (1, 2, 1, 7, 7): B, k, C, H, W

    before = maps().detach()[0, :, 0].numpy()
    history = _adam_steps([logits], lambda: loss_fn(maps()), steps, lr)
    mse = np.geomspace(1e-3, 1.0, 40)
    curve = pd.DataFrame({"mean squared difference": mse,
                          "loss": [float(loss_fn(torch.stack([torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), d ** 0.5)],
                                                             dim=1))) for d in mse]})
    return AttentionToy(before, maps().detach()[0, :, 0].numpy(), history, curve)


def focal_curves(gammas=(0.0, 1.0, 2.0, 5.0), points: int = 99) -> pd.DataFrame:
    """Focal loss (paper A's L_fo) against the probability of the true class, one column per gamma;
    gamma = 0 is cross-entropy."""
    p = np.linspace(0.01, 0.99, points)
    logits = torch.as_tensor(np.stack([np.log(p), np.log(1 - p)], axis=1), dtype=torch.float32)   # softmax -> (p, 1-p)
    labels = torch.zeros(points, dtype=torch.long)
    out = {"p(true class)": p}
    for gamma in gammas:
        out[f"gamma = {gamma:g}"] = FocalLoss(gamma=gamma, reduction="none")(logits, labels).numpy()
    return pd.DataFrame(out)


def focal_gradient_ratio(p_true: float, gamma: float = 2.0) -> float:
    """How much of cross-entropy's gradient focal loss keeps for a frame whose true class has probability
    p_true: |dL_focal/dz_true| / |dL_CE/dz_true|, by autograd through the kit's FocalLoss. Analytically
    (1 - p)^gamma - gamma p (1 - p)^(gamma - 1) ln p: far below 1 for easy frames, above 1 for hard ones."""
    logits = torch.tensor([[math.log(p_true), math.log(1 - p_true)]], dtype=torch.float64, requires_grad=True)
    label = torch.zeros(1, dtype=torch.long)
    focal_grad, = torch.autograd.grad(FocalLoss(gamma=gamma)(logits, label), logits)
    ce_grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, label), logits)
    return float(focal_grad[0, 0] / ce_grad[0, 0])
