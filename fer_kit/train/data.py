"""A run's data: the splits of cfg's dataset (or the synthetic default) as datasets, optionally cut into
clips, and the choice of augmenting per face in the loader or per batch on the device."""
from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..config import TrainConfig, is_lsd_model
from ..data.abaw import has_split, read_abaw, read_expr_any
from ..data.batch_augment import BatchAugment
from ..data.clips import ClipDataset
from ..data.dataset import FrameDataset
from ..data.sources import dataset_root, lsd_tables
from ..data.splits import read_splits
from ..data.table import FrameTable
from ..data.transforms import eval_transform, train_transform
from ..losses import denormalize_landmarks, normalize_landmarks


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


def loader_workers(dataset, workers: int | None = None) -> int:
    """DataLoader processes for a split: none where frames are already decoded (reading one costs
    microseconds), else `workers` (cfg.workers) or all cores but the training one, up to 4, decoding ahead."""
    frames = dataset.frames if isinstance(dataset, ClipDataset) else dataset
    if getattr(frames, "images", None) is not None:
        return 0
    return workers if workers is not None else min(4, (os.cpu_count() or 1) - 1)


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


def batch_augmentation(cfg: TrainConfig, data: ExprData, device: torch.device) -> tuple[ExprData, BatchAugment | None]:
    """With augment_on "batch" (or "auto" on a GPU), the training frames leave the loader as uint8 and
    their recipe runs on whole batches on the device: the same draws per image, without a GPU waiting
    on a loader that augments one face at a time. Returns the data to load and the batch augmentation
    (None: each face is augmented in the loader, as before)."""
    on_batch = cfg.augment_on == "batch" or (cfg.augment_on == "auto" and device.type != "cpu"
                                             and cfg.augment != "paper_a")   # paper_a: per image only
    if not on_batch:
        return data, None
    # each step's batch is finished with before the next is asked for, so on a CPU it is written into the
    # last one's memory; cfg.compile also compiles the colour steps
    train, augment = transform_on_device(data.train, reuse_output=True, compile=cfg.compile)
    return dataclasses.replace(data, train=train), augment


def transform_on_device(dataset, reuse_output: bool = False,
                        compile: bool = False) -> tuple[FrameDataset | ClipDataset, BatchAugment | None]:
    """(the dataset handing over decoded uint8 frames, its transform as one call on a batch), or the
    dataset as it is and None when it has no transform. Raises ValueError for a step with no batched
    version (recipe paper_a). The batch comes out channels-last, as the models take it; `reuse_output`
    and `compile` as BatchAugment's."""
    frames = dataset.frames if isinstance(dataset, ClipDataset) else dataset
    if frames.transform is None:
        return dataset, None
    augment = BatchAugment(frames.transform, channels_last=True, reuse_output=reuse_output, compile=compile)
    plain = copy.copy(frames)
    plain.transform = None                       # the loader now hands over decoded uint8 frames
    if isinstance(dataset, ClipDataset):
        clips = copy.copy(dataset)
        clips.frames = plain
        plain = clips
    return plain, augment


def augment_batch(augment: BatchAugment, x: torch.Tensor, y):
    """Run a batch transform on a batch already on the device; LSD targets' landmarks ([-1, 1]
    coordinates, on the same device) move with their faces."""
    pts = y.get("landmarks") if isinstance(y, dict) else None
    x, moved = augment(x, None if pts is None else denormalize_landmarks(pts, x.shape[-2:]))
    if moved is not None:
        y = {**y, "landmarks": normalize_landmarks(moved, x.shape[-2:])}
    return (x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x), y


def frame_videos(dataset) -> np.ndarray:
    """The video of every frame in the order the predict functions return them (the table's order)."""
    return (dataset.frames if isinstance(dataset, ClipDataset) else dataset).table.videos
