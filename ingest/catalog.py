"""The Parquet frame catalog: one row per stored frame, partitioned ``satellite=/year=``.

Part files (``part-*.parquet``, ``compact-*.parquet``) appear whole (``skysearch.atomic``:
written under a hidden temporary name, fsynced, renamed) and carry Parquet page checksums,
verified on every read. Each row also says where its pixels live in the frame store
(``store_row``: the row in the satellite/channel/year array).

Outside readers (pyarrow.dataset, DuckDB, polars) read the folder as it is and skip names
starting with ``.``, so replacing parts P1..Pn by one merged file (compaction, repair) must
never show them a row twice, nor an empty folder. The merged file is written hidden
(``.P1.pending``, naming P2..Pn in its metadata), P2..Pn are renamed to hidden names, the
folder is fsynced, and the merged file is renamed over P1 (one atomic step); then the hidden
parts are deleted. Between the first hiding rename and the last rename the rows of P2..Pn are
absent for outside readers (for an instant; after a kill, until the next ingest or repair
finishes the swap from the pending file). Our own reader uses a pending file in place of the
parts it replaces, so it sees every committed row at every instant.
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

from skysearch.atomic import atomic_path, fsync_path, remove_temporaries
from skysearch.config import Workspace
from skysearch.errors import DamagedError
from skysearch.timeutil import parse_time

REPLACES_KEY = b"skysearch.replaces"
PENDING_SUFFIX = ".pending"  # a merged file not live yet: ".<target part>.pending"
REPLACED_SUFFIX = ".replaced"  # a part a merged file replaces, hidden: ".<part>.replaced"
DAMAGED_SUFFIX = ".damaged"  # a part set aside by the repair: ".<part>.damaged"
_READ_ATTEMPTS = 3  # a part renamed away while listed: list again

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


def atomic_write_table(table: pa.Table, path: Path) -> None:
    """Write a Parquet file (with page checksums) so that it exists complete or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)


def hidden(path: Path, suffix: str) -> Path:
    """``folder/name`` -> ``folder/.name<suffix>``: a name every dataset reader skips."""
    return path.with_name(f".{path.name}{suffix}")


def _unreadable(path: Path, exc: Exception) -> DamagedError:
    reason = str(exc).splitlines()[0].replace(f"Could not open Parquet input source '{path}': ", "")
    return DamagedError(path, f"unreadable Parquet ({reason})")


def read_part(path: Path, schema: pa.Schema = FRAME_SCHEMA) -> pa.Table:
    """One catalog file, page checksums verified; ``DamagedError`` naming it if unreadable.
    (``FileNotFoundError`` passes through: the file was renamed away while listed.)"""
    try:
        return pq.read_table(path, schema=schema, page_checksum_verification=True)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from None


def _replaces(path: Path) -> set[str]:
    """Names of the other parts a merged file replaces (from its metadata)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from None
    return set(json.loads(meta.get(REPLACES_KEY, b"[]"))) - {path.name}


def _target(pending: Path) -> Path:
    """The live part a pending merged file will be renamed over."""
    return pending.with_name(pending.name[1 : -len(PENDING_SUFFIX)])


def _pending(folder: Path) -> list[Path]:
    return sorted(folder.glob(f".*.parquet{PENDING_SUFFIX}"))


def _listed(folder: Path) -> list[Path]:
    """The folder's live Parquet files, as an outside reader sees them."""
    return sorted(p for p in folder.glob("*.parquet") if not p.name.startswith((".", "_")))


def live_parts(folder: Path) -> list[Path]:
    """The files holding a partition's committed rows: live parts nothing replaces, and
    pending merged files in place of the parts they replace.

    Lists the live parts before the pending files: a replacement in progress then shows
    either its pending file, or parts already renamed away (the read lists again).
    """
    listed = _listed(folder)
    pending = _pending(folder)
    gone: set[str] = set()
    for path in pending:
        gone |= _replaces(path) | {_target(path).name}
    for path in listed:
        if path.name.startswith("compact-"):  # merged by an older version, parts kept live
            gone |= _replaces(path)
    return [p for p in listed if p.name not in gone] + pending


def finish_replacements(folder: Path) -> int:
    """Complete replacements a killed writer left half-done (see the module doc); returns how
    many. Run under the ingest lock."""
    done = 0
    for pending in _pending(folder):
        for name in sorted(_replaces(pending)):
            if (folder / name).exists():
                os.replace(folder / name, hidden(folder / name, REPLACED_SUFFIX))
        fsync_path(folder)  # the replaced parts are hidden before the merged file appears
        os.replace(pending, _target(pending))
        fsync_path(folder)
        done += 1
    listed = _listed(folder)
    names = {p.name for p in listed}
    for merged in listed:
        if merged.name.startswith("compact-"):  # an older version deleted parts after
            for name in _replaces(merged) & names:
                (folder / name).unlink()
    for leftover in folder.glob(f".*{REPLACED_SUFFIX}"):
        leftover.unlink()
    fsync_path(folder)
    return done


def recover(workspace: Workspace) -> None:
    """Clean up after a writer killed mid-way: temporaries, half-done replacements. Run under
    the ingest lock."""
    remove_temporaries(workspace.frames_catalog)
    for folder in sorted(workspace.frames_catalog.glob("satellite=*/year=*")):
        finish_replacements(folder)


def replace_parts(folder: Path, table: pa.Table, parts: list[Path]) -> Path:
    """Replace ``parts`` of a partition folder by one file holding ``table``; returns it."""
    if not parts:
        path = folder / f"part-{uuid.uuid4().hex[:12]}.parquet"
        atomic_write_table(table, path)
        return path
    replaces = json.dumps(sorted(p.name for p in parts[1:])).encode()
    pending = hidden(parts[0], PENDING_SUFFIX)
    atomic_write_table(table.replace_schema_metadata({REPLACES_KEY: replaces}), pending)
    finish_replacements(folder)
    return parts[0]


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
            parts += live_parts(folder)
    return parts


def compact_partitions(workspace: Workspace, min_parts: int = 16) -> int:
    """Merge the part files of every partition that has ``min_parts`` or more into one.

    Crash-safe and valid for outside readers at every instant (see the module doc). Run under
    the ingest lock. Returns how many partitions were compacted.
    """
    compacted = 0
    for folder in sorted(workspace.frames_catalog.glob("satellite=*/year=*")):
        finish_replacements(folder)
        parts = live_parts(folder)
        if len(parts) < min_parts:
            continue
        table = pa.concat_tables(read_part(p) for p in parts)
        table = table.sort_by([("channel", "ascending"), ("store_row", "ascending")])
        replace_parts(folder, table, parts)
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


def _read_parts(
    workspace: Workspace, satellite: str | None, years: Iterable[int] | None
) -> pa.Table | None:
    """All committed rows of the partitions; None when there are none. A part renamed away
    between listing and reading (a compaction finishing) makes it list again."""
    for attempt in range(_READ_ATTEMPTS):
        parts = frame_parts(workspace, satellite, years)
        if not parts:
            return None
        try:
            return pa.concat_tables(read_part(p) for p in parts)
        except FileNotFoundError:
            if attempt == _READ_ATTEMPTS - 1:
                raise
    return None


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
    fields = [FRAME_SCHEMA.field(c) for c in columns] if columns is not None else None
    schema = FRAME_SCHEMA if fields is None else pa.schema(fields)
    table = _read_parts(workspace, satellite, years)
    if table is None:
        return schema.empty_table()
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
