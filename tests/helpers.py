"""Small helpers shared by test modules (tests/ is on sys.path under pytest's default import mode)."""
import errno
import os

import torch


def fail_saves_halfway(monkeypatch) -> None:
    """Make torch.save write half of its file, then fail as a full disk does."""
    real = torch.save

    def half_then_enospc(obj, f):
        real(obj, f)
        os.truncate(f, os.path.getsize(f) // 2)
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", half_then_enospc)
