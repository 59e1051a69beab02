"""The kit's default run against a plain training script, for the same minutes on the same data.

    python benchmarks/minutes_vs_plain.py                         # synthetic faces, 48 px grey, 5 minutes each
    python benchmarks/minutes_vs_plain.py --minutes 15 --data_root /data/fer2013   # train/ and test/ class folders

Both train for `--minutes` of steps and validations (data decoding is not counted) and are scored on the
test split (other people): accuracy and P_EXPR (mean F1 over the classes), each with a 95% bootstrap
interval over test videos. The kit's run is `TrainConfig(data_root=..., minutes=...)` with nothing else
set: DAN-R18, the laptop preset at the source's own resolution, one-cycle sized to the clock, inverse-
frequency sampling, model chosen on validation. The plain script is what one writes in 40 lines: timm
ResNet-18 at 64 px, AdamW with a one-cycle schedule sized from its own first timed steps, flip and a
shifted crop on whole batches, the last weights scored. Without --data_root the synthetic faces are
rendered small and grey (48 px) in the ABAW layout, the resolution of many in-the-wild datasets.
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import timm
import torch
from PIL import Image
from torch.nn import functional as F

from fer_kit import metrics
from fer_kit.config import TrainConfig
from fer_kit.data.dataset import load_image
from fer_kit.data.synthetic import SyntheticConfig, default_cache_dir, ensure_synthetic
from fer_kit.train import fit, load_expr_data, predict, seed_everything, split_tables


def small_grey_faces(n_frames: int, size: int = 48, seed: int = 0) -> Path:
    """The synthetic faces (112 px colour) re-saved at `size` px grey in the same ABAW layout, once."""
    src = ensure_synthetic(SyntheticConfig(n_frames=n_frames, seed=seed))
    dst = default_cache_dir() / "benchmarks" / f"{src.name}-grey{size}"
    if (dst / "done").exists():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.jpg", "*.png"))
    for path in sorted((src / "cropped_aligned").rglob("*.jpg")):
        out = dst / path.relative_to(src)
        Image.open(path).convert("L").resize((size, size), Image.Resampling.BOX).save(out, quality=95)
    (dst / "done").write_text("")
    return dst


def tensors(table, size: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    x = torch.stack([load_image(p, size) for p in table.paths])          # (N, 3, size, size) uint8
    return x, torch.as_tensor(table.labels), np.asarray(table.videos)


def plain_baseline(root: Path, dataset: str, minutes: float, size: int = 64, batch: int = 64, lr: float = 2e-3,
                   seed: int = 0):
    """The plain script: everything in memory, augment whole batches, one-cycle sized to the clock. Its
    train and test frames are the kit run's (the same split_tables)."""
    seed_everything(seed)
    train, _, test, _ = split_tables(TrainConfig(data_root=str(root), dataset=dataset, seed=seed, progress=False))
    classes = len(train.classes)
    (x, y, _), (xt, yt, videos) = tensors(train, size), tensors(test, size)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    norm = lambda b: (b.float() / 255 - mean) / std
    model = timm.create_model("resnet18", num_classes=classes).to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    budget, start, steps, total, sched = minutes * 60, time.monotonic(), 0, None, None
    while total is None or steps < total:
        for idx in torch.randperm(len(x)).split(batch):
            if len(idx) < 2:
                continue
            b = norm(x[idx])
            b = torch.where(torch.rand(len(b), 1, 1, 1) < 0.5, b.flip(3), b)              # flip half the batch
            dx, dy = np.random.randint(-size // 8, size // 8 + 1, 2)                     # one shift per batch
            b = torch.roll(F.pad(b, [size // 8] * 4, mode="replicate"), (int(dy), int(dx)), (2, 3))[..., size // 8:-(size // 8), size // 8:-(size // 8)]
            loss = F.cross_entropy(model(b.contiguous(memory_format=torch.channels_last)), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
            if sched is not None:
                sched.step()
            if steps == 8:          # time 8 steps, then size the one-cycle to the rest of the budget
                total = int(budget / ((time.monotonic() - start) / steps))
                sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total - steps + 1)
            if total is not None and steps >= total:
                break
    seconds = time.monotonic() - start
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(norm(b).contiguous(memory_format=torch.channels_last)).argmax(1) for b in xt.split(256)])
    return scores(yt.numpy(), pred.numpy(), videos, classes), {"steps": steps, "seconds": seconds, "image_size": size}


def scores(y: np.ndarray, pred: np.ndarray, videos: np.ndarray, classes: int) -> dict:
    """Accuracy and P_EXPR (mean F1 over the classes), each with its interval over test videos."""
    out = {}
    for name in ("accuracy", "p_expr"):
        fn = metrics.frame_score_fn(y, pred, name, classes)
        out[name] = (fn(np.arange(len(y))), *metrics.video_bootstrap(fn, videos))
    return out


def kit_default(root: Path, dataset: str, minutes: float, seed: int = 0, **changes):
    """The kit's run with nothing but the data and the minutes given (and `changes`)."""
    cfg = TrainConfig(data_root=str(root), dataset=dataset, minutes=minutes, seed=seed, progress=False,
                      out_dir="runs/benchmarks/minutes_vs_plain_kit", **changes)
    data = load_expr_data(cfg)                       # decoding, as the plain script's, is not on the clock
    result = fit(cfg, data)
    logits, labels = predict(result.model, data.test)
    schedule = json.loads(result.metrics_path.read_text())["schedule"]
    return scores(labels, logits.argmax(1), data.test.table.videos, cfg.num_classes), {
        "steps": schedule["steps"], "seconds": schedule["run_seconds"], "image_size": cfg.image_size}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--data_root", default=None, help="real faces: an ABAW-layout folder, or FER2013-style train/ "
                    "and test/ class folders; default: the synthetic faces, 48 px grey")
    ap.add_argument("--n_frames", type=int, default=10_000, help="synthetic frames (train + validation + test)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    root = Path(args.data_root) if args.data_root else small_grey_faces(args.n_frames, seed=args.seed)
    # FER2013-style train/ and test/ class folders (each image its own "video": the bootstrap resamples
    # images; validation is carved from train), else the ABAW layout
    dataset = "fer2013_folders" if (root / "train").is_dir() and (root / "test").is_dir() else "abaw"
    print(f"data: {root} ({dataset})   {args.minutes:g} minutes each   threads: {torch.get_num_threads()}")
    rows = {"kit default (DAN-R18, laptop)": kit_default(root, dataset, args.minutes, args.seed),
            "plain script (ResNet-18, 64 px)": plain_baseline(root, dataset, args.minutes, seed=args.seed),
            # paper A's inverse-frequency sampling trades accuracy for mean F1: the default without it
            "kit default, uniform sampling": kit_default(root, dataset, args.minutes, args.seed, weighted_sampling=False)}
    print(f"\n{'run':34s} {'px':>3s} {'steps':>6s} {'minutes':>7s}   {'test accuracy':22s}   {'test P_EXPR':22s}")
    for name, (s, info) in rows.items():
        cells = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, lo, hi in (s["accuracy"], s["p_expr"])]
        print(f"{name:34s} {info['image_size']:3d} {info['steps']:6d} {info['seconds'] / 60:7.2f}   {cells[0]:22s}   {cells[1]:22s}")
    (kit, _), (plain, _), _ = rows.values()
    gap = kit["accuracy"][0] - plain["accuracy"][0]
    print(f"\nkit minus plain: accuracy {gap:+.3f}, P_EXPR {kit['p_expr'][0] - plain['p_expr'][0]:+.3f} "
          f"({'within' if gap >= -0.01 else 'more than'} 1 point of the plain script's accuracy at equal minutes)")
