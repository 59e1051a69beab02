"""Where runs and figures go, wherever a notebook is started from."""
from __future__ import annotations

import os
from pathlib import Path


def project_dir() -> Path:
    """The kit's checkout when installed editable (it has notebooks/ beside fer_kit/), else the cwd.

    Notebooks open with notebooks/ as their working directory while papermill runs keep the caller's,
    so relative output paths are resolved against one fixed place instead. FER_KIT_HOME overrides.
    """
    if "FER_KIT_HOME" in os.environ:
        return Path(os.environ["FER_KIT_HOME"])
    repo = Path(__file__).resolve().parents[1]
    return repo if (repo / "notebooks").is_dir() else Path.cwd()


def output_dir() -> Path:
    """Where relative run folders and figure folders go: the project, or FER_KIT_OUTPUT if set (the
    test suite sets it, so re-executing the notebooks never overwrites the committed figures)."""
    return Path(os.environ["FER_KIT_OUTPUT"]) if "FER_KIT_OUTPUT" in os.environ else project_dir()


def shown(path: str | Path) -> str:
    """A path as users should see it in outputs: relative to the project, never a machine path."""
    path = Path(path).resolve()
    for base, label in ((project_dir().resolve(), ""), (Path.home().resolve(), "~/")):
        try:
            return label + str(path.relative_to(base))
        except ValueError:
            continue
    return path.name
