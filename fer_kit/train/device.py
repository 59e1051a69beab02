"""Where a run computes and how: the device, seeding, deterministic kernels, and channels_last inputs.
The precision policy (bf16 where native, fp16 + a scaler on older GPUs) is in precision.py."""
from __future__ import annotations

import os
import random
from contextlib import contextmanager

import numpy as np
import torch


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



def to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Images go channels_last (faster convolutions on CPU); clips (B, T, 3, H, W) stay as they are, and
    so do uint8 faces, whose batch augmentation writes its float batch channels-last itself."""
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 and x.is_floating_point() else x
