"""A plain CNN classifier: the "ResNet-50" baseline rows of the papers' tables (e.g. paper C Table 2).

Paper C (Gera & Balasubramanian, ABAW 2020) compares SCAN + CCI with a plain ResNet-50 fine-tuned on the
same data. This is that baseline: a timm trunk (all stages, layer4 included), global average pooling and
one fully connected layer, trained with plain cross-entropy in the kit's training loop
(`fer_kit.train.build_criterion`). It has no attention, no patches and no auxiliary heads, so whatever
SCAN + CCI gains over it is what the attention branches add.

Differences from the paper's baseline: the paper's ResNet-50 was pretrained (VGGFace2); the kit trains
from random initialisation by default (`pretrained=True` loads timm's ImageNet weights where online).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..losses import CrossEntropy
from .backbones import create_timm
from .registry import config_fields, register_model

__all__ = ["ResNetClassifier", "ClassifierOutput"]


class ClassifierOutput(NamedTuple):
    logits: torch.Tensor     # (B, C)
    features: torch.Tensor   # (B, D) pooled trunk features (2048 for ResNet-50)


class ResNetClassifier(nn.Module):
    """timm trunk -> global average pool -> fc.

    Args:
        num_classes: output classes (7 in paper C, 8 for the kit's ABAW3+ labels).
        backbone: any timm CNN name (resnet50 in paper C Table 2).
        pretrained: timm's ImageNet weights (internet once; offline -> RuntimeError saying what to do).
    """

    def __init__(self, num_classes: int = 8, backbone: str = "resnet50", pretrained: bool = False):
        super().__init__()
        self.trunk = create_timm(backbone, pretrained, num_classes=0, global_pool="avg")   # (B, D)
        self.fc = nn.Linear(self.trunk.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> ClassifierOutput:
        f = self.trunk(x)                    # (B, 3, H, W) -> (B, D)
        return ClassifierOutput(self.fc(f), f)


# what training needs of these models (fer_kit.train.recipe): plain cross-entropy, as paper C's baseline
_TRAINING = dict(model_cls=ResNetClassifier, config_args=config_fields("num_classes", "backbone", "pretrained"),
                 loss=lambda cfg, class_counts=None: CrossEntropy())


@register_model(**_TRAINING)
def resnet_classifier(**kwargs) -> ResNetClassifier:
    """Paper C Table 2's baseline: ResNet-50 + GAP + fc, plain cross-entropy."""
    return ResNetClassifier(**{"backbone": "resnet50", **kwargs})


@register_model(**_TRAINING, test_only=True)
def test_resnet_classifier(**kwargs) -> ResNetClassifier:
    """A tiny variant for tests (ResNet-10-T trunk)."""
    return ResNetClassifier(**{"backbone": "resnet10t", **kwargs})

