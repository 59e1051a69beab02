"""The 68-point iBUG landmark scheme: what a horizontal mirror does to its indices, and eye centres.

iBUG (300-W, dlib, the kit's synthetic faces) numbers the subject's right side first, which is the
image's left: jaw 0-16 from the image-left ear round the chin, brows 17-21 and 22-26, nose bridge
27-30, nostrils 31-35, eyes 36-41 and 42-47 (clockwise from the image-left corner), outer lips 48-59
and inner lips 60-67 (clockwise from the image-left corner). Mirroring an image moves every point,
and it also swaps which *name* each point has: after a flip the old left eye corner is now on the right,
so the array must be re-indexed or index 36 stops meaning "image-left outer eye corner".

Coordinates in the kit are pixel-centre based: (x, y) = (column, row), and pixel (i, j) has its centre
at x = j, y = i (the convention of OpenCV and of fer_kit.data.synthetic).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["IBUG_FLIP", "LEFT_EYE", "RIGHT_EYE", "eye_centres", "flip_landmarks"]

LEFT_EYE = slice(36, 42)    # the image-left eye (the subject's right)
RIGHT_EYE = slice(42, 48)


def _mirror_permutation() -> np.ndarray:
    perm = np.arange(68)

    def swap(a, b):
        for i, j in zip(a, b):
            perm[i], perm[j] = j, i

    swap(range(0, 17), range(16, -1, -1))            # jaw reverses
    swap(range(17, 22), range(26, 21, -1))           # brows: 17..21 <-> 26..22
    swap(range(31, 36), range(35, 30, -1))           # nostrils reverse; bridge 27..30 stays
    # eyes run clockwise from their image-left corner, so the mirror of the outer corner 36 is 45, of
    # the upper lid 37, 38 is 44, 43, of the inner corner 39 is 42, of the lower lid 40, 41 is 47, 46
    swap((36, 37, 38, 39, 40, 41), (45, 44, 43, 42, 47, 46))
    swap(range(48, 55), range(54, 47, -1))           # outer upper lip 48..54 reverses
    swap(range(55, 60), range(59, 54, -1))           # outer lower lip 55..59 reverses
    swap(range(60, 65), range(64, 59, -1))           # inner upper lip 60..64 reverses
    swap(range(65, 68), range(67, 64, -1))           # inner lower lip 65..67 reverses
    return perm


IBUG_FLIP: np.ndarray = _mirror_permutation()
"""`mirrored[IBUG_FLIP]` renames mirrored points back into iBUG order (an involution)."""


def flip_landmarks(points, width: float | None = None):
    """Mirror (..., 68, 2) landmarks and re-index them with IBUG_FLIP.

    With `width` the x coordinates are mirrored too, in pixel-centre coordinates (x -> width - 1 - x);
    without it only the indices are permuted (for points already mirrored by some other code).
    Works on numpy arrays and tensors, returning the same kind.
    """
    out = points[..., IBUG_FLIP, :]
    if width is not None:
        out = out.clone() if isinstance(out, torch.Tensor) else out.copy()
        out[..., 0] = (width - 1) - out[..., 0]
    return out


def eye_centres(landmarks):
    """Centres of the two eyes, (..., 2, 2): [image-left eye, image-right eye], each (x, y).

    The mean of each eye's six contour points, which is what alignment to a canonical eye pair uses.
    """
    if isinstance(landmarks, torch.Tensor):
        return torch.stack([landmarks[..., LEFT_EYE, :].mean(-2), landmarks[..., RIGHT_EYE, :].mean(-2)], -2)
    landmarks = np.asarray(landmarks)
    return np.stack([landmarks[..., LEFT_EYE, :].mean(-2), landmarks[..., RIGHT_EYE, :].mean(-2)], -2)
