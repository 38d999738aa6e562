"""Frame catalog reads: ``read_frames`` (pyarrow.dataset, columns and filters pushed down)
beside the reader it replaced (every column of every part read, then filtered and selected).

A synthetic catalog (``--rows`` frames of one satellite, two channels, 10-minute cadence, in
``--parts`` part files, as incremental ingests leave it) is written to a temporary workspace.
Three queries, best of ``--repeat``: one column of everything (what the sketch store and the
indexers ask), one day of one channel (two columns), and every column.

Usage: .venv/bin/python bench/catalog.py [--rows 500000] [--parts 50] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from load import load_average
from skysearch.ingest.catalog import FRAME_SCHEMA, frame_parts, read_frames, read_part, write_frames

from skysearch.config import Workspace

START = datetime(2017, 1, 1, tzinfo=timezone.utc)


def synthetic_rows(start: int, count: int) -> pa.Table:
    """``count`` catalog rows from row number ``start`` (ir and wv alternating)."""
    index = np.arange(start, start + count)
    times = np.datetime64(START.replace(tzinfo=None), "us") + (index // 2) * np.timedelta64(10, "m")
    stamps = pa.array(times, pa.timestamp("us", tz="UTC"))
    channel = np.where(index % 2 == 0, "ir", "wv")
    columns = {
        "frame_id": [str(uuid.UUID(int=int(i))) for i in index],
        "satellite": ["goes-east"] * count,
        "channel": channel,
        "time": stamps,
        "year": pc.year(stamps).cast(pa.int32()),
        "source_path": [f"/archive/{i:08d}.png" for i in index],
        "checksum": [f"{i:064x}" for i in index],
        "width": pa.array([360] * count, pa.int32()),
        "height": pa.array([234] * count, pa.int32()),
        "status": ["ok"] * count,
        "profile": ["goes-east"] * count,
        "store_row": pa.array(index // 2, pa.int64()),
    }  # the other columns (event, quality, footprint...) null, as for an image archive
    return pa.table(
        {f.name: columns.get(f.name, pa.nulls(count, f.type)) for f in FRAME_SCHEMA},
        schema=FRAME_SCHEMA,
    )


def read_every_column(ws: Workspace, channel=None, start=None, end=None, columns=None):
    """The replaced reader: every column of every part, then filter, sort and select."""
    table = pa.concat_tables(read_part(p) for p in frame_parts(ws))
    if channel is not None:
        table = table.filter(pc.equal(table["channel"], channel))
    if start is not None:
        table = table.filter(pc.greater_equal(table["time"], pa.scalar(start, table["time"].type)))
    if end is not None:
        table = table.filter(pc.less_equal(table["time"], pa.scalar(end, table["time"].type)))
    table = table.sort_by(
        [("time", "ascending"), ("satellite", "ascending"), ("channel", "ascending")]
    )
    return table.select(columns) if columns else table


def best(fn, repeat: int) -> tuple[float, pa.Table]:
    times, result = [], None
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--parts", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    day = START + timedelta(days=args.rows // 2 // 144 // 2)
    queries = {
        "frame_id_of_all": {"columns": ["frame_id"]},
        "one_day_one_channel": {
            "channel": "ir",
            "start": day,
            "end": day + timedelta(hours=23, minutes=59),
            "columns": ["frame_id", "time"],
        },
        "every_column": {},
    }
    result: dict = {"rows": args.rows, "parts": args.parts, "queries": {}}
    load_start = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp))
        per_part = -(-args.rows // args.parts)
        for start in range(0, args.rows, per_part):
            write_frames(ws, synthetic_rows(start, min(per_part, args.rows - start)))
        for name, query in queries.items():
            new_s, new = best(lambda q=query: read_frames(ws, **q), args.repeat)
            old_s, old = best(lambda q=query: read_every_column(ws, **q), args.repeat)
            assert new.equals(old), name
            result["queries"][name] = {
                "rows_out": new.num_rows,
                "read_frames_s": round(new_s, 4),
                "every_column_s": round(old_s, 4),
            }
    result["load_average"] = {"start": load_start, "end": load_average()}
    if args.json:
        print(json.dumps(result))
        return
    for name, row in result["queries"].items():
        print(
            f"{name:22s} rows {row['rows_out']:>8}  read_frames {row['read_frames_s']:.3f} s  "
            f"every column {row['every_column_s']:.3f} s"
        )
    print(
        f"load average start {result['load_average']['start']} end {result['load_average']['end']}"
    )


if __name__ == "__main__":
    main()
