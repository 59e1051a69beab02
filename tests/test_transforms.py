"""Transforms, landmarks and face detection.

The central check: landmarks moved by the v2 keypoint kernels must land where the *image* content
moved. Each landmark is drawn as a Gaussian blob in its own channel of a marker image; the marker
image goes through the same seeded transform as the KeyPoints, and the blob's centroid afterwards is
compared with the transformed point. That measures the pixel conventions instead of assuming them.
"""
import warnings

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from fer_kit.data.face_detect import FaceDetector
from fer_kit.data.landmarks import IBUG_FLIP, eye_centres, flip_landmarks
from fer_kit.data.synthetic import raw_frames, render_faces
from fer_kit.data.transforms import (IMAGENET_MEAN, IMAGENET_STD, MIXUP_ALPHA, RECIPES, RandomHorizontalFlipFace,
                                     align_face, apply_with_landmarks, canonical_eyes, crop_face,
                                     dan_train_transform, eval_transform, from_keypoints, mixup_batch,
                                     resize_face, to_keypoints, train_transform)


@pytest.fixture(scope="module")
def faces():
    return render_faces(4, size=112, seed=5)


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).contiguous()


def blobs(points, shape, sigma=1.5) -> torch.Tensor:
    """One Gaussian blob per point, each in its own channel: (K, H, W) float, centred at pixel-centre (x, y)."""
    h, w = shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    pts = torch.as_tensor(np.asarray(points), dtype=torch.float64)
    d2 = (xx[None] - pts[:, 0, None, None]) ** 2 + (yy[None] - pts[:, 1, None, None]) ** 2
    return torch.exp(-d2 / (2 * sigma ** 2)).float()


def centroids(marks: torch.Tensor) -> torch.Tensor:
    """Intensity-weighted centre (x, y) of each channel, in pixel-centre coordinates."""
    m = marks.double().clamp_min(0)
    h, w = m.shape[-2:]
    ys, xs = torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64)
    total = m.sum((-2, -1))
    return torch.stack([(m.sum(-2) * xs).sum(-1) / total, (m.sum(-1) * ys).sum(-1) / total], -1)


def intact(valid: torch.Tensor, points, radius=6):
    """Points whose whole blob came from inside the source image: `valid` is an all-ones channel sent
    through the same transform, so it is < 1 wherever a crop, pad or rotation brought in empty canvas."""
    h, w = valid.shape
    keep = []
    for x, y in torch.as_tensor(points).round().long().tolist():
        x0, x1, y0, y1 = x - radius, x + radius + 1, y - radius, y + radius + 1
        keep.append(x0 >= 0 and y0 >= 0 and x1 <= w and y1 <= h and bool(valid[y0:y1, x0:x1].min() > 0.999))
    return torch.tensor(keep)


# ------------------------------------------------------------------------------------------ landmarks

def test_ibug_flip_is_an_involution_that_swaps_sides():
    assert sorted(IBUG_FLIP.tolist()) == list(range(68))
    assert (IBUG_FLIP[IBUG_FLIP] == np.arange(68)).all()
    assert IBUG_FLIP[36] == 45 and IBUG_FLIP[39] == 42          # outer and inner eye corners
    assert IBUG_FLIP[0] == 16 and IBUG_FLIP[8] == 8             # jaw ends, chin
    assert IBUG_FLIP[17] == 26 and IBUG_FLIP[21] == 22          # brow ends
    assert IBUG_FLIP[30] == 30 and IBUG_FLIP[31] == 35          # nose tip, nostrils
    assert IBUG_FLIP[48] == 54 and IBUG_FLIP[51] == 51 and IBUG_FLIP[57] == 57 and IBUG_FLIP[60] == 64


def test_flipped_landmarks_keep_the_ibug_layout(faces):
    """After mirror + re-index, the points still run the way iBUG says (left/right order of points
    along each contour, upper eyelid above lower), which a wrong permutation would break."""
    pts = faces["landmarks"]
    flipped = flip_landmarks(pts, width=112)
    # (0, 4) and (12, 16) run down the sides of the jaw, nearly vertical: a rolled head may swap their x
    pairs = [(4, 8), (8, 12), (17, 19), (19, 21), (21, 22), (22, 24), (24, 26), (31, 33), (33, 35),
             (36, 39), (39, 42), (42, 45), (37, 38), (43, 44), (48, 51), (51, 54), (59, 55), (60, 62), (62, 64)]
    for a, b in pairs:
        assert (pts[:, a, 0] < pts[:, b, 0]).all(), (a, b)          # the rendered faces follow iBUG
        assert (flipped[:, a, 0] < flipped[:, b, 0]).all(), (a, b)
    for lid_up, lid_low in ((37, 41), (38, 40), (43, 47), (44, 46)):
        assert (flipped[:, lid_up, 1] < flipped[:, lid_low, 1]).all()
    e = eye_centres(flipped)
    assert (e[:, 0, 0] < e[:, 1, 0]).all()
    np.testing.assert_allclose(flip_landmarks(flipped, width=112), pts, atol=1e-4)


# ------------------------------------------------- landmarks follow the image through v2 transforms

GEOMETRIC = {
    "hflip": (lambda: RandomHorizontalFlipFace(p=1.0), True),
    "resized_crop": (lambda: v2.RandomResizedCrop([112, 112], scale=(0.5, 0.9), antialias=True), False),
    "pad_crop": (lambda: v2.RandomCrop([112, 112], padding=16), False),
    "rotation": (lambda: v2.RandomRotation(25), False),
    "affine": (lambda: v2.RandomAffine(degrees=20, translate=(0.15, 0.15), scale=(0.8, 1.2)), False),
    "resize_224": (lambda: v2.Resize([224, 224], antialias=True), False),
    "flip_crop_affine": (lambda: v2.Compose([
        RandomHorizontalFlipFace(p=1.0), v2.RandomResizedCrop([128, 128], scale=(0.6, 1.0), antialias=True),
        v2.RandomAffine(degrees=25, translate=(0.1, 0.1), scale=(0.85, 1.15))]), True),
}


@pytest.mark.parametrize("name", list(GEOMETRIC))
def test_landmarks_stay_on_the_face(faces, name):
    make, flips = GEOMETRIC[name]
    errors = []
    for i in range(len(faces["images"])):
        pts = faces["landmarks"][i]
        torch.manual_seed(100 + i)
        # one blob channel per landmark, plus an all-ones channel that marks where the canvas is real
        marks = torch.cat([blobs(pts, (112, 112)), torch.ones(1, 112, 112)])
        image, marks, kp = make()(tv_tensors.Image(_chw(faces["images"][i])), tv_tensors.Image(marks),
                                  to_keypoints(pts, (112, 112)))
        assert image.shape[-2:] == marks.shape[-2:] == kp.canvas_size
        moved = from_keypoints(kp)
        # a flip renames the points: moved point k is the blob of original point IBUG_FLIP[k]
        seen = centroids(marks[:-1])[IBUG_FLIP] if flips else centroids(marks[:-1])
        ok = intact(marks[-1], moved)
        assert ok.sum() >= 30, "too few landmarks left inside the canvas to judge"
        errors.append((seen[ok] - moved[ok].double()).norm(dim=-1))
    err = torch.cat(errors)
    # measured errors are below 0.1 px on average; half a pixel (a wrong pixel-centre convention in a
    # resize) or a whole one (torchvision's flip, see the control below) would fail this
    assert err.mean() < 0.25, f"{name}: mean landmark error {err.mean():.2f} px"
    assert err.max() < 1.0, f"{name}: max landmark error {err.max():.2f} px"


def test_stock_flip_is_a_pixel_off_in_kit_coordinates(faces):
    """Control: the measurement resolves the convention. torchvision's own flip maps x -> W - 1 - x, which
    is one pixel off for the continuous coordinates that its resize and affine kernels (and
    to_keypoints) use; RandomHorizontalFlipFace exists because of this."""
    pts = faces["landmarks"][0]
    marks, kp = v2.RandomHorizontalFlip(p=1.0)(tv_tensors.Image(blobs(pts, (112, 112))), to_keypoints(pts, (112, 112)))
    dx = centroids(marks)[:, 0] - from_keypoints(kp)[:, 0].double()
    assert abs(dx.mean() - 1.0) < 0.1


@pytest.mark.parametrize("recipe", ["dan", "dan_affectnet", "paper_e", "paper_a", "dan_laptop"])
def test_recipes_move_landmarks_with_the_face(faces, recipe):
    """Whole recipes (colour jitter, erasing and all): markers ride along as a Mask, which v2 moves
    with the image but never recolours; nearest-neighbour resampling of masks costs some accuracy."""
    errors = []
    for seed in range(6):
        i = seed % len(faces["images"])
        pts = faces["landmarks"][i]
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")          # RandomErasing warns that it passes Masks through
            marks = torch.cat([blobs(pts, (112, 112), sigma=2.5), torch.ones(1, 112, 112)])
            image, marks, kp = train_transform(recipe, size=112)(
                _chw(faces["images"][i]), tv_tensors.Mask(marks), to_keypoints(pts, (112, 112)))
        moved = from_keypoints(kp)
        seen = centroids(marks[:-1])
        # the recipe may or may not have flipped, and a flip renames the points: take the closer reading
        if (seen[IBUG_FLIP] - moved).norm(dim=-1).mean() < (seen - moved).norm(dim=-1).mean():
            seen = seen[IBUG_FLIP]
        ok = intact(marks[-1], moved, radius=8)
        errors.append((seen[ok] - moved[ok].double()).norm(dim=-1))
        assert image.dtype == torch.float32 and image.shape == (3, 112, 112)
    err = torch.cat(errors)
    assert err.mean() < 0.5, f"{recipe}: mean landmark error {err.mean():.2f} px"


# ------------------------------------------------------------------------------ crop, align, resize

def test_crop_face_keeps_the_face_and_its_landmarks():
    raw = raw_frames(3, size=224, seed=2)
    for image, pts, box in zip(raw["images"], raw["landmarks"], raw["boxes"]):
        crop, moved = crop_face(image, box, margin=0.2, size=112, landmarks=pts)
        assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
        assert (moved > 0).all() and (moved < 111).all()
        # the box's longer side plus 20% either side spans the crop
        span = moved.max(0) - moved.min(0)
        assert abs(span.max() / 112 - 1 / 1.4) < 0.02
        # the image content moved with the points: blobs at three landmarks, cropped the same way
        marks = blobs(pts[[36, 45, 30]], image.shape[:2], sigma=2.0)
        marks_crop = crop_face(marks, box, margin=0.2, size=112)
        err = (centroids(marks_crop) - torch.from_numpy(moved[[36, 45, 30]]).double()).norm(dim=-1)
        assert err.max() < 1.0


def test_crop_face_pads_outside_the_image():
    image = torch.full((3, 100, 100), 200, dtype=torch.uint8)
    crop = crop_face(image, (70, 70, 110, 110), margin=0.2, size=56)
    assert crop.shape == (3, 56, 56)
    assert crop[:, -5:, -5:].max() == 0 and crop[:, :5, :5].min() == 200


def test_align_face_puts_eyes_on_the_canonical_positions():
    raw = raw_frames(4, size=224, seed=1)          # faces tilted by up to 25 degrees, off-centre
    target = torch.from_numpy(canonical_eyes(112))
    for image, pts in zip(raw["images"], raw["landmarks"]):
        aligned, moved = align_face(image, pts, size=112)
        assert aligned.shape == (112, 112, 3)
        np.testing.assert_allclose(eye_centres(moved), target.numpy(), atol=1e-3)
        # and the image itself: blobs at the eye centres end up on the canonical positions
        marks = blobs(eye_centres(pts), image.shape[:2], sigma=3.0)
        marks_aligned, _ = align_face(marks.permute(1, 2, 0).numpy(), pts, size=112)
        seen = centroids(torch.from_numpy(marks_aligned).permute(2, 0, 1))
        assert (seen - target).norm(dim=-1).max() < 1.0


def test_align_face_accepts_tensors(faces):
    aligned, moved = align_face(_chw(faces["images"][0]), torch.from_numpy(faces["landmarks"][0]), size=224)
    assert aligned.shape == (3, 224, 224) and aligned.dtype == torch.uint8 and isinstance(moved, torch.Tensor)
    np.testing.assert_allclose(eye_centres(moved).numpy(), canonical_eyes(224), atol=1e-3)


def test_resize_face_scales_landmarks_about_pixel_centres(faces):
    image, moved = resize_face(_chw(faces["images"][0]), 224, landmarks=faces["landmarks"][0])
    assert image.shape == (3, 224, 224)
    np.testing.assert_allclose(moved, (faces["landmarks"][0] + 0.5) * 2 - 0.5, atol=1e-4)


# ------------------------------------------------------------------------------------------- recipes

@pytest.mark.parametrize("recipe", RECIPES)
@pytest.mark.parametrize("size", [112, 224])
def test_every_recipe_gives_a_normalised_float_image(faces, recipe, size):
    image = _chw(faces["images"][0])[:, :100, :]              # not square, not the output size
    out = train_transform(recipe, size=size)(image)
    assert out.dtype == torch.float32 and out.shape == (3, size, size)
    assert out.abs().max() < 3.0


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipes_repeat_under_a_seed(faces, recipe):
    transform = train_transform(recipe)
    images = [_chw(im) for im in faces["images"]]
    runs = []
    for _ in range(2):
        torch.manual_seed(7)
        runs.append(torch.stack([transform(im) for im in images]))
    assert torch.equal(runs[0], runs[1])
    if recipe != "none":
        torch.manual_seed(8)
        assert not torch.equal(runs[0], torch.stack([transform(im) for im in images]))


def test_recipes_carry_landmarks_without_warnings(faces):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for recipe in RECIPES:
            out, pts = apply_with_landmarks(train_transform(recipe), _chw(faces["images"][0]), faces["landmarks"][0])
            assert out.shape == (3, 112, 112) and pts.shape == (68, 2)


def test_unknown_recipe_lists_the_names():
    with pytest.raises(ValueError, match="paper_c"):
        train_transform("paper_z")


def test_eval_transform_without_args_only_normalises(faces):
    image = _chw(faces["images"][0])
    mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
    torch.testing.assert_close(eval_transform()(image), (image / 255 - mean) / std)
    assert eval_transform(224)(image).shape == (3, 224, 224)


def test_dan_train_transform_keeps_its_size(faces):
    out = dan_train_transform()(_chw(faces["images"][0]))
    assert out.dtype == torch.float32 and out.shape == (3, 112, 112)


# --------------------------------------------------------------------------------------------- mixup

def test_mixup_mixes_images_and_targets_alike():
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 0, 4])
    x = torch.nn.functional.one_hot(y, 8).float() * 10     # "images" that spell out their label
    mixed, soft = mixup_batch(x, y, alpha=MIXUP_ALPHA["paper_e"], generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(soft.sum(1), torch.ones(10))
    torch.testing.assert_close(mixed, soft * 10)            # each image paired with its own target
    again = mixup_batch(x, y, alpha=0.1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again[0], mixed) and torch.equal(again[1], soft)
    other = mixup_batch(x, y, alpha=0.1, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other[1], soft)


def test_mixup_takes_soft_targets_and_the_global_seed():
    soft = torch.softmax(torch.randn(6, 8), 1)
    x = torch.randn(6, 3, 4, 4)
    torch.manual_seed(3)
    a = mixup_batch(x, soft)
    torch.manual_seed(3)
    b = mixup_batch(x, soft)
    assert torch.equal(a[0], b[0])
    torch.testing.assert_close(a[1].sum(1), torch.ones(6))


# ------------------------------------------------------------------------------------ face detection

def test_detector_explains_a_missing_cascade(tmp_path):
    with pytest.raises(RuntimeError, match="opencv-python-headless<5"):
        FaceDetector(cascade_path=str(tmp_path / "nope.xml"))


def test_detector_finds_a_face_in_a_bigger_frame():
    face = render_faces(1, size=224, seed=0)["images"][0]
    frame = np.full((400, 480, 3), 90, np.uint8)
    frame[100:324, 200:424] = face
    detector = FaceDetector()
    boxes = detector.detect(frame)
    assert isinstance(boxes, list)
    areas = [(b[2] - b[0]) * (b[3] - b[1]) for b in boxes]
    assert areas == sorted(areas, reverse=True)
    if boxes:                                   # Haar on drawn faces is not guaranteed; when it fires, it is on the face
        x0, y0, x1, y1 = boxes[0]
        overlap = max(0, min(x1, 424) - max(x0, 200)) * max(0, min(y1, 324) - max(y0, 100))
        assert overlap > 0.5 * (x1 - x0) * (y1 - y0)
    crop = detector.detect_and_crop(frame, size=112)
    assert crop.shape == (112, 112, 3) and crop.dtype == np.uint8
    assert detector.detect(torch.from_numpy(frame).permute(2, 0, 1)) == boxes


def test_detect_and_crop_falls_back_to_the_centre():
    blank = np.full((120, 200, 3), 128, np.uint8)
    blank[:, 40:160] = 60
    with pytest.warns(UserWarning, match="no face"):
        crop = FaceDetector().detect_and_crop(blank, size=64)
    assert crop.shape == (64, 64, 3) and (crop == 60).all()
