"""The vector-search workload shared by bench/store.py and bench/peers.py.

N clustered unit vectors (weather-like regimes that persist in time, not uniform noise), one
every 10 minutes, so point i sits at minute 10*i (ids are time-sorted); held-out queries from
random times; time windows holding 1-10% of the points. The embedded store is built and warmed
here too, so both benches drive it with the same settings.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
from skysearch.retrieval.store import Point
from skysearch.retrieval.store.embedded import EmbeddedStore
from skysearch.retrieval.store.filters import SearchFilters
from skysearch.retrieval.store.schema import time_payload

DIM = 256
K = 10
MAX_QUERIES = 1000
WARM_UP_QUERIES = 500
T0 = datetime(2000, 1, 1, tzinfo=timezone.utc)
STEP = timedelta(minutes=10)
COLLECTION = "bench"
CHUNK = 100_000  # rows per step over arrays that may not fit in RAM


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def memory_status() -> dict[str, int]:
    """This process's memory figures from /proc/self/status, KB: ``VmRSS`` (resident now),
    ``VmHWM`` (its peak; not ``ru_maxrss``: a process started by vfork + exec, as Python's
    subprocess does, inherits its parent's ``ru_maxrss``), ``RssAnon`` (heap, what it cannot
    give back) and ``RssFile`` (pages of mapped files, which the kernel drops under pressure)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


#: parts of a store's files, by a piece of their path (first match wins)
STORE_PARTS = (
    (".window-scan", "scan copy"),
    ("quantized", "int8 copies"),
    ("vector_index", "graph"),
    ("vector_storage", "vectors"),
    ("payload", "payloads and indexes"),
)


def mapped_rss_mb(root: Path) -> dict[str, float]:
    """MB of mapped files resident in this process (/proc/self/smaps), by part of the store
    under ``root``; the rest (libraries, the bench's own data) as "outside the store"."""
    parts: dict[str, float] = {}
    part = None  # None: an anonymous mapping (heap, stacks)
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if head and "-" in head[0] and not head[0].endswith(":"):  # a mapping's first line
            path = head[5] if len(head) >= 6 else ""
            if path.startswith(str(root)):
                part = next((name for key, name in STORE_PARTS if key in path), "other store files")
            else:
                part = "outside the store" if path.startswith("/") else None
        elif part and head and head[0] == "Rss:" and int(head[1]):
            parts[part] = parts.get(part, 0.0) + int(head[1]) / 1024
    return {name: round(mb, 1) for name, mb in sorted(parts.items())}


def rss_mb() -> float:
    """This process's resident set now (VmRSS), MB."""
    return memory_status().get("VmRSS", float("nan")) / 1024


def make_data(n: int, seed: int, dim: int = DIM, out: np.ndarray | None = None) -> np.ndarray:
    """Regimes (cluster centres) that persist for a while, slow drift inside a regime, noise.
    ``out``: an (n, dim) float32 array to fill (e.g. a memory map, for N beyond RAM)."""
    rng = np.random.default_rng(seed)
    n_centres = max(16, n // 2000)
    centres = rng.normal(size=(n_centres, dim)).astype(np.float32)
    x = np.empty((n, dim), dtype=np.float32) if out is None else out
    i = 0
    while i < n:
        run = int(rng.integers(20, 300))
        c = centres[rng.integers(n_centres)]
        drift = np.cumsum(rng.normal(scale=0.05, size=(min(run, n - i), dim)), axis=0)
        x[i : i + run] = c + drift + rng.normal(scale=0.6, size=drift.shape)
        i += run
    for lo in range(0, n, CHUNK):
        x[lo : lo + CHUNK] /= np.linalg.norm(x[lo : lo + CHUNK], axis=1, keepdims=True)
    return x


@dataclass
class Workload:
    """Stored vectors ``x`` (row i at minute 10*i), queries, and per query a window of row
    indices ``starts[q] .. starts[q] + lengths[q] - 1``. ``rng`` continues the draws (warm-up)."""

    x: np.ndarray
    queries: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray
    rng: np.random.Generator


def make_workload(
    n: int, nq: int, seed: int, dim: int = DIM, folder: Path | None = None
) -> Workload:
    """Held-out queries: MAX_QUERIES points drawn from random times (so every regime can be
    queried), removed from the stored set; the stored data do not depend on ``nq``. With
    ``folder``, the stored vectors are ``folder/x.npy``, memory-mapped (10M x 256 is 10 GB)."""
    total = n + MAX_QUERIES
    full_file = folder / "full.npy" if folder else None
    full = _array(full_file, (total, dim))
    make_data(total, seed, dim, out=full)
    rng = np.random.default_rng(seed + 1)
    held = np.sort(rng.choice(total, size=MAX_QUERIES, replace=False))
    keep = np.ones(total, dtype=bool)
    keep[held] = False
    queries = np.array(full[rng.permutation(held)[:nq]])
    x = _array(folder / "x.npy" if folder else None, (n, dim))
    row = 0
    for lo in range(0, total, CHUNK):
        rows = full[lo : lo + CHUNK][keep[lo : lo + CHUNK]]
        x[row : row + len(rows)] = rows
        row += len(rows)
    del full
    if full_file:
        full_file.unlink()
    fractions = rng.uniform(0.01, 0.10, size=nq)
    starts = (rng.uniform(0, 1 - fractions) * n).astype(np.int64)
    lengths = (fractions * n).astype(np.int64)
    return Workload(x, queries, starts, lengths, rng)


def _array(file: Path | None, shape: tuple[int, int]) -> np.ndarray:
    if file is None:
        return np.empty(shape, dtype=np.float32)
    return np.lib.format.open_memmap(file, mode="w+", dtype=np.float32, shape=shape)


def point_id(i: int) -> str:
    """The store id of row i (invertible: ``uuid.UUID(id).int``)."""
    return str(uuid.UUID(int=i))


def load_store(store: EmbeddedStore, x: np.ndarray) -> tuple[float, float]:
    """(Re)create the bench collection with ``x``; returns (upsert seconds, optimize seconds)."""
    store.drop_collection(COLLECTION)
    store.ensure_collection(COLLECTION, x.shape[1])
    t = time.perf_counter()
    store.upsert(
        COLLECTION,
        (Point(point_id(i), x[i], time_payload(T0 + STEP * i)) for i in range(len(x))),
        batch_size=1000,
        progress=True,
    )
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    store.optimize(COLLECTION)
    return load_s, time.perf_counter() - t


def window_filter(lo: int, hi: int) -> SearchFilters:
    """The store filter matching rows ``lo..hi`` (inclusive)."""
    return SearchFilters(start=T0 + STEP * lo, end=T0 + STEP * hi)


def warm_up_set(x: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Untimed queries: stored vectors (not the timed queries), copied out of ``x``, and per
    query a window of rows ``lo..hi`` holding 5% of the points."""
    n = len(x)
    rows = np.sort(rng.choice(n, size=min(n, WARM_UP_QUERIES), replace=False))
    lo = rng.integers(0, n - n // 10, size=len(rows))
    return np.array(x[rows]), np.stack([lo, lo + n // 20], axis=1)


def warm_up(
    search: Callable[[np.ndarray, tuple[int, int] | None], object],
    vectors: np.ndarray,
    windows: np.ndarray,
) -> None:
    """Each of ``warm_up_set``'s queries unfiltered and filtered on its window, so the timed
    ones see a warm index, as a long-running service does: the first few hundred queries after
    opening the store fault its memory-mapped graph and vectors in (measured at 1M: p50 1.5 ms
    over the first 200 queries after 50 warm-up ones, 0.54 ms over the next 200)."""
    for q, (lo, hi) in zip(vectors, windows, strict=True):
        search(q, None)
        search(q, (int(lo), int(hi)))
