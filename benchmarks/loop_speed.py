"""How close the kit's training loop comes to the bare step, and to the machine's matmul rate, in one run.

    python benchmarks/loop_speed.py            # DAN-R18 at 80 and 112 px, batch 64

1. The kit's loop (`train.train_one_epoch`: loader, channels_last copy, precision policy, paper A's
   loss, gradient-norm check, loss sums) against a bare forward / loss / backward / step on the same
   tensors, interleaved, the median of 3 ratios.
2. The training step's FLOP rate (torch.utils.flop_counter: forward and backward) as a share of a
   2048 x 2048 matmul measured here in the step's precision: how much of the arithmetic the machine
   offers a convolutional step uses.
On a machine with a GPU the same two measurements run there too.
"""
import dataclasses
import statistics
import time

import torch
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.flop_counter import FlopCounterMode

from fer_kit import train
from fer_kit.config import TrainConfig
from fer_kit.train.precision import cpu_has_native_bf16, resolve


def setup(size: int, batch: int, steps: int, device: torch.device):
    cfg = TrainConfig(model="dan", image_size=size, batch_size=batch, progress=False, max_batches=steps)
    torch.manual_seed(0)
    model = train.build_model(cfg).to(device).to(memory_format=torch.channels_last)
    criterion = train.build_criterion(cfg).to(device)
    opt = train.build_optimizer(cfg, model, criterion)
    x = torch.randn(batch * steps, 3, size, size)
    y = torch.randint(0, cfg.num_classes, (batch * steps,))
    return cfg, model, criterion, opt, x, y, resolve("auto", device, model)


def kit_rate(cfg, model, criterion, opt, x, y, policy, device) -> float:
    loader = DataLoader(TensorDataset(x, y), batch_size=cfg.batch_size, shuffle=False)
    start = time.perf_counter()
    out = train.train_one_epoch(model, criterion, loader, opt, device, cfg, epoch=1, policy=policy)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out["images"] / (time.perf_counter() - start)


def bare_step(model, criterion, opt, policy, x, y) -> None:
    with policy.autocast():
        out = model(x)
    loss = train.compute_loss(criterion, out, y)["loss"]
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bare_rate(cfg, model, criterion, opt, x, y, policy, device) -> float:
    model.train()
    batches = [(x[i:i + cfg.batch_size].to(device).contiguous(memory_format=torch.channels_last),
                y[i:i + cfg.batch_size].to(device)) for i in range(0, len(x), cfg.batch_size)]
    start = time.perf_counter()
    for xb, yb in batches:
        bare_step(model, criterion, opt, policy, xb, yb)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(x) / (time.perf_counter() - start)


def loop_vs_bare(size: int, device: torch.device, batch: int = 64, steps: int = 4, repeats: int = 3):
    cfg, model, criterion, opt, x, y, policy = setup(size, batch, steps, device)
    warm = dataclasses.replace(cfg, max_batches=1)
    kit_rate(warm, model, criterion, opt, x[:batch], y[:batch], policy, device)     # oneDNN picks its kernels
    bare_rate(cfg, model, criterion, opt, x[:batch], y[:batch], policy, device)
    kit, bare = [], []
    for _ in range(repeats):
        kit.append(kit_rate(cfg, model, criterion, opt, x, y, policy, device))
        bare.append(bare_rate(cfg, model, criterion, opt, x, y, policy, device))
    ratios = [k / b for k, b in zip(kit, bare)]
    return statistics.median(kit), statistics.median(bare), statistics.median(ratios), policy


def median_seconds(fn, device: torch.device, repeats: int = 3) -> float:
    """Median time of fn() after one warm-up call, waiting for a GPU to finish each."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_flops(size: int, device: torch.device, batch: int = 64):
    """FLOPs of one training step (forward + backward), its seconds, and the precision it ran in."""
    cfg, model, criterion, opt, x, y, policy = setup(size, batch, 1, device)
    x, y = x.to(device).contiguous(memory_format=torch.channels_last), y.to(device)

    def step():
        bare_step(model, criterion, opt, policy, x, y)
    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops(), median_seconds(step, device), policy


def matmul_rate(dtype: torch.dtype, device: torch.device, n: int = 2048) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    return 2 * n ** 3 / median_seconds(lambda: a @ b, device, repeats=5)


def report(device: torch.device):
    print(f"\n{device.type}: threads {torch.get_num_threads()}, native bf16 (CPU flags) {cpu_has_native_bf16()}")
    print(f"{'DAN-R18, batch 64':22s} {'kit img/s':>9s} {'bare img/s':>10s} {'kit/bare':>8s}  precision")
    for size in (80, 112):
        kit, bare, ratio, policy = loop_vs_bare(size, device)
        print(f"{f'{size} px':22s} {kit:9.1f} {bare:10.1f} {ratio:8.3f}  {policy.name}")
    flops, seconds, policy = step_flops(112, device)
    dtype = torch.bfloat16 if policy.name == "bf16" else torch.float16 if policy.name == "fp16" else torch.float32
    peak = matmul_rate(dtype, device)
    print(f"DAN-R18 step at 112 px: {flops / 1e9:.1f} GFLOP in {seconds:.3f} s = {flops / seconds / 1e9:.1f} GFLOP/s; "
          f"{dtype} 2048^2 matmul {peak / 1e9:.1f} GFLOP/s; share {flops / seconds / peak:.2f}")


if __name__ == "__main__":
    report(torch.device("cpu"))
    if torch.cuda.is_available():
        report(torch.device("cuda"))
    else:
        print("\nno CUDA device: the GPU table is skipped")
