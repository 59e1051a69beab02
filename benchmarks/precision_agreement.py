"""Does the fast path learn what fp32 learns? Notebook 04's DAN, the same seed, 8 epochs, both ways.

    python benchmarks/precision_agreement.py [--epochs 8] [--n_frames 8000] [--seeds 0 1]

For each seed (which also draws the synthetic faces), one run with precision="auto" (bf16 autocast on a CPU
with native bf16, channels_last) and one in fp32, on the same decoded frames, seed and schedule. Printed:
each run's test P_EXPR at its chosen epoch with a 95% bootstrap interval over test videos, the difference
(issue 15's bar: within 0.02) and the ratio of their training times; with several seeds, the mean and
spread of the differences. Rounding differs from the first step on, so the two runs are two paths of one
recipe, not one computation twice.
"""
import argparse
import tempfile

import numpy as np

from fer_kit import train
from fer_kit.config import DanConfig
from fer_kit.train.precision import resolve


def one_seed(seed: int, epochs: int, n_frames: int) -> float:
    base = DanConfig(epochs=epochs, n_frames=n_frames, seed=seed, progress=False)
    data = train.load_expr_data(base.train_config())
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for precision in ("auto", "fp32"):
            result = train.fit(base.train_config(precision=precision, out_dir=f"{tmp}/{precision}"), data)
            runs[precision] = (result.test, result.best["epoch"], float(result.history["seconds"].sum()))
    fast = resolve("auto", "cpu", train.build_model(base.train_config())).name
    print(f"DAN-R18 at {base.train_config().image_size} px, {epochs} epochs, seed {seed}, "
          f"{len(data.train):,} training frames; auto = {fast}")
    for name, (test, epoch, secs) in runs.items():
        lo, hi = test["interval"]
        print(f"  {name:5s} test P_EXPR {test['p_expr']:.3f} [{lo:.3f}, {hi:.3f}] (chosen epoch {epoch}), "
              f"training {secs:.0f} s")
    gap = runs["auto"][0]["p_expr"] - runs["fp32"][0]["p_expr"]
    print(f"  difference auto - fp32: {gap:+.3f} ({'within' if abs(gap) <= 0.02 else 'outside'} 0.02); "
          f"time ratio auto / fp32: {runs['auto'][2] / runs['fp32'][2]:.2f}x", flush=True)
    return gap


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n_frames", type=int, default=DanConfig.n_frames)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    args = p.parse_args()
    gaps = [one_seed(seed, args.epochs, args.n_frames) for seed in args.seeds]
    if len(gaps) > 1:
        print(f"auto - fp32 over {len(gaps)} seeds: mean {np.mean(gaps):+.3f}, spread (sd) {np.std(gaps, ddof=1):.3f}; "
              f"largest |difference| {np.max(np.abs(gaps)):.3f}")


if __name__ == "__main__":
    main()
