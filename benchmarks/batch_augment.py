"""Batched augmentation against the per-image recipe it stands for, measured in one run.

    python benchmarks/batch_augment.py [batch_size] [repeats]

For paper E's recipe (colour jitter with hue, flip, affine, erasing; with 68 landmarks, as its LSD models
train) and DAN's recipes ("dan_laptop", the kit's default, and "dan"), at 112 and 224 px: the same batch
of faces is augmented image by image (what the loader does with augment_on="image") and as one batch
(augment_on="batch", on this CPU; a GPU runs the same code on its own device). Each timing is the best
of `repeats`, the two paths interleaved, so both see the same machine. Prints faces per second for each
path and their ratio.

Also timed per size: the least any batched path must do, stack the uint8 faces and write them into a new
float batch (`torch.stack(...).float()`), with no augmentation at all. Its rate over a recipe's per-image
rate is the ceiling of that recipe's ratio on this machine: on a CPU a new batch of 128 faces at 224 px
(77 MB) is fresh memory from the allocator, whose page faults every batch pays.
"""
import sys
import time

import torch

from fer_kit.data.batch_augment import BatchAugment
from fer_kit.data.synthetic import render_faces
from fer_kit.data.transforms import apply_with_landmarks, train_transform


def best_of(fns: dict, repeats: int) -> dict:
    """The best time of each function over `repeats` rounds, the functions interleaved in each round."""
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def main(batch_size: int = 128, repeats: int = 3) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batches of {batch_size}")
    for size in (112, 224):
        faces = render_faces(batch_size, size=size, seed=0)
        x = torch.from_numpy(faces["images"]).permute(0, 3, 1, 2).contiguous()      # (B, 3, size, size) uint8
        pts = torch.as_tensor(faces["landmarks"], dtype=torch.float32)            # (B, 68, 2) pixel centres
        floor = lambda: torch.stack([x[i] for i in range(batch_size)]).float()      # no augmentation at all
        for recipe, with_landmarks in (("paper_e", True), ("dan_laptop", False), ("dan", False)):
            t = train_transform(recipe, size)
            batched = BatchAugment(t)
            # as a DataLoader delivers them: per face, each augmented face then stacked into the batch
            # (default_collate); batched, the uint8 faces stacked, then the batch augmented
            faces_of = lambda: [x[i] for i in range(batch_size)]
            if with_landmarks:
                per_face = lambda: [apply_with_landmarks(t, x[i], pts[i]) for i in range(batch_size)]
                per_image = lambda: torch.stack([img for img, _ in per_face()])
                per_batch = lambda: batched(torch.stack(faces_of()), pts)
            else:
                per_face = lambda: [t(x[i]) for i in range(batch_size)]
                per_image = lambda: torch.stack(per_face())
                per_batch = lambda: batched(torch.stack(faces_of()))
            per_face(), per_image(), per_batch(), floor()                        # warm-up
            times = best_of({"face": per_face, "image": per_image, "batch": per_batch, "floor": floor}, repeats)
            print(f"{recipe:>10} at {size} px{' + landmarks' if with_landmarks else '':12}: per face "
                  f"{batch_size / times['face']:6,.0f}/s, + collate {batch_size / times['image']:6,.0f}/s, "
                  f"batched {batch_size / times['batch']:6,.0f}/s: {times['image'] / times['batch']:4.1f}x "
                  f"(vs per face alone {times['face'] / times['batch']:4.1f}x); stack + new float batch "
                  f"{batch_size / times['floor']:6,.0f}/s: ceiling {times['image'] / times['floor']:4.1f}x")

if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
