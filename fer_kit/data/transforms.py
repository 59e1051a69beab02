"""Image transforms (torchvision.transforms.v2) on uint8 (3, H, W) tensors, with landmarks that follow.

Three things live here:

* face geometry: `crop_face` (square crop around a detector box), `align_face` (similarity transform
  putting the eye centres where ABAW-style cropped-aligned faces have them) and `resize_face`;
* each paper's training augmentation as a named recipe, `train_transform(recipe, size)`, plus
  `eval_transform` and `mixup_batch` (paper E mixes whole batches, so mixup is not a per-image step);
* landmark bookkeeping, so 68 iBUG points stay on the face through every geometric transform.

Landmark coordinates. The kit stores landmarks in pixel-centre coordinates (pixel (i, j) is the point
x=j, y=i; see landmarks.py). torchvision's KeyPoints kernels are not all in one convention: resize,
affine and rotate treat the canvas as continuous with pixel centres at +0.5, while horizontal_flip
maps x -> W - 1 - x (pixel-centre). `to_keypoints` therefore shifts by +0.5 into the continuous
convention, `from_keypoints` shifts back, and the kit's `RandomHorizontalFlipFace` flips as x -> W - x
(and renames the points with IBUG_FLIP). Use those three together, or `apply_with_landmarks`, and
every v2 geometric transform keeps landmarks within a fraction of a pixel of the face (the tests
measure this against blobs drawn in the image). Plain `v2.RandomHorizontalFlip` on such KeyPoints
would land one pixel off and leave the left/right names swapped.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from .landmarks import IBUG_FLIP, eye_centres

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RECIPES = ("none", "paper_a", "paper_b", "paper_c", "dan", "dan_affectnet", "paper_e", "dan_laptop")
# Recipes whose paper mixes images per batch, with the Beta(alpha, alpha) parameter of its code:
# paper E's mixup script draws lambda ~ Beta(0.1, 0.1) (paper_code_notes §6.2).
MIXUP_ALPHA: dict[str, float] = {"paper_e": 0.1}

# Where align_face puts the eye centres in a 112x112 crop, (x, y) pixel-centre coordinates. These are
# the mean eye centres of the kit's synthetic ABAW-style crops (measured on render_faces), close to
# the common 112x112 ArcFace template (38.3, 51.7) / (73.5, 51.5). The exact template behind ABAW's
# cropped_aligned frames is not published in the papers.
CANONICAL_EYES_112 = ((40.0, 54.0), (72.0, 54.0))


# ----------------------------------------------------------------------------------- landmark plumbing

def to_keypoints(landmarks, canvas_size: tuple[int, int]) -> tv_tensors.KeyPoints:
    """Pixel-centre landmarks (..., 2) -> KeyPoints in torchvision's continuous coordinates (+0.5)."""
    pts = torch.as_tensor(np.asarray(landmarks) if not isinstance(landmarks, torch.Tensor) else landmarks,
                          dtype=torch.float32)
    return tv_tensors.KeyPoints(pts + 0.5, canvas_size=tuple(canvas_size))


def from_keypoints(keypoints: torch.Tensor) -> torch.Tensor:
    """KeyPoints from `to_keypoints` (after any transforms) -> pixel-centre landmarks, a plain tensor."""
    return keypoints.as_subclass(torch.Tensor) - 0.5


def flip_landmarks_semantics(points):
    """Rename mirrored (..., 68, 2) points into iBUG order, so index 36 is again the image-left eye's
    outer corner; the coordinates themselves are left alone (see landmarks.flip_landmarks)."""
    return points[..., IBUG_FLIP, :]


class RandomHorizontalFlipFace(v2.RandomHorizontalFlip):
    """Horizontal flip that also renames 68-point landmarks, and mirrors them about the same axis
    as the image (x -> W - x in the continuous coordinates of `to_keypoints`)."""

    def transform(self, inpt, params):
        if isinstance(inpt, tv_tensors.KeyPoints):
            pts = inpt.as_subclass(torch.Tensor).clone()
            pts[..., 0] = inpt.canvas_size[1] - pts[..., 0]
            if pts.ndim >= 2 and pts.shape[-2] == 68:
                pts = flip_landmarks_semantics(pts)
            return tv_tensors.wrap(pts, like=inpt)
        return super().transform(inpt, params)


class RandomErasingFace(v2.RandomErasing):
    """RandomErasing that lets landmarks through silently: erasing a patch moves no point, so
    torchvision's warning about KeyPoints does not apply here."""

    def _call_kernel(self, functional, inpt, *args, **kwargs):
        if isinstance(inpt, tv_tensors.KeyPoints):
            return inpt
        return super()._call_kernel(functional, inpt, *args, **kwargs)


def apply_with_landmarks(transform, image: torch.Tensor, landmarks):
    """Run a v2 transform on a (3, H, W) image and its pixel-centre landmarks together.

    Returns (image, landmarks as a float tensor); the landmarks went through the same random draws.
    """
    out, kp = transform(image, to_keypoints(landmarks, image.shape[-2:]))
    return out, from_keypoints(kp)


# ------------------------------------------------------------------------------------- face geometry

def _as_chw(image) -> tuple[torch.Tensor, bool]:
    """Accept an (H, W, 3) numpy image or a (3, H, W) tensor; remember which, to answer in kind."""
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1), True
    return image, False


def _back(image: torch.Tensor, was_numpy: bool):
    return image.permute(1, 2, 0).numpy() if was_numpy else image


def _points_back(points: torch.Tensor, like):
    return points.numpy() if isinstance(like, np.ndarray) else points


def crop_face(image, box, margin: float = 0.2, size: int = 112, landmarks=None):
    """Square crop around a face box (x0, y0, x1, y1), resized to size x size.

    The square's side is the box's longer side plus `margin` of it on each side, so a detector's tight
    box keeps some forehead and chin, as the ABAW crops do. Parts outside the image are padded with
    black. Takes an (H, W, 3) array or a (3, H, W) tensor and returns the same kind; with `landmarks`
    (68, 2) returns (crop, landmarks in the crop's pixels).
    """
    img, was_numpy = _as_chw(image)
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    left, top = round((x0 + x1 - side) / 2), round((y0 + y1 - side) / 2)
    side = max(1, round(side))
    crop = TF.resize(TF.crop(img, top, left, side, side), [size, size], antialias=True)
    if landmarks is None:
        return _back(crop, was_numpy)
    kp = TF.crop(to_keypoints(landmarks, img.shape[-2:]), top, left, side, side)
    pts = from_keypoints(TF.resize(kp, [size, size]))
    return _back(crop, was_numpy), _points_back(pts, landmarks)


def canonical_eyes(size: int = 112) -> np.ndarray:
    """CANONICAL_EYES_112 scaled to a size x size crop, (2, 2) pixel-centre (x, y)."""
    return (np.asarray(CANONICAL_EYES_112, np.float64) + 0.5) * (size / 112) - 0.5


def align_face(image, landmarks, size: int = 112):
    """Rotate, scale and shift a face so its eye centres land on `canonical_eyes(size)`.

    A similarity (no shear) is fixed exactly by the two eye centres: in complex numbers z -> a z + b
    with a = (d1 - d0) / (s1 - s0). This is how cropped-aligned datasets level the eyes; it keeps the
    face's proportions, unlike fitting all 68 points. Returns (aligned image, landmarks), each in the
    kind it was given.
    """
    img, was_numpy = _as_chw(image)
    pts = np.asarray(landmarks.numpy() if isinstance(landmarks, torch.Tensor) else landmarks, np.float64)
    s0, s1 = (complex(*p) for p in eye_centres(pts))
    d0, d1 = (complex(*p) for p in canonical_eyes(size))
    a = (d1 - d0) / (s1 - s0)
    b = d0 - a * s0
    m = np.array([[a.real, -a.imag, b.real], [a.imag, a.real, b.imag]])
    # cv2 samples at integer pixel centres, the kit's convention, so m applies to landmarks unchanged
    hwc = np.ascontiguousarray(img.permute(1, 2, 0).numpy())
    warped = cv2.warpAffine(hwc, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
    out_pts = (pts @ m[:, :2].T + m[:, 2]).astype(np.float32)
    out = warped if was_numpy else torch.from_numpy(warped).permute(2, 0, 1)
    return out, (out_pts if isinstance(landmarks, np.ndarray) else torch.from_numpy(out_pts))


def resize_face(image, size: int = 224, landmarks=None):
    """Resize to size x size (224 for the ResNet-50 papers A, C, E; 112 for ABAW crops and DDAMFN)."""
    img, was_numpy = _as_chw(image)
    out = TF.resize(img, [size, size], antialias=True)
    if landmarks is None:
        return _back(out, was_numpy)
    pts = from_keypoints(TF.resize(to_keypoints(landmarks, img.shape[-2:]), [size, size]))
    return _back(out, was_numpy), _points_back(pts, landmarks)


# ------------------------------------------------------------------------------------------- recipes

def _to_float() -> list:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]


def eval_transform(size: int | None = None) -> v2.Compose:
    """uint8 -> normalised float; with `size`, resize to size x size first (all papers evaluate on a
    plain resize, no crop)."""
    resize = [v2.Resize([size, size], antialias=True)] if size else []
    return v2.Compose(resize + _to_float())


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation of a (3, H, W) float image, for showing it: values in [0, 1]."""
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x.detach().cpu() * std + mean).clamp(0, 1)


def _dan_affectnet_geometry() -> list:
    # yaoing/DAN affectnet.py (notes §1.3): HFlip, RandomApply([RandomAffine(20, translate 0.2, scale 0.8-1)], p=0.7)
    return [RandomHorizontalFlipFace(),
            v2.RandomApply([v2.RandomAffine(degrees=20, translate=(0.2, 0.2), scale=(0.8, 1.0))], p=0.7)]


def _recipe(recipe: str, size: int | None) -> tuple[list, list]:
    """(steps on uint8 before normalising, steps on the normalised float image) of a recipe."""
    if size is None and recipe in ("paper_a", "dan"):
        raise ValueError(f"recipe {recipe!r} crops to a fixed size: pass size=")
    if recipe == "none":
        # no augmentation: what paper A's published script actually trains with (notes §2.2)
        return [], []
    if recipe == "paper_a":
        # Paper A §3 lists "color jitter, random crop, horizontal flip, color jitter with random crop,
        # random crop with flip" with no values (its published code applies none, notes §2.2). The
        # augmented copies were added to the originals, so one of those five, or none, is drawn per
        # image. Jitter strengths and the 80-100% crop area are the kit's choices, not the paper's.
        jitter = v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4)
        crop = v2.RandomResizedCrop([size, size], scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True)
        flip = RandomHorizontalFlipFace(p=1.0)
        return [v2.RandomChoice([v2.Identity(), jitter, crop, flip, v2.Compose([jitter, crop]),
                                 v2.Compose([crop, flip])])], []
    if recipe == "paper_b":
        # Paper B names no augmentation; its code (notes §3.5): HFlip + ColorJitter(brightness 0.5,
        # contrast 0.25, saturation 0.25) on the 112 px aligned frames. A clip gets one draw for all its
        # frames (ClipDataset passes the (T, 3, H, W) stack through in one call).
        return [RandomHorizontalFlipFace(), v2.ColorJitter(brightness=0.5, contrast=0.25, saturation=0.25)], []
    if recipe == "paper_c":
        # Paper C §4 and 1980x/ABAW2020DMACS (notes §4.4): HFlip + ColorJitter(0.4, 0.3, 0.25, 0.05).
        # That code normalises with mean = std = 0.5; the kit uses ImageNet statistics for every model.
        return [RandomHorizontalFlipFace(), v2.ColorJitter(0.4, 0.3, 0.25, 0.05)], []
    if recipe == "dan":
        # yaoing/DAN rafdb.py (notes §1.3): HFlip, RandomApply([RandomRotation(20), RandomCrop(224,
        # padding=32)], p=0.2), ..., RandomErasing(scale=(0.02, 0.25)); the padding scales with size.
        pad = round(32 * size / 224)
        return ([RandomHorizontalFlipFace(),
                 v2.RandomApply([v2.RandomRotation(20), v2.RandomCrop([size, size], padding=pad)], p=0.2)],
                [RandomErasingFace(scale=(0.02, 0.25))])
    if recipe == "dan_affectnet":
        # yaoing/DAN affectnet.py (notes §1.3), the recipe papers A and E inherit: affine p=0.7 and
        # torchvision's default RandomErasing (p=0.5, scale (0.02, 0.33))
        return _dan_affectnet_geometry(), [RandomErasingFace()]
    if recipe == "paper_e":
        # Paper E code (notes §6.3): ColorJitter(0.5, 0.5, 0.5, 0.5) in the loader, then DAN's AffectNet
        # augmentation and RandomErasing; mixup per batch with Beta(0.1, 0.1) (MIXUP_ALPHA, mixup_batch).
        # Its code draws one augmentation for the whole batch; the kit draws one per image.
        return [v2.ColorJitter(0.5, 0.5, 0.5, 0.5)] + _dan_affectnet_geometry(), [RandomErasingFace()]
    if recipe == "dan_laptop":
        # the kit's laptop preset: DAN's AffectNet recipe with milder ranges for aligned 112 px crops
        # (ABAW's aligned faces vary less in pose than AffectNet's), as the training loop has always used
        return ([RandomHorizontalFlipFace(),
                 v2.RandomApply([v2.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.05))], p=0.7)],
                [RandomErasingFace(p=0.25, scale=(0.02, 0.12))])
    raise ValueError(f"unknown augmentation recipe {recipe!r}; choose one of {', '.join(RECIPES)}")


def train_transform(recipe: str = "dan_laptop", size: int | None = 112) -> v2.Compose:
    """A named paper's training augmentation on uint8 (3, H, W) -> normalised float (3, size, size).

    The image is first resized to size x size (size=None keeps the input size; the papers resize to
    224 first). Landmarks passed as KeyPoints (`to_keypoints`) follow every geometric step. For
    "paper_e" also mix each batch with `mixup_batch(..., alpha=MIXUP_ALPHA["paper_e"])`.
    """
    before, after = _recipe(recipe, size)
    resize = [v2.Resize([size, size], antialias=True)] if size else []
    return v2.Compose(resize + before + _to_float() + after)


def dan_train_transform() -> v2.Compose:
    """DAN's training recipe (paper_code_notes §1.3), with milder ranges for 112 px faces.

    DAN uses RandomAffine(20, translate 0.2, scale 0.8-1) with p=0.7 and RandomErasing; the aligned
    ABAW crops vary less in pose than AffectNet, so rotation and translation are reduced here. Same as
    train_transform("dan_laptop", size=None): no resize, the input is already at the model's size.
    """
    return train_transform("dan_laptop", size=None)


# --------------------------------------------------------------------------------------------- mixup

def mixup_batch(x: torch.Tensor, y: torch.Tensor, alpha: float = 0.2, num_classes: int = 8,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (Zhang et al. 2018) of a batch with a shuffled copy of itself.

    lambda ~ Beta(alpha, alpha); returns lambda x + (1 - lambda) x[perm] and the matching soft targets
    (rows sum to 1). Cross-entropy on the soft targets equals paper E's lambda CE(y_a) + (1 - lambda)
    CE(y_b). `y` is (B,) class indices (drop invalid -1 labels first) or (B, C) soft targets already.
    All randomness comes from `generator` (or torch's global RNG), so runs repeat under a seed.
    """
    soft = y.float() if y.ndim == 2 else torch.nn.functional.one_hot(y.long(), num_classes).float()
    # torch.distributions cannot take a generator: seed a numpy Beta draw from it instead
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]
