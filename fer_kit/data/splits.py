"""Every dataset kind as the three splits a run needs: train, validation (to choose epochs and
thresholds) and test (to report).

Each dataset names its splits its own way (RAF-DB train/test, FER2013's Usage column, AffectNet's
training and validation csv, ...). Where a dataset ships no validation split, one is carved from its
training split by whole groups (videos, or the image for still-image datasets), stratified by class and
seeded; where it ships no test split either (ExpW, a plain folder of class folders), the test split is
carved the same way. The labels are the Aff-Wild2 order the readers map to.

    python -m fer_kit.train --dataset rafdb --data_root /data/RAF-DB
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..labels import EXPR_CLASSES
from .abaw import drop_other
from .affectnet import read_affectnet
from .expw import read_expw
from .fer2013 import read_fer2013_csv, read_fer2013_folders
from .folders import read_class_folders
from .rafdb import read_rafdb
from .table import FrameTable

# dataset kinds a run can train on ("abaw" is the Aff-Wild2 layout, the synthetic faces' too)
KINDS = ("abaw", "lsd", "affectnet", "rafdb", "fer2013", "fer2013_folders", "expw", "folders")
# the kinds that label the 7 basic expressions only: Aff-Wild2's order without Other (an 8th, empty class
# would score F1 0 and pull P_EXPR down by an eighth)
SEVEN_CLASSES = ("rafdb", "fer2013", "fer2013_folders", "expw")
VAL_FRACTION = 0.1   # the share of groups carved as validation (and as test) where a dataset has none


def carve(table: FrameTable, fraction: float, seed: int, name: str) -> tuple[FrameTable, FrameTable]:
    """(rest, carved): about `fraction` of the table's groups (videos or images; never split) drawn by
    sklearn's StratifiedGroupKFold, so each class keeps its share. The carved table's report names
    where it came from; the rest's report counts the frames held out beside the reader's drops."""
    from sklearn.model_selection import StratifiedGroupKFold

    groups = np.unique(table.videos)
    labels = np.maximum(table.labels, 0)           # (multi-task rows may carry -1: stratify them with class 0)
    # one fold is the carved split; a small table has fewer folds (its largest class, its groups)
    folds = min(max(2, int(round(1 / fraction))), len(groups), int(np.bincount(labels).max()))
    if folds < 2:
        raise ValueError(f"{table.report.source}: {len(groups)} group(s) of frames; at least 2 are needed to "
                         f"carve a {name} split from it")
    kfold = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    _, carved_idx = next(kfold.split(np.zeros(len(table)), labels, table.videos))
    is_carved = np.zeros(len(table), bool)
    is_carved[carved_idx] = True
    source = table.report.source
    rest = table.keep(~is_carved, f"held out as the {name} split", source=f"{source} (less the {name} split)")
    carved = table.subset(is_carved)
    carved.report = replace(table.report, source=f"{name} split carved from {source} ({1 / folds:.0%} of its "
                            f"{len(groups):,} groups, seed {seed})", lines=len(carved), kept=len(carved), dropped={})
    return rest, carved


def _fer2013_csv(root: Path) -> Path:
    return root if root.is_file() else root / "fer2013.csv"


def _folders(root: Path) -> tuple[FrameTable, FrameTable | None, FrameTable | None]:
    """`<root>/train/<class>/` with optional `val/` (or `validation/`) and `test/` beside it, or the
    class folders directly under root (then validation and test are carved)."""
    if not (root / "train").is_dir():
        return read_class_folders(root), None, None
    val_dir = next((root / d for d in ("val", "validation") if (root / d).is_dir()), None)
    return (read_class_folders(root / "train"), read_class_folders(val_dir) if val_dir else None,
            read_class_folders(root / "test") if (root / "test").is_dir() else None)


def read_splits(kind: str, root: str | Path, num_classes: int = 8,
                seed: int = 0) -> tuple[FrameTable, FrameTable, FrameTable, str]:
    """(train, validation, test, description) of a dataset on disk, in the Aff-Wild2 order; num_classes 7
    drops frames labelled Other, as for ABAW 2020 (the 7-class datasets have none)."""
    if kind not in KINDS or kind in ("abaw", "lsd"):
        raise ValueError(f"read_splits reads the kinds {', '.join(KINDS[2:])}; got {kind!r} (the ABAW layout and "
                         "LSD are read by fer_kit.data.sources)")
    root = Path(root).expanduser()
    if not root.exists():
        raise FileNotFoundError(f"data_root {str(root)!r} does not exist (dataset={kind!r})")
    if kind in SEVEN_CLASSES and num_classes != 7:
        raise ValueError(f"{kind} labels the 7 basic expressions; pass num_classes=7 (got {num_classes})")
    if num_classes not in (7, 8):
        raise ValueError(f"num_classes must be 7 or 8 for {kind}; got {num_classes}")
    val = test = None
    if kind == "rafdb":
        train, test = read_rafdb(root, "train"), read_rafdb(root, "test")
    elif kind == "affectnet":   # its validation csv is the test split of the papers that use it
        other = num_classes == 8
        train = read_affectnet(root, split="train", contempt_as_other=other)
        test = read_affectnet(root, split="val", contempt_as_other=other)
    elif kind == "fer2013":
        csv = _fer2013_csv(root)
        train, val, test = (read_fer2013_csv(csv, usage) for usage in ("Training", "PublicTest", "PrivateTest"))
    elif kind == "fer2013_folders":
        train, test = read_fer2013_folders(root, "train"), read_fer2013_folders(root, "test")
    elif kind == "expw":
        train = read_expw(root)
    else:
        train, val, test = _folders(root)
        if num_classes == 8 and not (train.labels == EXPR_CLASSES.index("Other")).any():
            raise ValueError(f"no training frames labelled Other under {root}: pass num_classes=7 (the 7 basic "
                             "expressions), or add an Other folder")
    if num_classes == 7:
        train, val, test = (drop_other(t) if t is not None else None for t in (train, val, test))
    if test is None:
        train, test = carve(train, VAL_FRACTION, seed, "test")
    if val is None:
        train, val = carve(train, VAL_FRACTION, seed, "validation")
    for table in (train, val, test):
        if len(table) == 0:
            raise ValueError(f"{table.report}: no usable frames left")
    return train, val, test, f"{kind} at {root}"


def split_summary(kind: str, root: str | Path, num_classes: int | None = None, seed: int = 0) -> dict:
    """One row about a dataset on disk: the frames of each split, where each split came from, and what
    the reader dropped from the training files and why (a run prints the same reports)."""
    num_classes = num_classes or (7 if kind in SEVEN_CLASSES else 8)
    train, val, test, _ = read_splits(kind, root, num_classes, seed)
    return {"dataset": kind, "classes": num_classes, "train": len(train), "validation": len(val), "test": len(test),
            "validation from": val.report.source, "test from": test.report.source,
            "dropped from train": ", ".join(f"{n} {why}" for why, n in train.report.dropped.items()) or "nothing"}
