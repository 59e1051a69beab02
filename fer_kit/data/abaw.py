"""Readers for the Aff-Wild2 (ABAW) per-task annotation files.

Layout (paper_code_notes §7.1): one `<video>.txt` per video under `<task>/Train_Set` and
`<task>/Validation_Set`; line 1 is a header, line k+1 labels frame k, whose face is
`cropped_aligned/<video>/%05d.jpg` (1-indexed). EXPR uses -1 for "no usable label", and some frames have
no image because the face detector failed. Both are dropped here, and counted, so a user always sees
how much of the annotation survived.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..labels import EXPR_CLASSES, EXPR_INVALID

TASK_DIRS = {"EXPR": "EXPR_Classification_Challenge", "AU": "AU_Detection_Challenge", "VA": "VA_Estimation_Challenge"}
SPLITS = ("Train_Set", "Validation_Set")


@dataclass
class DropReport:
    """How many annotated frames a reader kept, and how many it dropped for which reason."""

    source: str
    videos: int = 0
    lines: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str, n: int = 1) -> None:
        if n:
            self.dropped[reason] = self.dropped.get(reason, 0) + n

    def __str__(self) -> str:
        parts = ", ".join(f"{n:,} {why}" for why, n in self.dropped.items()) or "nothing"
        return (f"{self.source}: {self.videos:,} videos, {self.lines:,} annotated frames -> kept {self.kept:,}; "
                f"dropped {parts}")


@dataclass
class FrameTable:
    """Image paths with one label each, and the video each frame belongs to (splits are by video)."""

    paths: list[Path]
    labels: np.ndarray
    videos: np.ndarray
    classes: tuple[str, ...]
    report: DropReport

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, mask: np.ndarray) -> "FrameTable":
        idx = np.flatnonzero(mask)
        return FrameTable([self.paths[i] for i in idx], self.labels[idx], self.videos[idx], self.classes, self.report)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))


def find_task_dir(root: str | Path, task: str = "EXPR") -> Path:
    """Locate `<task>_..._Challenge` under root (ABAW releases nest it one or two folders deep)."""
    root = Path(root)
    if task not in TASK_DIRS:
        raise ValueError(f"unknown ABAW task {task!r}; expected one of {sorted(TASK_DIRS)}")
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {root} does not exist or is not a folder")
    name = TASK_DIRS[task]
    for pattern in (name, f"*/{name}", f"*/*/{name}"):
        hits = sorted(p for p in root.glob(pattern) if p.is_dir())
        if hits:
            return hits[0]
    raise FileNotFoundError(f"no {name}/ folder found under {root} (looked up to two levels deep); "
                            f"expected the ABAW layout <root>/annotations/{name}/Train_Set/<video>.txt")


def find_image_root(root: str | Path) -> Path:
    root = Path(root)
    for cand in (root / "cropped_aligned", *sorted(root.glob("*/cropped_aligned"))):
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"no cropped_aligned/ folder found under {root}; expected <root>/cropped_aligned/<video>/00001.jpg")


def _parse_expr_file(txt: Path, image_dir: Path, num_classes: int, report: DropReport):
    lines = txt.read_text().splitlines()
    if not lines:
        raise ValueError(f"{txt}: empty annotation file (expected a header line, then one label per frame)")
    header = [h.strip() for h in lines[0].split(",")]
    if header[0].lstrip("-").isdigit():
        raise ValueError(f"{txt}: line 1 should be the header '{','.join(EXPR_CLASSES)}', got {lines[0]!r}")
    if len(header) != num_classes:
        raise ValueError(f"{txt}: header names {len(header)} classes but num_classes={num_classes} "
                         f"(ABAW 2020/2021 files have 7 classes, ABAW3+ have 8)")
    paths, labels = [], []
    for k, line in enumerate(lines[1:], start=1):
        text = line.strip()
        if not text:
            report.drop("blank lines")
            continue
        try:
            label = int(float(text))
        except ValueError:
            raise ValueError(f"{txt}, line {k + 1}: expected an integer label, got {text!r}") from None
        report.lines += 1
        if label == EXPR_INVALID:
            report.drop("labelled -1")
            continue
        if not 0 <= label < num_classes:
            raise ValueError(f"{txt}, line {k + 1}: label {label} is outside 0..{num_classes - 1} "
                             f"(-1 marks an unusable frame)")
        img = image_dir / f"{k:05d}.jpg"
        if not img.exists():
            report.drop("without an image")
            continue
        paths.append(img)
        labels.append(label)
    return paths, labels


def read_expr(root: str | Path, split: str = "Train_Set", num_classes: int = 8) -> FrameTable:
    """Read the EXPR annotations of one split under an ABAW-style root, dropping unusable frames."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}; got {split!r}")
    task_dir = find_task_dir(root, "EXPR") / split
    image_root = find_image_root(root)
    files = sorted(task_dir.glob("*.txt"))
    if not files:
        raise FileNotFoundError(f"no <video>.txt annotation files in {task_dir}")
    report = DropReport(source=f"EXPR {split}")
    paths, labels, videos = [], [], []
    for txt in files:
        image_dir = image_root / txt.stem
        if not image_dir.is_dir():
            n = max(len(txt.read_text().splitlines()) - 1, 0)
            report.lines += n
            report.drop("without an image", n)
            report.videos += 1
            continue
        p, lab = _parse_expr_file(txt, image_dir, num_classes, report)
        paths += p
        labels += lab
        videos += [txt.stem] * len(p)
        report.videos += 1
    report.kept = len(paths)
    classes = EXPR_CLASSES[:num_classes]
    return FrameTable(paths, np.asarray(labels, np.int64), np.asarray(videos), classes, report)


def split_by_video(table: FrameTable, val_fraction: float = 0.2, seed: int = 0) -> tuple[FrameTable, FrameTable]:
    """Split frames into two tables with no video in both (frames of one video are near-duplicates)."""
    names = np.unique(table.videos)
    if len(names) < 2:
        raise ValueError("need at least two videos to split by video")
    rng = np.random.default_rng(seed)
    n_val = min(max(1, int(round(val_fraction * len(names)))), len(names) - 1)
    val_names = set(rng.choice(names, size=n_val, replace=False))
    is_val = np.array([v in val_names for v in table.videos])
    return table.subset(~is_val), table.subset(is_val)
