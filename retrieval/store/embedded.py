"""Embedded backend: qdrant-edge-py (the Qdrant engine in-process), one shard per collection.

A collection is a directory ``<root>/<collection>/`` holding one EdgeShard (WAL, segments,
``edge_config.json``). The only translation from ``qdrant_client.models`` (the server's
vocabulary) into qdrant-edge filters lives in ``edge_filters``.

A shard directory can be open in one process at a time (the WAL is locked): a second process
gets a StoreError naming the directory and, when known, the pid holding it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import qdrant_edge as qe
from qdrant_client import models
from skysearch.retrieval.store import schema, shard_files, window_scan
from skysearch.retrieval.store.base import (
    CollectionInfo,
    Hit,
    Record,
    VectorStore,
    record_of,
    vectors_of,
)
from skysearch.retrieval.store.edge_filters import to_edge_filter

from skysearch.errors import SkySearchError, StoreError, StoreInUse, StoreNotWritable, UsageError

#: payload index type -> qdrant-edge params class (built in ``_create_index``)
_INDEX_CLASSES = {
    models.PayloadSchemaType.KEYWORD: qe.KeywordIndexParams,
    models.PayloadSchemaType.INTEGER: qe.IntegerIndexParams,
    models.PayloadSchemaType.FLOAT: qe.FloatIndexParams,
    models.PayloadSchemaType.BOOL: qe.BoolIndexParams,
    models.PayloadSchemaType.DATETIME: qe.DatetimeIndexParams,
    models.PayloadSchemaType.UUID: qe.UuidIndexParams,
    models.PayloadSchemaType.GEO: qe.GeoIndexParams,
}
OWNER_FILE = ".skysearch-owner"
#: how the engine's open errors name a store this process cannot write (Rust io::Error text)
_NOT_WRITABLE = {
    "(os error 30)": "the file system is read-only",
    "(os error 13)": "no permission to open its files (another user's workspace?)",
    "(os error 1)": "opening its files is not permitted (files made immutable?)",
}
#: argv: shard directory, "1"/"0" optimize, "1"/"0" build the window-scan copy
_CHILD = (
    "import sys, qdrant_edge as qe; s = qe.EdgeShard.load(sys.argv[1])\n"
    "if sys.argv[2] == '1': s.optimize()\n"
    "if sys.argv[3] == '1':\n"
    "    from pathlib import Path; from skysearch.retrieval.store import window_scan\n"
    "    window_scan.build_from_shard(s, Path(sys.argv[1]))\n"
    "s.close()"
)


@dataclass(frozen=True)
class EdgeIndexParams:
    """HNSW / optimizer settings of new shards (KB values are KB of vector data)."""

    m: int = schema.HNSW_M
    ef_construct: int = schema.HNSW_EF_CONSTRUCT
    full_scan_threshold_kb: int = schema.FULL_SCAN_THRESHOLD_KB
    #: segments smaller than this stay unindexed (exact search) after optimize()
    indexing_threshold_kb: int = 10_000
    #: "int8": scalar-quantized copies of the vectors in RAM for the search, results rescored
    #: with the originals (schema.QUANTIZATION); None: float32 only
    quantization: str | None = schema.QUANTIZATION
    #: time windows holding at most this many points are scanned exactly
    #: (retrieval/store/window_scan.py); 0: every query goes to the engine
    window_scan_max_points: int = schema.WINDOW_SCAN_MAX_POINTS
    #: ... or at most this fraction of the collection (schema.WINDOW_SCAN_MAX_FRACTION)
    window_scan_max_fraction: float = schema.WINDOW_SCAN_MAX_FRACTION
    #: segment size of new shards, and a load is indexed every this many points upserted
    #: (schema.SEGMENT_POINTS: bounded RAM); 0: one segment, indexed by optimize() only
    segment_points: int = schema.SEGMENT_POINTS
    #: "cold" or "cached" (schema.STORAGE_MEMORY)
    memory: str = schema.STORAGE_MEMORY

    def __post_init__(self) -> None:
        if self.quantization not in (None, "int8"):
            raise UsageError(f"unknown quantization {self.quantization!r}; use int8 or none")
        if self.memory not in _MEMORY:
            raise UsageError(f"unknown memory tier {self.memory!r}; use {' or '.join(_MEMORY)}")


_MEMORY = {"cold": qe.Memory.Cold, "cached": qe.Memory.Cached}


def _side_memory(memory: str) -> Any:
    """Memory of the id tracker and payload indexes: mapped when "cold", else the engine's
    defaults (payloads are mapped in every tier: the engine's default)."""
    return qe.Memory.Cold if memory == "cold" else None


def _quantization(kind: str | None, memory: str) -> Any:
    if kind is None:
        return None
    if memory == "cold":
        return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, memory=qe.Memory.Cold)
    return qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True)


def _index_types(shard_info: Any) -> dict[str, str]:
    """Field -> index type of a qdrant-edge shard's info."""
    return {
        k: str(v.data_type).rsplit(".", 1)[-1].lower() for k, v in shard_info.payload_schema.items()
    }


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Linux: the optimize child gets SIGKILL if this process dies (no orphaned index build)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except OSError:
        pass


class EmbeddedStore(VectorStore):
    backend = "embedded"

    def __init__(self, root: Path, params: EdgeIndexParams | None = None) -> None:
        self.root = Path(root)
        if self.root.exists() and not self.root.is_dir():  # it read as "nothing indexed yet"
            raise StoreError(
                f"the embedded store {self.root} is not a folder: move that file away (the "
                "store is rebuilt by skysearch index frames|clips|scenes, or update)"
            )
        self.params = params or EdgeIndexParams()
        self._shards: dict[str, qe.EdgeShard] = {}
        self._vector_sizes: dict[str, dict[str, int]] = {}  # read from edge_config.json
        self._windows: dict[str, window_scan.WindowIndex | None] = {}  # loaded copies
        self._unindexed: dict[str, int] = {}  # points upserted since the last optimize()
        self._lock = threading.RLock()

    @property
    def where(self) -> str:
        return f"embedded store {self.root}"

    def _path(self, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise UsageError(f"bad collection name {name!r}")
        return self.root / name

    def _config_file(self, name: str) -> Path:
        return self._path(name) / "edge_config.json"

    def _has_data(self, name: str) -> bool:
        """The collection's folder exists and is not empty (with or without its config)."""
        path = self._path(name)
        return path.is_dir() and any(path.iterdir())

    def foreign_folders(self) -> list[Path]:
        return shard_files.foreign_folders(self.root)

    def _vectors(self, name: str) -> dict[str, int] | None:
        cached = self._vector_sizes.get(name)
        if cached is not None and name in self._shards:  # the open shard is ours alone
            return cached
        path = self._config_file(name)
        if not path.is_file():
            if not self._has_data(name):
                return None
            if not shard_files.holds_engine_files(self._path(name)):  # a user's own folder
                raise StoreError(shard_files.not_a_collection(self._path(name)))
            raise StoreError(  # creating it again fails: "path already contains ..."
                f"store collection {self._path(name)} is damaged: it has no "
                f"{path.name}; run `skysearch repair` to re-index it"
            )
        if name not in self._shards:
            self._shard(name)  # open it: also proves the directory is not held by someone else
        config = json.loads(path.read_text())
        sizes = {vn: int(v["size"]) for vn, v in config.get("vectors", {}).items()}
        self._vector_sizes[name] = sizes
        return sizes

    def _edge_config(self, vectors: dict[str, int]) -> qe.EdgeConfig:
        p = self.params
        return qe.EdgeConfig(
            vectors={
                vn: qe.EdgeVectorParams(
                    size=size, distance=qe.Distance.Cosine, memory=_MEMORY[p.memory]
                )
                for vn, size in vectors.items()
            },
            hnsw_config=qe.HnswIndexConfig(
                m=p.m,
                ef_construct=p.ef_construct,
                full_scan_threshold=p.full_scan_threshold_kb,
                memory=_MEMORY[p.memory],
            ),
            optimizers=qe.EdgeOptimizersConfig(
                indexing_threshold=p.indexing_threshold_kb,
                max_segment_size=-(-p.segment_points * sum(vectors.values()) * 4 // 1024) or None,
            ),
            quantization_config=_quantization(p.quantization, p.memory),
            id_tracker_memory=_side_memory(p.memory),
        )

    def _open_error(self, path: Path, exc: Exception) -> StoreError:
        text = str(exc)
        # the engine's WAL lock held elsewhere: "Can't init WAL: Kind(WouldBlock)" (not any
        # "lock" in the text: it names paths, and a damaged file is not a store in use)
        if "Kind(WouldBlock)" in text:
            owner = path.parent / f".{path.name}{OWNER_FILE}"
            pid = owner.read_text().strip() if owner.is_file() else "unknown"
            return StoreInUse(path, pid)
        for errno_text, reason in _NOT_WRITABLE.items():  # the engine's io::Error, as text
            if errno_text in text:
                return StoreNotWritable(path, reason)
        return StoreError(f"cannot open store directory {path}: {text}")

    def _shard(self, name: str, create_with: dict[str, int] | None = None) -> qe.EdgeShard:
        with self._lock:
            if name in self._shards:
                return self._shards[name]
            path = self._path(name)
            try:
                if create_with is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    shard = qe.EdgeShard.create(str(path), self._edge_config(create_with))
                else:
                    shard = qe.EdgeShard.load(str(path))
                    shard_files.remove_stale_builds(path)  # open here: no build is running
            except Exception as exc:  # qdrant-edge raises plain Exception
                raise self._open_error(path, exc) from None
            try:  # who holds the store, for the "in use" message: a note, not a need
                (path.parent / f".{name}{OWNER_FILE}").write_text(str(os.getpid()))
            except OSError:
                pass
            self._shards[name] = shard
            return shard

    def _before_write(self, name: str) -> None:
        """Drop the window-scan copy before the collection changes (see window_scan)."""
        with self._lock:
            self._windows.pop(name, None)
            window_scan.invalidate(self._path(name))

    def _create(self, name: str, vectors: dict[str, int]) -> None:
        self._before_write(name)
        self._shard(name, create_with=vectors)

    def _add_vector(self, name: str, vector_name: str, size: int) -> None:
        self._before_write(name)
        op = qe.UpdateOperation.create_dense_vector(vector_name, size, qe.Distance.Cosine)
        self._shard(name).update(op)
        self._vector_sizes.pop(name, None)

    def _create_index(
        self, name: str, field_name: str, kind: models.PayloadSchemaType, graph: bool
    ) -> None:
        cls = _INDEX_CLASSES.get(kind)
        if cls is None:
            raise NotImplementedError(f"embedded store: {kind} payload index is not translated")
        uses = schema.integer_index_uses(field_name) if cls is qe.IntegerIndexParams else {}
        params = cls(**uses, enable_hnsw=graph, memory=_side_memory(self.params.memory))
        op = qe.UpdateOperation.create_field_index(field_name, params)
        self._shard(name).update(op)

    def _upsert(self, name: str, points: list[tuple[str, dict[str, list[float]], dict]]) -> None:
        batch = [qe.Point(pid, vecs, payload) for pid, vecs, payload in points]
        shard = self._shard(name)
        self._before_write(name)
        try:
            shard.update(qe.UpdateOperation.upsert_points(batch))
        except Exception as exc:
            raise StoreError(f"upsert into {name!r} failed: {exc}") from None
        self._unindexed[name] = self._unindexed.get(name, 0) + len(batch)
        if 0 < self.params.segment_points <= self._unindexed[name]:  # index them: bounded RAM
            self._in_child(name, optimize=True, desc=f"index {name}", copy=False)

    @contextmanager
    def _reading(self, name: str) -> Iterator[None]:
        """An engine failure reading a collection (a damaged page or vector file) as one
        StoreError naming it: requests are checked before they reach the engine, so what
        fails there is the stored data."""
        try:
            yield
        except SkySearchError:
            raise
        except Exception as exc:  # noqa: BLE001 - qdrant-edge raises plain Exception
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise StoreError(
                f"store collection {self._path(name)} cannot be read ({first}); run "
                "`skysearch repair` to re-index it"
            ) from None

    def _stored_vectors(self, name: str, ids: list[str]) -> dict[str, dict[str, list[float]]]:
        with self._reading(name):
            records = self._shard(name).retrieve(ids, with_payload=False, with_vector=True)
        return {str(r.id): vectors_of(r) for r in records}

    def _query(self, name, vector_name, vector, limit, flt, exact, hnsw_ef) -> list[Hit]:
        if not exact and flt is not None:
            hits = self._query_window(name, vector_name, vector, limit, flt)
            if hits is not None:
                return hits
        return self._engine_query(
            name,
            vector_name,
            vector,
            limit,
            to_edge_filter(flt),
            qe.SearchParams(
                hnsw_ef=hnsw_ef,
                exact=exact,
                acorn=qe.AcornSearchParams(enable=schema.SEARCH_ACORN),
                # quantized collections: rescore an oversampled candidate list with the
                # original vectors (ignored by unquantized ones)
                quantization=qe.QuantizationSearchParams(
                    rescore=True, oversampling=schema.QUANTIZATION_OVERSAMPLING
                ),
            ),
        )

    def _engine_query(self, name, vector_name, vector, limit, edge_filter, params) -> list[Hit]:
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(vector, using=vector_name),
            filter=edge_filter,
            params=params,
            with_payload=True,
        )
        with self._reading(name):
            points = self._shard(name).query(request)
        return [Hit(str(p.id), float(p.score), dict(p.payload or {})) for p in points]

    def _query_window(self, name, vector_name, vector, limit, flt) -> list[Hit] | None:
        """A narrow time window scanned exactly, its best candidates scored by the engine (with
        the same filter, float32 vectors); None: the engine must answer the whole query."""
        p = self.params
        if (
            p.window_scan_max_points <= 0
            or limit * window_scan.OVERSAMPLE > window_scan.MAX_CANDIDATES
        ):
            return None
        index = self._window_index(name)
        if index is None:
            return None
        max_points = max(p.window_scan_max_points, int(p.window_scan_max_fraction * index.points))
        ids = index.candidates(vector_name, vector, limit, flt, max_points)
        if ids is None:
            return None
        if not ids:
            return []
        edge_filter = qe.Filter(must=[qe.HasIdCondition(point_ids=set(ids)), to_edge_filter(flt)])
        exact = qe.SearchParams(exact=True, quantization=qe.QuantizationSearchParams(ignore=True))
        hits = self._engine_query(name, vector_name, vector, limit, edge_filter, exact)
        if len(hits) < min(limit, len(ids)):  # the copy and the engine disagree: trust the engine
            return None
        return hits

    def _window_index(self, name: str) -> window_scan.WindowIndex | None:
        with self._lock:
            if name not in self._windows:
                points = self._shard(name).info().points_count
                sizes = self._vectors(name)
                self._windows[name] = window_scan.load(self._path(name), points, sizes)
            return self._windows[name]

    def refresh_search_copies(self, name: str) -> None:
        if self.params.window_scan_max_points > 0 and self._window_index(name) is None:
            self._in_child(name, optimize=False, desc=f"window-scan copy of {name}")

    def _count(self, name: str, flt: models.Filter | None) -> int:
        with self._reading(name):
            return int(
                self._shard(name).count(qe.CountRequest(exact=True, filter=to_edge_filter(flt)))
            )

    def _scroll(self, name, flt, limit, offset, with_vectors) -> tuple[list[Record], Any]:
        request = qe.ScrollRequest(
            offset=offset,
            limit=limit,
            filter=to_edge_filter(flt),
            with_payload=True,
            with_vector=with_vectors,
        )
        with self._reading(name):
            records, next_offset = self._shard(name).scroll(request)
        return [record_of(r, with_vectors) for r in records], next_offset

    def _delete(self, name: str, flt: models.Filter) -> None:
        shard = self._shard(name)
        self._before_write(name)
        shard.update(qe.UpdateOperation.delete_points_by_filter(to_edge_filter(flt)))
        shard.flush()

    def info(self, name: str) -> CollectionInfo:
        vectors = self.vector_config(name)
        i = self._shard(name).info()
        return CollectionInfo(
            name=name,
            backend=self.backend,
            points=i.points_count,
            indexed_vectors=i.indexed_vectors_count,
            segments=i.segments_count,
            disk_bytes=shard_files.disk_bytes(self._path(name)),
            vectors=vectors,
            payload_indexes=_index_types(i),
        )

    def _payload_indexes(self, name: str) -> dict[str, str]:
        """Without ``info``'s walk of the collection's files (upsert asks on every call)."""
        return _index_types(self._shard(name).info())

    def optimize(self, name: str) -> None:
        """Build HNSW + merge segments, then the window-scan copy, in a child process, with a
        progress line here.

        The engine's optimize() holds the GIL until it returns, so it runs in a child (the
        shard is closed here meanwhile): this process keeps drawing progress, Ctrl-C stops the
        child, and the engine's WAL/segments make an interrupted build safe to re-run. The
        copy is built there too, so reading every vector does not swell this process.
        """
        self._in_child(name, optimize=True, desc=f"optimize {name}")

    def _in_child(self, name: str, optimize: bool, desc: str, copy: bool = True) -> None:
        from tqdm import tqdm

        with self._lock:
            points = self._shard(name).info().points_count
            self._shards.pop(name).close()
            self._windows.pop(name, None)
            path = self._path(name)
            copy = copy and self.params.window_scan_max_points > 0
            if optimize:
                self._unindexed.pop(name, None)
            child = subprocess.Popen(
                [sys.executable, "-c", _CHILD, str(path), str(int(optimize)), str(int(copy))],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
            try:
                bar_format = "{desc}: {elapsed} {postfix}"
                with tqdm(desc=f"{desc} ({points} points)", bar_format=bar_format) as bar:
                    while child.poll() is None:
                        time.sleep(0.5)
                        size = shard_files.disk_bytes(path) / 2**20
                        bar.set_postfix_str(f"{size:.0f} MB on disk")
            except BaseException:
                child.kill()
                child.wait()
                raise
            finally:
                self._shard(name)  # reopen (also after an interruption)
            if child.returncode != 0:
                tail = (child.stderr.read() if child.stderr else "").strip().splitlines()[-1:]
                raise StoreError(f"{desc} of {path} failed: {' '.join(tail) or child.returncode}")

    def collections(self) -> list[str]:
        if not self.root.is_dir():
            return []
        # every folder holding the engine's files, also one without its config (damaged: it
        # fails to open, so doctor and repair see it); a user's own folder is not one
        return sorted(
            p.name
            for p in self.root.iterdir()
            if not p.name.startswith(".") and shard_files.holds_engine_files(p)
        )

    def drop_collection(self, name: str) -> None:
        path = self._path(name)
        with self._lock:
            self._before_write(name)
            self._vector_sizes.pop(name, None)
            self._unindexed.pop(name, None)
            shard = self._shards.pop(name, None)
            if shard is not None:
                shard.close()
            if path.is_dir():
                shutil.rmtree(path)
            with contextlib.suppress(OSError):
                (self.root / f".{name}{OWNER_FILE}").unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            for name, shard in list(self._shards.items()):
                shard.close()
                owner = self.root / f".{name}{OWNER_FILE}"
                if owner.is_file() and owner.read_text().strip() == str(os.getpid()):
                    owner.unlink()
            self._shards.clear()
            self._vector_sizes.clear()
            self._windows.clear()
