"""A torch Dataset over a FrameTable, reading its decoded frames from memory, a disk cache or the files.

Decoding a JPEG costs more than a ResNet-18 forward pass of a 112 px face on a laptop CPU, so every
frame is decoded once and kept as uint8: in memory where the split fits (the synthetic default), in a
disk cache where it does not (Aff-Wild2), see `fer_kit.data.cache`.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..labels import VA_INVALID
from ..losses import denormalize_landmarks, normalize_landmarks
from .cache import MEMORY_GB, DiskFrames, decode_to_memory, open_disk_cache, resolve_cache
from .table import FrameTable
from .transforms import apply_with_landmarks, crop_face

MIN_SIDE = 8     # px; a smaller image (a 1x1 placeholder) holds no face to learn from


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Decode one face as uint8 (3, H, W), resized to size x size if given; errors name the file."""
    try:
        with Image.open(path) as im:
            if min(im.size) < MIN_SIDE:
                raise ValueError(f"image {path} is {im.size[0]}x{im.size[1]} px, too small to hold a face "
                                 f"(at least {MIN_SIDE} px a side); remove it or its annotation line")
            im = _to_rgb(im)
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot decode image {path}: {err}") from err
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _to_rgb(im: Image.Image) -> Image.Image:
    """Grayscale and RGBA (alpha dropped) as PIL converts them; 16- and 32-bit grayscale scaled to 8 bits,
    which PIL's convert would instead clip to white."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    return im.convert("RGB")


TARGETS = ("expr", "mtl", "landmarks")


def decode_frame(table: FrameTable, i: int, size: int, margin: float = 0.2) -> torch.Tensor:
    """Frame i of a table as the network sees it before augmentation: uint8 (3, size, size)."""
    box = None if table.boxes is None else table.boxes[i]
    if table.images is None and box is not None and np.isfinite(box).all():
        # whole photos with a face box (AffectNet, ExpW): crop the face as ABAW's crops are made
        return crop_face(load_image(table.paths[i]), box, margin=margin, size=size)
    if table.images is None:
        return load_image(table.paths[i], size)
    x = torch.from_numpy(np.ascontiguousarray(table.images[i])).permute(2, 0, 1)   # pixels held in memory
    if x.shape[-1] != size or x.shape[-2] != size:
        x = torch.nn.functional.interpolate(x[None].float(), size=(size,) * 2, mode="bilinear",
                                            antialias=True, align_corners=False)[0].round().clamp(0, 255).byte()
    return x


TARGETS = ("expr", "mtl", "landmarks")


class FrameDataset(Dataset):
    """Faces and labels of a FrameTable. Frames with a face box (table.boxes) are cropped around it with
    `box_margin`.

    cache: where the decoded frames live (`fer_kit.data.cache`): "memory" (decoded up front, with a
    progress bar), "disk" (a cache file built once and reused while its source files are unchanged),
    "none" (each frame decoded when asked for, e.g. in DataLoader workers), or "auto" (memory when the
    split fits `memory_gb`, else disk).

    targets="expr" yields (image, class index); targets="mtl" yields (image, {"expr", "va", "au"}) with
    ABAW's invalid markers (EXPR -1, VA -5, AU -1), so a frame whose VA is invalid still trains EXPR
    and the multi-task loss masks each task on its own. targets="landmarks" (paper E) yields (image,
    {"expr", "landmarks"}): the 68 points in normalised coordinates (the image spans [-1, 1], see
    `fer_kit.losses.normalize_landmarks`), moved by every geometric step of the transform with the image,
    NaN where a frame has none (the loss then skips it)."""

    def __init__(self, table: FrameTable, image_size: int = 112, transform: Callable | None = None,
                 cache: str = "memory", progress: bool = True, box_margin: float = 0.2, targets: str = "expr",
                 cache_dir: str | None = None, memory_gb: float = MEMORY_GB, workers: int | None = None):
        self.table, self.image_size, self.transform, self.box_margin = table, image_size, transform, box_margin
        if targets not in TARGETS:
            raise ValueError(f"targets must be one of {TARGETS}; got {targets!r}")
        self.targets = targets
        self.labels = torch.as_tensor(table.labels, dtype=torch.long)
        if targets == "mtl":
            missing = [name for name in ("va", "au") if getattr(table, name) is None]
            if missing:
                raise ValueError(f"{table.report.source}: multi-task targets need VA and AU labels; this table "
                                 f"has no {' and no '.join(missing)}")
            self.va = torch.as_tensor(np.nan_to_num(table.va, nan=VA_INVALID), dtype=torch.float32)   # (N, 2)
            self.au = torch.as_tensor(table.au, dtype=torch.float32)                                  # (N, 12)
        if targets == "landmarks":
            if table.landmarks is None:
                raise ValueError(f"{table.report.source}: landmark targets need a table with landmarks "
                                 "(fer_kit.data.abaw.read_landmarks); this one has none")
            self.landmarks = self._normalised_landmarks(table)                                     # (N, 68, 2)
        self.cache = resolve_cache(cache, len(table), image_size, memory_gb)
        self.images: torch.Tensor | DiskFrames | None = None        # None: decoded when asked for
        if self.cache == "memory":
            self.images = decode_to_memory(table, image_size, box_margin, decode_frame, workers, progress)
        elif self.cache == "disk":
            self.images = open_disk_cache(table, image_size, box_margin, decode_frame, cache_dir, workers, progress)

    def __len__(self) -> int:
        return len(self.table)

    def _decode(self, i: int) -> torch.Tensor:
        return decode_frame(self.table, i, self.image_size, self.box_margin)

    def subset(self, index) -> "FrameDataset":
        """The same dataset narrowed to some frames (repeats allowed): its decoded frames are indexed,
        never decoded again."""
        index = np.asarray(index, np.int64)
        out = copy.copy(self)
        out.table = self.table.subset(index)
        at = torch.from_numpy(index)
        for name in ("labels", "va", "au", "landmarks"):
            if hasattr(self, name):
                setattr(out, name, getattr(self, name)[at])
        if isinstance(self.images, DiskFrames):
            out.images = self.images.take(index)
        elif self.images is not None:
            out.images = self.images[at]
        return out

    @staticmethod
    def _normalised_landmarks(table: FrameTable) -> torch.Tensor:
        """Pixel landmarks of each image file -> [-1, 1] coordinates, which do not change when the image
        is resized to the network's size (the file's size is read from its header, not decoded)."""
        out = torch.full((len(table), *table.landmarks.shape[1:]), float("nan"))
        for i, pts in enumerate(table.landmarks):
            if not np.isfinite(pts).all():
                continue
            if table.images is not None:
                hw = table.images.shape[1:3]
            else:
                try:
                    with Image.open(table.paths[i]) as im:
                        hw = im.size[::-1]
                except FileNotFoundError:
                    raise FileNotFoundError(f"image not found: {table.paths[i]}") from None
            out[i] = normalize_landmarks(torch.from_numpy(pts), hw)
        return out

    def _with_landmarks(self, x: torch.Tensor, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        pts = self.landmarks[i]
        if self.transform is None:
            return x, pts
        if not torch.isfinite(pts).all():          # nothing to move: transform the image alone
            return self.transform(x), pts
        x, moved = apply_with_landmarks(self.transform, x, denormalize_landmarks(pts, x.shape[-2:]))
        return x, normalize_landmarks(moved, x.shape[-2:])

    def image(self, i: int) -> torch.Tensor:
        return self.images[i] if self.images is not None else self._decode(i)

    def __getitem__(self, i: int):
        x = self.image(i)
        if self.targets == "landmarks":
            x, pts = self._with_landmarks(x, i)
            return x, {"expr": self.labels[i], "landmarks": pts}
        if self.transform is not None:
            x = self.transform(x)
        if self.targets == "mtl":
            return x, {"expr": self.labels[i], "va": self.va[i], "au": self.au[i]}
        return x, self.labels[i]
