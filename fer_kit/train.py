"""One training loop for the kit: config -> data -> model -> loss -> fit -> metrics -> run folder.

Used by the notebooks and by the command line, which take the same parameter names:
    python -m fer_kit.train --epochs 8 --batch_size 64
A run folder holds config.json, history.csv, metrics.json, best.pt (best validation P_EXPR) and last.pt
(for resuming); checkpoints are written atomically and read back with `weights_only=True`.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import tempfile
import time
import typing
from contextlib import nullcontext
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from . import metrics
from .config import TrainConfig
from .data.abaw import read_abaw, read_expr_any
from .data.table import FrameTable
from .data.dataset import FrameDataset
from .data.sampling import weighted_sampler
from .data.sources import dataset_root
from .data.transforms import dan_train_transform, eval_transform
from .losses import DANLoss, DDAMFNLoss, SCANCCILoss
from .models import create_model
from .paths import output_dir, shown


def select_device(name: str = "auto") -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed every generator and ask torch for deterministic kernels. Without the latter, CPU runs of the
    same seed drifted apart after ~10 steps: the backward of `centers[labels]` (AffinityLoss) accumulates
    with parallel atomic adds, whose order changes from run to run. warn_only: ops with no deterministic
    kernel (some CUDA ones) warn instead of failing."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # cuBLAS's condition for determinism
    torch.use_deterministic_algorithms(True, warn_only=True)


@dataclass
class ExprData:
    """The two splits of an expression dataset, ready for training."""

    train: FrameDataset
    val: FrameDataset
    classes: tuple[str, ...]
    source: str

    def summary(self) -> pd.DataFrame:
        """Per-class frame counts of both splits (the layout of paper A Table 1)."""
        rows = {split: ds.table.class_counts() for split, ds in (("train", self.train), ("validation", self.val))}
        df = pd.DataFrame(rows, index=list(self.classes)).T
        df["total"] = df.sum(axis=1)
        return df


def split_tables(cfg: TrainConfig) -> tuple[FrameTable, FrameTable, str]:
    """The train/validation tables from cfg.data_root or the synthetic default: EXPR frames, or for
    task="mtl" every ABAW label (VA, EXPR, AU) per frame from the MTL csv or the per-task files."""
    root, source = dataset_root(cfg.data_root, cfg.n_frames, cfg.balance, cfg.seed, progress=cfg.progress)
    read = read_expr_any if cfg.task == "expr" else read_abaw
    train, val = (read(root, split, cfg.num_classes) for split in ("Train_Set", "Validation_Set"))
    for table in (train, val):
        if len(table) == 0:
            raise ValueError(f"{table.report}: no usable frames left")
    return train, val, source


def load_expr_data(cfg: TrainConfig) -> ExprData:
    """The run's two splits as datasets: EXPR labels, or (task="mtl") VA, EXPR and AU targets."""
    train, val, source = split_tables(cfg)
    targets = "expr" if cfg.task == "expr" else "mtl"    # VA and AU runs read the multi-task labels
    print(train.report)
    print(val.report)
    return ExprData(
        train=FrameDataset(train, cfg.image_size, dan_train_transform(), progress=cfg.progress, targets=targets),
        val=FrameDataset(val, cfg.image_size, eval_transform(), progress=cfg.progress, targets=targets),
        classes=train.classes, source=source,
    )


def build_model(cfg: TrainConfig) -> nn.Module:
    if cfg.model.startswith("ddamfn"):      # paper D: no timm trunk; the task decides the heads
        tasks = {"mtl": ("VA", "EXPR", "AU"), "expr": ("EXPR",), "va": ("VA",), "au": ("AU",)}[cfg.task]
        return create_model(cfg.model, tasks=tasks, num_expr=cfg.num_classes, num_heads=cfg.num_heads,
                            image_size=cfg.image_size)
    if cfg.model.startswith("scan_cci"):    # paper C: the registry name fixes the ResNet-50 trunk
        return create_model(cfg.model, num_classes=cfg.num_classes, pretrained=cfg.pretrained)
    if cfg.model.endswith("resnet_classifier"):   # plain CNN baseline (paper C Table 2's ResNet-50)
        return create_model(cfg.model, num_classes=cfg.num_classes, backbone=cfg.backbone, pretrained=cfg.pretrained)
    return create_model(cfg.model, num_classes=cfg.num_classes, num_heads=cfg.num_heads,
                        backbone=cfg.backbone, pretrained=cfg.pretrained)


def build_criterion(cfg: TrainConfig) -> nn.Module:
    if cfg.model.startswith("ddamfn"):
        return DDAMFNLoss(attention_weight=cfg.attention_weight)
    if cfg.model.startswith("scan_cci"):    # paper C Eq. 4-5: 0.2 L_u + 0.8 sum_i L_i
        return SCANCCILoss(lam=0.2)
    if cfg.model.endswith("resnet_classifier"):
        return nn.CrossEntropyLoss()
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
    if isinstance(criterion, nn.CrossEntropyLoss):
        return {"loss": criterion(out.logits.float(), y)}
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


def cpu_has_fast_bf16() -> bool:
    """True where oneDNN runs bf16 natively (AVX512-BF16 / AMX). Elsewhere bf16 autocast is emulated:
    on an AVX2-only 2-core EPYC it trained ResNet-18 ~20x slower than fp32 (benchmarks/train_speed.py)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _autocast(device: torch.device):
    if device.type == "cuda" and torch.cuda.is_bf16_supported():  # bf16 needs no gradient scaler
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if device.type == "cpu" and cpu_has_fast_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def train_one_epoch(model, criterion, loader, optimizer, device, cfg: TrainConfig, epoch: int) -> dict[str, float]:
    model.train()
    criterion.train()
    sums, n_seen = {}, 0
    total = len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)
    # a refresh every 15 s keeps notebooks saved by papermill readable (each refresh is stored)
    bar = tqdm(loader, total=total, desc=f"epoch {epoch}/{cfg.epochs}", unit="batch", disable=not cfg.progress,
               mininterval=15.0)
    for step, (x, y) in enumerate(bar):
        if step >= total:
            break
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        y = {k: v.to(device) for k, v in y.items()} if isinstance(y, dict) else y.to(device)
        n = len(x)
        with _autocast(device):
            out = model(x)
        parts = compute_loss(criterion, out, y)
        loss = parts["loss"]
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at epoch {epoch}, step {step}; "
                                     f"try a lower lr (now {cfg.lr}) or clip_grad")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.clip_grad:
            nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.clip_grad)
        optimizer.step()
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
        n_seen += n
        bar.set_postfix(loss=f"{sums['loss'] / n_seen:.3f}", refresh=False)
    return {f"train_{k}": v / max(n_seen, 1) for k, v in sums.items()}


@torch.no_grad()
def predict(model: nn.Module, dataset, batch_size: int = 128, device: torch.device | str = "cpu",
            progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Logits for every sample of a dataset, in order, and the labels (for whole-split metrics)."""
    device = torch.device(device)
    model.eval()
    logits, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for x, y in tqdm(loader, desc="predicting", unit="batch", disable=not progress, mininterval=2.0):
        with _autocast(device):
            out = model(x.to(device).contiguous(memory_format=torch.channels_last))
        logits.append((out.logits if hasattr(out, "logits") else out).float().cpu())
        labels.append(y)
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


@torch.no_grad()
def predict_tasks(model: nn.Module, dataset, batch_size: int = 128, device: torch.device | str = "cpu",
                  progress: bool = False) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """A multi-task model's outputs over a whole dataset ({"va", "expr", "au"}, AU as probabilities) and
    the matching targets, in order."""
    device = torch.device(device)
    model.eval()
    outs, targets = {}, {}
    for x, y in tqdm(DataLoader(dataset, batch_size=batch_size, shuffle=False), desc="predicting", unit="batch",
                     disable=not progress, mininterval=2.0):
        with _autocast(device):
            out = model(x.to(device).contiguous(memory_format=torch.channels_last))
        for k in ("va", "expr", "au"):
            if getattr(out, k) is not None:
                v = getattr(out, k).float().cpu()
                outs.setdefault(k, []).append(v.sigmoid() if k == "au" else v)
        for k, v in y.items():
            targets.setdefault(k, []).append(v)
    return ({k: torch.cat(v).numpy() for k, v in outs.items()}, {k: torch.cat(v).numpy() for k, v in targets.items()})


# report key -> how the epoch line names it; each becomes a val_<key> column of the history when present
VAL_COLUMNS = {"p_mtl": "P", "ccc_mean": "CCC", "p_expr": "P_EXPR", "accuracy": "acc", "au_f1_mean": "AU F1"}


def evaluate(model, dataset, classes, batch_size: int = 128, device="cpu") -> dict:
    """Whole-split validation report; its "score" is the run's model-selection metric: P_EXPR (mean F1
    over 8 classes), or P for multi-task runs.

    With 7 classes (the ABAW 2020 EXPR set) the report adds "abaw2020" = 0.67 F1 + 0.33 accuracy, and the
    score is that: it was the challenge's measure, and paper C selected its models by it. Both terms are
    over the whole split; paper C's published code averaged a per-batch F1 instead (notes §4.4).
    """
    if getattr(dataset, "targets", "expr") == "mtl":
        return metrics.task_report(*predict_tasks(model, dataset, batch_size, device), classes)
    logits, labels = predict(model, dataset, batch_size, device)
    report = metrics.expr_report(labels, logits.argmax(1), num_classes=len(classes), class_names=list(classes))
    return {"score": report.get("abaw2020", report["p_expr"]), **report}


def save_checkpoint(obj: dict, path: str | Path) -> None:
    """Write to a temporary file in the same folder and rename, so a crash never leaves half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


@dataclass
class RunResult:
    model: nn.Module
    history: pd.DataFrame
    best: dict          # validation report at the best epoch
    out_dir: Path
    metrics_path: Path


def _write_json(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def record(metrics_path: str | Path, **entries) -> None:
    """Add entries (e.g. baselines measured in the notebook) to a run's metrics.json."""
    path = Path(metrics_path)
    data = json.loads(path.read_text()) if path.exists() else {}
    data.update(entries)
    _write_json(data, path)


def fit(cfg: TrainConfig, data: ExprData | None = None, resume: bool = False) -> RunResult:
    """Train cfg.model on cfg.task's data, validating every epoch over the whole validation split and
    keeping the checkpoint of the best validation score (P_EXPR; P = CCC + F1 + AU F1 for "mtl")."""
    seed_everything(cfg.seed)
    data = data or load_expr_data(cfg)
    device = select_device(cfg.device)
    out_dir = output_dir() / cfg.out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_json(cfg.to_dict(), out_dir / "config.json")

    model = build_model(cfg).to(device).to(memory_format=torch.channels_last)
    criterion = build_criterion(cfg).to(device)
    optimizer = build_optimizer(cfg, model, criterion)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=cfg.lr_decay)
    gen = torch.Generator().manual_seed(cfg.seed)
    sampler = weighted_sampler(data.train.table.labels, len(data.classes), generator=gen) \
        if cfg.weighted_sampling and cfg.task == "expr" else None
    # num_workers=0: on a 2-core laptop, worker processes slow training down
    loader = DataLoader(data.train, batch_size=cfg.batch_size, sampler=sampler, shuffle=sampler is None,
                        generator=gen, drop_last=len(data.train) > cfg.batch_size)

    history, best, start_epoch = [], None, 1
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    if resume and last_path.exists():
        state = load_checkpoint(last_path)
        model.load_state_dict(state["model"])
        criterion.load_state_dict(state["criterion"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["torch_rng"])
        gen.set_state(state["sampler_rng"])
        history, best, start_epoch = state["history"], state["best"], state["epoch"] + 1
        print(f"resumed from {shown(last_path)} after epoch {state['epoch']}")

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "stage": set_stage(model, criterion, cfg, epoch)}
        row.update(train_one_epoch(model, criterion, loader, optimizer, device, cfg, epoch))
        scheduler.step()
        seconds = time.perf_counter() - t0
        report = evaluate(model, data.val, data.classes, device=device)
        row.update(seconds=seconds, val_score=report["score"])
        row.update({f"val_{k}": report[k] for k in VAL_COLUMNS if k in report})
        row.update({f"f1_{k}": v for k, v in report.get("per_class_f1", {}).items()})
        shown_metrics = "  ".join(f"{name} {report[k]:.3f}" for k, name in VAL_COLUMNS.items() if k in report)
        history.append(row)
        stage = f" [{row['stage']}]" if cfg.freeze_epochs else ""
        print(f"epoch {epoch}{stage}: train loss {row['train_loss']:.3f}  val {shown_metrics}  ({seconds:.0f} s)")
        if best is None or report["score"] > best["score"]:
            best = {**report, "epoch": epoch}
            save_checkpoint({"model": model.state_dict(), "config": cfg.to_dict(), "classes": list(data.classes),
                             "epoch": epoch, "metrics": best}, best_path)
        save_checkpoint({"model": model.state_dict(), "criterion": criterion.state_dict(),
                         "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                         "torch_rng": torch.get_rng_state(), "sampler_rng": gen.get_state(),
                         "epoch": epoch, "history": history, "best": best}, last_path)
        pd.DataFrame(history).to_csv(out_dir / "history.csv", index=False)

    hist = pd.DataFrame(history)
    train_frames = len(data.train) if cfg.max_batches is None else min(len(data.train), cfg.max_batches * cfg.batch_size)
    final = {k: v for k, v in history[-1].items() if k.startswith("val_")}
    summary = {"best": best, "best_epoch": best["epoch"], "final": final,
               "data": {"source": data.source, "train_frames": len(data.train), "val_frames": len(data.val),
                        "train_report": str(data.train.table.report), "val_report": str(data.val.table.report)},
               "train_images_per_second": train_frames * len(hist) / max(float(hist["seconds"].sum()), 1e-9),
               "device": device.type, "config": cfg.to_dict()}
    metrics_path = out_dir / "metrics.json"
    _write_json(summary, metrics_path)
    state = load_checkpoint(best_path)
    model.load_state_dict(state["model"])
    return RunResult(model=model, history=hist, best=best, out_dir=out_dir, metrics_path=metrics_path)


def _parser() -> argparse.ArgumentParser:
    """CLI flags are the TrainConfig fields, so the notebook and the command line speak one language."""
    p = argparse.ArgumentParser(prog="python -m fer_kit.train", description=__doc__.splitlines()[0],
                                allow_abbrev=False)   # `--epoch 8` must fail, not mean --epochs
    hints = typing.get_type_hints(TrainConfig)
    for f in fields(TrainConfig):
        kinds = [t for t in (typing.get_args(hints[f.name]) or (hints[f.name],)) if t is not type(None)]
        p.add_argument(f"--{f.name}", type=_parse_as(kinds[0]), default=f.default, metavar=kinds[0].__name__.upper())
    p.add_argument("--resume", action="store_true", help="continue from out_dir/last.pt")
    return p


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
    resume = args.pop("resume")
    cfg = TrainConfig.from_params(args)
    result = fit(cfg, resume=resume)
    print(f"best validation {'P' if cfg.task == 'mtl' else 'P_EXPR'} {result.best['score']:.4f} at epoch {result.best['epoch']}; "
          f"metrics in {shown(result.metrics_path)}")
    return result


if __name__ == "__main__":
    main()
