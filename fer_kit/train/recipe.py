"""What a config trains: the model, the paper's loss and how a model's output feeds it, the optimiser,
and paper D's freeze-then-fine-tune stages."""
from __future__ import annotations

import torch
from torch import nn

from ..config import TrainConfig
from ..losses import DDAMFNLoss
from ..models import create_model, model_entry


def build_model(cfg: TrainConfig) -> nn.Module:
    """cfg.model built from the config fields its registry entry names (fer_kit.models.registry)."""
    entry = model_entry(cfg.model)
    return create_model(cfg.model, **(entry.config_args(cfg) if entry.config_args else {}))


def build_criterion(cfg: TrainConfig, class_counts=None) -> nn.Module:
    """The paper's loss for cfg.model, as its registry entry names it; `class_counts` (training frames per
    class) set paper E's CE weights 1 - n_c/N."""
    entry = model_entry(cfg.model)
    if entry.loss is None:
        raise ValueError(f"model {cfg.model!r} is registered without a loss, so it cannot be trained: register it "
                         "with loss=(cfg, class_counts) -> the paper's loss (see fer_kit/models/dan.py)")
    return entry.loss(cfg, class_counts)


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
    fused = fused_step(groups)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, fused=fused)
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)


def fused_step(groups: list[dict]) -> bool | None:
    """True where torch has a fused kernel for every parameter's device (CPU and CUDA): one pass over all
    parameters instead of a dozen small operations per tensor. Without it, on a CPU, Adam's update of
    DAN-R18 took 12% of a 64 px training step (56 vs 8 ms per step for a ResNet-18 here); the result is
    the same update up to float rounding. None (torch's default) elsewhere, e.g. on MPS."""
    devices = {p.device.type for g in groups for p in g["params"]}
    return True if devices and devices <= {"cpu", "cuda"} else None


def compute_loss(criterion: nn.Module, out, y) -> dict[str, torch.Tensor]:
    """The paper's loss on one batch, with its terms: each loss reads its model's output (from_output), in
    fp32, with the targets masked where a label is invalid."""
    if not hasattr(criterion, "from_output"):
        raise TypeError(f"{type(criterion).__name__} cannot read a model's output: the loop's losses take (output, "
                        "targets) through from_output (fer_kit.losses; plain cross-entropy is losses.CrossEntropy)")
    return criterion.from_output(out, y)


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
