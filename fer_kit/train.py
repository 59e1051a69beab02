"""One training loop for the kit: config -> data -> model -> loss -> fit -> metrics -> run folder.

Used by the notebooks and by the command line, which take the same parameter names:
    python -m fer_kit.train --epochs 8 --batch_size 64            # writes runs/dan_expr/
    python -m fer_kit.train --epochs 12 --exist resume            # continues it from last.pt
    torchrun --standalone --nproc_per_node 2 -m fer_kit.train ...   # one run over 2 processes (distributed.py)
The command line refuses a folder that already holds a run unless told `--exist resume|overwrite`;
notebooks and library callers overwrite by default (re-running a notebook is the normal case).
A run folder holds config.json, history.csv, metrics.json, MODEL_CARD.md (data, per-class F1, what the
model must not be used for), best.pt (best validation score), last.pt (for resuming) and figures/
(learning curves, per-class F1, confusion matrix); checkpoints are written atomically and read back with
`weights_only=True`.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import pickle
import random
import signal
import tempfile
import time
import typing
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, RandomSampler
from tqdm import tqdm

from . import distributed, metrics
from .config import TrainConfig, image_size_note, is_lsd_model, score_name
from .data.abaw import has_split, read_abaw, read_expr_any
from .data.clips import ClipDataset
from .data.table import FrameTable
from .data.dataset import FrameDataset
from .data.sampling import weighted_sampler
from .data.sources import dataset_root, lsd_tables
from .data.splits import read_splits
from .data.batch_augment import BatchAugment
from .data.transforms import eval_transform, mixup_batch, train_transform
from .losses import (DANLandmarkLoss, DANLoss, DDAMFNLoss, SCANCCILoss, SequenceFocalLoss, denormalize_landmarks,
                     normalize_landmarks)
from .model_card import write_model_card
from .models import create_model
from .paths import output_dir, shown
from .precision import Precision, resolve as resolve_precision
from .schedules import Clock, lr_factor


def select_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextmanager
def determinism(on: bool):
    """Deterministic kernels for one run, the process's own settings restored afterwards (a notebook that
    trained once keeps cuDNN's autotuner). Without them, CPU runs of the same seed drifted apart after ~10
    steps: the backward of `centers[labels]` (AffinityLoss) accumulates with parallel atomic adds, whose
    order changes from run to run. warn_only: ops with no deterministic kernel (some CUDA ones) warn
    instead of failing. Off, cudnn.benchmark picks the fastest kernels for each input shape."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = not on, on
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # cuBLAS's condition for determinism
    torch.use_deterministic_algorithms(on, warn_only=True)
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[:2]
        torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


@dataclass
class ExprData:
    """The splits of an expression dataset, ready for training. `test` is None where the data has no test
    labels (Aff-Wild2): runs then select and report on validation, the papers' protocol."""

    train: FrameDataset | ClipDataset
    val: FrameDataset | ClipDataset
    classes: tuple[str, ...]
    source: str
    test: FrameDataset | ClipDataset | None = None

    @property
    def protocol(self) -> str:
        return PROTOCOLS[self.held_out_name]

    @property
    def held_out(self):
        """The split reported numbers come from: test where there are test labels, else validation."""
        return self.test if self.test is not None else self.val

    @property
    def held_out_name(self) -> str:
        return "test" if self.test is not None else "validation"

    def summary(self) -> pd.DataFrame:
        """Per-class frame counts of every split (the layout of paper A Table 1)."""
        splits = (("train", self.train), ("validation", self.val), ("test", self.test))
        rows = {split: ds.table.class_counts() for split, ds in splits if ds is not None}
        df = pd.DataFrame(rows, index=list(self.classes)).T
        df["total"] = df.sum(axis=1)
        return df


PROTOCOLS = {"test": "epochs chosen on validation, scores reported on the test split (other people)",
             "validation": "epochs chosen and scores reported on validation (the papers' protocol: "
                           "this data has no test labels), an optimistic number"}


def split_tables(cfg: TrainConfig) -> tuple[FrameTable, FrameTable, FrameTable | None, str]:
    """The train/validation/test tables from cfg.data_root or the synthetic default (test None where the
    root has no test labels): EXPR frames, or for task="mtl" every ABAW label (VA, EXPR, AU) per frame
    from the MTL csv or the per-task files; for paper E's models the 6 LSD classes with landmarks,
    validation and test in cfg.val_style (`lsd_tables`)."""
    if is_lsd_model(cfg.model):
        return lsd_tables(cfg.data_root, cfg.n_frames, cfg.balance, cfg.seed, cfg.style, cfg.val_style, cfg.progress)
    if cfg.dataset != "abaw":                       # RAF-DB, AffectNet, FER2013, ExpW, class folders
        return read_splits(cfg.dataset, cfg.data_root, cfg.num_classes, cfg.seed)
    root, source = dataset_root(cfg.data_root, cfg.n_frames, cfg.balance, cfg.seed, style=cfg.style,
                                progress=cfg.progress, **cfg.synthetic_options())
    if cfg.val_style and cfg.val_style != cfg.style and cfg.data_root is None:
        raise ValueError("val_style is paper E's domain shift (model dan_landmarks); other runs use one style")
    read = read_expr_any if cfg.task == "expr" else read_abaw
    splits = ["Train_Set", "Validation_Set"] + (["Test_Set"] if has_split(root, "Test_Set") else [])
    tables = [read(root, split, cfg.num_classes) for split in splits]
    for table in tables:
        if len(table) == 0:
            raise ValueError(f"{table.report}: no usable frames left")
    return tables[0], tables[1], tables[2] if len(tables) == 3 else None, source


def frame_dataset(cfg: TrainConfig, table: FrameTable, transform=None, targets: str = "expr",
                  progress: bool | None = None) -> FrameDataset:
    """A table's frames at the run's size, decoded and kept where cfg.cache says (fer_kit.data.cache):
    what training, evaluation, ensembles and Grad-CAM all read."""
    return FrameDataset(table, cfg.image_size, transform, cache=cfg.cache, targets=targets, cache_dir=cfg.cache_dir,
                        memory_gb=cfg.cache_gb, workers=cfg.workers,
                        progress=cfg.progress if progress is None else progress)


def loader_workers(cfg: TrainConfig, dataset) -> int:
    """DataLoader processes for a split: none where frames are already decoded (reading one costs
    microseconds), else cfg.workers or all cores but the training one, up to 4, decoding ahead."""
    frames = dataset.frames if isinstance(dataset, ClipDataset) else dataset
    if getattr(frames, "images", None) is not None:
        return 0
    return cfg.workers if cfg.workers is not None else min(4, (os.cpu_count() or 1) - 1)


def load_expr_data(cfg: TrainConfig) -> ExprData:
    """The run's splits as datasets: EXPR labels, or (task="mtl") VA, EXPR and AU targets; with
    clip_length > 1 (paper B) clips of that many consecutive frames of one video."""
    train, val, test, source = split_tables(cfg)
    targets = "landmarks" if is_lsd_model(cfg.model) else "expr" if cfg.task == "expr" else "mtl"
    for table in (train, val, test):
        if table is not None:
            print(table.report)

    def held_out(table):
        return frame_dataset(cfg, table, eval_transform(), targets)
    data = ExprData(
        train=frame_dataset(cfg, train, train_transform(cfg.augment, cfg.image_size), targets),
        val=held_out(val), test=held_out(test) if test is not None else None,
        classes=train.classes, source=source,
    )
    return as_clips(data, cfg.clip_length)


def as_clips(data: ExprData, clip_length: int) -> ExprData:
    """The same frames cut into clips of `clip_length` (paper B), or back to single frames for 1; the
    decoded frames are shared, not copied."""
    def view(ds):
        if ds is None:
            return None
        frames = ds.frames if isinstance(ds, ClipDataset) else ds
        return frames if clip_length == 1 else ClipDataset(frames, clip_length)
    return ExprData(train=view(data.train), val=view(data.val), test=view(data.test), classes=data.classes,
                    source=data.source)


def build_model(cfg: TrainConfig) -> nn.Module:
    if cfg.model.startswith("ddamfn"):      # paper D: no timm trunk; the task decides the heads
        tasks = {"mtl": ("VA", "EXPR", "AU"), "expr": ("EXPR",), "va": ("VA",), "au": ("AU",)}[cfg.task]
        return create_model(cfg.model, tasks=tasks, num_expr=cfg.num_classes, num_heads=cfg.num_heads,
                            image_size=cfg.image_size)
    if cfg.model.startswith("scan_cci"):    # paper C: the registry name fixes the ResNet-50 trunk
        return create_model(cfg.model, num_classes=cfg.num_classes, pretrained=cfg.pretrained)
    if cfg.model.startswith("regnet_transformer"):   # paper B: the variant picks the concatenated branches
        return create_model(cfg.model, num_classes=cfg.num_classes, variant=cfg.variant, backbone=cfg.backbone,
                            pretrained=cfg.pretrained)
    if cfg.model.endswith("resnet_classifier"):   # plain CNN baseline (paper C Table 2's ResNet-50)
        return create_model(cfg.model, num_classes=cfg.num_classes, backbone=cfg.backbone, pretrained=cfg.pretrained)
    if is_lsd_model(cfg.model):                   # paper E: DAN emotion branch + appearance branch
        return create_model(cfg.model, num_classes=cfg.num_classes, num_heads=cfg.num_heads, backbone=cfg.backbone,
                            landmark_backbone=cfg.landmark_backbone, pretrained=cfg.pretrained)
    return create_model(cfg.model, num_classes=cfg.num_classes, num_heads=cfg.num_heads,
                        backbone=cfg.backbone, pretrained=cfg.pretrained)


def init_weights(model: nn.Module, path: str | Path, min_share: float = 0.9, model_name: str | None = None) -> dict:
    """Start a model from another run's checkpoint: every tensor whose name and shape match is copied,
    the rest keeps its initialisation (e.g. paper B's clip models start from the per-frame model's trunk,
    the role ImageNet weights play in the paper). At least `min_share` of this model's tensors must match:
    a checkpoint of another model would otherwise leave almost everything at random, silently. Returns
    how many tensors were loaded and, by name, which were re-initialised and why."""
    path = Path(path) if Path(path).is_absolute() else output_dir() / path
    state = load_checkpoint(path)
    theirs = (state.get("config") or {}).get("model") if isinstance(state.get("config"), dict) else None
    weights = state.get("model", state)
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


def build_criterion(cfg: TrainConfig, class_counts=None) -> nn.Module:
    """The paper's loss; `class_counts` (training frames per class) set paper E's CE weights 1 - n_c/N."""
    if is_lsd_model(cfg.model):   # paper E: weighted CE + affinity + partition + landmark MSE
        return DANLandmarkLoss(class_counts=class_counts, num_classes=cfg.num_classes, affinity_weight=cfg.affinity_weight,
                               partition_weight=cfg.partition_weight, landmark_weight=cfg.landmark_weight)
    if cfg.model.startswith("ddamfn"):
        return DDAMFNLoss(attention_weight=cfg.attention_weight)
    if cfg.model.startswith("scan_cci"):    # paper C Eq. 4-5: 0.2 L_u + 0.8 sum_i L_i
        return SCANCCILoss(lam=0.2)
    if cfg.model.endswith("resnet_classifier"):
        return nn.CrossEntropyLoss()
    if cfg.model.startswith("regnet_transformer"):   # paper B: focal loss on every (non-padding) frame
        return SequenceFocalLoss(gamma=cfg.focal_gamma)
    return DANLoss(num_classes=cfg.num_classes, feat_dim=512, gamma=cfg.focal_gamma,
                   affinity_weight=cfg.affinity_weight, partition_weight=cfg.partition_weight)


def build_optimizer(cfg: TrainConfig, model: nn.Module, criterion: nn.Module) -> torch.optim.Optimizer:
    """The paper's optimiser over the model's and the loss's parameters (the affinity centres are learnt).

    cfg.optimizer "adam" (papers A, D): one group at cfg.lr. "sgd" (paper C): momentum cfg.momentum; a
    model with `parameter_groups` (SCANCCI) gets its trunk at cfg.lr and its branches at cfg.head_lr, and
    the loss's parameters (if any) join the head group. Weight decay cfg.weight_decay everywhere.
    """
    if hasattr(model, "parameter_groups"):
        groups = model.parameter_groups(cfg.lr, cfg.head_lr)
        groups[-1]["params"] = list(groups[-1]["params"]) + list(criterion.parameters())
    else:
        groups = [{"params": list(model.parameters()) + list(criterion.parameters()), "lr": cfg.lr}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def compute_loss(criterion: nn.Module, out, y) -> dict[str, torch.Tensor]:
    """The paper's loss on one batch: DAN's terms from (logits, features, heads), or paper D's per-task
    terms from the multi-task output, each masked where its label is invalid; paper C's 0.2/0.8 sum of
    the SCAN and CCI terms; plain cross-entropy for a baseline classifier."""
    if isinstance(criterion, SCANCCILoss):
        return criterion(out._replace(attention_logits=out.attention_logits.float(),
                                      region_logits=out.region_logits.float()), y)
    if isinstance(criterion, (nn.CrossEntropyLoss, SequenceFocalLoss)):
        return {"loss": criterion(out.logits.float(), y)}
    if isinstance(criterion, DANLandmarkLoss):
        out = out._replace(**{k: getattr(out, k).float() for k in ("logits", "features", "heads", "landmarks")})
        return criterion(out, y["expr"], y["landmarks"])
    if isinstance(criterion, DDAMFNLoss):
        targets = y if isinstance(y, dict) else {"expr": y}
        return criterion(out, **{k: v for k, v in targets.items() if getattr(out, k) is not None})
    return criterion(out.logits.float(), out.features.float(), out.heads.float(), y)


def set_stage(model: nn.Module, criterion: nn.Module, cfg: TrainConfig, epoch: int) -> str:
    """Paper D's two schemes: for the first `freeze_epochs` only the task heads train ("custom
    classifier", no attention loss: the heads it acts on are frozen); afterwards everything does."""
    if not cfg.freeze_epochs or not hasattr(model, "freeze_features"):
        return "all"
    frozen = epoch <= cfg.freeze_epochs
    model.freeze_features(frozen)
    if isinstance(criterion, DDAMFNLoss):
        criterion.attention_weight = 0.0 if frozen else cfg.attention_weight
    return "heads only" if frozen else "all"


def keep_frozen_in_eval(model: nn.Module) -> None:
    """Put every submodule whose parameters are all frozen into eval mode, so a frozen trunk's BatchNorm
    keeps its running statistics (requires_grad=False stops the weights, not the statistics, which
    train() mode would keep updating from the new data) and its dropout stays off."""
    for m in model.modules():
        params = list(m.parameters())
        if params and not any(p.requires_grad for p in params):
            m.eval()


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Images go channels_last (faster convolutions on CPU); clips (B, T, 3, H, W) stay as they are."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


def batch_augmentation(cfg: TrainConfig, data: ExprData, device: torch.device) -> tuple[ExprData, BatchAugment | None]:
    """With augment_on "batch" (or "auto" on a GPU), the training frames leave the loader as uint8 and
    their recipe runs on whole batches on the device: the same draws per image, without a GPU waiting
    on a loader that augments one face at a time. Returns the data to load and the batch augmentation
    (None: each face is augmented in the loader, as before)."""
    frames = data.train.frames if isinstance(data.train, ClipDataset) else data.train
    on_batch = cfg.augment_on == "batch" or (cfg.augment_on == "auto" and device.type != "cpu"
                                             and cfg.augment != "paper_a")   # paper_a: per image only
    if not on_batch or frames.transform is None:
        return data, None
    augment = BatchAugment(frames.transform)
    plain = copy.copy(frames)
    plain.transform = None                       # the loader now hands over decoded uint8 frames
    if isinstance(data.train, ClipDataset):
        clips = copy.copy(data.train)
        clips.frames = plain
        plain = clips
    return dataclasses.replace(data, train=plain), augment


def _augment_batch(augment: BatchAugment, x: torch.Tensor, y):
    """Run the batch augmentation on a batch already on the device; LSD targets' landmarks ([-1, 1]
    coordinates) move with their faces."""
    pts = y.get("landmarks") if isinstance(y, dict) else None
    x, moved = augment(x, None if pts is None else denormalize_landmarks(pts, x.shape[-2:]))
    if moved is not None:
        y = {**y, "landmarks": normalize_landmarks(moved, x.shape[-2:])}
    return (x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x), y


def batches_per_epoch(loader, cfg: TrainConfig) -> int:
    return len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)


def train_one_epoch(model, criterion, loader, optimizer, device, cfg: TrainConfig, epoch: int,
                    start: dict | None = None, checkpoint=None, after_step=None,
                    augment: BatchAugment | None = None, policy: Precision | None = None,
                    scaler: torch.amp.GradScaler | None = None) -> dict[str, float]:
    """One pass over the loader. `start` continues a mid-epoch checkpoint: its first `step` batches are
    drawn again (the loader must be rebuilt from the epoch's first sampler state) but not trained on, then
    the global RNGs are set to where they were, so the rest of the epoch is exactly the uninterrupted one.
    `checkpoint(step, sums, n_seen)` is offered every finished step (fit decides whether to save);
    `after_step()` follows every optimiser step (a per-step schedule) and ends the epoch early when it
    returns True (a run sized in minutes or steps has reached its last step). `policy` is the run's
    precision (default: cfg.precision resolved here); `scaler` scales fp16 losses (fp16 runs only)."""
    policy = policy or resolve_precision(cfg.precision, device, model)
    r = distributed.ranks()
    model.train()                                        # (a DistributedDataParallel wrapper under torchrun)
    if getattr(getattr(model, "module", model), "features_frozen", False):   # the heads-only stage (set_stage)
        keep_frozen_in_eval(model)
    criterion.train()
    sums, n_seen, skip = ({}, 0, 0) if start is None else (dict(start["sums"]), start["n_seen"], start["step"])
    total = batches_per_epoch(loader, cfg)
    # a refresh every 15 s keeps notebooks saved by papermill readable (each refresh is stored)
    of = "" if cfg.minutes or cfg.steps else f"/{cfg.epochs}"
    bar = tqdm(loader, total=total, desc=f"epoch {epoch}{of}", unit="batch", disable=not (cfg.progress and r.main),
               mininterval=15.0)
    for step, (x, y) in enumerate(bar):
        if step >= total:
            break
        if step < skip:                                  # trained on before the interruption
            if step == skip - 1:
                set_rng_state(start["rng"])
            continue
        x = _to_device(x, device)
        y = {k: v.to(device) for k, v in y.items()} if isinstance(y, dict) else y.to(device)
        if augment is not None:                          # augment_on="batch": the recipe on the whole batch
            x, y = _augment_batch(augment, x, y)
        n = len(x)
        with policy.autocast():
            if cfg.mixup_alpha:
                # paper E's code: the emotion branch sees the mixed batch and learns lam y_a + (1 - lam) y_b
                # (soft targets into its weighted CE); the landmark branch sees the unmixed faces
                mixed, soft = mixup_batch(x, y["expr"], cfg.mixup_alpha, cfg.num_classes)
                out = model(mixed, x_landmarks=x)
                y = {**y, "expr": soft}
            else:
                out = model(x)
        parts = compute_loss(criterion, out, y)
        loss = parts["loss"]
        optimizer.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
        else:                                            # fp16: clip and check the unscaled gradients
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        distributed.average_gradients(criterion, r)     # the loss's own parameters (DAN's centres): DDP holds the model's
        # the norm is measured even without clipping (max_norm inf scales by exactly 1), and checked before
        # the step: a NaN or infinite gradient (a NaN loss gives one) would turn every weight into NaN. This
        # check is the step's one wait for the device; the loss terms add up there and are read per epoch.
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if scaler is not None:                           # an fp16 overflow: the scaler skips this step and
            nn.utils.clip_grad_norm_(params, cfg.clip_grad or float("inf"))
            scaler.step(optimizer)                       # lowers its scale, as fp16 training expects
            scaler.update()
        else:
            try:
                nn.utils.clip_grad_norm_(params, cfg.clip_grad or float("inf"), error_if_nonfinite=True)
            except RuntimeError as e:
                raise _not_finite(loss, params, epoch, step, cfg) from e
            optimizer.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v.detach().float() * n
        n_seen += n
        if step % 20 == 0:                               # the running loss, without a wait every step
            bar.set_postfix(loss=f"{float(sums['loss']) / n_seen:.3f}", refresh=False)
        if _kill_due("step"):
            _kill_self()
        if after_step is not None and after_step():
            break
        if checkpoint is not None and step + 1 < total:
            checkpoint(step + 1, sums, n_seen)
    bar.close()
    sums = {k: float(v) for k, v in sums.items()}
    totals = distributed.all_sum({**sums, "images": n_seen}, r)     # over every rank's share of the batches
    n_seen = int(totals.pop("images"))
    return {**{f"train_{k}": v / max(n_seen, 1) for k, v in totals.items()}, "images": n_seen}


def _not_finite(loss: torch.Tensor, params, epoch: int, step: int, cfg: TrainConfig) -> FloatingPointError:
    """What became infinite or NaN at a step, said in the words a student can act on."""
    if not torch.isfinite(loss):
        return FloatingPointError(f"loss became {loss.item()} at epoch {epoch}, step {step}; "
                                  f"try a lower lr (now {cfg.lr}) or clip_grad")
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad.float()) for p in params
                                                 if p.grad is not None]))
    return FloatingPointError(f"the gradients became {norm.item()} at epoch {epoch}, step {step} (the loss "
                              f"{loss.item():.4g} was finite); try a lower lr (now {cfg.lr}) or clip_grad, "
                              "and look for a log, sqrt or division of zero in the model or loss")


@torch.no_grad()
def _outputs(model: nn.Module, dataset, batch_size: int, device, progress: bool = False, precision: str = "auto"):
    """(model output, targets) batch by batch over a whole dataset, in order, in eval mode: the one
    inference loop the predict functions share. Batches of clips hold batch_size frames in all.
    `precision` as TrainConfig.precision (auto: what training on this device would use for this model)."""
    device = torch.device(device)
    policy = resolve_precision(precision, device, model)
    model.eval()
    if isinstance(dataset, ClipDataset):
        batch_size = max(1, batch_size // dataset.clip_length)
    r = distributed.ranks()
    if r.on:           # under torchrun: each rank its block of the split, every rank all of it back in order
        local = list(_outputs_of(model, distributed.shard(dataset, r), batch_size, device, policy, False))
        yield from distributed.gather_in_order([distributed.to_cpu(b) for b in local], r)
        return
    yield from _outputs_of(model, dataset, batch_size, device, policy, progress)


@torch.no_grad()
def _outputs_of(model, dataset, batch_size, device, policy, progress):
    for x, y in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc="predicting", unit="batch",
                     disable=not progress, mininterval=2.0):
        with policy.autocast():
            yield model(_to_device(x, device)), y


def predict(model: nn.Module, dataset, batch_size: int = 128, device: torch.device | str = "cpu",
            progress: bool = False, precision: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, C) for every frame of a dataset and the labels (N,), in the table's frame order (for
    whole-split metrics). For clip datasets the padding is dropped: each real frame counts once."""
    clips = isinstance(dataset, ClipDataset)
    logits, labels = [], []
    for out, y in _outputs(model, dataset, batch_size, device, progress, precision):
        z = (out.logits if hasattr(out, "logits") else out).float().cpu()
        if clips:                                   # (B, T, C), (B, T) -> the real frames only
            z, y = z[y >= 0], y[y >= 0]
        logits.append(z)
        labels.append(y)
    logits, labels = torch.cat(logits).numpy(), torch.cat(labels).numpy()
    if clips:                                       # clip order -> the table's frame order
        order = dataset.index.reshape(-1)
        order = order[order >= 0]
        logits[order], labels[order] = logits.copy(), labels.copy()
    return logits, labels


def predict_tasks(model: nn.Module, dataset, batch_size: int = 128, device: torch.device | str = "cpu",
                  progress: bool = False, precision: str = "auto") -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A multi-task model's outputs over a whole dataset ({"va", "expr", "au"}, AU as probabilities) and
    the matching targets, in order."""
    outs, targets = {}, {}
    for out, y in _outputs(model, dataset, batch_size, device, progress, precision):
        for k in ("va", "expr", "au"):
            if getattr(out, k) is not None:
                v = getattr(out, k).float().cpu()
                outs.setdefault(k, []).append(v.sigmoid() if k == "au" else v)
        for k, v in y.items():
            targets.setdefault(k, []).append(v)
    return ({k: torch.cat(v).numpy() for k, v in outs.items()}, {k: torch.cat(v).numpy() for k, v in targets.items()})


def predict_landmarks(model: nn.Module, dataset, batch_size: int = 128, device: torch.device | str = "cpu",
                      precision: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Paper E's two outputs over a whole dataset: logits (N, C), labels (N,), predicted and target
    landmarks (N, 68, 2) in normalised coordinates."""
    cols = {"logits": [], "labels": [], "pred": [], "true": []}
    for out, y in _outputs(model, dataset, batch_size, device, precision=precision):
        for k, v in zip(cols, (out.logits, y["expr"], out.landmarks, y["landmarks"])):
            cols[k].append(v.float().cpu() if v.is_floating_point() else v)
    return tuple(torch.cat(v).numpy() for v in cols.values())


# report key -> how the epoch line names it; each becomes a val_<key> column of the history when present
VAL_COLUMNS = {"p_mtl": "P", "ccc_mean": "CCC", "p_expr": "P_EXPR", "accuracy": "acc", "au_f1_mean": "AU F1",
               "landmark_nme": "landmark NME"}


def frame_videos(dataset) -> np.ndarray:
    """The video of every frame in the order the predict functions return them (the table's order)."""
    return (dataset.frames if isinstance(dataset, ClipDataset) else dataset).table.videos


def evaluate(model, dataset, classes, batch_size: int = 128, device="cpu", interval: bool = False,
             precision: str = "auto") -> dict:
    """Whole-split report; its "score" is the run's model-selection metric: P_EXPR (mean F1 over 8
    classes), or P for multi-task runs.

    With 7 classes (the ABAW 2020 EXPR set) the report adds "abaw2020" = 0.67 F1 + 0.33 accuracy, and the
    score is that: it was the challenge's measure, and paper C selected its models by it. Both terms are
    over the whole split; paper C's published code averaged a per-batch F1 instead (notes §4.4). Paper
    E's 6-class runs score the LSD mean F1 and add the landmark error.

    interval=True adds "interval": the score's 95% bootstrap interval over the split's videos (frames of
    one video are near-duplicates, so frames would give a far too narrow one).
    """
    kind = getattr(dataset, "targets", "expr")
    if kind == "mtl":
        outs, targets = predict_tasks(model, dataset, batch_size, device, precision=precision)
        report = metrics.task_report(outs, targets, classes)
        score = metrics.task_score_fn(outs, targets, len(classes))
    elif kind == "landmarks":      # paper E: LSD mean F1 over 6, landmark error
        logits, labels, pred, true = predict_landmarks(model, dataset, batch_size, device, precision)
        report = metrics.lsd_report(labels, logits.argmax(1), class_names=list(classes))
        report = {"score": report["lsd_mean_f1"], **report, **metrics.landmark_errors(pred, true)}
        y, p = labels, logits.argmax(1)
        score = metrics.frame_score_fn(y, p, "p_expr", len(classes))
    else:
        logits, labels = predict(model, dataset, batch_size, device, precision=precision)
        y, p = labels, logits.argmax(1)
        report = metrics.expr_report(y, p, num_classes=len(classes), class_names=list(classes))
        report = {"score": report.get("abaw2020", report["p_expr"]), **report}
        score = metrics.frame_score_fn(y, p, "abaw2020" if len(classes) == 7 else "p_expr", len(classes))
    if interval:
        report["interval"] = list(metrics.video_bootstrap(score, frame_videos(dataset)))
    return report


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
    """Read a checkpoint with weights_only=True: tensors and plain values, never pickled code."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"{path}: refused to load: it pickles Python objects (such as a function or a class), "
                         "which could run code; a fer_kit checkpoint holds only tensors and plain values. Load it "
                         "only if you trust it, and re-save its state_dict") from e
    except (RuntimeError, EOFError) as e:
        raise ValueError(f"{path} is not a readable checkpoint (empty, cut short or not written by torch.save: "
                         f"{(str(e) or type(e).__name__).splitlines()[0]}); use another checkpoint, or train again") from e


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


def _write_json(obj, path: Path) -> None:
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
    _write_json(data, path)


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


def fit(cfg: TrainConfig, data: ExprData | None = None, resume: bool = False) -> RunResult:
    """Train cfg.model on cfg.task's data, validating every epoch over the whole validation split and
    keeping the checkpoint of the best validation score (P_EXPR; P = CCC + F1 + AU F1 for "mtl").

    A folder that already holds a run is handled by cfg.exist ("error", "resume", "overwrite");
    `resume=True` is the same as exist="resume". With cfg.checkpoint_minutes > 0, last.pt is also
    written within epochs, so a killed run loses at most that much work.

    Launched by torchrun (fer_kit.distributed), every process calls fit: rank 0 owns the run folder."""
    out_dir = output_dir() / cfg.out_dir
    device_type = select_device(cfg.device).type
    r = distributed.setup(device_type)
    if r.on:
        check_distributed(cfg, r)
    elif not resume and (cfg.reuse if cfg.reuse is not None else os.environ.get("FER_KIT_WORKSHOP") == "1"):
        done = finished_run(out_dir, cfg)
        if done is not None:
            print(f"{shown(out_dir)} holds this configuration's finished run: loaded, not trained again "
                  f"(best validation {done.best['score']:.4f} at epoch {done.best['epoch']}); reuse=False retrains")
            return done
    deterministic = cfg.deterministic if cfg.deterministic is not None else device_type != "cuda"
    with ExitStack() as stack:
        def claim_folder() -> bool:
            try:
                out_dir.mkdir(parents=True, exist_ok=True)
            except PermissionError as e:
                raise PermissionError(f"cannot create the run folder {shown(out_dir)} ({e.strerror}); choose another "
                                      "out_dir (or set FER_KIT_OUTPUT to a writable folder)") from e
            stack.enter_context(run_lock(out_dir))
            return prepare_run_folder(out_dir, "resume" if resume else cfg.exist)
        resuming = distributed.on_main(claim_folder, r)
        stack.enter_context(determinism(deterministic))
        stack.enter_context(distributed.quiet_unless_main(r))
        return _fit(cfg, data, resuming, out_dir, r)


# fields that change how a run goes, not what it learns: a finished run that differs only in these is this run
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


def check_distributed(cfg: TrainConfig, r: distributed.Ranks) -> None:
    """What a multi-process run cannot do yet, said before any process starts work."""
    if cfg.minutes or cfg.checkpoint_minutes:
        raise ValueError(f"a {r.world}-process run cannot size itself or its checkpoints by the clock (each process "
                         "has its own): use epochs or steps, and checkpoint_minutes 0 (last.pt is written every epoch)")
    if cfg.batch_size % r.world:
        raise ValueError(f"batch_size {cfg.batch_size} is the global batch of a {r.world}-process run and must "
                         f"divide by {r.world}")


def _fit(cfg: TrainConfig, data: ExprData | None, resume: bool, out_dir: Path,
         r: distributed.Ranks = distributed.Ranks()) -> RunResult:
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    state = None
    if resume:
        state = load_checkpoint(last_path)
        check_same_run(state.get("config"), cfg, last_path)
    seed_everything(cfg.seed)
    data = data or load_expr_data(cfg)
    device = distributed.device_of(select_device(cfg.device), r)
    data, augment = batch_augmentation(cfg, data, device)
    if r.main:
        _write_json(cfg.to_dict(), out_dir / "config.json")
    size_note = image_size_note(cfg)
    print(f"image size {size_note}")

    model = build_model(cfg)
    if cfg.init_from and state is None:
        counts = init_weights(model, cfg.init_from, cfg.init_min_share, model_name=cfg.model)
        fresh = list(counts["reinitialised"].values())
        print(f"initialised from {cfg.init_from}: {counts['loaded']} tensors loaded, {len(fresh)} re-initialised"
              + (f": {'; '.join(fresh[:8])}" + (f"; ... ({len(fresh) - 8} more)" if len(fresh) > 8 else "") if fresh else ""))
    if hasattr(model, "start_landmarks_at") and getattr(data.train, "landmarks", None) is not None \
            and not cfg.init_from and state is None:
        model.start_landmarks_at(torch.nanmean(data.train.landmarks, dim=0))   # (68, 2), paper E's LSD runs
    model = model.to(device).to(memory_format=torch.channels_last)
    if cfg.sync_bn and r.on:
        distributed.global_batch_norm(model, device.type)
    criterion = build_criterion(cfg, data.train.table.class_counts()).to(device)
    optimizer = build_optimizer(cfg, model, criterion)
    policy = resolve_precision(cfg.precision, device, model)
    scaler = policy.scaler()
    print(f"precision {policy} on {device.type}")
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = weighted_sampler(data.train.table.labels, len(data.classes), generator=gen) \
        if cfg.weighted_sampling and cfg.task == "expr" and cfg.clip_length == 1 else None   # paper B: none for clips
    # decoding workers (cache "none") are seeded from `gen`, so their per-face augmentation draws follow the
    # run's seed; on a CPU they start anew each epoch, so a resumed run draws what it would have. On a GPU
    # they stay between epochs, and batches are page-locked so their copies overlap the step.
    workers = loader_workers(cfg, data.train)
    feeding = dict(num_workers=workers, pin_memory=device.type == "cuda",
                   persistent_workers=workers > 0 and device.type == "cuda")
    if r.on:           # every rank draws the one-process order from `gen` and trains on its share of each batch
        if len(data.train) < cfg.batch_size:
            raise ValueError(f"{len(data.train)} training items cannot fill one global batch of {cfg.batch_size}")
        loader = DataLoader(data.train, batch_size=cfg.batch_size // r.world, generator=gen,
                            sampler=distributed.RankSlice(sampler or RandomSampler(data.train, generator=gen),
                                                          cfg.batch_size, r), **feeding)
    else:
        loader = DataLoader(data.train, batch_size=cfg.batch_size, sampler=sampler, shuffle=sampler is None,
                            generator=gen, drop_last=len(data.train) > cfg.batch_size, **feeding)
    per_epoch = batches_per_epoch(loader, cfg)
    clock = Clock(cfg.minutes * 60, per_epoch, val_steps=len(data.val) / cfg.batch_size / 3) if cfg.minutes else None
    if cfg.schedule == "exponential":
        scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_decay)
    else:   # a per-step schedule over a total set by the clock, by steps, or by epochs
        planned = cfg.steps or (None if clock else cfg.epochs * per_epoch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(cfg.schedule, step, clock.total if clock else planned))
    open_ended = bool(cfg.minutes or cfg.steps)     # the run ends at its last step, not after cfg.epochs

    history, best, start_epoch, partial = [], None, 1, None
    if r.rank:         # the same weights on every rank, but each its own augmentation and dropout draws
        seed_everything(cfg.seed + 7919 * r.rank)
    if state is not None:
        model.load_state_dict(state["model"])
        criterion.load_state_dict(state["criterion"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        gen.set_state(state["sampler_rng"])             # the sampler's state at the start of the unfinished epoch
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        if clock is not None and state.get("clock"):
            clock = Clock.from_state(state["clock"])
        if state.get("step"):                            # a mid-epoch checkpoint
            partial = {"step": state["step"], "sums": state["sums"], "n_seen": state["n_seen"], "rng": state["rng"]}
        else:
            set_rng_state(state["rng"] if not r.rank else state["rank_rng"][r.rank])
        where = f", step {state['step']} of epoch {start_epoch}" if partial else ""
        print(f"resumed from {shown(last_path)} after epoch {state['epoch']}{where}")

    def resumable(epoch: int, step: int = 0, sums=None, n_seen: int = 0, epoch_rng=None) -> dict:
        return {"model": model.state_dict(), "criterion": criterion.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng": rng_state(), "sampler_rng": epoch_rng,
                "rank_rng": distributed.gather_in_order([rng_state()], r) if r.on else None,
                "epoch": epoch, "step": step, "sums": {k: float(v) for k, v in (sums or {}).items()}, "n_seen": n_seen,
                "history": history, "best": best, "config": cfg.to_dict(), "clock": clock.state() if clock else None,
                "scaler": scaler.state_dict() if scaler is not None else None}

    if open_ended or cfg.schedule != "exponential":
        print(f"{cfg.schedule} schedule over " + (f"{cfg.minutes:g} minutes (its steps sized to the clock)" if clock
                                                  else f"{cfg.steps or cfg.epochs * per_epoch} steps"))
    last_lr = [optimizer.param_groups[0]["lr"]]

    def at_last_step() -> bool:
        """A run sized in minutes or steps has taken its planned steps (counted by the per-step scheduler)."""
        total = clock.total if clock is not None else cfg.steps
        return bool(total) and scheduler.last_epoch >= total

    def after_step() -> bool:
        last_lr[0] = optimizer.param_groups[0]["lr"]   # the rate this step was taken at
        if clock is not None:
            clock.step_done()                          # may plan the total: before the next step's rate
        if cfg.schedule != "exponential":
            scheduler.step()
        return at_last_step()

    def finished(epoch: int) -> bool:
        return at_last_step() if open_ended else epoch > cfg.epochs

    wrapped = {}       # what the steps call: the model, in DDP under torchrun, compiled with cfg.compile

    def trained(stage: str) -> nn.Module:
        if stage not in wrapped:                         # DDP fixes its parameters when built: rebuilt on unfreezing
            wrapped.clear()
            net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
                if r.on else model
            wrapped[stage] = torch.compile(net) if cfg.compile else net
        return wrapped[stage]

    epoch, t_loop = start_epoch, time.perf_counter()
    while not finished(epoch):
        t0 = time.perf_counter()
        epoch_rng = gen.get_state()                      # before the loader draws this epoch's order from it
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "stage": set_stage(model, criterion, cfg, epoch)}
        if clock is not None:
            clock.start_epoch()
        row.update(train_one_epoch(trained(row["stage"]), criterion, loader, optimizer, device, cfg, epoch, start=partial,
                                   checkpoint=_every(cfg.checkpoint_minutes, lambda step, sums, n: save_checkpoint(
                                       resumable(epoch - 1, step, sums, n, epoch_rng), last_path)),
                                   after_step=after_step, augment=augment, policy=policy, scaler=scaler))
        partial = None
        if cfg.schedule == "exponential":
            scheduler.step()
        seconds = time.perf_counter() - t0
        row.update(steps=scheduler.last_epoch if cfg.schedule != "exponential" else None, last_lr=last_lr[0])
        t_val = time.perf_counter()
        report = evaluate(model, data.val, data.classes, device=device, precision=cfg.precision)
        if clock is not None:
            clock.validated(time.perf_counter() - t_val)
        row.update(seconds=seconds, val_score=report["score"])
        row.update({f"val_{k}": report[k] for k in VAL_COLUMNS if k in report})
        row.update({f"f1_{k}": v for k, v in report.get("per_class_f1", {}).items()})
        shown_metrics = "  ".join(f"{name} {report[k]:.3f}" for k, name in VAL_COLUMNS.items() if k in report)
        history.append(row)
        stage = f" [{row['stage']}]" if cfg.freeze_epochs else ""
        print(f"epoch {epoch}{stage}: train loss {row['train_loss']:.3f}  val {shown_metrics}  ({seconds:.0f} s)")
        # a fine-tuned run keeps a fine-tuned epoch: with freeze_epochs < epochs, the heads-only epochs are
        # not candidates (else a "fine-tuned" row could report a heads-only checkpoint)
        candidate = epoch > cfg.freeze_epochs or cfg.freeze_epochs >= cfg.epochs
        if candidate and (best is None or report["score"] > best["score"]):
            best = {**report, "epoch": epoch}
            if r.main:
                save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "classes": list(data.classes),
                                 "epoch": epoch, "metrics": best}, best_path)
        state_now = resumable(epoch, epoch_rng=gen.get_state())
        if r.main:
            save_checkpoint(state_now, last_path)
            pd.DataFrame(history).to_csv(out_dir / "history.csv", index=False)
        epoch += 1
    distributed.barrier(r)                              # rank 0's files are written before anyone reads them

    loop_seconds = (clock.elapsed() if clock else time.perf_counter() - t_loop)   # steps + validations
    # the test split, never seen by model selection: the final epoch's weights, then the chosen epoch's
    def on_test():
        return evaluate(model, data.test, data.classes, device=device, interval=True, precision=cfg.precision)
    test_final = on_test() if data.test is not None else None
    test = dict(test_final) if test_final is not None else None
    if best["epoch"] != history[-1]["epoch"]:            # (when the last epoch is the chosen one, its weights are)
        model.load_state_dict(load_checkpoint(best_path)["model"])
        test = on_test() if data.test is not None else None

    hist = pd.DataFrame(history)
    images = float(hist.get("images", pd.Series(dtype=float)).sum()) * getattr(data.train, "clip_length", 1)
    final = {k: v for k, v in history[-1].items() if k.startswith("val_")}
    schedule = {"kind": cfg.schedule, "epochs": len(hist), "steps": int(scheduler.last_epoch) if cfg.schedule !=
                "exponential" else None, "last_lr": float(history[-1].get("last_lr", history[-1]["lr"])), "minutes": cfg.minutes,
                "train_seconds": float(hist["seconds"].sum()),
                "run_seconds": loop_seconds}     # steps + validations: what minutes budgets
    summary = {"best": best, "best_epoch": best["epoch"], "final": final, "protocol": data.protocol,
               "test": test, "test_final": test_final, "schedule": schedule, "image_size": size_note,
               "data": {"source": data.source, "train_frames": len(data.train), "val_frames": len(data.val),
                        "test_frames": len(data.test) if data.test is not None else 0,
                        "train_report": str(data.train.table.report), "val_report": str(data.val.table.report)},
               "train_images_per_second": images / max(float(hist["seconds"].sum()), 1e-9),
               "device": device.type, "precision": {"used": policy.name, "why": policy.why},
               "deterministic": torch.are_deterministic_algorithms_enabled(), "processes": r.world,
               "config": cfg.to_dict()}
    metrics_path = out_dir / "metrics.json"
    if r.main:
        _write_json(summary, metrics_path)
        write_model_card(summary, out_dir)
        save_run_figures(hist, test or best, out_dir)
    return RunResult(model=model, history=hist, best=best, out_dir=out_dir, metrics_path=metrics_path,
                     test=test, test_final=test_final, protocol=data.protocol)


def _every(minutes: float, save):
    """A step callback that calls save(step, sums, n_seen) once `minutes` have passed since the last
    save (or the start); None when minutes is 0 (a checkpoint per epoch only)."""
    if not minutes:
        return None
    last = [time.monotonic()]

    def maybe(step, sums, n_seen):
        if time.monotonic() - last[0] >= minutes * 60:
            save(step, sums, n_seen)
            last[0] = time.monotonic()
    return maybe


def save_run_figures(history: pd.DataFrame, best: dict, out_dir: Path) -> list[Path]:
    """The run folder's own pictures (learning curves; per-class F1 and confusion matrix where the task
    has classes), so a command-line run leaves what a notebook shows. Each figure is closed at once:
    inside a notebook it is not drawn a second time."""
    if os.environ.get("FER_KIT_RUN_FIGURES") == "0":    # the test suite's hundred small runs (conftest.py)
        return []
    import matplotlib.pyplot as plt

    from . import plots
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


def config_parser(cls=TrainConfig, prog: str = "python -m fer_kit.train",
                  description: str = __doc__.splitlines()[0]) -> argparse.ArgumentParser:
    """CLI flags are a config dataclass's fields, so the notebook and the command line speak one language."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                allow_abbrev=False)   # `--epoch 8` must fail, not mean --epochs
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        kinds = [t for t in (typing.get_args(hints[f.name]) or (hints[f.name],)) if t is not type(None)]
        p.add_argument(f"--{f.name}", type=_parse_as(kinds[0]), default=f.default, metavar=kinds[0].__name__.upper())
    return p


def _parser() -> argparse.ArgumentParser:
    """The CLI differs from a notebook in two defaults: an existing run folder is an error (a notebook
    re-run overwrites its own run), and the folder is named after the model and task, so the README's
    commands for different papers never share one."""
    p = config_parser()
    p.add_argument("--resume", action="store_true", help="the same as --exist resume")
    p.set_defaults(exist="error", out_dir=None)
    return p


def default_out_dir(cfg_args: dict) -> str:
    """runs/<model>_<task> (plus the variant for paper B's models), e.g. runs/dan_expr, runs/ddamfn_mtl."""
    model, task = cfg_args.get("model") or TrainConfig.model, cfg_args.get("task") or TrainConfig.task
    variant = f"_{cfg_args.get('variant') or TrainConfig.variant}" if model.startswith("regnet_transformer") else ""
    return f"runs/{model}_{task}{variant}"


def _parse_as(kind: type):
    def parse(text: str):
        if text == "None":
            return None
        if kind is bool:
            if text.lower() not in ("true", "false", "1", "0"):
                raise argparse.ArgumentTypeError(f"expected True or False, got {text!r}")
            return text.lower() in ("true", "1")
        return kind(text)
    parse.__name__ = kind.__name__
    return parse


def main(argv: list[str] | None = None) -> RunResult:
    args = vars(_parser().parse_args(argv))
    if args.pop("resume"):
        args["exist"] = "resume"
    args["out_dir"] = args["out_dir"] or default_out_dir(args)
    cfg = TrainConfig.from_params(args)
    try:
        result = fit(cfg)
    finally:
        main_rank = distributed.ranks().main
        distributed.cleanup()
    if not main_rank:
        return result
    score = score_name(cfg.model, cfg.task, cfg.num_classes)
    print(f"best validation {score} {result.best['score']:.4f} at epoch {result.best['epoch']}; "
          f"metrics in {shown(result.metrics_path)}")
    if result.test is not None:
        lo, hi = result.test["interval"]
        print(f"test {score} {result.test['score']:.4f} [{lo:.4f}, {hi:.4f}] at the chosen epoch, "
              f"{result.test_final['score']:.4f} at the last ({result.protocol})")
    else:
        print(f"no test labels: {result.protocol}")
    return result


if __name__ == "__main__":
    try:
        main()
    except (FileExistsError, PermissionError, RunInUseError, NotTheSameRunError) as e:
        # what to do, without a traceback; under torchrun once, by rank 0 (every rank stops)
        raise SystemExit(f"python -m fer_kit.train: {e}" if os.environ.get("RANK", "0") == "0" else 1) from None
