"""How fast the embedded synthetic faces are made, and what the cache saves, measured in one run.

    python benchmarks/synthetic_speed.py [n_frames]

Generates a fresh dataset (112x112, every layout: jpgs, EXPR/AU/VA txt, MTL csv, LSD tree, landmarks)
into a temporary cache with one worker and with all workers, then asks for it again. Prints faces per
second for each, the parallel speed-up, and the ratio of a first call to a cache hit.
"""
import os
import sys
import tempfile
import time

from fer_kit.data.synthetic import SyntheticConfig, ensure_synthetic


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main(n_frames: int = 4000) -> None:
    workers = min(os.cpu_count() or 1, 4)
    rates = {}
    with tempfile.TemporaryDirectory() as cache:
        for w in sorted({1, workers}):
            cfg = SyntheticConfig(n_frames=n_frames, seed=w)     # a new seed: never a cache hit here
            root, seconds = timed(lambda: ensure_synthetic(cfg, cache_dir=cache, progress=False, workers=w))
            images = sum(1 for _ in (root / "cropped_aligned").rglob("*.jpg"))
            rates[w] = images / seconds
            print(f"{w} worker(s): {images:,} faces in {seconds:.1f} s = {rates[w]:,.0f} faces/s at 112x112")
        _, hit = timed(lambda: ensure_synthetic(cfg, cache_dir=cache, progress=False, workers=workers))
        print(f"second call with the same parameters: cache hit in {hit * 1e3:.1f} ms "
              f"({seconds / max(hit, 1e-9):,.0f}x faster than generating)")
    if workers > 1:
        print(f"speed-up with {workers} workers: {rates[workers] / rates[1]:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 4000)
