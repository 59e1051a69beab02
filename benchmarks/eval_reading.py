"""How evaluation reads a split: each face normalised in the loader vs uint8 frames normalised once per
batch on the device (`train.evaluate.device_batches`, what predict uses), measured in one run.

    python benchmarks/eval_reading.py [--frames 2000] [--image_size 80] [--repeats 3]

Two timings per path, interleaved so machine load hits both alike: reading the split alone (the batches
a model would receive) and a whole `train.predict` of an untrained DAN-R18. The per-face path is what
predict falls back to for a transform with no batched version; it is forced here by hiding the
evaluation transform inside a plain function. Prints the ratios (batch / per face); absolute seconds on
a shared machine mean little.
"""
import argparse
import copy
import time

import numpy as np
import torch

from fer_kit import train
from fer_kit.config import TrainConfig
from fer_kit.data.transforms import eval_transform
from fer_kit.train.evaluate import device_batches


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--frames", type=int, default=2000)
    p.add_argument("--image_size", type=int, default=80)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()

    cfg = TrainConfig(n_frames=args.frames * 5, image_size=args.image_size, progress=False)
    _, val_table, _, _ = train.split_tables(cfg)
    batched = train.frame_dataset(cfg, val_table.subset(np.arange(min(args.frames, len(val_table)))),
                                  eval_transform())
    per_face = copy.copy(batched)
    normalise = batched.transform
    per_face.transform = lambda x: normalise(x)         # no batched version: normalised face by face
    torch.manual_seed(0)
    model = train.build_model(cfg).eval()

    def read(ds):
        return lambda: sum(len(x) for x, _ in device_batches(ds, 128, "cpu"))

    def predict(ds):
        return lambda: train.predict(model, ds, batch_size=128)[0]

    a, b = predict(per_face)(), predict(batched)()
    assert np.allclose(a, b, atol=1e-3), f"the two paths disagree: max |diff| {np.abs(a - b).max()}"
    jobs = {"reading the split": (read(per_face), read(batched)),
            "train.predict, DAN-R18": (predict(per_face), predict(batched))}
    times = {name: ([], []) for name in jobs}
    for _ in range(args.repeats):
        for name, fns in jobs.items():
            for fn, out in zip(fns, times[name]):
                start = time.perf_counter()
                fn()
                out.append(time.perf_counter() - start)
    print(f"{len(batched):,} validation frames at {args.image_size} px, decoded in memory, "
          f"{torch.get_num_threads()} threads, median of {args.repeats}")
    for name, (face, batch) in times.items():
        f, b = np.median(face), np.median(batch)
        print(f"  {name:24s} per face {f:6.2f} s   per batch on the device {b:6.2f} s   ratio {b / f:.2f}x")


if __name__ == "__main__":
    main()
