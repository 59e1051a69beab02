"""SCAN + CCI: spatio-channel attention and complementary context information (paper C, ABAW 2020 EXPR).

Paper: Gera & Balasubramanian, "Affect Expression Behaviour Analysis in the Wild using Spatio-Channel
Attention and Complementary Context Information" (code: 1980x/ABAW2020DMACS, `models/attentionnet.py`,
`models/resnet.py`; paper_code_notes.md section 4).

Structure (shapes for a 224 x 224 input; at 112 every map is half as wide):

    image (B, 3, 224, 224) -> ResNet-50 stem + layer1..layer3 (layer4 and fc dropped)
      layer2 ("Conv_3x") F_u (B, 512, 28, 28) -> SCAN branch (local-global attention):
          25 local patches P_i -> SCAN_i (Eq. 1-2) -> GAP -> (B, 512) each -> max over patches -> V_l (B, 512)
          whole map           -> SCAN_g          -> GAP -> V_g (B, 512)
          cat(V_l, V_g) (B, 1024) -> L2-normalise -> fc -> attention logits (B, C)     [loss L_u]
      layer3 ("Conv_4x") F_l (B, 1024, 14, 14) -> CCI branch (Eq. 3):
          ECA -> G_l -> 4 non-overlapping 7 x 7 blocks -> GAP -> H_i (B, 1024)
          -> fc 256 -> ReLU -> classifier -> region logits (B, 4, C)                   [losses L_i]
    prediction = mean of the 5 logit vectors (attention + 4 regions), as the published code.

SCAN (Eq. 1-2): W = sigmoid(BN(PReLU(Conv3x3(I)))) is a full C x H x W mask (one weight per channel *and*
position), O = I * W. Each mask net costs 9 * 512^2 (conv, no bias) + 512 (PReLU) + 2 * 512 (BN) =
2,360,832 parameters; the published code gives each of the 25 patches its own mask net plus one for the
whole map, 26 * 2,360,832 = **61,381,632** parameters, i.e. the "~61M in mask nets" are confirmed, and
they are 86% of the 71.0M model (the ResNet-50 trunk up to layer3 has 8,543,296). `shared_mask_net=True`
uses one mask net for all 25 patches (the code's unused `SharedAttentionBranch`; the whole map keeps its own
mask net): 2 * 2,360,832 = 4,721,664 parameters, 56,659,968 fewer. Parameter totals (`count_parameters`):

    num_classes = 8            separate region heads (paper)   shared region head (code)
    per-patch mask nets        70,990,957                      70,197,589
    shared_mask_net=True       14,330,989                      13,537,621

Loss (Eq. 4-5): L = lambda L_u + (1 - lambda) sum_i L_i with lambda = 0.2: `fer_kit.losses.SCANCCILoss`.

Patch partition (`patch_bounds`). The code cuts the 28 x 28 map at rows/columns 0, 6, 12, 18, 24, 28
(16 patches 6x6, 4 of 6x4, 4 of 4x6, one 4x4; "45 x 45 / 44-pixel regions" of the image) with hard-coded
slices, which silently produce the wrong number of patches for any other map size. The kit uses the same
rule for every size: patches of ceil(S / 5) cells, the remainder in the last row/column (this gives the
code's cuts exactly at 28, and 3,3,3,3,2 at 14, i.e. 112 px input); when that would leave the last patch
empty (S = 6, 7, 8, e.g. 64 px input gives S = 8), it falls back to an even split floor(i S / 5), sizes
differing by at most one. Maps smaller than 5 x 5 (input < 40 px) are an error. The CCI blocks use the same
rule with 2 parts per side: 7,7 at 14 (the code's cut); 4,3 at 7, where the code's `unfold(3, 3)` would drop
the last row and column.

How this file differs from the published code, and why:
- CCI region heads: the code's `ModuleList([self.region_net] * 4)` holds the *same* head four times, so the
  four regions share one Linear 1024->256->C; the paper gives "each of H_i ... densely connected to a 256 node
  layer and then ... an expression classifier", i.e. separate heads. Default: separate (paper);
  `shared_region_classifier=True` is the code (794K fewer parameters at C=8).
- The paper says the patch vectors are "max-pooled across channel dimensions to provide ... a 512 dimensional
  vector"; a max over channels would give 25 numbers, not 512. The code's MaxPool1d(25) takes the max over
  the 25 patches for each channel, which is the only reading that yields 512; the kit does that.
- cat(V_l, V_g) is L2-normalised before the fc in the code; the paper does not mention it, so the kit
  follows the paper and does not normalise; `l2_normalize=True` (and `scan_cci_code`) is the code's. It
  matters: a unit-norm feature bounds each logit by its fc row's norm, which starts near 0.03, so from random
  initialisation the SCAN term stayed at chance (ln 7) for a whole laptop run (notebook 06 before this change).
  The ReLU between the CCI fc 256 and the classifier is the code's.
- ECA's kernel size comes from the ECA paper's rule k = odd(|log2(C) + 1| / 2), which is 5 for 1024 channels,
  the code's hard-coded value.
- Patch order: the kit's mask nets are indexed row-major over the 5 x 5 grid; the code's are ordered 16 inner
  patches, right strip, bottom strip, corner. `CODE_PATCH_ORDER[k]` is the row-major index of the code's k-th
  patch, for anyone porting a full published checkpoint.
- Trunk: timm ResNet-50 (`features_only`, layer2 + layer3). Its layout is torchvision's like the code's
  (stride in the 3x3 convolution, maxpool with padding 1). The VGGFace2 weights the paper used were converted
  from Caffe, whose ResNet strides in the first 1x1 convolution of each downsampling block: the published code
  loaded them into a torchvision layout all the same, and so does `load_vggface2_weights` (shapes match).
- The kit defaults to 8 classes (Aff-Wild2 ABAW3+); paper C used the 7-class ABAW2020 set (num_classes=7).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..losses import SCANCCILoss
# the safe .pkl reader lives in backbones (shared with DAN / paper E); its names stay importable from here
from .backbones import _SafeNumpyUnpickler, _read_weights, create_timm, load_trunk_weights  # noqa: F401
from .registry import config_fields, register_model

__all__ = ["SCANCCI", "SCANCCIOutput", "SCAN", "LocalGlobalAttentionBranch", "ComplementaryContextBranch",
           "ECA", "patch_bounds", "mask_net_parameters", "load_vggface2_weights", "CODE_PATCH_ORDER"]

# row-major index (r * 5 + c) of the published code's k-th local patch / mask net (28 x 28 map)
CODE_PATCH_ORDER: tuple[int, ...] = (
    tuple(r * 5 + c for r in range(4) for c in range(4))    # 16 patches 6x6 of the top-left 24 x 24
    + tuple(r * 5 + 4 for r in range(4))                     # right strip, 4 patches 6(h) x 4(w)
    + tuple(20 + c for c in range(4))                        # bottom strip, 4 patches 4(h) x 6(w)
    + (24,))                                                 # corner 4 x 4


class SCANCCIOutput(NamedTuple):
    logits: torch.Tensor              # (B, C) mean of the 5 logit vectors: the prediction
    attention_logits: torch.Tensor    # (B, C) SCAN local-global branch, for L_u
    region_logits: torch.Tensor       # (B, k, C) CCI blocks (k = 4), for L_1..L_k


def patch_bounds(size: int, parts: int) -> list[int]:
    """Cut positions 0 = b_0 < b_1 < ... < b_parts = size splitting `size` cells into `parts` non-empty runs.

    Runs of ceil(size / parts) with the remainder last (the published code's 6,6,6,6,4 at 28) when that
    leaves the last run non-empty; otherwise an even split floor(i * size / parts) (runs differ by <= 1).
    """
    if parts < 1 or size < parts:
        raise ValueError(f"cannot split a feature map side of {size} cells into {parts} non-empty patches; "
                         f"use a larger input image")
    step = -(-size // parts)
    if step * (parts - 1) < size:
        return [i * step for i in range(parts)] + [size]
    return [i * size // parts for i in range(parts + 1)]


def _blocks(x: torch.Tensor, grid: int) -> list[torch.Tensor]:
    """The grid x grid non-overlapping blocks of a (B, C, H, W) map, row-major, as views."""
    rows, cols = patch_bounds(x.shape[2], grid), patch_bounds(x.shape[3], grid)
    return [x[:, :, rows[r]:rows[r + 1], cols[c]:cols[c + 1]] for r in range(grid) for c in range(grid)]


def mask_net_parameters(channels: int = 512) -> int:
    """Parameters of one SCAN mask net: 3x3 conv without bias, PReLU per channel, BN affine (2,360,832 at 512)."""
    return 9 * channels * channels + channels + 2 * channels


class SCAN(nn.Module):
    """Spatio-channel attention, paper C Eq. 1-2: W = sigmoid(BN(PReLU(Conv(I)))), O = I * W.

    The 'same' 3x3 convolution maps C x H x W to C x H x W, so W holds one weight per channel per position.
    Applied to a patch, the convolution's zero padding is at the patch's border (as in the code, which cuts
    the patches first).
    """

    def __init__(self, channels: int = 512):
        super().__init__()
        self.mask = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.PReLU(channels),
            nn.BatchNorm2d(channels),
            nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask(x)                              # O = I * W, (B, C, h, w)


class LocalGlobalAttentionBranch(nn.Module):
    """The SCAN branch: 25 local patches and the whole layer2 map, each through SCAN, -> logits (B, C).

    Args:
        channels: channels of the input map (512 for ResNet-50 layer2).
        num_classes: output classes.
        grid: patches per side (5 -> 25 patches, the paper's m).
        shared_mask_net: one mask net for all local patches instead of one each (the whole map keeps its own).
        l2_normalize: L2-normalise cat(V_l, V_g) before the fc (the code; the paper does not, the default).
    """

    def __init__(self, channels: int = 512, num_classes: int = 8, grid: int = 5, shared_mask_net: bool = False,
                 l2_normalize: bool = False):
        super().__init__()
        self.grid, self.shared_mask_net, self.l2_normalize = grid, shared_mask_net, l2_normalize
        self.local_scan = nn.ModuleList(SCAN(channels) for _ in range(1 if shared_mask_net else grid * grid))
        self.global_scan = SCAN(channels)
        self.fc = nn.Linear(2 * channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = _blocks(x, self.grid)                      # 25 x (B, 512, 6|4, 6|4) at 28 x 28
        local = torch.stack([self.local_scan[0 if self.shared_mask_net else i](p).mean(dim=(2, 3))
                             for i, p in enumerate(patches)], dim=1)   # (B, 25, 512), GAP per patch
        v_local = local.amax(dim=1)                          # V_l (B, 512): max over the 25 patches
        v_global = self.global_scan(x).mean(dim=(2, 3))      # V_g (B, 512): SCAN on the whole (B, 512, 28, 28)
        v = torch.cat([v_local, v_global], dim=1)            # (B, 1024)
        if self.l2_normalize:
            v = F.normalize(v, p=2, dim=1)
        return self.fc(v)                                    # (B, C)


class ECA(nn.Module):
    """Efficient channel attention (Wang et al. 2020): GAP -> 1-D conv across channels -> sigmoid -> reweight.

    kernel_size None picks the ECA paper's adaptive size, the odd number nearest below |log2(C) + 1| / 2
    (5 for 1024 channels, as the code hard-codes).
    """

    def __init__(self, channels: int = 1024, kernel_size: int | None = None):
        super().__init__()
        if kernel_size is None:
            t = int(abs((math.log2(channels) + 1) / 2))
            kernel_size = t if t % 2 else t + 1
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean(dim=(2, 3))[:, None, :]                   # (B, 1, C) channel descriptor
        w = torch.sigmoid(self.conv(y))[:, 0, :, None, None]  # (B, C, 1, 1)
        return x * w                                         # (B, C, H, W)


class ComplementaryContextBranch(nn.Module):
    """The CCI branch, paper C Eq. 3: H = GAP(PARTITION(ECA(F_l))), then per block fc 256 -> classifier.

    Args:
        channels: channels of the input map (1024 for ResNet-50 layer3).
        num_classes: output classes.
        grid: blocks per side (2 -> the paper's k = 4 blocks).
        hidden: width of the dense layer (256).
        shared_region_classifier: one head for all blocks (the published code) instead of one per block.
    """

    def __init__(self, channels: int = 1024, num_classes: int = 8, grid: int = 2, hidden: int = 256,
                 shared_region_classifier: bool = False):
        super().__init__()
        self.grid = grid
        self.eca = ECA(channels)
        n_heads = 1 if shared_region_classifier else grid * grid
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))
            for _ in range(n_heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.eca(x)                                      # G_l (B, 1024, 14, 14)
        h = [b.mean(dim=(2, 3)) for b in _blocks(g, self.grid)]   # k x H_i (B, 1024), blocks 7 x 7 at 14
        out = [self.heads[i % len(self.heads)](hi) for i, hi in enumerate(h)]   # k x (B, C)
        return torch.stack(out, dim=1)                       # (B, k, C)


def load_vggface2_weights(trunk: nn.Module, path: str | Path, min_match: float = 0.9) -> list[str]:
    """Load a ResNet-50 checkpoint into the layer2/layer3 trunk; returns the trunk's keys left unloaded.

    Reads the VGGFace2 Caffe-converted pickle the paper used (`resnet50_ft_weight.pkl` from VGGFace2-pytorch,
    a dict of numpy arrays, read with an unpickler that accepts nothing but arrays) or any torch state dict
    (bare or under 'state_dict' / 'model'). Prefixes such as `module.` are stripped; layer4 and fc are
    skipped, as in the code's `util.load_state_dict`. Fewer than `min_match` of the trunk's weights
    matching by name and shape is an error.
    """
    return load_trunk_weights(trunk, path, min_match)   # the trunk has no layer4/fc: they are skipped


def _create_trunk(name: str, pretrained: bool) -> nn.Module:
    """timm trunk returning (layer2, layer3) maps; offline pretrained=True gives a RuntimeError saying what to do."""
    return create_timm(name, pretrained, " (paper C used the VGGFace2 ResNet-50, resnet50_ft_weight.pkl)",
                       features_only=True, out_indices=(2, 3))


class SCANCCI(nn.Module):
    """SCAN + CCI on a timm ResNet trunk (layer2 and layer3).

    Args:
        num_classes: output classes (8 for the kit's Aff-Wild2 ABAW3+ labels; 7 in paper C).
        backbone: timm ResNet name; its layer2 feeds SCAN and its layer3 feeds CCI (resnet50 in the paper).
        pretrained: timm's ImageNet weights for the trunk (internet once; offline -> RuntimeError).
        checkpoint_path: local trunk weights, e.g. the VGGFace2 ResNet-50 .pkl of the paper, loaded after
            creation with `load_vggface2_weights`.
        shared_mask_net: one SCAN mask net for all 25 local patches (4.7M instead of 61.4M mask parameters).
        shared_region_classifier: the code's single head for the 4 CCI blocks (the paper: one head each).
        l2_normalize: L2-normalise the SCAN feature before its fc (the code; off by default, as the paper).
        patch_grid: local patches per side (5 -> 25); block_grid: CCI blocks per side (2 -> 4).

    forward(x (B, 3, H, W)) -> SCANCCIOutput(logits, attention_logits, region_logits); train with
    fer_kit.losses.SCANCCILoss.
    """

    def __init__(self, num_classes: int = 8, backbone: str = "resnet50", pretrained: bool = False,
                 checkpoint_path: str | None = None, shared_mask_net: bool = False,
                 shared_region_classifier: bool = False, l2_normalize: bool = False, patch_grid: int = 5,
                 block_grid: int = 2):
        super().__init__()
        if patch_grid < 1 or block_grid < 1:
            raise ValueError(f"patch_grid and block_grid must be >= 1; got {patch_grid}, {block_grid}")
        self.num_classes = num_classes
        self.trunk = _create_trunk(backbone, pretrained)
        if checkpoint_path is not None:
            load_vggface2_weights(self.trunk, checkpoint_path)
        c2, c3 = self.trunk.feature_info.channels()         # 512, 1024 for ResNet-50
        self.scan = LocalGlobalAttentionBranch(c2, num_classes, patch_grid, shared_mask_net, l2_normalize)
        self.cci = ComplementaryContextBranch(c3, num_classes, block_grid, 256, shared_region_classifier)

    def forward(self, x: torch.Tensor) -> SCANCCIOutput:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"SCANCCI expects images shaped (B, 3, H, W); got {tuple(x.shape)}")
        f_u, f_l = self.trunk(x)                  # (B, 512, 28, 28), (B, 1024, 14, 14) at 224; 14 and 7 at 112
        attention = self.scan(f_u)                # (B, C)
        regions = self.cci(f_l)                   # (B, 4, C)
        logits = torch.cat([attention[:, None], regions], dim=1).mean(dim=1)   # (B, 5, C) -> (B, C)
        return SCANCCIOutput(logits, attention, regions)

    def parameter_groups(self, backbone_lr: float = 1e-4, branch_lr: float = 1e-3) -> list[dict]:
        """Optimiser groups as in the paper: trunk at lr 1e-4, SCAN and CCI at 1e-3 (SGD, momentum 0.9)."""
        branches = [p for m in (self.scan, self.cci) for p in m.parameters()]
        return [{"params": list(self.trunk.parameters()), "lr": backbone_lr}, {"params": branches, "lr": branch_lr}]


# what training needs of these models (fer_kit.train.recipe): the name fixes the ResNet-50 trunk; paper C
# Eq. 4-5's loss 0.2 L_u + 0.8 sum_i L_i
_TRAINING = dict(model_cls=SCANCCI, config_args=config_fields("num_classes", "pretrained"),
                 loss=lambda cfg, class_counts=None: SCANCCILoss(lam=0.2),
                 min_image_size=48)                          # 25 patches need a 6x6 layer2 map


@register_model(**_TRAINING)
def scan_cci(**kwargs) -> SCANCCI:
    """Paper C: ResNet-50, 25 per-patch SCAN mask nets + global, CCI with 4 separate region heads."""
    return SCANCCI(**{"backbone": "resnet50", **kwargs})


@register_model(**_TRAINING)
def scan_cci_code(**kwargs) -> SCANCCI:
    """Paper C as its published code ran: the 4 CCI blocks share one region head, the SCAN feature is
    L2-normalised before its fc."""
    return SCANCCI(**{"backbone": "resnet50", "shared_region_classifier": True, "l2_normalize": True, **kwargs})


@register_model(**_TRAINING)
def scan_cci_small(**kwargs) -> SCANCCI:
    """A laptop-sized paper C: one mask net shared by the 25 patches (14.3M instead of 71.0M parameters)."""
    return SCANCCI(**{"backbone": "resnet50", "shared_mask_net": True, **kwargs})



@torch.no_grad()
def branch_logits(model: SCANCCI, dataset, batch_size: int = 128) -> dict[str, np.ndarray]:
    """Logits (N, C) over a dataset, in its order, of paper C's prediction (the mean of the 5 vectors) and
    of each branch alone (SCAN's vector; the mean of the 4 CCI blocks'): what each part adds to the vote."""
    device = next(model.parameters()).device
    parts = {"mean of 5 (paper C)": [], "SCAN alone": [], "CCI blocks alone": []}
    for x, _ in torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False):
        out = model.eval()(x.to(device))
        for part, z in zip(parts, (out.logits, out.attention_logits, out.region_logits.mean(dim=1))):
            parts[part].append(z.float().cpu())
    return {part: torch.cat(z).numpy() for part, z in parts.items()}
