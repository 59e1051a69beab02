"""A plain `<root>/<class>/*.jpg|png` tree (FER2013 image release, Kaggle copies, your own photos).

Folder names are matched case-insensitively to the Aff-Wild2 names and their common synonyms (angry,
happy, sad, surprised, ...), so `read_class_folders` returns labels in the Aff-Wild2 order. Folders it
cannot place are left out, counted and warned about by name (pass `mapping=` to use them), as the LSD
reader does: guessing would silently mislabel a whole class.
Also holds the small helpers the still-image readers share.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..labels import EXPR_CLASSES
from .table import DropReport, FrameTable

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")

# Folder name (lower case) -> Aff-Wild2 class; None: a class Aff-Wild2 does not have.
SYNONYMS: dict[str, str | None] = {
    "neutral": "Neutral", "anger": "Anger", "angry": "Anger", "disgust": "Disgust", "disgusted": "Disgust",
    "fear": "Fear", "fearful": "Fear", "scared": "Fear", "happy": "Happiness", "happiness": "Happiness",
    "sad": "Sadness", "sadness": "Sadness", "surprise": "Surprise", "surprised": "Surprise", "other": "Other",
    "contempt": None,
}
CONTEMPT = "Contempt: no Aff-Wild2 class"


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTS


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def drop_first(report: DropReport, first: dict[str, str], reason: str, where: str) -> None:
    """Count a dropped item and remember where the first of its kind was (for warn_first)."""
    report.drop(reason)
    first.setdefault(reason, where)


def warn_first(report: DropReport, first: dict[str, str]) -> None:
    """One warning per kind of bad input, naming how many and the first place it occurs."""
    for reason, where in first.items():
        warnings.warn(f"{report.source}: dropped {report.dropped[reason]:,} {reason}; the first at {where}", stacklevel=3)


def finish(report: DropReport, kept: int) -> None:
    report.kept = kept
    if kept == 0 and report.lines:
        warnings.warn(f"nothing kept: {report}", stacklevel=3)


def _resolve(name: str, classes: tuple[str, ...], mapping: dict) -> int | str | None:
    """Class index for a folder name; a drop reason (str) for a known class with no place; None if unknown."""
    key = name.lower()
    if key in mapping:
        target = mapping[key]
        if target is None:
            return f"in folder {name} (mapped to None)"
        if isinstance(target, (int, np.integer)):
            if not 0 <= target < len(classes):
                raise ValueError(f"mapping[{name!r}] = {target} is outside 0..{len(classes) - 1} for {classes}")
            return int(target)
        lower = [c.lower() for c in classes]
        if str(target).lower() not in lower:
            raise ValueError(f"mapping[{name!r}] = {target!r} is not one of {classes}")
        return lower.index(str(target).lower())
    lower = [c.lower() for c in classes]
    if key in lower:
        return lower.index(key)
    if key in SYNONYMS:
        target = SYNONYMS[key]
        if target is None:
            return CONTEMPT
        if target.lower() in lower:
            return lower.index(target.lower())
    return None


def read_class_folders(root: str | Path, classes: tuple[str, ...] | None = None, mapping: dict | None = None,
                       source: str | None = None) -> FrameTable:
    """Images in `<root>/<class>/` (any depth below the class folder), labelled by their folder.

    classes: the label order of the result (default EXPR_CLASSES). mapping: folder name -> class name,
    class index, or None to leave the folder out (e.g. `{"contempt": "Other", "0": "Neutral"}`); it
    overrides the built-in names. Contempt folders are dropped (counted) unless mapped.
    """
    root = Path(root)
    classes = tuple(classes or EXPR_CLASSES)
    mapping = {str(k).lower(): v for k, v in (mapping or {}).items()}
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist or is not a folder; expected <root>/<class>/*.jpg, "
                                f"e.g. <root>/happy/0001.jpg")
    report = DropReport(source=source or f"class folders {root}")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise FileNotFoundError(f"no class folders in {root}; expected <root>/<class>/*.jpg, e.g. <root>/happy/0001.jpg")
    targets = {f.name: _resolve(f.name, classes, mapping) for f in folders}
    unknown = [name for name, t in targets.items() if t is None]
    if unknown:      # counted and reported like the LSD reader's unknown folders; never guessed
        warnings.warn(f"{root}: left out the folders {unknown}: no class is named so (known: {list(classes)} and "
                      f"synonyms {sorted(SYNONYMS)}); pass mapping={{{unknown[0]!r}: 'Anger', ...}} to use one "
                      f"(a class name or an index)", stacklevel=2)
        targets.update({name: f"in unknown folder {name}" for name in unknown})
    if all(isinstance(t, str) for t in targets.values()):
        raise ValueError(f"{root}: none of the folders {sorted(targets)} is a class of {list(classes)}; pass "
                         f"mapping={{{sorted(targets)[0]!r}: 'Anger', ...}}")
    for p in root.iterdir():
        if p.is_file():
            report.drop("not in a class folder" if is_image(p) else "not an image")
    paths, labels, videos = [], [], []
    for folder in folders:
        target = targets[folder.name]
        for p in files_under(folder):
            if not is_image(p):
                report.drop("not an image")
                continue
            report.lines += 1
            if isinstance(target, str):
                report.drop(target)
                continue
            paths.append(p)
            labels.append(target)
            videos.append(p.relative_to(root).with_suffix("").as_posix())
    finish(report, len(paths))
    return FrameTable(paths, np.asarray(labels, np.int64), np.asarray(videos, dtype=str), classes, report)
