"""Small helpers shared by test modules (tests/ is on sys.path under pytest's default import mode)."""
import errno
import os

import numpy as np
import torch


def fail_saves_halfway(monkeypatch) -> None:
    """Make torch.save write half of its file, then fail as a full disk does."""
    real = torch.save

    def half_then_enospc(obj, f):
        real(obj, f)
        os.truncate(f, os.path.getsize(f) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", half_then_enospc)


def au_split(rng, n_videos=6, frames=20):
    """Per-frame AU labels (12 AUs), probabilities where positives score higher but few reach 0.5, videos."""
    truth = (rng.random((n_videos * frames, 12)) < 0.3).astype(np.int64)
    prob = 0.25 * truth + 0.4 * rng.random(truth.shape)     # positives score higher, few of them reach 0.5
    return truth, prob, np.repeat([f"v{k}" for k in range(n_videos)], frames)
