"""What a model does to a tensor, read off the model itself: each stage's output shape and parameters.

Notebook 03 prints these tables instead of typing shapes by hand, so they cannot drift from the code.
"""
from __future__ import annotations

import pandas as pd
import torch
from torch import nn


def count_parameters(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def _shape(out) -> str:
    if isinstance(out, torch.Tensor):
        return "x".join(str(d) for d in out.shape)
    if hasattr(out, "_fields"):                       # NamedTuple outputs: name each field
        return ", ".join(f"{k} {_shape(v)}" for k, v in zip(out._fields, out) if v is not None)
    if isinstance(out, (tuple, list)):
        return ", ".join(_shape(o) for o in out)
    return type(out).__name__


def _stages(module: nn.Module, depth: int, prefix: str = ""):
    """Submodules down to `depth` levels; a ModuleList/ModuleDict (which never runs itself) is see-through."""
    for name, child in module.named_children():
        full = f"{prefix}{name}"
        if isinstance(child, (nn.ModuleList, nn.ModuleDict)):
            yield from _stages(child, depth, full + ".")
            continue
        yield full, child
        if depth > 1:
            yield from _stages(child, depth - 1, full + ".")


def trace_shapes(model: nn.Module, example, depth: int = 1) -> pd.DataFrame:
    """One row per submodule down to `depth` levels, in the order they ran: its output shape and its
    own parameter count, traced with forward hooks on one example batch in eval mode."""
    rows, hooks = [], []
    for name, module in _stages(model, depth):
        hooks.append(module.register_forward_hook(
            lambda m, i, o, name=name: rows.append((name, type(m).__name__, _shape(o), count_parameters(m)))))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    rows.append(("(output)", type(model).__name__, _shape(out), count_parameters(model)))
    df = pd.DataFrame(rows, columns=["stage", "module", "output shape", "parameters"])
    return df.drop_duplicates(subset=["stage"], keep="first").reset_index(drop=True)


# registry name -> (paper, input sizes traced in notebook 03: the paper's own first, then the laptop's)
PAPER_INPUTS: dict[str, tuple[str, tuple[int, ...]]] = {
    "dan": ("A / DAN: DAN-R18", (224, 112)),
    "dan_r50": ("A: DAN on ResNet-50", (224, 112)),
    "regnet_transformer": ("B: RegNetY-1.6GF + attention + transformer", (112,)),
    "scan_cci": ("C: SCAN + CCI", (224, 112)),
    "ddamfn": ("D: DDAMFN multi-task", (112,)),
    "dan_landmarks_r50": ("E: DAN + landmarks", (224, 112)),
}


def input_sizes(model_name: str) -> tuple[int, ...]:
    """The sizes notebook 03 traces a model at: its paper's input first, then 112 (any other model: 112)."""
    return PAPER_INPUTS.get(model_name, ("", (112,)))[1]


def example_input(model_name: str, size: int, batch: int = 2, clip_length: int = 64) -> torch.Tensor:
    """A random batch shaped as the model expects: clips (batch, T, 3, size, size) for paper B's
    temporal model, images (batch, 3, size, size) otherwise."""
    if model_name.startswith("regnet_transformer"):
        return torch.randn(batch, clip_length, 3, size, size)
    return torch.randn(batch, 3, size, size)


def trace_sizes(model: nn.Module, model_name: str, sizes, batch: int = 2, clip_length: int = 64,
                depth: int = 1) -> pd.DataFrame:
    """trace_shapes at several input sizes, side by side: one 'output @ S px' column per size."""
    tables = [trace_shapes(model, example_input(model_name, s, batch, clip_length), depth) for s in sizes]
    out = tables[0].rename(columns={"output shape": f"output @ {sizes[0]} px"})
    for s, t in zip(sizes[1:], tables[1:]):
        out[f"output @ {s} px"] = out["stage"].map(dict(zip(t["stage"], t["output shape"])))
    return out[[c for c in out.columns if c != "parameters"] + ["parameters"]]


def trace_registered(name: str, batch: int = 2, clip_length: int = 64, depth: int = 1, **kwargs):
    """Build a registered model and trace it at its paper's input size and at 112: (model, table)."""
    from .registry import create_model

    model = create_model(name, **kwargs)
    sizes = input_sizes(name)
    return model, trace_sizes(model, name, sizes, 1 if name.startswith("regnet_transformer") else batch,
                              clip_length, depth)
