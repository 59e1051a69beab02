"""Work spread over worker processes, results in order: rendering synthetic faces, decoding frames."""
from __future__ import annotations

import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import cv2


def default_workers(limit: int = 4) -> int:
    return max(1, min(os.cpu_count() or 1, limit))


@contextmanager
def opencv_fork_guard():
    """OpenCV's thread pool does not survive a fork: a worker that touches it (cv2.setNumThreads, or any
    parallel cv2 call) waits forever on threads that exist only in the parent, once the parent has used
    cv2 (a notebook that cropped faces, a test session). Shrinking the parent's pool to one thread before
    forking stops those threads cleanly; the parent gets its own count back afterwards."""
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(threads)


def _worker_start(init: Callable | None, args: tuple) -> None:
    # as torch's DataLoader workers do: one intra-op thread each, so forked workers never wait on (or
    # oversubscribe) the parent's OpenMP pool
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    if init is not None:
        init(*args)


def ordered_map(fn: Callable, jobs: Iterable, workers: int, init: Callable | None = None, init_args: tuple = (),
                chunksize: int = 1) -> Iterator:
    """fn(job) for every job, in order, over `workers` processes (in this one for 1). `init(*init_args)`
    runs once per worker (or here), e.g. to hand it a large object once instead of with every job.

    The platform's default start method, as torch's DataLoader uses: fork on Linux (no main-module guard
    needed in scripts), spawn on macOS and Windows. An exception in a worker is raised here as itself."""
    if workers <= 1:
        if init is not None:
            init(*init_args)
        yield from map(fn, jobs)
        return
    with opencv_fork_guard(), ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(),
                                                  initializer=_worker_start, initargs=(init, init_args)) as pool:
        yield from pool.map(fn, jobs, chunksize=chunksize)
