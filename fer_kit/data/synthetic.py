"""Procedural synthetic faces written in the Aff-Wild2 on-disk layout: the kit's embedded default.

Aff-Wild2 is licence-gated, so every notebook runs on faces drawn here instead. Expression is carried by
the 12 ABAW action units (DESIGN.md §4): each class is an AU prototype (happiness 6+12, sadness 1+4+15,
surprise 1+2+25+26, fear 1+2+4+7+25, anger 4+7+23+24, disgust 4+10+15, neutral none) at a random
intensity plus stray AUs; "Other" is a blend of a smile with another class's upper face, the kind of
compound expression Aff-Wild2 files under Other. Identity, skin tone, hair, pose, scale, lighting,
background and noise vary, so a pixel-level linear model cannot read the class off fixed positions.

Frames come in short videos made of expression segments; the AUs and the pose move smoothly, the first
frames after a change of expression are labelled -1 (ambiguous), a few frames are unlabelled, and a
few have no image (as when Aff-Wild2's face detector failed). The writer produces
`cropped_aligned/<video>/%05d.jpg` and `annotations/EXPR_Classification_Challenge/<split>/<video>.txt`,
the layout the ABAW readers take, so synthetic and real data go down the same path.
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
from PIL import Image
from tqdm import tqdm

from ..labels import AFFWILD2_EXPR_COUNTS, AU_NAMES, EXPR_CLASSES

GENERATOR_VERSION = 3  # bump when the drawing changes, so stale caches are not reused

# AU prototypes per class (index into AU_NAMES), DESIGN.md §4.
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

_SKIN = np.array([[255, 224, 196], [241, 194, 160], [224, 172, 135], [198, 134, 96],
                  [160, 105, 72], [120, 75, 50], [88, 56, 38]], np.float32) / 255
_HAIR = np.array([[28, 24, 22], [60, 40, 28], [96, 64, 40], [150, 110, 70], [205, 175, 120],
                  [130, 58, 32], [150, 150, 150]], np.float32) / 255
_IRIS = np.array([[70, 45, 25], [40, 28, 20], [70, 110, 150], [80, 110, 70], [110, 90, 60]], np.float32) / 255


@dataclass
class SyntheticConfig:
    """What defines a synthetic dataset; equal configs give identical files (and share a cache entry)."""

    n_frames: int = 10_000        # frames in train + validation (before dropping unusable ones)
    image_size: int = 112         # ABAW cropped-aligned faces are 112x112
    balance: str = "sqrt"         # class frequencies: "sqrt" of Aff-Wild2's, "affwild2" exact, "uniform"
    val_fraction: float = 0.2     # share of frames (whole videos) in Validation_Set
    segment_frames: tuple[int, int] = (4, 12)   # frames per expression segment
    segments_per_video: tuple[int, int] = (2, 4)  # several expressions per person: identity is no cue
    invalid_fraction: float = 0.02   # extra frames annotated -1 at random
    missing_fraction: float = 0.01   # annotated frames whose jpg is absent
    seed: int = 0

    def __post_init__(self):
        if self.balance not in ("sqrt", "affwild2", "uniform"):
            raise ValueError(f"balance must be 'sqrt', 'affwild2' or 'uniform'; got {self.balance!r}")
        if self.n_frames < 200:
            raise ValueError(f"n_frames must be at least 200 to hold every class in both splits; got {self.n_frames}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1); got {self.val_fraction}")

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


def expression_aus(label: int, rng: np.random.Generator) -> np.ndarray:
    """AU intensities (12,) in [0, 1] for one expression segment of class `label`."""
    au = np.zeros(len(AU_NAMES), np.float32)
    name = EXPR_CLASSES[label]
    if name == "Other":
        base = PROTOTYPES[_OTHER_BLENDS[rng.integers(len(_OTHER_BLENDS))]]
        active = tuple(a for a in base if a != "AU15") + ("AU12",)
    else:
        active = PROTOTYPES[name]
    for a in active:
        au[_AU[a]] = rng.uniform(0.65, 1.0)
    # stray AUs at low intensity: real faces are never pure prototypes
    stray = (rng.random(len(AU_NAMES)) < 0.15) & (au == 0)
    au[stray] = rng.uniform(0.0, 0.25, stray.sum())
    return au


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


def _video_identity(rng) -> dict[str, np.ndarray | float]:
    """Everything that stays fixed within one video: who, where, under what light."""
    skin = _SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.95, 1.04, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] * rng.uniform(0.85, 1.15, 3)
    bg = np.clip(rng.uniform(0.15, 0.85) + rng.normal(0, 0.18, 3), 0, 1)  # muted colours, like rooms
    return dict(
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
        scale=rng.uniform(0.8, 0.95), tx=rng.uniform(-0.06, 0.06), ty=rng.uniform(-0.02, 0.1),
        noise=rng.uniform(0.005, 0.03),
    )


def plan_videos(cfg: SyntheticConfig) -> dict:
    """Decide every video, segment and frame: labels, AU trajectories and pose, without drawing anything."""
    rng = np.random.default_rng(cfg.seed)
    props = class_proportions(cfg.balance)
    videos = []
    for split, share in (("Train_Set", 1 - cfg.val_fraction), ("Validation_Set", cfg.val_fraction)):
        n_target = int(round(cfg.n_frames * share))
        mean_seg = sum(cfg.segment_frames) / 2
        n_seg = max(int(round(n_target / mean_seg)), 2 * len(EXPR_CLASSES))
        # exact segment counts per class (largest remainder), at least one of each class per split
        raw = props * n_seg
        counts = np.maximum(np.floor(raw).astype(int), 1)
        for i in np.argsort(raw - np.floor(raw))[::-1][: max(n_seg - counts.sum(), 0)]:
            counts[i] += 1
        seg_labels = rng.permutation(np.repeat(np.arange(len(EXPR_CLASSES)), counts))
        pool = [int(x) for x in seg_labels]
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
        ident = _video_identity(rng)
        lens = rng.integers(cfg.segment_frames[0], cfg.segment_frames[1] + 1, len(video["labels"]))
        n = int(lens.sum())
        label = np.repeat(video["labels"], lens)
        targets = np.stack([expression_aus(lab, rng) for lab in video["labels"]])
        au = np.repeat(targets, lens, axis=0)
        # the expression eases in over a few frames after each change; those frames are ambiguous (-1)
        starts = np.cumsum(lens)[:-1]
        for s in starts:
            ramp = int(rng.integers(1, 3))
            w = np.linspace(0, 1, ramp + 2)[1:-1, None]
            au[s: s + ramp] = (1 - w) * au[s - 1] + w * au[s: s + ramp]
            label[s: s + ramp] = -1
        au *= np.clip(1 + 0.12 * _smooth_walk(rng, n, 1.0)[:, None], 0.6, 1.3)   # intensity wobble
        au = np.clip(au, 0, 1).astype(np.float32)
        blink = np.zeros(n, np.float32)
        for b in rng.choice(n, size=max(n // 40, 0), replace=False):
            blink[b: b + 2] = 1.0
        invalid = rng.random(n) < cfg.invalid_fraction
        label[invalid] = -1
        missing = rng.random(n) < cfg.missing_fraction
        frames.append(dict(
            ident=ident, au=au, label=label.astype(np.int64), blink=blink, missing=missing,
            roll=np.deg2rad(rng.uniform(-10, 10)) + _smooth_walk(rng, n, 0.08),
            yaw=rng.uniform(-0.35, 0.35) + _smooth_walk(rng, n, 0.08),
            pitch=rng.uniform(-0.15, 0.15) + _smooth_walk(rng, n, 0.04),
            dx=_smooth_walk(rng, n, 0.03), dy=_smooth_walk(rng, n, 0.03), ds=_smooth_walk(rng, n, 0.03),
            gaze=np.stack([_smooth_walk(rng, n, 0.02), _smooth_walk(rng, n, 0.01)], 1),
        ))
        video["name"] = f"synth_{v:04d}"
    return dict(videos=videos, frames=frames)


# ----------------------------------------------------------------------------------------------------
# Drawing. Each video is drawn on a face-aligned canvas (face units: the face spans about -1..1, v points
# down): the identity layers once per video, the AU-driven features per frame inside small windows, and
# one affine warp per frame places the face in the image (pose, scale, roll). Shapes are soft masks from
# signed distances, so edges are anti-aliased.
# ----------------------------------------------------------------------------------------------------

_EXTENT = 1.9          # the canvas covers face units -1.9..1.9 (the neck runs off the image)
_MAX_SCALE = 1.0      # largest face scale (face half-height / image half-size) a frame can have


def _cover(d, px):
    """Anti-aliased coverage of the region d < 0 (d in face units, px = one canvas pixel in face units)."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def _ellipse(u, v, cx, cy, rx, ry):
    """Approximate signed distance to an ellipse, in face units."""
    return (np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2) - 1) * np.minimum(rx, ry)


class _Canvas:
    """RGB + alpha for a stack of n frames on the face-aligned grid, painted window by window."""

    def __init__(self, n: int, size: int):
        self.c = int(np.ceil(_EXTENT * size * _MAX_SCALE / 8) * 8)  # fine enough for the largest face
        self.px = 2 * _EXTENT / self.c
        g = ((np.arange(self.c, dtype=np.float32) + 0.5) * self.px - _EXTENT)
        self.g = g
        self.rgb = np.zeros((n, self.c, self.c, 3), np.float32)
        self.alpha = np.zeros((n, self.c, self.c), np.float32)

    def window(self, u0, u1, v0, v1):
        """Row/column slices of a face-unit box, and the (1,h,1)/(1,1,w) coordinates inside it."""
        idx = lambda a, b: slice(*np.clip(np.searchsorted(self.g, [a, b]), 0, self.c))  # noqa: E731
        rows, cols = idx(v0, v1), idx(u0, u1)
        return rows, cols, self.g[None, None, cols], self.g[None, rows, None]

    def paint(self, win, a, color):
        """Composite colour (n,3) or (n,h,w,3) with coverage a (n|1,h,w) inside window win."""
        rows, cols = win[0], win[1]
        a = np.broadcast_to(a, self.alpha[:, rows, cols].shape)
        col = color[:, None, None, :] if color.ndim == 2 else color
        dst = self.rgb[:, rows, cols]
        dst += a[..., None] * (col - dst)
        self.rgb[:, rows, cols] = dst
        self.alpha[:, rows, cols] += a * (1 - self.alpha[:, rows, cols])


def _identity_layers(cv: _Canvas, ident: dict) -> dict:
    """Hair, neck, ears and the shaded face of one person: drawn once, copied into every frame."""
    win = cv.window(-_EXTENT, _EXTENT, -_EXTENT, _EXTENT)
    u, v = win[2], win[3]
    px, one = cv.px, lambda c: np.asarray(c, np.float32)[None]  # noqa: E731
    fw, fh, style = ident["face_w"], ident["face_h"], ident["hair_style"]
    hair, skin = one(ident["hair"]), one(ident["skin"])
    if style != 3:  # hair behind the head: short (0), long (1), bun (2), shaved (3)
        hb = _ellipse(u, v, 0, -0.12, fw + 0.14, fh + 0.05)
        if style == 1:
            hb = np.minimum(hb, np.maximum(_ellipse(u, v, 0, 0.25, fw + 0.2, 1.15), -v - 0.2))
        else:
            hb = np.maximum(hb, v - 0.05)
        if style == 2:
            hb = np.minimum(hb, _ellipse(u, v, 0, -1.12, 0.35, 0.25))
        cv.paint(win, _cover(hb, px), hair)
    cv.paint(win, _cover(np.maximum(np.abs(u) - 0.38 * fw / 0.72, 0.6 - v), px), skin * 0.78)
    ears = np.minimum(_ellipse(u, v, -fw, -0.02, 0.1, 0.17), _ellipse(u, v, fw, -0.02, 0.1, 0.17))
    cv.paint(win, _cover(ears, px), skin * 0.9)
    _paint_face(cv, win, ident, low_h=fh)
    # hair in front (fringe with a side parting): painted again over every frame's features
    front_a = None
    if style in (0, 1):
        hl = ident["hairline"] + 0.1 * (u / fw) ** 2 + ident["part"] * u
        front_a = _cover(np.maximum(v - hl, _ellipse(u, v, 0, 0, fw, fh) - 0.02), px)
        rows = np.flatnonzero(front_a.max(axis=2)[0] > 0)
        if len(rows):
            r0, r1 = rows[0], rows[-1] + 1
            front_a = (slice(r0, r1), win[1], front_a[:, r0:r1])
        else:
            front_a = None
    return dict(rgb=cv.rgb[0].copy(), alpha=cv.alpha[0].copy(), front=front_a)


def _paint_face(cv: _Canvas, win, ident: dict, low_h):
    """The face oval (lower half stretched by the jaw drop) shaded by a directional light."""
    u, v = win[2], win[3]
    fw, fh, jaw = ident["face_w"], ident["face_h"], ident["jaw"]
    jaw_w = fw * np.where(v > 0.3, jaw + (1 - jaw) * (1 - np.clip((v - 0.3) / 0.7, 0, 1)), 1.0)
    face_d = _ellipse(u, v, 0, 0, jaw_w, np.where(v > 0, low_h, fh))
    nz = np.sqrt(1 - np.clip((u / fw) ** 2 + (v / fh) ** 2, 0, 1))
    light = ident["light"][0] * u / fw + ident["light"][1] * v / fh
    shade = np.clip(0.82 + 0.25 * nz + 0.25 * light * (1 - 0.5 * nz), 0.45, 1.25)
    cv.paint(win, _cover(face_d, cv.px), np.asarray(ident["skin"], np.float32) * shade[..., None])


def _paint_features(cv: _Canvas, ident: dict, fr: dict) -> None:
    """Everything the 12 AUs move, for a stack of frames of one video (fr values have leading dim n)."""
    f32 = np.float32
    n = fr["au"].shape[0]
    au = {name: fr["au"][:, i].astype(f32)[:, None, None] for i, name in enumerate(AU_NAMES)}
    per = lambda k: fr[k].astype(f32)[:, None, None]  # noqa: E731
    rep = lambda c: np.repeat(np.asarray(c, f32)[None], n, 0)  # noqa: E731
    px = cv.px
    skin, hair, lip = rep(ident["skin"]), rep(ident["hair"]), rep(ident["lip"])
    shift_u, shift_v = 0.22 * per("yaw"), 0.12 * per("pitch")   # inner features slide when the head turns

    # the jaw drop (AU26) and parted lips (AU25) lengthen the lower face
    drop = 0.12 * au["AU26"] + 0.04 * au["AU25"]
    if float(drop.max()) > 0.005:
        win = cv.window(-1.0, 1.0, 0.2, _EXTENT)
        low_h = ident["face_h"] * (1 + drop)
        _paint_face(cv, win, ident, low_h)

    # cheeks: raised and flushed by AU6
    win = cv.window(-0.75, 0.75, -0.1, 0.5)
    fu, fv = win[2] - shift_u, win[3] - shift_v
    for side in (-1, 1):
        ck = _ellipse(fu, fv, side * 0.42, 0.24 - 0.08 * au["AU6"], 0.15, 0.11)
        cv.paint(win, _cover(ck, px * 6) * (0.05 + 0.35 * au["AU6"]), rep([0.85, 0.35, 0.35]))

    # eyes: lids narrowed by AU7 (lid tightener) and AU6 (cheek push), opened a little by AU2
    win = cv.window(-0.7, 0.7, -0.35, 0.1)
    fu, fv = win[2] - shift_u, win[3] - shift_v
    ew, eh, ex, ey = ident["eye_w"], ident["eye_h"], ident["eye_x"], ident["eye_y"]
    openness = np.clip(1 - 0.5 * au["AU7"] - 0.25 * au["AU6"] + 0.25 * au["AU2"] - 0.9 * per("blink"), 0.08, 1.3)
    lower_cut = 1 - 0.55 * np.maximum(au["AU6"], au["AU7"])
    gu, gv = fr["gaze"][:, 0, None, None].astype(f32), fr["gaze"][:, 1, None, None].astype(f32)
    white = rep([0.93, 0.92, 0.9]) * np.float32(ident["gain"]) ** 0.5
    lid = hair * 0.5 + skin * 0.2
    for side in (-1, 1):
        cx = side * ex
        d_eye = np.maximum(_ellipse(fu, fv, cx, ey, ew, eh * openness), fv - (ey + eh * openness * lower_cut))
        a_eye = _cover(d_eye, px)
        cv.paint(win, a_eye, white)
        cv.paint(win, _cover(_ellipse(fu, fv, cx + gu, ey + gv, 0.055, 0.055), px) * a_eye, rep(ident["iris"]))
        cv.paint(win, _cover(_ellipse(fu, fv, cx + gu, ey + gv, 0.024, 0.024), px) * a_eye, rep([0, 0, 0]))
        ring = np.abs(_ellipse(fu, fv, cx, ey, ew * 1.05, eh * openness * 1.1)) - 0.012
        cv.paint(win, _cover(np.maximum(ring, fv - ey), px), lid)

    # brows: inner ends raised by AU1, outer by AU2; AU4 pulls them down and together
    win = cv.window(-0.75, 0.75, -0.75, -0.1)
    fu, fv = win[2] - shift_u, win[3] - shift_v
    by, bt = ident["brow_y"], ident["brow_t"]
    brow = hair * 0.45 + 0.04          # brows are darker than the hair, so they read on any face
    for side in (-1, 1):
        u_in = side * (0.09 - 0.045 * au["AU4"])
        u_out = side * (0.5 + 0.03 * au["AU2"])
        v_in = by - 0.2 * au["AU1"] + 0.13 * au["AU4"]
        v_out = by - 0.18 * au["AU2"] + 0.03 * au["AU4"] + 0.02
        tt = (fu - u_in) / (u_out - u_in)
        vc = v_in + (v_out - v_in) * tt - ident["brow_arch"] * 4 * tt * (1 - tt)
        thick = bt * (1.1 - 0.5 * np.clip(tt, 0, 1))
        d_brow = np.maximum(np.abs(fv - vc) - thick / 2, np.maximum(-tt, tt - 1) * np.abs(u_out - u_in))
        cv.paint(win, _cover(d_brow, px), brow)
        # vertical frown lines between the brows (AU4)
        fl = np.maximum(np.abs(fu - side * 0.035) - 0.008, np.abs(fv - (by + 0.07)) - 0.06)
        cv.paint(win, _cover(fl, px) * 0.6 * au["AU4"], skin * 0.55)

    # nose: nostrils lift with AU10 (upper lip raiser)
    win = cv.window(-0.3, 0.3, -0.15, 0.45)
    fu, fv = win[2] - shift_u, win[3] - shift_v
    ny = ident["nose_y"] - 0.05 * au["AU10"]
    for side in (-1, 1):
        cv.paint(win, _cover(_ellipse(fu, fv, side * 0.065, ny + 0.04, 0.035, 0.02), px), skin * 0.45)
    bridge = np.maximum(np.abs(fu - 0.03 * np.sign(ident["light"][0] + 1e-3)) - 0.015, np.maximum(fv - ny, -0.05 - fv))
    cv.paint(win, _cover(bridge, px * 3) * 0.35, skin * 0.7)

    # folds from nose to mouth corners deepen with AU10 / AU12
    mw = ident["mouth_w"] * (1 + 0.3 * au["AU12"] - 0.3 * au["AU23"] - 0.12 * au["AU24"] + 0.05 * au["AU25"])
    my = ident["mouth_y"] + 0.04 * au["AU26"]
    corner = 0.16 * au["AU15"] - 0.18 * au["AU12"]          # + is down
    win = cv.window(-0.7, 0.7, 0.1, 0.85)
    fu, fv = win[2] - shift_u, win[3] - shift_v
    fold = 0.1 + 0.7 * np.maximum(au["AU10"], au["AU12"])
    for side in (-1, 1):
        tt = np.clip((fv - (ny + 0.02)) / (my + corner - ny - 0.02), 0, 1)
        uc = side * (0.12 + (mw + 0.05 - 0.12) * tt + 0.05 * np.sin(np.pi * tt))
        d_fold = np.maximum(np.abs(fu - uc) - 0.01, np.maximum(ny + 0.02 - fv, fv - (my + corner)))
        cv.paint(win, _cover(d_fold, px * 1.5) * fold * 0.5, skin * 0.6)

    # mouth: AU25 parts the lips, AU26 drops the jaw, AU10 lifts the upper lip, AU24/AU23 press and thin them
    win = cv.window(-0.65, 0.65, 0.2, 1.05)
    fu, fv = win[2] - shift_u, win[3] - shift_v
    q = np.clip(fu / mw, -1.5, 1.5)
    inside = np.clip(1 - q ** 2, 0, 1)
    mid = my + corner * q ** 2
    gap = (0.05 * au["AU25"] + 0.16 * au["AU26"]) * inside ** 0.7 + 0.05 * au["AU10"] * inside
    thin = 1 - 0.75 * au["AU24"] - 0.4 * au["AU23"]
    lip_up = ident["lip_t"] * thin * inside ** 0.5
    lip_lo = ident["lip_t"] * 1.3 * thin * inside ** 0.5
    top = mid - gap / 2 - 0.035 * au["AU10"] * inside
    bot = mid + gap / 2 + 0.5 * gap
    in_width = np.abs(fu) - mw
    cv.paint(win, _cover(np.maximum(np.maximum(top - fv, fv - bot), in_width), px), rep([0.25, 0.07, 0.08]))
    teeth = np.maximum(np.maximum(top - fv, fv - np.minimum(top + 0.045, bot)), in_width + 0.04)
    cv.paint(win, _cover(teeth, px) * np.clip(gap / 0.04, 0, 1), white)
    d_up = np.maximum(np.maximum(top - lip_up - 0.006 - fv, fv - top), in_width)
    d_lo = np.maximum(np.maximum(bot - fv, fv - (bot + lip_lo + 0.006)), in_width)
    cv.paint(win, _cover(np.minimum(d_up, d_lo), px), lip)
    seam = np.maximum(np.abs(fv - mid) - 0.006, in_width + 0.01)
    cv.paint(win, _cover(seam, px) * (gap < 0.01) * 0.8, lip * 0.45)


def _background(ident: dict, size: int) -> np.ndarray:
    """A room-like backdrop: two colours mixed by a tilted pattern (clutter a model must ignore)."""
    g = (np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1
    x, y = g[None, :], g[:, None]
    a, (f0, f1), (p0, p1) = ident["bg_angle"], ident["bg_freq"], ident["bg_phase"]
    t = np.sin(f0 * np.pi * (np.cos(a) * x + np.sin(a) * y) + p0) * np.sin(f1 * np.pi * (np.cos(a) * y - np.sin(a) * x) + p1)
    mix = (0.5 + 0.5 * t)[..., None]
    return (ident["bg"] * (1 - mix) + ident["bg2"] * mix).astype(np.float32)


def _placement(ident: dict, fr: dict, k: int, c: int, size: int) -> np.ndarray:
    """2x3 affine from canvas pixels to image pixels for frame k (scale, roll, translation)."""
    s = ident["scale"] * (1 + fr["ds"][k])
    cr, sr = np.cos(fr["roll"][k]), np.sin(fr["roll"][k])
    tx, ty = ident["tx"] + fr["dx"][k], ident["ty"] + fr["dy"][k]
    pc, half = 2 * _EXTENT / c, size / 2
    # canvas pixel -> face units: u = (i + 0.5) * pc - E; face units -> image [-1,1]: x = s R (u, v) + t
    lin = half * s * pc * np.array([[cr, -sr], [sr, cr]])
    off = half * (s * np.array([[cr, -sr], [sr, cr]]) @ np.full(2, 0.5 * pc - _EXTENT) + np.array([tx, ty]) + 1) - 0.5
    return np.hstack([lin, off[:, None]]).astype(np.float32)


def render_video(ident: dict, fr: dict, size: int = 112, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draw every frame described by fr (arrays with a leading frame axis) of one person: uint8 (n,H,W,3)."""
    rng = rng or np.random.default_rng(0)
    n = fr["au"].shape[0]
    base_cv = _Canvas(1, size)
    base = _identity_layers(base_cv, ident)
    cv = _Canvas(n, size)
    cv.rgb[:] = base["rgb"]
    cv.alpha[:] = base["alpha"]
    _paint_features(cv, ident, fr)
    if base["front"] is not None:
        rows, cols, a = base["front"]
        cv.paint((rows, cols), a, np.repeat(np.asarray(ident["hair"], np.float32)[None], n, 0))
    bg = _background(ident, size)
    premult = np.concatenate([cv.rgb * cv.alpha[..., None], cv.alpha[..., None]], axis=-1)
    out = np.empty((n, size, size, 3), np.float32)
    for k in range(n):
        warped = cv2.warpAffine(premult[k], _placement(ident, fr, k, cv.c, size), (size, size),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        out[k] = bg * (1 - warped[..., 3:]) + warped[..., :3]
    # camera: exposure, white balance, sensor noise
    out *= (ident["gain"] * ident["tint"]).astype(np.float32)
    out += rng.standard_normal(out.shape, dtype=np.float32) * np.float32(ident["noise"])
    return (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)


def _frames_of(video: dict, keep: np.ndarray) -> dict:
    """The per-frame arrays of one planned video, restricted to the frames in `keep`."""
    return {k: video[k][keep] for k in ("au", "blink", "roll", "yaw", "pitch", "dx", "dy", "ds", "gaze")}


def render_frames(n: int = 64, label: int | None = None, size: int = 112, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Faces held in memory (no files): (uint8 images (n,H,W,3), labels (n,)); handy for tests and demos."""
    cfg = SyntheticConfig(n_frames=max(4 * n, 400), image_size=size, balance="uniform", invalid_fraction=0.0,
                          missing_fraction=0.0, seed=seed)
    plan = plan_videos(cfg)
    rng = np.random.default_rng(seed)
    index = [(v, k) for v, f in enumerate(plan["frames"]) for k in range(len(f["label"]))
             if f["label"][k] >= 0 and (label is None or f["label"][k] == label)]
    index = [index[i] for i in np.sort(rng.choice(len(index), size=min(n, len(index)), replace=False))]
    images, labels = [], []
    for v in sorted({v for v, _ in index}):
        keep = np.array([k for vv, k in index if vv == v])
        video = plan["frames"][v]
        images.append(render_video(video["ident"], _frames_of(video, keep), size, rng))
        labels.append(video["label"][keep])
    return np.concatenate(images), np.concatenate(labels)


# ----------------------------------------------------------------------------------------------------
# Writing in the ABAW layout, cached by configuration
# ----------------------------------------------------------------------------------------------------

def default_cache_dir() -> Path:
    return Path(os.environ.get("FER_KIT_CACHE", Path.home() / ".cache" / "fer_kit"))


def write_abaw(cfg: SyntheticConfig, root: Path, chunk: int = 64, progress: bool = True) -> None:
    """Render every frame of the plan and write the ABAW EXPR layout under root."""
    plan = plan_videos(cfg)
    rng = np.random.default_rng(cfg.seed + 1)
    expr_dir = root / "annotations" / "EXPR_Classification_Challenge"
    for split in ("Train_Set", "Validation_Set"):
        (expr_dir / split).mkdir(parents=True, exist_ok=True)
    header = ",".join(EXPR_CLASSES)
    total = sum(int((~f["missing"]).sum()) for f in plan["frames"])
    bar = tqdm(total=total, desc="rendering synthetic faces", unit="face", disable=not progress, mininterval=10.0)
    for video, frames in zip(plan["videos"], plan["frames"]):
        lines = [header] + [str(int(lab)) for lab in frames["label"]]
        (expr_dir / video["split"] / f"{video['name']}.txt").write_text("\n".join(lines) + "\n")
        folder = root / "cropped_aligned" / video["name"]
        folder.mkdir(parents=True, exist_ok=True)
        present = np.flatnonzero(~frames["missing"])   # missing frames: annotated, but no face image
        for start in range(0, len(present), chunk):
            keep = present[start: start + chunk]
            for k, im in zip(keep, render_video(frames["ident"], _frames_of(frames, keep), cfg.image_size, rng)):
                Image.fromarray(im).save(folder / f"{k + 1:05d}.jpg", quality=92)
            bar.update(len(keep))
    bar.close()


def ensure_synthetic(cfg: SyntheticConfig | None = None, cache_dir: str | Path | None = None,
                     progress: bool = True, **overrides) -> Path:
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
        write_abaw(cfg, tmp, progress=progress)
        (tmp / "config.json").write_text(json.dumps({**asdict(cfg), "version": GENERATOR_VERSION}, indent=1))
        try:
            os.replace(tmp, root)
        except OSError:  # another process finished the same dataset first
            if not (root / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
