"""Every paper's model, created by name: `create_model("dan", num_classes=8)`."""
from .registry import create_model, list_models, logits_only, register_model
from . import dan  # noqa: F401  (registers the DAN models)
from .dan import DAN, DANOutput

__all__ = ["create_model", "list_models", "logits_only", "register_model", "DAN", "DANOutput"]
