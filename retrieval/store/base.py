"""The vector store interface (``VectorStore``) and the records it speaks.

- embedded (default): qdrant-edge-py, the Qdrant engine in-process, one shard directory per
  collection under ``workspace.store_dir`` (``embedded.EmbeddedStore``);
- server / cluster: qdrant-client against ``QDRANT_URL`` (``server.ServerStore``);
- ``:memory:``: qdrant-client local mode, for small tests only.

``factory.open_store(settings)`` picks the backend. The base class holds everything that is the same
for every backend (validation, batching, progress, one-hit-per-day grouping by over-fetch);
a backend implements the small ``_primitives``.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import models
from skysearch.retrieval.store import schema
from skysearch.retrieval.store.filters import SearchFilters
from skysearch.retrieval.store.schema import (
    DEFAULT_VECTOR,
    PAYLOAD_INDEXES,
    SEARCH_HNSW_EF,
)

from skysearch.errors import NotFoundError, UsageError

VectorLike = Sequence[float] | np.ndarray
FilterLike = SearchFilters | models.Filter | None
#: Point ids per delete request (a server caps a request's size).
DELETE_BATCH = 1000


@dataclass(frozen=True)
class Hit:
    """One search result: point id (UUID string), similarity score (higher = closer), payload."""

    id: str
    score: float
    payload: dict[str, Any]


@dataclass
class Point:
    """A point to upsert. ``vector``: one vector (stored under the upsert's ``vector_name``) or
    a mapping vector name -> vector. ``id`` must be a UUID (use ``skysearch.ingest.ids``)."""

    id: str | uuid.UUID
    vector: VectorLike | Mapping[str, VectorLike]
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Record:
    """A stored point, as scrolled: vectors are empty unless asked for."""

    id: str
    vectors: dict[str, list[float]]
    payload: dict[str, Any]


@dataclass(frozen=True)
class CollectionInfo:
    name: str
    backend: str
    points: int
    indexed_vectors: int
    segments: int
    disk_bytes: int | None  # None where the backend does not say (server)
    vectors: dict[str, int]  # vector name -> dimension
    payload_indexes: dict[str, str]  # field -> index type


def vectors_of(point: Any) -> dict[str, list[float]]:
    """Named vectors of a point returned by either client (qdrant-edge or qdrant-client)."""
    return {k: list(v) for k, v in (point.vector or {}).items()}


def record_of(point: Any, with_vectors: bool) -> Record:
    return Record(
        str(point.id), vectors_of(point) if with_vectors else {}, dict(point.payload or {})
    )


def point_id(value: str | uuid.UUID) -> str:
    """Canonical UUID string of a point id, or a UsageError naming the bad id."""
    try:
        return str(value if isinstance(value, uuid.UUID) else uuid.UUID(str(value)))
    except ValueError:
        raise UsageError(
            f"point id {value!r} is not a UUID: build ids with skysearch.ingest.ids (UUIDv5)"
        ) from None


def as_filter(filters: FilterLike, collection: str | None = None) -> models.Filter | None:
    if isinstance(filters, SearchFilters):
        return filters.to_qdrant(collection)
    return filters


def day_of(payload: Mapping[str, Any]) -> str:
    """UTC day of a point (``day`` payload, else the date part of ``time``)."""
    return str(payload.get("day") or str(payload.get("time", ""))[:10])


def _check_filters_apply(name: str, filters: SearchFilters) -> None:
    """A filter on a field that a SkySearch collection's points never carry would match
    nothing, silently (labels on a clip search): refused, naming where it applies."""
    if name not in schema.COLLECTIONS:
        return
    wrong = {
        f: schema.FIELD_COLLECTIONS[key]
        for f, key in filters.payload_fields().items()
        if name not in schema.FIELD_COLLECTIONS[key]
    }
    if wrong:
        parts = [f"{{{f}}} filters {' and '.join(c)} only" for f, c in wrong.items()]
        raise UsageError(f"{'; '.join(parts)}: not a filter of a {name} search", params=list(wrong))


class VectorStore(ABC):
    """Collections of named vectors with payloads, filtered top-k search. Same for every backend."""

    backend: str = "?"

    # ---- backend primitives -------------------------------------------------------------
    @abstractmethod
    def _vectors(self, name: str) -> dict[str, int] | None:
        """Vector name -> dimension of a collection, None if it does not exist."""

    @abstractmethod
    def _create(self, name: str, vectors: dict[str, int]) -> None: ...

    @abstractmethod
    def _add_vector(self, name: str, vector_name: str, size: int) -> None: ...

    @abstractmethod
    def _create_index(
        self, name: str, field_name: str, kind: models.PayloadSchemaType, graph: bool
    ) -> None:
        """Payload index; ``graph``: also payload-aware HNSW links for this field."""

    @abstractmethod
    def _upsert(self, name: str, points: list[tuple[str, dict[str, list[float]], dict]]) -> None:
        """Write one batch and return only once it is durable (wait=True)."""

    @abstractmethod
    def _stored_vectors(self, name: str, ids: list[str]) -> dict[str, dict[str, list[float]]]:
        """Stored vectors of those of ``ids`` that exist: id -> vector name -> vector."""

    @abstractmethod
    def _query(
        self,
        name: str,
        vector_name: str,
        vector: list[float],
        limit: int,
        flt: models.Filter | None,
        exact: bool,
        hnsw_ef: int,
    ) -> list[Hit]: ...

    def _query_one_per_day(
        self,
        name: str,
        vector_name: str,
        vector: list[float],
        k: int,
        flt: models.Filter | None,
        exact: bool,
        hnsw_ef: int,
    ) -> list[Hit]:
        """Best hit per UTC day, for engines without native groups (the embedded one); a
        point without a time (a scene) is a group of its own.

        Rounds of top-(4k) queries, each excluding the days already found (``must_not day``
        in the indexed ``day`` keyword). Every day that appears in a round's sorted list is the
        next best remaining day, in order, with its best point, so each round adds at least one
        correct day and the result equals grouping the full ranking (given exact search).
        Unlike plain over-fetching (4k, 16k, ... hits until k distinct days appear), every
        round stays 4k hits even when one weather regime fills many days; at 5k points both
        took ~30 ms under load (bench/store.py, one_per_day set).
        """
        found: dict[str, Hit] = {}  # day -> its best hit
        undated: dict[str, Hit] = {}  # id -> hit: a point without a time is its own group
        limit = 4 * k
        while len(found) + len(undated) < k:
            must_not: list[models.Condition] = []
            if found:
                days = models.MatchAny(any=list(found))
                must_not.append(models.FieldCondition(key="day", match=days))
            if undated:
                must_not.append(models.HasIdCondition(has_id=list(undated)))
            round_filter = models.Filter(must=[flt] if flt else None, must_not=must_not or None)
            hits = self._query(name, vector_name, vector, limit, round_filter, exact, hnsw_ef)
            before = len(found) + len(undated)
            for hit in hits:  # sorted best first
                day = day_of(hit.payload)
                if day:
                    found.setdefault(day, hit)
                else:
                    undated[hit.id] = hit
            if len(found) + len(undated) == before or len(hits) < limit:
                break
        return sorted([*found.values(), *undated.values()], key=lambda h: -h.score)[:k]

    @abstractmethod
    def _count(self, name: str, flt: models.Filter | None) -> int: ...

    @abstractmethod
    def _scroll(
        self, name: str, flt: models.Filter | None, limit: int, offset: Any, with_vectors: bool
    ) -> tuple[list[Record], Any]: ...

    @abstractmethod
    def _delete(self, name: str, flt: models.Filter) -> None: ...

    @abstractmethod
    def info(self, name: str) -> CollectionInfo:
        """Points, indexed vectors, segments, disk size, vectors and payload indexes."""

    def _payload_indexes(self, name: str) -> dict[str, str]:
        """Field -> index type (a backend overrides it where ``info`` costs more)."""
        return self.info(name).payload_indexes

    @abstractmethod
    def optimize(self, name: str) -> None:
        """Build the HNSW index and merge segments, blocking. Run after bulk loads only."""

    @abstractmethod
    def collections(self) -> list[str]: ...

    def foreign_folders(self) -> list[Path]:
        """Folders beside the collections that are not collections (embedded store only)."""
        return []

    def refresh_search_copies(self, name: str) -> None:
        """Rebuild what ``optimize()`` derives for fast search besides the index, when a write
        dropped it (the embedded store's window-scan copy); nothing on other backends."""
        return None

    @contextmanager
    def bulk_load(self, name: str) -> Iterator[None]:
        """Around a bulk load into ``name``: a backend that can pause index building does
        (a Qdrant server); the embedded engine builds its graph in ``optimize()`` anyway."""
        yield

    @abstractmethod
    def drop_collection(self, name: str) -> None:
        """Delete a collection and all its points (no error if it does not exist)."""

    @abstractmethod
    def close(self) -> None: ...

    @property
    @abstractmethod
    def where(self) -> str:
        """Human description of the store's location, for messages."""

    # ---- public API (shared) ------------------------------------------------------------
    def __enter__(self) -> VectorStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def vector_config(self, name: str) -> dict[str, int]:
        """Vector name -> dimension; NotFoundError for an unknown collection."""
        vectors = self._vectors(name)
        if vectors is None:
            raise NotFoundError(
                f"collection {name!r} does not exist in {self.where}; "
                "index something into it first (skysearch index ...)"
            )
        return vectors

    def ensure_collection(
        self, name: str, vector_size: int, vector_name: str | None = None
    ) -> None:
        """Create the collection (cosine distance) or add a named vector. Idempotent. A
        different size for an existing vector name is a UsageError.

        Payload indexes follow the points: :meth:`upsert` creates the schema's index of a field
        the first time a point carrying it is written (also in a collection made by an older
        version), and this call makes again those the first points' fields lack. An index of
        a field no point carries still costs build time for every point (the engine at 100k
        points: optimize 23.5 s with the 17 indexes of absent fields, 14.0 s without;
        bench/RESULTS.md).
        """
        vname = vector_name or DEFAULT_VECTOR
        if vector_size < 1:
            raise UsageError(f"vector size must be positive, got {vector_size}")
        vectors = self._vectors(name)
        if vectors is None:
            self._create(name, {vname: int(vector_size)})
            return
        if vectors.get(vname, vector_size) != vector_size:
            raise UsageError(
                f"collection {name!r} vector {vname!r} has dimension {vectors[vname]}, "
                f"not {vector_size}: use a new vector name for a different encoder"
            )
        if vname not in vectors:
            self._add_vector(name, vname, int(vector_size))
        self._restore_indexes(name)

    def _restore_indexes(self, name: str, sample: int = 64) -> None:
        """The indexes of the fields the first ``sample`` points carry, where the collection
        lacks them: one whose segments were lost comes back from its write-ahead log without
        its payload indexes, and filters would run on without them (an index run that writes
        nothing new would not make them)."""
        first = []
        for record in self.scroll(name, batch_size=sample):
            first.append(record.payload)
            if len(first) == sample:
                break
        self._index_fields(name, first, set(self._payload_indexes(name)))

    def _index_fields(
        self, name: str, payloads: Iterable[Mapping[str, Any]], have: set[str]
    ) -> None:
        """Create the schema's index of every field in ``payloads`` not in ``have`` (updated)."""
        carried = {key for payload in payloads for key in payload}
        for field_name in sorted(carried & PAYLOAD_INDEXES.keys() - have):
            graph = field_name in schema.PAYLOAD_GRAPH_FIELDS
            self._create_index(name, field_name, PAYLOAD_INDEXES[field_name], graph)
            have.add(field_name)

    def _check_vector(
        self, name: str, vectors: dict[str, int], vname: str, vec: Any
    ) -> list[float]:
        if vname not in vectors:
            raise UsageError(
                f"collection {name!r} has no vector {vname!r} (it has {sorted(vectors)}); "
                "call ensure_collection with that vector name first"
            )
        arr = np.asarray(vec, dtype=np.float32).reshape(-1)
        if arr.shape[0] != vectors[vname]:
            raise UsageError(
                f"vector {vname!r} for collection {name!r} has dimension {arr.shape[0]}, "
                f"expected {vectors[vname]}"
            )
        if not np.isfinite(arr).all():
            raise UsageError(f"vector {vname!r} for collection {name!r} contains NaN or inf")
        return arr.tolist()

    def upsert(
        self,
        name: str,
        points: Iterable[Point],
        vector_name: str | None = None,
        batch_size: int = 256,
        progress: bool = False,
    ) -> int:
        """Idempotent batched upsert (wait=True per batch); returns the number of points written.

        A point replaces the stored point with the same id (payload included), except that in a
        collection with several named vectors (frames: one per encoder) the stored vectors under
        names the new point does not carry are kept, so indexing a second encoder does not erase
        the first one's vectors. A payload field of the schema gets its index before the first
        batch that carries it is written.
        """
        vectors = self.vector_config(name)
        indexed = set(self._payload_indexes(name))
        default = vector_name or DEFAULT_VECTOR
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(desc=f"upsert {name}", unit="pt")
        batch: list[tuple[str, dict[str, list[float]], dict]] = []
        written = 0

        def flush() -> None:
            nonlocal written
            if len(vectors) > 1 and any(len(v) < len(vectors) for _, v, _ in batch):
                stored = self._stored_vectors(name, [pid for pid, _, _ in batch])
                for pid, vecs, _ in batch:
                    for vn, old in stored.get(pid, {}).items():
                        vecs.setdefault(vn, old)
            self._index_fields(name, (payload for _, _, payload in batch), indexed)
            self._upsert(name, batch)
            written += len(batch)
            if bar is not None:
                bar.update(len(batch))
            batch.clear()

        try:
            for p in points:
                raw = p.vector if isinstance(p.vector, Mapping) else {default: p.vector}
                vecs = {vn: self._check_vector(name, vectors, vn, v) for vn, v in raw.items()}
                batch.append((point_id(p.id), vecs, dict(p.payload)))
                if len(batch) >= batch_size:
                    flush()
            if batch:
                flush()
        finally:
            if bar is not None:
                bar.close()
        return written

    def search(
        self,
        name: str,
        vector: VectorLike,
        k: int | None = None,
        filters: FilterLike = None,
        vector_name: str | None = None,
        exact: bool = False,
        hnsw_ef: int | None = None,
    ) -> list[Hit]:
        """Top-k by similarity, best first, one per day when the filters say ``one_per_day``.
        ``k`` defaults to the filters' own. ``exact=True`` skips the graph (brute force inside
        the engine). ``hnsw_ef`` defaults to the schema's, lower for unfiltered queries."""
        vectors = self.vector_config(name)
        vname = vector_name or DEFAULT_VECTOR
        vec = self._check_vector(name, vectors, vname, vector)
        sf = filters if isinstance(filters, SearchFilters) else None
        if sf is not None:
            _check_filters_apply(name, sf)
        k = k if k is not None else (sf.k if sf else 10)
        if k < 1:
            raise UsageError(f"k must be positive, got {k}")
        group = bool(sf and sf.one_per_day)
        flt = as_filter(filters, name)
        # The engine over-estimates how many points a small geo box holds (geohash tiles), so
        # it walks the graph where the subset is too sparse to reach: recall@10 0.83 for a box
        # holding 24 of 3000 points (tests/test_store.py). Box filters are scored exactly.
        exact = exact or bool(sf and sf.bbox is not None)
        if hnsw_ef is None:
            hnsw_ef = SEARCH_HNSW_EF
        if group:
            return self._query_one_per_day(name, vname, vec, k, flt, exact, hnsw_ef)
        return self._query(name, vname, vec, k, flt, exact, max(hnsw_ef, k))

    def count(self, name: str, filters: FilterLike = None) -> int:
        """Exact number of points matching the filters."""
        self.vector_config(name)
        return self._count(name, as_filter(filters, name))

    def scroll(
        self,
        name: str,
        filters: FilterLike = None,
        with_vectors: bool = False,
        batch_size: int = 512,
    ) -> Iterator[Record]:
        """Every point matching the filters, in id order, one page at a time."""
        self.vector_config(name)
        flt = as_filter(filters, name)
        offset: Any = None
        while True:
            records, offset = self._scroll(name, flt, batch_size, offset, with_vectors)
            yield from records
            if offset is None or not records:
                return

    def delete(self, name: str, filters: FilterLike) -> int:
        """Delete the points matching a (non-empty) filter, e.g. to re-index a year; returns
        how many were deleted."""
        flt = as_filter(filters, name)
        if flt is None:
            raise UsageError("delete needs a filter (refusing to delete a whole collection)")
        n = self.count(name, flt)
        if n:
            self._delete(name, flt)
        return n

    def delete_ids(self, name: str, ids: Sequence[str]) -> None:
        """Delete the points with these ids, ``DELETE_BATCH`` ids a request (a server caps a
        request's size)."""
        self.vector_config(name)
        for start in range(0, len(ids), DELETE_BATCH):
            batch = list(ids[start : start + DELETE_BATCH])
            self._delete(name, models.Filter(must=[models.HasIdCondition(has_id=batch)]))
