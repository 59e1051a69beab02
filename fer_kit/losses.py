"""Losses defined by the papers, each next to the equation it implements.

Paper A (Jeong et al., ABAW3) trains DAN with L = L_af + L_pt + L_fo (Eq. 3). Where the published code
computes something else, the docstring says what and why the kit follows the paper.
"""
from __future__ import annotations

import sys
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .labels import AU_INVALID, EXPR_INVALID, VA_INVALID

__all__ = ["AffinityLoss", "PartitionLoss", "FocalLoss", "DANLoss",
           "LSD_TRAIN_COUNTS", "class_weights_from_counts", "normalize_landmarks", "denormalize_landmarks",
           "DANLandmarkLoss", "SequenceFocalLoss", "CEFocalLossCode", "SCANCCILoss",
           "ccc", "CCCLoss", "AttentionDiversityLoss", "AUBCELoss", "DDAMFNLoss"]


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

    def from_output(self, out, labels) -> dict[str, torch.Tensor]:
        """A DANOutput's fields into Eq. 3, in fp32 whatever precision the model ran in."""
        return self(out.logits.float(), out.features.float(), out.heads.float(), labels)


# ------------------------------------------------------------------ paper E: DAN + landmarks (ABAW4 LSD)

# LSD (ABAW4) synthetic training images per class: Anger, Disgust, Fear, Happiness, Sadness, Surprise
# (paper E's code `nSamples`; paper_code_notes §6.2, §7.3). N = 277,251.
LSD_TRAIN_COUNTS = (18286, 15150, 10923, 73285, 144631, 14976)


def class_weights_from_counts(counts: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Paper E's class weights w_c = 1 - n_c / N with N = sum_c n_c (code: `normedWeights`).

    Rarer classes weigh more, but gently (not inverse frequency): for LSD_TRAIN_COUNTS they are about
    [0.934, 0.945, 0.961, 0.736, 0.478, 0.946]; Sadness, half the data, counts half as much as Fear.
    """
    n = torch.as_tensor(counts, dtype=torch.float64)
    if n.ndim != 1 or n.numel() < 2 or not torch.isfinite(n).all() or (n < 0).any() or n.sum() <= 0:
        raise ValueError(f"class counts must be one non-negative count per class (at least 2 classes, not all 0); "
                         f"got {n.tolist()}")
    return (1 - n / n.sum()).float()


def _height_width(size) -> tuple[float, float]:
    h, w = (size, size) if isinstance(size, (int, float)) else tuple(size)
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive; got {size}")
    return float(h), float(w)


def normalize_landmarks(points, size) -> torch.Tensor:
    """Pixel-centre landmarks (..., 2) as (x, y) -> normalised coordinates in which the image spans [-1, 1].

    u = (2x + 1) / W - 1 and v = (2y + 1) / H - 1: the kit's pixel (i, j) has its centre at x = j, y = i,
    so the image covers x in [-0.5, W - 0.5], which maps to [-1, 1] (F.grid_sample's align_corners=False
    convention). The values do not change when the image is resized, and the face's centre sits near 0,
    where an untrained regressor starts. `size` is W of a square image or (H, W).
    """
    h, w = _height_width(size)
    points = torch.as_tensor(points, dtype=torch.float32) if not isinstance(points, torch.Tensor) else points
    return (2 * points + 1) / points.new_tensor([w, h]) - 1


def denormalize_landmarks(points, size) -> torch.Tensor:
    """The inverse of normalize_landmarks: [-1, 1] coordinates -> pixel-centre (x, y) in an image of `size`."""
    h, w = _height_width(size)
    points = torch.as_tensor(points, dtype=torch.float32) if not isinstance(points, torch.Tensor) else points
    return ((points + 1) * points.new_tensor([w, h]) - 1) / 2


class DANLandmarkLoss(nn.Module):
    """Paper E's multi-task loss: L = wCE + L_af + L_pt + MSE(landmarks), every weight 1 in the code.

    Paper E numbers no equations. Its §2.1 says the expression and landmark outputs "are computed with
    weighted cross-entropy and mean squared error, respectively"; its code (paper_code_notes §6.2) adds
    DAN's affinity and partition terms (paper A Eq. 1 and 2) and mixup:
        L = L_af(F_mix, y_b) + [lam wCE(z, y_a) + (1 - lam) wCE(z, y_b)] + L_pt(heads) + MSE(l_hat, l).

    - Weighted CE: w_c = 1 - n_c / N from the training class counts (`class_weights_from_counts`;
      `LSD_TRAIN_COUNTS` for LSD). Per sample l_i = -sum_c w_c q_ic log softmax(z_i)_c, where q_i is the
      one-hot label or a soft target row, e.g. from `fer_kit.data.transforms.mixup_batch`; for
      q = lam e_a + (1 - lam) e_b this is exactly the code's lam wCE(y_a) + (1 - lam) wCE(y_b). The kit
      averages over the batch, (1/B) sum_i l_i, so every sample's loss carries its weight. The code's
      nn.CrossEntropyLoss(weight=w) divides by sum_i w_{y_i} instead (weights then only trade classes off
      within a batch and cancel for one sample); `as_code=True` does that, sum_i l_i / sum_i sum_c w_c q_ic
      (for mixed targets close to, not exactly, the code, which normalises its y_a and y_b terms apart).
    - Affinity (AffinityLoss, paper A Eq. 1) on the emotion trunk map; its centres are parameters of this
      loss, so give `loss.parameters()` to the optimiser. It needs one class per sample. With mixed
      targets the code used y_b, the labels of the shuffled copy mixed in with weight 1 - lam, whatever lam;
      `mixup_batch` does not return the permutation, so by default each row's largest share (argmax q_i) is
      used, i.e. the image that dominates the mix (with lam ~ Beta(0.1, 0.1) most mixes are > 90% one
      image). Pass `affinity_labels=y[perm]` to reproduce the code.
    - Partition (PartitionLoss, paper A Eq. 2) on the heads, which paper E leaves un-log-softmaxed.
    - Landmark MSE, averaged over B x 68 x 2 coordinates (frames whose target holds a NaN, i.e. no
      landmarks, are left out of B), in normalised coordinates (the image spans
      [-1, 1]; `normalize_landmarks`). The code regressed the raw coordinates of its landmark files, whose
      squared error is in px^2: at 224 px thousands of times the CE, and dependent on the image size.
      Normalised, it is on the other terms' scale and resolution-free. Give `image_size` (the size of the
      image the pixel landmarks refer to) to have pixel targets normalised here; with None the targets
      must already be normalised. The model's predictions are always in normalised coordinates.

    Args:
        class_counts: training images per class, for w_c; None gives w_c = 1 (plain CE).
        num_classes: classes (6 for LSD).
        feat_dim: emotion feature size (512).
        image_size: W (square) or (H, W) of the images pixel landmark targets refer to; None if the
            targets are already normalised.
        affinity_weight, partition_weight, landmark_weight: term weights (1 in paper E's code).
        as_code: CE normalised by the summed weights like nn.CrossEntropyLoss(weight=w), and DAN's
            published partition formula (PartitionLoss(as_code=True)), as paper E's code ran them.

    Forward(output, labels, landmarks, affinity_labels=None): `output` is the model's output (anything with
    .logits (B, C), .features (B, 512, h, w), .heads (B, k, 512), .landmarks (B, 68, 2)); `labels` are
    class indices (B,) or soft targets (B, C); `landmarks` the targets (B, 68, 2). Returns a dict with the
    total "loss" and the terms "ce", "affinity", "partition", "landmark".
    """

    def __init__(self, class_counts: Sequence[float] | torch.Tensor | None = None, num_classes: int = 6,
                 feat_dim: int = 512, image_size: int | tuple[int, int] | None = None,
                 affinity_weight: float = 1.0, partition_weight: float = 1.0, landmark_weight: float = 1.0,
                 as_code: bool = False):
        super().__init__()
        weights = torch.ones(num_classes) if class_counts is None else class_weights_from_counts(class_counts)
        if weights.numel() != num_classes:
            raise ValueError(f"class_counts has {weights.numel()} entries but num_classes is {num_classes}")
        self.register_buffer("class_weights", weights)
        self.num_classes, self.as_code = num_classes, as_code
        self.image_size = None if image_size is None else _height_width(image_size)
        self.affinity = AffinityLoss(num_classes, feat_dim)
        self.partition = PartitionLoss(as_code=as_code)
        self.affinity_weight, self.partition_weight = affinity_weight, partition_weight
        self.landmark_weight = landmark_weight

    def _targets(self, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Class indices (B,) or soft targets (B, C) -> target distributions q (B, C), checked."""
        if labels.ndim == 2:
            if labels.shape != logits.shape:
                raise ValueError(f"soft targets must be shaped like the logits {tuple(logits.shape)}; "
                                 f"got {tuple(labels.shape)}")
            q = labels.to(logits.dtype)
            if not torch.isfinite(q).all() or (q < 0).any() or not torch.allclose(q.sum(1), torch.ones_like(q[:, 0]), atol=1e-3):
                raise ValueError("soft targets must be non-negative rows summing to 1 (e.g. from mixup_batch)")
            return q
        if labels.is_floating_point():
            raise ValueError(f"labels must be integer class indices (B,) or soft targets (B, C); got {labels.dtype} "
                             f"shaped {tuple(labels.shape)}")
        _check_labels(labels, self.num_classes)
        if labels.shape[0] != logits.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {logits.shape[0]} logits")
        return F.one_hot(labels.long(), self.num_classes).to(logits.dtype)

    def weighted_ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The class-weighted cross-entropy term alone (hard or soft targets)."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"expected logits shaped (B, {self.num_classes}); got {tuple(logits.shape)}")
        wq = self._targets(labels, logits) * self.class_weights.to(logits.dtype)    # w_c q_ic, (B, C)
        per_sample = -(wq * F.log_softmax(logits, dim=1)).sum(dim=1)                # l_i, (B,)
        if self.as_code:
            return per_sample.sum() / wq.sum()
        return per_sample.mean()

    def landmark_mse(self, predicted: torch.Tensor, landmarks) -> torch.Tensor:
        """The landmark term alone: MSE in normalised coordinates (targets normalised if image_size is set)."""
        target = torch.as_tensor(landmarks, dtype=predicted.dtype, device=predicted.device)
        if target.shape != predicted.shape:
            raise ValueError(f"landmark targets must be shaped like the predictions {tuple(predicted.shape)}; "
                             f"got {tuple(target.shape)}")
        if self.image_size is not None:
            target = normalize_landmarks(target, self.image_size)
        known = torch.isfinite(target).all(dim=-1).all(dim=-1)      # (B,): frames without landmarks are skipped
        if not known.any():
            return predicted.sum() * 0.0                            # a zero that still joins the graph
        return F.mse_loss(predicted[known], target[known])

    def forward(self, output, labels: torch.Tensor, landmarks, affinity_labels: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
        missing = [k for k in ("logits", "features", "heads", "landmarks") if not hasattr(output, k)]
        if missing:
            raise TypeError(f"DANLandmarkLoss takes the model's output (with .logits, .features, .heads, "
                            f".landmarks); {type(output).__name__} has no {', '.join(missing)}")
        labels = torch.as_tensor(labels, device=output.logits.device)
        if affinity_labels is None:
            affinity_labels = labels.argmax(dim=1) if labels.ndim == 2 else labels
        parts = {"ce": self.weighted_ce(output.logits, labels),
                 "affinity": self.affinity(output.features, affinity_labels),
                 "partition": self.partition(output.heads),
                 "landmark": self.landmark_mse(output.landmarks, landmarks)}
        parts["loss"] = (parts["ce"] + self.affinity_weight * parts["affinity"]
                         + self.partition_weight * parts["partition"] + self.landmark_weight * parts["landmark"])
        return parts

    def from_output(self, out, targets: dict) -> dict[str, torch.Tensor]:
        """A DANLandmarksOutput (fp32) against the frames' {"expr", "landmarks"} targets."""
        out = out._replace(**{k: getattr(out, k).float() for k in ("logits", "features", "heads", "landmarks")})
        return self(out, targets["expr"], targets["landmarks"])


# ---------------------------------------------------------------------------------------------------
# Paper B (PRLAB, ABAW3): per-frame losses over clips, (B, T, C) logits with (B, T) labels.


def _valid_frames(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -1,
                  name: str = "loss") -> tuple[torch.Tensor, torch.Tensor]:
    """Flatten (B, T, C) logits and (B, T) labels (or (N, C) and (N,)) to the frames whose label is not
    `ignore_index` (padding, Aff-Wild2's -1): returns (n, C) logits and (n,) labels. Any other label
    outside [0, C) is an error."""
    if logits.ndim not in (2, 3) or tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"{name} expects logits (B, T, C) with labels (B, T), or (N, C) with (N,); "
                         f"got logits {tuple(logits.shape)} and labels {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{name} expects integer class indices; got labels of dtype {labels.dtype}")
    num_classes = logits.shape[-1]
    logits, labels = logits.reshape(-1, num_classes), labels.reshape(-1)       # (B*T, C), (B*T,)
    bad = labels[(labels != ignore_index) & ((labels < 0) | (labels >= num_classes))]
    if bad.numel():
        raise ValueError(f"{name}: labels must be in [0, {num_classes}) or {ignore_index} (ignored padding); "
                         f"got {sorted(set(bad.tolist()))}")
    keep = labels != ignore_index
    return logits[keep], labels[keep]


class SequenceFocalLoss(nn.Module):
    """Paper B's loss as the paper states it: focal loss (Lin et al. 2017) on every frame of every clip.

    -alpha (1 - p_y)^gamma log p_y per frame (see FocalLoss), averaged over the frames whose label is not
    `ignore_index`. Takes (B, T, C) logits with (B, T) labels, or (N, C) with (N,). Paper B does not give
    alpha or gamma; the defaults are Lin et al.'s gamma = 2 with no alpha. If every frame is padding, the
    loss is a zero that still joins the graph.
    """

    def __init__(self, gamma: float = 2.0, alpha: float | Sequence[float] | torch.Tensor | None = None,
                 ignore_index: int = -1):
        super().__init__()
        self.ignore_index = ignore_index
        self.focal = FocalLoss(alpha=alpha, gamma=gamma)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logits_v, labels_v = _valid_frames(logits, labels, self.ignore_index, "SequenceFocalLoss")
        if labels_v.numel() == 0:
            return logits.sum() * 0.0
        return self.focal(logits_v, labels_v)

    def from_output(self, out, labels) -> dict[str, torch.Tensor]:
        return {"loss": self(out.logits.float(), labels)}


class CrossEntropy(nn.CrossEntropyLoss):
    """Plain cross-entropy for a baseline classifier (paper C Table 2's ResNet-50), read from its output."""

    def from_output(self, out, labels) -> dict[str, torch.Tensor]:
        return {"loss": self(out.logits.float(), labels)}


class CEFocalLossCode(nn.Module):
    """Paper B's *published code* loss (`core/loss.py: CEFocalLoss`, paper_code_notes.md §3.3).

    On the valid frames (label != ignore_index) with n frames, C classes and smoothing s:
        ce_i    = cross_entropy(z_i, y_i, label_smoothing=s)
                = -(1 - s) log p_{i,y_i} - (s / C) sum_c log p_{i,c}
        focal_i = alpha * ce_i * (1 - p_{i,y_i})^gamma       (alpha: one scalar for every class, as the
                                                              code's sum(alpha * onehot) = alpha; skipped
                                                              when alpha <= 0)
        KL      = 1/n sum_i sum_c q_c log(q_c / p_{i,c}),  q = onehot(y_i) (1 - s) + s / C   ('batchmean')
        loss    = (1 - w) mean_i focal_i + w KL,            w = distillation_weight = 0.2
    With w = 0 the loss is mean_i focal_i (the code's distillation_loss=False). Defaults are the code's
    config: s = 0.1, alpha = 0.9, gamma = 2. The code never masks frames (padding repeats the last frame
    with its label); here -1 labels are dropped, so KL's batchmean divides by the number of valid frames.
    """

    def __init__(self, label_smoothing: float = 0.1, alpha: float = 0.9, gamma: float = 2.0,
                 distillation_weight: float = 0.2, ignore_index: int = -1):
        super().__init__()
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
        if not 0.0 <= distillation_weight <= 1.0:
            raise ValueError(f"distillation_weight must be in [0, 1]; got {distillation_weight}")
        self.label_smoothing, self.alpha, self.gamma = label_smoothing, float(alpha), gamma
        self.distillation_weight, self.ignore_index = distillation_weight, ignore_index

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        z, y = _valid_frames(logits, labels, self.ignore_index, "CEFocalLossCode")   # (n, C), (n,)
        if y.numel() == 0:
            return logits.sum() * 0.0
        num_classes, s = z.shape[1], self.label_smoothing
        logp = F.log_softmax(z, dim=1)                                               # (n, C)
        ce = F.cross_entropy(z, y, label_smoothing=s, reduction="none")              # (n,)
        p_t = logp.gather(1, y[:, None]).squeeze(1).exp()                            # p_{i,y_i}, (n,)
        focal = ce * (1 - p_t) ** self.gamma
        if self.alpha > 0:
            focal = self.alpha * focal
        w = self.distillation_weight
        if w == 0:
            return focal.mean()
        target = F.one_hot(y, num_classes).to(z.dtype) * (1 - s) + s / num_classes  # q, (n, C)
        kl = F.kl_div(logp, target, reduction="batchmean")
        return (1 - w) * focal.mean() + w * kl


# ---------------------------------------------------------------------------------------------------
# Paper C (Gera & Balasubramanian, ABAW 2020): SCAN + CCI.


class SCANCCILoss(nn.Module):
    """Paper C Eq. 4-5: L = lambda L_u + (1 - lambda) L_l, with L_l = sum_{i=1..k} L_i and lambda = 0.2.

    L_u is the cross-entropy of the SCAN local-global branch (`attention_logits`, (B, C)); L_i that of the
    i-th CCI block (`region_logits[:, i]`, (B, k, C), k = 4). Each term is averaged over the batch; the k
    block terms are summed, not averaged (Eq. 4), so at initialisation L is about (0.2 + 0.8 k) ln C. The
    published code computes the same: `0.2 * loss1 + 0.8 * loss2`, loss2 the sum over the four regions.

    The code's `--loss_type` can swap CE for focal loss (gamma = 2) and its class-balanced re-weighting for
    per-class weights; `gamma` and `alpha` do that here (see FocalLoss: gamma = 0 with alpha None is CE, the
    default, as in the paper).

    Args:
        lam: lambda in [0, 1], the weight of the SCAN term (0.2 in the paper, "based on ablation studies").
        gamma, alpha: focal parameters of every term (FocalLoss).

    Forward(output, labels): `output` is the model's output (anything with .attention_logits (B, C) and
    .region_logits (B, k, C), e.g. SCANCCIOutput); `labels` are class indices (B,) in [0, C) (drop invalid
    frames, Aff-Wild2's -1, first). Returns a dict with the total "loss", "attention" (L_u) and "regions" (L_l).
    """

    def __init__(self, lam: float = 0.2, gamma: float = 0.0, alpha: float | Sequence[float] | None = None):
        super().__init__()
        if not 0.0 <= lam <= 1.0:
            raise ValueError(f"lam (lambda of paper C Eq. 5) must be in [0, 1]; got {lam}")
        self.lam = lam
        self.criterion = FocalLoss(alpha=alpha, gamma=gamma)

    def forward(self, output, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        missing = [k for k in ("attention_logits", "region_logits") if not hasattr(output, k)]
        if missing:
            raise TypeError(f"SCANCCILoss takes the model's output (with .attention_logits, .region_logits); "
                            f"{type(output).__name__} has no {', '.join(missing)}")
        att, reg = output.attention_logits, output.region_logits
        if att.ndim != 2 or reg.ndim != 3 or reg.shape[0] != att.shape[0] or reg.shape[2] != att.shape[1]:
            raise ValueError(f"expected attention_logits (B, C) and region_logits (B, k, C); got "
                             f"{tuple(att.shape)} and {tuple(reg.shape)}")
        labels = torch.as_tensor(labels, device=att.device)
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer class indices; got dtype {labels.dtype}")
        _check_labels(labels, att.shape[1])
        if labels.shape[0] != att.shape[0]:
            raise ValueError(f"{labels.shape[0]} labels for {att.shape[0]} samples")
        labels = labels.long()
        l_u = self.criterion(att, labels)                                           # Eq. 5's L_u
        l_l = sum(self.criterion(reg[:, i], labels) for i in range(reg.shape[1]))   # Eq. 4: sum_i L_i
        return {"loss": self.lam * l_u + (1 - self.lam) * l_l, "attention": l_u, "regions": l_l}

    def from_output(self, out, labels) -> dict[str, torch.Tensor]:
        return self(out._replace(attention_logits=out.attention_logits.float(),
                                 region_logits=out.region_logits.float()), labels)


# ---------------------------------------------------------------------------------------------------
# Paper D (Cabacas-Maso et al., ABAW7 MTL): DDAMFN with VA, EXPR and AU heads (paper_code_notes §5).


def _as_float(t: torch.Tensor) -> torch.Tensor:
    """float16/bfloat16 (autocast) -> float32: CCC's variances and the attention loss's tiny eps need it."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def ccc(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None,
        eps: float = 1e-8) -> torch.Tensor:
    """Concordance correlation coefficient (Lin 1989), the ABAW VA metric, per dimension and differentiable.

        CCC = 2 cov(p, t) / (var(p) + var(t) + (mean(p) - mean(t))^2 + eps)

    with population moments (divided by N, i.e. unbiased=False, as the ABAW evaluation computes them).
    Unlike Pearson's r, it also penalises a shift or a rescaling of the predictions, so a model cannot
    score by tracking the shape of the target while missing its level.

    Args:
        pred, target: (N,) or (N, D) (D = 2 for valence, arousal), the same shape.
        valid: optional (N,) bool mask; frames where it is False are left out (e.g. Aff-Wild2's VA = -5).
        eps: added to the denominator, so the degenerate cases below are finite instead of 0/0.

    Returns a 0-d tensor for (N,) inputs, else (D,). Degenerate cases (all finite, documented):
        constant predictions, varying target: cov = 0, so CCC = 0 exactly (the gradient is not 0: it
            pushes the predictions to follow the target);
        constant predictions and constant target (equal means): 0 / eps = 0, CCC 0 (without eps, 0/0);
        one frame: both variances and the covariance are 0, so CCC = 0 and no gradient flows. CCC is a
            statistic of a batch; train on batches of many frames.
    A selection with no frame at all is an error (see CCCLoss, which returns a zero loss instead).
    """
    if not isinstance(pred, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise ValueError(f"ccc expects tensors; got {type(pred).__name__} and {type(target).__name__}")
    if pred.ndim not in (1, 2) or tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"ccc expects pred and target of the same shape, (N,) or (N, D); got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    if not pred.is_floating_point():
        raise ValueError(f"ccc expects floating-point predictions; got {pred.dtype}")
    squeeze = pred.ndim == 1
    p, t = _as_float(pred), _as_float(target).to(_as_float(pred).dtype)
    if squeeze:
        p, t = p[:, None], t[:, None]                                # (N, 1)
    if valid is not None:
        valid = torch.as_tensor(valid, device=p.device)
        if valid.dtype != torch.bool or tuple(valid.shape) != (p.shape[0],):
            raise ValueError(f"valid must be a bool mask shaped ({p.shape[0]},); got {valid.dtype} "
                             f"shaped {tuple(valid.shape)}")
        p, t = p[valid], t[valid]                                    # (n, D)
    if p.shape[0] == 0:
        raise ValueError("ccc: no frames to compare (every frame masked out, or an empty batch)")
    # centre after shifting by the first frame: the moments do not change, but a constant column becomes
    # exact zeros (p - mean(p) alone leaves rounding noise of ~1e-8), so its covariance is exactly 0
    dp, dt = p - p[:1], t - t[:1]
    dp, dt = dp - dp.mean(dim=0), dt - dt.mean(dim=0)                # (n, D), centred
    vp, vt = dp.pow(2).mean(dim=0), dt.pow(2).mean(dim=0)            # population variances, (D,)
    cov = (dp * dt).mean(dim=0)                                      # (D,)
    shift = p.mean(dim=0) - t.mean(dim=0)                            # mean(p) - mean(t), (D,)
    c = 2 * cov / (vp + vt + shift.pow(2) + eps)
    return c[0] if squeeze else c


class CCCLoss(nn.Module):
    """Paper D's VA loss: 1 - CCC for each dimension (valence, arousal), averaged over the dimensions.

    Paper D (§2.3) says only that the VA loss "was calculated using the Concordance Correlation
    Coefficient"; it gives no formula. The kit uses 1 - CCC, as the ABAW baselines and most ABAW
    entries do: 0 for perfect agreement, 1 for none (CCC = 0), up to 2 for perfect disagreement. The
    moments are population moments over the batch (see `ccc` for the formula and the degenerate cases:
    constant predictions or a single frame give CCC 0, loss 1, never NaN).

    Invalid frames: Aff-Wild2 writes -5 for both valence and arousal of an unannotated frame. A frame
    whose target equals `invalid_value` in *any* dimension is left out, and so is every frame where the
    optional `valid` mask is False. If no frame is left the loss is a zero that still joins the graph.

    Args:
        invalid_value: target value marking an unannotated frame (-5.0 for Aff-Wild2); None keeps all.
        eps: see `ccc`.

    Forward(pred, target, valid=None): pred and target (N,) or (N, D); valid an optional (N,) bool mask.
    """

    def __init__(self, invalid_value: float | None = VA_INVALID, eps: float = 1e-8):
        super().__init__()
        self.invalid_value, self.eps = invalid_value, eps

    def forward(self, pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(pred, torch.Tensor):
            raise ValueError(f"CCCLoss expects tensors; got {type(pred).__name__}")
        target = torch.as_tensor(target, device=pred.device)
        if pred.ndim not in (1, 2) or tuple(pred.shape) != tuple(target.shape):
            raise ValueError(f"CCCLoss expects predictions and targets of the same shape, (N,) or (N, D); got "
                             f"{tuple(pred.shape)} and {tuple(target.shape)}")
        keep = torch.ones(pred.shape[0], dtype=torch.bool, device=pred.device)
        if valid is not None:
            valid = torch.as_tensor(valid, device=pred.device)
            if valid.dtype != torch.bool or tuple(valid.shape) != (pred.shape[0],):
                raise ValueError(f"valid must be a bool mask shaped ({pred.shape[0]},); got {valid.dtype} "
                                 f"shaped {tuple(valid.shape)}")
            keep = keep & valid
        if self.invalid_value is not None:
            bad = target == self.invalid_value
            keep = keep & ~(bad if bad.ndim == 1 else bad.any(dim=1))    # either value -5 -> frame out
        if not keep.any():
            return pred.sum() * 0.0
        return (1 - ccc(pred, target, keep, self.eps)).mean()


class AttentionDiversityLoss(nn.Module):
    """DDAMFN's attention loss as its code computes it (`AttentionLoss`, notes §5.3):

        L_att = P / (sum_{i<j} MSE(h_i, h_j) + eps),   P = k (k - 1) / 2 pairs,  eps = sys.float_info.epsilon

    with MSE the mean over every element of the two (B, 512, 7, 7) maps. For k = 2 heads it is
    1 / (MSE(h_0, h_1) + eps).

    Paper D (§2.3) describes this loss as the MSE between each pair of heads "normalized by the number of
    pairs plus a small epsilon" and says it "encourages the attention heads to produce consistent outputs".
    The formula does the opposite: it is the *inverse* of the mean pairwise MSE, so it is minimised by
    heads whose maps DIFFER (large MSE) and is huge when they agree. That matches the DDAMFN paper's
    intent (several heads that attend to different facial regions, like DAN's partition loss), and it is
    what the DDAMFN code trains with; paper D published no code, so what its authors ran is not known.
    The kit implements the DDAMFN code's formula under a name that says what it rewards. With identical heads the loss is P / eps (about 4.5e15 for two heads): large but finite.

    With one head there are no pairs and the loss is 0 (the code returned the integer 0; here a zero
    tensor that still joins the graph).

    Forward(heads): a list/tuple of k maps (B, C, H, W), or one tensor (B, k, C, H, W) (DDAMFNOutput.heads).
    """

    def __init__(self, eps: float = sys.float_info.epsilon):
        super().__init__()
        self.eps = eps

    def forward(self, heads) -> torch.Tensor:
        if isinstance(heads, torch.Tensor):
            if heads.ndim != 5:
                raise ValueError(f"AttentionDiversityLoss expects heads as a tensor (B, k, C, H, W) or a list of k "
                                 f"maps (B, C, H, W); got a tensor shaped {tuple(heads.shape)}")
            maps = list(heads.unbind(dim=1))
        elif isinstance(heads, (list, tuple)) and heads and all(isinstance(h, torch.Tensor) for h in heads):
            maps = list(heads)
            shapes = {tuple(h.shape) for h in maps}
            if len(shapes) != 1 or maps[0].ndim != 4:
                raise ValueError(f"AttentionDiversityLoss expects k maps of one shape (B, C, H, W); got shapes "
                                 f"{[tuple(h.shape) for h in maps]}")
        else:
            raise ValueError(f"AttentionDiversityLoss expects a tensor (B, k, C, H, W) or a non-empty list of maps "
                             f"(B, C, H, W); got {type(heads).__name__}")
        if len(maps) == 1:
            return maps[0].sum() * 0.0
        maps = [_as_float(h) for h in maps]
        total = sum(F.mse_loss(maps[i], maps[j]) for i in range(len(maps)) for j in range(i + 1, len(maps)))
        pairs = len(maps) * (len(maps) - 1) // 2
        return pairs / (total + self.eps)


class AUBCELoss(nn.Module):
    """Paper D's AU loss: binary cross-entropy on the logits of each action unit (12 in Aff-Wild2).

    -[w_a y log s(z) + (1 - y) log(1 - s(z))] per frame and AU (s the sigmoid, w_a the optional
    `pos_weight` of AU a, as in nn.BCEWithLogitsLoss), averaged over the *valid entries*: an entry whose
    target is `ignore_value` (-1, Aff-Wild2's unannotated AU) is left out, so one missing AU does not
    throw away the frame's other AUs. Paper D (§2.3) names BCE without weights; `pos_weight` (e.g.
    n_negative / n_positive per AU on the training set) is offered because AUs such as AU15 or AU26 are
    rare. If no entry is valid the loss is a zero that still joins the graph.

    Args:
        num_au: number of AUs (logits' width).
        pos_weight: None, or one positive weight per AU (num_au,).
        ignore_value: the target value of an unannotated entry.

    Forward(logits, targets): logits (B, num_au); targets (B, num_au) in [0, 1] (0/1 labels) or ignore_value.
    """

    def __init__(self, num_au: int = 12, pos_weight: Sequence[float] | torch.Tensor | None = None,
                 ignore_value: float = AU_INVALID):
        super().__init__()
        self.num_au, self.ignore_value = num_au, ignore_value
        if pos_weight is not None:
            pos_weight = torch.as_tensor(pos_weight, dtype=torch.float32)
            if tuple(pos_weight.shape) != (num_au,) or not torch.isfinite(pos_weight).all() or (pos_weight <= 0).any():
                raise ValueError(f"pos_weight must hold one positive weight per AU ({num_au},); "
                                 f"got {pos_weight.tolist()}")
        self.register_buffer("pos_weight", pos_weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2 or logits.shape[1] != self.num_au:
            raise ValueError(f"AUBCELoss expects logits shaped (B, {self.num_au}); got {tuple(logits.shape)}")
        targets = torch.as_tensor(targets, device=logits.device)
        if tuple(targets.shape) != tuple(logits.shape):
            raise ValueError(f"AU targets must be shaped like the logits {tuple(logits.shape)}; "
                             f"got {tuple(targets.shape)}")
        targets = targets.to(_as_float(logits).dtype)
        valid = targets != self.ignore_value
        bad = targets[valid & ((targets < 0) | (targets > 1) | ~torch.isfinite(targets))]
        if bad.numel():
            raise ValueError(f"AU targets must be 0/1 (or in [0, 1]) or {self.ignore_value} (unannotated); "
                             f"got {sorted(set(bad.tolist()))[:8]}")
        if not valid.any():
            return logits.sum() * 0.0
        pos_weight = None if self.pos_weight is None else self.pos_weight.to(targets.dtype)
        per_entry = F.binary_cross_entropy_with_logits(_as_float(logits), targets.clamp(min=0), reduction="none",
                                                       pos_weight=pos_weight)          # (B, num_au)
        return per_entry[valid].mean()


class DDAMFNLoss(nn.Module):
    """Paper D's multi-task loss (§2.3) for fer_kit.models.ddamfn.DDAMFN:

        L = w_va (1 - CCC)(VA) + w_expr CE(EXPR) + w_au BCE(AU) + w_att L_att(heads)

    CCC loss for valence/arousal (CCCLoss), cross-entropy for the expression, binary cross-entropy per AU
    (AUBCELoss) and the DDAMFN attention loss (AttentionDiversityLoss, which rewards heads that differ).
    Paper D gives no weights: the task weights default to 1 and the attention weight to the DDAMFN code's
    0.1. Paper D adds the attention loss only when the whole model is fine-tuned; in its first stage
    (trunk and heads frozen, `DDAMFN.freeze_features`) the term has no gradient to give, so set
    attention_weight=0 there to keep the reported loss about the tasks.

    Invalid labels are dropped per task, not per frame: a frame with VA = -5 still trains EXPR and AU,
    EXPR = -1 drops only that frame's CE term, and AU = -1 only that AU entry. (Paper D instead dropped
    every frame with any invalid label from its data, notes §5.5; on data filtered that way the masks
    drop nothing and the losses are the same, while unfiltered data keeps every usable label.)

    Tasks the model lacks (its output field is None) are skipped; a label given for such a task is an
    error. A task whose labels are not given (None) is skipped as well. Skipped tasks, and tasks with no
    valid label in the batch, contribute a zero, so the returned dict always has the same keys.

    Args:
        ccc_weight, expr_weight, au_weight: task weights (1; not stated in paper D).
        attention_weight: weight of the attention loss (0.1 in DDAMFN's code).
        au_pos_weight: optional per-AU positive weights for AUBCELoss.
        num_au: AUs in the model's AU head (12).

    Forward(output, va=None, expr=None, au=None): `output` a DDAMFNOutput (anything with .va (B, 2) or None,
    .expr (B, C) or None, .au (B, num_au) or None, .heads (B, k, 512, 7, 7)); va (B, 2) in [-1, 1] or -5;
    expr (B,) class indices or -1; au (B, num_au) 0/1 or -1. Returns a dict with the weighted total "loss"
    and each term before weighting: "va" (1 - CCC), "expr", "au", "attention".
    """

    def __init__(self, ccc_weight: float = 1.0, expr_weight: float = 1.0, au_weight: float = 1.0,
                 attention_weight: float = 0.1, au_pos_weight: Sequence[float] | torch.Tensor | None = None,
                 num_au: int = 12):
        super().__init__()
        self.ccc_weight, self.expr_weight, self.au_weight = ccc_weight, expr_weight, au_weight
        self.attention_weight = attention_weight
        self.ccc = CCCLoss(invalid_value=VA_INVALID)
        self.au_bce = AUBCELoss(num_au=num_au, pos_weight=au_pos_weight, ignore_value=AU_INVALID)
        self.attention = AttentionDiversityLoss()

    @staticmethod
    def _batch(name: str, labels, pred: torch.Tensor) -> torch.Tensor:
        labels = torch.as_tensor(labels, device=pred.device)
        if labels.ndim == 0 or labels.shape[0] != pred.shape[0]:
            raise ValueError(f"DDAMFNLoss: {name} labels shaped {tuple(labels.shape)} for a batch of {pred.shape[0]}")
        return labels

    def forward(self, output, va=None, expr=None, au=None) -> dict[str, torch.Tensor]:
        missing = [k for k in ("va", "expr", "au", "heads") if not hasattr(output, k)]
        if missing:
            raise TypeError(f"DDAMFNLoss takes the model's output (with .va, .expr, .au, .heads, e.g. a DDAMFNOutput); "
                            f"{type(output).__name__} has no {', '.join(missing)}")
        for name, pred, labels in (("VA", output.va, va), ("EXPR", output.expr, expr), ("AU", output.au, au)):
            if pred is None and labels is not None:
                raise ValueError(f"DDAMFNLoss: {name} labels were given but the model has no {name} head "
                                 f"(output.{name.lower()} is None); build it with tasks including {name!r} "
                                 f"or do not pass {name.lower()}=")
        heads = output.heads
        zero = heads.sum() * 0.0
        parts = {"va": zero, "expr": zero, "au": zero}
        if va is not None:
            va = self._batch("VA", va, output.va).to(_as_float(output.va).dtype)
            if tuple(va.shape) != tuple(output.va.shape):
                raise ValueError(f"DDAMFNLoss: VA labels must be shaped like the predictions {tuple(output.va.shape)}; "
                                 f"got {tuple(va.shape)}")
            bad = va[(va != VA_INVALID) & ((va < -1) | (va > 1) | ~torch.isfinite(va))]
            if bad.numel():
                raise ValueError(f"DDAMFNLoss: VA labels must be in [-1, 1] or -5 (unannotated); got "
                                 f"{sorted(set(bad.tolist()))[:8]}")
            parts["va"] = self.ccc(output.va, va)
        if expr is not None:
            labels = self._batch("EXPR", expr, output.expr)
            logits_v, labels_v = _valid_frames(_as_float(output.expr), labels, EXPR_INVALID, "DDAMFNLoss (EXPR)")
            if labels_v.numel():
                parts["expr"] = F.cross_entropy(logits_v, labels_v.long())
        if au is not None:
            parts["au"] = self.au_bce(output.au, self._batch("AU", au, output.au))
        parts["attention"] = self.attention(heads)
        parts["loss"] = (self.ccc_weight * parts["va"] + self.expr_weight * parts["expr"]
                         + self.au_weight * parts["au"] + self.attention_weight * parts["attention"])
        return parts

    def from_output(self, out, targets) -> dict[str, torch.Tensor]:
        """Each task the model has a head for, against its targets (EXPR labels alone for a single-task run)."""
        targets = targets if isinstance(targets, dict) else {"expr": targets}
        return self(out, **{k: v for k, v in targets.items() if getattr(out, k) is not None})
