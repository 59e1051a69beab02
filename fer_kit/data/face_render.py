"""Drawing procedural faces whose features are moved by the 12 ABAW action units.

A video is drawn on a face-aligned canvas (face units: the face spans about -1..1, v points down). The
identity layers (hair, ears, neck, shaded face) are drawn once per video; the AU-driven features, the
occluders and the landmarks are computed per frame; one affine warp per frame places the face in the
image (pose, scale, roll). Shapes are soft masks from signed distances, so edges are anti-aliased.

The 68 landmarks (iBUG order) come from the same parameters that draw the features, mapped through the
same per-frame affine, so they sit where the drawn eye corners, brows and lips are.

Styles shift the rendering domain without changing the geometry (paper E's lesson: a model trained on
one look of synthetic faces meets another look at test time):
  "photo"    shaded skin, textured room background, sensor noise (the default)
  "cartoon"  flat colours, dark outlines, posterised, no noise, plain background
  "lowlight" dark, warm and noisy, slightly blurred, as from a webcam in a dim room
"""
from __future__ import annotations

import cv2
import numpy as np

from ..labels import AU_NAMES

STYLES = ("photo", "cartoon", "lowlight")

_EXTENT = 1.9          # the canvas covers face units -1.9..1.9 (the neck runs off the image)
_RES = 0.8             # canvas pixels per image pixel at face scale 1 (faces are drawn at scale 0.8-0.95)
_F32 = np.float32


def _cover(d, px):
    """Anti-aliased coverage of the region d < 0 (d in face units, px = one canvas pixel in face units)."""
    return np.clip(0.5 - d / px, 0.0, 1.0)


def _ellipse(u, v, cx, cy, rx, ry):
    """Approximate signed distance to an ellipse, in face units."""
    return (np.sqrt(((u - cx) / rx) ** 2 + ((v - cy) / ry) ** 2) - 1) * np.minimum(rx, ry)


def _capsule(u, v, u0, v0, u1, v1, r):
    """Signed distance to a segment of radius r (fingers, glasses' bridge)."""
    du, dv = u1 - u0, v1 - v0
    t = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv + 1e-9), 0, 1)
    return np.sqrt((u - u0 - t * du) ** 2 + (v - v0 - t * dv) ** 2) - r


class _Canvas:
    """RGB + alpha for a stack of n frames on the face-aligned grid, painted window by window (only the
    pixels a feature can touch are computed). Painting is the "over" operator on premultiplied colour,
    so the canvas is premultiplied throughout and warps blend the silhouette's edge correctly."""

    def __init__(self, n: int, size: int):
        self.c = int(np.ceil(_EXTENT * size * _RES / 8) * 8)
        self.px = 2 * _EXTENT / self.c
        self.g = ((np.arange(self.c, dtype=_F32) + 0.5) * self.px - _EXTENT)
        self.rgb = np.zeros((n, self.c, self.c, 3), _F32)
        self.alpha = np.zeros((n, self.c, self.c), _F32)

    def window(self, u0, u1, v0, v1):
        """Row/column slices of a face-unit box, and the (1,h,1)/(1,1,w) coordinates inside it."""
        idx = lambda a, b: slice(*np.clip(np.searchsorted(self.g, [a, b]), 0, self.c))  # noqa: E731
        rows, cols = idx(v0, v1), idx(u0, u1)
        return rows, cols, self.g[None, None, cols], self.g[None, rows, None]

    def paint(self, win, a, color, alpha: bool = False):
        """Composite colour (1,3) with coverage a (n|1,h,w) inside win; `alpha` extends the silhouette
        (only layers that can reach past the face need it). Work is cropped to where a > 0."""
        a = np.asarray(a, _F32)
        touched = a.max(axis=0) > 0
        rows, cols = np.flatnonzero(touched.any(axis=1)), np.flatnonzero(touched.any(axis=0))
        if not len(rows):
            return
        r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        a = a[:, r0:r1, c0:c1]
        rs = slice(win[0].start + r0, win[0].start + r1)
        cs = slice(win[1].start + c0, win[1].start + c1)
        dst = self.rgb[:, rs, cs]                    # a view: painted in place
        dst += a[..., None] * (np.asarray(color, _F32)[:, None, None, :] - dst)
        if alpha:
            dsta = self.alpha[:, rs, cs]
            dsta += a * (1 - dsta)


def _rows(c):
    """(1, 3) colour row for paint."""
    return np.asarray(c, _F32).reshape(1, 3)


# ----------------------------------------------------------------------------------------------------
# Geometry shared by painting and landmarks
# ----------------------------------------------------------------------------------------------------

def _jaw_width(ident, v):
    fw, jaw = ident["face_w"], ident["jaw"]
    return fw * np.where(v > 0.3, jaw + (1 - jaw) * (1 - np.clip((v - 0.3) / 0.7, 0, 1)), 1.0)


def _geometry(ident: dict, au: np.ndarray, fr: dict) -> dict:
    """Per-frame feature parameters (arrays of shape (n,)) from the AU intensities (n, 12)."""
    A = {name: au[:, i].astype(_F32) for i, name in enumerate(AU_NAMES)}
    g = {"A": A}
    g["shift_u"], g["shift_v"] = 0.22 * fr["yaw"].astype(_F32), 0.12 * fr["pitch"].astype(_F32)
    g["drop"] = 0.12 * A["AU26"] + 0.04 * A["AU25"]                        # jaw drop lengthens the face
    g["low_h"] = ident["face_h"] * (1 + g["drop"])
    g["open"] = np.clip(1 - 0.5 * A["AU7"] - 0.25 * A["AU6"] + 0.25 * A["AU2"] - 0.9 * fr["blink"], 0.08, 1.3)
    g["lower_cut"] = 1 - 0.55 * np.maximum(A["AU6"], A["AU7"])
    by = ident["brow_y"]
    g["brow_u_in"], g["brow_u_out"] = 0.09 - 0.045 * A["AU4"], 0.5 + 0.03 * A["AU2"]
    g["brow_v_in"] = by - 0.2 * A["AU1"] + 0.13 * A["AU4"]
    g["brow_v_out"] = by - 0.18 * A["AU2"] + 0.03 * A["AU4"] + 0.02
    g["ny"] = ident["nose_y"] - 0.05 * A["AU10"]
    g["mw"] = ident["mouth_w"] * (1 + 0.3 * A["AU12"] - 0.3 * A["AU23"] - 0.12 * A["AU24"] + 0.05 * A["AU25"])
    g["my"] = ident["mouth_y"] + 0.04 * A["AU26"]
    g["corner"] = 0.16 * A["AU15"] - 0.18 * A["AU12"]                      # + is down
    g["gap"] = 0.05 * A["AU25"] + 0.16 * A["AU26"]
    g["thin"] = 1 - 0.75 * A["AU24"] - 0.4 * A["AU23"]
    return g


def _mouth_lines(ident, g, q, inside):
    """Vertical positions of the mouth's centre line, inner edges and outer lip edges at q = u / mw."""
    A = g["A"]
    mid = g["my"] + g["corner"] * q ** 2
    gap = g["gap"] * inside ** 0.7 + 0.05 * A["AU10"] * inside
    top = mid - gap / 2 - 0.035 * A["AU10"] * inside
    bot = mid + gap / 2 + 0.5 * gap
    lip_up = ident["lip_t"] * g["thin"] * inside ** 0.5
    lip_lo = ident["lip_t"] * 1.3 * g["thin"] * inside ** 0.5
    return mid, gap, top, bot, top - lip_up - 0.006, bot + lip_lo + 0.006


def landmarks_face_units(ident: dict, g: dict) -> np.ndarray:
    """The 68 iBUG landmarks (n, 68, 2) in face units. iBUG numbers the subject's right side first,
    which is the image's left: jaw 0-16 from the left ear round the chin, brows 17-26, nose 27-35,
    eyes 36-47 (outer corner of the image-left eye first), mouth 48-67."""
    n = len(g["ny"])
    pts = np.zeros((n, 68, 2), _F32)
    # jaw: the face outline from ear to ear, via the chin (no pose shift: the outline is the head)
    phi = np.linspace(-0.12, np.pi + 0.12, 17, dtype=_F32)[None]
    ry = np.where(np.sin(phi) > 0, g["low_h"][:, None], ident["face_h"])
    v = ry * np.sin(phi)
    pts[:, 0:17, 0], pts[:, 0:17, 1] = -np.cos(phi) * _jaw_width(ident, v), v
    su, sv = g["shift_u"][:, None], g["shift_v"][:, None]
    # brows: image-left brow from its outer end (17) inwards (21), then the other from inner (22) out
    tt = np.linspace(0, 1, 5, dtype=_F32)[None]
    for side, idx in ((-1, slice(17, 22)), (1, slice(22, 27))):
        order = tt[:, ::-1] if side < 0 else tt
        u_in, u_out = side * g["brow_u_in"][:, None], side * g["brow_u_out"][:, None]
        vc = (g["brow_v_in"][:, None] + (g["brow_v_out"] - g["brow_v_in"])[:, None] * order
              - ident["brow_arch"] * 4 * order * (1 - order))
        pts[:, idx, 0], pts[:, idx, 1] = u_in + (u_out - u_in) * order + su, vc + sv
    # nose: bridge 27-30 from between the eyes to the tip, nostrils 31-35 left to right
    ny = g["ny"][:, None]
    pts[:, 27:31, 0] = su
    pts[:, 27:31, 1] = ident["eye_y"] + (ny - ident["eye_y"]) * np.linspace(0, 1, 4, dtype=_F32)[None] + sv
    pts[:, 31:36, 0] = np.array([-0.1, -0.05, 0, 0.05, 0.1], _F32)[None] + su
    pts[:, 31:36, 1] = ny + np.array([0.04, 0.055, 0.06, 0.055, 0.04], _F32)[None] + sv
    # eyes: corners, two points on the upper lid, two on the lower lid
    ew, eh, ex, ey = ident["eye_w"], ident["eye_h"], ident["eye_x"], ident["eye_y"]
    op, cut = g["open"][:, None], g["lower_cut"][:, None]
    for side, start in ((-1, 36), (1, 42)):
        cx = side * ex
        # both eyes run clockwise from their image-left corner: outer (36) for one, inner (42) for the other
        du = np.array([-1, -1 / 3, 1 / 3, 1, 1 / 3, -1 / 3], _F32)
        up = np.array([0, -1, -1, 0, 1, 1], _F32)
        h = eh * op * np.sqrt(np.clip(1 - du ** 2, 0, 1))[None]
        lower = np.minimum(h, eh * op * cut)
        pts[:, start:start + 6, 0] = cx + ew * du[None] + su
        pts[:, start:start + 6, 1] = ey + np.where(up[None] < 0, -h, np.where(up[None] > 0, lower, 0)) + sv
    # mouth: outer contour 48-59 and inner contour 60-67, clockwise from the image-left corner
    mw = g["mw"][:, None]
    q_out = np.array([-1, -2 / 3, -1 / 3, 0, 1 / 3, 2 / 3, 1, 2 / 3, 1 / 3, 0, -1 / 3, -2 / 3], _F32)[None]
    q_in = np.array([-1, -1 / 2, 0, 1 / 2, 1, 1 / 2, 0, -1 / 2], _F32)[None]
    gk = {k: (v[:, None] if isinstance(v, np.ndarray) else v) for k, v in g.items() if k != "A"}
    gk["A"] = {k: v[:, None] for k, v in g["A"].items()}
    for q, start, upper_n, outer in ((q_out, 48, 7, True), (q_in, 60, 5, False)):
        mid, gap, top, bot, top_out, bot_out = _mouth_lines(ident, gk, q, np.clip(1 - q ** 2, 0, 1))
        is_upper = np.arange(q.shape[1])[None] < upper_n
        if outer:
            v = np.where(is_upper, top_out, bot_out)
        else:
            v = np.where(is_upper, top, bot)
        corners = np.abs(q) == 1
        v = np.where(corners, mid, v)
        pts[:, start:start + q.shape[1], 0] = q * mw + su
        pts[:, start:start + q.shape[1], 1] = v + sv
    return pts


# ----------------------------------------------------------------------------------------------------
# Painting
# ----------------------------------------------------------------------------------------------------

def _identity_layers(cv: _Canvas, ident: dict) -> dict:
    """Hair, neck, ears and the shaded face of one person: drawn once, copied into every frame."""
    win = cv.window(-_EXTENT, _EXTENT, -_EXTENT, _EXTENT)
    u, v = win[2], win[3]
    px = cv.px
    fw, fh, style = ident["face_w"], ident["face_h"], ident["hair_style"]
    hair, skin = _rows(ident["hair"]), _rows(ident["skin"])
    if style != 3:  # hair behind the head: short (0), long (1), bun (2), shaved (3)
        hb = _ellipse(u, v, 0, -0.12, fw + 0.14, fh + 0.05)
        if style == 1:
            hb = np.minimum(hb, np.maximum(_ellipse(u, v, 0, 0.25, fw + 0.2, 1.15), -v - 0.2))
        else:
            hb = np.maximum(hb, v - 0.05)
        if style == 2:
            hb = np.minimum(hb, _ellipse(u, v, 0, -1.12, 0.35, 0.25))
        cv.paint(win, _cover(hb, px), hair, alpha=True)
    cv.paint(win, _cover(np.maximum(np.abs(u) - 0.38 * fw / 0.72, 0.6 - v), px), skin * 0.78, alpha=True)
    ears = np.minimum(_ellipse(u, v, -fw, -0.02, 0.1, 0.17), _ellipse(u, v, fw, -0.02, 0.1, 0.17))
    cv.paint(win, _cover(ears, px), skin * 0.9, alpha=True)
    _paint_face(cv, win, ident, np.float32(fh))
    front = None
    if style in (0, 1):   # a fringe with a side parting, painted again over every frame's features
        hl = ident["hairline"] + 0.1 * (u / fw) ** 2 + ident["part"] * u
        a = _cover(np.maximum(v - hl, _ellipse(u, v, 0, 0, fw, fh) - 0.02), px)
        rows = np.flatnonzero(a.max(axis=2)[0] > 0)
        if len(rows):
            front = (slice(rows[0], rows[-1] + 1), win[1], a[:, rows[0]:rows[-1] + 1])
    return dict(rgb=cv.rgb[0].copy(), alpha=cv.alpha[0].copy(), front=front)


def _paint_face(cv: _Canvas, win, ident: dict, low_h):
    """The face oval (lower half stretched by the jaw drop); shaded by a directional light unless flat."""
    u, v = win[2], win[3]
    fw, fh = ident["face_w"], ident["face_h"]
    low_h = np.asarray(low_h, _F32).reshape(-1, 1, 1)
    face_d = _ellipse(u, v, 0, 0, _jaw_width(ident, v), np.where(v > 0, low_h, fh))
    skin = _rows(ident["skin"])
    if ident["flat"]:
        cv.paint(win, _cover(face_d, cv.px), skin, alpha=True)
        outline = np.abs(face_d) - 0.012
        cv.paint(win, _cover(np.maximum(outline, -v - 0.2), cv.px), skin * 0.35, alpha=True)
        return
    nz = np.sqrt(1 - np.clip((u / fw) ** 2 + (v / fh) ** 2, 0, 1))
    light = ident["light"][0] * u / fw + ident["light"][1] * v / fh
    shade = np.clip(0.82 + 0.25 * nz + 0.25 * light * (1 - 0.5 * nz), 0.45, 1.25)
    a = _cover(face_d, cv.px)
    dst, dsta = cv.rgb[:, win[0], win[1]], cv.alpha[:, win[0], win[1]]
    dst += a[..., None] * (skin[:, None, None, :] * shade[..., None] - dst)
    dsta += a * (1 - dsta)


def _paint_features(cv: _Canvas, ident: dict, g: dict, fr: dict) -> None:
    """Everything the 12 AUs move, for a stack of frames of one video."""
    A = {k: v[:, None, None] for k, v in g["A"].items()}
    px = cv.px
    skin, hair, lip = _rows(ident["skin"]), _rows(ident["hair"]), _rows(ident["lip"])
    su, sv = g["shift_u"][:, None, None], g["shift_v"][:, None, None]
    outline = ident["flat"]

    if float(g["drop"].max()) > 0.005:     # the jaw drop (AU26) and parted lips (AU25) lengthen the face
        _paint_face(cv, cv.window(-1.0, 1.0, 0.2, _EXTENT), ident, g["low_h"])

    # cheeks: raised and flushed by AU6
    win = cv.window(-0.75, 0.75, -0.1, 0.5)
    fu, fv = win[2] - su, win[3] - sv
    for side in (-1, 1):
        ck = _ellipse(fu, fv, side * 0.42, 0.24 - 0.08 * A["AU6"], 0.15, 0.11)
        cv.paint(win, _cover(ck, px * 6) * (0.05 + 0.35 * A["AU6"]), _rows([0.85, 0.35, 0.35]))

    # eyes: lids narrowed by AU7 (lid tightener) and AU6 (cheek push), opened a little by AU2
    win = cv.window(-0.7, 0.7, -0.35, 0.1)
    fu, fv = win[2] - su, win[3] - sv
    ew, eh, ex, ey = ident["eye_w"], ident["eye_h"], ident["eye_x"], ident["eye_y"]
    op, cut = g["open"][:, None, None], g["lower_cut"][:, None, None]
    gu, gv = fr["gaze"][:, 0, None, None].astype(_F32), fr["gaze"][:, 1, None, None].astype(_F32)
    white = _rows([0.93, 0.92, 0.9]) * np.float32(ident["gain"]) ** 0.5
    lid = hair * 0.5 + skin * 0.2
    for side in (-1, 1):
        cx = side * ex
        a_eye = _cover(np.maximum(_ellipse(fu, fv, cx, ey, ew, eh * op), fv - (ey + eh * op * cut)), px)
        cv.paint(win, a_eye, white)
        cv.paint(win, _cover(_ellipse(fu, fv, cx + gu, ey + gv, 0.055, 0.055), px) * a_eye, _rows(ident["iris"]))
        cv.paint(win, _cover(_ellipse(fu, fv, cx + gu, ey + gv, 0.024, 0.024), px) * a_eye, _rows([0, 0, 0]))
        ring = np.abs(_ellipse(fu, fv, cx, ey, ew * 1.05, eh * op * 1.1)) - (0.02 if outline else 0.012)
        cv.paint(win, _cover(np.maximum(ring, fv - ey), px), lid)

    # brows: inner ends raised by AU1, outer by AU2; AU4 pulls them down and together
    win = cv.window(-0.75, 0.75, -0.75, -0.1)
    fu, fv = win[2] - su, win[3] - sv
    bt = ident["brow_t"]
    brow = hair * 0.45 + 0.04          # darker than the hair, so they read on any face
    for side in (-1, 1):
        u_in, u_out = side * g["brow_u_in"][:, None, None], side * g["brow_u_out"][:, None, None]
        v_in, v_out = g["brow_v_in"][:, None, None], g["brow_v_out"][:, None, None]
        tt = (fu - u_in) / (u_out - u_in)
        vc = v_in + (v_out - v_in) * tt - ident["brow_arch"] * 4 * tt * (1 - tt)
        thick = bt * (1.1 - 0.5 * np.clip(tt, 0, 1))
        d_brow = np.maximum(np.abs(fv - vc) - thick / 2, np.maximum(-tt, tt - 1) * np.abs(u_out - u_in))
        cv.paint(win, _cover(d_brow, px), brow)
        fl = np.maximum(np.abs(fu - side * 0.035) - 0.008, np.abs(fv - (ident["brow_y"] + 0.07)) - 0.06)
        cv.paint(win, _cover(fl, px) * 0.6 * A["AU4"], skin * 0.55)      # frown lines (AU4)

    # nose: nostrils lift with AU10 (upper lip raiser)
    win = cv.window(-0.3, 0.3, -0.15, 0.45)
    fu, fv = win[2] - su, win[3] - sv
    ny = g["ny"][:, None, None]
    for side in (-1, 1):
        cv.paint(win, _cover(_ellipse(fu, fv, side * 0.065, ny + 0.04, 0.035, 0.02), px), skin * 0.45)
    bridge = np.maximum(np.abs(fu - 0.03 * np.sign(ident["light"][0] + 1e-3)) - 0.015, np.maximum(fv - ny, -0.05 - fv))
    cv.paint(win, _cover(bridge, px * 3) * 0.35, skin * 0.7)

    # folds from nose to mouth corners deepen with AU10 / AU12
    mw, my, corner = g["mw"][:, None, None], g["my"][:, None, None], g["corner"][:, None, None]
    win = cv.window(-0.7, 0.7, 0.1, 0.85)
    fu, fv = win[2] - su, win[3] - sv
    fold = 0.1 + 0.7 * np.maximum(A["AU10"], A["AU12"])
    for side in (-1, 1):
        tt = np.clip((fv - (ny + 0.02)) / (my + corner - ny - 0.02), 0, 1)
        uc = side * (0.12 + (mw + 0.05 - 0.12) * tt + 0.05 * np.sin(np.pi * tt))
        d_fold = np.maximum(np.abs(fu - uc) - 0.01, np.maximum(ny + 0.02 - fv, fv - (my + corner)))
        cv.paint(win, _cover(d_fold, px * 1.5) * fold * 0.5, skin * 0.6)

    # mouth: AU25 parts the lips, AU26 drops the jaw, AU10 lifts the upper lip, AU24/AU23 press and thin them
    win = cv.window(-0.65, 0.65, 0.2, 1.05)
    fu, fv = win[2] - su, win[3] - sv
    q = np.clip(fu / mw, -1.5, 1.5)
    inside = np.clip(1 - q ** 2, 0, 1)
    gm = {k: (v[:, None, None] if isinstance(v, np.ndarray) else v) for k, v in g.items() if k != "A"}
    gm["A"] = A
    mid, gap, top, bot, top_out, bot_out = _mouth_lines(ident, gm, q, inside)
    in_width = np.abs(fu) - mw
    cv.paint(win, _cover(np.maximum(np.maximum(top - fv, fv - bot), in_width), px), _rows([0.25, 0.07, 0.08]))
    teeth = np.maximum(np.maximum(top - fv, fv - np.minimum(top + 0.045, bot)), in_width + 0.04)
    cv.paint(win, _cover(teeth, px) * np.clip(gap / 0.04, 0, 1), white)
    d_up = np.maximum(np.maximum(top_out - fv, fv - top), in_width)
    d_lo = np.maximum(np.maximum(bot - fv, fv - bot_out), in_width)
    cv.paint(win, _cover(np.minimum(d_up, d_lo), px), lip)
    seam = np.maximum(np.abs(fv - mid) - 0.006, in_width + 0.01)
    cv.paint(win, _cover(seam, px) * (gap < 0.01) * 0.8, lip * 0.45)


def _paint_occluders(cv: _Canvas, ident: dict, fr: dict, g: dict) -> None:
    """Glasses, a lock of hair across the face, and a hand that comes and goes: things that hide cues."""
    px = cv.px
    occ = ident["occluders"]
    su, sv = g["shift_u"][:, None, None], g["shift_v"][:, None, None]
    if "glasses" in occ:
        win = cv.window(-0.75, 0.75, -0.4, 0.15)
        fu, fv = win[2] - su, win[3] - sv
        ex, ey, ew = ident["eye_x"], ident["eye_y"], ident["eye_w"]
        rx, ry = ew * 1.45, ident["eye_h"] * 2.4
        frame = _rows(ident["glasses_color"])
        for side in (-1, 1):
            lens = _ellipse(fu, fv, side * ex, ey + 0.01, rx, ry)
            cv.paint(win, _cover(lens, px) * ident["lens_alpha"], _rows([0.05, 0.05, 0.07]))
            cv.paint(win, _cover(np.abs(lens) - 0.014, px), frame)
        cv.paint(win, _cover(_capsule(fu, fv, -ex + rx, ey - 0.02, ex - rx, ey - 0.02, 0.012), px), frame)
    if "hair_lock" in occ:
        side, reach = ident["lock_side"], ident["lock_reach"]
        win = cv.window(-0.8, 0.8, -0.9, 0.3)
        u, v = win[2], win[3]
        curve = side * (0.15 + 0.35 * np.clip((v + 0.7) / 1.0, 0, 1) ** 1.5)
        d = np.maximum(np.abs(u - curve) - 0.07 * (1 - 0.6 * np.clip((v + 0.7) / (reach + 0.7), 0, 1)),
                       np.maximum(-0.75 - v, v - reach))
        cv.paint(win, _cover(d, px), _rows(ident["hair"]) * 1.08)
    if "hand" in occ:
        present = fr["hand"].astype(_F32)[:, None, None]
        if float(present.max()) > 0:
            hu, hv, ang = ident["hand_u"], ident["hand_v"], ident["hand_angle"]
            win = cv.window(hu - 0.75, hu + 0.75, hv - 0.6, min(hv + 0.9, _EXTENT))
            u, v = win[2], win[3]
            palm = _ellipse(u, v, hu, hv + 0.35, 0.28, 0.3)
            ca, sa = np.cos(ang), np.sin(ang)
            for k, off in enumerate((-0.18, -0.06, 0.06, 0.18)):
                length = 0.42 - 0.06 * abs(k - 1.5)
                u0, v0 = hu + off, hv + 0.2
                palm = np.minimum(palm, _capsule(u, v, u0, v0, u0 + length * sa, v0 - length * ca, 0.055))
            hand_skin = _rows(ident["skin"]) * _F32(0.97)
            cv.paint(win, _cover(palm, px) * present, hand_skin, alpha=True)
            cv.paint(win, _cover(np.abs(palm) - 0.006, px) * present * 0.5, hand_skin * 0.6)


# Regions a patch can cover (paper C's local occlusions), as face-unit boxes (u0, u1, v0, v1) around the
# drawn features: one eye with its brow, the other, the mouth, the nose and cheeks.
PATCH_REGIONS = {"left eye": (-0.62, -0.02, -0.48, 0.02), "right eye": (0.02, 0.62, -0.48, 0.02),
                 "mouth": (-0.45, 0.45, 0.32, 0.82), "nose": (-0.3, 0.3, -0.02, 0.42)}


def _paint_hiders(cv: _Canvas, ident: dict, fr: dict, g: dict) -> None:
    """What hides part or all of an expression on chosen frames: a hand over the whole face (paper B's
    hidden frames; `fr["hidden"] == 1`) and a flat patch over one region (paper C; `fr["patch"]`)."""
    px = cv.px
    su, sv = g["shift_u"][:, None, None], g["shift_v"][:, None, None]
    cover = (fr["hidden"] == 1).astype(_F32)[:, None, None]
    if float(cover.max()) > 0:
        win = cv.window(-1.0, 1.0, -0.75, 1.1)
        u, v = win[2] - su, win[3] - sv
        palm = _ellipse(u, v, 0.0, 0.2, 0.8, 0.8)           # the palm over cheeks, mouth and chin
        for off in (-0.45, -0.15, 0.15, 0.45):               # fingers over the eyes and brows
            palm = np.minimum(palm, _capsule(u, v, off, 0.0, off * 1.1, -0.68, 0.14))
        hand = _rows(ident["skin"]) * _rows([0.88, 0.8, 0.76])    # the back of a hand, a shade apart
        cv.paint(win, _cover(palm, px) * cover, hand, alpha=True)
        cv.paint(win, _cover(np.abs(palm) - 0.012, px) * cover * 0.8, hand * 0.55)
    for r, (u0, u1, v0, v1) in enumerate(PATCH_REGIONS.values()):
        on = (fr["patch"] == r).astype(_F32)[:, None, None]
        if float(on.max()) > 0:
            win = cv.window(u0 - 0.3, u1 + 0.3, v0 - 0.2, v1 + 0.2)
            u, v = win[2] - su, win[3] - sv
            box = np.maximum(np.maximum(u0 - u, u - u1), np.maximum(v0 - v, v - v1))
            grey = fr["patch_grey"][:, None, None, None].astype(_F32)
            # premultiplied paint with a per-frame colour: paint() takes one colour, so paint black with the
            # coverage and add the grey level where the patch sits
            a = _cover(box, px) * on
            cv.paint(win, a, _rows([0.0, 0.0, 0.0]))
            rs, cs = win[0], win[1]
            cv.rgb[:, rs, cs] += a[..., None] * grey


def _background(ident: dict, size: int) -> np.ndarray:
    """A room-like backdrop: two colours mixed by a tilted pattern (clutter a model must ignore)."""
    if ident["flat"]:
        return np.broadcast_to(ident["bg"].astype(_F32), (size, size, 3))
    g = (np.arange(size, dtype=_F32) + 0.5) / size * 2 - 1
    x, y = g[None, :], g[:, None]
    a, (f0, f1), (p0, p1) = ident["bg_angle"], ident["bg_freq"], ident["bg_phase"]
    t = np.sin(f0 * np.pi * (np.cos(a) * x + np.sin(a) * y) + p0) * np.sin(f1 * np.pi * (np.cos(a) * y - np.sin(a) * x) + p1)
    mix = (0.5 + 0.5 * t)[..., None]
    return (ident["bg"] * (1 - mix) + ident["bg2"] * mix).astype(_F32)


def placement(ident: dict, fr: dict, k: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(2x2 linear, 2 offset) mapping face units to image pixels for frame k: x = L u + o."""
    s = ident["scale"] * (1 + fr["ds"][k])
    cr, sr = np.cos(fr["roll"][k]), np.sin(fr["roll"][k])
    half = size / 2
    lin = half * s * np.array([[cr, -sr], [sr, cr]])
    off = half * (np.array([ident["tx"] + fr["dx"][k], ident["ty"] + fr["dy"][k]]) + 1) - 0.5  # pixel centres
    return lin, off


def render_video(ident: dict, fr: dict, size: int = 112, rng: np.random.Generator | None = None,
                 with_alpha: bool = False):
    """Draw every frame described by fr (arrays with a leading frame axis) of one person.

    Returns uint8 images (n, H, W, 3) and landmarks (n, 68, 2) in image pixels (and the face's
    coverage (n, H, W) when with_alpha, for tests)."""
    rng = rng or np.random.default_rng(0)
    n = fr["au"].shape[0]
    g = _geometry(ident, fr["au"], fr)
    base = _identity_layers(_Canvas(1, size), ident)
    cv = _Canvas(n, size)
    cv.rgb[:] = base["rgb"]
    cv.alpha[:] = base["alpha"]
    _paint_features(cv, ident, g, fr)
    if base["front"] is not None:
        rows, cols, a = base["front"]
        cv.paint((rows, cols), a, _rows(ident["hair"]))
    if ident["occluders"]:
        _paint_occluders(cv, ident, fr, g)
    if "hidden" in fr:
        _paint_hiders(cv, ident, fr, g)
    bg = _background(ident, size)
    pts_face = landmarks_face_units(ident, g)
    out = np.empty((n, size, size, 3), _F32)
    alpha = np.empty((n, size, size), _F32) if with_alpha else None
    landmarks = np.empty((n, 68, 2), _F32)
    pc = 2 * _EXTENT / cv.c
    for k in range(n):
        lin, off = placement(ident, fr, k, size)
        # canvas pixel i has face coordinate (i + 0.5) * pc - E
        m = np.hstack([lin * pc, (lin @ np.full(2, 0.5 * pc - _EXTENT) + off)[:, None]]).astype(_F32)
        warp = lambda img: cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR,  # noqa: E731
                                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        a = warp(cv.alpha[k])
        np.add(bg * (1 - a[..., None]), warp(cv.rgb[k]), out=out[k])       # premultiplied over the room
        if with_alpha:
            alpha[k] = a
        landmarks[k] = pts_face[k] @ lin.T.astype(_F32) + off.astype(_F32)
    _camera(out, ident, rng, fr.get("hidden"))
    images = (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
    return (images, landmarks, alpha) if with_alpha else (images, landmarks)


def _camera(out: np.ndarray, ident: dict, rng: np.random.Generator, hidden: np.ndarray | None = None) -> None:
    """Exposure, white balance, a soft shadow across the frame, blur, posterising and sensor noise;
    frames marked hidden == 2 are smeared by a fast head turn: a motion blur a tenth of the image long,
    then a blur wide enough to erase the brows', lids' and lips' shapes in every direction."""
    size = out.shape[1]
    g = np.linspace(-1, 1, size, dtype=_F32)
    ramp = ident["shadow"][0] * g[None, :, None] + ident["shadow"][1] * g[:, None, None]
    out *= (ident["gain"] * ident["tint"]).astype(_F32) * (1 + ramp)
    if ident["blur"] > 0:
        for k in range(len(out)):
            cv2.GaussianBlur(out[k], (0, 0), ident["blur"], dst=out[k])
    if hidden is not None and (hidden == 2).any():
        length = max(3, int(round(size * 0.1)) | 1)
        kernel = np.zeros((length, length), _F32)
        kernel[length // 2] = 1 / length                     # horizontal smear
        for k in np.flatnonzero(hidden == 2):
            smeared = cv2.filter2D(out[k], -1, kernel)
            out[k] = cv2.GaussianBlur(smeared, (0, 0), size / 12)
    if ident["posterise"]:
        np.multiply(np.round(out * ident["posterise"]), 1 / ident["posterise"], out=out)
    if ident["noise"] > 0:   # uniform sensor noise with the given std: 4x cheaper to draw than Gaussian
        noise = rng.random(out.shape, dtype=_F32)
        noise -= _F32(0.5)
        noise *= _F32(ident["noise"] * 12 ** 0.5)
        out += noise
