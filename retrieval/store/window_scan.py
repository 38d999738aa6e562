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
the next optimize). A copy whose point count differs from the engine's is never used, nor is
one that is not whole and consistent (a file missing, short or garbled, meta.json not what
``build`` writes): ``load`` checks every array and deletes such a copy, with one warning.
Filters it cannot evaluate (geo boxes, point ids, ...) and windows wider than
``max_points`` go to the engine.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import models

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
_NUMERIC = (models.PayloadSchemaType.INTEGER, models.PayloadSchemaType.FLOAT)
_KEYWORD = models.PayloadSchemaType.KEYWORD
log = logging.getLogger(__name__)


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


class _Damaged(Exception):
    """The copy on disk is not whole and consistent (see ``load``)."""


def _column_meta(c: Any) -> bool:
    """Whether meta.json's entry of a column is one ``build`` writes."""
    if not isinstance(c, dict) or c.get("kind") not in ("number", "keyword"):
        return False
    vocabulary = c.get("vocabulary")
    if c["kind"] == "number":
        return vocabulary is None
    return isinstance(vocabulary, dict) and all(
        isinstance(code, int) and not isinstance(code, bool) for code in vocabulary.values()
    )


def _mapped(path: Path, dtype: type, rows: int, width: int | None) -> np.ndarray:
    """``path`` memory-mapped (a plain view: cheaper slices), checked: ``rows`` values of
    ``dtype``, or ``rows`` rows of ``width`` of them (0: any positive width) when given."""
    a = np.asarray(np.load(path, mmap_mode="r"))
    if width is None:
        fits = a.shape == (rows,)
    else:
        fits = (
            a.ndim == 2 and a.shape[0] == rows and (a.shape[1] == width or width == 0 < a.shape[1])
        )
    if a.dtype != dtype or not fits:
        want = (rows,) if width is None else (rows, width or "any")
        raise _Damaged(f"{path.name} holds {a.dtype} {a.shape}, not {np.dtype(dtype)} {want}")
    return a


@dataclass
class _Column:
    kind: str  # "number" | "keyword"
    values: np.ndarray  # number: float64 (NaN = absent); keyword: int32 codes (n, width), -1 pad
    vocabulary: dict[str, int] | None = None


class WindowIndex:
    """A loaded copy (memory-mapped). ``candidates`` is None where the engine must answer."""

    def __init__(
        self, folder: Path, meta: dict[str, Any], points: int, sizes: dict[str, int] | None
    ) -> None:
        """Every file ``meta`` names, checked against the dtype and shape it implies for
        ``points`` rows and the collection's vector ``sizes`` (None: unknown, any): raises
        _Damaged, or what numpy raises on a short or garbled file."""
        vectors, columns = meta.get("vectors"), meta.get("columns")
        if not isinstance(vectors, list) or not all(isinstance(vn, str) for vn in vectors):
            raise _Damaged(f'"vectors" is not a list of names: {vectors!r:.80}')
        if sizes is not None and not set(vectors) <= set(sizes):
            raise _Damaged(f"vectors {vectors} are not all the collection's {sorted(sizes)}")
        if not isinstance(columns, dict) or not all(map(_column_meta, columns.values())):
            raise _Damaged(f'"columns" is not what build writes: {columns!r:.80}')

        def load(name: str, dtype: type, width: int | None = None) -> np.ndarray:
            return _mapped(folder / f"{name}.npy", dtype, points, width)

        self.points = points
        self.times = load("time", np.float64)
        self.ids = load("ids", np.uint8, 16)
        self.vectors = {
            vn: (
                load(f"vec.{vn}", np.int8, sizes[vn] if sizes else 0),
                load(f"scale.{vn}", np.float32),
            )
            for vn in vectors
        }
        self.columns = {
            f: _Column("number", load(f"col.{f}", np.float64))
            if c["kind"] == "number"
            else _Column("keyword", load(f"col.{f}", np.int32, 0), c["vocabulary"])
            for f, c in columns.items()
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
        if len(vector) != x8.shape[1]:  # the engine says what is wrong (the loop would overrun)
            return None
        q8, _ = _quantize(np.asarray(vector, dtype=np.float32)[None, :])
        if not mask.any():
            return []
        # imported on the first scan: numba costs ~0.4 s to import, which a one-shot command
        # that never scans a window (a text search) should not pay
        from skysearch.retrieval.store import window_kernels as kernels

        top = kernels.best(
            kernels.scores(x8, q8[0], lo, hi), scale[lo:hi], mask, OVERSAMPLE * limit
        )
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


def _vector_sizes(collection_dir: Path) -> dict[str, int] | None:
    """The collection's vector sizes (as ``build_from_shard`` reads them); None when its
    config is absent or unreadable (the engine reports that, not the copy)."""
    try:
        config = json.loads((collection_dir / "edge_config.json").read_text())
        return {vn: int(v["size"]) for vn, v in config["vectors"].items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def load(
    collection_dir: Path, points: int, sizes: dict[str, int] | None = None
) -> WindowIndex | None:
    """The collection's copy, memory-mapped, when there is one of this FORMAT and of the
    collection's ``points`` (and vector ``sizes``, when given); else None: the engine answers.
    A damaged copy is deleted, with one warning (optimize builds a new one); every array is
    checked here, so that no query meets a short file later."""
    folder = folder_of(collection_dir)
    if not folder.exists():
        return None
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if not isinstance(meta, dict):
            raise _Damaged(f"meta.json holds {type(meta).__name__}, not an object")
        if meta.get("format") != FORMAT or meta.get("points") != points:
            return None  # another version's copy, or another state's: not damaged
        return WindowIndex(folder, meta, points, sizes)
    # Broad on purpose, at this one cache boundary: whatever a damaged file makes json or numpy
    # raise (OSError, ValueError, EOFError, ...) must not fail a query the engine can answer.
    # A bug here would not hide: the tests require the copy to be used and no warning logged.
    except Exception as exc:
        log.warning(
            "window-scan copy %s is damaged (%s: %s): deleted, the engine answers time-filtered "
            "searches until `skysearch store optimize` rebuilds it",
            folder,
            type(exc).__name__,
            exc,
        )
        try:
            invalidate(collection_dir)
        except OSError:  # e.g. a read-only store: the warning comes again next time
            pass
        return None


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
