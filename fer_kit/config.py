"""Run configuration: one dataclass whose fields are exactly the notebook's papermill parameters.

Papermill only warns about a parameter the notebook does not define, so `-p epoch 8` would silently
train with the default; `from_params` turns that into an error that names the misspelt parameter.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
import functools
import numbers
import os
import re
import types
import typing
from typing import Any

import numpy as np

from .names import check_names
from .schedules import SCHEDULES

def comma_list(text: str) -> list[str]:
    """A parameter that names several things ("dan, ddamfn,") as a clean list."""
    return [part.strip() for part in text.split(",") if part.strip()]


def check_types(cls, params: dict[str, Any]) -> None:
    """A notebook parameter of the wrong type (`-p epochs "8"`, `-p lr fast`) fails here with its name,
    not later deep inside training. An int is accepted where a float is meant."""
    hints = typing.get_type_hints(cls)
    for name, value in params.items():
        hint = hints[name]
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            kinds = typing.get_args(hint)
        else:
            kinds = (typing.get_origin(hint) or hint,)     # list[str] -> list
        kinds = tuple(k for k in kinds if isinstance(k, type))
        ok = any(_is_a(value, k) for k in kinds)
        if kinds and not ok:
            names = " or ".join("None" if k is type(None) else k.__name__ for k in kinds)
            raise TypeError(f"parameter {name} must be {names}; got {value!r} ({type(value).__name__}): "
                            f"write e.g. `-p {name} <value>` without quotes for a number")


def _is_a(value, kind: type) -> bool:
    """isinstance, with numpy numbers counted as numbers and True/False not counted as ints."""
    if kind in (int, float):
        number = numbers.Integral if kind is int else numbers.Real
        return isinstance(value, number) and not isinstance(value, (bool, np.bool_))
    return isinstance(value, kind) or (kind is bool and isinstance(value, np.bool_))


class FromParams:
    """What every notebook config shares: built from notebook or CLI parameters, rejecting any name
    that is not one of its fields (papermill itself only warns)."""

    @classmethod
    def from_params(cls, params: dict[str, Any]):
        check_names(params, [f.name for f in fields(cls)], "parameter")
        check_types(cls, params)
        return cls(**params)

    def require_positive(self, *names: str) -> None:
        """Counts (frames, epochs, faces...) must be at least 1."""
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; got {getattr(self, name)}")


# Optimiser recipes. "paper" is paper A Table 2 (meant for pretrained backbones on a GPU); "laptop"
# keeps its optimiser and schedule family but is sized for a CPU and random initialisation. 80 px is the
# smallest size at which DAN's heads see a 3x3 map: at 64 px (2x2) an 8-epoch run reached P_EXPR 0.66,
# at 80 px with the slower decay 0.87 by epoch 4 (synthetic default data, 2-core CPU).
# Paper D gives no optimiser settings; "paper_d" is the DDAMFN base code's AffectNet recipe (Adam 1e-4, no
# weight decay, batch 256, ExponentialLR 0.6, 2 heads, 112 px, notes §5.4) and "laptop_d" its CPU-sized,
# from-scratch version: 64 px (DDAMFN then sizes its whole-map kernels to the 4x4 map), batch 32, lr 1e-3.
# Paper C: "paper_c" is its recipe (SGD momentum 0.9, backbone lr 1e-4, SCAN/CCI lr 1e-3, wd 1e-3, lr x0.95 per
# epoch, 224 px; batch 128 as the code's default, the paper's text says 64). "laptop_c" keeps SGD and the
# schedule but trains from random init on a CPU: 48 px (the smallest input giving SCAN's 25 patches a 6x6
# layer2 map) and batch 32. Both learning rates are raised to 1e-1: the paper's 1e-4/1e-3 only fine-tune
# pretrained weights. Measured (scan_cci_small, synthetic 3,000 frames, 2-core CPU): lr 1e-2 left the loss
# where it started (6.61 -> 6.57 in 2 x 20 batches, ABAW2020 at the majority-class level 0.135); 5e-2 reached
# 0.162 in 4 x 40 batches; 1e-1 reached 0.167 in 3 x 40 (loss 6.51 -> 5.84).
# Paper B: Adam, batches of 16 clips of 64 frames, 112 px, 30 epochs; its text says the learning rate was
# found automatically, its code's config gives 1e-3 (AdamW, wd 5e-5, ReduceLROnPlateau x0.1 after 10 flat
# epochs, which a 30-epoch run barely reaches). "paper_b" is that recipe with a constant rate (lr_decay 1.0);
# the kit's Adam applies weight decay as L2 where AdamW decouples it. "laptop_b" keeps the optimiser, puts
# a smaller RegNetY (200MF, 368-d features) on 80 px frames, clips of 16 and batches of 4 clips (64 frames).
# From random init it needs a higher rate: per frame, 4,000 synthetic frames, 64 px, lr 1e-3 reached P_EXPR
# 0.11 in 3 epochs; 6,000 frames at 80 px and lr 3e-3 reached 0.22 in 4 (DAN-R18 learns faster, see 04).
# Paper E: its code's recipe (notes §6.3: Adam 1e-4, no weight decay, batch 128, ExponentialLR 0.6, 12 epochs,
# 4 heads, 224 px; ResNet-50 in both branches) is "paper_e"; "laptop_e" trains DAN-R18 plus a ResNet-18
# appearance branch from scratch at 80 px (DAN's heads then see a 3x3 map) with the laptop DAN rate.
# Augmentation: each preset names its paper's recipe (fer_kit.data.transforms.RECIPES). Paper A lists its
# augmentations without values ("paper_a"; its code applies none); paper B's code flips and jitters
# ("paper_b"); paper C's code flips and jitters ("paper_c"); paper D names none, so DDAMFN's base code's
# AffectNet recipe ("dan_affectnet"); paper E jitters, flips, erases and mixes ("paper_e", mixup alpha 0.1
# from its code). The laptop presets keep the kit's milder DAN recipe ("dan_laptop") that notebooks 04-08's
# defaults were sized with; `-p augment paper_c` (etc.) trains a laptop run with the paper's own recipe.
PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(batch_size=1024, image_size=224, lr=1e-4, weight_decay=1e-4, lr_decay=0.6, num_heads=4,
                  augment="paper_a"),
    "laptop": dict(batch_size=64, image_size=80, lr=1e-3, weight_decay=1e-4, lr_decay=0.9, num_heads=4,
                   augment="dan_laptop"),
    "paper_d": dict(batch_size=256, image_size=112, lr=1e-4, weight_decay=0.0, lr_decay=0.6, num_heads=2,
                    augment="dan_affectnet"),
    "laptop_d": dict(batch_size=32, image_size=64, lr=1e-3, weight_decay=0.0, lr_decay=0.9, num_heads=2,
                     augment="dan_laptop"),
    "paper_c": dict(optimizer="sgd", momentum=0.9, batch_size=128, image_size=224, lr=1e-4, head_lr=1e-3,
                    weight_decay=1e-3, lr_decay=0.95, augment="paper_c"),
    "paper_b": dict(backbone="regnety_016", clip_length=64, batch_size=16, image_size=112, lr=1e-3,
                    weight_decay=5e-5, lr_decay=1.0, augment="paper_b"),
    "laptop_b": dict(backbone="regnety_002", clip_length=16, batch_size=4, image_size=80,
                     lr=3e-3, weight_decay=5e-5, lr_decay=0.9, augment="dan_laptop"),
    "paper_e": dict(batch_size=128, image_size=224, lr=1e-4, weight_decay=0.0, lr_decay=0.6, num_heads=4,
                    landmark_backbone="resnet50", augment="paper_e", mixup_alpha=0.1),
    "laptop_e": dict(batch_size=32, image_size=80, lr=1e-3, weight_decay=1e-4, lr_decay=0.9, num_heads=4,
                     landmark_backbone="resnet18", augment="dan_laptop"),
    "laptop_c": dict(optimizer="sgd", momentum=0.9, batch_size=32, image_size=48,
                     lr=1e-1, head_lr=1e-1, weight_decay=1e-3, lr_decay=0.95, augment="dan_laptop"),
}
# the schedule a `minutes` run uses per preset (fer_kit.schedules): one-cycle for the Adam recipes, cosine
# with warm-up for SGD and for the papers' own recipes; an epoch-counted run keeps x lr_decay per epoch
CLOCK_SCHEDULES = {"laptop": "onecycle", "laptop_b": "onecycle", "laptop_d": "onecycle", "laptop_e": "onecycle",
                   "laptop_c": "cosine", "paper": "cosine", "paper_b": "cosine", "paper_c": "cosine",
                   "paper_d": "cosine", "paper_e": "cosine"}
TASKS = ("expr", "mtl", "va", "au")
EXIST = ("error", "resume", "overwrite")      # what fit() does with a run folder that already holds a run
REGNET_VARIANTS = ("combine", "only_att", "only_trans", "no_att_trans")   # = models.regnet_transformer.VARIANTS
OPTIMIZERS = ("adam", "sgd")
AUGMENT_ON = ("auto", "image", "batch")   # where a recipe runs: TrainConfig.augment_on
PRECISIONS = ("auto", "fp32", "bf16", "fp16")   # TrainConfig.precision, fer_kit.train.precision
CACHES = ("auto", "memory", "disk", "none")   # where decoded frames live: TrainConfig.cache, fer_kit.data.cache
MEMORY_GB = 2.0      # cache="auto": a split whose uint8 frames fit this many GiB is held in memory, a larger one on disk


@functools.lru_cache(maxsize=32)
def source_resolution(data_root: str | None, dataset: str = "abaw") -> int | None:
    """The side of the data's own images: the synthetic faces' render size, FER2013's 48 px pixel strings,
    else the shorter side of the first image found under data_root (None if there is none to read: the
    data loader reports why later)."""
    if data_root is None:
        from .data.synthetic import SyntheticConfig
        return SyntheticConfig.image_size
    if dataset == "fer2013":
        from .data.fer2013 import SIZE
        return SIZE
    from PIL import Image, UnidentifiedImageError

    from .data.folders import is_image
    for folder, dirs, files in os.walk(Path(data_root).expanduser()):
        dirs.sort()
        for name in sorted(files):
            if is_image(Path(name)):
                try:
                    with Image.open(Path(folder) / name) as im:
                        return min(im.size)
                except (OSError, UnidentifiedImageError):
                    continue
    return None


def fitted_image_size(preset: str, model: str, source: int | None) -> int:
    """A laptop preset's input size: its own, or the source's resolution where that is smaller (upsampling
    a 48 px face to 80 px pays 2.8x the pixels for no information), rounded down to a multiple of 16 and
    never below what the model needs (its registry entry's min_image_size)."""
    size = PRESETS[preset]["image_size"]
    if source is None or source >= size:
        return size
    need = getattr(_registered(model), "min_image_size", 32)
    return max(need, source // 16 * 16)


def image_size_note(cfg: "TrainConfig") -> str:
    """Which input size a run uses and why, in words."""
    preset = PRESETS[cfg.preset]["image_size"]
    source = source_resolution(cfg.data_root, cfg.dataset)
    of_source = f"the source's images are {source} px" if source else "the source's resolution is unknown"
    if cfg.image_size == preset:
        return f"{cfg.image_size} px: the {cfg.preset} preset's size ({of_source})"
    if cfg.preset.startswith("laptop") and cfg.image_size == fitted_image_size(cfg.preset, cfg.model, source):
        return (f"{cfg.image_size} px: {of_source}, below the {cfg.preset} preset's {preset} px (upsampling would "
                "add pixels, not information)")
    return f"{cfg.image_size} px: as given ({of_source}; the {cfg.preset} preset's size is {preset} px)"


def _registered(name: str):
    """A model name's registry entry: what it trains on (None for a name the registry does not know, which
    create_model reports with the valid choices)."""
    from .models import list_models, model_entry   # config must not import models at module load
    return model_entry(name) if name in list_models(include_test=True) else None


def is_lsd_model(name: str) -> bool:
    """Paper E's DAN + landmarks models (registry targets "landmarks") train on the 6 LSD classes with
    landmark targets."""
    entry = _registered(name)
    return entry is not None and entry.targets == "landmarks"


def score_name(model: str, task: str, num_classes: int) -> str:
    """What a run's "score" (its model-selection metric, train.evaluate's) measures."""
    return ("P" if task == "mtl" else "LSD mean F1" if is_lsd_model(model)
            else "ABAW2020" if num_classes == 7 else "P_EXPR")


@dataclass
class TrainConfig(FromParams):
    """Everything a training run depends on; `None` fields are filled from the preset."""

    # data
    data_root: str | None = None      # the dataset's folder; None = the embedded synthetic faces (ABAW layout)
    dataset: str = "abaw"             # data_root's layout: abaw, lsd, affectnet, rafdb, fer2013, fer2013_folders, expw, folders
    n_frames: int = 10_000            # synthetic only: frames generated (train + validation)
    balance: str = "sqrt"             # synthetic only: "sqrt" (tempered), "affwild2" (exact), "uniform"
    num_classes: int = 8              # 8 = ABAW3+ (with Other); 7 = ABAW 2020/2021 files and the 7-class datasets
                                      # (rafdb, fer2013, expw: 8 becomes 7); 6 = LSD (paper E)
    style: str = "photo"              # synthetic only: rendering style of the faces ("photo", "cartoon", "lowlight")
    val_style: str | None = None      # synthetic only: another style for the validation faces (paper E's domain shift)
    hidden_fraction: float = 0.0      # synthetic only, paper B: frames whose expression a hand or a blur hides (0-0.5)
    occlusion_fraction: float = 0.0   # synthetic only, paper C: frames with an eye, the mouth or the nose covered (0-0.5)
    expr_label_fraction: float = 1.0  # synthetic only, paper D: share of training videos with EXPR labels
    segment_frames: str = "4,12"      # synthetic only: "min,max" frames per expression segment (05 makes them last)
    weighted_sampling: bool = True    # paper A: inverse-frequency sampling of training frames (EXPR only)
    task: str = "expr"                # "expr" (8 expressions), "mtl" (paper D: VA + EXPR + AU), or "va" / "au" alone
    # model
    model: str = "dan"                # registry name
    backbone: str | None = None       # timm trunk; None = the preset's, else resnet18 (DAN); resnet50 = paper A
    landmark_backbone: str | None = None  # paper E: appearance-branch trunk; None = the preset's, else resnet50
    variant: str = "combine"          # paper B: combine (paper), only_att, only_trans (the code's yaml), no_att_trans
    position_bias: int = 0            # paper B: 0 (its attention is blind to frame order); k: learn a bias per frame distance up to k (kit diagnostic)
    num_heads: int | None = None      # attention heads; None = the preset's (DAN 4, DDAMFN 2)
    log_softmax_heads: bool | None = None  # DAN's heads log-softmaxed across heads before summing; None = the model's
                                      # own (DAN and paper A: True; paper E's code: False)
    pretrained: bool = False          # timm ImageNet weights (needs the internet once)
    init_from: str | None = None      # a kit checkpoint (e.g. runs/x/best.pt) whose matching weights start this run
    init_min_share: float = 0.9       # init_from must match at least this share of the model's tensors (by name and shape)
    # optimisation
    preset: str = "laptop"            # "laptop" (CPU, from scratch), "paper" (paper A Table 2); also paper_c, laptop_c, ...
    minutes: float = 0.0              # train for this long (steps + validations), the schedule sized to it; 0 = count epochs
    epochs: int = 3                   # passes over the training split when minutes is 0
    steps: int = 0                    # train exactly this many steps (e.g. a minutes run's, to repeat it); 0 = epochs
    schedule: str | None = None       # "exponential" (x lr_decay per epoch), "onecycle", "cosine"; None = exponential,
                                      # or the preset's per-step schedule (CLOCK_SCHEDULES) for minutes and steps
    clip_length: int | None = None    # paper B: frames per clip (64); None = the preset's, else 1 (single frames)
    batch_size: int | None = None     # images per batch, or clips per batch when clip_length > 1
    image_size: int | None = None     # None = the preset's; a laptop preset's no larger than the source's own resolution
    lr: float | None = None
    weight_decay: float | None = None
    lr_decay: float | None = None     # ExponentialLR gamma, stepped once per epoch
    optimizer: str | None = None      # "adam" or "sgd"; None = the preset's (adam unless the preset says sgd)
    head_lr: float | None = None      # lr of the branches/heads where a model has groups (paper C); None = preset's, else lr
    momentum: float | None = None     # SGD momentum; None = the preset's, else 0.9
    augment: str | None = None        # training augmentation recipe (dan_laptop, paper_a, paper_b, paper_c, paper_e, ...); None = the preset's
    augment_on: str = "auto"          # "image" (each face in the loader: the reference), "batch" (the whole batch on the
                                      # training device, fer_kit.data.batch_augment); "auto" = batch on a GPU, image on a CPU
    mixup_alpha: float | None = None  # mixup Beta(alpha, alpha) per batch, paper E's LSD models only; None = the preset's, 0 = off
    clip_grad: float = 1.0            # gradient-norm clipping (paper A's code)
    focal_gamma: float = 2.0          # focal loss focusing parameter (0 = cross-entropy)
    affinity_weight: float = 1.0      # paper A Eq. 3 weights all three terms 1
    partition_weight: float = 1.0
    landmark_weight: float = 1.0      # paper E: weight of the landmark MSE (1 in its code)
    attention_weight: float = 0.1     # paper D: DDAMFN's attention-head loss (fine-tuning stage only)
    freeze_epochs: int = 0            # paper D: first epochs train only the task heads, then everything
    # run
    seed: int = 0
    device: str = "auto"              # "auto" = cuda > mps > cpu
    precision: str = "auto"           # "fp32", "bf16", "fp16" (GPU) autocast; "auto" = bf16 where the device has it natively
                                      # (CPU: AVX512-BF16/AMX, unless the model is measured slower in it), fp16 on older GPUs
    deterministic: bool | None = None  # deterministic kernels for this run; None = on for CPU runs (seeded runs repeat),
                                      # off on CUDA (cudnn.benchmark); the process's settings come back after the run
    compile: bool = False             # torch.compile the training step's model (a first step that compiles, then faster ones)
                                      # and, with augment_on "batch", the recipe's colour steps (a first run compiles
                                      # for minutes on a 2-core CPU; later runs read inductor's cache)
    sync_bn: bool = False             # torchrun runs: BatchNorm over the global batch (SyncBatchNorm on GPUs), not each rank's share
    cache: str = "auto"               # decoded frames: "memory", "disk" (built once, rebuilt when a source file changes),
                                      # "none" (decoded per batch, in loader workers); "auto" = memory up to cache_gb, else disk
    cache_gb: float = MEMORY_GB       # the memory budget of cache "auto", GiB of frames per split
    cache_dir: str | None = None      # where disk caches go; None = frames/ under $FER_KIT_CACHE (else ~/.cache/fer_kit)
    workers: int | None = None        # decoding processes (cache builds, cache "none"); None = up to 4 cores
    out_dir: str = "runs/04_train_dan"   # relative paths are under the project folder
    figures_dir: str = "figures"      # where the notebook saves its figures
    max_batches: int | None = None    # stop each epoch early (smoke tests)
    progress: bool = True             # tqdm progress bars
    exist: str = "overwrite"          # out_dir already holds a run: "overwrite" (notebooks), "resume", or "error" (the CLI's default)
    checkpoint_minutes: float = 0.0   # also save a resumable last.pt every this many minutes within an epoch; 0 = per epoch only
    reuse: bool | None = None         # a finished run of this same config in out_dir is loaded, not trained again; None = only
                                      # in a workshop (`python -m fer_kit.workshop lab` sets FER_KIT_WORKSHOP=1)

    def __post_init__(self):
        if self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}; choose one of {sorted(PRESETS)}")
        if self.image_size is None and self.preset.startswith("laptop"):
            self.image_size = fitted_image_size(self.preset, self.model, source_resolution(self.data_root, self.dataset))
        for name, value in PRESETS[self.preset].items():
            if getattr(self, name) is None and not (name == "mixup_alpha" and not is_lsd_model(self.model)):
                setattr(self, name, value)    # (a preset's mixup is for its LSD models: paper E's loss takes soft targets)
        self.optimizer = self.optimizer or "adam"       # the presets that name no optimiser are Adam recipes
        self.backbone = self.backbone or "resnet18"
        self.landmark_backbone = self.landmark_backbone or "resnet50"
        self.clip_length = 1 if self.clip_length is None else self.clip_length
        self._check_dataset()
        self.head_lr = self.lr if self.head_lr is None else self.head_lr
        self.momentum = 0.9 if self.momentum is None else self.momentum
        self.augment = self.augment or "dan_laptop"
        self.mixup_alpha = self.mixup_alpha or 0.0
        from .data.transforms import RECIPES             # torch-heavy: imported only when a config is made
        if self.augment not in RECIPES:
            raise ValueError(f"unknown augment recipe {self.augment!r}; choose one of {', '.join(RECIPES)}")
        check_names([self.augment_on], AUGMENT_ON, "augment_on")
        check_names([self.cache], CACHES, "cache")
        check_names([self.precision], PRECISIONS, "precision")
        if not self.cache_gb > 0:
            raise ValueError(f"cache_gb must be > 0 (GiB of frames cache 'auto' may hold in memory); got {self.cache_gb}")
        if self.workers is not None and self.workers < 0:
            raise ValueError(f"workers must be >= 0 (0 = decode in the training process) or None; got {self.workers}")
        if self.augment_on == "batch" and self.augment == "paper_a":
            raise ValueError("augment 'paper_a' picks one of six whole pipelines per image and has no batched version; "
                             "use augment_on='image' (or 'auto' on a CPU)")
        if self.mixup_alpha < 0:
            raise ValueError(f"mixup_alpha must be >= 0 (0 = off); got {self.mixup_alpha}")
        if self.mixup_alpha and not is_lsd_model(self.model):
            raise ValueError(f"mixup (mixup_alpha={self.mixup_alpha}) is paper E's: it needs an LSD model "
                             f"(dan_landmarks*), not {self.model!r}; set mixup_alpha=0")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {self.optimizer!r}")
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}; got {self.task!r}")
        takes = getattr(_registered(self.model), "arguments", None) or ()
        if self.log_softmax_heads is not None and "log_softmax_heads" not in takes:
            raise ValueError(f"log_softmax_heads is an option of DAN's heads (dan*, dan_landmarks*); model={self.model!r} "
                             f"has none: leave it None")
        if self.task != "expr" and self.task not in getattr(_registered(self.model), "tasks", ("expr",)):
            raise ValueError(f"task={self.task!r} needs a model with VA, EXPR and AU heads (ddamfn); got model={self.model!r}")
        if not 0 <= self.freeze_epochs < self.epochs + 1:
            raise ValueError(f"freeze_epochs must be in 0..epochs ({self.epochs}); got {self.freeze_epochs}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1; got {self.epochs}")
        if self.minutes < 0 or self.steps < 0:
            raise ValueError(f"minutes and steps must be >= 0 (0 = count epochs); got minutes={self.minutes}, steps={self.steps}")
        if self.minutes and self.steps:
            raise ValueError(f"give minutes ({self.minutes}) or steps ({self.steps}), not both: each sets the run's length")
        per_step = bool(self.minutes or self.steps)
        self.schedule = self.schedule or (CLOCK_SCHEDULES[self.preset] if per_step else "exponential")
        check_names([self.schedule], SCHEDULES, "schedule")
        if per_step and self.schedule == "exponential":
            raise ValueError("schedule 'exponential' decays per epoch and cannot be sized to minutes or steps; use "
                             "schedule onecycle or cosine (or leave it empty for the preset's)")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (BatchNorm needs two samples); got {self.batch_size}")
        check_names([self.variant], REGNET_VARIANTS, "variant")
        if self.position_bias and "position_bias" not in takes:
            raise ValueError(f"position_bias is an option of paper B's attention over time (regnet_transformer); "
                             f"model={self.model!r} has none: leave it 0")
        if self.position_bias < 0:
            raise ValueError(f"position_bias is a number of frames (0 = off, as paper B); got {self.position_bias}")
        check_names([self.exist], EXIST, "exist")
        if not 0 <= self.init_min_share <= 1:
            raise ValueError(f"init_min_share must be in [0, 1]; got {self.init_min_share}")
        if not self.checkpoint_minutes >= 0:
            raise ValueError(f"checkpoint_minutes must be >= 0 (0 = a checkpoint per epoch only); got {self.checkpoint_minutes}")
        if self.clip_length < 1:
            raise ValueError(f"clip_length must be >= 1; got {self.clip_length}")
        if not re.fullmatch(r"\s*\d+\s*,\s*\d+\s*", self.segment_frames) or not 1 <= self.segment_range[0] <= self.segment_range[1]:
            raise ValueError(f"segment_frames must be 'min,max' with 1 <= min <= max (frames per expression "
                             f"segment); got {self.segment_frames!r}")
        if self.clip_length > 1 and not getattr(_registered(self.model), "clips", False):
            raise ValueError(f"clip_length={self.clip_length} needs a model over time (regnet_transformer); "
                             f"{self.model!r} classifies single frames")
        if is_lsd_model(self.model):
            if self.num_classes != 6 or self.task != "expr":
                raise ValueError(f"{self.model!r} is paper E's LSD model: num_classes must be 6 and task 'expr'; "
                                 f"got num_classes={self.num_classes}, task={self.task!r}")
        elif self.num_classes not in (7, 8):
            raise ValueError(f"num_classes must be 7 or 8 for Aff-Wild2 EXPR (6 only for dan_landmarks, paper E's "
                             f"LSD classes); got {self.num_classes}")

    def _check_dataset(self):
        from .data.splits import KINDS, SEVEN_CLASSES
        check_names([self.dataset], KINDS, "dataset")
        if self.dataset == "abaw":
            return
        if self.data_root is None:
            raise ValueError(f"dataset={self.dataset!r} reads data_root, which is None; pass the dataset's folder "
                             "(the embedded synthetic faces are in the ABAW layout: dataset='abaw')")
        if (self.dataset == "lsd") != is_lsd_model(self.model):
            raise ValueError("dataset 'lsd' (paper E's 6 classes) trains the LSD models (dan_landmarks*) and they "
                             f"train on it or on the synthetic faces; got dataset={self.dataset!r}, model={self.model!r}")
        if self.task != "expr" or self.clip_length != 1:
            raise ValueError(f"dataset={self.dataset!r} labels expressions of single images: task must be 'expr' "
                             f"and clip_length 1 (multi-task and clip runs read the ABAW layout); got task="
                             f"{self.task!r}, clip_length={self.clip_length}")
        if self.dataset in SEVEN_CLASSES and self.num_classes == 8:
            self.num_classes = 7      # its 7 basic classes: an empty Other would score F1 0 in the mean

    def synthetic_options(self) -> dict[str, Any]:
        """The generator options of the synthetic faces this run asks for (fer_kit.data.synthetic)."""
        return dict(hidden_fraction=self.hidden_fraction, occlusion_fraction=self.occlusion_fraction,
                    expr_label_fraction=self.expr_label_fraction, segment_frames=self.segment_range)

    @property
    def segment_range(self) -> tuple[int, int]:
        return tuple(int(n) for n in comma_list(self.segment_frames))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes) -> "TrainConfig":
        return replace(self, **changes)

    def train_config(self, **changes) -> "TrainConfig":
        """A notebook config's main run (or a variant of it with `changes`) as a plain TrainConfig: the
        flags `python -m fer_kit.train` takes for the same run."""
        return _as_train_config(self, changes)


@dataclass
class DanConfig(TrainConfig):
    """Notebook 04's parameters: paper A's DAN (the TrainConfig fields keep their meaning: the main run is
    `python -m fer_kit.train` with them); `compare` adds paper A's ablations on the same schedule."""

    n_frames: int = 8000              # about 4,100 training frames kept
    compare: bool = False             # also train DAN without the affinity and partition losses, with one head, and
                                      # with its four heads summed without the log-softmax across heads
    pretrain_epochs: int = 0          # > 0: each run first trains this long on other people's faces (pretrain_style)
                                      # and starts from there, as paper A's DAN started from an AffectNet DAN
    pretrain_style: str = "photo"     # the pretraining faces' style: photo = another dataset of the same kind

    def __post_init__(self):
        super().__post_init__()
        from .data.face_render import STYLES
        check_names([self.pretrain_style], STYLES, "pretrain_style")
        if self.pretrain_epochs < 0:
            raise ValueError(f"pretrain_epochs must be >= 0 (0 = start from random weights); got {self.pretrain_epochs}")
        if self.pretrain_epochs and self.init_from:
            raise ValueError(f"pretrain_epochs={self.pretrain_epochs} and init_from={self.init_from!r} both say "
                             "where the runs start: set one")

    def pretrain_for(self, run: "TrainConfig") -> "TrainConfig | None":
        """The run `run` starts from when pretrain_epochs > 0 (`pretraining`): the same model and losses as
        `run`, so an ablation's idea is off in both stages, as if the AffectNet DAN had been trained without it
        too (starting a one-head DAN from a four-head one would hand it a classifier fitted to four heads)."""
        if not self.pretrain_epochs:
            return None
        return pretraining(run, self.pretrain_style, self.n_frames, self.pretrain_epochs,
                           f"{run.out_dir}_pretrain_{self.pretrain_style}")

    def train_config(self, **changes) -> "TrainConfig":
        run = super().train_config(**changes)
        if self.pretrain_epochs and "init_from" not in changes:
            run.init_from = f"{self.pretrain_for(run).out_dir}/best.pt"
        return run

    def ablations(self, steps: int | None = None) -> dict[str, TrainConfig]:
        """Paper A's ideas switched off one at a time, each in its own run folder. `steps`: the main run's
        step count when the clock sized it, so each ablation trains the very same schedule (the same minutes
        on a busier machine would give it fewer steps)."""
        same = dict(minutes=0.0, steps=steps) if self.minutes and steps else {}
        return {"no affinity or partition loss": self.train_config(affinity_weight=0.0, partition_weight=0.0,
                                                                   out_dir=f"{self.out_dir}_no_af_pt", **same),
                "one attention head": self.train_config(num_heads=1, out_dir=f"{self.out_dir}_one_head", **same),
                "four heads summed": self.train_config(log_softmax_heads=False, out_dir=f"{self.out_dir}_summed_heads",
                                                       **same)}


@dataclass
class QuickstartConfig(TrainConfig):
    """Notebook 00's parameters: a DAN small enough to train in about a minute on a laptop CPU."""

    n_frames: int = 3000
    image_size: int | None = 64       # DAN's heads see a 2x2 map at 64 px
    epochs: int = 3
    out_dir: str = "runs/00_quickstart"
    progress: bool = False            # the epoch lines say enough in a first tour


@dataclass
class MultitaskConfig(TrainConfig):
    """Notebook 07's parameters: paper D's DDAMFN on VA + EXPR + AU. The TrainConfig fields keep their
    meaning (`python -m fer_kit.train --model ddamfn --task mtl --preset laptop_d ...` is the main run)
    with paper D's defaults; `compare` adds the comparison runs of paper D Tables 3 and 4."""

    model: str = "ddamfn"
    task: str = "mtl"
    preset: str = "laptop_d"
    weighted_sampling: bool = False
    n_frames: int = 1200              # with the comparisons, 1700 frames took 7m22s once no stage was frozen
    expr_label_fraction: float = 0.4  # paper D's case: EXPR labels on fewer videos than AU and VA (Aff-Wild2)
    epochs: int = 2
    # paper D trains the heads first on a *pretrained* DDAMFN. From random weights there is nothing worth
    # freezing: with the frozen trunk's BatchNorm statistics kept fixed (as they must be), a heads-first
    # epoch left the 2-epoch default at P 0.10 (at init 0.11), fine-tuning from the start reached 0.40.
    # `-p freeze_epochs 1` runs paper D's scheme; the "heads only" comparison is its custom classifier.
    freeze_epochs: int = 0
    out_dir: str = "runs/07_train_ddamfn_multitask"
    compare: bool = True              # also train the single-task EXPR model: the notebook's question (multi- vs single-task)
    tables: bool = False              # also heads only, VA only and AU only: the rest of paper D Tables 3 and 4 (3 more runs)


@dataclass
class ScanCCIConfig(TrainConfig):
    """Notebook 06's parameters: paper C's SCAN + CCI on the 7 ABAW 2020 classes, beside a plain CNN.
    The TrainConfig fields keep their meaning (the SCAN+CCI run is `python -m fer_kit.train` with them)."""

    n_frames: int = 3000
    num_classes: int = 7
    occlusion_fraction: float = 0.25  # paper C's case: frames with an eye, the mouth or the nose covered
    model: str = "scan_cci_small"
    backbone: str = "resnet50"        # the baseline's trunk (scan_cci* always use ResNet-50, as the paper)
    preset: str = "laptop_c"
    epochs: int = 5                   # 3 x 40 batches reached ABAW2020 0.167 (majority class 0.135); 6 x 40 0.267 in 3m56s
    max_batches: int | None = 40
    out_dir: str = "runs/06_train_scan_cci"
    baseline_model: str = "resnet_classifier"   # plain CNN trained with CE beside SCAN+CCI; "" = skip it
    baseline_out_dir: str = "runs/06_resnet_baseline"

    def baseline_config(self) -> TrainConfig:
        """The plain baseline's run: the same data, recipe and seed, another model and run folder."""
        return _as_train_config(self, {"model": self.baseline_model, "out_dir": self.baseline_out_dir})


@dataclass
class ClipConfig(TrainConfig):
    """Notebook 05's parameters: paper B's RegNet per frame, then over clips. The per-frame model (variant
    no_att_trans, clip_length 1, `epochs`) is trained first; each clip variant then starts from its trunk
    (`init_from`, standing in for the paper's ImageNet weights): one epoch of the new temporal layers
    alone, then everything, `clip_epochs` in all at `clip_lr`."""

    model: str = "regnet_transformer"
    preset: str = "laptop_b"
    n_frames: int = 6000
    hidden_fraction: float = 0.25   # paper B's case: frames whose expression is hidden, its neighbours show it
    epochs: int = 4
    out_dir: str = "runs/05_per_frame"
    variants: str = "only_att,only_trans,combine"   # clip models trained after the per-frame one
    clip_epochs: int = 2
    clip_lr: float = 1e-3

    def __post_init__(self):
        super().__post_init__()
        check_names(self.variant_names, REGNET_VARIANTS, "variant")
        if self.clip_epochs < 1:
            raise ValueError(f"clip_epochs must be >= 1; got {self.clip_epochs}")

    @property
    def variant_names(self) -> list[str]:
        return comma_list(self.variants)

    def frame_config(self) -> TrainConfig:
        """The per-frame model: the code's no_att_trans on single frames, as many frames per batch as a
        batch of clips holds, inverse-frequency sampling (paper B's code samples so only when T = 1)."""
        return _as_train_config(self, {"variant": "no_att_trans", "clip_length": 1,
                                       "batch_size": self.batch_size * self.clip_length})

    def clip_config(self, variant: str) -> TrainConfig:
        """A clip model starting from the per-frame model's best checkpoint."""
        return _as_train_config(self, {"variant": variant, "epochs": self.clip_epochs, "lr": self.clip_lr,
                                       "freeze_epochs": 1 if self.clip_epochs > 1 else 0,
                                       "init_from": f"{self.out_dir}/best.pt",
                                       "out_dir": (Path(self.out_dir).parent / f"05_{variant}").as_posix()})


@dataclass
class SyntheticShiftConfig(TrainConfig):
    """Notebook 08's parameters: paper E's DAN + landmark network on the 6 LSD classes, trained on faces
    of one rendering style and validated on another (LSD: synthetic training, real validation)."""

    model: str = "dan_landmarks"
    backbone: str | None = "resnet18"  # emotion trunk (paper E: resnet50 + DAN's 1x1 reduction)
    preset: str = "laptop_e"
    num_classes: int = 6
    style: str = "cartoon"
    val_style: str | None = "photo"
    n_frames: int = 4000
    epochs: int = 3
    weighted_sampling: bool = False   # paper E weights the loss (1 - n_c / N), not the sampling
    out_dir: str = "runs/08_learning_from_synthetic_data"
    compare: bool = True              # also train without the landmark task (landmark_weight 0)


@dataclass
class EnsembleConfig(TrainConfig):
    """Notebook 09's parameters and `python -m fer_kit.ensemble`'s flags: K members trained with the
    TrainConfig settings, each on a seeded subset of the training split (paper A's weak ensembles on
    sub-samples; paper E's 20% bags), combined by voting."""

    members: int = 5                  # K ensemble members
    fraction: float = 0.2             # share of the training videos each member sees (paper E: 20%)
    bootstrap: bool = False           # draw each member's videos with replacement (classic bagging) instead
    out_dir: str = "runs/ensemble"    # members go to <out_dir>/member_<i>, the comparison to ensemble.json

    def __post_init__(self):
        super().__post_init__()
        if self.members < 1:
            raise ValueError(f"members must be >= 1; got {self.members}")
        if not self.bootstrap and not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1]; got {self.fraction}")


@dataclass
class EnsembleStudyConfig(EnsembleConfig):
    """Notebook 09's parameters: paper A Table 3's rows on one dataset (a single DAN from scratch, one
    started from another run, a weak ensemble on subsets, the ensemble of all of them) and paper E's
    bagging on its 6 LSD classes. The EnsembleConfig fields are the weak ensemble's run."""

    n_frames: int = 3200
    image_size: int | None = 56       # DAN's heads still see a 2x2 map at 56 px: the nine runs, with a pretraining run
    epochs: int = 4                   # as large as the study's own, fit five minutes on 2 cores with AVX512-BF16 (at
    members: int = 3                  # 48 px, 1200 frames and 2 epochs no member beat the majority class: an ensemble
                                      # of members that learnt nothing; at 64 px the larger pretraining run left time
                                      # for 3 epochs only, after which it had not learnt yet, best val P_EXPR 0.10)
    fraction: float = 0.5             # paper A does not say how large its sub-samples were; members on 20% (paper E's
                                      # share) reached P_EXPR 0.14-0.24 in 3 epochs, on 50% 0.24-0.36 (one run each)
    out_dir: str = "runs/09_ensembles"
    transfer: bool = True             # also train "DAN TL": pretrained on faces of pretrain_style, then fine-tuned
    pretrain_style: str = "cartoon"   # the other domain standing in for paper A's AffectNet pretraining
    pretrain_frames: int = 3200       # synthetic frames (other people) of the pretraining run: as many as the study's
    pretrain_epochs: int = 4          # own, for as long (paper A pretrained on AffectNet, larger than its target; on
                                      # half the frames the pretraining run stayed near chance, val P_EXPR 0.09, and
                                      # every run started from it trailed DAN Scratch)
    weak_from: str = "pretrain"       # weak-ensemble members start from the pretrained run ("pretrain") or "scratch"
    lsd_members: int = 3              # paper E: members bagged on 20% of the 6-class LSD faces; 0 = skip
    lsd_epochs: int = 2
    progress: bool = False            # eight runs' progress bars would bury the results

    def __post_init__(self):
        super().__post_init__()
        check_names([self.weak_from], ("pretrain", "scratch"), "weak_from")


def pretraining(cfg: TrainConfig, style: str, n_frames: int, epochs: int, out_dir: str) -> TrainConfig:
    """A run to start others from: cfg's model on synthetic faces of `style` and of other people (seed + 100),
    whatever cfg's dataset, standing in for paper A's AffectNet pretraining. On a real dataset that is transfer
    from another dataset, as paper A's was; pretraining on the run's own training split would be no transfer,
    and a split carved under another seed would hold its validation frames. The classes are cfg's (the
    synthetic faces less Other for a 7-class dataset), so the classifier carries over."""
    return cfg.train_config(style=style, seed=cfg.seed + 100, weighted_sampling=True, n_frames=n_frames,
                            epochs=epochs, minutes=0.0, steps=0, init_from=None, dataset="abaw", data_root=None,
                            out_dir=out_dir)


def _as_train_config(cfg: TrainConfig, changes: dict) -> TrainConfig:
    own = {f.name: getattr(cfg, f.name) for f in fields(TrainConfig)}
    return TrainConfig(**{**own, **changes})


@dataclass
class DataConfig(FromParams):
    """The data parameters every notebook shares."""

    data_root: str | None = None      # ABAW-layout folder; None = the embedded synthetic faces
    n_frames: int = 10_000            # synthetic only: frames generated (train + validation)
    balance: str = "sqrt"             # synthetic only: "sqrt" (tempered), "affwild2" (exact), "uniform"
    seed: int = 0
    figures_dir: str = "figures"
    progress: bool = True



@dataclass
class StatsConfig(DataConfig):
    """Notebook 01's parameters."""

    compare_balance: str | None = "affwild2"   # synthetic only: a second class balance for the imbalance lesson
    landmark_noise: float = 2.0                 # px of noise standing in for a landmark detector's error
    samples_per_class: int = 6


@dataclass
class AugmentConfig(DataConfig):
    """Notebook 02's parameters."""

    image_size: int = 112             # network input (ABAW crops are 112; paper A/C/E use 224)
    batch_size: int = 64
    n_batches: int = 30               # batches drawn to compare the samplers
    max_per_class: int = 500          # paper C Table 3 style cap
    bagging_k: int = 5                # ensemble members
    bagging_fraction: float = 0.2     # paper E: each member sees 20% of the training frames


@dataclass
class ArchitecturesConfig(FromParams):
    """Notebook 03's parameters."""

    models: str = "dan,dan_r50,regnet_transformer,scan_cci,ddamfn,dan_landmarks_r50"  # registry names, comma-separated
    batch: int = 2                    # images per traced batch (clips for regnet_transformer: 1)
    clip_length: int = 64             # paper B: frames per clip (64 in the paper)
    trace_depth: int = 1              # 1 = the model's own stages; 2 = also their children
    toy_steps: int = 150              # optimisation steps of each loss toy
    seed: int = 0
    figures_dir: str = "figures"

    def __post_init__(self):
        from .models import list_models   # config must not import models at module load

        check_names(self.model_names, list_models(include_test=True), "model")
        self.require_positive("batch", "clip_length", "trace_depth", "toy_steps")

    @property
    def model_names(self) -> list[str]:
        return comma_list(self.models)



class NotebookParams:
    """Remembers which globals existed before the parameters cell, so the cell after it can collect
    exactly the parameters, including any that papermill injected under a misspelt name."""

    def __init__(self, namespace: dict[str, Any]):
        self.namespace = namespace
        self.before = set(namespace)

    def collect(self) -> dict[str, Any]:
        return {k: v for k, v in self.namespace.items() if k not in self.before and not k.startswith("_")
                and k not in ("In", "Out") and not isinstance(v, NotebookParams)}

    def config(self, cls=TrainConfig):
        return cls.from_params(self.collect())


def config_table(cfg, columns: int = 3):
    """The config as a compact table for a notebook's output: its fields in `columns` side-by-side
    blocks of (parameter, value), easier to scan than a dataclass repr on one long line."""
    import pandas as pd

    items = [(f.name, "None" if getattr(cfg, f.name) is None else str(getattr(cfg, f.name))) for f in fields(cfg)]
    rows = -(-len(items) // columns)
    items += [("", "")] * (rows * columns - len(items))
    blocks = [pd.DataFrame(items[k * rows:(k + 1) * rows], columns=["parameter", "value"]) for k in range(columns)]
    table = pd.concat(blocks, axis=1)
    table.index = [""] * rows
    return table
