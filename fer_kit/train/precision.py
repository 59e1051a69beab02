"""The number format a run computes in: fp32, or bf16 / fp16 autocast where the device runs it natively.

bf16 halves memory traffic and, where the hardware has bf16 dot products (CPUs with AVX512-BF16 or AMX,
NVIDIA GPUs from Ampere on), speeds convolutions up; where it has not, it is emulated and slower than
fp32 (an AVX2-only CPU trained ResNet-18 ~20x slower). fp16 is native on every CUDA GPU but its range
is small: gradients are scaled (torch.amp.GradScaler) so they do not underflow. Losses and metrics are
always computed in fp32 (the training loop casts the outputs).
"""
from __future__ import annotations

import platform
from contextlib import nullcontext
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..config import PRECISIONS
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@lru_cache(maxsize=None)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux names them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 dot products in hardware. Read from the CPU's flags, not from oneDNN's
    `_is_mkldnn_bf16_supported`, which is true on every AVX-512 CPU, Skylake and Cascade Lake included,
    where oneDNN emulates bf16 and autocast is the slowdown it is meant to avoid."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cuda_has_native_bf16() -> bool:
    """Ampere (compute capability 8.0) and newer; `is_bf16_supported()` alone also counts emulation."""
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


@dataclass(frozen=True)
class Precision:
    """A resolved policy: `name` is fp32, bf16 or fp16; `why` says how auto chose it (for the run's log)."""

    name: str
    device_type: str
    why: str = ""

    def autocast(self):
        """The forward pass's context: autocast to bf16/fp16, or nothing for fp32."""
        if self.name == "fp32":
            return nullcontext()
        return torch.autocast(self.device_type, dtype=_DTYPES[self.name])

    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16 training scales the loss so small gradients survive; bf16 has fp32's range and needs none."""
        return torch.amp.GradScaler(self.device_type) if self.name == "fp16" else None

    def __str__(self) -> str:
        return f"{self.name} ({self.why})" if self.why else self.name


def slower_in_bf16_on_cpu(model: torch.nn.Module | None) -> str | None:
    """The name of a part of `model` that declares `bf16_on_cpu = False` (measured slower in bf16 on a
    CPU with native bf16: DDAMFN's depthwise convolutions), or None."""
    for m in model.modules() if model is not None else ():
        if getattr(type(m), "bf16_on_cpu", True) is False:
            return type(m).__name__
    return None


def resolve(precision: str = "auto", device: torch.device | str = "cpu", model: torch.nn.Module | None = None
            ) -> Precision:
    """What `precision` means on `device` for `model`. auto: bf16 where the device runs it natively (CPU:
    AVX512-BF16 or AMX, unless the model is measured slower in it; CUDA: Ampere and newer), fp16 with
    gradient scaling on older CUDA GPUs, else fp32 (also on MPS, where autocast coverage is partial). An
    explicit choice is kept, but fp16 on a CPU is refused (CPU autocast to fp16 covers few operations and
    trains no faster)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}")
    kind = torch.device(device).type
    if precision == "fp16" and kind == "cpu":
        raise ValueError("precision='fp16' needs a GPU; on a CPU use 'bf16' (native on CPUs with AVX512-BF16 or "
                         "AMX) or 'fp32'")
    if precision != "auto":
        return Precision(precision, kind, "asked for")
    if kind == "cuda":
        if cuda_has_native_bf16():
            return Precision("bf16", kind, "auto: this GPU has native bf16")
        return Precision("fp16", kind, "auto: no native bf16 on this GPU, fp16 with gradient scaling")
    if kind == "cpu" and cpu_has_native_bf16():
        if (slow := slower_in_bf16_on_cpu(model)) is not None:
            return Precision("fp32", kind, f"auto: {slow} trains slower in bf16 on a CPU (benchmarks/precision.py)")
        return Precision("bf16", kind, "auto: this CPU has AVX512-BF16/AMX")
    cpu = platform.processor() or platform.machine()
    return Precision("fp32", kind, f"auto: no native bf16 on this {'CPU (' + cpu + ')' if kind == 'cpu' else kind}")
