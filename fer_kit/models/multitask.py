"""DAN + facial-landmark multi-task network, paper E (ABAW4 Learning-from-Synthetic-Data track).

Paper: Jeong, Hong et al., "Learning from Synthetic Data: Facial Expression Classification based on
Ensemble of Multi-task Networks" (ABAW4, ECCV 2022 workshop; mean F1 0.71 on the LSD validation set).
Code: Yeonggi-hong/ECCV2022-ABAW-competition, `networks/models_tmp.py: MTL_finetuning` (notes §6.1).

Two branches look at the same face (§2.3 of the paper):
- the emotion branch is DAN (this kit's `DAN`: trunk -> optional 1x1 reduction to 512 -> k cross-attention
  heads), giving k head vectors of 512;
- the appearance branch is a second, separate backbone (ResNet-50; the paper also tried DINO ResNet-50 and
  MobileViTv2) pooled to a vector and projected to 512.
One set of "shared fully connected layers" (Linear 512->256, BN, Linear 256->128, BN, no nonlinearity) is
applied to *each* branch separately, with the same weights: the emotion branch's summed heads go through it
to a 128->6 classifier (+BN), the appearance vector goes through it to two 128->68 regressors (x and y of
the 68 landmarks). At inference only the emotion output is used. Losses (paper §2.1: weighted CE for the
expressions, MSE for the landmarks; the code adds DAN's affinity and partition terms and mixup) are in
`fer_kit.losses.DANLandmarkLoss`.

Classes are LSD's six: 0 Anger, 1 Disgust, 2 Fear, 3 Happiness, 4 Sadness, 5 Surprise (Aff-Wild2 labels
1..6 minus 1; Neutral and Other do not exist in LSD).

Landmark outputs are in the normalised coordinates of `fer_kit.losses.normalize_landmarks`: the image
spans [-1, 1] in x and y (the convention of `F.grid_sample(align_corners=False)`), whatever its pixel size;
`fer_kit.losses.denormalize_landmarks(out.landmarks, size)` gives pixel-centre coordinates back.

How this file differs from the published code:
- trunks come from timm (defaults: ResNet-18 emotion trunk for a laptop, ResNet-50 appearance trunk;
  `dan_landmarks_r50` is the paper's ResNet-50 + ResNet-50). The code used Caffe-converted VGGFace2
  ResNet-50 weights for both and initialised the DAN heads from an AffectNet-8 DAN checkpoint; here
  `checkpoint_path=` / `landmark_checkpoint_path=` load local trunk weights, and a checkpoint of the
  kit's own DAN loads its `features.*`, `reduce.*`, `heads.*` into this model with
  `load_state_dict(strict=False)` (the parameter names are DAN's). The published AffectNet-8 DAN file
  names its heads differently (`cat_head<i>.*`); the kit has no converter for it yet;
- the appearance branch pools with AdaptiveAvgPool2d(1) where the code had a fixed AvgPool2d(7)
  (ResNet-50 at 224) or AvgPool2d(8) (MobileViTv2 at 256; it would fail at the scripts' 224), so any input
  size works. As in the code, the ResNet projection is Conv1x1 -> BN -> ReLU and the MobileViTv2 one a
  bare Conv1x1; timm's `mobilevitv2_100` ends in 512 channels (the code's MobileViTv2-2.0 in 1024);
- the code's emotion branch kept an unused fc+BN and a dead ResNet-18; they are left out;
- like the code, the heads are *not* log-softmaxed across heads before summing (DAN and paper A do it);
  `log_softmax_heads=True` restores DAN's behaviour;
- the shared FC's Linear weights are shared as in the paper and the code, but each task has its own
  BatchNorm (the code's single BN mixes both inputs' statistics; `shared_bn=True` restores it), and
  the training loop starts the landmark outputs at the training set's mean shape (`start_landmarks_at`);
- `forward(x, x_landmarks)` takes the second view the code feeds the appearance branch (there: the clean,
  only-normalised image while the emotion input is augmented and mixed up); with one argument both
  branches see `x`, so `model(x)` and `logits_only(model)` work for tools such as Grad-CAM.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from ..losses import DANLandmarkLoss
from .backbones import create_backbone, feature_channels
from .dan import DAN, full_precision
from .registry import config_fields, register_model

__all__ = ["DANLandmarks", "DANLandmarksOutput", "SharedFC"]

NUM_LANDMARKS = 68


class DANLandmarksOutput(NamedTuple):
    logits: torch.Tensor          # (B, C) emotion logits (C = 6 for LSD)
    landmarks: torch.Tensor       # (B, 68, 2) landmark (x, y) in normalised [-1, 1] image coordinates
    features: torch.Tensor        # (B, 512, h, w) emotion trunk map, for the affinity loss
    heads: torch.Tensor           # (B, k, 512) head vectors (raw, as in paper E's code), for the partition loss
    attention: torch.Tensor       # (B, k, h, w) each head's spatial attention map, for visualisation


class SharedFC(nn.Sequential):
    """Paper E's "shared fully connected layers" (code: `MTL_classfier`): Linear 512->256, BN,
    Linear 256->128, BN; purely linear (no activation anywhere), 164,992 parameters."""

    def __init__(self, in_dim: int = 512, hidden: int = 256, out_dim: int = 128):
        super().__init__(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden),
                         nn.Linear(hidden, out_dim), nn.BatchNorm1d(out_dim))


def _appearance_projection(name: str, cin: int) -> nn.Module:
    """The code's 1x1 projection of the pooled appearance vector to 512."""
    if name.startswith("mobilevit"):            # code: AvgPool2d(8) -> Conv1x1 1024->512 -> flatten
        return nn.Conv2d(cin, 512, 1)
    return nn.Sequential(nn.Conv2d(cin, 512, 1), nn.BatchNorm2d(512), nn.ReLU(inplace=True))


def _check_images(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"DANLandmarks expects {what} shaped (B, 3, H, W); got {shape}")


class DANLandmarks(DAN):
    """Paper E's multi-task network: DAN emotion branch + appearance backbone -> shared FC -> 6 classes
    and 68 (x, y) landmarks.

    A DAN subclass: `features`, `reduce` and `heads` are DAN's (same names, so the kit's DAN checkpoints and
    DAN's Grad-CAM target layers carry over); DAN's 512->C fc+BN is replaced by the shared FC and a
    128->C classifier.

    Args:
        num_classes: emotion classes (6 for LSD: Anger, Disgust, Fear, Happiness, Sadness, Surprise).
        num_heads: DAN cross-attention heads (4 in paper E).
        backbone: timm trunk of the emotion branch (resnet18 for a laptop; resnet50 as in the paper,
            followed by DAN's 1x1 reduction 2048->1024->512).
        pretrained: timm's ImageNet weights for the emotion trunk (internet once; offline -> RuntimeError).
        checkpoint_path: local emotion-trunk weights (MS-Celeb ResNet-18, VGGFace2 ResNet-50...).
        landmark_backbone: timm trunk of the appearance branch: resnet50 (paper), resnet18, or a
            MobileViTv2 such as mobilevitv2_100.
        landmark_pretrained: timm weights for the appearance trunk; None means the same as `pretrained`.
        landmark_checkpoint_path: local appearance-trunk weights.
        num_landmarks: landmark points (68, iBUG order).
        log_softmax_heads: log-softmax the heads across heads before summing, as DAN does (paper E's
            code does not).
        shared_bn: one set of BatchNorm statistics in the shared FC for both tasks, as paper E's code.
            The paper says only that the FC layers are shared; with one BN the running statistics average
            the head vectors' and the appearance vectors' distributions, which fit neither at evaluation
            (notebook 08's default run: landmark NME 0.372 with them vs 0.202 with batch statistics). So by
            default the Linear weights are shared and each task keeps its own BatchNorm.
    """

    def __init__(self, num_classes: int = 6, num_heads: int = 4, backbone: str = "resnet18",
                 pretrained: bool = False, checkpoint_path: str | None = None,
                 landmark_backbone: str = "resnet50", landmark_pretrained: bool | None = None,
                 landmark_checkpoint_path: str | None = None, num_landmarks: int = NUM_LANDMARKS,
                 log_softmax_heads: bool = False, shared_bn: bool = False):
        # emotion branch: DAN's trunk, 1x1 reduction (ResNet-50) and cross-attention heads
        super().__init__(num_classes=num_classes, num_heads=num_heads, backbone=backbone,
                         pretrained=pretrained, checkpoint_path=checkpoint_path)
        del self.fc, self.bn                    # DAN's own classifier is not used in paper E's MTL path
        self.num_landmarks, self.log_softmax_heads = num_landmarks, log_softmax_heads
        # appearance branch: a separate trunk -> global pool -> 1x1 conv to 512
        self.landmark_backbone = landmark_backbone
        self.appearance = create_backbone(landmark_backbone,
                                          pretrained if landmark_pretrained is None else landmark_pretrained,
                                          landmark_checkpoint_path)
        self.appearance_pool = nn.AdaptiveAvgPool2d(1)
        self.appearance_proj = _appearance_projection(landmark_backbone, feature_channels(self.appearance))
        # shared by both tasks, then one output layer per task
        self.shared = SharedFC(512, 256, 128)
        # the landmark path: the same Linear modules (shared weights), its own BatchNorm unless shared_bn
        self.shared_landmarks = self.shared if shared_bn else nn.Sequential(
            self.shared[0], nn.BatchNorm1d(256), self.shared[2], nn.BatchNorm1d(128))
        self.emotion_fc = nn.Linear(128, num_classes)
        self.emotion_bn = nn.BatchNorm1d(num_classes)
        self.landmark_x = nn.Linear(128, num_landmarks)
        self.landmark_y = nn.Linear(128, num_landmarks)

    @torch.no_grad()
    def start_landmarks_at(self, mean_shape: torch.Tensor) -> None:
        """Start the landmark output at the training faces' mean shape (68, 2) in normalised coordinates
        (output bias = mean, weights scaled down), so the landmark MSE begins near the mean-shape error and
        its first steps refine the shape instead of pulling 136 random outputs towards the face."""
        self.landmark_x.bias.copy_(mean_shape[:, 0])
        self.landmark_y.bias.copy_(mean_shape[:, 1])
        self.landmark_x.weight.mul_(0.1)
        self.landmark_y.weight.mul_(0.1)

    def forward(self, x: torch.Tensor, x_landmarks: torch.Tensor | None = None) -> DANLandmarksOutput:
        """x: (B, 3, H, W) emotion input; x_landmarks: the appearance branch's input (default: x)."""
        _check_images(x, "images")
        if x_landmarks is None:
            x_landmarks = x
        else:
            _check_images(x_landmarks, "x_landmarks")
            if x_landmarks.shape[0] != x.shape[0]:
                raise ValueError(f"x and x_landmarks must hold the same faces; got batches of {x.shape[0]} "
                                 f"and {x_landmarks.shape[0]}")
        # emotion branch (DAN)
        f, heads, attention = self.attend(x)               # (B, 512, h, w), (B, k, 512), (B, k, h, w)
        with full_precision(x):                            # as DAN's fusion (see dan.full_precision)
            if self.log_softmax_heads and self.num_heads > 1:
                heads = heads.log_softmax(dim=1)
            e = self.shared(heads.sum(dim=1))              # (B, 512) -> (B, 128)
            logits = self.emotion_bn(self.emotion_fc(e))   # (B, C)
        # appearance branch
        a = self.appearance(x_landmarks)                   # (B, 2048, 7, 7) ResNet-50 at 224; (B, 512, 4, 4) R18 at 112
        a = self.appearance_proj(self.appearance_pool(a))  # (B, c, 1, 1) -> (B, 512, 1, 1)
        s = self.shared_landmarks(a.flatten(1))            # (B, 512) -> (B, 128), the same Linear weights as above
        landmarks = torch.stack([self.landmark_x(s), self.landmark_y(s)], dim=2)   # (B, 68, 2)
        return DANLandmarksOutput(logits, landmarks, f, heads, attention)


def dan_landmarks_loss(cfg, class_counts=None) -> DANLandmarkLoss:
    """Paper E: CE weighted 1 - n_c/N by the training frames per class + affinity + partition + landmark MSE."""
    return DANLandmarkLoss(class_counts=class_counts, num_classes=cfg.num_classes, affinity_weight=cfg.affinity_weight,
                           partition_weight=cfg.partition_weight, landmark_weight=cfg.landmark_weight)


# what training needs of these models (fer_kit.train.recipe): the 6 LSD classes and 68 landmarks per face
_TRAINING = dict(model_cls=DANLandmarks, loss=dan_landmarks_loss, targets="landmarks", min_image_size=48,
                 config_args=config_fields("num_classes", "num_heads", "backbone", "landmark_backbone", "pretrained",
                                           unless_none=("log_softmax_heads",)))


@register_model(**_TRAINING)
def dan_landmarks(**kwargs) -> DANLandmarks:
    """Paper E, laptop-sized emotion branch: DAN-R18 (4 heads) + ResNet-50 appearance branch."""
    return DANLandmarks(**{"backbone": "resnet18", "landmark_backbone": "resnet50", "num_heads": 4, **kwargs})


@register_model(**_TRAINING)
def dan_landmarks_r50(**kwargs) -> DANLandmarks:
    """Paper E's configuration: DAN on ResNet-50 (1x1 reduction to 512, 4 heads) + ResNet-50 appearance."""
    return DANLandmarks(**{"backbone": "resnet50", "landmark_backbone": "resnet50", "num_heads": 4, **kwargs})


@register_model(**_TRAINING, test_only=True)
def test_dan_landmarks(**kwargs) -> DANLandmarks:
    """A tiny configuration for fast tests: ResNet-18 in both branches, two heads."""
    return DANLandmarks(**{"backbone": "resnet18", "landmark_backbone": "resnet18", "num_heads": 2, **kwargs})

