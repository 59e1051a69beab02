"""FER2013: the original `fer2013.csv` of 48x48 grayscale pixel strings, or its class-folder image release.

The csv has columns `emotion,pixels,Usage`; emotion is 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad,
5 Surprise, 6 Neutral (remapped to the Aff-Wild2 order); pixels are 2304 space-separated values in row
order; Usage is Training, PublicTest or PrivateTest. The pixels are decoded into `table.images` (gray
repeated into RGB), so no image files are needed. The folder release is `train|test/<angry|...>/*.png`.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..labels import EXPR_CLASSES, FER2013_TO_AFFWILD2
from .folders import drop_first, finish, read_class_folders, warn_first
from .table import DropReport, FrameTable

USAGES = ("Training", "PublicTest", "PrivateTest")
ALIASES = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
SIZE = 48
BAD_PIXELS = f"pixel string not {SIZE * SIZE} values in 0..255"


def _pixels(text: str) -> np.ndarray | None:
    values = text.split()
    if len(values) != SIZE * SIZE:
        return None
    try:
        arr = np.array(values, np.int64)
    except ValueError:
        return None
    if arr.min() < 0 or arr.max() > 255:
        return None
    return arr.astype(np.uint8).reshape(SIZE, SIZE)


def read_fer2013_csv(csv_path: str | Path, usage: str | None = "Training") -> FrameTable:
    """Rows of one Usage (Training, PublicTest, PrivateTest; or train/val/test; None for all rows).

    `images` is (N, 48, 48, 3) uint8; `paths` name the rows (`fer2013.csv:line 2`, line 1 the header).
    """
    csv_path = Path(csv_path)
    usage = ALIASES.get(usage, usage)
    if usage is not None and usage not in USAGES:
        raise ValueError(f"usage must be one of {USAGES} (or {sorted(ALIASES)}, or None for every row); got {usage!r}")
    if not csv_path.is_file():
        raise FileNotFoundError(f"FER2013 csv {csv_path} not found; expected fer2013.csv with columns emotion,pixels,Usage")
    report = DropReport(source=f"FER2013 {csv_path.name} {usage or 'all rows'}")
    first: dict[str, str] = {}
    paths, labels, images = [], [], []
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader, [])]
        if "emotion" not in header or "pixels" not in header:
            raise ValueError(f"{csv_path}, line 1: expected a header with emotion and pixels (and Usage), got {header}")
        if usage is not None and "usage" not in header:
            raise ValueError(f"{csv_path} has no Usage column; pass usage=None to read every row")
        col_e, col_p = header.index("emotion"), header.index("pixels")
        col_u = header.index("usage") if "usage" in header else None
        for row in reader:
            if not row or not "".join(row).strip():
                continue
            where = f"{csv_path}, line {reader.line_num}"
            if len(row) != len(header):
                report.lines += 1
                drop_first(report, first, "malformed line", f"{where} ({len(row)} fields, expected {len(header)})")
                continue
            if usage is not None and row[col_u].strip() != usage:
                continue
            report.lines += 1
            try:
                label = int(row[col_e])
            except ValueError:
                raise ValueError(f"{where}: emotion must be an integer 0..6, got {row[col_e]!r}") from None
            if not 0 <= label <= 6:
                raise ValueError(f"{where}: emotion {label} is outside 0..6 (0 Angry ... 6 Neutral)")
            image = _pixels(row[col_p])
            if image is None:
                drop_first(report, first, BAD_PIXELS, f"{where} ({len(row[col_p].split())} values)")
                continue
            paths.append(Path(f"{csv_path.name}:line {reader.line_num}"))
            labels.append(FER2013_TO_AFFWILD2[label])
            images.append(image)
    warn_first(report, first)
    finish(report, len(paths))
    gray = np.asarray(images, np.uint8).reshape(len(paths), SIZE, SIZE)
    return FrameTable(paths, np.asarray(labels, np.int64), np.asarray([str(p) for p in paths], dtype=str),
                      EXPR_CLASSES, report, images=np.repeat(gray[..., None], 3, axis=-1))


def read_fer2013_folders(root: str | Path, split: str = "train") -> FrameTable:
    """The image release: `<root>/<train|test>/<angry|disgust|fear|happy|neutral|sad|surprise>/*.png|jpg`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test'; got {split!r}")
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"no {split}/ folder in {root}; expected the FER2013 image layout "
                                f"<root>/{split}/<angry|disgust|fear|happy|neutral|sad|surprise>/*.png")
    return read_class_folders(folder, source=f"FER2013 {split} folders")
