"""Server backend: qdrant-client against a Qdrant server or cluster (``QDRANT_URL``), or the
client's ``:memory:`` local mode (brute force in Python: small tests only).

Configuration (environment, or the same keys lower-case in ``skysearch.toml``):
``QDRANT_URL`` (``https://`` for TLS), ``QDRANT_API_KEY``, ``QDRANT_PREFER_GRPC=1``,
``QDRANT_SHARD_NUMBER``, ``QDRANT_REPLICATION_FACTOR`` and ``QDRANT_WRITE_CONSISTENCY_FACTOR``
(used when creating collections on a cluster: shard_number a multiple of the node count,
replication_factor 2, write_consistency_factor the replicas that confirm a write).
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from qdrant_client import QdrantClient, models
from skysearch.retrieval.store import schema
from skysearch.retrieval.store.base import (
    CollectionInfo,
    Hit,
    Record,
    VectorStore,
    record_of,
    vectors_of,
)
from skysearch.retrieval.store.factory import checked_url

from skysearch.errors import StoreError, UsageError

_T = models.PayloadSchemaType
_INDEX_PARAMS = {
    _T.KEYWORD: lambda g, f: models.KeywordIndexParams(type="keyword", enable_hnsw=g),
    _T.INTEGER: lambda g, f: models.IntegerIndexParams(
        type="integer", **schema.integer_index_uses(f), enable_hnsw=g
    ),
    _T.FLOAT: lambda g, f: models.FloatIndexParams(type="float", enable_hnsw=g),
    _T.DATETIME: lambda g, f: models.DatetimeIndexParams(type="datetime", enable_hnsw=g),
    _T.GEO: lambda g, f: models.GeoIndexParams(type="geo", enable_hnsw=g),
}
#: Qdrant's default indexing threshold (KB of vectors in a segment before it gets an HNSW graph)
DEFAULT_INDEXING_KB = 20_000
CONNECT_ATTEMPTS = 3
CONNECT_BACKOFF_S = 0.5


def _setting(settings: Any, key: str) -> Any:
    """Environment first, then ``skysearch.toml`` (settings.extra)."""
    if os.environ.get(key):
        return os.environ[key]
    return (getattr(settings, "extra", None) or {}).get(key.lower())


def _reason(exc: BaseException) -> str:
    """One line saying why a call failed (a gRPC error's str is a multi-line dump; a server's
    error answer carries its own message)."""
    code, details = getattr(exc, "code", None), getattr(exc, "details", None)
    if callable(code) and callable(details):
        return f"gRPC {getattr(code(), 'name', code())}: {details()}"
    source = getattr(exc, "source", None)  # ResponseHandlingException: the transport's error
    if isinstance(source, Exception):
        return _reason(source)
    status = getattr(exc, "status_code", None)
    if status is not None:  # UnexpectedResponse
        try:
            said = exc.structured()["status"]["error"]  # type: ignore[attr-defined]
        except (ValueError, KeyError, TypeError):
            said = getattr(exc, "reason_phrase", "")
        return f"HTTP {status}: {said}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _server_failure(exc: Exception) -> bool:
    """The server is away or failing (connection lost, timeout, a 5xx answer), as opposed to
    a request it refused or an answer the client could not read (a bug here, or a server
    version the client does not know: left to surface as one)."""
    import httpx
    from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

    if isinstance(exc, ResponseHandlingException):
        return isinstance(exc.source, httpx.TransportError)
    if isinstance(exc, UnexpectedResponse):
        return (exc.status_code or 0) >= 500
    code = getattr(exc, "code", None)
    name = getattr(code(), "name", "") if callable(code) else ""
    return name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "INTERNAL", "UNKNOWN")


class _Guarded:
    """The client, with a failing server turned into one StoreError line for every call."""

    def __init__(self, client: QdrantClient, where: str) -> None:
        self._client = client
        self._where = where

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return attr(*args, **kwargs)
            except Exception as exc:
                if not _server_failure(exc):
                    raise
                raise StoreError(
                    f"a request to the {self._where} failed ({_reason(exc)}): check the "
                    "server, then run the command again"
                ) from None

        return call


def _hits(points: list[models.ScoredPoint]) -> list[Hit]:
    return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]


class ServerStore(VectorStore):
    backend = "server"

    def __init__(
        self,
        client: QdrantClient,
        where: str,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
    ) -> None:
        self.client = _Guarded(client, where)
        self._where = where
        self.shard_number = shard_number
        self.replication_factor = replication_factor
        self.write_consistency_factor = write_consistency_factor

    @classmethod
    def in_memory(cls) -> ServerStore:
        store = cls(QdrantClient(location=":memory:"), "qdrant-client :memory:")
        store.backend = "memory"
        return store

    @classmethod
    def connect(cls, url: str, settings: Any = None) -> ServerStore:
        """Connect with bounded retries; one clear StoreError line if the server stays away."""
        api_key = getattr(settings, "qdrant_api_key", None) or os.environ.get("QDRANT_API_KEY")
        if api_key and not api_key.isascii():
            raise UsageError("QDRANT_API_KEY must be ASCII text (it travels in an HTTP header)")
        grpc = str(_setting(settings, "QDRANT_PREFER_GRPC") or "").lower() in ("1", "true", "yes")
        shards = _count(settings, "QDRANT_SHARD_NUMBER")
        replicas = _count(settings, "QDRANT_REPLICATION_FACTOR")
        consistency = _count(settings, "QDRANT_WRITE_CONSISTENCY_FACTOR")
        shown = checked_url(url)
        if api_key and shown.startswith("http://"):
            warnings.warn(
                f"the Qdrant API key goes unencrypted to {shown}: use https:// unless the "
                "network between is private",
                stacklevel=2,
            )
        with warnings.catch_warnings():  # said above, in words that name the setting
            warnings.filterwarnings("ignore", "Api key is used with an insecure connection")
            client = QdrantClient(
                url=url, api_key=api_key, prefer_grpc=grpc, timeout=30, check_compatibility=False
            )
        last: Exception | None = None
        for attempt in range(CONNECT_ATTEMPTS):
            try:
                client.get_collections()
                break
            except Exception as exc:  # connection refused, TLS, auth, timeouts...
                last = exc
                if getattr(exc, "status_code", None) == 404:  # a server answered: not Qdrant
                    client.close()
                    raise StoreError(
                        f"{shown} answered HTTP 404 for its collections list: no Qdrant API at "
                        "that URL (wrong port or path?); check QDRANT_URL"
                    ) from None
                if isinstance(exc, ValueError | AssertionError):  # a body that is not Qdrant's
                    client.close()
                    raise StoreError(
                        f"{shown} answered, but not as Qdrant (its collections list: "
                        f"{_reason(exc)}): no Qdrant API at that URL (wrong port or path?); "
                        "check QDRANT_URL"
                    ) from None
                if attempt + 1 < CONNECT_ATTEMPTS:
                    time.sleep(CONNECT_BACKOFF_S * 2**attempt)
        else:
            client.close()
            reason = _reason(last) if last is not None else "no answer"
            raise StoreError(
                f"cannot reach Qdrant at {shown} after {CONNECT_ATTEMPTS} attempts ({reason}); "
                "check QDRANT_URL / QDRANT_API_KEY, or unset QDRANT_URL to use the embedded store"
            )
        return cls(
            client,
            f"Qdrant server {shown}",
            shard_number=shards,
            replication_factor=replicas,
            write_consistency_factor=consistency,
        )

    @property
    def where(self) -> str:
        return self._where

    def _vectors(self, name: str) -> dict[str, int] | None:
        if not self.client.collection_exists(name):
            return None
        vectors = self.client.get_collection(name).config.params.vectors
        if not isinstance(vectors, dict):  # a collection made outside SkySearch: unnamed vector
            return {"": vectors.size}
        return {vn: v.size for vn, v in vectors.items()}

    def _create(self, name: str, vectors: dict[str, int]) -> None:
        self.client.create_collection(
            name,
            vectors_config={
                vn: models.VectorParams(size=size, distance=models.Distance.COSINE)
                for vn, size in vectors.items()
            },
            hnsw_config=models.HnswConfigDiff(
                m=schema.HNSW_M,
                ef_construct=schema.HNSW_EF_CONSTRUCT,
                full_scan_threshold=schema.FULL_SCAN_THRESHOLD_KB,
            ),
            quantization_config=_quantization_config(),
            shard_number=self.shard_number,
            replication_factor=self.replication_factor,
            write_consistency_factor=self.write_consistency_factor,
        )

    def _add_vector(self, name: str, vector_name: str, size: int) -> None:
        dense = models.DenseVectorConfig(size=size, distance=models.Distance.COSINE)
        config = models.DenseVectorNameConfig(dense=dense)
        self.client.create_vector_name(name, vector_name, config, wait=True)

    def _create_index(
        self, name: str, field_name: str, kind: models.PayloadSchemaType, graph: bool
    ) -> None:
        if self.backend == "memory":  # local mode ignores payload indexes (and warns)
            return
        params = _INDEX_PARAMS[kind](graph, field_name)
        self.client.create_payload_index(name, field_name, params, wait=True)

    def _upsert(self, name: str, points: list[tuple[str, dict[str, list[float]], dict]]) -> None:
        self.client.upsert(
            name,
            points=[models.PointStruct(id=pid, vector=v, payload=p) for pid, v, p in points],
            wait=True,
        )

    def _stored_vectors(self, name: str, ids: list[str]) -> dict[str, dict[str, list[float]]]:
        records = self.client.retrieve(name, ids, with_payload=False, with_vectors=True)
        return {str(r.id): vectors_of(r) for r in records}

    def _params(self, exact: bool, hnsw_ef: int) -> models.SearchParams | None:
        if self.backend == "memory":  # local mode is always exact and warns about params
            return None
        acorn = models.AcornSearchParams(enable=schema.SEARCH_ACORN)
        rescore = models.QuantizationSearchParams(
            rescore=True, oversampling=schema.QUANTIZATION_OVERSAMPLING
        )
        return models.SearchParams(hnsw_ef=hnsw_ef, exact=exact, acorn=acorn, quantization=rescore)

    def _query(self, name, vector_name, vector, limit, flt, exact, hnsw_ef) -> list[Hit]:
        result = self.client.query_points(
            name,
            query=vector,
            using=vector_name,
            query_filter=flt,
            limit=limit,
            search_params=self._params(exact, hnsw_ef),
            with_payload=True,
        )
        return _hits(result.points)

    def _query_one_per_day(self, name, vector_name, vector, k, flt, exact, hnsw_ef) -> list[Hit]:
        result = self.client.query_points_groups(
            name,
            group_by="day",
            query=vector,
            using=vector_name,
            query_filter=flt,
            limit=k,
            group_size=1,
            search_params=self._params(exact, hnsw_ef),
            with_payload=True,
        )
        # Qdrant leaves out points without the group field: points without a time (scenes)
        # are each a group of their own, as in the embedded store's grouping
        no_day = models.IsEmptyCondition(is_empty=models.PayloadField(key="day"))
        undated = self._query(
            name,
            vector_name,
            vector,
            k,
            models.Filter(must=[flt, no_day] if flt else [no_day]),
            exact,
            hnsw_ef,
        )
        hits = [_hits(g.hits)[0] for g in result.groups if g.hits] + undated
        return sorted(hits, key=lambda h: -h.score)[:k]

    def _count(self, name: str, flt: models.Filter | None) -> int:
        return self.client.count(name, count_filter=flt, exact=True).count

    def _scroll(self, name, flt, limit, offset, with_vectors) -> tuple[list[Record], Any]:
        records, next_offset = self.client.scroll(
            name,
            scroll_filter=flt,
            limit=limit,
            offset=offset,
            with_payload=True,
            with_vectors=with_vectors,
        )
        return [record_of(r, with_vectors) for r in records], next_offset

    def _delete(self, name: str, flt: models.Filter) -> None:
        self.client.delete(name, points_selector=models.FilterSelector(filter=flt), wait=True)

    def info(self, name: str) -> CollectionInfo:
        vectors = self.vector_config(name)
        c = self.client.get_collection(name)
        return CollectionInfo(
            name=name,
            backend=self.backend,
            points=c.points_count or 0,
            indexed_vectors=c.indexed_vectors_count or 0,
            segments=c.segments_count or 0,
            disk_bytes=None,
            vectors=vectors,
            payload_indexes={
                k: str(v.data_type.value) for k, v in (c.payload_schema or {}).items()
            },
        )

    def optimize(self, name: str) -> None:
        """A server indexes in the background: wait, with progress, until it is green. Index
        building left paused by a killed bulk load (threshold 0) is resumed first."""
        from tqdm import tqdm

        self.vector_config(name)
        if self.backend != "memory":
            config = self.client.get_collection(name).config.optimizer_config
            if not config.indexing_threshold:
                self.client.update_collection(
                    name, optimizers_config=_threshold(DEFAULT_INDEXING_KB)
                )
        with tqdm(desc=f"waiting for {name} to be indexed", bar_format="{desc}: {elapsed}") as bar:
            while self.client.get_collection(name).status != models.CollectionStatus.GREEN:
                time.sleep(1.0)
                bar.refresh()

    @contextmanager
    def bulk_load(self, name: str) -> Iterator[None]:
        """No vector index building while a bulk load pours points in (indexing threshold 0,
        Qdrant's advice); the collection's threshold is restored after, even on failure."""
        if self.backend == "memory":  # local mode has no optimizer
            yield
            return
        config = self.client.get_collection(name).config.optimizer_config
        before = config.indexing_threshold or DEFAULT_INDEXING_KB  # 0: a killed load's pause
        self.client.update_collection(name, optimizers_config=_threshold(0))
        try:
            yield
        finally:
            self.client.update_collection(name, optimizers_config=_threshold(before))

    def collections(self) -> list[str]:
        return sorted(c.name for c in self.client.get_collections().collections)

    def drop_collection(self, name: str) -> None:
        if self.client.collection_exists(name):
            self.client.delete_collection(name)

    def close(self) -> None:
        self.client.close()


def _threshold(kb: int) -> models.OptimizersConfigDiff:
    return models.OptimizersConfigDiff(indexing_threshold=kb)


def _quantization_config() -> models.ScalarQuantization | None:
    """The schema's vector quantization as a collection setting (None: float32 only)."""
    if schema.QUANTIZATION is None:
        return None
    return models.ScalarQuantization(
        scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, always_ram=True)
    )


def _count(settings: Any, name: str) -> int | None:
    """A cluster setting that is a whole number >= 1 (None: unset); a UsageError naming it."""
    value = _setting(settings, name)
    if value is None or value == "":
        return None
    try:
        number = int(str(value).strip())
    except ValueError:
        number = 0
    if number < 1 or isinstance(value, bool | list | dict | float):
        raise UsageError(f"{name} must be a whole number of at least 1, got {value!r}")
    return number
