"""DDAMFN: dual-direction attention mixed feature network, as adapted to multi-task ABAW by paper D.

Papers: Zhang et al., "A Dual-Direction Attention Mixed Feature Network for Facial Expression
Recognition" (Electronics 12(17), 2023; code: SainingZhang/DDAMFN); Cabacas-Maso et al., "Enhancing Facial
Expression Recognition through Dual-Direction Attention Mixed Feature Networks: Application to 7th ABAW
Challenge" (paper D, arXiv 2407.12390, 5th in the ABAW7 MTL track; no code published).

Structure (input 3x112x112, the size of ABAW's cropped-aligned faces):
  MixedFeatureNet trunk: MobileFaceNet whose depthwise convolutions mix 3x3..9x9 kernels (MixConv) and
      carry coordinate attention                                           -> x (B, 512, 7, 7)
  k = 2 dual-direction attention heads: learned 1x7 / 7x1 depthwise "pooling" along each direction,
      shared 1x1 bottleneck, one sigmoid gate per row and per column      -> k maps (B, 512, 7, 7) in (0, 1)
  element-wise max over the heads, x * attention, GDConv (7x7 depthwise conv + BN, linear) -> (B, 512)
  paper D's three linear heads: VA (2, tanh), EXPR (8 logits), AU (12 logits).
Trained with fer_kit.losses.DDAMFNLoss: CCC (VA) + CE (EXPR) + BCE (AU) + 0.1 x attention loss.

How this file differs from the published code (notes §5):
- layers that the published forward never calls are not built: MDConv's `bn`/`prelu` (29,184 params in
  the trunk), each head's 7x7 `Linear` (26,112 per head), DDAMNet's `bn` after `fc`, and MobileFaceNet's
  embedding tail (`conv_6_dw`, `linear`, `bn`); `load_published_checkpoint` skips their weights;
- attribute names say what a layer does (`trunk.down1`, `heads.0.pool_h`, `gdconv`, ...); the map from
  the published names is in fer_kit/models/checkpoints.py;
- the base model's single `fc` becomes paper D's three heads (§2.2). Paper D does not say how the VA
  output is bounded: the kit applies tanh so predictions live in VA's range [-1, 1] (Table 1 of the paper
  prints "[0, 1]", a typo: Aff-Wild2's VA is in [-1, 1]);
- `tasks=` builds single-task variants (paper D's Table 4) with only the heads they need.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import torch
from torch import nn

from ..losses import DDAMFNLoss
from ..names import check_names
from .checkpoints import load_published_checkpoint
from .registry import register_model

__all__ = ["DDAMFN", "DDAMFNOutput", "MixedFeatureNet", "DualDirectionAttention", "TASKS"]

TASKS = ("VA", "EXPR", "AU")

# Parameters of the default multi-task model (2 heads, VA 2 + EXPR 8 + AU 12), every one of them used:
#   trunk 4,006,568 + 2 heads x 34,864 + GDConv 26,112 + task heads 1,026 + 4,104 + 6,156 = 4,113,694.
# The DDAMFN paper's "4.11M" is its 8-class model without dead layers: 4,106,512 (our tasks=("EXPR",)).
# The published DDAMNet(num_class=8) counts 4,187,936 because it also holds 81,424 parameters its forward
# never uses: 29,184 in MDConv bn/prelu + 2 x 26,112 in the heads' 7x7 `Linear` + 16 in the final BN1d.
# The multi-task model is 7,182 above 4,106,512: its three heads hold 11,286 parameters instead of fc's 4,104.
NUM_PARAMS_MTL = 4_113_694
NUM_PARAMS_EXPR = 4_106_512


class DDAMFNOutput(NamedTuple):
    va: torch.Tensor | None       # (B, 2) valence, arousal in [-1, 1]; None when VA is not a task
    expr: torch.Tensor | None     # (B, num_expr) expression logits; None when EXPR is not a task
    au: torch.Tensor | None       # (B, num_au) AU logits (sigmoid -> probability); None when AU is not a task
    heads: torch.Tensor           # (B, k, 512, 7, 7) each head's attention map, for the attention loss
    features: torch.Tensor        # (B, 512, 7, 7) trunk map, before attention
    embedding: torch.Tensor       # (B, 512) GDConv output fed to the task heads

    @property
    def logits(self) -> torch.Tensor:
        """One tensor for tools that want one (Grad-CAM, `logits_only`, the EXPR training loop):
        the EXPR logits, or for single-task models without EXPR the VA or AU output."""
        return next(t for t in (self.expr, self.va, self.au) if t is not None)


class ConvBN(nn.Module):
    """Conv (no bias) + BN, then PReLU when `act` (the published Conv_block / Linear_block)."""

    def __init__(self, cin: int, cout: int, kernel=1, stride=1, padding=0, groups: int = 1, act: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.PReLU(cout) if act else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class MixConv(nn.Module):
    """Mixed depthwise convolution (MixNet): channel groups of sizes `splits`, each with its own kernel."""

    def __init__(self, channels: int, kernels: Sequence[int], splits: Sequence[int], stride: int = 1):
        super().__init__()
        if len(kernels) != len(splits) or sum(splits) != channels:
            raise ValueError(f"MixConv: splits {list(splits)} must have one entry per kernel {list(kernels)} "
                             f"and sum to {channels}")
        self.splits = list(splits)
        self.convs = nn.ModuleList(nn.Conv2d(c, c, k, stride=stride, padding=k // 2, groups=c, bias=False)
                                   for c, k in zip(splits, kernels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # no BN or activation after the concat: the published MDConv declares them but never calls them
        parts = torch.split(x, self.splits, dim=1)
        return torch.cat([conv(p) for conv, p in zip(self.convs, parts)], dim=1)


def _coordinate_gates(m: nn.Module, x_h: torch.Tensor, x_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Coordinate attention's shared part: row descriptors x_h (B, C, H, 1) and column descriptors x_w
    (B, C, W, 1) through one 1x1 bottleneck (m.reduce, m.bn, m.act), then a sigmoid row gate (B, C, H, 1)
    and column gate (B, C, 1, W) from m.attn_h and m.attn_w."""
    h, w = x_h.shape[2], x_w.shape[2]
    y = m.act(m.bn(m.reduce(torch.cat([x_h, x_w], dim=2))))              # (B, mip, H + W, 1)
    y_h, y_w = torch.split(y, [h, w], dim=2)                             # (B, mip, H, 1), (B, mip, W, 1)
    return m.attn_h(y_h).sigmoid(), m.attn_w(y_w.transpose(2, 3)).sigmoid()


class CoordinateAttention(nn.Module):
    """Coordinate attention (Hou et al. 2021) with average pooling, inside every trunk block.

    Pools the map along W (one descriptor per row) and along H (one per column), mixes both through a
    shared 1x1 bottleneck of max(8, C/32) channels, and gates x by a row gate times a column gate.
    """

    def __init__(self, channels: int):
        super().__init__()
        mip = max(8, channels // 32)
        self.reduce = nn.Conv2d(channels, mip, 1)
        self.bn = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()            # = the published h_swish, x * relu6(x + 3) / 6
        self.attn_h = nn.Conv2d(mip, channels, 1)
        self.attn_w = nn.Conv2d(mip, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_h = x.mean(dim=3, keepdim=True)                                    # (B, C, H, 1)
        x_w = x.mean(dim=2, keepdim=True).transpose(2, 3)                    # (B, C, W, 1)
        a_h, a_w = _coordinate_gates(self, x_h, x_w)                         # (B, C, H, 1), (B, C, 1, W)
        return x * a_h * a_w                                                 # (B, C, H, W)


class MixBlock(nn.Module):
    """Inverted bottleneck: 1x1 expand (PReLU) -> MixConv -> coordinate attention -> 1x1 project (linear),
    with a residual connection when shapes allow (published `Mix_Depth_Wise`)."""

    def __init__(self, cin: int, cout: int, inner: int, kernels: Sequence[int], splits: Sequence[int],
                 stride: int = 1, residual: bool = False):
        super().__init__()
        if residual and (cin != cout or stride != 1):
            raise ValueError("a residual MixBlock needs cin == cout and stride 1")
        self.residual = residual
        self.expand = ConvBN(cin, inner)
        self.mixconv = MixConv(inner, kernels, splits, stride)
        self.coord_att = CoordinateAttention(inner)
        self.project = ConvBN(inner, cout, act=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(self.coord_att(self.mixconv(self.expand(x))))
        return x + y if self.residual else y


def _stage(channels: int, blocks: int, inner: int, kernels, splits) -> nn.Sequential:
    return nn.Sequential(*(MixBlock(channels, channels, inner, kernels, splits, residual=True) for _ in range(blocks)))


class MixedFeatureNet(nn.Module):
    """The DDAMFN trunk: MobileFaceNet with MixConv and coordinate attention, 3x112x112 -> 512x7x7.

    4,006,568 parameters (the published module counts 4,035,752 up to `conv_6_sep`, 29,184 of them in
    MDConv's unused bn/prelu). Stage names: published conv1, conv2_dw, conv_23, conv_3, conv_34, conv_4,
    conv_45, conv_5, conv_6_sep = kit stem, stem_dw, down1, stage1, down2, stage2, down3, stage3, expand.
    """

    def __init__(self):
        super().__init__()
        self.stem = ConvBN(3, 64, 3, stride=2, padding=1)                             # (B, 64, 56, 56)
        self.stem_dw = ConvBN(64, 64, 3, padding=1, groups=64)                        # (B, 64, 56, 56)
        self.down1 = MixBlock(64, 64, 128, [3, 5, 7], [64, 32, 32], stride=2)         # (B, 64, 28, 28)
        self.stage1 = _stage(64, 9, 128, [3, 5], [96, 32])                            # (B, 64, 28, 28)
        self.down2 = MixBlock(64, 128, 256, [3, 5, 7], [128, 64, 64], stride=2)       # (B, 128, 14, 14)
        self.stage2 = _stage(128, 16, 256, [3, 5], [192, 64])                         # (B, 128, 14, 14)
        self.down3 = MixBlock(128, 256, 1024, [3, 5, 7, 9], [256] * 4, stride=2)      # (B, 256, 7, 7)
        self.stage3 = _stage(256, 6, 512, [3, 5, 7], [172, 170, 170])                 # (B, 256, 7, 7)
        self.expand = ConvBN(256, 512)                                                # (B, 512, 7, 7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_dw(self.stem(x))            # (B, 3, 112, 112) -> (B, 64, 56, 56)
        x = self.stage1(self.down1(x))            # -> (B, 64, 28, 28)
        x = self.stage2(self.down2(x))            # -> (B, 128, 14, 14)
        x = self.stage3(self.down3(x))            # -> (B, 256, 7, 7)
        return self.expand(x)                     # -> (B, 512, 7, 7)


class DualDirectionAttention(nn.Module):
    """One DDA head (published `CoordAttHead` -> `CoordAtt`), notes §5.2: returns an attention map, not x * map.

    Coordinate attention whose average pooling is replaced by learned depthwise "linear pooling": a 1x7
    kernel summarises each row (over W) and a 7x1 kernel each column (over H), each followed by BN.
    """

    def __init__(self, channels: int = 512, size: int = 7):
        super().__init__()
        mip = max(8, channels // 32)                                                          # 16 for 512
        self.pool_h = ConvBN(channels, channels, (1, size), groups=channels, act=False)       # (B, C, 7, 1)
        self.pool_w = ConvBN(channels, channels, (size, 1), groups=channels, act=False)       # (B, C, 1, 7)
        self.reduce = nn.Conv2d(channels, mip, 1)
        self.bn = nn.BatchNorm2d(mip)
        self.act = nn.Hardswish()
        self.attn_h = nn.Conv2d(mip, channels, 1)
        self.attn_w = nn.Conv2d(mip, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: (B, 512, 7, 7)
        x_h = self.pool_h(x)                                                  # (B, 512, 7, 1) one value per row
        x_w = self.pool_w(x).transpose(2, 3)                                  # (B, 512, 1, 7) -> (B, 512, 7, 1)
        a_h, a_w = _coordinate_gates(self, x_h, x_w)                          # (B, 512, 7, 1), (B, 512, 1, 7)
        return a_h * a_w                                                      # (B, 512, 7, 7) in (0, 1)


class DDAMFN(nn.Module):
    """DDAMFN with paper D's multi-task heads.

    Args:
        tasks: which heads to build, any of "VA", "EXPR", "AU" (paper D's single-task runs use one).
        num_heads: dual-direction attention heads (2 in DDAMFN and paper D).
        num_expr: expression classes (8 for Aff-Wild2 ABAW3+: Neutral ... Surprise, Other).
        num_au: action units (12 in s-Aff-Wild2).
        checkpoint_path: a published MobileFaceNet / DDAMFN checkpoint, or a saved kit state dict, loaded
            with `load_published_checkpoint` (the task heads stay randomly initialised, as in paper D).
        trust_pickle: allow a checkpoint that is a whole pickled module (MFN_msceleb.pth); see checkpoints.py.

        image_size: input side. 112 is DDAMFN's (trunk map 7x7; GDConv and the heads' 1x7 / 7x1 pooling
            kernels span the whole map). Another size sizes those kernels to its map (64 px -> 4x4),
            which is how the kit's laptop preset runs DDAMFN ~3x faster on a CPU; the published
            checkpoints only fit 112.
    """

    # its depthwise convolutions train ~1.4x slower in bf16 than in fp32 even on a CPU with native bf16
    # (benchmarks/precision.py), so precision "auto" keeps it in fp32 there (fer_kit.train.precision)
    bf16_on_cpu = False

    def __init__(self, tasks: Sequence[str] = TASKS, num_heads: int = 2, num_expr: int = 8, num_au: int = 12,
                 checkpoint_path: str | Path | None = None, trust_pickle: bool = False, image_size: int = 112):
        super().__init__()
        tasks = (tasks,) if isinstance(tasks, str) else tuple(tasks)
        check_names(tasks, TASKS, "task")
        if not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(f"tasks must name each of {TASKS} at most once, at least one; got {tasks}")
        if num_heads < 1:
            raise ValueError(f"num_heads must be >= 1; got {num_heads}")
        self.tasks = tuple(t for t in TASKS if t in tasks)
        if image_size < 32:
            raise ValueError(f"image_size must be >= 32 (the trunk halves it four times); got {image_size}")
        self.num_heads, self.image_size = num_heads, image_size
        m = image_size
        for _ in range(4):                                          # stem and three stride-2 blocks
            m = -(-m // 2)
        self.map_size = m                                           # 7 at 112 px
        self.trunk = MixedFeatureNet()
        self.heads = nn.ModuleList(DualDirectionAttention(512, m) for _ in range(num_heads))
        self.gdconv = ConvBN(512, 512, m, groups=512, act=False)    # global depthwise conv, no activation
        self.va_head = nn.Linear(512, 2) if "VA" in self.tasks else None
        self.expr_head = nn.Linear(512, num_expr) if "EXPR" in self.tasks else None
        self.au_head = nn.Linear(512, num_au) if "AU" in self.tasks else None
        if checkpoint_path is not None:
            load_published_checkpoint(self, checkpoint_path, trust_pickle=trust_pickle)

    def task_heads(self) -> list[nn.Module]:
        return [m for m in (self.va_head, self.expr_head, self.au_head) if m is not None]

    def freeze_features(self, frozen: bool = True) -> None:
        """Paper D's first stage ("custom classifier"): train only the task heads.

        Sets requires_grad on everything but the task heads and flags `features_frozen`, which tells
        the training loop to keep the frozen parts in eval mode (`train.keep_frozen_in_eval`): without
        it their BatchNorm statistics would still move.
        """
        self.features_frozen = frozen
        heads = {id(p) for m in self.task_heads() for p in m.parameters()}
        for p in self.parameters():
            if id(p) not in heads:
                p.requires_grad_(not frozen)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The trunk alone: (B, 3, 112, 112) faces -> (B, 512, 7, 7) map."""
        s = self.image_size
        if x.ndim != 4 or x.shape[1] != 3 or tuple(x.shape[2:]) != (s, s):
            raise ValueError(f"DDAMFN(image_size={s}) expects faces shaped (B, 3, {s}, {s}); got {tuple(x.shape)}")
        return self.trunk(x)

    def forward_head(self, f: torch.Tensor) -> DDAMFNOutput:
        """Everything after the trunk, from its (B, 512, 7, 7) map (lets a frozen trunk's maps be cached)."""
        heads = torch.stack([head(f) for head in self.heads], dim=1)        # (B, k, 512, 7, 7)
        attention = heads.amax(dim=1)                                       # (B, 512, 7, 7) max over heads
        emb = self.gdconv(f * attention).flatten(1)                         # (B, 512, 1, 1) -> (B, 512)
        va = torch.tanh(self.va_head(emb)) if self.va_head is not None else None             # (B, 2)
        expr = self.expr_head(emb) if self.expr_head is not None else None                    # (B, num_expr)
        au = self.au_head(emb) if self.au_head is not None else None                          # (B, num_au)
        return DDAMFNOutput(va, expr, au, heads, f, emb)

    def forward(self, x: torch.Tensor) -> DDAMFNOutput:
        return self.forward_head(self.forward_features(x))


def ddamfn_config_args(cfg) -> dict:
    """No timm trunk: the task decides the heads (mtl: VA, EXPR and AU)."""
    tasks = {"mtl": ("VA", "EXPR", "AU"), "expr": ("EXPR",), "va": ("VA",), "au": ("AU",)}[cfg.task]
    return dict(tasks=tasks, num_expr=cfg.num_classes, num_heads=cfg.num_heads, image_size=cfg.image_size)


# what training needs of it (fer_kit.train.recipe): CCC + CE + BCE + the attention term (paper D)
@register_model(model_cls=DDAMFN, config_args=ddamfn_config_args, tasks=("expr", "mtl", "va", "au"),
                loss=lambda cfg, class_counts=None: DDAMFNLoss(attention_weight=cfg.attention_weight))
def ddamfn(**kwargs) -> DDAMFN:
    """Paper D: DDAMFN (MixedFeatureNet, 2 dual-direction heads, GDConv) with VA, EXPR and AU heads."""
    return DDAMFN(**kwargs)

