"""The run folder's life: claimed with a lock, resumed only by the run it belongs to, its JSON written
atomically, a finished run read back instead of trained again, its figures drawn."""
from __future__ import annotations

import json
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from torch import nn

from ..config import TrainConfig
from ..paths import shown
from .checkpoints import load_run
from .device import select_device


@dataclass
class RunResult:
    model: nn.Module    # the chosen (best validation) epoch's weights
    history: pd.DataFrame
    best: dict          # validation report at the chosen epoch
    out_dir: Path
    metrics_path: Path
    test: dict | None = None        # test report of the chosen epoch, with "interval" (None: no test labels)
    test_final: dict | None = None  # test report of the last epoch, to show what choosing on validation did
    protocol: str = ""

    @property
    def steps(self) -> int | None:
        """Optimiser steps the run made, where its schedule counted them (None: x lr_decay per epoch)."""
        steps = self.history["steps"].iloc[-1] if "steps" in self.history else None
        return None if steps is None or pd.isna(steps) else int(steps)

    @property
    def reported(self) -> dict:
        """The report to quote: the test split's where there is one, else validation's (papers' protocol)."""
        return self.test if self.test is not None else self.best


def write_json(obj, path: Path) -> None:
    """Valid JSON (a NaN or infinite score becomes null), written atomically: a failed write leaves
    neither a half file nor its temporary."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(json.dumps(_finite(obj), indent=1, allow_nan=False))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _finite(obj):
    """NaN and infinities -> None (JSON has no literal for them), through dicts and lists."""
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def record(metrics_path: str | Path, **entries) -> None:
    """Add entries (e.g. baselines measured in the notebook) to a run's metrics.json."""
    path = Path(metrics_path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(entries)
    write_json(data, path)


# fields a resumed run may change: how long it trains, where and how it reports; everything else must
# be what last.pt was trained with, or the "resumed" run would be another run under the same name
RESUMABLE = ("epochs", "progress", "device", "precision", "deterministic", "compile", "augment_on", "cache", "cache_gb",
             "cache_dir", "workers", "exist", "reuse", "checkpoint_minutes", "out_dir", "figures_dir")
RUN_FILES = ("history.csv", "metrics.json", "best.pt", "last.pt")   # a config.json alone: a run that saved nothing


class RunInUseError(RuntimeError):
    """Another live process holds the run folder's lock."""


class NotTheSameRunError(ValueError):
    """Resuming a run folder with a configuration other than the one its last.pt was trained with."""


@contextmanager
def run_lock(out_dir: Path):
    """Hold out_dir/.lock (our process id) while training, so two runs never write one folder. A lock
    whose process no longer runs (a killed run) is taken over, with a message."""
    lock = out_dir / ".lock"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            owner = _lock_owner(lock)
            if owner is not None and owner != os.getpid() and _alive(owner):
                raise RunInUseError(f"{shown(out_dir)} is in use by another training run (process {owner}, "
                                   f"see {lock.name}); wait for it to end, or choose another out_dir") from None
            print(f"{shown(lock)}: taking over the lock of process {owner}, which no longer runs")
            lock.unlink(missing_ok=True)
        except PermissionError as e:
            raise PermissionError(f"cannot write in {shown(out_dir)} ({e.strerror}); choose another out_dir "
                                  "(or set FER_KIT_OUTPUT to a writable folder)") from e
    else:
        raise RuntimeError(f"could not take {shown(lock)}; remove it if no run is using {shown(out_dir)}")
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _lock_owner(lock: Path) -> int | None:
    try:
        return int(lock.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # someone else's live process
        return True
    return True


def prepare_run_folder(out_dir: Path, exist: str) -> bool:
    """Apply cfg.exist to a folder that may already hold a run; True when training continues from its
    last.pt. Temporaries of an interrupted checkpoint write are removed either way."""
    for tmp in [*out_dir.glob(".best.pt.*"), *out_dir.glob(".last.pt.*"), *out_dir.glob("*.json.tmp")]:
        tmp.unlink(missing_ok=True)
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    if not found:
        if exist == "resume":
            print(f"{shown(out_dir)} holds no run yet: starting from the beginning")
        return False
    if exist == "error":
        raise FileExistsError(f"{shown(out_dir)} already holds a run ({', '.join(found)}); continue it with "
                              "--exist resume, replace it with --exist overwrite, or choose another --out_dir")
    if exist == "overwrite":
        for name in (*found, "config.json"):
            (out_dir / name).unlink(missing_ok=True)
        return False
    if "last.pt" not in found:
        print(f"{shown(out_dir)} has no last.pt to resume from (the run stopped before its first checkpoint): "
              "starting from the beginning")
    return "last.pt" in found


def check_same_run(saved: dict | None, cfg: TrainConfig, path: Path) -> None:
    """Resuming must continue the run last.pt belongs to: any difference but the RESUMABLE fields stops
    it, listing each field as `name: old -> new`; the allowed changes are named."""
    if saved is None:
        raise ValueError(f"{shown(path)} holds no config (written before checkpoints carried one), so this cannot "
                         "be checked to be the same run; start again with exist=overwrite")
    new = cfg.to_dict()
    missing = object()
    changed = {k: (saved.get(k, missing), new.get(k, missing)) for k in sorted(saved.keys() | new.keys())
               if saved.get(k, missing) != new.get(k, missing)}
    shown_change = lambda k: f"{k}: {changed[k][0]!r} -> {changed[k][1]!r}".replace(repr(missing), "(absent)")
    bad = [k for k in changed if k not in RESUMABLE]
    if bad:
        raise NotTheSameRunError(f"cannot resume {shown(path)} with another configuration: "
                         + "; ".join(shown_change(k) for k in bad)
                         + f". Resume with its settings (only {', '.join(RESUMABLE)} may change), or start a new "
                         "run with exist=overwrite or another out_dir")
    if changed:
        print("resuming with " + "; ".join(shown_change(k) for k in changed))


HOW_ONLY = ("progress", "exist", "reuse", "out_dir", "figures_dir", "workers", "cache", "cache_gb", "cache_dir",
            "checkpoint_minutes")


def finished_run(out_dir: Path, cfg: TrainConfig) -> RunResult | None:
    """The finished run in out_dir when it was trained with cfg (HOW_ONLY fields aside), else None."""
    metrics_path = out_dir / "metrics.json"
    if not all((out_dir / name).exists() for name in ("metrics.json", "best.pt", "history.csv")):
        return None
    m = json.loads(metrics_path.read_text())
    ours = json.loads(json.dumps(cfg.to_dict()))
    if {k: v for k, v in m.get("config", {}).items() if k not in HOW_ONLY} != \
            {k: v for k, v in ours.items() if k not in HOW_ONLY}:
        return None
    model = load_run(out_dir)[0].to(select_device(cfg.device))
    return RunResult(model=model, history=pd.read_csv(out_dir / "history.csv"),
                     best=m["best"], out_dir=out_dir, metrics_path=metrics_path, test=m["test"],
                     test_final=m["test_final"], protocol=m["protocol"])


def save_run_figures(history: pd.DataFrame, best: dict, out_dir: Path) -> list[Path]:
    """The run folder's own pictures (learning curves; per-class F1 and confusion matrix where the task
    has classes), so a command-line run leaves what a notebook shows. Each figure is closed at once:
    inside a notebook it is not drawn a second time."""
    if os.environ.get("FER_KIT_RUN_FIGURES") == "0":    # the test suite's hundred small runs (conftest.py)
        return []
    import matplotlib.pyplot as plt

    from .. import plots
    folder = out_dir / "figures"
    drawn = {"learning_curves": lambda p: plots.learning_curves(history, path=p, loss_title="training loss")}
    if "per_class_f1" in best:
        drawn["per_class_f1"] = lambda p: plots.per_class_f1(best["per_class_f1"], path=p)
        drawn["confusion"] = lambda p: plots.confusion_matrix(best["confusion"], list(best["per_class_f1"]), path=p)
    paths = []
    for name, draw in drawn.items():
        paths.append(folder / f"{name}.png")
        plt.close(draw(paths[-1]))
    return paths
