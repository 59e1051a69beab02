"""Procedural synthetic faces written in the Aff-Wild2 on-disk layouts: the kit's embedded default.

Aff-Wild2 is licence-gated, so every notebook runs on faces drawn here instead, and they carry every
label the five papers use. Expression is made of the 12 ABAW action units (DESIGN.md §4): each class is
an AU prototype (happiness 6+12, sadness 1+4+15, surprise 1+2+25+26, fear 1+2+4+7+25, anger 4+7+23+24,
disgust 4+10+15, neutral none) at a random intensity plus stray AUs; "Other" is a blend of a smile with
another class's upper face, the kind of compound expression Aff-Wild2 files under Other. Valence and
arousal sit on the circumplex around each class's centre, scaled by the expression's intensity, with
noise. The 68 landmarks are computed from the drawn geometry (face_render.py). Identity, skin tone,
hair, pose, scale, lighting, background, occluders (glasses, a lock of hair, a hand), blur and noise
vary, so a pixel-level linear model cannot read the class off fixed positions.

Frames come in short videos made of expression segments; the AUs, VA and the pose move smoothly. The
first frames after a change of expression are labelled -1 (ambiguous), a few frames have an invalid
label in each task (EXPR -1, AU -1, VA -5), and a few have no image (as when Aff-Wild2's face detector
failed). Written under one root:

    cropped_aligned/<video>/%05d.jpg
    annotations/{EXPR_Classification_Challenge,AU_Detection_Challenge,VA_Estimation_Challenge}/<split>/<video>.txt
    annotations/MTL_Challenge/{training,validation,test}_set_annotations.txt      (16-column csv)
    landmarks/<video>.txt          header, then `00001.jpg,x0,y0,...,x67,y67` per frame with an image
    LSD/{training_set_synthetic_images,validation_set_images}/<ANGER|...|SURPRISE>/<n>.jpg   (6 classes)

so the readers that serve real data serve these too. Besides Aff-Wild2's two labelled splits there is a
Test_Set of other people (Aff-Wild2's test labels are not public): epochs and settings are chosen on
validation and every reported number comes from test.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..labels import AFFWILD2_EXPR_COUNTS, AU_NAMES, EXPR_CLASSES, LSD_CLASSES, LSD_FOLDERS
from .face_render import STYLES, render_video
from .parallel import default_workers, ordered_map

GENERATOR_VERSION = 7  # bump when the drawing changes, so stale caches are not reused

_AU = {name: i for i, name in enumerate(AU_NAMES)}
PROTOTYPES: dict[str, tuple[str, ...]] = {
    "Neutral": (),
    "Anger": ("AU4", "AU7", "AU23", "AU24"),
    "Disgust": ("AU4", "AU10", "AU15"),
    "Fear": ("AU1", "AU2", "AU4", "AU7", "AU25"),
    "Happiness": ("AU6", "AU12"),
    "Sadness": ("AU1", "AU4", "AU15"),
    "Surprise": ("AU1", "AU2", "AU25", "AU26"),
}
# "Other": a smile (AU12) over the upper face of another class.
_OTHER_BLENDS = ("Anger", "Fear", "Sadness", "Surprise", "Disgust")
# Circumplex centres (valence, arousal) of the basic expressions at full intensity (after Russell's
# circumplex: pleasant-unpleasant across, activated-deactivated up).
VA_CENTRES: dict[str, tuple[float, float]] = {
    "Neutral": (0.0, 0.0), "Anger": (-0.55, 0.6), "Disgust": (-0.6, 0.3), "Fear": (-0.45, 0.7),
    "Happiness": (0.7, 0.35), "Sadness": (-0.6, -0.35), "Surprise": (0.25, 0.75),
}
AU_THRESHOLD = 0.5   # an AU counts as present (label 1) at this intensity or above

_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 135], [198, 134, 96],
                  [160, 105, 72], [120, 75, 50], [88, 56, 38]], np.float32) / 255
_HAIR = np.array([[28, 24, 22], [60, 40, 28], [96, 64, 40], [150, 110, 70], [205, 175, 120],
                  [130, 58, 32], [150, 150, 150]], np.float32) / 255
_IRIS = np.array([[70, 45, 25], [40, 28, 20], [70, 110, 150], [80, 110, 70], [110, 90, 60]], np.float32) / 255


@dataclass
class SyntheticConfig:
    """What defines a synthetic dataset; equal configs give identical files (and share a cache entry)."""

    n_frames: int = 10_000        # frames in all three splits (before dropping unusable ones)
    image_size: int = 112         # ABAW cropped-aligned faces are 112x112
    balance: str = "sqrt"         # class frequencies: "sqrt" of Aff-Wild2's, "affwild2" exact, "uniform"
    style: str = "photo"          # rendering domain: "photo", "cartoon" or "lowlight" (face_render.STYLES)
    occluders: bool = True        # glasses, hair across the face, hands
    val_fraction: float = 0.2     # share of frames (whole videos) in Validation_Set
    test_fraction: float = 0.2    # share in Test_Set (other people): epochs are chosen on validation, reported on test
    segment_frames: tuple[int, int] = (4, 12)     # frames per expression segment
    segments_per_video: tuple[int, int] = (2, 4)  # several expressions per person: identity is no cue
    # what each paper argues real data holds (off by default; each paper's notebook switches its own on)
    hidden_fraction: float = 0.0     # paper B: frames inside an expression hidden by a hand or a head-turn blur
    occlusion_fraction: float = 0.0  # paper C: frames with one face region (an eye, the mouth, the nose) covered
    expr_label_fraction: float = 1.0  # paper D: share of training videos with EXPR labels (AU and VA cover all)
    invalid_fraction: float = 0.02   # frames whose label is invalid, in each task independently
    missing_fraction: float = 0.01   # annotated frames whose jpg is absent
    seed: int = 0

    def __post_init__(self):
        self.segment_frames, self.segments_per_video = tuple(self.segment_frames), tuple(self.segments_per_video)
        if self.balance not in ("sqrt", "affwild2", "uniform"):
            raise ValueError(f"balance must be 'sqrt', 'affwild2' or 'uniform'; got {self.balance!r}")
        if self.style not in STYLES:
            raise ValueError(f"style must be one of {STYLES}; got {self.style!r}")
        if self.n_frames < 200:
            raise ValueError(f"n_frames must be at least 200 to hold every class in every split; got {self.n_frames}")
        if not 0 < self.val_fraction < 1 or not 0 <= self.test_fraction < 1 or self.val_fraction + self.test_fraction >= 1:
            raise ValueError("val_fraction and test_fraction must be shares in (0, 1) that leave frames for training; "
                             f"got {self.val_fraction} and {self.test_fraction}")
        for name in ("hidden_fraction", "occlusion_fraction"):
            if not 0 <= getattr(self, name) <= 0.5:
                raise ValueError(f"{name} must be in [0, 0.5] (frames must stay readable); got {getattr(self, name)}")
        if not 0 < self.expr_label_fraction <= 1:
            raise ValueError(f"expr_label_fraction must be in (0, 1]; got {self.expr_label_fraction}")
        if self.image_size < 32:
            raise ValueError(f"image_size must be at least 32 px; got {self.image_size}")

    def key(self) -> str:
        blob = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]


def class_proportions(balance: str) -> np.ndarray:
    """Aff-Wild2's class shares (paper A Table 1), optionally tempered so minority classes can be learnt."""
    counts = np.asarray(AFFWILD2_EXPR_COUNTS, np.float64)
    if balance == "sqrt":
        counts = np.sqrt(counts)
    elif balance == "uniform":
        counts = np.ones_like(counts)
    return counts / counts.sum()


def segment_targets(label: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """AU intensities (12,) in [0, 1] and (valence, arousal) for one expression segment of class `label`."""
    au = np.zeros(len(AU_NAMES), np.float32)
    name = EXPR_CLASSES[label]
    if name == "Other":
        blend = _OTHER_BLENDS[rng.integers(len(_OTHER_BLENDS))]
        active = tuple(a for a in PROTOTYPES[blend] if a != "AU15") + ("AU12",)
        centre = 0.5 * (np.array(VA_CENTRES[blend]) + np.array(VA_CENTRES["Happiness"]))
    else:
        active, centre = PROTOTYPES[name], np.array(VA_CENTRES[name])
    for a in active:
        au[_AU[a]] = rng.uniform(0.65, 1.0)
    intensity = au[[_AU[a] for a in active]].mean() if active else 1.0
    # stray AUs at low intensity: real faces are never pure prototypes
    stray = (rng.random(len(AU_NAMES)) < 0.15) & (au == 0)
    au[stray] = rng.uniform(0.0, 0.25, stray.sum())
    va = np.clip(centre * intensity + rng.normal(0, 0.1, 2), -1, 1).astype(np.float32)
    return au, va


def expression_aus(label: int, rng: np.random.Generator) -> np.ndarray:
    """AU intensities (12,) of one segment of class `label` (segment_targets without VA)."""
    return segment_targets(label, rng)[0]


# ----------------------------------------------------------------------------------------------------
# Per-frame parameters for whole videos
# ----------------------------------------------------------------------------------------------------

def _smooth_walk(rng, n, scale, smooth=8):
    """A slow random walk of length n with std about `scale` (head motion within a video)."""
    steps = rng.normal(0, 1, n + 2 * smooth)
    kernel = np.hanning(2 * smooth + 1)
    walk = np.convolve(np.cumsum(steps) / np.sqrt(smooth), kernel / kernel.sum(), mode="same")[smooth:-smooth]
    walk = walk - walk.mean()
    return scale * walk / max(walk.std(), 1e-6) * 0.5 + scale * rng.normal() * 0.9


def _video_identity(rng, style: str, occluders: bool) -> dict:
    """Everything that stays fixed within one video: who, where, under what light, and what is in the way."""
    skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.95, 1.04, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.85, 1.15, 3)
    bg = np.clip(rng.uniform(0.15, 0.85) + rng.normal(0, 0.18, 3), 0, 1)  # muted colours, like rooms
    ident = dict(
        skin=skin, hair=hair, iris=_IRIS[rng.integers(len(_IRIS))],
        lip=np.clip(skin * np.array([0.82, 0.52, 0.52]) + np.array([0.08, 0.0, 0.02]), 0, 1),
        bg=bg, bg2=np.clip(bg + rng.normal(0, 0.1, 3), 0, 1),
        bg_freq=rng.uniform(1.0, 6.0, 2), bg_phase=rng.uniform(0, 2 * np.pi, 2), bg_angle=rng.uniform(0, np.pi),
        face_w=rng.uniform(0.66, 0.80), face_h=rng.uniform(0.92, 1.05), jaw=rng.uniform(0.75, 1.0),
        hair_style=rng.integers(4), hairline=rng.uniform(-0.68, -0.5), part=rng.uniform(-0.25, 0.25),
        eye_w=rng.uniform(0.12, 0.16), eye_h=rng.uniform(0.06, 0.085), eye_x=rng.uniform(0.29, 0.35),
        eye_y=rng.uniform(-0.16, -0.08), brow_t=rng.uniform(0.05, 0.08), brow_arch=rng.uniform(0.0, 0.06),
        brow_y=rng.uniform(-0.36, -0.30), mouth_y=rng.uniform(0.50, 0.58), mouth_w=rng.uniform(0.22, 0.30),
        lip_t=rng.uniform(0.03, 0.05), nose_y=rng.uniform(0.22, 0.3),
        light=rng.normal(0, 1, 2) * 0.6, gain=rng.uniform(0.7, 1.2), tint=rng.uniform(0.94, 1.06, 3),
        shadow=rng.normal(0, 0.08, 2), scale=rng.uniform(0.8, 0.95), tx=rng.uniform(-0.06, 0.06),
        ty=rng.uniform(-0.02, 0.1), noise=rng.uniform(0.005, 0.03),
        blur=rng.uniform(0.5, 1.1) if rng.random() < 0.2 else 0.0, flat=False, posterise=0,
    )
    # occluders: drawn from the same stream whatever `occluders` says, so switching them off changes
    # nothing else about the faces
    draws = rng.random(3)
    ident.update(
        occluders=tuple(name for name, d, p in zip(("glasses", "hair_lock", "hand"), draws, (0.15, 0.1, 0.12))
                        if occluders and d < p),
        glasses_color=rng.uniform(0.0, 0.35, 3), lens_alpha=0.75 if rng.random() < 0.2 else 0.12,
        lock_side=float(rng.choice([-1, 1])), lock_reach=rng.uniform(-0.2, 0.15),
        hand_u=rng.uniform(-0.45, 0.45), hand_v=rng.uniform(0.45, 0.75), hand_angle=rng.uniform(-0.5, 0.5),
    )
    if style == "cartoon":     # flat, saturated, outlined, posterised, clean
        ident.update(flat=True, posterise=6, noise=0.0, blur=0.0, shadow=np.zeros(2), gain=1.0, tint=np.ones(3),
                     skin=np.clip(skin * np.array([1.08, 0.95, 0.82]), 0, 1),
                     bg=np.clip(rng.uniform(0.3, 1.0, 3), 0, 1))
    elif style == "lowlight":  # a webcam in a dim, warm room
        ident.update(gain=rng.uniform(0.35, 0.55), tint=np.array([1.12, 0.95, 0.72]) * rng.uniform(0.95, 1.05, 3),
                     noise=rng.uniform(0.04, 0.07), blur=rng.uniform(0.6, 1.0), shadow=rng.normal(0, 0.2, 2))
    return ident


def plan_videos(cfg: SyntheticConfig) -> dict:
    """Decide every video, segment and frame (labels, AU and VA trajectories, pose) without drawing."""
    rng = np.random.default_rng(cfg.seed)
    props = class_proportions(cfg.balance)
    videos = []
    shares = (("Train_Set", 1 - cfg.val_fraction - cfg.test_fraction), ("Validation_Set", cfg.val_fraction),
              ("Test_Set", cfg.test_fraction))
    for split, share in shares:
        if share == 0:
            continue
        n_target = int(round(cfg.n_frames * share))
        mean_seg = sum(cfg.segment_frames) / 2
        n_seg = max(int(round(n_target / mean_seg)), 2 * len(EXPR_CLASSES))
        # exact segment counts per class (largest remainder), at least one of each class per split
        raw = props * n_seg
        counts = np.maximum(np.floor(raw).astype(int), 1)
        for i in np.argsort(raw - np.floor(raw))[::-1][: max(n_seg - counts.sum(), 0)]:
            counts[i] += 1
        pool = [int(x) for x in rng.permutation(np.repeat(np.arange(len(EXPR_CLASSES)), counts))]
        while pool:
            k = int(rng.integers(cfg.segments_per_video[0], cfg.segments_per_video[1] + 1))
            labels = [pool.pop()]
            while len(labels) < k:  # consecutive segments of a video always change expression
                j = next((j for j in range(len(pool) - 1, -1, -1) if pool[j] != labels[-1]), None)
                if j is None:
                    break
                labels.append(pool.pop(j))
            videos.append(dict(split=split, labels=labels))

    frames = []  # one dict of arrays per video
    for v, video in enumerate(videos):
        ident = _video_identity(rng, cfg.style, cfg.occluders)
        lens = rng.integers(cfg.segment_frames[0], cfg.segment_frames[1] + 1, len(video["labels"]))
        n = int(lens.sum())
        label = np.repeat(video["labels"], lens)
        targets = [segment_targets(lab, rng) for lab in video["labels"]]
        au = np.repeat(np.stack([t[0] for t in targets]), lens, axis=0)
        va = np.repeat(np.stack([t[1] for t in targets]), lens, axis=0)
        # the expression eases in over a few frames after each change; those frames are ambiguous (-1)
        for s in np.cumsum(lens)[:-1]:
            ramp = int(rng.integers(1, 3))
            w = np.linspace(0, 1, ramp + 2)[1:-1, None]
            au[s: s + ramp] = (1 - w) * au[s - 1] + w * au[s: s + ramp]
            va[s: s + ramp] = (1 - w) * va[s - 1] + w * va[s: s + ramp]
            label[s: s + ramp] = -1
        au *= np.clip(1 + 0.12 * _smooth_walk(rng, n, 1.0)[:, None], 0.6, 1.3)   # intensity wobble
        au = np.clip(au, 0, 1).astype(np.float32)
        va = np.clip(va + np.stack([_smooth_walk(rng, n, 0.05), _smooth_walk(rng, n, 0.05)], 1), -1, 1)
        blink = np.zeros(n, np.float32)
        for b in rng.choice(n, size=max(n // 40, 0), replace=False):
            blink[b: b + 2] = 1.0
        hand = np.zeros(n, bool)
        length = int(rng.integers(max(n * 3 // 10, 1), max(n * 7 // 10, 2)))   # drawn either way (see above)
        start = int(rng.integers(0, n - length + 1))
        if "hand" in ident["occluders"]:                 # a hand stays up for a stretch of the video
            hand[start: start + length] = True
        invalid = rng.random((3, n)) < cfg.invalid_fraction      # EXPR, AU, VA independently
        label[invalid[0]] = -1
        hidden, patch, grey = _conditions(cfg, v, label, lens)
        frames.append(dict(
            hidden=hidden, patch=patch, patch_grey=grey, ident=ident, au=au, va=va.astype(np.float32), label=label.astype(np.int64), blink=blink, hand=hand,
            au_valid=~invalid[1], va_valid=~invalid[2], missing=rng.random(n) < cfg.missing_fraction,
            roll=np.deg2rad(rng.uniform(-10, 10)) + _smooth_walk(rng, n, 0.08),
            yaw=rng.uniform(-0.35, 0.35) + _smooth_walk(rng, n, 0.08),
            pitch=rng.uniform(-0.15, 0.15) + _smooth_walk(rng, n, 0.04),
            dx=_smooth_walk(rng, n, 0.03), dy=_smooth_walk(rng, n, 0.03), ds=_smooth_walk(rng, n, 0.03),
            gaze=np.stack([_smooth_walk(rng, n, 0.02), _smooth_walk(rng, n, 0.01)], 1),
        ))
        video["name"] = f"synth_{v:04d}"
    # paper D: Aff-Wild2 labels EXPR on fewer videos than AU and VA; unlabelled training videos get no
    # EXPR file and -1 in the MTL csv (their own stream: the rest of the data does not change)
    no_expr = np.random.default_rng([cfg.seed, 17]).random(len(videos)) >= cfg.expr_label_fraction
    for video, unlabelled in zip(videos, no_expr):
        video["expr_labelled"] = not (unlabelled and video["split"] == "Train_Set")
    return dict(videos=videos, frames=frames)


def _conditions(cfg: SyntheticConfig, v: int, label: np.ndarray, lens: np.ndarray):
    """Per frame: hidden (0 no, 1 a hand over the face, 2 a head-turn blur) and patch (-1, or the index
    of the covered region in face_render.PATCH_REGIONS) with its grey level. Drawn from the video's own
    stream, so switching them on changes nothing else. A hidden frame sits inside an expression segment
    (not its first two or last frame), so the frames around it show the expression it hides."""
    rng = np.random.default_rng([cfg.seed, 13, v])
    n = len(label)
    starts = np.concatenate([[0], np.cumsum(lens)[:-1]])
    interior = np.zeros(n, bool)
    for s0, ln in zip(starts, lens):
        interior[s0 + 2: s0 + ln - 1] = True
    interior &= label >= 0
    draws = rng.random((4, n))
    hidden = np.where(interior & (draws[0] < cfg.hidden_fraction / max(interior.mean(), 1e-9)),
                      np.where(draws[1] < 0.5, 1, 2), 0).astype(np.int8)
    patch = np.where(draws[2] < cfg.occlusion_fraction, (draws[3] * 4).astype(int), -1).astype(np.int8)
    grey = rng.uniform(0.1, 0.9, n).astype(np.float32)
    return hidden, patch, grey


_FRAME_KEYS = ("au", "blink", "hand", "roll", "yaw", "pitch", "dx", "dy", "ds", "gaze", "hidden", "patch", "patch_grey")


def _frames_of(video: dict, keep: np.ndarray) -> dict:
    """The per-frame drawing parameters of one planned video, restricted to the frames in `keep`."""
    return {k: video[k][keep] for k in _FRAME_KEYS}


def _video_rng(seed: int, v: int) -> np.random.Generator:
    """Each video's noise has its own stream, so videos can be drawn in any order or process."""
    return np.random.default_rng([seed, 7, v])


def render_faces(n: int = 64, label: int | None = None, size: int = 112, seed: int = 0,
                 style: str = "photo", occluders: bool = True) -> dict[str, np.ndarray]:
    """Faces held in memory (no files), for tests and demos: images (n,H,W,3) uint8, labels (n,),
    au (n,12) intensities, va (n,2), landmarks (n,68,2) in pixels; only frames with a valid expression."""
    cfg = SyntheticConfig(n_frames=max(4 * n, 400), image_size=size, balance="uniform", style=style,
                          occluders=occluders, invalid_fraction=0.0, missing_fraction=0.0, seed=seed)
    plan = plan_videos(cfg)
    rng = np.random.default_rng(seed)
    index = [(v, k) for v, f in enumerate(plan["frames"]) for k in range(len(f["label"]))
             if f["label"][k] >= 0 and (label is None or f["label"][k] == label)]
    index = [index[i] for i in np.sort(rng.choice(len(index), size=min(n, len(index)), replace=False))]
    out = {k: [] for k in ("images", "landmarks", "labels", "au", "va")}
    for v in sorted({v for v, _ in index}):
        keep = np.array([k for vv, k in index if vv == v])
        video = plan["frames"][v]
        images, landmarks = render_video(video["ident"], _frames_of(video, keep), size, _video_rng(seed, v))
        out["images"].append(images)
        out["landmarks"].append(landmarks)
        out["labels"].append(video["label"][keep])
        out["au"].append(video["au"][keep])
        out["va"].append(video["va"][keep])
    return {k: np.concatenate(v) for k, v in out.items()}


def render_frames(n: int = 64, label: int | None = None, size: int = 112, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels) of render_faces."""
    faces = render_faces(n, label, size, seed)
    return faces["images"], faces["labels"]


def render_action_units(size: int = 112, seed: int = 0, intensity: float = 1.0) -> dict[str, np.ndarray]:
    """One synthetic person, facing the camera: neutral, then with each of the 12 ABAW action units alone
    at `intensity` (the glossary's AU table). Returns images (13, H, W, 3) uint8, landmarks (13, 68, 2),
    names ("neutral", "AU1", ...) and `changed` (13, H, W): the pixels each differs from neutral in."""
    plan = plan_videos(SyntheticConfig(n_frames=400, image_size=size, occluders=False, invalid_fraction=0.0,
                                       missing_fraction=0.0, seed=seed))
    video = plan["frames"][0]
    fr = _frames_of(video, np.zeros(len(AU_NAMES) + 1, int))     # one frame of the video, 13 times
    still = {"blink": 0.0, "roll": 0.0, "yaw": 0.0, "pitch": 0.0, "dx": 0.0, "dy": 0.0, "ds": 0.0, "gaze": 0.0,
             "hand": False, "hidden": 0, "patch": -1}
    for k, value in still.items():
        fr[k] = np.full_like(fr[k], value)
    fr["au"] = np.zeros_like(fr["au"])
    fr["au"][np.arange(1, len(AU_NAMES) + 1), np.arange(len(AU_NAMES))] = intensity
    images, landmarks = render_video(dict(video["ident"], blur=0.0, noise=0.0), fr, size, _video_rng(seed, 0))
    changed = np.abs(images.astype(np.int16) - images[:1]).sum(-1) > 30      # (13, H, W): what each AU moved
    return {"images": images, "landmarks": landmarks, "names": ("neutral", *AU_NAMES), "changed": changed}


def render_sequence(segments: tuple[str, ...] | list[str], frames_per_segment: int = 16, size: int = 224,
                    seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """One person in a room, facing a camera with small head motion, through `segments` of expressions
    (class names; 3-frame onsets between them), the face about half the frame: a video to run a
    detector and a classifier over. Returns images (n, size, size, 3) uint8 and labels (n,)."""
    rng = np.random.default_rng([seed, 23])
    ident = _video_identity(rng, "photo", occluders=False)
    ident.update(scale=ident["scale"] * 0.55, tx=rng.uniform(-0.1, 0.1), ty=rng.uniform(-0.05, 0.05), blur=0.0)
    classes = [EXPR_CLASSES.index(s) for s in segments]
    labels = np.repeat(classes, frames_per_segment)
    n = len(labels)
    au = np.repeat(np.stack([segment_targets(k, rng)[0] for k in classes]), frames_per_segment, 0)
    for s in range(frames_per_segment, n, frames_per_segment):      # the expression eases in
        w = np.linspace(0, 1, 5)[1:-1, None]
        au[s:s + 3] = (1 - w) * au[s - 1] + w * au[s:s + 3]
    walk = lambda scale: _smooth_walk(rng, n, scale)                # noqa: E731
    fr = {"au": au.astype(np.float32), "blink": np.zeros(n, np.float32), "hand": np.zeros(n, bool),
          "roll": walk(0.04), "yaw": walk(0.08), "pitch": walk(0.04), "dx": walk(0.02), "dy": walk(0.02),
          "ds": np.zeros(n), "gaze": np.zeros((n, 2)), "hidden": np.zeros(n, np.int8),
          "patch": np.full(n, -1, np.int8), "patch_grey": np.full(n, 0.5, np.float32)}
    images, _ = render_video(ident, fr, size, np.random.default_rng([seed, 29]))
    return images, labels


def raw_frames(n: int = 8, size: int = 224, seed: int = 0) -> dict[str, np.ndarray]:
    """Faces as a camera sees them before ABAW's crop-and-align step: small, tilted and off-centre in a
    larger frame of the room. Returns images (n,size,size,3) uint8, landmarks (n,68,2), the face boxes
    (n,4) x0,y0,x1,y1 around the landmarks, and labels; for demonstrating crop, alignment and detection."""
    plan = plan_videos(SyntheticConfig(n_frames=max(20 * n, 400), image_size=size, balance="uniform",
                                       occluders=False, invalid_fraction=0.0, missing_fraction=0.0, seed=seed))
    rng = np.random.default_rng([seed, 11])
    out = {k: [] for k in ("images", "landmarks", "labels")}
    for v, video in enumerate(plan["frames"][:n]):
        ident = dict(video["ident"], scale=video["ident"]["scale"] * rng.uniform(0.45, 0.6),
                     tx=rng.uniform(-0.3, 0.3), ty=rng.uniform(-0.25, 0.25))
        k = np.flatnonzero(video["label"] >= 0)[-1:]             # one frame: the last with a clear expression
        fr = _frames_of(video, k)
        fr["roll"] = fr["roll"] + np.deg2rad(rng.uniform(-25, 25))
        images, landmarks = render_video(ident, fr, size, _video_rng(seed, v))
        out["images"].append(images[0])
        out["landmarks"].append(landmarks[0])
        out["labels"].append(video["label"][k[0]])
    out = {k: np.stack(v) for k, v in out.items()}
    out["boxes"] = np.concatenate([out["landmarks"].min(1), out["landmarks"].max(1)], axis=1)
    return out


# ----------------------------------------------------------------------------------------------------
# Writing the ABAW layouts, in parallel, cached by configuration
# ----------------------------------------------------------------------------------------------------

TASK_HEADERS = {"EXPR": ",".join(EXPR_CLASSES), "AU": ",".join(AU_NAMES), "VA": "valence,arousal"}
_TASK_DIRS = {"EXPR": "EXPR_Classification_Challenge", "AU": "AU_Detection_Challenge", "VA": "VA_Estimation_Challenge"}
MTL_FILES = {"Train_Set": "training_set_annotations.txt", "Validation_Set": "validation_set_annotations.txt",
             "Test_Set": "test_set_annotations.txt"}   # the kit's own name: ABAW's test labels are not public


def default_cache_dir() -> Path:
    return Path(os.environ.get("FER_KIT_CACHE", Path.home() / ".cache" / "fer_kit"))


def _task_rows(fr: dict) -> dict[str, list[str]]:
    """One annotation line per frame for each task, with ABAW's invalid markers."""
    au_bits = (fr["au"] >= AU_THRESHOLD).astype(int)
    rows = {"EXPR": [str(int(x)) for x in fr["label"]], "AU": [], "VA": []}
    for k in range(len(fr["label"])):
        rows["AU"].append(",".join(map(str, au_bits[k])) if fr["au_valid"][k] else ",".join(["-1"] * len(AU_NAMES)))
        rows["VA"].append(f"{fr['va'][k, 0]:.3f},{fr['va'][k, 1]:.3f}" if fr["va_valid"][k] else "-5,-5")
    return rows


_LANDMARK_FORMAT = ",".join(["%.2f"] * 136)
PATCH_NAMES = ("left eye", "right eye", "mouth", "nose")   # = face_render.PATCH_REGIONS, in order
HIDDEN_NAMES = ("", "hand", "blur")


def _write_conditions(root: Path, name: str, fr: dict) -> None:
    """conditions/<video>.txt: what hides each frame (the kit's own file; Aff-Wild2 has no such labels)."""
    folder = Path(root) / "conditions"
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["image,hidden,patch"] + [f"{k + 1:05d}.jpg,{HIDDEN_NAMES[h]},{PATCH_NAMES[p] if p >= 0 else ''}"
                                      for k, (h, p) in enumerate(zip(fr["hidden"], fr["patch"]))]
    (folder / f"{name}.txt").write_text("\n".join(lines) + "\n")


def read_conditions(table) -> dict[str, np.ndarray]:
    """For each frame of a table read from a synthetic root: "hidden" (bool: a hand or a blur hides the
    expression) and "patch" (the covered region's name, "" for none), from the root's conditions/
    folder beside cropped_aligned/. Roots written without those options (and real data) have none:
    every frame then reads as unhidden and uncovered."""
    hidden, patch = np.zeros(len(table), bool), np.full(len(table), "", dtype=object)
    cache: dict[str, dict[str, tuple[str, str]]] = {}
    for i, (path, video) in enumerate(zip(table.paths, table.videos)):
        if video not in cache:
            file = Path(path).parents[2] / "conditions" / f"{video}.txt"   # <root>/cropped_aligned/<video>/<frame>
            cache[video] = ({line.split(",")[0]: tuple(line.split(",")[1:3]) for line in file.read_text().splitlines()[1:]}
                            if file.exists() else {})
        h, p = cache[video].get(Path(path).name, ("", ""))
        hidden[i], patch[i] = bool(h), p
    return {"hidden": hidden, "patch": patch.astype(str)}


def _write_video(job: tuple) -> int:
    """Draw one video's frames and write its jpgs and landmark file (runs in a worker process)."""
    root, name, fr, size, seed, v = job
    cv2.setNumThreads(1)
    folder = Path(root) / "cropped_aligned" / name
    folder.mkdir(parents=True, exist_ok=True)
    present = np.flatnonzero(~fr["missing"])          # missing frames: annotated, but no face image
    images, landmarks = render_video(fr["ident"], _frames_of(fr, present), size, _video_rng(seed, v))
    lines = ["image," + ",".join(f"x{i},y{i}" for i in range(68))]
    for k, im, pts in zip(present, images, landmarks):
        file = f"{k + 1:05d}.jpg"
        if not cv2.imwrite(str(folder / file), im[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92]):
            raise OSError(f"could not write {folder / file} (disk full or folder not writable?); the synthetic "
                          f"cache under {root} is left incomplete and will be rebuilt on the next run")
        lines.append(file + "," + _LANDMARK_FORMAT % tuple(pts.reshape(-1).tolist()))
    (Path(root) / "landmarks" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    return len(present)


def write_dataset(cfg: SyntheticConfig, root: Path, progress: bool = True, workers: int | None = None) -> dict:
    """Render every frame of the plan and write all the layouts under root; returns counts."""
    plan = plan_videos(cfg)
    root = Path(root)
    (root / "landmarks").mkdir(parents=True, exist_ok=True)
    splits = sorted({video["split"] for video in plan["videos"]})
    mtl = {split: ["image,valence,arousal,expression," + ",".join(AU_NAMES)] for split in splits}
    conditions = cfg.hidden_fraction > 0 or cfg.occlusion_fraction > 0
    for video, fr in zip(plan["videos"], plan["frames"]):
        rows = _task_rows(fr)
        if not video["expr_labelled"]:
            rows["EXPR"] = ["-1"] * len(rows["EXPR"])
        if conditions:
            _write_conditions(root, video["name"], fr)
        for task, folder in _TASK_DIRS.items():
            if task == "EXPR" and not video["expr_labelled"]:
                continue
            d = root / "annotations" / folder / video["split"]
            d.mkdir(parents=True, exist_ok=True)
            (d / f"{video['name']}.txt").write_text("\n".join([TASK_HEADERS[task]] + rows[task]) + "\n")
        for k in np.flatnonzero(~fr["missing"]):   # the MTL csv lists images, so only frames that have one
            mtl[video["split"]].append(f"{video['name']}/{k + 1:05d}.jpg,{rows['VA'][k]},{rows['EXPR'][k]},{rows['AU'][k]}")
    (root / "annotations" / "MTL_Challenge").mkdir(parents=True, exist_ok=True)
    for split, lines in mtl.items():
        (root / "annotations" / "MTL_Challenge" / MTL_FILES[split]).write_text("\n".join(lines) + "\n")

    jobs = [(str(root), video["name"], fr, cfg.image_size, cfg.seed, v)
            for v, (video, fr) in enumerate(zip(plan["videos"], plan["frames"]))]
    total = sum(int((~fr["missing"]).sum()) for fr in plan["frames"])
    bar = tqdm(total=total, desc="rendering synthetic faces", unit="face", disable=not progress, mininterval=10.0)
    for done in ordered_map(_write_video, jobs, workers or default_workers(), chunksize=4):   # numpy and OpenCV only
        bar.update(done)
    bar.close()
    _write_lsd(root, plan)
    return {"videos": len(jobs), "images": total}


def _write_lsd(root: Path, plan: dict) -> None:
    """The ABAW4 LSD folder tree (6 classes, no Neutral or Other): hard links to the EXPR frames."""
    dirs = {"Train_Set": "training_set_synthetic_images", "Validation_Set": "validation_set_images"}
    count = {split: 0 for split in dirs}
    for video, fr in zip(plan["videos"], plan["frames"]):
        if video["split"] not in dirs:   # LSD has no test folder (paper E's test set was not released)
            continue
        for k in np.flatnonzero(~fr["missing"] & (fr["label"] >= 1) & (fr["label"] <= 6)):
            cls = LSD_FOLDERS[LSD_CLASSES.index(EXPR_CLASSES[fr["label"][k]])]
            dst = root / "LSD" / dirs[video["split"]] / cls
            dst.mkdir(parents=True, exist_ok=True)
            count[video["split"]] += 1
            src = root / "cropped_aligned" / video["name"] / f"{k + 1:05d}.jpg"
            target = dst / f"{count[video['split']]:06d}.jpg"
            try:
                os.link(src, target)
            except OSError:          # file systems without hard links
                shutil.copyfile(src, target)


def ensure_synthetic(cfg: SyntheticConfig | None = None, cache_dir: str | Path | None = None,
                     progress: bool = True, workers: int | None = None, **overrides) -> Path:
    """Return the folder of the synthetic dataset for cfg, generating it only if it is not cached yet.

    The folder is built under a temporary name and renamed when complete, so an interrupted run never
    leaves a half-written dataset that a later call would mistake for a cache hit.
    """
    cfg = cfg or SyntheticConfig(**overrides)
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root = cache / "synthetic" / f"abaw-{cfg.key()}"
    if (root / "config.json").exists():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root.parent))
    try:
        tmp.chmod(0o755)   # mkdtemp makes it private; the finished dataset is an ordinary folder
        counts = write_dataset(cfg, tmp, progress=progress, workers=workers)
        (tmp / "config.json").write_text(json.dumps({**asdict(cfg), "version": GENERATOR_VERSION, **counts}, indent=1))
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished the same dataset first
            if not (root / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
