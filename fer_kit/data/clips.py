"""Video clips of T consecutive frames, paper B's unit of training (notes §3.5).

Paper B's code keeps each video's usable frames in order (frames whose label is -1 or whose image is
missing are already gone, so a clip may jump over a gap), cuts them into consecutive chunks of T = 64 and
pads the last chunk by repeating its last frame. Here the repeated frames get the label -1, so the
sequence losses and the metrics skip them and every real frame is counted exactly once (the code gave
the copies the last frame's label and trained on them; its submission writer dropped them).
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .dataset import FrameDataset

PAD = -1


def clip_indices(videos: np.ndarray, clip_length: int) -> np.ndarray:
    """(n_clips, T) frame indices: each video's frames in table order, cut into consecutive chunks of T;
    the tail of a video's last chunk is PAD (-1). Clips never span two videos."""
    if clip_length < 1:
        raise ValueError(f"clip_length must be >= 1; got {clip_length}")
    videos = np.asarray(videos)
    _, first, inverse = np.unique(videos, return_index=True, return_inverse=True)
    clips = []
    for v in np.argsort(first):                      # videos in the order they first appear
        idx = np.flatnonzero(inverse == v)           # (n_v,) in table order
        n_pad = -len(idx) % clip_length
        clips.append(np.concatenate([idx, np.full(n_pad, PAD)]).reshape(-1, clip_length))
    return np.concatenate(clips) if clips else np.empty((0, clip_length), np.int64)


class ClipDataset(Dataset):
    """Clips (T, 3, H, W) with per-frame labels (T,) over a FrameDataset (which holds the decoded frames
    and the transform, applied once per clip). Padding positions repeat the clip's last real frame,
    labelled -1."""

    def __init__(self, frames: FrameDataset, clip_length: int):
        if frames.targets != "expr":
            raise ValueError(f"clips carry expression labels only; got a FrameDataset with targets={frames.targets!r}")
        self.frames, self.clip_length = frames, clip_length
        self.table, self.targets = frames.table, "expr"
        self.index = clip_indices(frames.table.videos, clip_length)   # (n_clips, T), -1 = padding

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.index[i]
        real = idx >= 0
        src = np.where(real, idx, idx[real][-1])     # edge-repeat, as the published code pads
        x = torch.stack([self.frames.image(j) for j in src])         # (T, 3, H, W) uint8, as decoded
        if self.frames.transform is not None:
            # one random draw for the whole clip: torchvision's v2 transforms treat a (T, 3, H, W) tensor as
            # one batch and sample their parameters once, so a clip is never mirrored on every other frame
            x = self.frames.transform(x)
        y = self.frames.labels[src].clone()                          # (T,)
        y[torch.from_numpy(~real)] = PAD
        return x, y

    @property
    def padding(self) -> int:
        """Padded positions over all clips (repeated frames that carry no label)."""
        return int((self.index < 0).sum())


def video_with_most(videos: np.ndarray, mask: np.ndarray) -> tuple[str, np.ndarray]:
    """The video holding the most frames where `mask` is true (e.g. hidden expressions), and the mask
    of its frames."""
    videos, mask = np.asarray(videos), np.asarray(mask, bool)
    names, counts = np.unique(videos[mask], return_counts=True)
    if not len(names):
        raise ValueError("no frame is marked: nothing to choose a video by")
    best = names[np.argmax(counts)]
    return best, videos == best


def busiest_video(videos: np.ndarray, labels: np.ndarray) -> tuple[str, np.ndarray]:
    """The video whose expression changes most often between consecutive frames (the one where flicker
    and context matter most), and the mask of its frames."""
    videos, labels = np.asarray(videos), np.asarray(labels)
    changes = {v: int((np.diff(labels[videos == v]) != 0).sum()) for v in np.unique(videos)}
    best = max(changes, key=changes.get)
    return best, videos == best
