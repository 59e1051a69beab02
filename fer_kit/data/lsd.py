"""ABAW4 Learning-from-Synthetic-Data (LSD): class folders of synthetic training faces.

Layout (paper_code_notes §7.3): `training_set_synthetic_images/<ANGER|DISGUST|FEAR|HAPPINESS|SADNESS|
SURPRISE>/<n>.jpg`, and the real validation faces in `validation_set_real_images/` (also accepted:
`validation_set_images/`) with the same class folders. Labels are the 6 LSD classes (Aff-Wild2 order
without Neutral and Other); ANGER was once shipped misspelt as ANGERE, which is read as ANGER.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..labels import EXPR_CLASSES, LSD_CLASSES, LSD_FOLDERS
from .folders import files_under, finish, is_image
from .table import DropReport, FrameTable

SPLIT_DIRS = {"train": ("training_set_synthetic_images",),
              "val": ("validation_set_real_images", "validation_set_images")}
MISSPELT = {"ANGERE": "ANGER"}


def find_lsd_split(root: str | Path, split: str = "train") -> Path:
    """The folder of one LSD split, under root, root/LSD or any folder one level down (or root itself)."""
    if split not in SPLIT_DIRS:
        raise ValueError(f"split must be one of {sorted(SPLIT_DIRS)}; got {split!r}")
    root = Path(root)
    names = SPLIT_DIRS[split]
    if root.name in names and root.is_dir():
        return root
    for name in names:
        for cand in (root / name, root / "LSD" / name, *sorted(root.glob(f"*/{name}"))):
            if cand.is_dir():
                return cand
    raise FileNotFoundError(f"no {' or '.join(names)}/ folder under {root}; expected the ABAW4 LSD layout "
                            f"<root>/{names[0]}/<{'|'.join(LSD_FOLDERS)}>/*.jpg")


def read_lsd(root: str | Path, split: str = "train", to_affwild2: bool = False) -> FrameTable:
    """Read one LSD split. Labels 0..5 in LSD_CLASSES, or with `to_affwild2=True` Aff-Wild2 indices (+1).

    Images in folders that are not one of the six classes are counted as dropped, by folder name.
    Each image is its own group (`videos` = `<folder>/<stem>`; stems repeat across class folders).
    """
    folder = find_lsd_split(root, split)
    report = DropReport(source=f"LSD {split}")
    paths, labels, videos = [], [], []
    known = 0
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        name = MISSPELT.get(sub.name.upper(), sub.name.upper())
        label = LSD_FOLDERS.index(name) if name in LSD_FOLDERS else None
        if sub.name.upper() in MISSPELT:
            warnings.warn(f"{sub}: read the misspelt folder {sub.name} as {name}", stacklevel=2)
            report.source += f" ({sub.name} read as {name})"
        known += label is not None
        for p in files_under(sub):
            if not is_image(p):
                report.drop("not an image")
                continue
            report.lines += 1
            if label is None:
                report.drop(f"in unknown folder {sub.name}")
                continue
            paths.append(p)
            labels.append(label)
            videos.append(p.relative_to(folder).with_suffix("").as_posix())
    for p in folder.iterdir():
        if p.is_file():
            report.drop("not in a class folder" if is_image(p) else "not an image")
    if not known:
        raise FileNotFoundError(f"{folder} has none of the class folders {', '.join(LSD_FOLDERS)}")
    finish(report, len(paths))
    labels = np.asarray(labels, np.int64) + (1 if to_affwild2 else 0)
    return FrameTable(paths, labels, np.asarray(videos, dtype=str), EXPR_CLASSES if to_affwild2 else LSD_CLASSES, report)
