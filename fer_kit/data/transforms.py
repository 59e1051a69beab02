"""Image transforms (torchvision.transforms.v2) on uint8 (3, H, W) tensors."""
from __future__ import annotations

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def eval_transform() -> v2.Compose:
    return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def dan_train_transform() -> v2.Compose:
    """DAN's training recipe (paper_code_notes §1.3), with milder ranges for 112 px faces.

    DAN uses RandomAffine(20, translate 0.2, scale 0.8-1) with p=0.7 and RandomErasing; the aligned
    ABAW crops vary less in pose than AffectNet, so rotation and translation are reduced here.
    """
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.05))], p=0.7),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        v2.RandomErasing(p=0.25, scale=(0.02, 0.12)),
    ])
