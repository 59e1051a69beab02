"""Where a notebook's frames come from: a real ABAW folder (`data_root`) or the embedded synthetic faces.

Every notebook takes the same `data_root` parameter; None means the synthetic default, generated once
and cached, so switching to real Aff-Wild2 is one parameter and no code.
"""
from __future__ import annotations

from pathlib import Path

from .abaw import SPLITS, read_abaw, read_landmarks
from .synthetic import SyntheticConfig, ensure_synthetic
from .table import FrameTable


def dataset_root(data_root: str | None = None, n_frames: int = 10_000, balance: str = "sqrt", seed: int = 0,
                 style: str = "photo", progress: bool = True) -> tuple[Path, str]:
    """(folder, description) of the data: data_root as given, or the synthetic faces for these settings."""
    if data_root is None:
        syn = SyntheticConfig(n_frames=n_frames, balance=balance, seed=seed, style=style)
        return ensure_synthetic(syn, progress=progress), f"synthetic faces ({balance}, {style}, seed {seed})"
    root = Path(data_root).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"data_root {data_root!r} does not exist or is not a folder; expected an ABAW layout "
                                "(cropped_aligned/ plus annotations), or None for the synthetic faces")
    return root, f"ABAW data at {data_root}"


def load_splits(root: str | Path, num_classes: int = 8, landmarks: bool = True) -> dict[str, FrameTable]:
    """Both ABAW splits as multi-task tables (every label the root holds), with landmarks attached when
    the root has a landmarks/ folder (the synthetic data does; Aff-Wild2 does not ship them)."""
    tables = {}
    for split in SPLITS:
        table = read_abaw(root, split, num_classes)
        if landmarks and (Path(root) / "landmarks").is_dir():
            table = read_landmarks(root, table)
        tables[split] = table
    return tables
