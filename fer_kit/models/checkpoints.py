"""Reading checkpoint files, the kit's one reader (run folders, trunk weights, published files), and
loading the published DDAMFN / MobileFaceNet checkpoints (SainingZhang/DDAMFN) into the kit's DDAMFN.

`read_file` is torch.load with weights_only=True and errors that say what to do; `state_dict_of` unwraps
whatever holds the weights ({'model': ...}, {'state_dict': ...}, a pickled module); `read_checkpoint` is
the two together.

Files met in practice (notes §5.1, §5.4 and the repo's issues #1, #2, #16):
- `MFN_msceleb.pth`, the MS-Celeb MixedFeatureNet trunk: a **whole pickled nn.Module**, not a state dict.
  Unpickling runs code from the file, so torch >= 2.6 refuses it unless `weights_only=False`; the kit does
  that only when the caller passes `trust_pickle=True`. Classes that cannot be imported (the published
  `networks.MixedFeatureNet` is not installed) are replaced by empty nn.Module stand-ins, which is enough
  to read the weights. Convert it once and use the plain file from then on:

      from fer_kit.models.checkpoints import read_checkpoint
      torch.save(read_checkpoint("MFN_msceleb.pth", trust_pickle=True), "MFN_msceleb_state_dict.pth")

- `affecnet8_epoch25_acc0.6469.pth`, `rafdb_...pth` (DDAMFN++): `{'model_state_dict': DDAMNet.state_dict(),
  ...}`; keys `features.<i>.` (the trunk as an nn.Sequential), `cat_head<i>.CoordAtt.`, `Linear.` (GDConv),
  `fc.` and `bn.` (classifier).
- anything above saved from nn.DataParallel (`module.` prefixes), or wrapped in 'state_dict'/'model'/'net'.

Published -> kit names: conv1 / features.0 -> trunk.stem; conv2_dw / features.1 -> trunk.stem_dw;
conv_23, conv_3.model, conv_34, conv_4.model, conv_45, conv_5.model / features.2 ... 7 -> trunk.down1,
stage1, down2, stage2, down3, stage3; conv_6_sep / features.8 -> trunk.expand; inside blocks conv ->
expand, conv_dw.mixed_depthwise_conv -> mixconv.convs, CA.conv1/bn1/conv2/conv3 ->
coord_att.reduce/bn/attn_h/attn_w, prelu -> act; cat_head<i>.CoordAtt -> heads.<i> with Linear_h/Linear_w
-> pool_h/pool_w; Linear -> gdconv. Skipped: layers the published forward never calls (MDConv bn/prelu,
each head's 7x7 Linear, the BN1d after fc), MobileFaceNet's embedding tail (conv_6_dw, linear, bn), and
the classifier `fc`, whose classes are AffectNet's (index 7 = Contempt, not Aff-Wild2's Other):
paper D re-initialises its heads, so does the kit unless `load_classifier=True`.
"""
from __future__ import annotations

import pickle
import re
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch
from torch import nn

__all__ = ["load_published_checkpoint", "read_checkpoint", "read_file", "remap_published_key", "state_dict_of",
           "CheckpointReport"]

# where files keep their weights: DAN's MS-Celeb R18 and timm under state_dict, DDAMFN++ under model_state_dict,
# the kit's run folders under model
_WRAPPERS = ("state_dict", "model_state_dict", "model", "net")

# the trunk's stages under both published spellings: MixedFeatureNet attributes, DDAMNet.features indices
_STAGES = [("conv1", "0", "stem"), ("conv2_dw", "1", "stem_dw"), ("conv_23", "2", "down1"),
           ("conv_3.model", "3.model", "stage1"), ("conv_34", "4", "down2"), ("conv_4.model", "5.model", "stage2"),
           ("conv_45", "6", "down3"), ("conv_5.model", "7.model", "stage3"), ("conv_6_sep", "8", "expand")]
_TOP = [(re.compile(rf"^(?:{re.escape(mfn)}|features\.{re.escape(idx)})\."), f"trunk.{kit}.")
        for mfn, idx, kit in _STAGES]
_TOP += [(re.compile(r"^cat_head(\d+)\.CoordAtt\."), r"heads.\1."), (re.compile(r"^Linear\."), "gdconv.")]

_BLOCK = r"^(trunk\.(?:down\d|stage\d\.\d+))\."          # one MixBlock
_HEAD = r"^(heads\.\d+)\."                                # one dual-direction attention head
_SKIP = [re.compile(p) for p in (
    _BLOCK + r"conv_dw\.(?:bn|prelu)\.",                  # MDConv's bn/prelu: declared, never called
    _HEAD + r"(?:Linear|flatten)\.",                      # CoordAtt's 7x7 Linear: declared, never called
    r"^(?:conv_6_dw|conv_6_flatten|linear|bn)\.",         # MFN embedding tail / DDAMNet's unused BN1d
)]
_INNER = [(re.compile(p), r) for p, r in (
    (_BLOCK + r"conv\.", r"\1.expand."),
    (_BLOCK + r"conv_dw\.mixed_depthwise_conv\.", r"\1.mixconv.convs."),
    (_BLOCK + r"CA\.conv1\.", r"\1.coord_att.reduce."), (_BLOCK + r"CA\.bn1\.", r"\1.coord_att.bn."),
    (_BLOCK + r"CA\.conv2\.", r"\1.coord_att.attn_h."), (_BLOCK + r"CA\.conv3\.", r"\1.coord_att.attn_w."),
    (_HEAD + r"Linear_h\.", r"\1.pool_h."), (_HEAD + r"Linear_w\.", r"\1.pool_w."),
    (_HEAD + r"conv1\.", r"\1.reduce."), (_HEAD + r"bn1\.", r"\1.bn."),
    (_HEAD + r"conv2\.", r"\1.attn_h."), (_HEAD + r"conv3\.", r"\1.attn_w."),
    (r"\.prelu\.", ".act."),                              # Conv_block's PReLU
)]


def remap_published_key(key: str, load_classifier: bool = False) -> str | None:
    """The kit's name for a published key, or None for weights the kit does not use. Kit keys pass through."""
    while key.startswith("module."):                      # nn.DataParallel, possibly nested
        key = key[len("module."):]
    if key.startswith("fc."):
        return "expr_head." + key[3:] if load_classifier else None
    for pattern, repl in _TOP:
        key, n = pattern.subn(repl, key, count=1)
        if n:
            break
    if any(p.search(key) for p in _SKIP):
        return None
    for pattern, repl in _INNER:
        key = pattern.sub(repl, key, count=1)
    return key


class _Stub(nn.Module):
    """Stands in for a pickled class that cannot be imported; nn.Module.__setstate__ restores its weights."""

    def forward(self, *args, **kwargs):
        raise RuntimeError("a stand-in for a class that could not be imported: use its state_dict() only")


class _LenientUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        try:
            return super().find_class(module, name)
        except (ModuleNotFoundError, AttributeError):
            return type(name, (_Stub,), {"__module__": f"fer_kit.stub.{module}"})


# a module object, not a SimpleNamespace: torch.load reads pickle_module.__name__ (its dill version check)
_lenient_pickle = types.ModuleType("fer_kit_lenient_pickle")
_lenient_pickle.__dict__.update({k: getattr(pickle, k) for k in dir(pickle) if not k.startswith("__")})
_lenient_pickle.Unpickler = _LenientUnpickler


def read_file(path: str | Path, trust_pickle: bool = False):
    """A checkpoint file's contents as saved (a run's whole dict, or a state dict), read with
    weights_only=True: tensors and plain values, never pickled code. trust_pickle=True reads a whole
    pickled module (the published MFN_msceleb.pth), with stand-ins for classes that cannot be imported."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise ValueError(
                f"{path}: refused to load: it pickles Python objects (a pickled nn.Module, a function or a class, as "
                "the published MFN_msceleb.pth), and unpickling can run code; a checkpoint should hold only tensors "
                "and plain values. If you trust the file, pass trust_pickle=True once and save a plain copy: "
                "torch.save(fer_kit.models.checkpoints.read_checkpoint(path, trust_pickle=True), 'plain.pth')") from err
    except (RuntimeError, EOFError) as err:
        raise ValueError(f"{path} is not a readable checkpoint (empty, cut short or not written by torch.save: "
                         f"{(str(err) or type(err).__name__).splitlines()[0]}); use another checkpoint, or train "
                         "again") from err
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_lenient_pickle)


def state_dict_of(obj, path: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """The weights inside what read_file returned, however wrapped (under 'state_dict' / 'model_state_dict'
    / 'model' / 'net', nested, or a module); entries that are not tensors (epoch counters) are dropped."""
    for _ in range(3):                                    # {'model': {'state_dict': ...}} happens
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in _WRAPPERS if k in obj and isinstance(obj[k], (Mapping, nn.Module))), None)
            if inner is None:
                break
            obj = inner
        if isinstance(obj, nn.Module):
            obj = obj.state_dict()
    weights = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)} \
        if isinstance(obj, Mapping) else {}
    if not weights:
        raise ValueError(f"{path}: expected a state dict (names -> tensors), a dict wrapping one under "
                         f"{_WRAPPERS}, or a pickled nn.Module; got {type(obj).__name__} without tensors")
    return weights


def read_checkpoint(path: str | Path, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The state dict held by a checkpoint file, however it is wrapped (keys as in the file)."""
    return state_dict_of(read_file(path, trust_pickle), path)


@dataclass
class CheckpointReport:
    """What load_published_checkpoint did (kit key names unless said otherwise)."""
    path: str
    loaded: list[str] = field(default_factory=list)       # kit keys set from the file
    missing: list[str] = field(default_factory=list)      # kit keys left as initialised (e.g. the task heads)
    skipped: list[str] = field(default_factory=list)      # file keys deliberately unused (dead layers, fc)
    unmatched: list[str] = field(default_factory=list)    # file keys with no kit counterpart or another shape


def load_published_checkpoint(model: nn.Module, path: str | Path, trust_pickle: bool = False,
                              load_classifier: bool = False, min_match: float = 0.9) -> CheckpointReport:
    """Load a published MobileFaceNet (trunk only) or DDAMFN checkpoint, or a kit state dict, into `model`.

    `model` is a kit DDAMFN, or its bare MixedFeatureNet trunk. Keys are remapped (see the module
    docstring) and a tensor is loaded only when its shape matches. If fewer than `min_match` of the
    trunk's weights match, nothing is loaded and a ValueError names the file and the unmatched keys: a
    random trunk is never passed off as a pretrained one. The task heads are not in published files and
    stay randomly initialised, as in paper D (`load_classifier=True` copies the published 8-way `fc`
    into `expr_head`; its classes are then in AffectNet order, see notes §0).
    """
    state = read_checkpoint(path, trust_pickle)
    own = model.state_dict()
    bare_trunk = not any(k.startswith("trunk.") for k in own)
    report = CheckpointReport(str(path))
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new = remap_published_key(key, load_classifier)
        if new is None:
            report.skipped.append(key)
            continue
        if bare_trunk and new.startswith("trunk."):
            new = new[len("trunk."):]
        if new in own and own[new].shape == value.shape:
            mapped[new] = value
        else:
            report.unmatched.append(key if new == key else f"{key} -> {new}")

    trunk_keys = [k for k in own if (bare_trunk or k.startswith("trunk.")) and not k.endswith("num_batches_tracked")]
    found = sum(k in mapped for k in trunk_keys)
    if found < min_match * len(trunk_keys):
        missing = [k for k in trunk_keys if k not in mapped]
        raise ValueError(
            f"{path}: only {found} of {len(trunk_keys)} trunk weights matched by name and shape, so nothing was "
            f"loaded. Is it a MobileFaceNet/DDAMFN checkpoint? File keys with no match ({len(report.unmatched)}): "
            f"{report.unmatched[:8]}; trunk keys not found ({len(missing)}): {missing[:8]}")
    model.load_state_dict(mapped, strict=False)
    report.loaded = sorted(mapped)
    report.missing = [k for k in own if k not in mapped]
    return report
