"""Ensemble inference: one pass over the data for all K members vs K passes through `train.predict`.

    python benchmarks/ensemble_inference.py [--members 5] [--frames 2000] [--image_size 80] [--lazy]

Both paths score the same K DAN members on the same validation frames (synthetic faces). The printed
ratio (one pass / K passes) is measured in this run, interleaved so machine load hits both alike;
absolute seconds mean little on a shared machine. `--lazy` reads frames from their JPEG files instead of
a decoded in-memory store (a dataset too big for memory), where sharing the decoding matters more.

A third timing runs only the K members' forward passes over batches already read and normalised: what any
one pass must still spend, so (forwards only / K passes) is the lowest ratio one pass can reach here.
"""
import argparse
import time

import numpy as np
import torch

from fer_kit import ensemble, train
from fer_kit.config import TrainConfig
from fer_kit.data.dataset import FrameDataset
from fer_kit.data.transforms import eval_transform
from fer_kit.train.evaluate import device_batches
from fer_kit.train.precision import resolve as resolve_precision


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--members", type=int, default=5)
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--image_size", type=int, default=80)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--lazy", action="store_true")
    args = p.parse_args()

    cfg = TrainConfig(n_frames=args.frames * 5, image_size=args.image_size, progress=False)
    train_table, val_table, _, _ = train.split_tables(cfg)
    val = FrameDataset(val_table.subset(np.arange(min(args.frames, len(val_table)))), args.image_size,
                       eval_transform(), cache="none" if args.lazy else "memory", progress=False)
    members = []
    for k in range(args.members):
        torch.manual_seed(k)
        members.append(ensemble.Member(f"member_{k}", train.build_model(cfg.replace(seed=k)).eval(), cfg))

    def k_passes():
        return np.stack([train.predict(m.model, val, batch_size=128)[0] for m in members])

    def one_pass():
        return ensemble.predict_members(members, val, batch_size=128).logits

    device = torch.device("cpu")
    batches = [x for x, _ in device_batches(val, 128, device)]             # read and normalised once, kept
    policies = [resolve_precision(m.config.precision, device, m.model) for m in members]

    @torch.inference_mode()
    def forwards_only():
        for x in batches:
            for m, policy in zip(members, policies):
                with policy.autocast():
                    m.model(x)

    a, b = k_passes(), one_pass()              # warm-up, and the two paths must agree
    assert np.allclose(a, b, atol=1e-4), f"paths disagree: max |diff| {np.abs(a - b).max()}"
    forwards_only()
    times = {"K passes (train.predict per member)": [], "one pass (ensemble.predict_members)": [],
             "forwards only (batches already read)": []}
    for _ in range(args.repeats):
        for name, fn in zip(times, (k_passes, one_pass, forwards_only)):
            wall, cpu = time.perf_counter(), time.process_time()
            fn()
            times[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    print(f"{args.members} DAN-R18 members, {len(val):,} frames at {args.image_size} px, "
          f"{'lazy JPEG decoding' if args.lazy else 'decoded frames in memory'}, {torch.get_num_threads()} threads")
    for name, t in times.items():
        w, c = np.median(np.array(t), axis=0)
        print(f"  {name:40s} wall {w:6.2f} s   cpu {c:6.2f} s")
    (w_k, c_k), (w_1, c_1), (w_f, c_f) = (np.median(np.array(t), axis=0) for t in times.values())
    print(f"ratio one pass / K passes: wall {w_1 / w_k:.2f}x, cpu {c_1 / c_k:.2f}x")
    print(f"floor, forwards only / K passes: wall {w_f / w_k:.2f}x, cpu {c_f / c_k:.2f}x "
          f"(no one pass over these members can go below it on this machine)")


if __name__ == "__main__":
    main()
