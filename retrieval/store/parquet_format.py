"""The Parquet point format: one file (or part file) per collection and named vector.

Each row is a point holding that vector: ``id``, ``vector`` (``fixed_size_list<float32>[dim]``),
one typed column per schema payload field (``time`` a UTC timestamp, ``channel`` always a list,
``location`` a ``{lon, lat}`` struct...), and ``payload``, the whole payload as JSON text (fields
outside the schema included; an import reads this one back). The schema's metadata
(``skysearch`` key) names the collection, the vector name, its dimension and distance, so a
file loads into an empty store with no other input. Written by ``store export --format
parquet`` (``parquet_export``) and by index runs' workers (part files); read back by
``parquet_import``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from qdrant_client import models
from skysearch.retrieval.store.schema import PAYLOAD_FIELDS

from skysearch.atomic import atomic_path
from skysearch.errors import UsageError
from skysearch.timeutil import parse_time

FORMAT = "skysearch-parquet/1"
METADATA_KEY = b"skysearch"
DISTANCE = "Cosine"  # every collection the store creates
BATCH = 4096  # rows per record batch written
_T = models.PayloadSchemaType
_TYPES: dict[Any, pa.DataType] = {
    _T.KEYWORD: pa.string(),
    _T.INTEGER: pa.int64(),
    _T.FLOAT: pa.float64(),
    _T.DATETIME: pa.timestamp("us", tz="UTC"),
    _T.GEO: pa.struct([("lon", pa.float64()), ("lat", pa.float64())]),
}
_LISTS = {
    "channel": pa.list_(pa.string()),
    "bbox": pa.list_(pa.float64()),
    "content": pa.map_(pa.string(), pa.string()),
}

#: A point as written: id, vector, payload.
Row = tuple[str, Sequence[float], dict[str, Any]]


PAYLOAD_COLUMNS: dict[str, pa.DataType] = {
    f.name: _LISTS.get(f.name) or _TYPES[f.kind] for f in PAYLOAD_FIELDS
}


@dataclass(frozen=True)
class Header:
    """What a point file holds, from its schema's metadata and footer."""

    collection: str
    vector_name: str
    dim: int
    rows: int


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


def point_schema(collection: str, vector_name: str, dim: int) -> pa.Schema:
    columns = [("id", pa.string()), ("vector", pa.list_(pa.float32(), dim))]
    columns += list(PAYLOAD_COLUMNS.items())
    meta = {"format": FORMAT, "collection": collection, "vector_name": vector_name}
    meta |= {"dim": dim, "distance": DISTANCE}
    return pa.schema(
        [*columns, ("payload", pa.string())], metadata={METADATA_KEY: json.dumps(meta)}
    )


def point_batch(rows: list[Row], schema: pa.Schema) -> pa.RecordBatch:
    data: dict[str, list[Any]] = {
        "id": [r[0] for r in rows],
        "vector": [list(r[1]) for r in rows],
        "payload": [json.dumps(r[2], default=str) for r in rows],
    }
    for name in PAYLOAD_COLUMNS:
        data[name] = [_value(name, r[2].get(name)) for r in rows]
    return pa.RecordBatch.from_pydict(data, schema=schema)


def write_points(
    path: Path, collection: str, vector_name: str, dim: int, rows: Iterable[Row]
) -> int:
    """Write ``rows`` as one point file at ``path``, whole or not at all (written aside, then
    renamed: a killed writer leaves only a hidden temporary); returns the rows written."""
    schema = point_schema(collection, vector_name, dim)
    n = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        pending: list[Row] = []
        for row in rows:
            pending.append(row)
            if len(pending) >= BATCH:
                writer.write_batch(point_batch(pending, schema))
                n, pending = n + len(pending), []
        if pending or not n:
            writer.write_batch(point_batch(pending, schema))
            n += len(pending)
    return n


def read_header(path: Path) -> Header:
    """The header of a point file; a UsageError naming the file when it is not one (not
    Parquet, no SkySearch metadata, columns missing or of other types)."""
    try:
        meta = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"{path} is not a readable Parquet file ({exc})") from None
    schema = meta.schema.to_arrow_schema()
    try:
        info = json.loads((schema.metadata or {})[METADATA_KEY])
        collection, vector_name, dim = info["collection"], info["vector_name"], info["dim"]
        distance = info.get("distance", DISTANCE)
    except (KeyError, TypeError, ValueError):
        raise UsageError(
            f"{path} is not a SkySearch point file (no {METADATA_KEY.decode()} metadata naming "
            "its collection, vector name and dimension): write it with a store export in the "
            "Parquet format or an index run into Parquet"
        ) from None
    if not (isinstance(collection, str) and collection and isinstance(vector_name, str)):
        raise UsageError(f"{path}: its metadata names no collection or vector name")
    if not isinstance(dim, int) or dim < 1:
        raise UsageError(f"{path}: its metadata gives no positive vector dimension ({dim!r})")
    if distance != DISTANCE:
        raise UsageError(f"{path}: distance {distance!r}; the store keeps {DISTANCE} only")
    expected = {"id": pa.string(), "vector": pa.list_(pa.float32(), dim), "payload": pa.string()}
    for name, kind in expected.items():
        index = schema.get_field_index(name)
        if index < 0 or schema.field(index).type != kind:
            found = "missing" if index < 0 else str(schema.field(index).type)
            raise UsageError(f"{path}: column {name!r} must be {kind}, found {found}")
    return Header(collection, vector_name, dim, meta.num_rows)
