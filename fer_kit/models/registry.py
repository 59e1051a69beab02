"""Models by name, as timm's `create_model`: notebooks and configs only ever hold a string."""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from ..names import check_names

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Decorator: make an entry-point function available to create_model under its own name."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown names and keyword arguments fail with the valid choices."""
    check_names([name], list_models(), "model")
    entry = _MODELS[name]
    model_cls = getattr(entry, "model_cls", None)
    if model_cls is not None:
        accepted = [p for p in inspect.signature(model_cls.__init__).parameters if p != "self"]
        check_names(kwargs, accepted, f"{name} argument", TypeError)
    return entry(**kwargs)


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
