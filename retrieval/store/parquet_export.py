"""Export collections as Parquet that DuckDB, polars and pandas read directly.

Layout: ``<folder>/<collection>/<vector name>.parquet``, one file per named vector (encoders
differ in dimension), each row a point holding that vector: ``id``, ``vector``
(``fixed_size_list<float32>[dim]``), one typed column per schema payload field (``time`` a UTC
timestamp, ``channel`` always a list, ``location`` a ``{lon, lat}`` struct...), and ``payload``,
the whole payload as JSON text (fields outside the schema included). Files are written in
batches (memory stays bounded) and appear whole (written aside, then renamed).

    SELECT time, event, pressure_hpa FROM 'out/clips/clip-2026....parquet' ORDER BY time
"""

from __future__ import annotations

import json
from contextlib import ExitStack
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from qdrant_client import models
from skysearch.retrieval.store.base import VectorStore
from skysearch.retrieval.store.schema import PAYLOAD_FIELDS
from skysearch.retrieval.store.transfer import export_names

from skysearch.atomic import atomic_path
from skysearch.errors import UsageError
from skysearch.timeutil import parse_time

BATCH = 4096
_T = models.PayloadSchemaType
_TYPES: dict[Any, pa.DataType] = {
    _T.KEYWORD: pa.string(),
    _T.INTEGER: pa.int64(),
    _T.FLOAT: pa.float64(),
    _T.DATETIME: pa.timestamp("us", tz="UTC"),
    _T.GEO: pa.struct([("lon", pa.float64()), ("lat", pa.float64())]),
}
_LISTS = {"channel": pa.list_(pa.string()), "bbox": pa.list_(pa.float64())}
_FLOATS = {"wind_kt", "lat", "lon"}  # stored, not indexed: the schema gives no index type


def _field_type(name: str, index: Any) -> pa.DataType:
    return _LISTS.get(name) or _TYPES.get(index, pa.float64() if name in _FLOATS else pa.string())


PAYLOAD_COLUMNS: dict[str, pa.DataType] = {
    f.name: _field_type(f.name, f.index) for f in PAYLOAD_FIELDS
}


def _value(name: str, value: Any) -> Any:
    """A payload value as its column's type expects it (None when it does not fit)."""
    if value is None:
        return None
    if name == "channel":
        return [value] if isinstance(value, str) else list(value)
    kind = PAYLOAD_COLUMNS[name]
    try:
        if pa.types.is_timestamp(kind):
            return parse_time(value) if not isinstance(value, datetime) else value
        if pa.types.is_integer(kind):
            return int(value)
        if pa.types.is_floating(kind):
            return float(value)
    except (TypeError, ValueError, UsageError):
        return None
    return value


def _schema(dim: int) -> pa.Schema:
    columns = [("id", pa.string()), ("vector", pa.list_(pa.float32(), dim))]
    columns += list(PAYLOAD_COLUMNS.items())
    return pa.schema([*columns, ("payload", pa.string())])


def _batch(rows: list[tuple[str, list[float], dict]], schema: pa.Schema) -> pa.RecordBatch:
    data: dict[str, list[Any]] = {
        "id": [r[0] for r in rows],
        "vector": [r[1] for r in rows],
        "payload": [json.dumps(r[2], default=str) for r in rows],
    }
    for name in PAYLOAD_COLUMNS:
        data[name] = [_value(name, r[2].get(name)) for r in rows]
    return pa.RecordBatch.from_pydict(data, schema=schema)


def export_parquet(
    store: VectorStore, folder: Path, collections: list[str] | None = None, progress: bool = True
) -> dict[str, int]:
    """Write the collections (default: all) under ``folder``; returns points per collection."""
    from tqdm import tqdm

    names = export_names(store, collections)
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"cannot write Parquet into {folder}: it is a file, not a folder")
    if not folder.parent.is_dir():
        raise UsageError(f"cannot write {folder}: {folder.parent} is not an existing folder")
    counts: dict[str, int] = {}
    for name in names:
        dims = store.vector_config(name)
        target = folder / name
        target.mkdir(parents=True, exist_ok=True)
        schemas = {vn: _schema(dim) for vn, dim in dims.items()}
        pending: dict[str, list[tuple[str, list[float], dict]]] = {vn: [] for vn in dims}
        total = store.info(name).points
        with ExitStack() as stack:
            writers = {
                vn: pq.ParquetWriter(
                    stack.enter_context(atomic_path(target / f"{vn}.parquet")),
                    schemas[vn],
                    compression="zstd",
                )
                for vn in dims
            }
            for writer in writers.values():
                stack.callback(writer.close)
            bar = stack.enter_context(
                tqdm(total=total, desc=f"export {name}", unit="pt", disable=not progress)
            )
            n = 0
            for record in store.scroll(name, with_vectors=True):
                for vn, vector in record.vectors.items():
                    pending[vn].append((record.id, list(vector), record.payload))
                    if len(pending[vn]) >= BATCH:
                        writers[vn].write_batch(_batch(pending[vn], schemas[vn]))
                        pending[vn].clear()
                n += 1
                bar.update(1)
            for vn, rows in pending.items():
                if rows:
                    writers[vn].write_batch(_batch(rows, schemas[vn]))
        counts[name] = n
    return counts
