"""Your own faces and videos: frames -> the largest face (OpenCV's Haar detector) -> crop -> a trained
run's class probabilities per frame -> temporal smoothing -> a timeline and a csv.

    python -m fer_kit.video my_clip.mp4 --run_dir runs/04_train_dan        # a video file or a folder of images
    python -m fer_kit.video --synthetic --run_dir runs/04_train_dan        # a test video the kit renders

Frames without a face keep empty probabilities and are bridged by the smoothing (a moving average of the
probabilities over `smooth` frames centred on each frame), so a blink of the detector does not become a
change of expression. Read README's "Responsible use" before pointing this at people.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from .data.face_detect import FaceDetector
from .data.synthetic import render_sequence
from .data.transforms import crop_face, eval_transform
from .labels import EXPR_CLASSES
from .models import logits_only
from .paths import output_dir, shown

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
TEST_SEGMENTS = ("Neutral", "Happiness", "Surprise", "Sadness", "Anger", "Disgust", "Fear", "Happiness", "Neutral")


def read_frames(source: str | Path, every: int = 1) -> tuple[list[np.ndarray], float]:
    """RGB frames (H, W, 3) uint8 of a video file or of a folder of images (in name order), and the
    frames per second (a folder: 10)."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist: give a video file or a folder of images")
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"{source} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        frames = []
        for p in files[::every]:
            bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"{p} is not an image OpenCV can read")
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        return frames, 10.0 / every
    cap = cv2.VideoCapture(str(source))
    if not cap.isOpened():
        raise ValueError(f"OpenCV cannot open {source} as a video (is it one, and is its codec installed?)")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames, k = [], 0
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        if k % every == 0:
            frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        k += 1
    cap.release()
    if not frames:
        raise ValueError(f"{source} has no frames OpenCV can decode")
    return frames, fps / every


def render_test_video(path: str | Path, segments=TEST_SEGMENTS, frames_per_segment: int = 16, size: int = 224,
                      seed: int = 0) -> pd.DataFrame:
    """The kit's test video (synthetic.render_sequence: one person through `segments` of expressions),
    written as an .mp4 or, for a path without a suffix, as a folder of PNG frames. Returns the truth:
    frame, label (Aff-Wild2 index), class."""
    images, labels = render_sequence(segments, frames_per_segment, size, seed)
    path = Path(path)
    if path.suffix:
        path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (size, size))
        if not writer.isOpened():
            raise RuntimeError(f"OpenCV cannot write {path}; give a folder (a path without a suffix) instead")
        for im in images:
            writer.write(cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
        writer.release()
    else:
        path.mkdir(parents=True, exist_ok=True)
        for k, im in enumerate(images):
            cv2.imwrite(str(path / f"{k:05d}.png"), cv2.cvtColor(im, cv2.COLOR_RGB2BGR))
    return pd.DataFrame({"frame": np.arange(len(labels)), "label": labels, "class": [EXPR_CLASSES[k] for k in labels]})


def smooth(probs: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average of per-frame probabilities (n, C) over `window` frames; frames without a
    face (NaN rows) are skipped in each average, and take their neighbours' mean."""
    if window <= 1:
        return probs
    return pd.DataFrame(probs).rolling(window, center=True, min_periods=1).mean().to_numpy()


def smooth_by_video(probs: np.ndarray, videos, window: int) -> np.ndarray:
    """`smooth` inside each video of a split (rows in frame order within a video), never across two
    videos: the next person's first frames say nothing about this one's last."""
    videos, out = np.asarray(videos), np.array(probs, dtype=float)
    for v in pd.unique(videos):
        rows = np.flatnonzero(videos == v)
        out[rows] = smooth(out[rows], window)
    return out


@torch.no_grad()
def analyse(frames: list[np.ndarray], model: torch.nn.Module, image_size: int, classes=EXPR_CLASSES,
            window: int = 9, margin: float = 0.2, batch_size: int = 64, device: str = "cpu",
            progress: bool = True) -> pd.DataFrame:
    """One row per frame: the face box (empty without a face), each class's probability as the model gives
    it (p_<class>) and smoothed (s_<class>), and the predicted class before and after smoothing
    ("no face" where nothing was found and nothing is near)."""
    detector = FaceDetector()
    transform = eval_transform(image_size)
    net = logits_only(model).to(device).eval()
    boxes, crops = [], []
    for im in tqdm(frames, desc="finding faces", unit="frame", disable=not progress):
        found = detector.detect(im)
        boxes.append(found[0] if found else None)
        if found:
            crops.append(transform(torch.from_numpy(crop_face(im, found[0], margin=margin, size=image_size))
                                   .permute(2, 0, 1).contiguous()))
    probs = np.full((len(frames), len(classes)), np.nan)
    have = np.array([b is not None for b in boxes])
    out = []
    for start in range(0, len(crops), batch_size):
        x = torch.stack(crops[start:start + batch_size]).to(device)
        out.append(net(x).float().softmax(-1).cpu().numpy())
    if out:
        probs[have] = np.concatenate(out)
    smoothed = smooth(probs, window)
    table = pd.DataFrame({"frame": np.arange(len(frames)), "face": have,
                          "box": [",".join(map(str, b)) if b else "" for b in boxes]})
    for k, name in enumerate(classes):
        table[f"p_{name}"], table[f"s_{name}"] = probs[:, k], smoothed[:, k]
    table["predicted"] = [classes[int(np.argmax(p))] if np.isfinite(p).all() else "no face" for p in probs]
    table["smoothed"] = [classes[int(np.argmax(p))] if np.isfinite(p).all() else "no face" for p in smoothed]
    return table


def segment_accuracy(table: pd.DataFrame, truth: pd.DataFrame, column: str = "smoothed") -> float:
    """Share of the truth's segments (runs of one class) whose most frequent prediction is their class."""
    run = (truth["class"] != truth["class"].shift()).cumsum()
    hits = [table.loc[idx, column].mode().iloc[0] == cls
            for (_, cls), idx in truth.groupby([run, "class"], sort=False).groups.items()]
    return float(np.mean(hits))


def summary(table: pd.DataFrame, truth: pd.DataFrame | None = None) -> dict:
    """What a run over a video found: frames, the share with a face and, against a truth, the frames and
    segments (runs of one class) recovered before and after smoothing."""
    out = {"frames": len(table), "with a face": float(table["face"].mean())}
    if truth is not None:
        out.update({"segments": int(truth["class"].ne(truth["class"].shift()).sum()),
                    "frames right": float((table["predicted"] == truth["class"]).mean()),
                    "frames right, smoothed": float((table["smoothed"] == truth["class"]).mean()),
                    "segments recovered": segment_accuracy(table, truth, "predicted"),
                    "segments recovered, smoothed": segment_accuracy(table, truth)})
    return out


def describe(found: dict, window: int) -> str:
    """The sentence a run's numbers make."""
    text = f"{found['frames']} frames, a face found in {found['with a face']:.0%} of them"
    if "segments" in found:
        text += (f"; frames classified right: {found['frames right']:.2f} one by one, "
                 f"{found['frames right, smoothed']:.2f} smoothed over {window} frames; of the {found['segments']} "
                 f"expression segments, {found['segments recovered']:.2f} recovered (each segment's most frequent "
                 f"prediction) one by one and {found['segments recovered, smoothed']:.2f} smoothed")
    return text


def timeline(table: pd.DataFrame, classes=EXPR_CLASSES, truth: pd.DataFrame | None = None, path=None,
             title: str = "Expression per frame: as predicted, and smoothed"):
    from .plots import video_timeline

    index = {c: k for k, c in enumerate(classes)}
    rows = {"per frame": table["predicted"].map(index).fillna(-1).to_numpy(),
            "smoothed": table["smoothed"].map(index).fillna(-1).to_numpy()}
    if truth is not None:
        return video_timeline(truth["label"].to_numpy(), rows, classes, path=path, title=title)
    return video_timeline(rows.pop("per frame"), rows, classes, path=path, title=title, truth_label="per frame")


def main(argv: list[str] | None = None) -> pd.DataFrame:
    from .train import load_run

    p = argparse.ArgumentParser(prog="python -m fer_kit.video", description=__doc__.splitlines()[0])
    p.add_argument("source", nargs="?", help="a video file or a folder of images")
    p.add_argument("--synthetic", action="store_true", help="render the kit's test video and score the result")
    p.add_argument("--run_dir", default="runs/04_train_dan", help="a trained run folder (its best.pt)")
    p.add_argument("--smooth", type=int, default=9, help="frames in the moving average (1 = none)")
    p.add_argument("--every", type=int, default=1, help="use every n-th frame")
    p.add_argument("--out_dir", default="runs/video", help="where the csv and the timeline go")
    args = p.parse_args(argv)
    if (args.source is None) == (not args.synthetic):
        p.error("give a video file or folder, or --synthetic (not both)")
    out = output_dir() / args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    truth = None
    if args.synthetic:
        truth = render_test_video(out / "synthetic_video.mp4")
        truth.to_csv(out / "synthetic_truth.csv", index=False)
        args.source = out / "synthetic_video.mp4"
    model, cfg = load_run(args.run_dir)
    frames, fps = read_frames(args.source, args.every)
    classes = EXPR_CLASSES[:cfg.num_classes]
    table = analyse(frames, model, cfg.image_size, classes, window=args.smooth)
    table.insert(1, "seconds", table["frame"] / fps)
    table.to_csv(out / "frames.csv", index=False)
    timeline(table, classes, truth, path=out / "timeline.png")
    print(describe(summary(table, truth), args.smooth))
    print(f"per-frame classes and probabilities in {shown(out / 'frames.csv')}, the timeline in "
          f"{shown(out / 'timeline.png')}")
    return table


if __name__ == "__main__":
    main()
