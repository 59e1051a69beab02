"""Does the fast path learn what fp32 learns? Notebook 04's DAN, the same seed, 8 epochs, both ways.

    python benchmarks/precision_agreement.py [--epochs 8] [--n_frames 8000] [--seeds 0 1] [--nudge] [--only_nudge]

For each seed (which also draws the synthetic faces), one run with precision="auto" (bf16 autocast on a CPU
with native bf16, channels_last) and one in fp32, on the same decoded frames, seed and schedule. Printed:
each run's test P_EXPR at its chosen epoch with a 95% bootstrap interval over test videos, the difference
(issue 15's bar: within 0.02) and the ratio of their training times; with several seeds, the mean and
spread of the differences. Rounding differs from the first step on, so the two runs are two paths of one
recipe, not one computation twice.

`--nudge` adds the floor any fast path is measured against: a third run in fp32 whose initial weights are
the fp32 run's moved by one unit in the last place (torch.nextafter, a relative 6e-8, where bf16 rounds at
4e-3). Same data, seed, sampling and augmentation draws; only rounding differs, by far less than bf16's.
How far it lands from the fp32 run is how far one run of this recipe lands from itself. `--only_nudge`
skips the auto run (seeded fp32 runs repeat exactly, so an earlier auto - fp32 difference still holds).
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from fer_kit import train
from fer_kit.config import DanConfig
from fer_kit.train.checkpoints import save_checkpoint
from fer_kit.train.device import seed_everything
from fer_kit.train.precision import resolve


def initial_weights(cfg, path: Path, nudge: bool) -> str:
    """The weights `fit` starts from for this seed (seeded as `fit` seeds before building the model),
    each parameter moved one float up if `nudge`, saved as a checkpoint for `init_from`."""
    seed_everything(cfg.seed)
    model = train.build_model(cfg)
    if nudge:
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.nextafter(p, torch.full_like(p, float("inf"))))
    save_checkpoint({"model": model.state_dict()}, path)
    return str(path)


def one_seed(seed: int, epochs: int, n_frames: int, nudge: bool, only_nudge: bool) -> dict:
    base = DanConfig(epochs=epochs, n_frames=n_frames, seed=seed, progress=False)
    data = train.load_expr_data(base.train_config())
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        arms = {"fp32": {}} if only_nudge else {"auto": {"precision": "auto"}, "fp32": {}}
        if nudge:
            cfg = base.train_config(precision="fp32")
            arms["nudged"] = {"init_from": initial_weights(cfg, Path(tmp, "nudged.pt"), True)}
        for name, change in arms.items():
            cfg = base.train_config(**{"precision": "fp32", **change, "out_dir": f"{tmp}/{name}"})
            result = train.fit(cfg, data)
            runs[name] = (result.test, result.best["epoch"], float(result.history["seconds"].sum()))
    fast = resolve("auto", "cpu", train.build_model(base.train_config())).name
    print(f"DAN-R18 at {base.train_config().image_size} px, {epochs} epochs, seed {seed}, "
          f"{len(data.train):,} training frames; auto = {fast}")
    for name, (test, epoch, secs) in runs.items():
        lo, hi = test["interval"]
        print(f"  {name:6s} test P_EXPR {test['p_expr']:.3f} [{lo:.3f}, {hi:.3f}] (chosen epoch {epoch}), "
              f"training {secs:.0f} s")
    gaps = {}
    for name in ("auto", "nudged"):
        if name in runs:
            gaps[name] = runs[name][0]["p_expr"] - runs["fp32"][0]["p_expr"]
            print(f"  difference {name} - fp32: {gaps[name]:+.3f} ({'within' if abs(gaps[name]) <= 0.02 else 'outside'} "
                  f"0.02); time ratio {name} / fp32: {runs[name][2] / runs['fp32'][2]:.2f}x", flush=True)
    return gaps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n_frames", type=int, default=DanConfig.n_frames)
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--nudge", action="store_true", help="add an fp32 run from initial weights one float up")
    p.add_argument("--only_nudge", action="store_true", help="fp32 and nudged fp32 only (implies --nudge)")
    args = p.parse_args()
    per_seed = [one_seed(seed, args.epochs, args.n_frames, args.nudge or args.only_nudge, args.only_nudge)
                for seed in args.seeds]
    for name in per_seed[0] if len(per_seed) > 1 else ():
        gaps = [g[name] for g in per_seed]
        print(f"{name} - fp32 over {len(gaps)} seeds: {', '.join(f'{g:+.3f}' for g in gaps)}; mean {np.mean(gaps):+.3f}, "
              f"spread (sd) {np.std(gaps, ddof=1):.3f}; largest |difference| {np.max(np.abs(gaps)):.3f}")


if __name__ == "__main__":
    main()
