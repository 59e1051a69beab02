"""Batched augmentation against the per-image recipe it stands for, measured in one run.

    python benchmarks/batch_augment.py [batch_size] [repeats]

For paper E's recipe (colour jitter with hue, flip, affine, erasing; with 68 landmarks, as its LSD models
train) and DAN's recipes ("dan_laptop", the kit's default, and "dan"), at 112 and 224 px: the same batch
of faces is augmented image by image (what the loader does with augment_on="image": each face, then
default_collate's stack) and as one batch, as the training loop runs it with augment_on="batch" on this
CPU (channels-last output written into the last step's batch; the colour steps eager, and for recipes
with colour jitter also through torch.compile, which TrainConfig(compile=True) turns on). Each timing is
the best of `repeats`, the paths interleaved, so all see the same machine. Prints faces per second for
each path and the ratios. The per-image path is not charged for the channels-last copy that the loop's
to_device makes of its batch, so the ratios lean towards it.

Also timed per size: the least any batched path must do, stack the uint8 faces and normalise them into
the kept channels-last float batch (BatchAugment of recipe "none"), with no augmentation at all. Its rate
over a recipe's per-image rate is the ceiling of that recipe's ratio on this machine.
"""
import sys
import time

import torch
from torchvision.transforms import v2

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


def main(batch_size: int = 128, repeats: int = 5) -> None:
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batches of {batch_size}")
    for size in (112, 224):
        faces = render_faces(batch_size, size=size, seed=0)
        x = torch.from_numpy(faces["images"]).permute(0, 3, 1, 2).contiguous()      # (B, 3, size, size) uint8
        pts = torch.as_tensor(faces["landmarks"], dtype=torch.float32)            # (B, 68, 2) pixel centres
        plain = BatchAugment(train_transform("none", size), channels_last=True, reuse_output=True)
        floor = lambda: plain(torch.stack([x[i] for i in range(batch_size)]))        # no augmentation at all
        for recipe, with_landmarks in (("paper_e", True), ("dan_laptop", False), ("dan", False)):
            t = train_transform(recipe, size)
            paths = {"batch": BatchAugment(t, channels_last=True, reuse_output=True)}
            if any(isinstance(s, v2.ColorJitter) for s in t.transforms):
                paths["compiled"] = BatchAugment(t, channels_last=True, reuse_output=True, compile=True)
            # as a DataLoader delivers them: per face, each augmented face then stacked into the batch
            # (default_collate); batched, the uint8 faces stacked, then the batch augmented
            faces_of = lambda: [x[i] for i in range(batch_size)]
            if with_landmarks:
                per_face = lambda: [apply_with_landmarks(t, x[i], pts[i]) for i in range(batch_size)]
                per_image = lambda: torch.stack([img for img, _ in per_face()])
                fns = {name: (lambda b=b: b(torch.stack(faces_of()), pts)) for name, b in paths.items()}
            else:
                per_face = lambda: [t(x[i]) for i in range(batch_size)]
                per_image = lambda: torch.stack(per_face())
                fns = {name: (lambda b=b: b(torch.stack(faces_of()))) for name, b in paths.items()}
            fns = {"face": per_face, "image": per_image, **fns, "floor": floor}
            for fn in fns.values():                                        # warm-up (and compiling)
                fn()
            times = best_of(fns, repeats)
            rate = lambda name: f"{batch_size / times[name]:6,.0f}/s"
            ratio = lambda name: (f"{times['image'] / times[name]:4.1f}x "
                                  f"(vs per face alone {times['face'] / times[name]:4.1f}x)")
            print(f"{recipe:>10} at {size} px{' + landmarks' if with_landmarks else '':12}: per face {rate('face')}, "
                  f"+ collate {rate('image')}; batched {rate('batch')}: {ratio('batch')}"
                  + (f"; compiled {rate('compiled')}: {ratio('compiled')}" if "compiled" in times else "")
                  + f"; stack into a float batch {rate('floor')}: ceiling {times['image'] / times['floor']:4.1f}x")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:3]))
