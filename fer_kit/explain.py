"""Where a model looks: Grad-CAM and friends (pytorch-grad-cam), raw attention-head maps, and a pointing
score that checks the maps against the face regions whose action units define each expression.

Grad-CAM (Selvaraju et al. 2017) weights the channels of one layer's feature map A (C, h, w) by the mean
gradient of a target (a class logit) with respect to them, sums, and keeps the positive part:
    cam = ReLU(sum_c w_c A_c),   w_c = mean_ij d target / d A_cij,
then upsamples the (h, w) map to the input. Which layer is the "target layer" decides what the map can
show: a late layer knows about the class but is coarse (DAN-R18 at 80 px sees a 3 x 3 map, so the map is
nine bilinear blobs); an early one is sharp but knows little. Grad-CAM++ weights positive gradients
per location, EigenCAM takes the first principal component of A (no gradient, no class), ScoreCAM masks
the input with each upsampled channel and weights channels by the target's score (one forward pass per
channel: the slowest).

The kit's models return named tuples; pytorch-grad-cam wants one tensor. `CamModel` extends the
registry's `LogitsOnly` wrapper with (1) a choice of output (DDAMFN's VA head, for `VATarget`), and
(2) named target layers per model, some of them "taps": an identity module run on the *input* of a
module through a forward pre-hook, so a tensor that the model computes inline (DAN's spatially attended
map x * a of each head, DDAMFN's attention-weighted map x * att) becomes a layer Grad-CAM can hook,
without touching the model's code. Paper B's model takes a batch of single frames as clips of one
frame, so its per-frame trunk is explained frame by frame.

The pointing score (an "energy-based pointing game", Wang et al., Score-CAM, 2020, divided by the
region's size): the synthetic faces are drawn from action units, and the generator writes the 68
landmarks, so each face's class says which regions must change (brows for AU1/2/4, lids for AU6/7, upper
lip and nostrils for AU10, mouth corners for AU12/15, lips for AU23/24/25, lips and jaw for AU26).
    score = (share of the map's mass inside the class's regions) / (share of the image they cover)
is 1.0 for a uniform map (no preference), 1 / share for a map entirely inside the regions, 0 for one
entirely outside. An empty map (Grad-CAM found no positive evidence) is scored 1.0 and flagged. Neutral
(no AU) and Other (a mixture, no fixed AU set) have no region: their faces are left out of the score.
"""
from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, ScoreCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from . import metrics
from .config import FromParams, TrainConfig, comma_list, is_lsd_model
from .data.synthetic import PROTOTYPES
from .models import DAN, DDAMFN, RegNetTransformer
from .models.registry import LogitsOnly
from .names import check_names
from .paths import output_dir, shown

__all__ = ["METHODS", "METHOD_LABELS", "CamModel", "VATarget", "target_layers", "cam_maps", "attention_maps",
           "AU_REGION", "REGIONS", "class_aus", "region_mask", "class_mask", "pointing_score", "Faces",
           "load_faces", "faces_from_arrays", "pointing_scores", "attention_pointing", "load_run",
           "untrained_model", "fallback_config", "obtain_model", "PAPER_RUNS", "ExplainConfig",
           "predict_proba", "confident_mistakes", "confidence_by_outcome", "pointing_gap", "pointing_sentence", "pointing_by_outcome",
           "outcome_sentence", "method_gaps", "method_gaps_sentence", "explorer"]

# pytorch-grad-cam classes by the names notebooks and configs use
METHODS: dict[str, type] = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": EigenCAM,
                            "scorecam": ScoreCAM}
METHOD_LABELS = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "eigencam": "EigenCAM", "scorecam": "ScoreCAM",
                 "attention": "raw attention"}


# ------------------------------------------------------------------------------------------------------
# One tensor out, named layers in

class CamModel(LogitsOnly):
    """LogitsOnly for pytorch-grad-cam: returns one tensor (`output="logits"`, or a named field of the
    model's output such as DDAMFN's "va") and knows the model's target layers (`layers`, name -> list of
    modules, the default first). Use it in a `with` block, or call `close()`: taps are forward pre-hooks
    on the wrapped model and stay until removed."""

    def __init__(self, model: nn.Module, output: str = "logits"):
        super().__init__(model)
        self.output = output
        self.taps = nn.ModuleDict()          # identity modules Grad-CAM can hook (no parameters)
        self._handles: list = []
        self.layers: dict[str, list[nn.Module]] = _default_layers(self)

    def tap_input(self, name: str, module: nn.Module) -> nn.Module:
        """An identity module that sees `module`'s first input on every forward pass: a hookable layer
        for a tensor the model computes inline (e.g. x * attention)."""
        tap = nn.Identity()
        self.taps[name] = tap

        def pre_hook(_module, args):
            return (tap(args[0]), *args[1:])
        self._handles.append(module.register_forward_pre_hook(pre_hook))
        return tap

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output == "logits":
            return super().forward(x)                       # (B, C)
        value = getattr(self.model(x), self.output, None)
        if value is None:
            raise ValueError(f"{type(self.model).__name__} has no output {self.output!r}")
        return value                                        # e.g. (B, 2) valence, arousal

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "CamModel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _last_stage(trunk: nn.Module) -> nn.Module:
    """The trunk's last block: the last child holding a convolution (timm ResNet layer4, RegNet s4),
    and in a Sequential stage its last block (layer4[-1]; the same output tensor as layer4)."""
    stage = next((m for m in reversed(list(trunk.children())) if any(isinstance(c, nn.Conv2d) for c in m.modules())),
                 None)
    if stage is None:
        raise ValueError(f"{type(trunk).__name__} has no convolutional stage to explain")
    return stage[-1] if isinstance(stage, nn.Sequential) else stage


def _default_layers(cm: CamModel) -> dict[str, list[nn.Module]]:
    """Per model, the target layers the papers' figures use (first = default):
    DAN / paper E: the trunk's last block, its ResNet layer3 (a map twice as fine), and each head's
    spatially attended map (x * a, the input of the head's channel attention; DAN's own Grad-CAM script
    targets `cat_head{i}.sa`);
    DDAMFN: the attention-weighted map x * att fed to GDConv, and the trunk's last map;
    paper C: layer3 (its Grad-CAM figures), and layer2 (what SCAN sees);
    paper B: the per-frame RegNet trunk; any other model: its last convolutional stage."""
    m = cm.model
    from .models.scan_cci import SCANCCI

    if isinstance(m, DAN):                           # DAN, dan_r50, paper E's DANLandmarks
        layers = {"trunk": [_last_stage(m.features)]}
        if isinstance(getattr(m.features, "layer3", None), nn.Sequential):
            layers["layer3"] = [m.features.layer3[-1]]   # twice as fine (5 x 5 at 80 px), one stage earlier
        for i, head in enumerate(m.heads):
            layers[f"head{i}"] = [cm.tap_input(f"head{i}", head.ca)]
        return layers
    if isinstance(m, DDAMFN):
        return {"attention": [cm.tap_input("attention", m.gdconv)], "trunk": [m.trunk.expand]}
    if isinstance(m, SCANCCI):
        return {"layer3": [m.trunk.layer3], "layer2": [m.trunk.layer2]}
    if isinstance(m, RegNetTransformer):
        return {"trunk": [_last_stage(m.backbone)]}
    trunk = next((getattr(m, n) for n in ("trunk", "features", "backbone") if hasattr(m, n)), m)
    return {"trunk": [_last_stage(trunk)]}


def target_layers(model: nn.Module) -> list[str]:
    """The names of a model's target layers (default first), e.g. ['trunk', 'head0', ...] for DAN."""
    with CamModel(model) as cm:
        return list(cm.layers)


class VATarget:
    """A regression target for pytorch-grad-cam: `sign` x output[index] of one sample (index 0 =
    valence, 1 = arousal of DDAMFN's VA head; wrap the model with CamModel(model, output="va")).
    sign=-1 asks what lowers it."""

    def __init__(self, index: int = 0, sign: float = 1.0):
        self.index, self.sign = index, sign

    def __call__(self, model_output: torch.Tensor) -> torch.Tensor:
        return self.sign * model_output[..., self.index]


def _targets(targets, n: int) -> list | None:
    """None (the predicted class), a class index, one index per image, a target callable, or a list of them."""
    if targets is None:
        return None
    if callable(targets):
        return [targets] * n
    if isinstance(targets, (int, np.integer)):
        return [ClassifierOutputTarget(int(targets))] * n
    targets = list(targets)
    if len(targets) != n:
        raise ValueError(f"got {len(targets)} targets for {n} images")
    return [t if callable(t) else ClassifierOutputTarget(int(t)) for t in targets]


def cam_maps(model: nn.Module, images: torch.Tensor, method: str = "gradcam", layer: str | None = None,
             targets=None, output: str = "logits", batch_size: int = 32, score_batch_size: int = 64) -> np.ndarray:
    """Maps (N, H, W) in [0, 1] for images (N, 3, H, W), each at the input's size.

    method: a key of METHODS; layer: a name of CamModel(model).layers (None = the model's default);
    targets: None (the predicted class), a class index, one per image, or callables (e.g. VATarget with
    output="va"). The result is checked here (count, shape, finite, range): pytorch-grad-cam's `with`
    block prints and swallows an IndexError, which would otherwise surface later as a missing variable.
    """
    check_names([method], list(METHODS), "method")
    n = len(images)
    if output != "logits" and targets is None:
        raise ValueError(f"output={output!r} is not a classifier: pass targets (e.g. VATarget(0))")
    tgt = _targets(targets, n)
    cm = model if isinstance(model, CamModel) else CamModel(model, output)
    was_training = cm.model.training
    maps: list[np.ndarray] = []
    try:
        layer = layer or next(iter(cm.layers))
        check_names([layer], list(cm.layers), "target layer")
        with METHODS[method](model=cm, target_layers=cm.layers[layer]) as cam:
            cam.batch_size = score_batch_size          # ScoreCAM: masked inputs per forward pass
            for i in range(0, n, batch_size):
                quiet = contextlib.redirect_stderr(io.StringIO()) if method == "scorecam" else contextlib.nullcontext()
                with quiet:                            # ScoreCAM draws a tqdm bar per image
                    maps.append(cam(input_tensor=images[i:i + batch_size],
                                    targets=None if tgt is None else tgt[i:i + batch_size]))
    finally:
        cm.model.zero_grad(set_to_none=True)
        cm.model.train(was_training)
        if cm is not model:
            cm.close()
    out = np.concatenate(maps) if maps else np.empty((0,))
    expected = (n, *images.shape[-2:])
    if out.shape != expected:
        raise RuntimeError(f"{METHOD_LABELS[method]} on {layer!r} returned maps of shape {out.shape}, expected "
                           f"{expected} (see the message pytorch-grad-cam printed above)")
    if not np.isfinite(out).all():
        raise RuntimeError(f"{METHOD_LABELS[method]} on {layer!r} returned non-finite values")
    return np.clip(out, 0.0, 1.0)


def _minmax(maps: torch.Tensor) -> torch.Tensor:
    """Each map (..., H, W) scaled to [0, 1], as pytorch-grad-cam scales its maps."""
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - lo) / (hi - lo + 1e-7)


@torch.no_grad()
def attention_maps(model: nn.Module, images: torch.Tensor) -> np.ndarray:
    """Each head's raw attention map (N, k, H, W) in [0, 1], upsampled (bilinear) onto the face.

    DAN and paper E: the spatial attention a (B, k, h, w) each head multiplies its map by; DDAMFN: each
    head's dual-direction map (B, k, 512, h, w) averaged over channels (the model takes the max over
    heads per channel, then x * att). Min-max scaled per map, like the CAMs."""
    was_training = model.training
    model.eval()
    try:
        out = model(images)
    finally:
        model.train(was_training)
    if hasattr(out, "attention") and out.attention.ndim == 4:
        att = out.attention                                  # (B, k, h, w)
    elif hasattr(out, "heads") and out.heads.ndim == 5:
        att = out.heads.mean(dim=2)                          # (B, k, 512, h, w) -> (B, k, h, w)
    else:
        raise ValueError(f"{type(model).__name__} has no spatial attention heads (DAN, paper E and DDAMFN do)")
    att = F.interpolate(att.float(), size=tuple(images.shape[-2:]), mode="bilinear", align_corners=False)
    return _minmax(att).numpy()                              # (B, k, H, W)


# ------------------------------------------------------------------------------------------------------
# Action-unit regions from the 68 landmarks

# Which face region each ABAW action unit changes (as the renderer draws them, face_render._geometry).
AU_REGION: dict[str, str] = {
    "AU1": "brows", "AU2": "brows", "AU4": "brows",           # inner / outer brow raiser, brow lowerer
    "AU6": "lids", "AU7": "lids",                              # cheek raiser (narrows the eye), lid tightener
    "AU10": "upper lip",                                       # upper lip raiser (lifts lip and nostrils)
    "AU12": "mouth corners", "AU15": "mouth corners",         # lip corner puller / depressor
    "AU23": "lips", "AU24": "lips", "AU25": "lips",            # lip tightener, pressor, lips part
    "AU26": "lips and jaw",                                    # jaw drop
}
REGIONS = ("brows", "lids", "upper lip", "mouth corners", "lips", "lips and jaw")
_SHIFT = 3                                                     # cv2 sub-pixel bits: coordinates x 8


def class_aus(name: str) -> tuple[str, ...]:
    """The action units that define an expression class (synthetic.PROTOTYPES); () for Neutral and Other."""
    return PROTOTYPES.get(name, ())


def _pts(p: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(p, np.float64) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _hull(mask: np.ndarray, points: np.ndarray, grow: float) -> None:
    """Fill the convex hull of points, grown by `grow` px (the outline drawn 2 x grow thick)."""
    hull = cv2.convexHull(_pts(points))
    cv2.fillConvexPoly(mask, hull, 1, cv2.LINE_8, _SHIFT)
    if grow >= 0.5:
        cv2.polylines(mask, [hull], True, 1, max(int(round(2 * grow)), 1), cv2.LINE_8, _SHIFT)


def region_mask(landmarks: np.ndarray, region: str, size: int | tuple[int, int]) -> np.ndarray:
    """A boolean (H, W) mask of one face region from 68 landmarks (x, y) in the map's pixel coordinates.

    Sizes scale with the inter-ocular distance d, so a region covers the same part of every face:
    brows = both brow lines 0.45 d thick plus the gap between them (AU4 pulls them together);
    lids = each eye grown by 0.2 d; upper lip = nostrils and upper lip grown by 0.1 d; mouth corners =
    discs of 0.3 d; lips = the outer lip contour grown by 0.12 d; lips and jaw = lips down to the chin.
    """
    check_names([region], list(REGIONS), "region")
    h, w = (size, size) if isinstance(size, (int, np.integer)) else size
    p = np.asarray(landmarks, np.float64)                         # (68, 2) x, y
    d = float(np.linalg.norm(p[36:42].mean(0) - p[42:48].mean(0)))   # inter-ocular distance, px
    m = np.zeros((h, w), np.uint8)
    if region == "brows":
        for line in (p[17:22], p[22:27]):
            cv2.polylines(m, [_pts(line)], False, 1, max(int(round(0.45 * d)), 1), cv2.LINE_8, _SHIFT)
        _hull(m, np.concatenate([p[19:25], p[[27]]]), 0.1 * d)    # between the brows (frown lines)
    elif region == "lids":
        _hull(m, p[36:42], 0.2 * d)
        _hull(m, p[42:48], 0.2 * d)
    elif region == "upper lip":
        _hull(m, np.concatenate([p[31:36], p[48:55]]), 0.1 * d)
    elif region == "mouth corners":
        for k in (48, 54):
            cv2.circle(m, tuple(int(v) for v in _pts(p[k])[0, 0]), int(round(0.3 * d * (1 << _SHIFT))), 1, -1,
                       cv2.LINE_8, _SHIFT)
    elif region == "lips":
        _hull(m, p[48:60], 0.12 * d)
    elif region == "lips and jaw":
        _hull(m, np.concatenate([p[48:60], p[6:11]]), 0.12 * d)
    return m.astype(bool)


def class_mask(landmarks: np.ndarray, class_name: str, size: int | tuple[int, int]) -> np.ndarray:
    """The union of the regions of the AUs that define `class_name`; all False for Neutral and Other, and
    where the landmarks are unknown (NaN: a dataset without them)."""
    h, w = (size, size) if isinstance(size, (int, np.integer)) else size
    mask = np.zeros((h, w), bool)
    if not np.isfinite(landmarks).all():
        return mask
    for region in sorted({AU_REGION[a] for a in class_aus(class_name)}):
        mask |= region_mask(landmarks, region, (h, w))
    return mask


def pointing_score(cam: np.ndarray, mask: np.ndarray) -> float:
    """(share of the map's mass inside mask) / (share of the image mask covers): 1.0 for a uniform map,
    1 / share for a map inside the mask, 0 for one outside it; NaN for an empty map or mask."""
    cam = np.clip(np.asarray(cam, np.float64), 0, None)
    mask = np.asarray(mask, bool)
    if cam.shape != mask.shape:
        raise ValueError(f"map {cam.shape} and mask {mask.shape} differ in shape")
    total, share = cam.sum(), mask.mean()
    if total <= 0 or share == 0:
        return float("nan")
    return float(cam[mask].sum() / total / share)


# ------------------------------------------------------------------------------------------------------
# Faces with their regions

@dataclass
class Faces:
    """Validation faces ready for explaining: network inputs, pixels to draw on, labels, landmarks and
    the class regions, all at the model's input size S."""

    images: torch.Tensor        # (N, 3, S, S) normalised network input
    pixels: np.ndarray          # (N, S, S, 3) float in [0, 1], for overlays
    labels: np.ndarray          # (N,) class index into `classes`
    classes: tuple[str, ...]
    landmarks: np.ndarray       # (N, 68, 2) pixel (x, y) at size S
    masks: np.ndarray           # (N, S, S) bool: regions of the class's AUs (all False for Neutral, Other)
    source: str = ""
    videos: np.ndarray | None = None   # (N,) video of each face, for intervals over videos (None: one per face)

    def __post_init__(self):
        if self.videos is None:
            self.videos = np.array([f"face_{i}" for i in range(len(self.labels))])

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def scorable(self) -> np.ndarray:
        """Faces whose class has AU regions (not Neutral, not Other) and whose landmarks are known."""
        return self.masks.any(axis=(1, 2))

    def first_of(self, class_names: Sequence[str]) -> list[int]:
        """The first face of each named class that is among these faces (a dataset may lack some)."""
        return [int(np.flatnonzero(self.labels == self.classes.index(c))[0]) for c in class_names
                if c in self.classes and (self.labels == self.classes.index(c)).any()]

    def subset(self, index) -> "Faces":
        idx = np.asarray(index)
        return Faces(self.images[torch.as_tensor(idx)], self.pixels[idx], self.labels[idx], self.classes,
                     self.landmarks[idx], self.masks[idx], self.source, self.videos[idx])


def faces_from_arrays(images: np.ndarray, labels: np.ndarray, landmarks: np.ndarray, classes: Sequence[str],
                      size: int | None = None, source: str = "") -> Faces:
    """Faces from uint8 (N, H, W, 3) images with file-pixel landmarks (synthetic.render_faces), resized to
    `size`; landmarks follow the resize (pixel centres: x' = (x + 0.5) s - 0.5)."""
    from .data.transforms import eval_transform

    x = torch.as_tensor(np.ascontiguousarray(images)).permute(0, 3, 1, 2)            # (N, 3, H, W) uint8
    h = x.shape[-1]
    size = size or h
    if size != h:
        x = F.interpolate(x.float(), size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False).round().clamp(0, 255).byte()
    pts = (np.asarray(landmarks, np.float64) + 0.5) * (size / h) - 0.5
    labels = np.asarray(labels, np.int64)
    tf = eval_transform()
    return Faces(images=torch.stack([tf(im) for im in x]), pixels=x.permute(0, 2, 3, 1).numpy() / 255.0,
                 labels=labels, classes=tuple(classes), landmarks=pts.astype(np.float32),
                 masks=np.stack([class_mask(p, classes[k], size) for p, k in zip(pts, labels)]), source=source)


def _stratified(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Up to n indices, classes taking turns (rare classes are not crowded out), in a seeded order."""
    rng = np.random.default_rng(seed)
    pools = [list(rng.permutation(np.flatnonzero(labels == c))) for c in np.unique(labels)]
    picks: list[int] = []
    while len(picks) < n and any(pools):
        for pool in pools:
            if pool and len(picks) < n:
                picks.append(int(pool.pop()))
    return np.sort(np.asarray(picks, np.int64))


def _val_table(cfg: TrainConfig):
    """The run's validation frames, with their landmarks where the dataset has them (the synthetic faces
    and LSD do; RAF-DB, AffectNet and the others do not, nor an Aff-Wild2 copy without landmarks/)."""
    from .data.abaw import read_expr_any, read_landmarks
    from .data.sources import dataset_root, lsd_tables
    from .data.splits import read_splits

    if is_lsd_model(cfg.model):
        return lsd_tables(cfg.data_root, cfg.n_frames, cfg.balance, cfg.seed, cfg.style, cfg.val_style, False)[1]
    if cfg.dataset != "abaw":
        return read_splits(cfg.dataset, cfg.data_root, cfg.num_classes, cfg.seed)[1]
    root, _ = dataset_root(cfg.data_root, cfg.n_frames, cfg.balance, cfg.seed, style=cfg.style, progress=False)
    table = read_expr_any(root, "Validation_Set", cfg.num_classes)
    return read_landmarks(root, table) if (Path(root) / "landmarks").is_dir() else table


def load_faces(cfg: TrainConfig, n_faces: int = 120, seed: int = 0) -> Faces:
    """n_faces validation faces of a run's data (classes taking turns), at the run's image size. Without
    landmarks a face has no AU regions: its maps can be drawn but not scored (`Faces.scorable` is False)."""
    from .data.transforms import eval_transform
    from .losses import denormalize_landmarks
    from .train import frame_dataset

    table = _val_table(cfg)
    marked = table.landmarks is not None
    if marked:
        table = table.subset(np.isfinite(table.landmarks).all(axis=(1, 2)))
    table = table.subset(_stratified(table.labels, n_faces, seed))
    s = cfg.image_size
    ds = frame_dataset(cfg, table, eval_transform(), "landmarks" if marked else "expr", progress=False)
    pixels = torch.stack([ds.image(i) for i in range(len(ds))])            # (N, 3, S, S) uint8
    pts = denormalize_landmarks(ds.landmarks, s).numpy() if marked else np.full((len(table), 68, 2), np.nan,
                                                                                  np.float32)   # (N, 68, 2) at S
    masks = np.stack([class_mask(p, table.classes[k], s) for p, k in zip(pts, table.labels)])   # empty if NaN
    return Faces(images=torch.stack([ds.transform(im) for im in pixels]),
                 pixels=pixels.permute(0, 2, 3, 1).numpy() / 255.0, labels=table.labels.copy(),
                 classes=tuple(table.classes), landmarks=pts, masks=masks,
                 source=table.report.source, videos=table.videos.copy())


# ------------------------------------------------------------------------------------------------------
# Pointing scores

@torch.no_grad()
def predict_proba(model: nn.Module, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, C) of images (N, 3, H, W), in eval mode."""
    was_training = model.training
    model.eval()
    try:
        logits = [LogitsOnly(model)(images[i:i + batch_size]).float() for i in range(0, len(images), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(logits).softmax(dim=1).numpy()


def _rows(faces: Faces, idx: np.ndarray, maps: np.ndarray, probs: np.ndarray, method: str, layer: str) -> list[dict]:
    """Table rows; an empty map (Grad-CAM found no positive evidence anywhere) points nowhere, so it
    scores as a uniform map, 1.0, and is flagged `empty_map` (dropping it would flatter a model that is
    often empty-handed)."""
    return [{"face": int(i), "class": faces.classes[faces.labels[i]], "method": method, "layer": layer,
             "score": 1.0 if not m.any() else pointing_score(m, faces.masks[i]), "empty_map": not m.any(),
             "predicted": faces.classes[int(probs[i].argmax())], "correct": bool(probs[i].argmax() == faces.labels[i])}
            for i, m in zip(idx, maps)]


def pointing_scores(model: nn.Module, faces: Faces, methods: Sequence[str] = ("gradcam",),
                    layers: Sequence[str] | None = None, max_faces: dict[str, int] | None = None,
                    batch_size: int = 32) -> pd.DataFrame:
    """One row per scorable face x method x layer: the pointing score of the map for the face's *true*
    class (does the evidence for the right answer sit where the AUs act?), with the prediction beside it.
    layers: names of CamModel(model).layers (None = the default one); max_faces: a cap per method (e.g.
    {"scorecam": 8}: one forward pass per channel per face), the faces then chosen with classes taking turns."""
    idx = np.flatnonzero(faces.scorable)
    probs = predict_proba(model, faces.images)
    rows: list[dict] = []
    with CamModel(model) as cm:
        for layer in layers or [next(iter(cm.layers))]:
            for method in methods:
                cap = (max_faces or {}).get(method, len(idx))
                use = idx if cap >= len(idx) else idx[_stratified(faces.labels[idx], cap, seed=0)]
                maps = cam_maps(cm, faces.images[use], method, layer, targets=faces.labels[use], batch_size=batch_size)
                rows += _rows(faces, use, maps, probs, method, layer)
    return pd.DataFrame(rows)


def attention_pointing(model: nn.Module, faces: Faces) -> pd.DataFrame:
    """Pointing scores of each head's raw attention map (method "attention", layer "head<i>")."""
    idx = np.flatnonzero(faces.scorable)
    maps = attention_maps(model, faces.images[idx])                        # (n, k, H, W)
    probs = predict_proba(model, faces.images)
    return pd.DataFrame([r for k in range(maps.shape[1])
                         for r in _rows(faces, idx, maps[:, k], probs, "attention", f"head{k}")])


def confident_mistakes(probs: np.ndarray, labels: np.ndarray, n: int = 6) -> np.ndarray:
    """Indices of the n wrong predictions made with the highest confidence, most confident first."""
    wrong = np.flatnonzero(probs.argmax(1) != labels)
    return wrong[np.argsort(-probs[wrong].max(1))][:n]


def _right_minus_wrong(values: np.ndarray, right: np.ndarray, videos, n_boot: int, seed: int) -> tuple[float, float, float]:
    """Mean of `values` where `right` minus where not, and its 95% interval over videos (resamples holding
    only one of the two groups are left out; too many of them and there is no interval)."""
    def gap(i):
        r = right[i]
        return values[i][r].mean() - values[i][~r].mean() if r.any() and not r.all() else np.nan

    lo, hi = metrics.video_bootstrap(gap, videos, n_boot=n_boot, seed=seed, skip_nan=True)
    return float(gap(np.arange(len(values)))), lo, hi


def confidence_by_outcome(probs: np.ndarray, labels: np.ndarray, videos, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean top-class probability on the frames a model got right and on those it got wrong, right - wrong
    with a 95% interval over videos, and mean confidence beside accuracy (over 1: over-confident).
    A confidence worth reading is higher when the model is right; gap None when all are right or all wrong,
    or the confidence is one value everywhere (resamples that draw only right or only wrong frames are left
    out of the interval)."""
    conf, right = probs.max(1), probs.argmax(1) == np.asarray(labels)
    out = {"right": float(conf[right].mean()) if right.any() else np.nan, "n_right": int(right.sum()),
           "wrong": float(conf[~right].mean()) if not right.all() else np.nan, "n_wrong": int((~right).sum()),
           "confidence": float(conf.mean()), "accuracy": float(right.mean()), "gap": None}
    same = np.ptp(conf) < 1e-6       # one confidence everywhere (an untrained head): float32 rounding is no gap
    if right.any() and not right.all() and not same:
        gain, lo, hi = _right_minus_wrong(conf, right, videos, n_boot, seed)
        verdict = "higher" if lo > 0 else "lower" if hi < 0 else "within the noise"
        out["gap"] = {"gain": gain, "low": lo, "high": hi, "verdict": verdict}
    g = out["gap"]
    reading = ("its top probability is the same on every frame: nothing to compare" if same else
               "every frame is right, or every one wrong: nothing to compare" if g is None else
               f"right - wrong {g['gain']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}] over videos: " +
               ({"higher": "it is surer when it is right, beyond the noise",
                 "lower": "it is surer when it is *wrong*, beyond the noise",
                 "within the noise": "this split cannot tell its confidence when right from when wrong"}[g["verdict"]]
                if np.isfinite(g["low"]) else "one group holds too few videos for an interval: no verdict"))
    calibration = "over-confident" if out["confidence"] > out["accuracy"] else "under-confident"
    out["sentence"] = (f"mean top probability {out['right']:.2f} on the {out['n_right']} frames it got right, {out['wrong']:.2f} "
                       f"on the {out['n_wrong']} it got wrong; {reading}. Its mean confidence {out['confidence']:.2f} against "
                       f"its accuracy {out['accuracy']:.2f}: {calibration}")
    return out


def pointing_gap(scores: pd.DataFrame, faces: Faces, layer: str, method: str = "Grad-CAM", model: str = "dan",
                 n_boot: int = 1000, seed: int = 0) -> dict:
    """Trained vs untrained mean pointing score on the same faces, each with a 95% interval over videos
    and the trained - untrained gap with a paired one. A face's neighbours in its video look alike, so
    the faces are not independent draws: videos are resampled, not faces."""
    d = scores[(scores.model == model) & (scores.method == method) & (scores.layer == layer)]
    arms = {state: d[d.state == state].groupby("face").score.mean() for state in ("trained", "untrained")}
    shared = arms["trained"].index.intersection(arms["untrained"].index)
    if len(shared) == 0:
        raise ValueError(f"no face has both a trained and an untrained {method} score on {model}'s {layer!r}")
    t, u = (arms[s].loc[shared].to_numpy() for s in ("trained", "untrained"))
    videos = faces.videos[shared.to_numpy()]
    out = {"layer": layer, "method": method, "faces": len(shared), "videos": len(np.unique(videos))}
    for name, x in (("trained", t), ("untrained", u)):
        lo, hi = metrics.video_bootstrap(lambda i: x[i].mean(), videos, n_boot=n_boot, seed=seed)
        out.update({name: float(x.mean()), f"{name}_low": lo, f"{name}_high": hi})
    out["gap"] = metrics.paired_gain(lambda i: t[i].mean(), lambda i: u[i].mean(), videos, n_boot=n_boot, seed=seed)
    return out


POINTING_BAR, UNTRAINED_BAR = 1.5, 1.2   # a trained net should point at least this much, its untrained twin less


def pointing_sentence(gap: dict, bar: float = POINTING_BAR, control_bar: float = UNTRAINED_BAR) -> str:
    """The run's own reading of `pointing_gap`, against the bars notebook 10 prints: pointing well above a
    uniform map once trained, and near it before."""
    g = gap["gap"]
    verdict = {"better": "training moved the maps onto the AU regions beyond the noise",
               "worse": "the trained network points *less* at the AU regions than the untrained one, beyond the noise",
               "within the noise": "the gap is within the noise: this run cannot tell trained from untrained"}[g["verdict"]]
    bars = (f"the trained score {'reaches' if gap['trained'] >= bar else 'stays below'} {bar} and the untrained "
            f"one {'stays below' if gap['untrained'] < control_bar else 'reaches'} {control_bar}")
    return (f"{gap['method']} on {gap['layer']}, {gap['faces']} faces from {gap['videos']} videos: trained "
            f"{gap['trained']:.2f} [{gap['trained_low']:.2f}, {gap['trained_high']:.2f}], untrained "
            f"{gap['untrained']:.2f} [{gap['untrained_low']:.2f}, {gap['untrained_high']:.2f}]; gap "
            f"{g['gain']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}]: {verdict}; {bars}.")


def pointing_by_outcome(scores: pd.DataFrame, faces: Faces, layer: str, method: str = "Grad-CAM", model: str = "dan",
                        n_boot: int = 1000, seed: int = 0) -> dict | None:
    """The trained model's mean pointing score (map of the true class) on the faces it got right and on
    those it got wrong, and right - wrong with a 95% interval over videos: does a mistake come with
    evidence looked for off the AU regions? None when every face is right, or every one wrong."""
    d = scores[(scores.model == model) & (scores.state == "trained") & (scores.method == method) & (scores.layer == layer)]
    d = d.groupby("face").agg(score=("score", "mean"), correct=("correct", "first"))
    right, x = d["correct"].to_numpy(bool), d["score"].to_numpy(float)
    if right.all() or not right.any():
        return None
    videos = faces.videos[d.index.to_numpy()]
    gain, lo, hi = _right_minus_wrong(x, right, videos, n_boot, seed)
    verdict = "better" if lo > 0 else "worse" if hi < 0 else "within the noise"
    return {"layer": layer, "method": method, "right": float(x[right].mean()), "wrong": float(x[~right].mean()),
            "n_right": int(right.sum()), "n_wrong": int((~right).sum()), "videos": len(np.unique(videos)),
            "gap": {"gain": float(gain), "low": lo, "high": hi, "verdict": verdict}}


def outcome_sentence(outcome: dict | None) -> str:
    """The run's own reading of `pointing_by_outcome`."""
    if outcome is None:
        return "the model got every scored face right, or every one wrong: nothing to compare"
    g = outcome["gap"]
    reading = {"better": "the right answers point more at the AU regions than the mistakes, beyond the noise",
               "worse": "the mistakes point *more* at the AU regions than the right answers, beyond the noise",
               "within the noise": "this run cannot tell the two apart: a mistake does not show in where the map sits"
               }[g["verdict"]] if np.isfinite(g["low"]) else "one group holds too few videos for an interval: no verdict"
    return (f"{outcome['method']} on {outcome['layer']} (map of the true class): right {outcome['right']:.2f} on "
            f"{outcome['n_right']} faces, wrong {outcome['wrong']:.2f} on {outcome['n_wrong']}; right - wrong "
            f"{g['gain']:+.2f} [{g['low']:+.2f}, {g['high']:+.2f}] over {outcome['videos']} videos: {reading}.")


def method_gaps(scores: pd.DataFrame, faces: Faces, nets: dict[str, nn.Module], methods: Sequence[str] = ("gradcam", "eigencam"),
                layer: str | None = None, model: str = "dan", seed: int = 0) -> dict[str, dict]:
    """`pointing_gap` (trained vs untrained) per method on one layer; `nets` maps "trained" and "untrained"
    to the networks, used only to score the methods `scores` lacks (on at most 60 faces, classes taking turns).
    A method that scores as high on the untrained network says more about faces than about learning."""
    layer = layer or target_layers(nets["trained"])[0]
    d = scores[(scores.model == model) & (scores.layer == layer)]
    missing = [m for m in methods if {"trained", "untrained"} - set(d[d.method == METHOD_LABELS[m]].state)]
    extra = [pointing_scores(net, faces, missing, layers=[layer], max_faces={m: 60 for m in missing}).assign(model=model, state=state)
             for state, net in nets.items()] if missing else []
    extra = [e.assign(method=e["method"].map(METHOD_LABELS)) for e in extra]
    both = pd.concat([d, *extra], ignore_index=True)
    return {METHOD_LABELS[m]: pointing_gap(both, faces, layer, METHOD_LABELS[m], model, seed=seed) for m in methods}


def method_gaps_sentence(gaps: dict[str, dict]) -> str:
    """Which method scores highest on the trained network, and which one training moved most (`method_gaps`)."""
    parts = [f"{m} ({g['faces']} faces): trained {g['trained']:.2f}, untrained {g['untrained']:.2f}, gap {g['gap']['gain']:+.2f} "
             f"[{g['gap']['low']:+.2f}, {g['gap']['high']:+.2f}] ({g['gap']['verdict']})" for m, g in gaps.items()]
    top = max(gaps, key=lambda m: gaps[m]["trained"])
    moved = max(gaps, key=lambda m: gaps[m]["gap"]["gain"])
    reading = (f"{top} scores highest and is also the one training moved most" if top == moved else
               f"{top} scores highest, but training moved {moved} most: {top}'s score owes more to the face than to what was learnt")
    return "; ".join(parts) + f". {reading}."


# ------------------------------------------------------------------------------------------------------
# Models: the notebooks' runs, or small ones trained here

# Run folders the training notebooks write (relative to output_dir()), per paper; the first found is used.
PAPER_RUNS: dict[str, tuple[str, ...]] = {
    "dan": ("runs/04_train_dan",),                                         # paper A (notebook 04)
    "regnet_transformer": ("runs/05_combine", "runs/05_per_frame"),        # paper B (notebook 05)
    "scan_cci": ("runs/06_train_scan_cci",),                               # paper C (notebook 06)
    "ddamfn": ("runs/07_train_ddamfn_multitask",),                         # paper D (notebook 07)
    "dan_landmarks": ("runs/08_learning_from_synthetic_data",),            # paper E (notebook 08)
}


def _resolve(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    return path if path.is_absolute() else output_dir() / path


def load_run(run_dir: str | Path) -> tuple[nn.Module, TrainConfig]:
    """The best checkpoint of a run folder, in eval mode, with its TrainConfig (`train.load_run`)."""
    from . import train   # explain -> train, never the other way round

    return train.load_run(_resolve(run_dir))


def untrained_model(cfg: TrainConfig) -> nn.Module:
    """The same architecture at its seeded random initialisation (the control for the pointing score)."""
    from . import train

    torch.manual_seed(cfg.seed)
    return train.build_model(cfg).eval()


def unfit_reason(family: str, dataset: str = "abaw", data_root: str | None = None) -> str | None:
    """Why a paper's model cannot train on this data (None: it can)."""
    if dataset == "lsd":
        return None if family == "dan_landmarks" else "LSD's 6 classes train paper E's model only"
    if family == "ddamfn" and dataset != "abaw":
        return "multi-task: needs the ABAW layout's valence-arousal and AU labels"
    if family == "dan_landmarks" and not (dataset == "abaw" and data_root is None):
        return "paper E's 6 LSD classes: trains on LSD (dataset='lsd') or the synthetic faces"
    return None


def fallback_config(family: str, n_frames: int = 3000, epochs: int = 2, seed: int = 0,
                    max_batches: int | None = None, progress: bool = False, dataset: str = "abaw",
                    data_root: str | None = None) -> TrainConfig:
    """A small run of one paper's model for when its notebook's run folder is absent (laptop presets;
    paper B per frame; paper C on the 7 ABAW 2020 classes; paper D multi-task; paper E on the 6 LSD
    classes, photo faces in both splits), on the synthetic faces or on `dataset` at `data_root`."""
    check_names([family], list(PAPER_RUNS), "model family")
    if (why := unfit_reason(family, dataset, data_root)) is not None:
        raise ValueError(f"{family} does not train on dataset={dataset!r}: {why}")
    base = dict(n_frames=n_frames, epochs=epochs, seed=seed, max_batches=max_batches, progress=progress,
                out_dir=f"runs/10_{family}", dataset=dataset, data_root=data_root)
    per_family = {
        "dan": dict(model="dan"),
        "regnet_transformer": dict(model="regnet_transformer", preset="laptop_b", variant="no_att_trans",
                                   clip_length=1, batch_size=64),
        "scan_cci": dict(model="scan_cci_small", preset="laptop_c", num_classes=7, backbone="resnet50"),
        "ddamfn": dict(model="ddamfn", task="mtl", preset="laptop_d", weighted_sampling=False),
        "dan_landmarks": dict(model="dan_landmarks", preset="laptop_e", num_classes=6, backbone="resnet18",
                              weighted_sampling=False),
    }
    return TrainConfig(**base, **per_family[family])


def _data_of(dataset: str, data_root: str | None) -> str:
    return "the synthetic faces" if data_root is None else f"{dataset} at {shown(data_root)}"


def _saved_config(run: Path) -> dict:
    """The config a run folder was trained with, from its config.json (no checkpoint to load)."""
    return json.loads((run / "config.json").read_text())


def obtain_model(family: str, run_dirs: Sequence[str] | None = None, fallback: TrainConfig | None = None,
                 ) -> tuple[nn.Module, TrainConfig, str]:
    """(model, config, how) from the first existing run folder of `run_dirs` (default PAPER_RUNS[family])
    trained on the fallback's data; else from an earlier fallback run with the same config; else train
    `fallback` now."""
    from . import train

    cfg = fallback or fallback_config(family)
    data = (cfg.dataset, cfg.data_root)
    passed = []
    for run in map(_resolve, run_dirs if run_dirs is not None else PAPER_RUNS[family]):
        if (run / "best.pt").exists():
            saved = _saved_config(run)
            trained_on = (saved.get("dataset", "abaw"), saved.get("data_root"))
            if trained_on == data:
                model, run_cfg = load_run(run)
                return model, run_cfg, f"loaded {shown(run)}"
            passed.append(f"{shown(run)} was trained on {_data_of(*trained_on)}, not {_data_of(*data)}")
    note = f" ({'; '.join(passed)})" if passed else ""
    done = _resolve(cfg.out_dir)
    if (done / "best.pt").exists() and _saved_config(done) == cfg.to_dict():
        model, cfg = load_run(done)
        return model, cfg, f"loaded {shown(done)} (trained earlier by this notebook, same settings){note}"
    with contextlib.redirect_stdout(io.StringIO()):       # the epoch lines: summarised below instead
        result = train.fit(cfg)
    frames = json.loads(result.metrics_path.read_text())["data"]["train_frames"]
    return result.model.eval(), cfg, (f"trained here: {cfg.epochs} epochs on {frames:,} frames of {_data_of(*data)}, "
                                      f"best validation score {result.best['score']:.3f} -> {shown(result.out_dir)}{note}")


# ------------------------------------------------------------------------------------------------------
# Notebook 10's parameters

@dataclass
class ExplainConfig(FromParams):
    """Notebook 10's parameters (flat literals; `models` and `methods` are comma-separated names)."""

    run_dir: str = "runs/04_train_dan"    # notebook 04's DAN run; trained here (small) when absent
    data_root: str | None = None          # None: the synthetic faces; else the dataset's folder
    dataset: str = "abaw"                 # data_root's layout (as TrainConfig.dataset)
    models: str = "dan,regnet_transformer,scan_cci,ddamfn,dan_landmarks"   # papers A, B, C, D, E
    methods: str = "gradcam,gradcam++,eigencam,scorecam"
    n_faces: int = 120                    # validation faces per model (classes taking turns)
    scorecam_faces: int = 2               # ScoreCAM runs one forward pass per channel: fewer faces
    n_frames: int = 3000                  # data of the small runs trained when a notebook's run is absent
    epochs: int = 1                       # epochs of those small runs
    max_batches: int | None = 20          # cap on batches per epoch of those runs (None: whole epochs)
    interactive: bool = True              # build the ipywidgets explorer (a static figure is drawn either way)
    video_source: str | None = None       # a video file or folder of images of your own; None: the kit's test video
    video_smooth: int = 9                 # frames in the moving average of the video's probabilities
    seed: int = 0
    out_dir: str = "runs/10_gradcam_attention"   # pointing scores (csv) and summary.json of this notebook
    figures_dir: str = "figures"
    progress: bool = False                # progress bars while training the small runs

    def __post_init__(self):
        from .data.splits import KINDS

        check_names(self.model_names, list(PAPER_RUNS), "model family")
        check_names(self.method_names, list(METHODS), "method")
        check_names([self.dataset], KINDS, "dataset")
        self.require_positive("n_faces", "scorecam_faces", "n_frames", "epochs")
        if self.dataset != "abaw" and self.data_root is None:
            raise ValueError(f"dataset={self.dataset!r} reads data_root, which is None; pass the dataset's folder")
        if not self.families:
            raise ValueError(f"none of models={self.models!r} trains on dataset={self.dataset!r}: "
                             + "; ".join(f"{f}: {why}" for f, why in self.skipped.items()))

    @property
    def model_names(self) -> list[str]:
        return comma_list(self.models)

    @property
    def method_names(self) -> list[str]:
        return comma_list(self.methods)

    @property
    def skipped(self) -> dict[str, str]:
        """The asked-for families that cannot train on this dataset, and why."""
        return {f: why for f in self.model_names if (why := unfit_reason(f, self.dataset, self.data_root))}

    @property
    def families(self) -> list[str]:
        """The asked-for families that train on this dataset (the ones the notebook explains)."""
        return [f for f in self.model_names if f not in self.skipped]

    def fallback(self, family: str) -> TrainConfig:
        return fallback_config(family, self.n_frames, self.epochs, self.seed, self.max_batches, self.progress,
                               self.dataset, self.data_root)


# ------------------------------------------------------------------------------------------------------
# The interactive explorer

def explorer(entries: dict[str, tuple[nn.Module, Faces]], methods: Sequence[str] = ("gradcam",),
             draw: Callable | None = None):
    """An ipywidgets explorer: face, model, method, target class and layer (DAN heads among them) ->
    face, overlay and the class's AU regions. `entries` maps a name to (model, faces). Returns the
    widget box; `draw(pixels, cam, mask, title)` defaults to plots.cam_panel."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    from . import plots

    draw = draw or plots.cam_panel
    names = list(entries)
    model_w = w.Dropdown(options=names, description="model")
    face_w = w.IntSlider(0, 0, len(entries[names[0]][1]) - 1, description="face")
    method_w = w.Dropdown(options=[(METHOD_LABELS[m], m) for m in methods] + [("raw attention", "attention")],
                          description="method")
    target_w = w.Dropdown(description="target")
    layer_w = w.Dropdown(description="layer")
    out = w.Output()

    def refresh_options(*_):
        model, faces = entries[model_w.value]
        face_w.max = len(faces) - 1
        target_w.options = [("true class", -1)] + [(c, k) for k, c in enumerate(faces.classes)]
        layer_w.options = target_layers(model)
        target_w.value, layer_w.value = -1, layer_w.options[0]    # (ipywidgets 8 leaves a new list unselected)

    def render(*_):
        model, faces = entries[model_w.value]
        i = min(face_w.value, len(faces) - 1)
        k = int(faces.labels[i]) if target_w.value in (-1, None) else int(target_w.value)
        with out:
            out.clear_output(wait=True)
            if method_w.value == "attention":
                try:
                    maps = attention_maps(model, faces.images[i:i + 1])[0]
                except ValueError as err:
                    print(err)
                    return
                head = int(layer_w.value[4:]) if str(layer_w.value).startswith("head") else 0
                cam, what = maps[min(head, len(maps) - 1)], f"raw attention, head {head}"
            else:
                cam = cam_maps(model, faces.images[i:i + 1], method_w.value, layer_w.value, targets=k)[0]
                what = f"{METHOD_LABELS[method_w.value]} on {layer_w.value}"
            mask = class_mask(faces.landmarks[i], faces.classes[k], faces.pixels.shape[1])
            fig = draw(faces.pixels[i], cam, mask, f"{model_w.value}: {what}\ntarget {faces.classes[k]}, "
                                                  f"true {faces.classes[faces.labels[i]]}")
            display(fig)
            plt.close(fig)

    refresh_options()
    model_w.observe(lambda ch: (refresh_options(), render()), names="value")
    for widget in (face_w, method_w, target_w, layer_w):
        widget.observe(render, names="value")
    render()
    return w.VBox([w.HBox([model_w, face_w]), w.HBox([method_w, target_w, layer_w]), out])
