"""The disk cache at Aff-Wild2's scale, measured in one run (issue 14, item 2).

    python benchmarks/disk_cache.py [--frames 50000,200000] [--size 112] [--batches 15] [--repeats 2]

1. Peak resident memory of a training run with cache="disk", at each number of synthetic frames on disk
   (the synthetic faces are generated once into $FER_KIT_CACHE, ~1 GB per 100,000 frames, and reused):
   `python -m fer_kit.train` in a child process (model test_resnet_classifier, a ResNet-10-T, so the data
   path, not a model, decides the memory), one epoch of `batches` steps, then the whole validation and test splits.
   Beside it, what the same frames would need held in memory.
2. The same training steps from tensors in memory and from the disk cache, the two interleaved and each
   the best of `repeats`: with the kit's DAN (the default model) and with the tiny model (the worst case
   for the cache, the read a larger share of each step), the cache file in the kernel's page cache (warm)
   and evicted from it first (cold, posix_fadvise DONTNEED). Prints each ratio disk / memory.
3. The cache reused when nothing changed (the key check's time), and rebuilt after one source file's
   modification time changes.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from fer_kit import train
from fer_kit.config import TrainConfig
from fer_kit.data.cache import cache_files, frames_nbytes
from fer_kit.data.dataset import FrameDataset

CHILD = """import resource, runpy, sys
sys.argv = ["fer_kit.train"] + sys.argv[1:]
try:
    runpy.run_module("fer_kit.train", run_name="__main__")
finally:
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    workers_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(f"PEAK_RSS_KIB {self_kib} {workers_kib}")
"""


def peak_rss(n: int, size: int, batches: int, cache_dir: str, out: str) -> tuple[float, float, float]:
    """(peak GiB of the training process, of its largest decoding worker, seconds) of one training run."""
    args = ["--n_frames", str(n), "--model", "test_resnet_classifier", "--backbone", "resnet10t",
            "--image_size", str(size), "--cache", "disk",
            "--cache_dir", cache_dir, "--epochs", "1", "--max_batches", str(batches), "--progress", "False",
            "--out_dir", out, "--exist", "overwrite"]
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True)
    took = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"training run failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("PEAK_RSS_KIB"))
    self_kib, workers_kib = (int(v) for v in line.split()[1:])
    return self_kib / 2**20, workers_kib / 2**20, took


def evict(frames) -> None:
    """Drop the cache file's pages from the kernel's page cache: the next epoch reads the disk."""
    fd = os.open(frames.path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def epoch_seconds(cfg: TrainConfig, data: train.ExprData, cold: bool = False) -> float:
    """`cfg.max_batches` training steps of a fresh model over `data` (same seed, same sampled frames)."""
    train.seed_everything(cfg.seed)
    model = train.build_model(cfg).to(memory_format=torch.channels_last)
    criterion = train.build_criterion(cfg, data.train.table.class_counts())
    optimizer = train.build_optimizer(cfg, model, criterion)
    gen = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(data.train, batch_size=cfg.batch_size, shuffle=True, generator=gen, drop_last=True)
    if cold:
        evict(data.train.images)
    start = time.perf_counter()
    train.train_one_epoch(model, criterion, loader, optimizer, torch.device("cpu"), cfg, epoch=1)
    return time.perf_counter() - start


def read_seconds(dataset, batch_size: int, batches: int) -> float:
    """The loader alone: `batches` shuffled batches read and normalised, no model."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    for step, _ in enumerate(loader):
        if step + 1 >= batches:
            break
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="50000,200000")
    ap.add_argument("--size", type=int, default=112)
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    sizes = [int(n) for n in args.frames.split(",")]
    cache_dir = tempfile.mkdtemp(prefix="fer_kit_frames_")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; disk caches in {cache_dir}")

    print("\n1. peak resident memory of a training run, cache='disk'")
    for n in sizes:
        train.split_tables(TrainConfig(n_frames=n, progress=True))       # the synthetic faces, generated once
        with tempfile.TemporaryDirectory() as out:
            own, worker, took = peak_rss(n, args.size, args.batches, cache_dir, out)
            m = json.loads((Path(out) / "metrics.json").read_text())["data"]
        held = frames_nbytes(m["train_frames"] + m["val_frames"] + m.get("test_frames", 0), args.size) / 2**30
        print(f"{n:>9,} frames on disk ({m['train_frames']:,} train, {m['val_frames']:,} validation, "
              f"{m.get('test_frames', 0):,} test): peak RSS {own:.2f} GiB (largest decoding worker {worker:.2f} GiB); "
              f"in memory the frames alone would take {held:.2f} GiB; run {took:.0f} s with the caches' build")

    n = sizes[0]
    print(f"\n2. the same {args.batches} training steps from memory and from the disk cache ({n:,}-frame set, "
          f"{args.size} px; best of {args.repeats}, interleaved)")
    for model, backbone in (("dan", "resnet18"), ("test_resnet_classifier", "resnet10t")):
        cfg = TrainConfig(n_frames=n, model=model, backbone=backbone, image_size=args.size, batch_size=64, epochs=1,
                          max_batches=args.batches, progress=False, cache_dir=cache_dir, weighted_sampling=False)
        data = {c: train.load_expr_data(cfg.replace(cache=c)) for c in ("memory", "disk")}
        times = {"memory": [], "disk": [], "disk, cold": []}
        for _ in range(args.repeats):
            times["memory"].append(epoch_seconds(cfg, data["memory"]))
            times["disk"].append(epoch_seconds(cfg, data["disk"]))
            times["disk, cold"].append(epoch_seconds(cfg, data["disk"], cold=True))
        best = {k: min(v) for k, v in times.items()}
        faces = args.batches * cfg.batch_size
        print(f"{model:>24}: memory {faces / best['memory']:6,.0f} faces/s; disk cache {faces / best['disk']:6,.0f} "
              f"(ratio {best['disk'] / best['memory']:.3f}x); evicted first {faces / best['disk, cold']:6,.0f} "
              f"(ratio {best['disk, cold'] / best['memory']:.3f}x)")
    reads = {c: min(read_seconds(data[c].train, 64, 200) for _ in range(args.repeats)) for c in ("memory", "disk")}
    print(f"{'loader alone, no model':>24}: memory {200 * 64 / reads['memory']:6,.0f} faces/s; disk cache "
          f"{200 * 64 / reads['disk']:6,.0f} (ratio {reads['disk'] / reads['memory']:.2f}x)")

    print("\n3. reused while unchanged, rebuilt after a change")
    table = data["disk"].train.table
    array, _ = cache_files(table, args.size, 0.2, cache_dir)
    built = array.stat().st_mtime_ns
    start = time.perf_counter()
    FrameDataset(table, args.size, cache="disk", cache_dir=cache_dir, progress=False)
    reuse = time.perf_counter() - start
    assert array.stat().st_mtime_ns == built, "the cache was rebuilt although nothing changed"
    os.utime(table.paths[len(table) // 2])                             # one source file touched
    start = time.perf_counter()
    FrameDataset(table, args.size, cache="disk", cache_dir=cache_dir, progress=False)
    rebuild = time.perf_counter() - start
    assert array.stat().st_mtime_ns != built, "a source file changed but the cache was not rebuilt"
    print(f"{len(table):,} frames: unchanged -> reused in {reuse:.1f} s (the key: every file's size and "
          f"modification time); one file touched -> rebuilt in {rebuild:.1f} s ({rebuild / reuse:.0f}x the check)")


if __name__ == "__main__":
    main()
