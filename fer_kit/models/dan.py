"""DAN: multi-head cross attention network, as used by paper A (ABAW3 EXPR, 2nd place).

Papers: Wen et al., "Distract Your Attention: Multi-head Cross Attention Network for Facial Expression
Recognition" (code: yaoing/DAN); Jeong et al., "Classification of Facial Expression In-the-Wild based on
Ensemble of Multi-head Cross Attention Networks" (paper A; code: jaey-jeong/cvpr2022_ABAW_competition).

Structure: a ResNet trunk (Feature Clustering Network) -> k cross-attention heads, each spatial then
channel attention (Multi-head cross Attention Network) -> log-softmax across heads, sum, fc + BN
(Attention Fusion Network). Trained with paper A Eq. 3 (see fer_kit/losses.py).

How this file differs from the published code:
- trunks come from timm (ResNet-18 by default; paper A used a Caffe-converted VGGFace2 ResNet-50);
- for ResNet-50 the 1x1 bottleneck 2048 -> 1024 -> 512 of paper A's code is kept (the paper does not
  mention it, but the heads are built for 512 channels);
- paper A's code loads AffectNet-8 head weights whose class 7 is Contempt, not Other; the kit never
  loads a classifier across label orders;
- `log_softmax_heads=False` (in neither paper) sums the raw head vectors, as DAN does with one head: it
  isolates what the log-softmax across heads costs a network trained from scratch (notebook 04);
- under bf16/fp16 autocast (the published code trains in fp32) the heads' products past their
  convolutions and the fusion stay in fp32 (`full_precision`): in bf16 they round away what DAN's
  classifier reads.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import nn

from ..losses import DANLoss
from .backbones import create_backbone, feature_channels
from .registry import config_fields, register_model

__all__ = ["DAN", "DANOutput", "agreement_share", "full_precision"]


class DANOutput(NamedTuple):
    logits: torch.Tensor          # (B, C)
    features: torch.Tensor        # (B, 512, h, w) trunk map, for the affinity loss
    heads: torch.Tensor           # (B, k, 512) head vectors (log-softmaxed when k > 1), for the partition loss
    attention: torch.Tensor       # (B, k, h, w) each head's spatial attention map, for visualisation


def _conv_bn(cin: int, cout: int, kernel, padding) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=padding), nn.BatchNorm2d(cout))


def full_precision(x: torch.Tensor):
    """fp32 inside a bf16/fp16 autocast region, for the heads past their convolutions and the fusion.

    What the classifier sees of DAN's heads is a small difference of large numbers: the log-softmax across
    heads leaves values near -ln k whose face-to-face variation is a few hundredths, below bf16's step
    there (2^-7 at ln 4 = 1.4; 2^-5 at 4 ln 4 = 5.5, the sum over four heads), and BatchNorm then scales
    that variation up to unit variance. Measured at initialisation (112 px, batch 32, train mode): bf16
    moved DAN's logits by 0.124 rms (sd 1.0), a plain ResNet-18 classifier's by 0.8% of theirs; with the
    attention products, channel attention and fusion in fp32 and every convolution still in bf16, by
    0.033. CUDA autocast already keeps log_softmax in fp32; CPU autocast does not. Outside autocast (and
    on devices without it, such as "meta"): nothing."""
    kind = x.device.type
    if torch.amp.is_autocast_available(kind) and torch.is_autocast_enabled(kind):
        return torch.autocast(kind, enabled=False)
    return nullcontext()


class SpatialAttention(nn.Module):
    """1x1 reduction, then 3x3 + 1x3 + 3x1 convolutions summed: one map weighting every location."""

    def __init__(self, channels: int = 512):
        super().__init__()
        self.reduce = _conv_bn(channels, 256, 1, 0)
        self.square = _conv_bn(256, channels, 3, 1)
        self.wide = _conv_bn(256, channels, (1, 3), (0, 1))
        self.tall = _conv_bn(256, channels, (3, 1), (1, 0))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.reduce(x)                                               # (B, 256, h, w)
        y = self.square(y) + self.wide(y) + self.tall(y)                 # (B, 512, h, w), bf16 under autocast
        with full_precision(x):                                          # the convolutions stay fast
            attn = self.relu(y.float()).sum(dim=1, keepdim=True)         # (B, 1, h, w), not normalised
            return x.float() * attn, attn


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation on the pooled vector: which of the 512 channels this head keeps."""

    def __init__(self, channels: int = 512, hidden: int = 32):
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, channels), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with full_precision(x):
            v = self.gap(x.float()).flatten(1)                           # (B, 512)
            return v * self.mlp(v)                                       # (B, 512)


class CrossAttentionHead(nn.Module):
    def __init__(self, channels: int = 512):
        super().__init__()
        self.sa = SpatialAttention(channels)
        self.ca = ChannelAttention(channels)
        for m in self.modules():   # DAN's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.001)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y, attn = self.sa(x)
        return self.ca(y), attn


class DAN(nn.Module):
    """DAN with a timm ResNet trunk.

    Args:
        num_classes: output classes (8 for Aff-Wild2 ABAW3+).
        num_heads: cross-attention heads (4 in DAN and paper A).
        backbone: timm model name of the trunk (resnet18, resnet50, ...).
        pretrained: load timm's ImageNet weights for the trunk (needs the internet once).
        checkpoint_path: local trunk weights (e.g. MS-Celeb ResNet-18), loaded after creation.
        log_softmax_heads: with more than one head, log-softmax the head vectors across heads before
            summing them (DAN and paper A). The log-softmax is blind to whatever all heads agree on (adding
            the same number to every head's channel j leaves it unchanged), so the classifier sees only how
            the heads differ; False sums the raw vectors.
    """

    def __init__(self, num_classes: int = 8, num_heads: int = 4, backbone: str = "resnet18",
                 pretrained: bool = False, checkpoint_path: str | None = None, log_softmax_heads: bool = True):
        super().__init__()
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1; got {num_heads}")
        self.num_classes, self.num_heads, self.log_softmax_heads = num_classes, num_heads, log_softmax_heads
        self.features = create_backbone(backbone, pretrained, checkpoint_path)
        cin = feature_channels(self.features)
        # paper A's code: 1x1 bottleneck so a ResNet-50 trunk (2048 ch) feeds 512-channel heads
        self.reduce = nn.Identity() if cin == 512 else nn.Sequential(
            nn.Conv2d(cin, 1024, 1), nn.BatchNorm2d(1024), nn.ReLU(inplace=True),
            nn.Conv2d(1024, 512, 1), nn.BatchNorm2d(512), nn.ReLU(inplace=True))
        self.heads = nn.ModuleList(CrossAttentionHead(512) for _ in range(num_heads))
        self.fc = nn.Linear(512, num_classes)
        self.bn = nn.BatchNorm1d(num_classes)

    def attend(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Trunk, reduction and the cross-attention heads: (feature map, head vectors before any
        log-softmax, attention maps); what DAN and paper E's emotion branch share."""
        f = self.reduce(self.features(x))                  # (B, 512, 7, 7) at 224 px, (B, 512, 4, 4) at 112
        outs = [head(f) for head in self.heads]
        heads = torch.stack([v for v, _ in outs], dim=1)   # (B, k, 512)
        attention = torch.cat([a for _, a in outs], dim=1)  # (B, k, h, w)
        return f, heads, attention

    def forward(self, x: torch.Tensor) -> DANOutput:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"DAN expects images shaped (B, 3, H, W); got {tuple(x.shape)}")
        f, heads, attention = self.attend(x)
        with full_precision(x):
            if self.log_softmax_heads and self.num_heads > 1:
                heads = heads.log_softmax(dim=1)           # heads compete for each channel
            logits = self.bn(self.fc(heads.sum(dim=1)))    # (B, C)
        return DANOutput(logits, f, heads, attention)


def agreement_share(heads: torch.Tensor) -> float:
    """How much of the head vectors' variation from face to face all heads share: the variance over faces
    of the heads' mean vector, as a share of the variance of the head vectors themselves (both summed over
    channels). 1.0 when every head returns the same vector, 0.0 when the heads' mean is the same on every
    face. DAN's log-softmax across heads cannot see the shared part: it is that much signal lost.

    heads: (B, k, C) raw head vectors (DAN.attend), k > 1."""
    if heads.ndim != 3 or heads.shape[1] < 2 or heads.shape[0] < 2:
        raise ValueError(f"agreement_share expects raw head vectors of at least 2 faces and 2 heads, shaped "
                         f"(B, k, C); got {tuple(heads.shape)}")
    heads = heads.detach().float()
    common = heads.mean(dim=1)                                       # (B, C)
    shared = common.var(dim=0).sum()                                 # over faces, summed over channels
    total = heads.var(dim=0).mean(dim=0).sum()                       # each head's, averaged over heads
    return float(shared / total.clamp_min(1e-12))


def dan_loss(cfg, class_counts=None) -> DANLoss:
    """Paper A Eq. 3: focal + affinity + partition (the affinity centres live in the loss, learnt)."""
    return DANLoss(num_classes=cfg.num_classes, feat_dim=512, gamma=cfg.focal_gamma,
                   affinity_weight=cfg.affinity_weight, partition_weight=cfg.partition_weight)


# what training needs of these models (fer_kit.train.recipe)
_TRAINING = dict(model_cls=DAN, config_args=config_fields("num_classes", "num_heads", "backbone", "pretrained",
                                                          unless_none=("log_softmax_heads",)),
                 loss=dan_loss, min_image_size=48)     # the heads want a 2x2 map at the trunk's stride 32


@register_model(**_TRAINING)
def dan(**kwargs) -> DAN:
    """DAN-R18 with 4 heads (DAN; paper A's laptop-sized variant)."""
    return DAN(**{"backbone": "resnet18", "num_heads": 4, **kwargs})


@register_model(**_TRAINING)
def dan_r50(**kwargs) -> DAN:
    """Paper A's configuration: ResNet-50 trunk with the 1x1 reduction to 512, 4 heads."""
    return DAN(**{"backbone": "resnet50", "num_heads": 4, **kwargs})


@register_model(**_TRAINING, test_only=True)
def test_dan(**kwargs) -> DAN:
    """A tiny configuration for fast tests: ResNet-18 with two heads."""
    return DAN(**{"backbone": "resnet18", "num_heads": 2, **kwargs})

