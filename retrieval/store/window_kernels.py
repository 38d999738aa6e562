"""The window scan's scoring (retrieval/store/window_scan.py): compiled loops for the int8 dot
products of a run of rows (split across threads for wide windows) and the best masked rows by a
one-pass heap. Apart so numba is imported only when a window is scanned."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from skysearch.cpus import usable_cpus

#: windows of at least this many rows are scored by every usable CPU (the compiled loop
#: releases the GIL); below it the hand-off costs more than it saves (1M int8 256-d rows,
#: 2 threads vs 1: 2k rows 0.78x, 10k 1.29x, 56k 1.89x; bench/RESULTS.md)
PARALLEL_ROWS = 8192
#: at most this many threads score one window (the scan is memory-bound)
MAX_SCAN_THREADS = 4


@njit(cache=True, fastmath=True, boundscheck=False, nogil=True)
def dots(x, q, lo, hi, out):  # pragma: no cover - compiled
    d = x.shape[1]
    for i in range(lo, hi):
        acc = np.int32(0)
        for j in range(d):
            acc += np.int32(x[i, j]) * np.int32(q[j])
        out[i - lo] = acc


@njit(cache=True, fastmath=True, boundscheck=False, nogil=True)
def best(dots, scale, mask, want):  # pragma: no cover - compiled
    """Positions of the ``want`` largest ``dots * scale`` where ``mask`` (any order): a min-heap,
    one pass, no window-sized temporaries (at 1M rows, 9 ms less than scale + argpartition)."""
    top = np.empty(want, dtype=np.float32)
    pos = np.empty(want, dtype=np.int64)
    size = 0
    for i in range(dots.shape[0]):
        if not mask[i]:
            continue
        s = np.float32(dots[i]) * scale[i]
        if size < want:  # sift up
            c = size
            size += 1
            while c > 0 and top[(c - 1) // 2] > s:
                top[c], pos[c] = top[(c - 1) // 2], pos[(c - 1) // 2]
                c = (c - 1) // 2
        elif s > top[0]:  # replace the smallest, sift down
            c = 0
            while True:
                child = 2 * c + 1
                if child >= want:
                    break
                if child + 1 < want and top[child + 1] < top[child]:
                    child += 1
                if top[child] >= s:
                    break
                top[c], pos[c] = top[child], pos[child]
                c = child
        else:
            continue
        top[c], pos[c] = s, i
    return pos[:size]


_pool: tuple[int, int, ThreadPoolExecutor | None] | None = None  # (pid, threads, helpers)
_pool_lock = threading.Lock()


def scan_threads() -> tuple[int, ThreadPoolExecutor | None]:
    """Threads that score one wide window (``NUMBA_NUM_THREADS`` when set, else the usable
    CPUs; at most MAX_SCAN_THREADS) and the pool of the helpers (made again in a forked child)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            wanted = os.environ.get("NUMBA_NUM_THREADS", "")
            threads = int(wanted) if wanted.isdigit() and int(wanted) > 0 else usable_cpus()
            threads = min(MAX_SCAN_THREADS, threads)
            helpers = ThreadPoolExecutor(threads - 1, "window-scan") if threads > 1 else None
            _pool = (os.getpid(), threads, helpers)
        return _pool[1], _pool[2]


def scores(x: np.ndarray, q: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """int32 dot products of rows ``lo..hi`` with ``q``; a wide window is cut into one part per
    scan thread, the first scored by the calling thread, the others by the helpers."""
    out = np.empty(hi - lo, dtype=np.int32)
    threads, helpers = scan_threads()
    if helpers is None or hi - lo < PARALLEL_ROWS:
        dots(x, q, lo, hi, out)
        return out
    cuts = np.linspace(lo, hi, threads + 1).astype(int)
    parts = [
        helpers.submit(dots, x, q, a, b, out[a - lo : b - lo])
        for a, b in zip(cuts[1:-1], cuts[2:], strict=True)
    ]
    dots(x, q, cuts[0], cuts[1], out[: cuts[1] - lo])
    for part in parts:
        part.result()
    return out
