"""A torch Dataset over a FrameTable, with an optional in-memory store of decoded frames.

Decoding a JPEG costs more than a ResNet-18 forward pass of a 112 px face on a laptop CPU, so for the
synthetic default (and any set that fits in memory) every frame is decoded once and kept as uint8.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from tqdm import tqdm

from .abaw import FrameTable


def load_image(path: str | Path, size: int | None = None) -> torch.Tensor:
    """Decode one face as uint8 (3, H, W), resized to size x size if given; errors name the file."""
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != (size, size):
                im = im.resize((size, size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except FileNotFoundError:
        raise FileNotFoundError(f"image not found: {path}") from None
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"cannot decode image {path}: {err}") from err
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


class FrameDataset(Dataset):
    """Faces and labels of a FrameTable; `preload` decodes everything up front (with a progress bar)."""

    def __init__(self, table: FrameTable, image_size: int = 112, transform: Callable | None = None,
                 preload: bool = True, progress: bool = True):
        self.table, self.image_size, self.transform = table, image_size, transform
        self.labels = torch.as_tensor(table.labels, dtype=torch.long)
        self.images: torch.Tensor | None = None
        if preload:
            images = torch.empty((len(table), 3, image_size, image_size), dtype=torch.uint8)
            for i, p in enumerate(tqdm(table.paths, desc=f"decoding {table.report.source}", unit="img",
                                       disable=not progress, mininterval=10.0)):
                images[i] = load_image(p, image_size)
            self.images = images

    def __len__(self) -> int:
        return len(self.table)

    def image(self, i: int) -> torch.Tensor:
        return self.images[i] if self.images is not None else load_image(self.table.paths[i], self.image_size)

    def __getitem__(self, i: int):
        x = self.image(i)
        if self.transform is not None:
            x = self.transform(x)
        return x, self.labels[i]
