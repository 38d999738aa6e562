"""Exact search of narrow time windows: a time-sorted int8 copy of a collection, scanned.

Why: the engine answers a time-filtered query either by walking the HNSW graph under the filter
(fast, but the window's true neighbours are often far, near-tied points the walk misses) or by
scoring the payload index's matches one by one (~100 ns a point at 1M: the iteration, not the
arithmetic, dominates). Here a window is one contiguous run of rows (sorted by ``time``), so a
compiled loop scores it at memory speed (~20-45 ns a 256-d int8 row), the indexed payload fields
kept as columns narrow it to the filter, and the best ``4k`` candidates go back to the engine
(``has_id`` + the original filter, exact float32 scores, payloads): what is returned is always
the engine's own answer over points that pass its own filter.

The copy is a cache derived from the collection, rebuilt by ``optimize()``, and deleted BEFORE
any write to the collection (a crash in between leaves no copy: queries use the engine until
the next optimize). A copy whose point count differs from the engine's is never used.
Filters it cannot evaluate (geo boxes, point ids, ...) and windows wider than
``max_points`` go to the engine.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import models

from skysearch.cpus import usable_cpus
from skysearch.errors import UsageError
from skysearch.gc_pause import gc_paused
from skysearch.timeutil import parse_time

FORMAT = 2
#: candidates rescored by the engine, per requested hit (int8 ranking errors are ~1e-3)
OVERSAMPLE = 4
#: more candidates than this (k > 1024) go to the engine instead
MAX_CANDIDATES = 4096
#: keyword fields with more distinct values than this are not kept as columns (ids)
MAX_VOCABULARY = 100_000
#: windows of at least this many rows are scored by every usable CPU (the compiled loop
#: releases the GIL); below it the hand-off costs more than it saves (1M int8 256-d rows,
#: 2 threads vs 1: 2k rows 0.78x, 10k 1.29x, 56k 1.89x; bench/RESULTS.md)
PARALLEL_ROWS = 8192
#: at most this many threads score one window (the scan is memory-bound)
MAX_SCAN_THREADS = 4
_NUMERIC = (models.PayloadSchemaType.INTEGER, models.PayloadSchemaType.FLOAT)
_KEYWORD = models.PayloadSchemaType.KEYWORD


def _kernels() -> Any:
    """The compiled loops, imported on the first scan: numba costs ~0.4 s to import, which a
    one-shot command that never scans a window (a text search) should not pay."""
    from skysearch.retrieval.store import window_kernels

    return window_kernels


_pool: tuple[int, int, ThreadPoolExecutor | None] | None = None  # (pid, threads, helpers)
_pool_lock = threading.Lock()


def _scan_threads() -> tuple[int, ThreadPoolExecutor | None]:
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


def _scores(x: np.ndarray, q: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """int32 dot products of rows ``lo..hi`` with ``q``; a wide window is cut into one part per
    scan thread, the first scored by the calling thread, the others by the helpers."""
    out = np.empty(hi - lo, dtype=np.int32)
    dots = _kernels().dots
    threads, helpers = _scan_threads()
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


def _quantize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row symmetric int8 (each row scaled by its largest component) and the scales."""
    peak = np.abs(rows).max(axis=1)
    peak[peak == 0] = 1.0
    scale = (peak / 127.0).astype(np.float32)
    return np.round(rows / scale[:, None]).astype(np.int8), scale


def _seconds(value: Any) -> float:
    """Epoch seconds of a payload or filter time; NaN when it is not one."""
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, datetime.min.time(), tzinfo=timezone.utc)
    if isinstance(value, str | datetime):
        try:
            return parse_time(value).timestamp()
        except UsageError:
            return float("nan")
    return float("nan")


def _listed(conds: Any) -> list[Any]:
    return conds if isinstance(conds, list) else [] if conds is None else [conds]


@dataclass
class _Column:
    kind: str  # "number" | "keyword"
    values: np.ndarray  # number: float64 (NaN = absent); keyword: int32 codes (n, width), -1 pad
    vocabulary: dict[str, int] | None = None


class WindowIndex:
    """A loaded copy (memory-mapped). ``candidates`` is None where the engine must answer."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        def load(name: str) -> np.ndarray:  # a plain view of the map: cheaper slices
            return np.asarray(np.load(folder / f"{name}.npy", mmap_mode="r"))

        self.points = int(meta["points"])
        self.times = load("time")
        self.ids = load("ids")
        self.vectors = {vn: (load(f"vec.{vn}"), load(f"scale.{vn}")) for vn in meta["vectors"]}
        self.columns = {
            f: _Column(c["kind"], load(f"col.{f}"), c.get("vocabulary"))
            for f, c in meta["columns"].items()
        }

    def candidates(
        self, vector_name: str, vector: list[float], limit: int, flt: models.Filter, max_points: int
    ) -> list[uuid.UUID] | None:
        """Ids of the best ``OVERSAMPLE * limit`` rows passing ``flt`` (all of them when fewer),
        or None when the filter has no time window, the window holds more than ``max_points``
        rows, or a condition is not one this copy evaluates."""
        if vector_name not in self.vectors:
            return None
        lo, hi = self._window(flt)
        if hi - lo > max_points:
            return None
        mask = self._eval(flt, lo, hi)
        if mask is None:
            return None
        x8, scale = self.vectors[vector_name]
        q8, _ = _quantize(np.asarray(vector, dtype=np.float32)[None, :])
        if not mask.any():
            return []
        top = _kernels().best(_scores(x8, q8[0], lo, hi), scale[lo:hi], mask, OVERSAMPLE * limit)
        raw = self.ids[lo + top].tobytes()
        return [uuid.UUID(bytes=raw[i : i + 16]) for i in range(0, len(raw), 16)]

    def _window(self, flt: models.Filter) -> tuple[int, int]:
        """Rows ``lo..hi`` (exclusive) that the time ranges the filter requires allow (its
        ``must`` conditions, also inside nested ``must`` filters)."""
        lo, hi = 0, self.points
        for cond in _listed(flt.must):
            if isinstance(cond, models.Filter):
                inner_lo, inner_hi = self._window(cond)
                lo, hi = max(lo, inner_lo), min(hi, inner_hi)
            elif isinstance(cond, models.FieldCondition) and cond.key == "time" and cond.range:
                r = cond.range
                if r.gte is not None or r.gt is not None:
                    t, side = (r.gte, "left") if r.gte is not None else (r.gt, "right")
                    lo = max(lo, int(np.searchsorted(self.times, _seconds(t), side)))
                if r.lte is not None or r.lt is not None:
                    t, side = (r.lte, "right") if r.lte is not None else (r.lt, "left")
                    hi = min(hi, int(np.searchsorted(self.times, _seconds(t), side)))
        return lo, max(lo, hi)

    def _eval(self, flt: models.Filter, lo: int, hi: int) -> np.ndarray | None:
        """The filter's truth per row of the window (Qdrant semantics), None if unsupported."""
        if flt.min_should is not None:
            return None
        parts: dict[str, list[np.ndarray]] = {}
        for clause in ("must", "should", "must_not"):
            for cond in _listed(getattr(flt, clause)):
                m = (
                    self._eval(cond, lo, hi)
                    if isinstance(cond, models.Filter)
                    else self._condition(cond, lo, hi)
                )
                if m is None:
                    return None
                parts.setdefault(clause, []).append(m)
        mask = np.ones(hi - lo, dtype=bool)
        for m in parts.get("must", []):
            mask &= m
        if parts.get("should"):
            mask &= np.logical_or.reduce(parts["should"])
        for m in parts.get("must_not", []):
            mask &= ~m
        return mask

    def _condition(self, cond: Any, lo: int, hi: int) -> np.ndarray | None:
        if not isinstance(cond, models.FieldCondition) or cond.key not in self.columns:
            if isinstance(cond, models.FieldCondition) and cond.key == "time" and cond.range:
                return self._range(self.times[lo:hi], cond.range, _seconds)
            return None
        others = ("geo_bounding_box", "geo_radius", "geo_polygon", "values_count", "is_empty")
        if any(getattr(cond, n, None) is not None for n in others):
            return None
        column = self.columns[cond.key]
        values = column.values[lo:hi]
        if cond.range is not None:
            return self._range(values, cond.range, float) if column.kind == "number" else None
        m = cond.match
        if isinstance(m, models.MatchValue):
            wanted = [m.value]
        elif isinstance(m, models.MatchAny):
            wanted = list(m.any)
        else:
            return None
        if column.kind == "number":
            if any(isinstance(v, bool) or not isinstance(v, int) for v in wanted):
                return None
            return np.isin(values, np.asarray(wanted, dtype=np.float64))
        if any(not isinstance(v, str) for v in wanted):
            return None
        codes = [column.vocabulary[v] for v in wanted if v in column.vocabulary]
        return np.isin(values, codes).any(axis=1)

    @staticmethod
    def _range(values: np.ndarray, r: Any, convert: Callable[[Any], float]) -> np.ndarray:
        mask = np.ones(len(values), dtype=bool)
        with np.errstate(invalid="ignore"):
            for bound, op in (("gte", np.greater_equal), ("gt", np.greater)):
                if getattr(r, bound) is not None:
                    mask &= op(values, convert(getattr(r, bound)))
            for bound, op in (("lte", np.less_equal), ("lt", np.less)):
                if getattr(r, bound) is not None:
                    mask &= op(values, convert(getattr(r, bound)))
        return mask & ~np.isnan(values)


def folder_of(collection_dir: Path) -> Path:
    return collection_dir.parent / f".{collection_dir.name}.window-scan"


def invalidate(collection_dir: Path) -> None:
    """Delete the copy (before any write to the collection)."""
    folder = folder_of(collection_dir)
    if folder.exists():
        trash = folder.with_name(folder.name + f".old-{uuid.uuid4().hex}")
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)


def load(collection_dir: Path, points: int) -> WindowIndex | None:
    folder = folder_of(collection_dir)
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    if meta.get("format") != FORMAT or meta.get("points") != points:
        return None
    return WindowIndex(folder, meta)


def build_from_shard(shard: Any, collection_dir: Path) -> bool:
    """The copy of an open qdrant-edge shard (run by the store's optimize child): every
    record scrolled in batches, the indexed keyword and number fields as columns."""
    import qdrant_edge as qe
    from skysearch.retrieval.store.schema import PAYLOAD_INDEXES

    config = json.loads((collection_dir / "edge_config.json").read_text())
    sizes = {vn: int(v["size"]) for vn, v in config.get("vectors", {}).items()}
    points = shard.info().points_count

    def batches() -> Iterator[Batch]:
        offset = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=2000, with_payload=True, with_vector=True
            )
            records, offset = shard.scroll(request)
            yield [(str(r.id), r.vector or {}, r.payload or {}) for r in records]
            if offset is None:
                return

    with gc_paused():  # a list and a dict per record (see skysearch.gc_pause)
        return points > 0 and build(collection_dir, batches(), points, sizes, PAYLOAD_INDEXES)


class _Keywords:
    """Codes of one keyword field, built batch by batch (first seen, first coded); dropped
    once it has more than MAX_VOCABULARY distinct values."""

    def __init__(self) -> None:
        self.vocabulary: dict[str, int] | None = {}
        self.batches: list[np.ndarray] = []

    def add(self, values: list[Any] | None, n: int) -> None:
        """Codes of ``n`` rows' ``values`` (None: no row carries the field)."""
        if self.vocabulary is None:
            return
        if values is None:
            self.batches.append(np.full((n, 1), -1, dtype=np.int32))
            return
        rows = [
            [v] if isinstance(v, str) else [s for s in v or [] if isinstance(s, str)]
            for v in values
        ]
        codes = np.full((len(rows), max(1, max(map(len, rows), default=1))), -1, dtype=np.int32)
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                codes[i, j] = self.vocabulary.setdefault(v, len(self.vocabulary))
        self.batches.append(codes)
        if len(self.vocabulary) > MAX_VOCABULARY:
            self.vocabulary, self.batches = None, []

    def codes(self) -> np.ndarray:
        width = max(b.shape[1] for b in self.batches)
        out = np.full((sum(len(b) for b in self.batches), width), -1, dtype=np.int32)
        i = 0
        for b in self.batches:
            out[i : i + len(b), : b.shape[1]] = b
            i += len(b)
        return out


Batch = list[tuple[str, dict[str, list[float]], dict[str, Any]]]


def _uuid_bytes(ids: list[str]) -> np.ndarray:
    """(n, 16) bytes of canonical UUID strings, in one conversion (else one by one)."""
    try:
        raw = bytes.fromhex("".join(ids).replace("-", ""))
    except ValueError:
        raw = b""
    if len(raw) != 16 * len(ids) or any(len(i) != 36 for i in ids):
        raw = b"".join(uuid.UUID(i).bytes for i in ids)
    return np.frombuffer(raw, np.uint8).reshape(-1, 16)


def build(
    collection_dir: Path,
    batches: Iterator[Batch],
    points: int,
    vector_sizes: dict[str, int],
    fields: dict[str, models.PayloadSchemaType],
) -> bool:
    """Write the copy of the collection's ``points`` records, given in batches of (id,
    vectors, payload), atomically; False (and no copy) when no record has a ``time``."""
    folder = folder_of(collection_dir)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ids = np.zeros((points, 16), dtype=np.uint8)  # UUID bytes
    times = np.full(points, np.nan)
    vecs = {vn: np.zeros((points, size), dtype=np.int8) for vn, size in vector_sizes.items()}
    scales = {vn: np.ones(points, dtype=np.float32) for vn in vector_sizes}
    numbers = {f: np.full(points, np.nan) for f, kind in fields.items() if kind in _NUMERIC}
    keywords = {f: _Keywords() for f, kind in fields.items() if kind == _KEYWORD}
    count = 0
    for batch in batches:
        if count + len(batch) > points:  # written meanwhile: no copy this time
            count += len(batch)
            break
        rows = slice(count, count + len(batch))
        ids[rows] = _uuid_bytes([p for p, _, _ in batch])
        times[rows] = [_seconds(payload.get("time")) for _, _, payload in batch]
        # Fields no point of the batch carries (most schema fields, for most collections)
        # keep their missing value without a Python step per point.
        present = set().union(*(payload.keys() for _, _, payload in batch))
        for vn in vecs:
            if all(vn in v for _, v, _ in batch):
                block = np.asarray([v[vn] for _, v, _ in batch], dtype=np.float32)
                vecs[vn][rows], scales[vn][rows] = _quantize(block)
            else:  # some points lack this vector: not scanned
                vecs[vn] = scales[vn] = None  # type: ignore[assignment]
        vecs = {vn: v for vn, v in vecs.items() if v is not None}
        for f, col in ((f, c) for f, c in numbers.items() if f in present):
            col[rows] = [
                float(v) if isinstance(v, int | float) and not isinstance(v, bool) else np.nan
                for v in (payload.get(f) for _, _, payload in batch)
            ]
        for f, kw in keywords.items():
            kw.add([p.get(f) for _, _, p in batch] if f in present else None, len(batch))
        count += len(batch)
    if count != points or np.isnan(times).all():
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    order = np.argsort(times, kind="stable")  # NaN (no time) last
    columns: dict[str, Any] = {}
    np.save(tmp / "ids.npy", ids[order])
    np.save(tmp / "time.npy", times[order])
    for vn in vecs:
        np.save(tmp / f"vec.{vn}.npy", vecs[vn][order])
        np.save(tmp / f"scale.{vn}.npy", scales[vn][order])
    for f, col in numbers.items():
        np.save(tmp / f"col.{f}.npy", col[order])
        columns[f] = {"kind": "number"}
    for f, kw in keywords.items():
        if kw.vocabulary is not None:
            np.save(tmp / f"col.{f}.npy", kw.codes()[order])
            columns[f] = {"kind": "keyword", "vocabulary": kw.vocabulary}
    meta = {"format": FORMAT, "points": points, "vectors": list(vecs), "columns": columns}
    (tmp / "meta.json").write_text(json.dumps(meta))
    invalidate(collection_dir)
    os.replace(tmp, folder)
    return True
