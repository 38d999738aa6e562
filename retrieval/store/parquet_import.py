"""Load Parquet point files into a store: the single-writer end of a distributed index run.

``path``: one file, or a folder searched recursively for ``*.parquet`` (a ``store export
--format parquet`` folder, or the part files an index run's workers wrote; hidden temporaries
of a killed writer are ignored). Every file's header (``parquet_format``: collection, vector
name, dimension) is checked before anything is written: a file that is not a point file, or
a dimension that differs from an existing collection's, or a SkySearch model's vectors in
another kind's collection (frame-model vectors in ``scenes``) stops the load with nothing
written. Files of collections the schema does not know (an export of a Qdrant server that
other applications share) are left out with a warning naming them.
Then the files stream in record batches (memory bounded by one batch) into their
collections, each paused for a bulk load. Point ids are in the files, so loading again, or
loading everything after a load that was killed half-way, ends with the same points.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from skysearch.retrieval.store.base import Point, VectorStore
from skysearch.retrieval.store.parquet_format import Header, read_header
from skysearch.retrieval.store.schema import CLIPS, COLLECTIONS, FRAMES, SCENES

from skysearch.errors import UsageError

COLUMNS = ["id", "vector", "payload"]
#: The kind of model whose vectors each collection holds. A vector named like a SkySearch
#: model id (``<kind>-<time>-<hex>``, ``encoders.registry.new_model_id``) must be of it; other
#: names (another encoder, ``untuned``) are not checked.
VECTOR_KINDS = {FRAMES: "frame", CLIPS: "clip", SCENES: "text-image"}
_MODEL_ID = re.compile(r"^([a-z][a-z-]*?)-\d{8}T\d{6}Z-[0-9a-f]{6}$")


def point_files(path: Path) -> list[Path]:
    """The point files at ``path`` (a file, or ``*.parquet`` under a folder, sorted)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UsageError(f"{path} does not exist")
    files = sorted(p for p in path.rglob("*.parquet") if p.is_file() and not p.name.startswith("."))
    if not files:
        raise UsageError(f"{path} holds no .parquet file")
    return files


def _skysearch_files(headers: list[Header], files: list[Path]) -> tuple[list[Header], list[Path]]:
    """The files of SkySearch's collections (the others left out, said in a warning); a
    UsageError, before anything is written, when none is, or for a SkySearch model's vectors
    in a collection of another kind."""
    foreign = sorted({h.collection for h in headers if h.collection not in COLLECTIONS})
    names, ours = ", ".join(map(repr, foreign)), ", ".join(COLLECTIONS)
    kept = [(h, f) for h, f in zip(headers, files, strict=True) if h.collection in COLLECTIONS]
    if not kept:
        where = files[0] if len(files) == 1 else "the files"
        raise UsageError(f"{where}: collection {names} is not one of SkySearch's ({ours})")
    if foreign:
        warnings.warn(
            f"left out the files of collection(s) {names}: not SkySearch's ({ours})",
            stacklevel=2,
        )
    for header, path in kept:
        model = _MODEL_ID.match(header.vector_name)
        wanted = VECTOR_KINDS[header.collection]
        if model and model.group(1) != wanted:
            raise UsageError(
                f"{path}: vector {header.vector_name!r} is a {model.group(1)} model's, but the "
                f"{header.collection} collection holds {wanted} model vectors"
            )
    return [h for h, _ in kept], [f for _, f in kept]


def _check_dimensions(store: VectorStore, headers: list[Header], files: list[Path]) -> None:
    """A UsageError, before anything is written, when a file's vector dimension differs from
    the store's or another file's for the same collection and vector name."""
    existing = set(store.collections())
    seen: dict[tuple[str, str], tuple[int, str]] = {}
    for header, path in zip(headers, files, strict=True):
        key = (header.collection, header.vector_name)
        if key not in seen and header.collection in existing:
            have = store.vector_config(header.collection).get(header.vector_name)
            if have is not None:
                seen[key] = (have, store.where)
        dim, where = seen.setdefault(key, (header.dim, str(path)))
        if dim != header.dim:
            raise UsageError(
                f"{path}: vector {header.vector_name!r} of collection {header.collection!r} "
                f"has dimension {header.dim}, but {where} has {dim}"
            )


def _batches(path: Path, batch_size: int) -> Iterator[pa.RecordBatch]:
    try:
        yield from pq.ParquetFile(path).iter_batches(batch_size=batch_size, columns=COLUMNS)
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"{path}: cannot read it ({exc})") from None


def _points(batch: pa.RecordBatch, header: Header, where: str) -> list[Point]:
    ids, vectors, payloads = (batch.column(name) for name in COLUMNS)
    if ids.null_count or vectors.null_count or payloads.null_count:
        raise UsageError(f"{where}: a row has no id, vector or payload")
    matrix = vectors.flatten().to_numpy(zero_copy_only=False).reshape(-1, header.dim)
    try:
        loaded = [json.loads(text) for text in payloads.to_pylist()]
    except json.JSONDecodeError as exc:
        raise UsageError(f"{where}: a payload is not JSON ({exc})") from None
    if not all(isinstance(p, dict) for p in loaded):
        raise UsageError(f"{where}: a payload is not a JSON object")
    name = header.vector_name
    return [
        Point(pid, {name: np.asarray(vec, np.float32)}, payload)
        for pid, vec, payload in zip(ids.to_pylist(), matrix, loaded, strict=True)
    ]


def import_parquet(
    store: VectorStore,
    path: Path,
    progress: bool = True,
    batch_size: int = 512,
    vector_names: set[str] | None = None,
) -> dict[str, int]:
    """Load the point files at ``path`` into ``store``; returns points written per collection
    (a point held in two files, one per vector name, counts twice). The vector names the
    files hold are added to ``vector_names`` when given."""
    from tqdm import tqdm

    files = point_files(path)
    headers = [read_header(f) for f in files]
    headers, files = _skysearch_files(headers, files)
    _check_dimensions(store, headers, files)
    counts: dict[str, int] = {}
    with ExitStack() as stack:
        for header in headers:
            store.ensure_collection(header.collection, header.dim, header.vector_name)
            if vector_names is not None:
                vector_names.add(header.vector_name)
            if header.collection not in counts:
                stack.enter_context(store.bulk_load(header.collection))
                counts[header.collection] = 0
        total = sum(h.rows for h in headers)
        bar = stack.enter_context(
            tqdm(total=total, desc="import parquet", unit="pt", disable=not progress)
        )
        for file, header in zip(files, headers, strict=True):
            for batch in _batches(file, batch_size):
                points = _points(batch, header, str(file))
                counts[header.collection] += store.upsert(
                    header.collection, points, batch_size=batch_size
                )
                bar.update(len(points))
    return counts
