"""ExpW (Expression in-the-Wild): `label/label.lst` with one line per face and the images in `image/origin/`.

A line is `image_name face_id top left right bottom confidence expression`, the expression being
0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral (remapped to the Aff-Wild2 order).
Images are whole photos, often with several faces: the face is `boxes` (x0=left, y0=top, x1=right,
y1=bottom), so crop before training, and faces of one photo share a group (`videos` = image name).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..labels import EXPR_CLASSES, EXPW_TO_AFFWILD2
from .folders import drop_first, finish, warn_first
from .table import DropReport, FrameTable

LABEL_FILE = Path("label") / "label.lst"
IMAGE_DIRS = (Path("image") / "origin", Path("origin"))


def read_expw(root: str | Path, min_confidence: float | None = None) -> FrameTable:
    """Read every ExpW face with Aff-Wild2 labels and its box; `min_confidence` drops weaker detections."""
    root = Path(root)
    label_file = root / LABEL_FILE
    if not label_file.is_file():
        raise FileNotFoundError(f"no {LABEL_FILE.as_posix()} under {root}; expected the ExpW layout "
                                f"<root>/{LABEL_FILE.as_posix()} and <root>/image/origin/<image_name>")
    image_dir = next((root / d for d in IMAGE_DIRS if (root / d).is_dir()), None)
    if image_dir is None:
        raise FileNotFoundError(f"no image/origin/ folder under {root} (extract image/origin.7z there)")
    report = DropReport(source="ExpW")
    first: dict[str, str] = {}
    exists: dict[str, bool] = {}
    paths, labels, videos, boxes = [], [], [], []
    for k, line in enumerate(label_file.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label_file}, line {k}"
        report.lines += 1
        if len(fields) != 8:
            drop_first(report, first, "malformed line", f"{where}: {line.strip()!r} ({len(fields)} fields, expected 8)")
            continue
        try:
            top, left, right, bottom, confidence = (float(v) for v in fields[2:7])
        except ValueError:
            raise ValueError(f"{where}: box and confidence must be numbers, got {' '.join(fields[2:7])!r}") from None
        try:
            label = int(fields[7])
        except ValueError:
            raise ValueError(f"{where}: expression must be an integer 0..6, got {fields[7]!r}") from None
        if not 0 <= label <= 6:
            raise ValueError(f"{where}: expression {label} is outside 0..6 (0 angry ... 6 neutral)")
        if min_confidence is not None and confidence < min_confidence:
            report.drop(f"face confidence below {min_confidence}")
            continue
        name = fields[0]
        if name not in exists:
            exists[name] = (image_dir / name).is_file()
        if not exists[name]:
            report.drop("without an image")
            continue
        paths.append(image_dir / name)
        labels.append(EXPW_TO_AFFWILD2[label])
        videos.append(name)
        boxes.append((left, top, right, bottom))
    warn_first(report, first)
    finish(report, len(paths))
    return FrameTable(paths, np.asarray(labels, np.int64), np.asarray(videos, dtype=str), EXPR_CLASSES, report,
                      boxes=np.asarray(boxes, np.float32).reshape(len(paths), 4))
