"""Where a notebook's frames come from: a real ABAW folder (`data_root`) or the embedded synthetic faces.

Every notebook takes the same `data_root` parameter; None means the synthetic default, generated once
and cached, so switching to real Aff-Wild2 is one parameter and no code.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..labels import LSD_CLASSES
from .abaw import SPLITS, has_split, read_abaw, read_expr_any, read_landmarks
from .lsd import read_lsd
from .synthetic import SyntheticConfig, ensure_synthetic
from .table import FrameTable


def dataset_root(data_root: str | None = None, n_frames: int = 10_000, balance: str = "sqrt", seed: int = 0,
                 style: str = "photo", progress: bool = True, **options) -> tuple[Path, str]:
    """(folder, description) of the data: data_root as given, or the synthetic faces for these settings
    (`options`: SyntheticConfig's generator options, e.g. hidden_fraction)."""
    if data_root is None:
        syn = SyntheticConfig(n_frames=n_frames, balance=balance, seed=seed, style=style, **options)
        on = [f"{k} {v:g}" if not isinstance(v, (tuple, list)) else f"{k} {'-'.join(map(str, v))}"
              for k, v in options.items() if v != getattr(SyntheticConfig, k)]
        return ensure_synthetic(syn, progress=progress), f"synthetic faces ({', '.join([balance, style, *on])}, seed {seed})"
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {data_root!r} does not exist or is not a folder; expected an ABAW layout "
                                "(cropped_aligned/ plus annotations), or None for the synthetic faces")
    return root, f"ABAW data at {data_root}"


def load_splits(root: str | Path, num_classes: int = 8, landmarks: bool = True) -> dict[str, FrameTable]:
    """Every labelled ABAW split as a multi-task table (every label the root holds), with landmarks
    attached when the root has a landmarks/ folder (the synthetic data does; Aff-Wild2 does not ship them)."""
    tables = {}
    for split in SPLITS:
        if split == "Test_Set" and not has_split(root, split):
            continue
        table = read_abaw(root, split, num_classes)
        if landmarks and (Path(root) / "landmarks").is_dir():
            table = read_landmarks(root, table)
        tables[split] = table
    return tables


def to_lsd(table: FrameTable) -> FrameTable:
    """The 6-class LSD view of an Aff-Wild2 table: Neutral and Other frames dropped (and counted),
    labels 1..6 become 0..5 (labels.LSD_CLASSES, the Aff-Wild2 order without Neutral)."""
    out = table.keep((table.labels >= 1) & (table.labels <= 6), "Neutral, Other or no expression (not LSD classes)",
                     source=f"{table.report.source}, 6 LSD classes")
    return replace(out, labels=out.labels - 1, classes=LSD_CLASSES)


def lsd_tables(data_root: str | None = None, n_frames: int = 10_000, balance: str = "sqrt", seed: int = 0,
               style: str = "cartoon", val_style: str | None = "photo", progress: bool = True
               ) -> tuple[FrameTable, FrameTable, FrameTable | None, str]:
    """Paper E's data: 6-class training faces of one domain with 68 landmarks, validation (and test)
    faces of another: (train, validation, test or None, description).

    Synthetic default: the training split rendered in `style`, the validation and test splits (other
    people) in `val_style` (None = the same style): LSD's synthetic-train / real-validation shift, with
    landmarks from the renderer. data_root: the ABAW4 LSD folders (synthetic training, real validation, no
    test; `style` is then ignored). LSD ships no landmarks (paper E's team made its own), so those tables carry NaN landmarks
    and the landmark loss skips them.
    """
    if data_root is not None:
        root, source = dataset_root(data_root)
        tables = [read_lsd(root, split) for split in ("train", "val")]
        tables = [t if t.landmarks is not None else replace(t, landmarks=np.full((len(t), 68, 2), np.nan, np.float32))
                  for t in tables]
        return tables[0], tables[1], None, f"ABAW4 LSD at {data_root} (no landmarks)"
    out = []
    for split, st in (("Train_Set", style), ("Validation_Set", val_style or style), ("Test_Set", val_style or style)):
        root, _ = dataset_root(None, n_frames, balance, seed, style=st, progress=progress)
        table = to_lsd(read_landmarks(root, read_expr_any(root, split, 8)))
        table.report.source = f"{table.report.source}, {st} style"
        out.append(table)
    return out[0], out[1], out[2], (f"synthetic faces ({balance}, seed {seed}): training in the {style} style, "
                                    f"validation and test in the {val_style or style} style")
