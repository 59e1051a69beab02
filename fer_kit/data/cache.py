"""Decoded frames kept for a whole run: in memory, or in a disk cache that outlives the run.

Decoding and resizing a JPEG costs more than a small CNN's forward pass of the face, so a split is
decoded once. A split that fits the memory budget is held as one uint8 tensor. A larger one, such as
Aff-Wild2's EXPR training split (586,959 frames: 22 GB at 112 px, 88 GB at 224), goes to a disk cache:
one `.npy` file of (N, 3, S, S) uint8 per split that `np.load(path, mmap_mode="r")` opens, built once by
parallel decoding and keyed by the source files (paths, sizes, modification times), the image size and
the crop. A cache whose key no longer matches is rebuilt, never read.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..config import CACHES, MEMORY_GB
from ..names import check_names
from ..paths import shown
from .parallel import default_workers, ordered_map
from .table import FrameTable

FORMAT = 1           # bump when the cached pixels change meaning: every older cache is then rebuilt
_CHUNK = 256         # frames per decoding job


def frames_nbytes(n: int, size: int) -> int:
    return n * 3 * size * size


def resolve_cache(cache: str, n: int, size: int, memory_gb: float = MEMORY_GB) -> str:
    """"auto" -> "memory" when the split's frames fit the budget, else "disk"; other modes as given."""
    check_names([cache], CACHES, "cache")
    if cache != "auto":
        return cache
    return "memory" if frames_nbytes(n, size) <= memory_gb * 2**30 else "disk"


def cache_folder(cache_dir: str | Path | None = None) -> Path:
    """cache_dir, or `frames/` beside the synthetic faces (FER_KIT_CACHE, else ~/.cache/fer_kit)."""
    from .synthetic import default_cache_dir
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "frames"


# ------------------------------------------------------------------------------------------- decoding
_JOB: tuple | None = None     # (table, size, margin, decode) in a decoding worker


def _start_job(table, size, margin, decode):
    global _JOB
    _JOB = (table, size, margin, decode)


def _decode_rows(rows: tuple[int, int]) -> np.ndarray:
    table, size, margin, decode = _JOB
    return np.stack([decode(table, i, size, margin).numpy() for i in range(*rows)])   # (n, 3, S, S) uint8


def decode_frames(table: FrameTable, size: int, margin: float, decode: Callable, write: Callable,
                  workers: int | None = None, progress: bool = True, desc: str = "decoding") -> None:
    """write(start, frames) for consecutive chunks of the table's frames (uint8 (n, 3, S, S)), in order,
    decoded by `decode(table, i, size, margin)` over worker processes. An unreadable file stops it with
    the decoder's own error, which names the file."""
    n = len(table)
    chunks = [(s, min(s + _CHUNK, n)) for s in range(0, n, _CHUNK)]
    # 0 or 1 worker, or a table of one chunk, decodes here without a pool (as DataLoader's num_workers=0)
    workers = min(default_workers() if workers is None else max(workers, 1), len(chunks))
    bar = tqdm(total=n, desc=desc, unit="img", disable=not progress, mininterval=10.0)
    for (s, _), frames in zip(chunks, ordered_map(_decode_rows, chunks, workers, _start_job,
                                                  (table, size, margin, decode))):
        write(s, frames)
        bar.update(len(frames))
    bar.close()


def decode_to_memory(table: FrameTable, size: int, margin: float, decode: Callable, workers: int | None = None,
                     progress: bool = True) -> torch.Tensor:
    images = torch.empty((len(table), 3, size, size), dtype=torch.uint8)

    def write(s, frames):
        images[s: s + len(frames)] = torch.from_numpy(frames)
    decode_frames(table, size, margin, decode, write, workers, progress, desc=f"decoding {table.report.source}")
    return images


# ---------------------------------------------------------------------------------------- disk cache
def cache_key(table: FrameTable, size: int, margin: float) -> str:
    """What the cached pixels depend on: every source file's path, size and modification time (or the
    pixels themselves for tables that hold them), the face boxes, the crop margin and the image size."""
    h = hashlib.sha256(f"fer_kit frames v{FORMAT} size {size} margin {margin!r}\n".encode())
    if table.images is not None:
        h.update(np.ascontiguousarray(table.images).tobytes())
    else:
        for p in table.paths:
            try:
                st = os.stat(p)
            except FileNotFoundError:
                raise FileNotFoundError(f"image not found: {p}") from None
            h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    if table.boxes is not None:
        h.update(np.ascontiguousarray(table.boxes, np.float32).tobytes())
    return h.hexdigest()


def cache_files(table: FrameTable, size: int, margin: float, cache_dir: str | Path | None = None) -> tuple[Path, Path]:
    """(array, key file) of a table's cache. The name says which frames (a hash of their paths), the key
    file what they looked like when cached, so a changed file rebuilds this cache in place."""
    names = hashlib.sha1("\n".join(map(str, table.paths)).encode()).hexdigest()[:12]
    slug = re.sub(r"[^A-Za-z0-9]+", "-", table.report.source).strip("-")[:60] or "frames"
    stem = f"{slug}-{size}px-m{margin:g}-{names}"
    folder = cache_folder(cache_dir)
    return folder / f"{stem}.npy", folder / f"{stem}.json"


def _stale(array: Path, key_file: Path, key: str, shape: tuple) -> str | None:
    """Why the cache cannot be read as it is (None: it can)."""
    if not array.exists() or not key_file.exists():
        return "none yet"
    try:
        saved = json.loads(key_file.read_text())
    except (OSError, ValueError):
        return "its key file is unreadable"
    if saved.get("key") != key:
        return "the source files, crop or size changed since it was built"
    try:
        frames = DiskFrames(array)
    except (OSError, ValueError):
        return "its array is unreadable"
    if frames.shape != shape or array.stat().st_size != frames.offset + frames.nbytes:
        return "its array is incomplete"
    return None


def open_disk_cache(table: FrameTable, size: int, margin: float, decode: Callable, cache_dir: str | Path | None = None,
                    workers: int | None = None, progress: bool = True) -> "DiskFrames":
    """The table's frames from its disk cache, built first if missing or stale (and said so)."""
    array, key_file = cache_files(table, size, margin, cache_dir)
    key, shape = cache_key(table, size, margin), (len(table), 3, size, size)
    why = _stale(array, key_file, key, shape)
    if why is None:
        print(f"{table.report.source}: frames from the disk cache {shown(array)}")
        return DiskFrames(array)
    gb = frames_nbytes(len(table), size) / 2**30
    print(f"{table.report.source}: building the disk cache ({why}): {len(table):,} frames, {gb:.2f} GiB -> {shown(array)}")
    array.parent.mkdir(parents=True, exist_ok=True)
    key_file.unlink(missing_ok=True)                 # from here on the old array can never pass for current
    tmp = array.with_name(f"{array.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            # plain writes, not a writable memmap: a mapping's dirty pages would count in this process's
            # resident memory until the whole split had been written
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": shape})
            decode_frames(table, size, margin, decode, lambda s, frames: f.write(frames.tobytes()), workers,
                          progress, desc=f"caching {table.report.source}")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, array)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, FileNotFoundError):
            raise
        raise OSError(f"could not write the disk cache {tmp} ({err}); it needs {gb:.2f} GiB free: set cache_dir "
                      "to a folder with room, or cache='none' to decode on the fly") from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    tmp_key = key_file.with_name(f"{key_file.name}.{os.getpid()}.tmp")
    tmp_key.write_text(json.dumps({"key": key, "shape": list(shape), "source": table.report.source,
                                   "first": str(table.paths[0]) if len(table) else None}, indent=1))
    os.replace(tmp_key, key_file)
    return DiskFrames(array)


class DiskFrames:
    """The frames of a disk cache, read row by row with `os.pread` (indexes like the (N, 3, S, S) uint8
    tensor it stands in for: an int gives one face, a slice a batch).

    Reads, not a memmap view: every page of a mapping that a run has touched counts in its resident
    memory, so one epoch over a memmapped 22 GB split would look like a 22 GB process (and count against
    a container's limit). pread leaves the pages to the kernel's file cache, which gives them back."""

    def __init__(self, path: str | Path, rows: np.ndarray | None = None):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version != (1, 0):
                raise ValueError(f"{path}: a .npy version {version} header; the kit writes version 1.0")
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            if dtype != np.uint8 or fortran or len(shape) != 4:
                raise ValueError(f"{path}: not an (N, 3, S, S) uint8 array (shape {shape}, dtype {dtype})")
            self.offset = f.tell()
        self.shape = tuple(shape)
        self.frame_bytes = int(np.prod(shape[1:]))
        self.rows = None if rows is None else np.asarray(rows, np.int64)
        self._fd, self._pid = None, None

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.frame_bytes

    def __len__(self) -> int:
        return self.shape[0] if self.rows is None else len(self.rows)

    def __getstate__(self):                          # a worker process opens its own file
        return {**self.__dict__, "_fd": None, "_pid": None}

    def _read(self, row: int, n: int = 1) -> torch.Tensor:
        if self._pid != os.getpid():
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        size = n * self.frame_bytes
        buf = os.pread(self._fd, size, self.offset + row * self.frame_bytes)
        if len(buf) != size:
            raise ValueError(f"{shown(self.path)} is shorter than its header says (row {row}); delete it to rebuild")
        return torch.frombuffer(bytearray(buf), dtype=torch.uint8).view(n, *self.shape[1:])

    def __getitem__(self, i) -> torch.Tensor:
        if isinstance(i, slice):
            picked = range(len(self))[i]
            if self.rows is None and picked.step == 1:
                return self._read(picked.start, len(picked))            # one read for a run of rows
            return torch.stack([self[k] for k in picked]) if len(picked) else self._read(0, 0)
        if isinstance(i, (int, np.integer)) or (isinstance(i, torch.Tensor) and i.ndim == 0):
            i = int(i)
            if not -len(self) <= i < len(self):
                raise IndexError(f"frame {i} of {len(self)}")
            i %= len(self)
            return self._read(int(self.rows[i]) if self.rows is not None else i)[0]
        raise TypeError(f"index the cache with an int or a slice, or take(index) for a subset; got {type(i).__name__}")

    def take(self, index) -> "DiskFrames":
        """A view of some rows (repeats allowed), read from the same file."""
        index = np.asarray(index, np.int64)
        view = DiskFrames.__new__(DiskFrames)
        view.__dict__.update(self.__getstate__())
        view.rows = index if self.rows is None else self.rows[index]
        return view

    def __del__(self):
        if getattr(self, "_fd", None) is not None and self._pid == os.getpid():
            os.close(self._fd)

    def __repr__(self) -> str:
        return f"DiskFrames({shown(self.path)}, {len(self):,} of {self.shape[0]:,} frames)"
