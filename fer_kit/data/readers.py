"""Every dataset reader by name, so configs and notebooks can say `read_dataset("rafdb", root, "test")`.

All of them return a FrameTable (labels in the Aff-Wild2 order, except LSD's own 6 classes unless
`to_affwild2=True`) whose `report` counts what was dropped and why.
"""
from __future__ import annotations

from typing import Callable

from .abaw import read_expr_any
from .affectnet import read_affectnet
from .expw import read_expw
from .fer2013 import read_fer2013_csv, read_fer2013_folders
from .folders import read_class_folders
from .lsd import read_lsd
from .rafdb import read_rafdb
from .table import FrameTable

READERS: dict[str, Callable[..., FrameTable]] = {
    "abaw": read_expr_any,
    "lsd": read_lsd,
    "affectnet": read_affectnet,
    "rafdb": read_rafdb,
    "fer2013": read_fer2013_csv,
    "fer2013_folders": read_fer2013_folders,
    "expw": read_expw,
    "folders": read_class_folders,
}


def read_dataset(kind: str, *args, **kwargs) -> FrameTable:
    """Call the reader registered under `kind` with the remaining arguments."""
    if kind not in READERS:
        raise ValueError(f"unknown dataset kind {kind!r}; known: {', '.join(READERS)}")
    return READERS[kind](*args, **kwargs)
