"""Backbone trunks from timm, with pretrained weights that fail clearly when they cannot be fetched."""
from __future__ import annotations

from pathlib import Path

import timm
import torch
from torch import nn


def create_backbone(name: str, pretrained: bool = False, checkpoint_path: str | Path | None = None) -> nn.Module:
    """A timm trunk mapping (B, 3, H, W) to its last feature map (no pooling, no classifier).

    `pretrained=True` downloads timm's weights once (then they are cached); offline, it raises an
    error that says what to do. `checkpoint_path` loads a local state dict instead, e.g. the
    MS-Celeb ResNet-18 used by DAN, with the usual key prefixes removed.
    """
    try:
        trunk = timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="")
    except (OSError, RuntimeError, ConnectionError) as err:   # hub downloads raise subclasses of these
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not fetch pretrained weights for timm model {name!r} ({type(err).__name__}: {err}). "
            f"This machine seems to be offline. Either run once with internet access so timm caches the "
            f"weights, pass checkpoint_path= to a local weights file, or use pretrained=False."
        ) from err
    if checkpoint_path is not None:
        load_trunk_weights(trunk, checkpoint_path)
    return trunk


def _strip(key: str) -> str:
    for prefix in ("module.", "model.", "features.", "backbone.", "base."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


def load_trunk_weights(trunk: nn.Module, path: str | Path, min_match: float = 0.9) -> list[str]:
    """Load a local checkpoint into a trunk, remapping common key prefixes; returns the missing keys.

    Checkpoints arrive as a bare state dict or wrapped in {'state_dict': ...} / {'model': ...}, with
    `module.` (DataParallel) or `features.` prefixes; torchvision ResNet names (conv1, layer1...) are
    timm's too. A file whose keys mostly fail to match is an error, not a silently random model.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    own = trunk.state_dict()
    mapped = {}
    for k, v in state.items():
        k = _strip(k)
        if k in own and own[k].shape == v.shape:
            mapped[k] = v
    if len(mapped) < min_match * len(own):
        missing = [k for k in own if k not in mapped][:5]
        raise ValueError(f"{path}: only {len(mapped)} of {len(own)} backbone weights matched by name and shape "
                         f"(e.g. missing {missing}); is it a checkpoint for this backbone?")
    trunk.load_state_dict(mapped, strict=False)
    return [k for k in own if k not in mapped]


def feature_channels(trunk: nn.Module) -> int:
    return int(trunk.num_features)
