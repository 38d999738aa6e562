"""Scores on sketches (see ``grid``): KS D of frames, clips, one query against many, pairwise.

Frames compare by the mean over cells of 1 - D; clips by the mean over frames (frame i against
frame i) and channels. Pool sketches are addressed by row number (``SketchPool``), so stored,
memory-mapped sketches are compared without copying them first.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from skysearch.ingest.similarity.grid import GridSpec, cell_sizes, sketch_frames, sketch_geometry
from skysearch.ingest.similarity.kernel import ks_distance_sums

from skysearch.cpus import usable_cpus
from skysearch.errors import UsageError

# Pool sketches gathered per kernel step (a chunk stays in L2 while every query passes over it).
_CHUNK_BYTES = 1 << 20


# --------------------------------------------------------------------------- KS on sketches


def _distance_sums(
    queries: np.ndarray, block: np.ndarray, sizes_q: np.ndarray, sizes_p: np.ndarray
) -> np.ndarray:
    """Sums over cells of KS D: query sketches (m, B, cells) x ``block`` (k, B, cells) -> (m, k).

    Same cell sizes (the usual case: one geometry): D = max_k |C_a(k) - C_b(k)| / n, exact in
    the sketches' integers, by the compiled kernel.
    """
    out = np.empty((len(queries), len(block)), dtype=np.float64)
    if np.array_equal(sizes_q, sizes_p):
        dtype = np.result_type(queries.dtype, block.dtype)
        ks_distance_sums(
            np.ascontiguousarray(queries, dtype=dtype),
            np.ascontiguousarray(block, dtype=dtype),
            1.0 / sizes_q.astype(np.float64),
            out,
        )
        return out
    # Cells of different sizes (frames of different geometry): the C++ formula on CDFs.
    cdf_p = block / sizes_p.astype(np.float64)
    cdf_q = queries / sizes_q.astype(np.float64)
    for m in range(len(queries)):
        out[m] = np.abs(cdf_p - cdf_q[m]).max(axis=1).sum(axis=1)
    return out


@lru_cache(maxsize=1)
def _executor() -> ThreadPoolExecutor | None:
    """Shared worker threads for the kernel (None on a single core)."""
    workers = min(4, usable_cpus())
    return ThreadPoolExecutor(workers, thread_name_prefix="ks") if workers > 1 else None


def similarity_block(
    queries: np.ndarray,
    pool: SketchPool | np.ndarray,
    rows: np.ndarray | None = None,
    sizes_q: np.ndarray | None = None,
    sizes_p: np.ndarray | None = None,
) -> np.ndarray:
    """Frame similarities of m query sketches (m, B, cells) with pool frames: (m, len(rows)).

    ``pool``: sketches (F, B, cells) (an array, a memmap or a ``SketchPool``); ``rows``: which
    pool rows (default: all). Each chunk of pool rows is gathered once, compared with every
    query while it sits in cache, on a few threads (numpy releases the GIL).
    """
    pool = pool if isinstance(pool, SketchPool) else SketchPool([np.asarray(pool)])
    rows = np.arange(len(pool)) if rows is None else np.asarray(rows, dtype=np.int64)
    if sizes_q is None:
        raise UsageError("similarity_block needs the cell sizes of the query frames")
    sizes_p = sizes_q if sizes_p is None else sizes_p
    cells = queries.shape[-1]
    out = np.empty((len(queries), len(rows)), dtype=np.float64)
    step = max(1, _CHUNK_BYTES // max(1, queries[0].nbytes))

    def run(start: int) -> None:
        block = pool.take(rows[start : start + step])
        sums = _distance_sums(queries, block, sizes_q, sizes_p)
        out[:, start : start + len(block)] = 1.0 - sums / cells

    starts = range(0, len(rows), step)
    executor = _executor()
    if len(starts) > 1 and executor is not None:
        list(executor.map(run, starts))
    else:
        for start in starts:
            run(start)
    return out


def cell_similarities(sketch_a: np.ndarray, sketch_b: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Per-cell similarity 1 - D of two frame sketches of the same geometry: (N*N,) float64."""
    worst = np.abs(sketch_a.astype(np.int64) - sketch_b.astype(np.int64)).max(axis=0)
    return 1.0 - worst / sizes


def frame_similarity(
    sketch_a: np.ndarray,
    sketch_b: np.ndarray,
    sizes_a: np.ndarray,
    sizes_b: np.ndarray | None = None,
) -> float:
    """Similarity of two frame sketches (B, cells)."""
    return float(similarity_block(sketch_a[None], sketch_b[None], None, sizes_a, sizes_b)[0, 0])


class SketchPool:
    """Frame sketches (B, cells) spread over several arrays (memmaps), addressed by one row number.

    Global row r of part p is ``offsets[p] + local row``; ``take(rows)`` gathers in row order.
    """

    def __init__(self, parts: list[np.ndarray]) -> None:
        if not parts:
            raise UsageError("empty sketch pool")
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return tuple(self.parts[0].shape[1:])

    def take(self, rows: np.ndarray) -> np.ndarray:
        if len(self.parts) == 1:
            return np.asarray(self.parts[0][rows])
        dtype = np.result_type(*[p.dtype for p in self.parts])
        out = np.empty((len(rows), *self.frame_shape), dtype=dtype)
        which = np.searchsorted(self.offsets, rows, side="right") - 1
        for part in np.unique(which):
            sel = np.nonzero(which == part)[0]
            out[sel] = self.parts[part][rows[sel] - self.offsets[part]]
        return out


# --------------------------------------------------------------------------- clips


@dataclass(frozen=True)
class ClipScore:
    """Clip similarity: overall mean and per channel (mean over frames)."""

    similarity: float
    channels: dict[str, float]

    def as_dict(self) -> dict:
        return {"similarity": self.similarity, "channels": dict(self.channels)}


def clip_similarity_from_sketches(
    sketch_a: np.ndarray,
    sketch_b: np.ndarray,
    sizes_a: np.ndarray,
    sizes_b: np.ndarray | None = None,
    channels: list[str] | None = None,
) -> ClipScore:
    """Two clips' sketches (C, L, B, cells): frame i against frame i, mean over frames, channels."""
    if sketch_a.shape[:2] != sketch_b.shape[:2]:
        raise UsageError(
            f"clips differ in shape: {sketch_a.shape[0]} channels x {sketch_a.shape[1]} frames "
            f"vs {sketch_b.shape[0]} x {sketch_b.shape[1]}"
        )
    n_channels, length = sketch_a.shape[:2]
    index = np.arange(n_channels * length).reshape(1, n_channels, length)
    pool = sketch_b.reshape(n_channels * length, *sketch_b.shape[2:])
    # 1 - a distance, in 0..1 (rounding made identical clips 1.0000000000000002)
    per_channel = np.clip(one_to_many(sketch_a, pool, index, sizes_a, sizes_b)[0], 0.0, 1.0)
    names = channels or [str(c) for c in range(n_channels)]
    if len(names) != n_channels:
        raise UsageError(f"{len(names)} channel names for {n_channels} channels")
    return ClipScore(
        float(per_channel.mean()), {n: float(v) for n, v in zip(names, per_channel, strict=True)}
    )


@dataclass(frozen=True)
class SketchedClip:
    """A clip's sketches (C, L, B, cells) with its channel names, cell sizes and origin."""

    channels: list[str]
    sketches: np.ndarray
    sizes: np.ndarray
    source: str


def compare_clips(a: SketchedClip, b: SketchedClip) -> ClipScore:
    """Similarity of two sketched clips, matching channels by name."""
    if sorted(a.channels) != sorted(b.channels):
        raise UsageError(
            f"channels differ: {a.source} has {','.join(a.channels)}, "
            f"{b.source} has {','.join(b.channels)}"
        )
    if a.sketches.shape[1] != b.sketches.shape[1]:
        raise UsageError(
            f"frame counts differ: {a.source} has {a.sketches.shape[1]} frames, "
            f"{b.source} has {b.sketches.shape[1]}"
        )
    order = [b.channels.index(c) for c in a.channels]
    return clip_similarity_from_sketches(
        a.sketches, b.sketches[order], a.sizes, b.sizes, list(a.channels)
    )


def clip_similarity(
    clip_a: np.ndarray,
    clip_b: np.ndarray,
    spec: GridSpec | None = None,
    channels: list[str] | None = None,
) -> ClipScore:
    """Similarity of two clips given as uint8 frames (C, L, H, W[, 3])."""
    spec = spec or GridSpec()
    clip_a, clip_b = np.asarray(clip_a), np.asarray(clip_b)
    sketches, sizes = [], []
    for clip in (clip_a, clip_b):
        if clip.ndim not in (4, 5):
            raise UsageError(f"expected a clip (C, L, H, W[, 3]), got shape {clip.shape}")
        n_channels, length = clip.shape[:2]
        flat = sketch_frames(clip.reshape(n_channels * length, *clip.shape[2:]), spec)
        sketches.append(flat.reshape(n_channels, length, *flat.shape[1:]))
        sizes.append(cell_sizes(sketch_geometry(clip.shape[2:], spec)))
    return clip_similarity_from_sketches(sketches[0], sketches[1], sizes[0], sizes[1], channels)


def one_to_many(
    query: np.ndarray,
    pool: SketchPool | np.ndarray,
    index: np.ndarray,
    sizes_q: np.ndarray,
    sizes_p: np.ndarray | None = None,
) -> np.ndarray:
    """One query clip against many candidate clips whose frames live in a pool of sketches.

    ``query``: (C, L, B, cells); ``pool``: (F, B, cells) array/memmap or ``SketchPool``;
    ``index``: int (K, C, L), the pool row of each candidate frame. Returns per-channel
    similarities (K, C) (mean over the L frames; the clip score is the mean over C).

    Overlapping candidates (sliding-window clips share frames at shifted positions) are
    computed densely: every distinct pool frame of a channel against all L query frames in
    one pass over memory. Sparse candidates are computed position by position.
    """
    index = np.asarray(index, dtype=np.int64)
    n_channels, length = query.shape[:2]
    if index.ndim != 3 or index.shape[1:] != (n_channels, length):
        raise UsageError(
            f"candidate index shape {index.shape} does not match the query clip "
            f"({n_channels} channels x {length} frames)"
        )
    pool = pool if isinstance(pool, SketchPool) else SketchPool([np.asarray(pool)])
    positions = np.arange(length)
    out = np.zeros(index.shape[:2], dtype=np.float64)
    for c in range(n_channels):
        rows, inverse = np.unique(index[:, c, :], return_inverse=True)
        inverse = inverse.reshape(len(index), length)
        # distinct (pool frame, position) pairs: a bincount, not np.unique (hashing is slow)
        needed = np.count_nonzero(np.bincount((inverse * length + positions).ravel()))
        if 2 * needed >= length * len(rows):
            sims = similarity_block(query[c], pool, rows, sizes_q, sizes_p)
            out[:, c] = sims[positions, inverse].mean(axis=1)
            continue
        for i in positions:
            rows_i, inverse_i = np.unique(index[:, c, i], return_inverse=True)
            sims = similarity_block(query[c, i][None], pool, rows_i, sizes_q, sizes_p)[0]
            out[:, c] += sims[inverse_i.ravel()] / length
    return out


def pairwise(
    pool: SketchPool | np.ndarray, index: np.ndarray, sizes: np.ndarray, max_step: int = 8192
) -> np.ndarray:
    """Full clip similarity matrix (K, K) of the clips ``index`` (K, C, L) into ``pool``.

    When the clips share frames (sliding windows), each channel's distinct frames are compared
    once, all against all (a step matrix of at most ``max_step`` frames a side), and clip
    pairs average its entries; otherwise each clip is scored against the clips after it.
    """
    index = np.asarray(index, dtype=np.int64)
    pool = pool if isinstance(pool, SketchPool) else SketchPool([np.asarray(pool)])
    k, n_channels, length = index.shape
    total = np.zeros((k, k), dtype=np.float64)
    for c in range(n_channels):
        rows, inverse = np.unique(index[:, c, :], return_inverse=True)
        inverse = inverse.reshape(k, length)
        if len(rows) <= max_step and len(rows) ** 2 <= k * k * length:
            step = similarity_block(pool.take(rows), pool, rows, sizes)
            for i in range(length):
                total += step[np.ix_(inverse[:, i], inverse[:, i])]
            continue
        for a in range(k):
            query = pool.take(index[a, c]).reshape(1, length, *pool.frame_shape)
            scores = one_to_many(query, pool, index[a:, c : c + 1], sizes)[:, 0] * length
            total[a, a:] += scores
            total[a + 1 :, a] += scores[1:]
    return total / (length * n_channels)
