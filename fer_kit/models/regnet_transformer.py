"""RegNet + attention + transformer over time, paper B (ABAW3 EXPR, PRLAB).

Paper: Phan, Nguyen, Huynh et al., "Expression Classification using Concatenation of Deep Neural
Network for the 3rd ABAW3 Competition" (code: phan-kimngan/Affwild2-ABAW3-EXPR-PRLAB; its `Attention`
and `Transformer` come from lucidrains/vit-pytorch). See paper_code_notes.md §3.

Structure (shapes for the paper's clips of T = 64 frames at 112 x 112):

    clip (B, T, 3, 112, 112) -> (B*T, 3, 112, 112) -> RegNetY-1.6GF trunk -> (B*T, 888, 4, 4)
    -> global average pool -> (B*T, 888) -> (B, T, 888) = f
    a = MultiHeadAttention(f)                  (B, T, 888)   2 heads x 64, not residual, no norm
    e = TransformerEncoder(f)                  (B, T, 888)   pre-norm, depth 1, 2 heads x 64, FF 512
    cat(f, a, e) -> (B, T, 2664) -> Dropout(0.5) -> Linear(2664, 8) -> (B, T, 8) per-frame logits

The "64" of the paper is the number of frames attention runs over, not a spatial size: the model is
frame-level classification with temporal context. Variants (`variant=`) choose what is concatenated:
"combine" f,a,e (the paper's model, 2664-d); "only_att" f,a (1776); "only_trans" f,e (1776, what the
published yaml actually trains); "no_att_trans" f alone (888, the code's per-frame baseline).

Input: clips (B, T, 3, H, W) give logits (B, T, C). A batch of single frames (B, 3, H, W) is treated as
clips of T = 1 and gives logits (B, C), so the model also drops into frame-level tools (predict, metrics);
with T = 1 the attention has one key, so it reduces to to_out(v), a fixed linear map of the frame.

How this file differs from the published code (the paper is followed where it says something):
- the trunk is timm's `regnety_016` (same architecture and 10,313,430 parameters as torchvision's
  `regnet_y_1_6gf` used by the code). timm's ImageNet weights for it are torchvision's *V2* recipe
  (tag tv2_in1k), not the V1 weights that `regnet_y_1_6gf(pretrained=True)` loaded;
- the code's config freezes the stem and block 1 of the trunk (34,356 parameters; BN statistics still
  update). The paper says nothing about freezing, so by default everything trains; `freeze_early=True`
  reproduces the code;
- the separate attention module is not the transformer's own attention sub-layer: the code builds two
  modules (paper: "the backbones are connected to the Multi-Head Attention mechanism"; Table 1 lists
  Attention and Transformer Encoder separately), so the kit does too;
- the code's "combine" model also builds an unused `FeedForward(888, 512)` (910,712 parameters that never
  receive a gradient); it is left out here;
- the code calls its `_reset_parameters` (Linear ~ N(0, 0.01)) *before* it creates the attention,
  transformer and classifier, so these keep PyTorch's default initialisation; so do they here;
- the code only builds the modules of the chosen variant; so does this file (parameter counts below).

Parameter counts with regnety_016, 8 classes (checked in tests/test_model_regnet_transformer.py):
trunk 10,313,430; attention 455,544; transformer 1,369,808; classifier 21,320 (combine),
14,216 (only_att / only_trans), 7,112 (no_att_trans); total combine 12,160,102, only_att 10,783,190,
only_trans 11,697,454, no_att_trans 10,320,542.

Loss: the paper uses focal loss (`fer_kit.losses.SequenceFocalLoss`); the code's CE-focal + 0.2 KL to
smoothed targets is `fer_kit.losses.CEFocalLossCode`. Both take (B, T, C) logits with (B, T) labels and
ignore -1 (padding) frames.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..losses import SequenceFocalLoss
from .backbones import create_backbone, feature_channels
from .registry import config_fields, register_model

__all__ = ["RegNetTransformer", "RegNetTransformerOutput", "MultiHeadAttention", "TransformerEncoder",
           "FeedForward", "VARIANTS"]

# variant -> which branches are concatenated after the per-frame features f
VARIANTS = {"combine": ("att", "trans"), "only_att": ("att",), "only_trans": ("trans",), "no_att_trans": ()}


class RegNetTransformerOutput(NamedTuple):
    logits: torch.Tensor      # (B, T, C) for clips, (B, C) for single frames
    features: torch.Tensor    # (B, T, 2664) concatenated representation before dropout ((B, 2664) for frames)


class MultiHeadAttention(nn.Module):
    """Multi-head scaled dot-product self-attention over time (vit-pytorch's `Attention`, as the code).

    One bias-free Linear dim -> 3 * heads * dim_head gives q, k, v; softmax(q k^T / sqrt(dim_head)) v per
    head; the heads are concatenated and projected back to dim (with bias). With dim 888, 2 heads of 64:
    888 -> 384 -> three (B, 2, T, 64) -> (B, T, 128) -> 888; 455,544 parameters.
    """

    def __init__(self, dim: int = 888, heads: int = 2, dim_head: int = 64, dropout: float = 0.0,
                 position_bias: int = 0):
        super().__init__()
        inner = heads * dim_head
        self.heads, self.dim_head, self.scale = heads, dim_head, dim_head ** -0.5
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        # not in paper B (its attention cannot tell a neighbour from a frame 60 frames away): with
        # position_bias = k, a learned bias per head and frame distance -k..k (farther = k) added to the
        # attention logits, as T5's and Swin's relative position bias; zeros at first, so it starts as the paper
        self.position_bias = position_bias
        self.rel_bias = nn.Parameter(torch.zeros(heads, 2 * position_bias + 1)) if position_bias else None
        self.attend = nn.Softmax(dim=-1)
        self.drop = nn.Dropout(dropout)
        # vit-pytorch skips the output projection only when it would be the identity's shape
        project_out = not (heads == 1 and dim_head == dim)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout)) if project_out else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape                                                   # (B, T, 888)
        qkv = self.to_qkv(x).view(b, t, 3, self.heads, self.dim_head)      # (B, T, 3, 2, 64)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                               # each (B, 2, T, 64)
        logits = q @ k.transpose(-2, -1) * self.scale                      # (B, 2, T, T)
        if self.rel_bias is not None:
            steps = torch.arange(t, device=x.device)
            distance = (steps[None, :] - steps[:, None]).clamp(-self.position_bias, self.position_bias)
            logits = logits + self.rel_bias[:, distance + self.position_bias].to(logits.dtype)   # (2, T, T)
        attn = self.attend(logits)                                         # (B, 2, T, T), rows sum to 1
        out = self.drop(attn) @ v                                          # (B, 2, T, 64)
        out = out.transpose(1, 2).reshape(b, t, self.heads * self.dim_head)  # (B, T, 128)
        return self.to_out(out)                                            # (B, T, 888)


class FeedForward(nn.Module):
    """Position-wise MLP dim -> hidden -> dim with GELU (vit-pytorch)."""

    def __init__(self, dim: int = 888, hidden_dim: int = 512, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden_dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)                                                 # (B, T, 888) -> (B, T, 888)


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module):
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(dim), fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.norm(x))


class TransformerEncoder(nn.Module):
    """Pre-norm encoder (vit-pytorch's `Transformer` of the code's era, no final LayerNorm):
    per layer x = Attn(LN(x)) + x; x = FF(LN(x)) + x. Depth 1, 2 heads x 64, FF 512: 1,369,808 parameters.
    """

    def __init__(self, dim: int = 888, depth: int = 1, heads: int = 2, dim_head: int = 64, mlp_dim: int = 512,
                 dropout: float = 0.0, position_bias: int = 0):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList([PreNorm(dim, MultiHeadAttention(dim, heads, dim_head, dropout, position_bias)),
                           PreNorm(dim, FeedForward(dim, mlp_dim, dropout))])
            for _ in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for attn, ff in self.layers:
            x = attn(x) + x                                                # (B, T, 888)
            x = ff(x) + x                                                  # (B, T, 888)
        return x


class RegNetTransformer(nn.Module):
    """Per-frame RegNet features, self-attention and a transformer encoder over time, concatenated.

    Args:
        num_classes: output classes (8 for Aff-Wild2 EXPR).
        variant: "combine" (paper), "only_att", "only_trans" (the code's yaml), "no_att_trans".
        backbone: timm model name of the per-frame trunk ("regnety_016" = RegNetY-1.6GF, 888-d).
        pretrained: load timm's ImageNet weights for the trunk (needs the internet once; clear error offline).
        checkpoint_path: local trunk weights, loaded after creation.
        drop_rate: dropout before the classifier (0.5 in the paper).
        heads, dim_head: attention heads and their size, for both the attention and the encoder (2, 64).
        depth, mlp_dim: encoder layers and feed-forward width (1, 512).
        attn_drop_rate: dropout inside attention and encoder (0 in the paper's Table 1).
        freeze_early: freeze the trunk's stem and first stage as the published config does (off: the paper
            does not mention freezing).
        position_bias: 0 as the paper (attention blind to frame order); k > 0 lets the attention and the
            encoder learn a bias per head and frame distance up to k (a kit diagnostic, in neither paper nor
            code: does a frame find its neighbours once the attention knows which frames they are?).
    """

    def __init__(self, num_classes: int = 8, variant: str = "combine", backbone: str = "regnety_016",
                 pretrained: bool = False, checkpoint_path: str | None = None, drop_rate: float = 0.5,
                 heads: int = 2, dim_head: int = 64, depth: int = 1, mlp_dim: int = 512,
                 attn_drop_rate: float = 0.0, freeze_early: bool = False, position_bias: int = 0):
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {sorted(VARIANTS)}; got {variant!r}")
        self.num_classes, self.variant, self.freeze_early = num_classes, variant, freeze_early
        self.backbone = create_backbone(backbone, pretrained, checkpoint_path)
        self.feat_dim = dim = feature_channels(self.backbone)             # 888 for regnety_016
        # the code's BACKBONE_FREEZE lists the blocks that stay trainable (block2-4): stem + block1 freeze
        self.freeze_features(False)
        branches = VARIANTS[variant]
        if position_bias < 0:
            raise ValueError(f"position_bias is a number of frames (0 = off, as the paper); got {position_bias}")
        self.att = (MultiHeadAttention(dim, heads, dim_head, attn_drop_rate, position_bias)
                    if "att" in branches else None)
        self.trans = (TransformerEncoder(dim, depth, heads, dim_head, mlp_dim, attn_drop_rate, position_bias)
                      if "trans" in branches else None)
        self.out_dim = dim * (1 + len(branches))                          # 2664 for "combine"
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(self.out_dim, num_classes)

    def freeze_features(self, frozen: bool = True) -> None:
        """Train only what sits on top of the per-frame trunk (attention, encoder, classifier): the
        kit's first stage when a clip model starts from a trained per-frame trunk (`init_from`).
        `features_frozen` tells the training loop to keep the frozen trunk in eval mode, BatchNorm
        statistics included (`train.keep_frozen_in_eval`); `freeze_early` alone (the published config)
        leaves those statistics updating, as the code does."""
        self.features_frozen = frozen
        for name, p in self.backbone.named_parameters():
            early = name.startswith(("stem.", "s1."))
            p.requires_grad_(not frozen and not (self.freeze_early and early))

    def position_bias_by_distance(self) -> dict[str, list[float]]:
        """With position_bias: what each attention learned to add per frame distance 0..k (mean of the heads
        and of the two directions); positive favours frames at that distance. Empty for the paper's model.
        Keys: "attention", and "encoder" (the paper's depth 1) or "encoder layer 1", "encoder layer 2", ..."""
        layers = [layer[0].fn for layer in self.trans.layers] if self.trans is not None else []
        found = {"attention": self.att, **({"encoder": layers[0]} if len(layers) == 1 else
                                           {f"encoder layer {i + 1}": a for i, a in enumerate(layers)})}
        out = {}
        for name, att in found.items():
            if att is not None and att.rel_bias is not None:
                b, k = att.rel_bias.detach().float(), att.position_bias
                out[name] = ((b[:, k:] + b[:, :k + 1].flip(1)) / 2).mean(0).tolist()   # distance 0..k
        return out

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, 888): trunk then global average pooling (torchvision's avgpool + flatten)."""
        return self.backbone(frames).mean(dim=(2, 3))                     # (N, 888, h, w) -> (N, 888)

    def forward(self, x: torch.Tensor) -> RegNetTransformerOutput:
        shape, single = tuple(x.shape), x.ndim == 4
        if single:
            x = x.unsqueeze(1)                                             # (B, 3, H, W) -> (B, 1, 3, H, W)
        if x.ndim != 5 or x.shape[2] != 3:
            raise ValueError("RegNetTransformer expects clips (B, T, 3, H, W) or frames (B, 3, H, W); "
                             f"got {shape}")
        b, t = x.shape[:2]
        f = self.frame_features(x.reshape(b * t, *x.shape[2:]))           # (B*T, 888)
        f = f.view(b, t, self.feat_dim)                                    # (B, T, 888)
        parts = [f]
        if self.att is not None:
            parts.append(self.att(f))                                      # (B, T, 888)
        if self.trans is not None:
            parts.append(self.trans(f))                                    # (B, T, 888)
        features = torch.cat(parts, dim=2)                                 # (B, T, 2664) for "combine"
        logits = self.fc(self.drop(features))                              # (B, T, C)
        if single:
            return RegNetTransformerOutput(logits[:, 0], features[:, 0])   # (B, C), (B, 2664)
        return RegNetTransformerOutput(logits, features)


# what training needs of it (fer_kit.train.recipe): the variant picks the concatenated branches; paper B's
# focal loss on every (non-padding) frame
@register_model(model_cls=RegNetTransformer, clips=True,
                config_args=config_fields("num_classes", "variant", "backbone", "pretrained", "position_bias"),
                loss=lambda cfg, class_counts=None: SequenceFocalLoss(gamma=cfg.focal_gamma))
def regnet_transformer(**kwargs) -> RegNetTransformer:
    """Paper B: RegNetY-1.6GF per frame + attention + transformer over time, "combine" variant."""
    return RegNetTransformer(**{"backbone": "regnety_016", "variant": "combine", **kwargs})

