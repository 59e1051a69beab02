"""Decoded frames in memory, in a disk cache, or decoded on demand: the same pixels, and a disk cache that
is rebuilt whenever what it was built from changes (issue 14, item 2)."""
import os
import pickle
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fer_kit import train
from fer_kit.config import TrainConfig
from fer_kit.data.abaw import read_expr_any
from fer_kit.data.cache import DiskFrames, cache_files, resolve_cache
from fer_kit.data.dataset import FrameDataset


@pytest.fixture
def root(tiny_synthetic, tmp_path):
    """A private copy of the tiny synthetic root: these tests change its files."""
    out = tmp_path / "root"
    shutil.copytree(tiny_synthetic, out)
    return out


def table_of(root):
    return read_expr_any(root, "Validation_Set", 8)


def disk(table, tmp_path, size=32, **kw):
    return FrameDataset(table, size, cache="disk", cache_dir=str(tmp_path / "frames"), progress=False, **kw)


def test_every_cache_mode_gives_the_same_pixels(root, tmp_path, monkeypatch):
    monkeypatch.setattr("fer_kit.data.cache._CHUNK", 16)      # several chunks: the worker pool takes them
    table = table_of(root)
    memory = FrameDataset(table, 32, cache="memory", progress=False, workers=2)   # decoded by two processes
    single = FrameDataset(table, 32, cache="memory", progress=False, workers=1)
    lazy = FrameDataset(table, 32, cache="none", progress=False)
    cached = disk(table, tmp_path, workers=2)
    assert lazy.images is None and isinstance(cached.images, DiskFrames)
    assert torch.equal(memory.images, single.images)
    assert torch.equal(cached.images[0: len(table)], memory.images)             # one read for a run of rows
    for i in (0, 7, len(table) - 1, -1):
        assert torch.equal(cached.image(i), memory.images[i]) and torch.equal(lazy.image(i), memory.images[i])
    array, _ = cache_files(table, 32, 0.2, tmp_path / "frames")
    assert np.array_equal(np.load(array, mmap_mode="r"), memory.images.numpy())  # a plain .npy on disk
    with pytest.raises(IndexError):
        cached.images[len(table)]


def test_workers_zero_or_one_decodes_without_a_pool(root, monkeypatch):
    """workers=0 means what DataLoader's num_workers=0 means: no worker processes (it once meant the
    default, all cores)."""
    from fer_kit.data import cache

    monkeypatch.setattr(cache, "_CHUNK", 16)
    pools = []

    def spy(fn, jobs, workers, *args):
        pools.append(workers)
        return real(fn, jobs, workers, *args)
    real = cache.ordered_map
    monkeypatch.setattr(cache, "ordered_map", spy)
    monkeypatch.setattr(cache, "default_workers", lambda: 2)
    table = table_of(root)
    for workers in (0, 1, None):
        FrameDataset(table, 32, cache="memory", progress=False, workers=workers)
    assert pools == [1, 1, 2]


def test_cache_is_reused_until_a_source_file_changes(root, tmp_path, capsys):
    table = table_of(root)
    first = disk(table, tmp_path)
    array, key_file = cache_files(table, 32, 0.2, tmp_path / "frames")
    built = array.stat().st_mtime_ns
    assert "building the disk cache (none yet)" in capsys.readouterr().out
    again = disk(table, tmp_path)
    assert "frames from the disk cache" in capsys.readouterr().out and array.stat().st_mtime_ns == built
    assert torch.equal(again.images[0:5], first.images[0:5])

    # a source file rewritten (another face, so another size and mtime): the cache is rebuilt, not read
    path = table.paths[3]
    Image.new("RGB", (112, 112), (250, 10, 10)).save(path, quality=95)
    os.utime(path, ns=(built + 10**9, built + 10**9))
    fresh = disk(table_of(root), tmp_path)
    assert "source files, crop or size changed" in capsys.readouterr().out
    assert fresh.images[3][0].float().mean() > 200 and not torch.equal(fresh.images[3], first.images[3])
    assert torch.equal(fresh.images[4], first.images[4])
    # another image size is another cache; the first stays valid
    disk(table_of(root), tmp_path, size=24)
    assert "none yet" in capsys.readouterr().out
    disk(table_of(root), tmp_path)
    assert "frames from the disk cache" in capsys.readouterr().out
    assert sorted(p.suffix for p in key_file.parent.iterdir()) == [".json", ".json", ".npy", ".npy"]


@pytest.mark.parametrize("damage", ["truncate", "key"])
def test_a_damaged_cache_is_rebuilt(root, tmp_path, capsys, damage):
    table = table_of(root)
    reference = disk(table, tmp_path).images[0:len(table)].clone()
    array, key_file = cache_files(table, 32, 0.2, tmp_path / "frames")
    if damage == "truncate":
        os.truncate(array, array.stat().st_size - 100)       # a build cut off by a full disk, say
    else:
        key_file.write_text("{not json")
    capsys.readouterr()
    rebuilt = disk(table, tmp_path)
    assert "building the disk cache (its " in capsys.readouterr().out
    assert torch.equal(rebuilt.images[0:len(table)], reference)


def test_a_bad_source_file_stops_the_build_naming_it_and_leaves_nothing_half_written(root, tmp_path, monkeypatch):
    monkeypatch.setattr("fer_kit.data.cache._CHUNK", 16)
    table = table_of(root)
    table.paths[5].write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=f"cannot decode image {table.paths[5]}"):
        disk(table, tmp_path, workers=2)
    assert not list((tmp_path / "frames").iterdir())          # no partial array, no key file
    table.paths[6].unlink()
    with pytest.raises(FileNotFoundError, match=f"image not found: {table.paths[6]}"):
        disk(table, tmp_path)


def test_subsets_and_worker_processes_read_the_same_frames(root, tmp_path):
    table = table_of(root)
    cached, memory = disk(table, tmp_path), FrameDataset(table, 32, progress=False)
    index = np.array([9, 2, 2, 40])                             # repeats: a bootstrap member
    sub, sub_memory = cached.subset(index), memory.subset(index)
    assert torch.equal(sub.images[0:4], sub_memory.images) and torch.equal(sub.labels, sub_memory.labels)
    assert len(sub.table) == 4 and torch.equal(sub.images[1], memory.images[2])
    assert torch.equal(pickle.loads(pickle.dumps(sub.images))[3], memory.images[40])
    here = next(iter(DataLoader(cached, batch_size=16)))[0]
    there = next(iter(DataLoader(cached, batch_size=16, num_workers=1)))[0]   # its own file handle
    assert torch.equal(here, there) and torch.equal(here, memory.images[:16])


def test_auto_holds_a_split_in_memory_only_when_it_fits_the_budget():
    assert resolve_cache("auto", 10_000, 112, memory_gb=2.0) == "memory"         # 0.35 GiB
    assert resolve_cache("auto", 586_959, 112, memory_gb=2.0) == "disk"          # Aff-Wild2's EXPR training split
    assert resolve_cache("none", 586_959, 112) == "none"
    with pytest.raises(ValueError, match="unknown cache 'ram'"):
        resolve_cache("ram", 1, 1)
    with pytest.raises(ValueError, match="cache_gb must be > 0"):
        TrainConfig(cache_gb=0)


def test_training_from_the_disk_cache_is_the_training_from_memory(tiny_synthetic, tmp_path):
    base = dict(n_frames=600, seed=3, image_size=48, batch_size=16, epochs=1, max_batches=3, progress=False)
    runs = {}
    for cache in ("memory", "disk", "none"):
        cfg = TrainConfig(**base, cache=cache, cache_dir=str(tmp_path / "frames"), workers=1,
                          out_dir=str(tmp_path / cache))
        data = train.load_expr_data(cfg)
        runs[cache] = train.fit(cfg, data)
    assert isinstance(data.train.images, type(None))                          # "none": decoded by a loader worker
    assert runs["disk"].history["train_loss"].tolist() == runs["memory"].history["train_loss"].tolist()
    assert runs["disk"].best["p_expr"] == runs["memory"].best["p_expr"]
    assert np.isfinite(runs["none"].history["train_loss"]).all()
