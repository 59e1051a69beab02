"""Losses defined by the papers, each next to the equation it implements.

Paper A (Jeong et al., ABAW3) trains DAN with L = L_af + L_pt + L_fo (Eq. 3). Where the published code
computes something else, the docstring says what and why the kit follows the paper.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["AffinityLoss", "PartitionLoss", "FocalLoss", "DANLoss"]


def _check_labels(labels: torch.Tensor, num_classes: int) -> None:
    if labels.ndim != 1:
        raise ValueError(f"labels must be class indices shaped (B,); got {tuple(labels.shape)}")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.numel():
        raise ValueError(f"labels must be in [0, {num_classes}); got {sorted(set(bad.tolist()))} "
                         f"(drop invalid frames such as Aff-Wild2's -1 first)")


class AffinityLoss(nn.Module):
    """Paper A Eq. 1: squared distance of each feature to its class centre, over the centres' variance.

    Pulls a class's features together while the normaliser rewards centres that spread apart. The
    centres are learnable and must be given to the optimiser with the model. As in DAN's code, the sum
    over samples is divided by the batch size and sigma_c^2 is the per-dimension (unbiased) variance of
    the centres summed over dimensions.

    Paper A's published code passes one-hot targets where DAN expects indices, so its mask pulls every
    non-Neutral frame to centre 0 and Anger frames to centre 1 and leaves centres 2-7 unused; the kit
    implements the intended (DAN) version.

    Args:
        num_classes: number of classes (centres).
        feat_dim: feature size (512 for DAN).
    """

    def __init__(self, num_classes: int = 8, feat_dim: int = 512):
        super().__init__()
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if features.ndim == 4:                        # (B, D, H, W) feature map -> GAP -> (B, D)
            features = features.mean(dim=(2, 3))
        if features.ndim != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(f"AffinityLoss expects features (B, {self.feat_dim}) or (B, {self.feat_dim}, H, W); "
                             f"got {tuple(features.shape)}")
        _check_labels(labels, self.num_classes)
        # c_{y_i} as one-hot @ centres rather than centers[labels]: the backward of indexing accumulates
        # with atomic adds on CPU, whose order (and so the last bits) changes from run to run
        own = F.one_hot(labels, self.num_classes).to(features.dtype) @ self.centers    # (B, D)
        dist = (features - own).pow(2).sum(dim=1)                    # ||x_i - c_{y_i}||^2, (B,)
        sigma2 = self.centers.var(dim=0).sum()                       # spread of the centres
        return dist.sum() / sigma2 / features.shape[0]


class PartitionLoss(nn.Module):
    """Paper A Eq. 2: L_pt = 1/(NC) sum_i sum_j log(1 + k / sigma_ij^2), over the k heads' variance.

    Small when the heads disagree channel by channel, i.e. attend to different regions. Eq. 2 averages
    the logarithm over samples i and channels j; DAN's code takes log(1 + k / mean(sigma^2)), the log of
    the mean variance (`as_code=True` reproduces it). With a single head there is nothing to partition
    and the loss is 0 (the code returned the integer 0; here it is a tensor so it can join a sum).

    Args:
        eps: added to the variance so identical heads give a large finite loss.
        as_code: use DAN's published formula instead of Eq. 2.
    """

    def __init__(self, eps: float = 1e-8, as_code: bool = False):
        super().__init__()
        self.eps, self.as_code = eps, as_code

    def forward(self, heads: torch.Tensor) -> torch.Tensor:
        if heads.ndim != 3:
            raise ValueError(f"PartitionLoss expects heads shaped (B, k, C); got {tuple(heads.shape)}")
        k = heads.shape[1]
        if k == 1:
            return heads.sum() * 0.0
        var = heads.var(dim=1)                        # sigma_ij^2 across the k heads, (B, C)
        if self.as_code:
            return torch.log1p(k / (var.mean() + self.eps))
        return torch.log1p(k / (var + self.eps)).mean()


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017), paper A's L_fo: -alpha_y (1 - p_y)^gamma log p_y.

    Down-weights frames the model already gets right, so rare and hard classes carry more of the
    gradient. gamma=0 with alpha=None is cross-entropy, which is what paper A's published code actually
    ran (`FocalLoss()` with gamma=0); the kit defaults to gamma=2 because the paper says focal.

    Args:
        alpha: None, one weight for every class, or one weight per class.
        gamma: focusing parameter.
        reduction: "mean", "sum" or "none".
    """

    def __init__(self, alpha: float | Sequence[float] | torch.Tensor | None = None, gamma: float = 2.0,
                 reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
        self.gamma, self.reduction = gamma, reduction
        self.scalar_alpha = float(alpha) if isinstance(alpha, (int, float)) else None
        per_class = None if alpha is None or self.scalar_alpha is not None else torch.as_tensor(alpha, dtype=torch.float32)
        self.register_buffer("alpha", per_class)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2:
            raise ValueError(f"FocalLoss expects logits shaped (B, C); got {tuple(logits.shape)}")
        num_classes = logits.shape[1]
        _check_labels(labels, num_classes)
        logp = F.log_softmax(logits, dim=1).gather(1, labels[:, None]).squeeze(1)   # log p_y, (B,)
        loss = -((1 - logp.exp()) ** self.gamma) * logp
        if self.alpha is not None:
            if self.alpha.numel() != num_classes:
                raise ValueError(f"alpha has {self.alpha.numel()} weights but the logits have {num_classes} classes")
            loss = loss * self.alpha[labels]
        elif self.scalar_alpha is not None:
            loss = loss * self.scalar_alpha
        if self.reduction == "mean":
            return loss.mean()
        return loss.sum() if self.reduction == "sum" else loss


class DANLoss(nn.Module):
    """Paper A Eq. 3: L = L_af + L_pt + L_fo, with per-term weights (all 1 in the paper).

    Returns the total and each term, so training curves can show what each loss is doing.
    """

    def __init__(self, num_classes: int = 8, feat_dim: int = 512, gamma: float = 2.0,
                 alpha: float | Sequence[float] | None = None, affinity_weight: float = 1.0,
                 partition_weight: float = 1.0):
        super().__init__()
        self.focal = FocalLoss(alpha=alpha, gamma=gamma)
        self.affinity = AffinityLoss(num_classes, feat_dim)
        self.partition = PartitionLoss()
        self.affinity_weight, self.partition_weight = affinity_weight, partition_weight

    def forward(self, logits, features, heads, labels) -> dict[str, torch.Tensor]:
        parts = {"focal": self.focal(logits, labels), "affinity": self.affinity(features, labels),
                 "partition": self.partition(heads)}
        parts["loss"] = parts["focal"] + self.affinity_weight * parts["affinity"] + self.partition_weight * parts["partition"]
        return parts
