"""The Parquet frame catalog: one row per stored frame, partitioned ``satellite=/year=``.

Part files are only ever written whole (write a temporary file, fsync, rename, fsync the
folder), so a reader or a crashed writer never sees half a part. Each row also says where its
pixels live in the frame store (``store_row``: the row in the satellite/channel/year array).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skysearch.config import Workspace
from skysearch.timeutil import parse_time

TMP_SUFFIX = ".tmp"
REPLACES_KEY = b"skysearch.replaces"

FRAME_SCHEMA = pa.schema(
    [
        ("frame_id", pa.string()),
        ("satellite", pa.string()),
        ("channel", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("year", pa.int32()),
        ("source_path", pa.string()),
        ("checksum", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("status", pa.string()),
        ("profile", pa.string()),
        ("store_row", pa.int64()),
    ]
)


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_table(table: pa.Table, path: Path) -> None:
    """Write a Parquet file so that it either exists complete or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    pq.write_table(table, tmp, compression="zstd")
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def remove_temporaries(root: Path) -> int:
    """Delete ``*.tmp`` leftovers of a writer killed mid-write; returns how many."""
    if not root.exists():
        return 0
    leftovers = list(root.rglob(f"*{TMP_SUFFIX}"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)


def _superseded(folder: Path) -> set[str]:
    """Part names a compacted file replaces (left behind if a compaction was killed)."""
    names: set[str] = set()
    for path in folder.glob("compact-*.parquet"):
        meta = pq.read_schema(path).metadata or {}
        names.update(json.loads(meta.get(REPLACES_KEY, b"[]")))
    return names


def _live_parts(folder: Path) -> list[Path]:
    gone = _superseded(folder)
    return [p for p in sorted(folder.glob("*.parquet")) if p.name not in gone]


def frame_parts(
    workspace: Workspace, satellite: str | None = None, years: Iterable[int] | None = None
) -> list[Path]:
    """Committed part files, pruned by satellite and year partitions."""
    root = workspace.frames_catalog
    sat_glob = f"satellite={satellite}" if satellite else "satellite=*"
    wanted = None if years is None else {int(y) for y in years}
    parts = []
    for folder in sorted(root.glob(f"{sat_glob}/year=*")):
        if wanted is None or int(folder.name.split("=", 1)[1]) in wanted:
            parts += _live_parts(folder)
    return parts


def compact_partitions(workspace: Workspace, min_parts: int = 16) -> int:
    """Merge the part files of every partition that has ``min_parts`` or more into one.

    Crash-safe: the merged file names the parts it replaces in its metadata and appears by
    rename; readers ignore replaced parts from that moment, and the parts are deleted after
    (here, or by the next compaction if this one is killed first). Run under the ingest lock.
    Returns how many partitions were compacted.
    """
    compacted = 0
    for folder in sorted(workspace.frames_catalog.glob("satellite=*/year=*")):
        for name in _superseded(folder):
            (folder / name).unlink(missing_ok=True)
        parts = _live_parts(folder)
        if len(parts) < min_parts:
            continue
        table = pa.concat_tables(pq.read_table(p, schema=FRAME_SCHEMA) for p in parts)
        table = table.sort_by([("channel", "ascending"), ("store_row", "ascending")])
        replaces = json.dumps([p.name for p in parts]).encode()
        merged = table.replace_schema_metadata({REPLACES_KEY: replaces})
        atomic_write_table(merged, folder / f"compact-{uuid.uuid4().hex[:12]}.parquet")
        for path in parts:
            path.unlink()
        fsync_dir(folder)
        compacted += 1
    return compacted


def write_frames(workspace: Workspace, rows: pa.Table) -> list[Path]:
    """Commit rows: one new part file per satellite/year partition they touch."""
    written = []
    run = uuid.uuid4().hex[:12]
    keys = sorted(set(zip(rows["satellite"].to_pylist(), rows["year"].to_pylist(), strict=True)))
    for satellite, year in keys:
        mask = pc.and_(pc.equal(rows["satellite"], satellite), pc.equal(rows["year"], year))
        part = rows.filter(mask).cast(FRAME_SCHEMA)
        folder = workspace.frames_catalog / f"satellite={satellite}" / f"year={year}"
        path = folder / f"part-{run}.parquet"
        atomic_write_table(part, path)
        written.append(path)
    return written


def read_frames(
    workspace: Workspace,
    satellite: str | None = None,
    channel: str | list[str] | None = None,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Frames in the catalog, sorted by time (then satellite, channel).

    ``start``/``end`` are inclusive bounds (aware UTC or ISO 8601 text); ``channel`` is one
    name or a list. Returns an empty table with the catalog schema when nothing matches.
    """
    start_t = parse_time(start) if start is not None else None
    end_t = parse_time(end) if end is not None else None
    years = None
    if start_t is not None or end_t is not None:
        lo = start_t.year if start_t else 1900
        hi = end_t.year if end_t else 2200
        years = range(lo, hi + 1)
    parts = frame_parts(workspace, satellite, years)
    fields = [FRAME_SCHEMA.field(c) for c in columns] if columns is not None else None
    schema = FRAME_SCHEMA if fields is None else pa.schema(fields)
    if not parts:
        return schema.empty_table()
    table = pa.concat_tables(pq.read_table(p, schema=FRAME_SCHEMA) for p in parts)
    mask = None

    def both(new: pa.ChunkedArray) -> None:
        nonlocal mask
        mask = new if mask is None else pc.and_(mask, new)

    if channel is not None:
        chans = [channel] if isinstance(channel, str) else list(channel)
        both(pc.is_in(table["channel"], value_set=pa.array(chans, pa.string())))
    if start_t is not None:
        both(pc.greater_equal(table["time"], pa.scalar(start_t, FRAME_SCHEMA.field("time").type)))
    if end_t is not None:
        both(pc.less_equal(table["time"], pa.scalar(end_t, FRAME_SCHEMA.field("time").type)))
    if mask is not None:
        table = table.filter(mask)
    order = [("time", "ascending"), ("satellite", "ascending"), ("channel", "ascending")]
    table = table.sort_by(order)
    return table.select(schema.names) if columns is not None else table
