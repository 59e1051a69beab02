"""Data-parallel training under torchrun: `torchrun --standalone --nproc_per_node 2 -m fer_kit.train ...`
(several machines: `--nnodes N --node_rank i --rdzv_endpoint host:port`).

Each process trains a DistributedDataParallel copy of the model on its slice of every global batch
(cfg.batch_size is the global batch, as the papers' 1024 on several GPUs): every rank draws the same
global order from the run's seed (paper A's weighted sampling included) and takes its share of each
batch, so the averaged gradient is the one-process gradient of that global batch. Validation and test
frames are split over the ranks and gathered back in order, so every metric is over the whole split.
Rank 0 alone writes the run folder and prints.
"""
from __future__ import annotations

import io
import os
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler, Subset


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def on(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def ranks() -> Ranks:
    """This process's place in the job (one process when not launched by torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Ranks()


def setup(device_type: str) -> Ranks:
    """Join the process group torchrun's environment describes (WORLD_SIZE > 1): NCCL between GPUs, gloo
    between CPU processes. A no-op for a single process or a group already set up by the caller."""
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
    return ranks()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def device_of(device: torch.device, r: Ranks) -> torch.device:
    """One GPU per process on a machine: torchrun's LOCAL_RANK picks it."""
    return torch.device("cuda", r.local_rank) if device.type == "cuda" and r.on else device


class RankSlice(Sampler[int]):
    """Rank r's share of each global batch of `sampler`'s order: positions [r b, (r + 1) b) of every
    `batch_size` indices, b = batch_size / world. Every rank builds the same `sampler` from the same
    seeded generator, so the global order (and paper A's weighted draws) is the one-process order; an
    incomplete last global batch is dropped, as the one-process loader drops it."""

    def __init__(self, sampler, batch_size: int, r: Ranks):
        self.sampler, self.batch_size, self.r = sampler, batch_size, r
        self.per_rank = batch_size // r.world

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size * self.per_rank

    def __iter__(self):
        order = list(self.sampler)
        lo = self.r.rank * self.per_rank
        for start in range(0, len(order) - self.batch_size + 1, self.batch_size):
            yield from order[start + lo:start + lo + self.per_rank]


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are those of the global batch over all processes, for CPU
    (gloo) runs: torch's SyncBatchNorm is GPU-only. The all-reduces are differentiable
    (torch.distributed._functional_collectives), so the backward pass sums each rank's share as
    SyncBatchNorm's does."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input, got {x.dim()}D")

    def forward(self, x):
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed._functional_collectives import all_reduce   # differentiable (seen in torch 2.14)
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        z = x if x.dtype == torch.float64 else x.float()
        n = z.numel() // z.shape[1] * dist.get_world_size()             # values per channel, all ranks
        group = dist.group.WORLD
        mean = all_reduce(z.sum(dims), "sum", group) / n                # two passes, as one process's BatchNorm
        var = all_reduce(((z - mean.view(shape)) ** 2).sum(dims), "sum", group) / n   # biased: what normalises
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), m)
                self.running_var.lerp_((var.detach() * n / max(n - 1, 1)).to(self.running_var.dtype), m)
        y = (z - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def global_batch_norm(model: nn.Module, device_type: str) -> nn.Module:
    """Every BatchNorm normalises over the global batch (cfg.sync_bn): torch's SyncBatchNorm on GPUs, the
    kit's GlobalBatchNorm on CPUs. Statistics and weights carry over; the state dict keeps its names."""
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if isinstance(child, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            new = GlobalBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            where = next(iter([*child.parameters(), *child.buffers()]), torch.empty(0)).device
            setattr(model, name, new.to(where))
        else:
            global_batch_norm(child, device_type)
    return model


def shard(dataset, r: Ranks):
    """Rank r's contiguous block of a held-out split: gathering the blocks in rank order restores the
    split's own order."""
    n = len(dataset)
    lo, hi = n * r.rank // r.world, n * (r.rank + 1) // r.world
    return Subset(dataset, range(lo, hi))


def to_cpu(obj):
    """Tensors inside tuples (named or not), lists and dicts, moved to the CPU for gathering."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(to_cpu(v) for v in obj))
    if isinstance(obj, (tuple, list)):
        return type(obj)(to_cpu(v) for v in obj)
    if isinstance(obj, dict):
        return {k: to_cpu(v) for k, v in obj.items()}
    return obj


def gather_in_order(items: list, r: Ranks) -> list:
    """Every rank's list, concatenated in rank order, on every rank."""
    parts = [None] * r.world
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def average_gradients(module: nn.Module, r: Ranks) -> None:
    """The mean over ranks of the gradients of a module DDP does not wrap (a loss's learnable centres)."""
    if not r.on:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= r.world


def all_sum(values: dict[str, float], r: Ranks) -> dict[str, float]:
    """Sums over ranks of per-rank totals (an epoch's loss sums and image counts)."""
    if not r.on:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.all_reduce(t)
    return dict(zip(keys, t.tolist()))


def on_main(fn, r: Ranks):
    """fn() on rank 0, its result (or its error, raised again) on every rank: one process decides about
    the run folder, the others follow instead of waiting forever on a rank that failed."""
    if not r.on:
        return fn()
    box = [None]
    if r.main:
        try:
            box[0] = ("ok", fn())
        except Exception as e:                      # noqa: BLE001 (raised again on every rank below)
            box[0] = ("error", e)
    dist.broadcast_object_list(box, src=0)
    kind, value = box[0]
    if kind == "error":
        raise value
    return value


def barrier(r: Ranks) -> None:
    if r.on:
        dist.barrier()


@contextmanager
def quiet_unless_main(r: Ranks):
    """Only rank 0 prints the run's lines (each rank would print the same ones)."""
    if r.main:
        yield
    else:
        with redirect_stdout(io.StringIO()):
            yield
