"""RAF-DB basic: `EmoLabel/list_patition_label.txt` (sic) and `Image/aligned/` (or `Image/original/`).

Each line is `train_00001.jpg 5` or `test_0001.jpg 7`; the prefix is the split. Labels are 1-indexed:
1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral (paper_code_notes §0), and are
remapped to the Aff-Wild2 order. The aligned faces are named `train_00001_aligned.jpg`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..labels import EXPR_CLASSES, RAFDB_TO_AFFWILD2
from .folders import drop_first, finish, warn_first
from .table import DropReport, FrameTable

LABEL_FILE = Path("EmoLabel") / "list_patition_label.txt"
SPLITS = ("train", "test")


def find_rafdb_root(root: str | Path) -> Path:
    root = Path(root)
    for cand in (root, root / "basic"):
        if (cand / LABEL_FILE).is_file():
            return cand
    raise FileNotFoundError(f"no {LABEL_FILE.as_posix()} under {root} or {root / 'basic'}; expected the RAF-DB basic "
                            f"layout <root>/{LABEL_FILE.as_posix()} and <root>/Image/aligned/train_00001_aligned.jpg")


def read_rafdb(root: str | Path, split: str = "train", aligned: bool = True) -> FrameTable:
    """Read one RAF-DB basic split with Aff-Wild2 labels; `aligned=False` uses `Image/original/` instead."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    root = find_rafdb_root(root)
    label_file = root / LABEL_FILE
    image_dir = root / "Image" / ("aligned" if aligned else "original")
    report = DropReport(source=f"RAF-DB {split}{'' if aligned else ' (original)'}")
    first: dict[str, str] = {}
    paths, labels, videos = [], [], []
    for k, line in enumerate(label_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label_file}, line {k}"
        prefix = fields[0].split("_")[0]
        if prefix not in SPLITS:
            drop_first(report, first, "named neither train_* nor test_*", f"{where}: {line.strip()!r}")
            continue
        if prefix != split:
            continue
        report.lines += 1
        if len(fields) != 2:
            drop_first(report, first, "malformed line", f"{where}: {line.strip()!r} (expected '<name>.jpg <label 1-7>')")
            continue
        try:
            label = int(fields[1])
        except ValueError:
            raise ValueError(f"{where}: label must be an integer 1..7, got {fields[1]!r}") from None
        if not 1 <= label <= 7:
            raise ValueError(f"{where}: label {label} is outside 1..7 (1 Surprise ... 7 Neutral)")
        stem = Path(fields[0]).stem
        img = image_dir / (f"{stem}_aligned.jpg" if aligned else fields[0])
        if not img.is_file():
            report.drop("without an image")
            continue
        paths.append(img)
        labels.append(RAFDB_TO_AFFWILD2[label - 1])
        videos.append(stem)
    warn_first(report, first)
    finish(report, len(paths))
    return FrameTable(paths, np.asarray(labels, np.int64), np.asarray(videos, dtype=str), EXPR_CLASSES, report)
