"""AffectNet (manually annotated part): `training.csv` / `validation.csv` plus `Manually_Annotated_Images/`.

Each csv row is `subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,
valence,arousal` (landmarks `x;y;x;y;...`, 68 points). Expressions are AffectNet-8 (Neutral, Happy, Sad,
Surprise, Fear, Disgust, Anger, Contempt; paper_code_notes §0) plus 8 None, 9 Uncertain and 10 No-Face,
which carry no expression and are dropped. Labels are remapped to the Aff-Wild2 order; Contempt has no
Aff-Wild2 class. Valence/arousal are kept (-2 marks them invalid). validation.csv ships without a header.
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..labels import AFFECTNET_TO_AFFWILD2, EXPR_CLASSES
from .folders import CONTEMPT, drop_first, finish, warn_first
from .table import DropReport, FrameTable

COLUMNS = ("subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "facial_landmarks",
           "expression", "valence", "arousal")
CSV_NAMES = {"train": "training.csv", "val": "validation.csv"}
NO_EXPRESSION = {8: "labelled None", 9: "labelled Uncertain", 10: "labelled No-Face"}
VA_INVALID = -2.0
OTHER = EXPR_CLASSES.index("Other")


def find_affectnet_csv(root: Path, split: str) -> Path:
    if split not in CSV_NAMES:
        raise ValueError(f"split must be one of {sorted(CSV_NAMES)}; got {split!r}")
    for cand in (root / CSV_NAMES[split], root / "Manually_Annotated_file_lists" / CSV_NAMES[split]):
        if cand.is_file():
            return cand
    raise FileNotFoundError(f"no {CSV_NAMES[split]} in {root} or {root / 'Manually_Annotated_file_lists'}; expected "
                            f"the AffectNet layout <root>/Manually_Annotated_file_lists/{CSV_NAMES[split]}")


def _number(text: str, where: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"{where}: {what} must be a number, got {text!r}") from None


def _landmarks(text: str, where: str) -> np.ndarray:
    """68 (x, y) points from `x;y;x;y;...`; NaN when the field is empty or has another count."""
    values = [v for v in text.split(";") if v.strip()]
    if len(values) != 136:
        return np.full((68, 2), np.nan, np.float32)
    return np.array([_number(v, where, "a landmark coordinate") for v in values], np.float32).reshape(68, 2)


def read_affectnet(csv_path: str | Path, image_root: str | Path | None = None, split: str | None = None,
                   contempt_as_other: bool = False, landmarks: bool = False) -> FrameTable:
    """Read an AffectNet csv into Aff-Wild2 labels, with `va` and face `boxes` (and `landmarks` if asked).

    csv_path: the csv itself, or the AffectNet root with `split` "train"/"val" choosing the file.
    image_root: the folder `subDirectory_filePath` is relative to (default: `Manually_Annotated_Images/`
    next to the csv or one level up). Contempt is dropped, or with `contempt_as_other=True` labelled Other.
    """
    csv_path = Path(csv_path)
    if csv_path.is_dir():
        csv_path = find_affectnet_csv(csv_path, split or "train")
    elif not csv_path.is_file():
        raise FileNotFoundError(f"AffectNet csv {csv_path} not found; expected training.csv or validation.csv "
                                f"with columns {','.join(COLUMNS)}")
    if image_root is None:
        cands = [csv_path.parent / "Manually_Annotated_Images", csv_path.parent.parent / "Manually_Annotated_Images"]
        image_root = next((c for c in cands if c.is_dir()), csv_path.parent)
    image_root = Path(image_root)
    if not image_root.is_dir():
        raise FileNotFoundError(f"AffectNet image folder {image_root} not found; expected the folder that "
                                f"subDirectory_filePath (e.g. 689/<hash>.jpg) is relative to")
    report = DropReport(source=f"AffectNet {csv_path.name}")
    first: dict[str, str] = {}
    paths, names, labels, vas, boxes, marks = [], [], [], [], [], []
    with open(csv_path, newline="") as f:
        reader = csv.reader(f)
        for row in reader:
            where = f"{csv_path}, line {reader.line_num}"
            if not row or not "".join(row).strip():
                continue
            if reader.line_num == 1 and row[0].strip() == COLUMNS[0]:
                continue                                               # header (training.csv has one)
            report.lines += 1
            if len(row) != len(COLUMNS):
                drop_first(report, first, "malformed line", f"{where} ({len(row)} fields, expected {len(COLUMNS)})")
                continue
            text = row[6].strip()
            try:
                expr = int(text)
            except ValueError:
                raise ValueError(f"{where}: expression must be an integer 0..10, got {text!r}") from None
            if not 0 <= expr <= 10:
                raise ValueError(f"{where}: expression {expr} is outside 0..10 (0-7 AffectNet-8 classes, "
                                 f"8 None, 9 Uncertain, 10 No-Face)")
            if expr in NO_EXPRESSION:
                report.drop(NO_EXPRESSION[expr])
                continue
            if expr == 7 and not contempt_as_other:
                report.drop(CONTEMPT)
                continue
            img = image_root / row[0].strip()
            if not img.is_file():
                report.drop("without an image")
                continue
            va = np.array([_number(row[7], where, "valence"), _number(row[8], where, "arousal")], np.float32)
            va[va == VA_INVALID] = np.nan
            if (np.abs(va[np.isfinite(va)]) > 1).any():
                raise ValueError(f"{where}: valence/arousal must be in [-1, 1] (-2 marks invalid), got {row[7]},{row[8]}")
            x, y, w, h = (_number(v, where, c) if v.strip() else np.nan for v, c in zip(row[1:5], COLUMNS[1:5]))
            paths.append(img)
            names.append(Path(row[0].strip()).with_suffix("").as_posix())
            labels.append(OTHER if expr == 7 else AFFECTNET_TO_AFFWILD2[expr])
            vas.append(va)
            boxes.append((x, y, x + w, y + h))
            if landmarks:
                marks.append(_landmarks(row[5], where))
    warn_first(report, first)
    finish(report, len(paths))
    n = len(paths)
    extra = {"landmarks": np.asarray(marks, np.float32).reshape(n, 68, 2)} if landmarks else {}
    return FrameTable(paths, np.asarray(labels, np.int64), np.asarray(names, dtype=str), EXPR_CLASSES, report,
                      va=np.asarray(vas, np.float32).reshape(n, 2), boxes=np.asarray(boxes, np.float32).reshape(n, 4), **extra)
