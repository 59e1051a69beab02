"""Models by name, as timm's `create_model`: notebooks and configs only ever hold a string.

A registry entry also carries what training needs of its model (fer_kit.train.recipe and the config's
checks read it): which config fields build it, the paper's loss for it, what each frame must carry, the
tasks it has heads for and whether it takes clips; so a new model touches its own file and this registry
only. Test configurations (tiny trunks, for the test suite) are created by name but never listed.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from ..names import check_names


@dataclass(frozen=True)
class ModelEntry:
    fn: Callable[..., nn.Module]
    model_cls: type | None = None        # its class: __init__'s parameters are what create_model accepts
    config_args: Callable[[Any], dict] | None = None   # a TrainConfig -> the keyword arguments it is built with
    loss: Callable[[Any, Any], nn.Module] | None = None   # (TrainConfig, training frames per class) -> the
    #                                   paper's loss, whose from_output(out, y) reads this model's output
    targets: str = "task"                # what each frame carries: "task" (EXPR labels, or every ABAW label
    #                                      for task mtl) or "landmarks" (paper E: 6 LSD classes + 68 points)
    tasks: tuple[str, ...] = ("expr",)    # the TrainConfig tasks it has heads for (paper D: mtl, va, au too)
    clips: bool = False                  # takes clips of consecutive frames (paper B), cfg.clip_length > 1
    min_image_size: int = 32             # the smallest input it runs on (a laptop preset never fits below it)
    test_only: bool = False              # a tiny configuration for the test suite: never listed

    @property
    def arguments(self) -> list[str] | None:
        """The keyword arguments create_model accepts for it (None: its class is not registered)."""
        if self.model_cls is None:
            return None
        return [p for p in inspect.signature(self.model_cls.__init__).parameters if p != "self"]


_MODELS: dict[str, ModelEntry] = {}


def register_model(fn: Callable[..., nn.Module] | None = None, **training) -> Callable:
    """Decorator, bare or with ModelEntry's fields: make an entry-point function available to create_model
    under its own name."""
    def add(fn):
        _MODELS[fn.__name__] = ModelEntry(fn, **training)
        return fn
    return add(fn) if fn is not None else add


def config_fields(*names: str, unless_none: tuple[str, ...] = ()) -> Callable[[Any], dict]:
    """config_args that pass these TrainConfig fields under their own names; the `unless_none` ones only
    when set, so that None leaves the model's own default (which differs between models) in place."""
    def args(cfg) -> dict:
        given = {name: getattr(cfg, name, None) for name in unless_none}
        return {**{name: getattr(cfg, name) for name in names}, **{k: v for k, v in given.items() if v is not None}}
    return args


def list_models(include_test: bool = False) -> list[str]:
    return sorted(name for name, entry in _MODELS.items() if include_test or not entry.test_only)


def model_entry(name: str) -> ModelEntry:
    if name not in _MODELS:
        check_names([name], list_models(), "model")      # the choices offered: the public names only
    return _MODELS[name]


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown names and keyword arguments fail with the valid choices."""
    entry = model_entry(name)
    if entry.arguments is not None:
        check_names(kwargs, entry.arguments, f"{name} argument", TypeError)
    return entry.fn(**kwargs)


class LogitsOnly(nn.Module):
    """Wraps a model whose forward returns a named tuple or tuple, for tools that want one tensor."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        out = self.model(x)
        if hasattr(out, "logits"):
            return out.logits
        return out[0] if isinstance(out, (tuple, list)) else out


def logits_only(model: nn.Module) -> nn.Module:
    return LogitsOnly(model)
