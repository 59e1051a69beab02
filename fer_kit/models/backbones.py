"""Backbone trunks from timm, with pretrained weights that fail clearly when they cannot be fetched.

Local checkpoints (`checkpoint_path=`, `load_trunk_weights`) are the face-trained trunks the papers start
from, none of which timm ships:
- MS-Celeb-1M ResNet-18 (`resnet18_msceleb.pth`, DAN and paper A's laptop variant): a torch file holding
  {'state_dict': torchvision resnet18 keys conv1.*, bn1.*, layer1.0.conv1.*, ..., fc.*}, possibly with
  DataParallel's `module.` prefix;
- VGGFace2 ResNet-50 (`resnet50_ft_weight.pkl` from VGGFace2-pytorch, papers A, C, E): a plain Python
  (2) pickle of a dict name -> numpy array with torchvision ResNet names (fc.* has VGGFace2's 8631
  identities; no num_batches_tracked). It is read with an unpickler that builds nothing but numpy arrays,
  so a tampered file cannot run code. Those weights were converted from Caffe: VGGFace2-pytorch's ResNet
  strides in the first 1x1 convolution of a downsampling block (torchvision/timm: in the 3x3) and its
  stem max-pool has no padding (ceil_mode). The shapes are the same, so they load by name into timm's
  layout, as paper C's code loaded them into torchvision's; papers A and E's code rebuilt the Caffe
  layout, so there the same weights give slightly different feature maps (fine-tuning absorbs it).
torchvision ResNet names are timm's, so no renaming beyond prefixes is needed; the classifier (fc.*) has
no counterpart in a trunk and is skipped.
"""
from __future__ import annotations

import importlib
import pickle
import zipfile
from pathlib import Path

import numpy as np
import timm
import torch
from torch import nn

from .checkpoints import read_checkpoint

__all__ = ["create_backbone", "create_timm", "load_trunk_weights", "read_weights", "feature_channels"]


def create_backbone(name: str, pretrained: bool = False, checkpoint_path: str | Path | None = None) -> nn.Module:
    """A timm trunk mapping (B, 3, H, W) to its last feature map (no pooling, no classifier).

    `pretrained=True` downloads timm's weights once (then they are cached); offline, it raises an
    error that says what to do. `checkpoint_path` loads a local state dict instead, e.g. the
    MS-Celeb ResNet-18 used by DAN or the VGGFace2 ResNet-50 .pkl, with the usual key prefixes removed.
    """
    trunk = create_timm(name, pretrained, num_classes=0, global_pool="")
    if checkpoint_path is not None:
        load_trunk_weights(trunk, checkpoint_path)
    return trunk


def create_timm(name: str, pretrained: bool, hint: str = "", **kwargs) -> nn.Module:
    """timm.create_model, except that failing to fetch pretrained weights (offline) says what to do."""
    try:
        return timm.create_model(name, pretrained=pretrained, **kwargs)
    except (OSError, RuntimeError, ConnectionError) as err:   # hub downloads raise subclasses of these
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not fetch pretrained weights for timm model {name!r} ({type(err).__name__}: {err}). "
            f"This machine seems to be offline. Either run once with internet access so timm caches the "
            f"weights, pass checkpoint_path= to a local weights file{hint}, or use pretrained=False."
        ) from err


def _strip(key: str) -> str:
    for prefix in ("module.", "model.", "features.", "backbone.", "base."):
        if key.startswith(prefix):
            key = key[len(prefix):]
    return key


# ------------------------------------------------------------------------------------------------------
# Reading weights files: torch files with torch.load(weights_only=True), .pkl with a numpy-only unpickler

def _numpy_internal(module: str, name: str):
    """numpy.core.X / numpy._core.X (renamed in numpy 2), resolved without the numpy.core shim's warning."""
    tail = module.split(".", 2)[2]
    for prefix in ("numpy._core.", "numpy.core."):
        try:
            return getattr(importlib.import_module(prefix + tail), name)
        except (ImportError, AttributeError):
            continue
    raise pickle.UnpicklingError(f"this numpy cannot rebuild {module}.{name}")


def _latin1_bytes(text, encoding: str = "latin1") -> bytes:
    """What Python 3 writes for a bytes object at pickle protocol <= 2: _codecs.encode(str, 'latin1')."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1", "iso-8859-1"):
        raise pickle.UnpicklingError(f"refusing to unpickle _codecs.encode({type(text).__name__}, {encoding!r}): "
                                     f"a weights .pkl should hold only numpy arrays")
    return text.encode("latin1")


class _SafeNumpyUnpickler(pickle.Unpickler):
    """Unpickles only dicts of numpy arrays (the VGGFace2 Caffe-converted .pkl); anything else is refused.

    Accepts what numpy 1.x / 2.x write for arrays at any pickle protocol (Python 2's str data too, with
    encoding='latin1'): ndarray/dtype, _reconstruct, scalar, _frombuffer (protocol 5), and the latin-1
    _codecs.encode Python 3 uses for bytes at protocol 2. Every other global (a class, os.system, ...)
    raises pickle.UnpicklingError before anything is built or called.
    """

    _ALLOWED = {("collections", "OrderedDict"), ("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_bytes
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: a weights .pkl should hold only "
                                         f"numpy arrays")
        if module.startswith(("numpy.core.", "numpy._core.")):
            return _numpy_internal(module, name)
        return super().find_class(module, name)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    """name -> tensor from a torch checkpoint (fer_kit.models.checkpoints reads it, however wrapped) or a
    VGGFace2-style .pkl of numpy arrays; non-tensor entries (epoch counters...) are dropped."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".pkl" and not zipfile.is_zipfile(path):   # a .pkl written by torch.save is a zip: torch.load
        try:
            with open(path, "rb") as fh:
                state = _SafeNumpyUnpickler(fh, encoding="latin1").load()
        except Exception as err:    # refused globals, truncated files, malformed array data
            why = str(err) if isinstance(err, pickle.UnpicklingError) else f"{type(err).__name__}: {err}"
            raise pickle.UnpicklingError(f"{path}: {why}. A weights .pkl should be a pickle of name -> numpy "
                                         f"array (as VGGFace2-pytorch's resnet50_ft_weight.pkl); a torch "
                                         f"checkpoint should be saved with torch.save(state_dict).") from err
        if not isinstance(state, dict):
            raise ValueError(f"{path}: expected a dict of name -> numpy array; got {type(state).__name__}")
        out = {}
        for k, v in state.items():
            if isinstance(v, np.generic):
                v = np.asarray(v)
            if not isinstance(v, np.ndarray) or v.dtype.kind not in "biuf":
                raise ValueError(f"{path}: entry {k!r} is {type(v).__name__}"
                                 f"{'' if not isinstance(v, np.ndarray) else ' of dtype ' + str(v.dtype)}, "
                                 f"not a numeric numpy array; is it a weights file?")
            out[str(k)] = torch.as_tensor(v)
        return out
    return read_checkpoint(path)


read_weights = _read_weights


def _is_counter(key: str) -> bool:
    """BatchNorm's num_batches_tracked: a step counter, not a weight (absent from older and Caffe-converted files)."""
    return key.endswith("num_batches_tracked")


def load_trunk_weights(trunk: nn.Module, path: str | Path, min_match: float = 0.9) -> list[str]:
    """Load a local checkpoint into a trunk, remapping common key prefixes; returns the weights left unloaded.

    Checkpoints arrive as a bare state dict or wrapped in {'state_dict': ...} / {'model': ...}, with
    `module.` (DataParallel) or `features.` prefixes, or as the VGGFace2 .pkl of numpy arrays (see the
    module docstring); torchvision ResNet names (conv1, layer1...) are timm's too. Entries that the trunk
    lacks (the classifier fc.*) are skipped. Two mismatches are errors, not a silently random or silently
    truncated model: fewer than `min_match` of the trunk's weights found (BatchNorm's num_batches_tracked
    counters not counted), or fewer than `min_match` of the file's weights under the trunk's own top-level
    modules used (a deeper network of the same family: a ResNet-34 file matches every ResNet-18 name).
    """
    path = Path(path)
    state = _read_weights(path)
    own = trunk.state_dict()
    weights = [k for k in own if not _is_counter(k)]
    mapped, offered = {}, []
    tops = {k.split(".", 1)[0] for k in weights}
    for k, v in state.items():
        k = _strip(k)
        if k.split(".", 1)[0] in tops and not _is_counter(k):
            offered.append(k)                                  # a trunk weight by its name: conv1, layer3...
        if k in own and own[k].shape == v.shape:
            mapped[k] = v.to(own[k].dtype)
    n_loaded = sum(1 for k in weights if k in mapped)
    if n_loaded < min_match * len(weights):
        missing = [k for k in weights if k not in mapped][:5]
        raise ValueError(f"{path}: only {n_loaded} of {len(weights)} backbone weights matched by name and shape "
                         f"(e.g. missing {missing}); is it a checkpoint for this backbone?")
    unused = [k for k in offered if k not in mapped]
    if len(unused) > (1 - min_match) * len(offered):
        raise ValueError(f"{path}: {len(unused)} of its {len(offered)} backbone weights have no place in this "
                         f"backbone (e.g. {unused[:5]}); is it a checkpoint for a deeper or wider network?")
    trunk.load_state_dict(mapped, strict=False)
    return [k for k in weights if k not in mapped]


def feature_channels(trunk: nn.Module) -> int:
    return int(trunk.num_features)
