"""A training recipe of transforms.py applied to a whole batch at once, on the batch's device.

Why: per image, torchvision's v2 recipes run at 200-2,000 faces/s on one CPU core (paper E's at 224 px
is the slowest), fewer than a GPU trains on, so a GPU run would wait on its loader. Here every image of
the batch still gets its own random draw, but the draws are applied as a few tensor operations on the
whole batch: a flip and the affine steps after it folded into one matrix per image and one warp (a
gather of source pixels on the uint8 faces for nearest neighbour, grid_sample for bilinear), colour
jitter with per-image factors and a per-image order, erasing as one slice per erased face, normalising
into the output.

`BatchAugment(train_transform(recipe, size))` reads the per-image recipe itself, so the two cannot drift
apart: each v2 step becomes its batched twin with the same settings. The per-image recipe stays the
reference; tests/test_batch_augment.py checks that every twin draws its parameters from the same
distribution as torchvision's `make_params`, and that given the same parameters it makes the same image
(exactly for flips, nearest-neighbour warps and erasing) and moves 68 landmarks the same way.

One difference: the per-image path truncates to uint8 after each colour step (torchvision works on
uint8 there) and the batch path computes the four steps in float and rounds once, so jittered faces
differ by a grey level or two on average (the same draw, not a different one). A clip (B, T, 3, H, W)
gets one draw per clip, as ClipDataset's per-image path does.
"""
from __future__ import annotations

import functools
import math
import sys

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from .landmarks import flip_landmarks
from .transforms import IMAGENET_MEAN, IMAGENET_STD, RandomErasingFace, RandomHorizontalFlipFace

Params = dict
CHUNK_PIXELS = 1 << 20     # pixels per pass on a CPU (12 MB as float RGB): fewer, larger passes measured faster here


def _uniform(n: int, lo: float, hi: float) -> torch.Tensor:
    return torch.empty(n).uniform_(lo, hi)


def _randint(n: int, high: torch.Tensor) -> torch.Tensor:
    """One integer in [0, high) per image, `high` (n,) as torch.randint(0, high) draws for one."""
    return (torch.rand(n) * high).floor().long().clamp_max(high.long() - 1)


# -------------------------------------------------------------------------------------------- ops

class Flip:
    """RandomHorizontalFlipFace: mirror with probability p; landmarks x -> W - 1 - x (pixel centres)
    and renamed with IBUG_FLIP, as the per-image flip does."""

    def __init__(self, p: float):
        self.p = p

    def draw(self, n: int, h: int, w: int) -> Params:
        return {"flip": torch.rand(n) < self.p}

    def apply(self, x, pts, p):
        rows = p["flip"].nonzero().squeeze(1).to(x.device)
        if len(rows) == 0:
            return x, pts
        x = _put_rows(x, rows, x[rows].flip(-1) if x.device.type != "cpu" else [x[r].flip(-1) for r in rows.tolist()])
        if pts is not None:
            pts = pts.index_copy(0, rows, _mirror(pts[rows], x.shape[-1]))
        return x, pts

    def matrix(self, p):
        """The flip as a forward affine about the centre (x -> -x), for Geometry to fold into one warp."""
        sign = torch.where(p["flip"], -1.0, 1.0)
        lin = torch.zeros(len(sign), 2, 2)
        lin[:, 0, 0], lin[:, 1, 1] = sign, 1.0
        return lin, torch.zeros(len(sign), 2)


def _mirror(pts, width: int):
    """Mirrored points, renamed into iBUG order when they are the 68 landmarks."""
    if pts.shape[1] == 68:
        return flip_landmarks(pts, width)
    return torch.stack([width - 1 - pts[..., 0], pts[..., 1]], -1)


def _put_rows(x, rows, values):
    """A copy of x with its `rows` replaced by `values` (a batch, or a list of rows): on a CPU a copy and one
    slice per row, as index_copy moves uint8 faces about 8x slower here; elsewhere one index_copy."""
    if x.device.type != "cpu":
        return x.index_copy(0, rows, values if torch.is_tensor(values) else torch.stack(values))
    x = x.clone()
    for r, v in zip(rows.tolist(), values):
        x[r] = v
    return x


def _f32(x) -> dict:
    """Matrices and coordinates stay float32 whatever the images are (uint8 faces are warped as they are)."""
    return {"dtype": torch.float32, "device": x.device}


def _warp(x, pts, lin, shift, mode: str):
    """Warp every image by its own forward affine p_out = lin @ p_in + shift, with p measured in pixels
    from the image centre: torchvision's affine convention, one gather (nearest) or grid_sample (bilinear)
    for the batch.

    x (N, C, H, W); lin (N, 2, 2); shift (N, 2); pts (N, K, 2) pixel-centre landmarks or None.
    """
    n, _, h, w = x.shape
    lin, shift = lin.to(**_f32(x)), shift.to(**_f32(x))
    inv = torch.linalg.inv(lin)                                           # (N, 2, 2)
    t_inv = -(inv @ shift.unsqueeze(-1)).squeeze(-1)                      # (N, 2)
    # the source of each output pixel (pixel-centre coordinates); an affine map of a pixel grid is a row term
    # plus a column term, so no (N, H*W, 3) @ (3, 2) product is needed
    f = torch.float32
    u = torch.arange(w, dtype=f, device=x.device) - (w - 1) / 2          # (W,) output columns from the centre
    v = torch.arange(h, dtype=f, device=x.device) - (h - 1) / 2          # (H,)

    def source(k: int, size: int):
        # the row term (N, 1, W), with the shift, plus the column term (N, H, 1): one pass over the pixels
        row = (inv[:, k, 0, None] * u + (t_inv[:, k, None] + (size - 1) / 2)).unsqueeze(1)
        return torch.add(row, (inv[:, k, 1, None] * v).unsqueeze(2))

    sx, sy = source(0, w), source(1, h)                                   # (N, H, W)
    if mode == "nearest":
        # grid_sample's nearest neighbour (round half to even, zeros outside) as a gather, so uint8 faces need
        # no float copy: the same source pixel for every output pixel. The source gets a border of zeros and
        # every coordinate is clamped onto it, so pixels from outside read a zero with no mask to build.
        c = x.shape[1]
        ix, iy = sx.round_().clamp_(-1, w), sy.round_().clamp_(-1, h)
        index = ix.add_(iy, alpha=w + 2).add_(w + 3).long().view(n, -1)    # (N, H*W) into the padded source
        if _packs(x):
            # a uint8 RGB pixel packed into one int32 (R + 256 G + 65536 B): one gather per pixel, not one per
            # channel, each index read once; the result is the RGB bytes of each int32, an (N, H, W, 3) view.
            # 1.2-1.4x faster warps here (less memory moved), the same pixels.
            packed = x.new_zeros((n, h + 2, w + 2), dtype=torch.int32)
            inner = packed[:, 1:-1, 1:-1]
            torch.add(x[:, 0], x[:, 1].int(), alpha=256, out=inner).add_(x[:, 2].int(), alpha=65536)
            pixels = packed.view(n, -1).gather(1, index)
            x = pixels.view(torch.uint8).view(n, h, w, 4)[..., :3].permute(0, 3, 1, 2)
        else:
            padded = F.pad(x, (1, 1, 1, 1)).reshape(n, c, (h + 2) * (w + 2))   # a copy if x is channels-last
            x = padded.gather(2, index.unsqueeze(1).expand(n, c, h * w)).view(n, c, h, w)
    else:
        grid = torch.stack([(sx + 0.5) / (w / 2) - 1, (sy + 0.5) / (h / 2) - 1], -1)   # grid_sample's units
        x = F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="zeros", align_corners=False)
    if pts is not None:
        centre = pts.new_tensor([(w - 1) / 2, (h - 1) / 2])
        pts = (pts - centre) @ lin.transpose(1, 2) + shift.unsqueeze(1) + centre
    return x, pts


def _packs(x) -> bool:
    """Whether a nearest warp gathers x's pixels as packed int32: uint8 RGB on a CPU of little-endian byte
    order (where an int32's first byte is its lowest), as x86 and ARM are."""
    return x.dtype == torch.uint8 and x.shape[1] == 3 and x.device.type == "cpu" and sys.byteorder == "little"


def _rotation_scale(angle_deg: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(N,) degrees and scales -> (N, 2, 2) forward matrices scale * [[cos, -sin], [sin, cos]], the
    shear-free case of torchvision's _get_inverse_affine_matrix(..., inverted=False)."""
    a = torch.deg2rad(angle_deg)
    c, s = torch.cos(a) * scale, torch.sin(a) * scale
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


class Affine:
    """v2.RandomAffine (shear-free, about the centre), and v2.RandomRotation as an affine whose angle
    has the opposite sign (torchvision's rotate turns the other way round from its affine)."""

    def __init__(self, degrees, translate=None, scale=None, interpolation="nearest", sign: float = 1.0):
        self.degrees, self.translate, self.scale = degrees, translate, scale
        self.mode, self.sign = getattr(interpolation, "value", interpolation), sign

    def draw(self, n, h, w):
        angle = _uniform(n, *self.degrees)
        if self.translate is not None:
            # torchvision rounds each shift to whole pixels (Python's round: halves to even, as torch.round)
            tx = torch.round(_uniform(n, -self.translate[0] * w, self.translate[0] * w))
            ty = torch.round(_uniform(n, -self.translate[1] * h, self.translate[1] * h))
        else:
            tx = ty = torch.zeros(n)
        scale = _uniform(n, *self.scale) if self.scale is not None else torch.ones(n)
        return {"angle": angle, "tx": tx, "ty": ty, "scale": scale}

    def matrix(self, p):
        return _rotation_scale(self.sign * p["angle"], p["scale"]), torch.stack([p["tx"], p["ty"]], -1)

    def apply(self, x, pts, p):
        return _warp(x, pts, *self.matrix(p), self.mode)


class PaddedCrop:
    """v2.RandomCrop(size, padding): pad with zeros, cut size x size at a random corner = shift the image
    by a whole number of pixels with zero fill, which a nearest-neighbour warp does exactly."""

    def __init__(self, size, padding):
        self.size, self.pad = size, padding or [0, 0, 0, 0]              # (left, top, right, bottom)

    def draw(self, n, h, w):
        pl, pt, pr, pb = self.pad
        return {"top": _randint(n, torch.full((n,), h + pt + pb - self.size[0] + 1)),
                "left": _randint(n, torch.full((n,), w + pl + pr - self.size[1] + 1))}

    def apply(self, x, pts, p):
        if x.shape[-2:] != tuple(self.size):
            raise ValueError(f"batched RandomCrop crops to the input's own size; got {tuple(x.shape[-2:])} "
                             f"and size {tuple(self.size)}")
        shift = torch.stack([self.pad[0] - p["left"], self.pad[1] - p["top"]], -1).float()
        lin = torch.eye(2).expand(len(x), 2, 2)
        return _warp(x, pts, lin, shift, "nearest")


def _gray(x):
    r, g, b = x.unbind(1)
    return (0.2989 * r + 0.587 * g + 0.114 * b).unsqueeze(1)              # torchvision's (ITU-R 601-2) weights


def _wrap6(v):
    """v mod 6 for v in [-6, 12) (|hue factor| <= 0.5 keeps hue x 6 there): one wrap each way."""
    return torch.where(v < 0, v + 6.0, torch.where(v >= 6.0, v - 6.0, v))


def _mod6(v):
    """Compiled, _wrap6's two selects run 4x faster than torch.remainder's floor division; eager, the one
    remainder pass beats the selects' four."""
    return _wrap6(v) if torch.compiler.is_compiling() else torch.remainder(v, 6.0)


def _hue(x, factor):
    """Shift hue by `factor` turns per image: torchvision's adjust_hue (RGB -> HSV, shift, back), with
    the sector-free HSV -> RGB form c = V - C clamp(min(k, 4 - k), 0, 1), k = (n + 6 H) mod 6 for
    n = 5, 3, 1 (R, G, B), which needs no per-pixel gather. A hue shift keeps V = max and C = max - min."""
    r, g, b = x.unbind(1)
    maxc, minc = x.amax(1), x.amin(1)
    chroma = maxc - minc
    c = torch.where(chroma == 0, torch.ones_like(chroma), chroma)
    rc, gc, bc = (maxc - r) / c, (maxc - g) / c, (maxc - b) / c
    h6 = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))   # hue x 6
    h6 = _mod6(h6 + 6.0 * factor.view(-1, 1, 1))
    out = []
    for n in (5.0, 3.0, 1.0):
        k = _mod6(h6 + n)
        out.append(maxc - chroma * torch.minimum(k, 4.0 - k).clamp_(0, 1))
    return torch.stack(out, 1)


def _blend(x, f, to_gray, to_mean):
    """One linear colour step per image, x f + g (1 - f) clamped to [0, 1], with g = 0 (brightness), the
    image's mean grey (contrast) or its grey (saturation): torchvision's three blends. f (N,) = 1 leaves
    an image as it is; to_gray and to_mean (N,) are 0/1 weights picking g."""
    gray = _gray(x)                                                       # (N, 1, H, W)
    g = (to_gray.view(-1, 1, 1, 1) * gray + to_mean.view(-1, 1, 1, 1) * gray.mean(dim=(1, 2, 3), keepdim=True))
    fv = f.view(-1, 1, 1, 1)
    return (x * fv + g * (1 - fv)).clamp_(0, 1)


def _jitter(x, order, factors, hue_at: int | None):
    """The four colour steps of images that share their hue step's position `hue_at` (None: no hue step),
    as whole-batch passes with no gather of rows: the three linear steps share one form (`_blend`), so
    the pass at position k applies whichever linear step each image has there. x (N, 3, H, W) in [0, 1]
    or uint8 levels, returned in [0, 1]; order (N, 4) as torch.randperm(4) per image; factors (N, 4),
    NaN = that step is off."""
    x = x if x.is_floating_point() else x.float() / 255
    for position in range(4):
        if position == hue_at:
            x = _hue(x, factors[:, 3])
            continue
        k = order[:, position]
        f = factors.gather(1, k.unsqueeze(1)).squeeze(1)
        on = ~torch.isnan(f)
        x = _blend(x, torch.where(on, f, 1.0), (on & (k == 2)).to(x.dtype), (on & (k == 1)).to(x.dtype))
    return x


def _levels(x):
    """[0, 1] -> uint8, rounded once (torchvision truncates after each colour step). Its own function:
    compiled into _jitter's last loop, the rounding made the whole of it 2.4x slower here."""
    return (x * 255).round_().to(torch.uint8)


class Jitter:
    """v2.ColorJitter: brightness, contrast, saturation and hue factors, applied in a random order that
    is drawn per image (torch.randperm(4) in torchvision)."""

    def __init__(self, brightness, contrast, saturation, hue):
        self.ranges = (brightness, contrast, saturation, hue)
        self.kernel, self.levels = _jitter, _levels  # or their torch.compile twins (BatchAugment(compile=True))

    def draw(self, n, h, w):
        order = torch.argsort(torch.rand(n, 4), dim=1)                   # a uniform permutation per image
        factors = torch.stack([_uniform(n, *r) if r is not None else torch.full((n,), float("nan"))
                               for r in self.ranges], 1)                 # (n, 4); NaN = that step is off
        return {"order": order, "factors": factors}

    def apply(self, x, pts, p):
        """Images are grouped by where their hue step falls (hue is the one step unlike the others), so each
        image takes four passes, not the seven that one pass per position before and after hue would take.
        uint8 faces come back as uint8, so the warp after the jitter gathers a quarter of the bytes."""
        order, factors = p["order"].to(x.device), p["factors"].to(**_f32(x))
        back = self.levels if not x.is_floating_point() else (lambda y: y)
        if self.ranges[3] is None:
            return back(self.kernel(x, order, factors, None)), pts
        hue_at = (order == 3).long().argmax(1).tolist()
        out = torch.empty_like(x)
        for q in sorted(set(hue_at)):
            rows = [i for i, at in enumerate(hue_at) if at == q]
            rows = torch.tensor(rows * 2 if len(rows) == 1 else rows, device=x.device)   # a compiled kernel would
            # compile again for a group of one (torch.compile specialises size 1): that face goes twice
            out[rows] = back(self.kernel(x[rows], order[rows], factors[rows], q))
        return out, pts


class Erase:
    """v2.RandomErasing: with probability p, one rectangle of a random area share and aspect ratio
    (up to ten tries to fit, else none) set to `value`, or to noise for value=None."""

    def __init__(self, p, scale, ratio, value):
        self.p, self.scale, self.log_ratio, self.value = p, scale, (math.log(ratio[0]), math.log(ratio[1])), value

    def draw(self, n, h, w):
        on = torch.rand(n) < self.p
        area = h * w * torch.empty(n, 10).uniform_(*self.scale)
        aspect = torch.exp(torch.empty(n, 10).uniform_(*self.log_ratio))
        eh, ew = torch.round(torch.sqrt(area * aspect)), torch.round(torch.sqrt(area / aspect))
        fits = (eh < h) & (ew < w)
        first = fits.float().argmax(1, keepdim=True)                      # the first try that fits
        eh, ew = eh.gather(1, first).squeeze(1), ew.gather(1, first).squeeze(1)
        on = on & fits.any(1)
        return {"on": on, "h": eh.long(), "w": ew.long(),
                "i": _randint(n, h - eh + 1), "j": _randint(n, w - ew + 1)}

    def apply(self, x, pts, p):
        # one slice per erased face: a rectangle is a view, so only its pixels are written (a mask over the
        # whole batch cost a full pass of every face for the few percent of pixels inside the boxes)
        rows = p["on"].nonzero().squeeze(1).tolist()
        boxes = torch.stack([p[k] for k in ("i", "j", "h", "w")], 1)[rows].tolist()
        value = None if self.value is None else x.new_tensor(self.value).view(-1, 1, 1)
        for k, (i, j, eh, ew) in zip(rows, boxes):
            box = x[k, :, i:i + eh, j:j + ew]
            box.copy_(torch.randn_like(box) if value is None else value.expand_as(box))
        return x, pts


class Apply:
    """v2.RandomApply: the listed steps together with probability p, else none of them."""

    def __init__(self, p, ops):
        self.p, self.ops = p, ops

    def draw(self, n, h, w):
        return {"on": torch.rand(n) < self.p, "inner": [op.draw(n, h, w) for op in self.ops]}

    def matrix(self, p):
        """The steps' folded matrix where they apply, the identity elsewhere (affine steps only)."""
        lin, shift = _fold(self.ops, p["inner"], len(p["on"]))
        return torch.where(p["on"].view(-1, 1, 1), lin, torch.eye(2)), torch.where(p["on"].view(-1, 1), shift, 0.0)

    def apply(self, x, pts, p):
        rows = p["on"].nonzero().squeeze(1).to(x.device)
        if len(rows) == 0:
            return x, pts
        xs, ps = x[rows], None if pts is None else pts[rows]
        for op, q in zip(self.ops, p["inner"]):
            xs, ps = op.apply(xs, ps, _take(q, rows.cpu()))
        x = _put_rows(x, rows, xs)
        return x, pts if pts is None else pts.index_copy(0, rows, ps)


class Geometry:
    """A flip followed by affine steps (each possibly inside a RandomApply), folded into one forward
    matrix per image and one warp of the batch. A flip maps pixel centres onto pixel centres, so the
    folded warp samples exactly the pixels the steps one after another would."""

    def __init__(self, ops):
        self.ops = ops
        modes = {op.mode for op in _affines(ops)}
        self.mode = modes.pop() if len(modes) == 1 else "bilinear"

    def draw(self, n, h, w):
        """Each step's draw ("steps"), and their folded matrices for the whole batch at once (the batch
        is warped in chunks; folding per chunk cost a tenth of the warp in small tensor operations)."""
        steps = [op.draw(n, h, w) for op in self.ops]
        lin, shift = _fold(self.ops, steps, n)
        flipped = torch.zeros(n, dtype=torch.bool)
        for op, q in zip(self.ops, steps):
            if isinstance(op, Flip):
                flipped ^= q["flip"]
        return {"steps": steps, "lin": lin, "shift": shift, "flipped": flipped}

    def apply(self, x, pts, p):
        x, pts = _warp(x, pts, p["lin"], p["shift"], self.mode)
        if pts is not None and pts.shape[1] == 68:
            rows = p["flipped"].nonzero().squeeze(1).to(x.device)            # rename the mirrored points
            pts = pts.index_copy(0, rows, flip_landmarks(pts[rows]))
        return x, pts


def _fold(ops, draws, n: int):
    """The forward matrices (N, 2, 2) and shifts (N, 2) of affine steps one after another: M2 (M1 p)."""
    lin, shift = torch.eye(2).repeat(n, 1, 1), torch.zeros(n, 2)
    for op, q in zip(ops, draws):
        m, t = op.matrix(q)
        lin, shift = m @ lin, (m @ shift.unsqueeze(-1)).squeeze(-1) + t
    return lin, shift


def _affines(ops):
    return [a for op in ops for a in (op.ops if isinstance(op, Apply) else [op]) if isinstance(a, Affine)]


def _foldable(op) -> bool:
    return isinstance(op, (Flip, Affine)) or (isinstance(op, Apply) and all(isinstance(a, Affine) for a in op.ops))


def fold_geometry(ops: list) -> list:
    """Runs of a flip and affine steps become one Geometry (one warp); a flip alone stays a flip."""
    out, run = [], []
    for op in ops + [None]:
        if op is not None and _foldable(op):
            run.append(op)
            continue
        if len(run) > 1 and _affines(run):
            out.append(Geometry(run))
        else:
            out.extend(run)
        run = []
        if op is not None:
            out.append(op)
    return out


class Resize:
    """v2.Resize to a square size (antialiased bilinear), a no-op for frames already at that size."""

    def __init__(self, size):
        self.size = tuple(size)

    def draw(self, n, h, w):
        return {}

    def apply(self, x, pts, p):
        h, w = x.shape[-2:]
        if (h, w) == self.size:
            return x, pts
        out = F.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        if pts is not None:   # pixel edges scale: (x + 0.5) * W'/W - 0.5
            k = pts.new_tensor([self.size[1] / w, self.size[0] / h])
            pts = (pts + 0.5) * k - 0.5
        return out, pts


def _needs_float(op) -> bool:
    """Resizing, erasing and bilinear warps compute in float; flips and nearest-neighbour warps move uint8
    pixels as they are, and colour jitter takes and gives uint8 faces (computing in float inside), so
    the warp after it gathers a quarter of the bytes."""
    if isinstance(op, Apply):
        return any(map(_needs_float, op.ops))
    if isinstance(op, (Affine, Geometry)):
        return op.mode != "nearest"
    return not isinstance(op, (Flip, PaddedCrop, Jitter))


def _take(params, rows):
    """The rows of every tensor in a (nested) parameter dict."""
    if isinstance(params, dict):
        return {k: _take(v, rows) for k, v in params.items()}
    if isinstance(params, list):
        return [_take(v, rows) for v in params]
    return params[rows]


def _repeat(params, times: int):
    """Each image's draw repeated for the `times` frames of its clip."""
    if isinstance(params, dict):
        return {k: _repeat(v, times) for k, v in params.items()}
    if isinstance(params, list):
        return [_repeat(v, times) for v in params]
    return params.repeat_interleave(times, dim=0)


# --------------------------------------------------------------------------------------- a recipe

def _flat(ops: list) -> list:
    """Every step, with those inside RandomApply and a folded Geometry."""
    return [a for op in ops for a in ([op] + (_flat(op.ops) if isinstance(op, (Apply, Geometry)) else []))]


@functools.cache
def _compiled(fn):
    """fn through torch.compile, once per process; shapes stay dynamic, as chunks and groups vary in size.
    Only the colour steps gain: some forty elementwise passes per face fused into a few loops (hue 4x
    faster here, the whole jitter about 2x); the warp's gather and the normalising ran slower compiled."""
    return torch.compile(fn, dynamic=True)


def batched_op(t: v2.Transform):
    """The batched twin of one v2 step of a recipe (None for ToDtype and Normalize: the pipeline's own)."""
    if isinstance(t, (v2.ToDtype, v2.Normalize)):
        return None
    if isinstance(t, RandomHorizontalFlipFace):
        return Flip(t.p)
    if isinstance(t, v2.RandomApply):
        return Apply(t.p, [op for op in map(batched_op, t.transforms) if op is not None])
    zero_fill = getattr(t, "fill", 0) in (0, 0.0)
    if isinstance(t, v2.RandomAffine) and t.shear is None and t.center is None and zero_fill:
        return Affine(t.degrees, t.translate, t.scale, t.interpolation)
    if isinstance(t, v2.RandomRotation) and not t.expand and t.center is None and zero_fill:
        return Affine(t.degrees, interpolation=t.interpolation, sign=-1.0)
    if isinstance(t, v2.RandomCrop) and t.padding_mode == "constant" and not t.pad_if_needed and zero_fill:
        return PaddedCrop(t.size, t.padding)
    if isinstance(t, v2.ColorJitter):
        return Jitter(t.brightness, t.contrast, t.saturation, t.hue)
    if isinstance(t, RandomErasingFace):
        return Erase(t.p, t.scale, t.ratio, t.value)
    if isinstance(t, v2.Resize) and t.size is not None and len(t.size) == 2 and t.size[0] == t.size[1]:
        return Resize(t.size)
    raise ValueError(f"{type(t).__name__} has no batched version in fer_kit.data.batch_augment (recipe "
                     "'paper_a' picks among whole pipelines per image); train it with augment_on='image'")


class BatchAugment:
    """A per-image recipe (a v2.Compose from `train_transform`) as one call on a uint8 batch.

    `aug(x, landmarks)`: x (B, 3, H, W) or clips (B, T, 3, H, W), uint8 or float in [0, 1], on any
    device; landmarks (B, K, 2) pixel-centre or None. Returns the normalised float batch and the moved
    landmarks. Random draws come from torch's global CPU generator, so a seeded run repeats on any device.

    `channels_last`: a (B, 3, H, W) batch is written in channels-last memory, as the models take it,
    instead of being copied there afterwards. `reuse_output`: on a CPU every call writes into the same
    output tensor, so the batch the previous call returned is overwritten, which suits a training loop
    (its last step is finished when it asks for the next batch). A fresh float batch of 128 faces at
    224 px is 77 MB of new pages each call, whose faults take longer than augmenting it (benchmarks/
    batch_augment.py); a GPU's caching allocator reuses its memory without being asked. `compile`: the
    colour jitter through torch.compile (`_compiled`), 2x faster on a CPU once compiled.
    """

    def __init__(self, compose: v2.Compose, channels_last: bool = False, reuse_output: bool = False,
                 compile: bool = False):
        self.channels_last, self.reuse_output, self._kept = channels_last, reuse_output, None
        steps = compose.transforms if isinstance(compose, v2.Compose) else [compose]
        normalize = [t for t in steps if isinstance(t, v2.Normalize)]
        cut = steps.index(normalize[0]) if normalize else len(steps)
        self.before = fold_geometry([op for op in map(batched_op, steps[:cut]) if op is not None])
        self.after = fold_geometry([op for op in map(batched_op, steps[cut:]) if op is not None])
        if compile:
            for op in _flat(self.before + self.after):
                if isinstance(op, Jitter):
                    op.kernel, op.levels = _compiled(_jitter), _compiled(_levels)
        mean, std = (normalize[0].mean, normalize[0].std) if normalize else (IMAGENET_MEAN, IMAGENET_STD)
        self.mean, self.std = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor, landmarks: torch.Tensor | None = None):
        if x.ndim not in (4, 5) or x.shape[-3] != 3:
            raise ValueError(f"BatchAugment takes (B, 3, H, W) images or (B, T, 3, H, W) clips; got {tuple(x.shape)}")
        if landmarks is not None and landmarks.shape[:-2] != x.shape[:-3]:
            raise ValueError(f"landmarks {tuple(landmarks.shape)} do not match the images {tuple(x.shape)}: "
                             "expected one (K, 2) set per image")
        b, clip = x.shape[0], x.shape[1] if x.ndim == 5 else 1
        frames = x.reshape(-1, *x.shape[-3:])
        pts = None if landmarks is None else landmarks.reshape(-1, *landmarks.shape[-2:]).float()
        # every draw first, for the whole batch (so chunking below cannot change them); a clip's frames share one
        draws, (h, w) = [], frames.shape[-2:]
        for op in self.before + self.after:
            h, w = op.size if isinstance(op, Resize) else (h, w)
            draws.append(_repeat(op.draw(b, h, w), clip))
        out, moved, ops = None, [], self.before + self.after
        step = self._chunk(frames)
        for start in range(0, len(frames), step):
            rows = slice(start, start + step)
            xc, unit = frames[rows], frames.is_floating_point()      # unit: values in [0, 1], not uint8 levels
            pc = None if pts is None else pts[rows]
            for i, op in enumerate(ops + [None]):
                if i == len(self.before):                            # normalised straight into the output
                    if out is None:
                        out = self._output((len(frames), *xc.shape[1:]), xc.device, x.ndim == 4)
                    xc = self._normalise(xc, unit, out[rows])
                if op is None:
                    break
                if isinstance(op, Resize) and tuple(xc.shape[-2:]) == op.size:
                    continue                                         # frames already at the network's size
                if _needs_float(op) and not xc.is_floating_point():
                    xc, unit = xc.float().div_(255), True             # colour steps work on [0, 1] floats
                xc, pc = op.apply(xc, pc, _take(draws[i], rows))
            if xc.data_ptr() != out[rows].data_ptr():                # a step after normalising made a new tensor
                out[rows] = xc
            moved.append(pc)
        x = out.reshape(*x.shape[:-3], *out.shape[-3:])
        return x, None if pts is None else torch.cat(moved).reshape(landmarks.shape)

    def _output(self, shape: tuple, device: torch.device, images: bool) -> torch.Tensor:
        """The float batch to write into: the kept one when reusing on a CPU and it has room (a shorter
        last batch takes its first rows), else a new one."""
        fmt = torch.channels_last if self.channels_last and images else torch.contiguous_format
        kept, reuse = self._kept, self.reuse_output and device.type == "cpu"
        if (reuse and kept is not None and kept.shape[1:] == shape[1:] and len(kept) >= shape[0]
                and kept.is_contiguous(memory_format=fmt)):
            return kept[:shape[0]]
        out = torch.empty(shape, dtype=torch.float32, device=device, memory_format=fmt)
        self._kept = out if reuse else None
        return out

    def _normalise(self, x, unit: bool, into: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std of [0, 1] values (or of uint8 levels, scaled on the way) written into `into`."""
        scale, offset = (1 / (self.std if unit else 255 * self.std)).to(into), -(self.mean / self.std).to(into)
        n, c, h, w = into.shape
        cl = into.is_contiguous(memory_format=torch.channels_last)
        if into.device.type != "cpu" or not (cl or into.is_contiguous()) or (x.is_contiguous() and not cl):
            return torch.addcmul(offset, x.float(), scale, out=into)
        # a change of layout on a CPU (a channels-last batch; the packed warp's RGB bytes): one addcmul would
        # run its innermost loop over three channels, so each channel is copied into place and one pass then
        # runs along whole rows, (R, G, B) factors repeated along a channels-last row. The same values, 2.8x
        # faster into a channels-last batch here.
        for k in range(c):
            into[:, k].copy_(x[:, k])
        if cl:
            rows = into.permute(0, 2, 3, 1).view(n * h, w * c)                # (N * H, W * 3), a view of `into`
            scale, offset = scale.view(c).repeat(w), offset.view(c).repeat(w)
        else:
            rows, scale, offset = into.view(n, c, h * w), scale.view(1, c, 1), offset.view(1, c, 1)
        torch.addcmul(offset, rows, scale, out=rows)
        return into

    @staticmethod
    def _chunk(frames: torch.Tensor) -> int:
        """Images per pass. On a CPU, a pass over a few MB stays in cache and reuses the allocator's
        memory (a whole batch of 224 px faces is ~80 MB per float copy, paid in page faults each step);
        a GPU takes the batch at once."""
        if frames.device.type != "cpu":
            return len(frames)
        return max(1, CHUNK_PIXELS // (frames.shape[-1] * frames.shape[-2]))
