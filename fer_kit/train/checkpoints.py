"""Checkpoint files: written atomically, read with weights_only=True, a run folder's best model read
back, another run's weights as a starting point, and the random state a resumed run continues from."""
from __future__ import annotations

import os
import random
import signal
import tempfile
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..models.checkpoints import read_file, state_dict_of
from ..paths import output_dir, shown
from .recipe import build_model


def rng_state() -> dict:
    """Every global generator a training step draws from (augmentations use torch's; CUDA's for dropout
    on a GPU), so a resumed run continues the same random streams."""
    name, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),   # tensors and ints: weights_only loads them
             "numpy": (name, torch.from_numpy(key.astype(np.int64)), pos, has_gauss, gauss)}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


_KILLS: dict[str, int] = {}


def _kill_due(where: str) -> bool:
    """Test hook: FER_KIT_TEST_KILL="step:3" makes this true at this process's 3rd training step,
    "save:2" during its 2nd checkpoint write; the caller then SIGKILLs the process. The resume test uses
    it to kill a run at chosen points; unset (always, outside that test) it is never true."""
    spec = os.environ.get("FER_KIT_TEST_KILL", "")
    if not spec.startswith(where + ":"):
        return False
    _KILLS[where] = _KILLS.get(where, 0) + 1
    return _KILLS[where] == int(spec.split(":")[1])


def _kill_self() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """Write to a temporary file in the same folder and rename, so a crash (or a full disk) never leaves
    half a checkpoint: the previous one stays until the new one is complete, and the temporary goes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        if _kill_due("save"):
            os.truncate(tmp, os.path.getsize(tmp) // 2)     # what a kill mid-write leaves
            _kill_self()
        os.replace(tmp, path)
    except OSError as e:
        raise OSError(e.errno, f"could not write the checkpoint {shown(path)} ({e.strerror or e}); "
                               f"the previous {path.name}, if any, is unchanged; free disk space or choose "
                               "another out_dir") from e
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str | Path) -> dict:
    """A run's checkpoint as saved (model, optimiser, config, ...), read with weights_only=True by the kit's
    one reader (fer_kit.models.checkpoints.read_file)."""
    return read_file(path)


def load_run(run_dir: str | Path) -> tuple[nn.Module, TrainConfig]:
    """A run folder's best checkpoint as a model in eval mode, with the TrainConfig it was trained with
    (a notebook's config subclass is read back as its TrainConfig fields). Relative folders are under
    output_dir(), as fit() writes them."""
    run_dir = Path(run_dir) if Path(run_dir).is_absolute() else output_dir() / run_dir
    state = load_checkpoint(run_dir / "best.pt")
    if "config" not in state:
        raise ValueError(f"{shown(run_dir / 'best.pt')} holds no config: is it the best.pt of a fer_kit run folder?")
    own = {f.name for f in fields(TrainConfig)}
    cfg = TrainConfig.from_params({k: v for k, v in state["config"].items() if k in own})
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    return model.eval(), cfg


def init_weights(model: nn.Module, path: str | Path, min_share: float = 0.9, model_name: str | None = None) -> dict:
    """Start a model from another run's checkpoint: every tensor whose name and shape match is copied,
    the rest keeps its initialisation (e.g. paper B's clip models start from the per-frame model's trunk,
    the role ImageNet weights play in the paper). At least `min_share` of this model's tensors must match:
    a checkpoint of another model would otherwise leave almost everything at random, silently. Returns
    how many tensors were loaded and, by name, which were re-initialised and why."""
    path = Path(path) if Path(path).is_absolute() else output_dir() / path
    state = load_checkpoint(path)
    theirs = (state.get("config") or {}).get("model") if isinstance(state.get("config"), dict) else None
    weights = state_dict_of(state, path)
    own = model.state_dict()
    match = {k: v for k, v in weights.items() if k in own and own[k].shape == v.shape}
    fresh = {k: _why_not_loaded(k, own, weights) for k in own if k not in match}
    share = len(match) / max(len(own), 1)
    if share < min_share:
        mine = model_name or type(model).__name__
        raise ValueError(f"{shown(path)} is a checkpoint of {theirs or 'an unknown model'!r}; it matches only "
                         f"{len(match)} of the {len(own)} tensors of this {mine!r} ({share:.0%}, at least "
                         f"{min_share:.0%} must match; first misfits: {', '.join(list(fresh.values())[:3])}); "
                         "start from a checkpoint of the same model, leave init_from empty, or lower "
                         "init_min_share if only a part of the model is meant to start from it")
    model.load_state_dict(match, strict=False)
    return {"loaded": len(match), "kept_init": len(fresh), "reinitialised": fresh}


def _why_not_loaded(name: str, own: dict, theirs: dict) -> str:
    """One re-initialised tensor as a user reads it: `head.fc.weight (8, 512) here, (7, 512) in the checkpoint`."""
    if name not in theirs:
        return f"{name} (not in the checkpoint)"
    return f"{name} {tuple(own[name].shape)} here, {tuple(theirs[name].shape)} in the checkpoint"
