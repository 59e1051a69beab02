"""What every reader returns: a table of frames with their labels, and a report of what was dropped.

Readers of all formats (ABAW txt/csv, LSD, AffectNet, RAF-DB, FER2013, ExpW, class folders) map their
labels to the kit's orders (labels.py) and fill a FrameTable, so datasets, samplers, statistics and
notebooks never need to know where the frames came from. Nothing is dropped silently: every frame a
reader leaves out is counted in the DropReport under the reason.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np

# Optional per-frame arrays: each is None or has len(table) rows, and is sliced with the table.
PER_FRAME = ("va", "au", "landmarks", "boxes", "images")


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

    @property
    def total_dropped(self) -> int:
        return sum(self.dropped.values())

    def __str__(self) -> str:
        parts = ", ".join(f"{n:,} {why}" for why, n in self.dropped.items()) or "nothing"
        where = f"{self.videos:,} videos, " if self.videos else ""
        return f"{self.source}: {where}{self.lines:,} annotated frames -> kept {self.kept:,}; dropped {parts}"


@dataclass
class FrameTable:
    """Frames (image files, or decoded images held in memory) with the labels of every task they carry.

    labels:    (N,) int64 index into `classes`; -1 only in multi-task tables, where a frame may carry a
               valid VA or AU label but no valid expression.
    videos:    (N,) str, the video (or, for still-image datasets, the image) each frame belongs to;
               splits are made by video.
    va:        (N, 2) float32 valence, arousal in [-1, 1]; NaN where invalid (ABAW's -5).
    au:        (N, 12) float32 0/1 in labels.AU_NAMES order; -1 where invalid.
    landmarks: (N, 68, 2) float32 pixel (x, y) in the image file, iBUG order; NaN where unknown.
    boxes:     (N, 4) float32 face box (x0, y0, x1, y1) in image pixels; NaN where the image is the face.
    images:    (N, H, W, 3) uint8, for formats that carry pixels instead of files (FER2013 csv);
               `paths` then holds readable names such as `fer2013.csv:row 12`.
    """

    paths: list[Path]
    labels: np.ndarray
    videos: np.ndarray
    classes: tuple[str, ...]
    report: DropReport
    va: np.ndarray | None = None
    au: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    boxes: np.ndarray | None = None
    images: np.ndarray | None = None

    def __post_init__(self):
        n = len(self.paths)
        self.labels = np.asarray(self.labels, np.int64).reshape(-1)
        self.videos = np.asarray(self.videos).reshape(-1)
        for name in ("labels", "videos", *PER_FRAME):
            value = getattr(self, name)
            if value is not None and len(value) != n:
                raise ValueError(f"FrameTable.{name} has {len(value)} rows but there are {n} frames")
        bad = self.labels[(self.labels < -1) | (self.labels >= len(self.classes))]
        if bad.size:
            raise ValueError(f"labels must be in -1..{len(self.classes) - 1} for classes {self.classes}; "
                             f"got {sorted(set(bad.tolist()))}")

    def __len__(self) -> int:
        return len(self.paths)

    def subset(self, mask_or_index) -> "FrameTable":
        """Rows selected by a boolean mask or an index array, with every per-frame array sliced alike."""
        idx = np.asarray(mask_or_index)
        idx = np.flatnonzero(idx) if idx.dtype == bool else idx.astype(np.int64)
        changes = {name: getattr(self, name)[idx] for name in PER_FRAME if getattr(self, name) is not None}
        return replace(self, paths=[self.paths[i] for i in idx], labels=self.labels[idx],
                       videos=self.videos[idx], **changes)

    def keep(self, mask: np.ndarray, reason: str, source: str | None = None) -> "FrameTable":
        """The rows where `mask` holds, with a report (renamed to `source` if given) that counts the
        others as dropped for `reason`: how a reader narrows a table without losing frames silently."""
        out = self.subset(mask)
        out.report = replace(self.report, source=source or self.report.source, kept=len(out),
                             dropped=dict(self.report.dropped))
        out.report.drop(reason, len(self) - len(out))
        return out

    def class_counts(self) -> np.ndarray:
        """Frames per class (frames without a valid expression, -1, are not counted)."""
        return np.bincount(self.labels[self.labels >= 0], minlength=len(self.classes))

    def task_masks(self) -> dict[str, np.ndarray]:
        """Which frames carry a valid label for each task present (EXPR, VA, AU)."""
        masks = {"EXPR": self.labels >= 0}
        if self.va is not None:
            masks["VA"] = np.isfinite(self.va).all(axis=1)
        if self.au is not None:
            masks["AU"] = (self.au >= 0).all(axis=1)
        return masks

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(self.task_masks())


def concat_tables(tables: list[FrameTable], source: str | None = None) -> FrameTable:
    """Stack tables with the same classes (e.g. several folders of one dataset)."""
    if not tables:
        raise ValueError("no tables to concatenate")
    classes = tables[0].classes
    for t in tables[1:]:
        if t.classes != classes:
            raise ValueError(f"cannot concatenate tables with different classes: {classes} vs {t.classes}")
    report = DropReport(source or " + ".join(t.report.source for t in tables))
    for t in tables:
        report.videos += t.report.videos
        report.lines += t.report.lines
        report.kept += t.report.kept
        for why, n in t.report.dropped.items():
            report.drop(why, n)
    arrays = {}
    for f in fields(FrameTable):
        if f.name in PER_FRAME:
            values = [getattr(t, f.name) for t in tables]
            if any(v is None for v in values):
                if any(v is not None for v in values):
                    raise ValueError(f"cannot concatenate tables where only some carry {f.name}")
                continue
            arrays[f.name] = np.concatenate(values)
    return FrameTable(paths=[p for t in tables for p in t.paths], labels=np.concatenate([t.labels for t in tables]),
                      videos=np.concatenate([t.videos for t in tables]), classes=classes, report=report, **arrays)
