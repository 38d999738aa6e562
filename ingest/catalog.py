"""The Parquet frame catalog: one row per stored frame, partitioned ``satellite=/year=``.

Part files (``part-*.parquet``) appear whole (``skysearch.atomic``: written under a hidden
temporary name, fsynced, renamed) and carry Parquet page checksums, verified on every read.
Each row also says where its pixels live in the frame store (``store_row``: the row in the
satellite/channel/year array).

Outside readers (pyarrow.dataset, DuckDB, polars) read the folder as it is, so replacing parts
P1..Pn of a partition by one merged file (compaction, repair) must never show them a row twice
or a row missing. It is one atomic step: a staging copy of the partition folder is made under
``catalog/.staging/`` (outside every dataset folder: the parts that stay are hard links, the
merged file is written there), then the two folders are swapped by one
``renameat2(RENAME_EXCHANGE)``, and the staging folder, now holding the old parts, is deleted.
Every instant shows either the old parts or the new ones; a writer killed at any point leaves
only a staging folder that the next ingest or repair deletes (``recover``). Where the
filesystem cannot exchange, the swap is two renames (the partition is absent for an instant;
after a kill there, ``recover`` completes it).
"""

from __future__ import annotations

import errno
import functools
import json
import operator
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from skysearch.ingest.footprints import BOUND_COLUMNS

from skysearch.atomic import atomic_path, exchange, fsync_path, remove_temporaries
from skysearch.config import Workspace
from skysearch.errors import DamagedError, UsageError
from skysearch.timeutil import parse_end, parse_time

#: Metadata key of merged ``compact-*`` files written by SkySearch <= 0.1 (names the parts the
#: file replaced, which that version deleted only after writing it).
REPLACES_KEY = b"skysearch.replaces"
STAGING = ".staging"  # catalog/.staging/<satellite=..>/<year=..>: a replacement in progress
OLD_SUFFIX = ".old"  # two-rename fallback: the partition's old folder, until deleted
DAMAGED_SUFFIX = ".damaged"  # a part set aside by the repair: ".<part>.damaged"
_READ_ATTEMPTS = 3  # a part renamed away while listed: list again
_NO_EXCHANGE = (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP)
_PARQUET = ds.ParquetFileFormat(
    default_fragment_scan_options=ds.ParquetFragmentScanOptions(page_checksum_verification=True)
)

FRAME_SCHEMA = pa.schema(
    [
        ("frame_id", pa.string()),
        ("satellite", pa.string()),
        ("channel", pa.string()),
        ("time", pa.timestamp("us", tz="UTC")),
        ("year", pa.int32()),
        ("source_path", pa.string()),
        ("checksum", pa.string()),
        ("source_stamp", pa.string()),  # size and time or CRC (skysearch.ingest.stamps)
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("status", pa.string()),
        ("profile", pa.string()),
        ("store_row", pa.int64()),
        ("event", pa.string()),  # e.g. a typhoon id; null for products without events
        ("quality", pa.float32()),  # fraction of source pixels without a valid measurement
        # the lat/lon box the frame covers (skysearch.ingest.footprints), null where unknown
        *((name, pa.float64()) for name in BOUND_COLUMNS),
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


def unhidden(path: Path, suffix: str) -> Path:
    """``folder/.name<suffix>`` -> ``folder/name``: the inverse of :func:`hidden`."""
    return path.with_name(path.name.removeprefix(".").removesuffix(suffix))


def _unreadable(path: Path, exc: Exception) -> DamagedError:
    reason = str(exc).splitlines()[0].replace(f"Could not open Parquet input source '{path}': ", "")
    return DamagedError(path, f"unreadable Parquet ({reason})")


#: Columns every row of a catalog (frames, clips, tracks) has where its schema holds them. A
#: file lacking one is read with the column empty (schemas grow new optional columns), so a
#: part without one, or with empty values in one (hand-edited, or written by another tool),
#: is refused as damaged here rather than failing later in whatever reads it.
_REQUIRED = (
    "frame_id",
    "clip_id",
    "satellite",
    "channel",
    "channels",
    "time",
    "start",
    "store_row",
    "length",
    "gap_minutes",
    "frame_ids",
)


def _lacking(table: pa.Table) -> str | None:
    """The first required column with an empty value in ``table``, if any."""
    return next(
        (c for c in _REQUIRED if c in table.column_names and table.column(c).null_count), None
    )


def column_schema(schema: pa.Schema, columns: Sequence[str] | None) -> pa.Schema:
    """``schema`` narrowed to ``columns`` (all when None); a UsageError naming the catalog's
    columns for one it does not have."""
    if columns is None:
        return schema
    if isinstance(columns, str):  # one name would be read as one per character
        raise UsageError(f"{{columns}} is a list of names, got {columns!r}", params=["columns"])
    unknown = [c for c in columns if c not in schema.names]
    if unknown:
        raise UsageError(
            f"no column {unknown[0]!r} in the catalog: {{columns}} is a list of "
            f"{', '.join(schema.names)}",
            params=["columns"],
        )
    return pa.schema([schema.field(c) for c in columns])


def read_part(path: Path, schema: pa.Schema = FRAME_SCHEMA) -> pa.Table:
    """One catalog file, page checksums verified; ``DamagedError`` naming it if unreadable.
    (``FileNotFoundError`` passes through: the file was renamed away while listed.)"""
    if Path(path).is_dir():  # pyarrow would read it as a (possibly empty) dataset
        raise DamagedError(path, "a folder where a catalog file should be")
    try:
        table = pq.read_table(path, schema=schema, page_checksum_verification=True)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from None
    column = _lacking(table)
    if column is not None:
        raise DamagedError(path, f"rows without a {column} (the column is missing or empty)")
    return table


def scan_parts(
    parts: list[Path],
    schema: pa.Schema,
    columns: list[str] | None = None,
    where: pc.Expression | None = None,
) -> pa.Table:
    """The ``columns`` of the rows matching ``where`` in these catalog files, in file order.

    Pushed down by pyarrow.dataset: only those columns are decoded (their page checksums
    verified), and row groups whose statistics rule ``where`` out are skipped. A damaged file
    raises ``DamagedError`` naming it; ``FileNotFoundError`` passes through (a file renamed
    away while listed).
    """
    paths = [os.path.abspath(p) for p in parts]
    dataset = ds.FileSystemDataset.from_paths(
        paths, schema=schema, format=_PARQUET, filesystem=pafs.LocalFileSystem()
    )
    try:
        table = dataset.to_table(columns=columns, filter=where)
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException):
        for part in parts:  # the scan's error need not name the file: find it
            read_part(part, schema)
        raise
    if _lacking(table) is not None:
        for part in parts:  # find the file
            read_part(part, schema)
    return table


def _legacy_replaced(path: Path) -> set[str]:
    """Parts an old-version ``compact-*`` file replaced (from its metadata)."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except FileNotFoundError:
        raise
    except (OSError, pa.ArrowException) as exc:
        raise _unreadable(path, exc) from None
    return set(json.loads(meta.get(REPLACES_KEY, b"[]"))) - {path.name}


#: The names SkySearch gives catalog parts (``part-<hex>``, and ``compact-<hex>`` of old
#: versions): another file in a partition folder (a file manager's "part-... (copy)", a sync
#: tool's conflict copy) is not read, or its rows would be there twice.
_PART_NAME = re.compile(r"^(part|compact)-[0-9a-f]+\.parquet$")


def _listed(folder: Path) -> list[Path]:
    """The folder's live Parquet files, as an outside reader sees them."""
    return sorted(p for p in folder.glob("*.parquet") if is_part(p))


def is_part(path: Path) -> bool:
    return _PART_NAME.match(path.name) is not None


def stray_files(root: Path, is_ours: Callable[[Path], bool] = is_part) -> list[Path]:
    """Parquet files in the partition folders of the catalog at ``root`` that are not its
    files (copies a file manager or a sync tool made): never read, named by doctor."""
    found = root.glob("satellite=*/year=*/*.parquet")
    return sorted(p for p in found if not p.name.startswith((".", "_")) and not is_ours(p))


def live_parts(folder: Path) -> list[Path]:
    """The files holding a partition's committed rows (without the parts an old-version
    ``compact-*`` file replaced, until ``recover`` deletes them)."""
    listed = _listed(folder)
    replaced: set[str] = set()
    for path in listed:
        if path.name.startswith("compact-"):
            replaced |= _legacy_replaced(path)
    return [p for p in listed if p.name not in replaced]


def catalog_stamp(root: Path) -> frozenset[tuple[str, int, int, int]]:
    """What the catalog under ``root`` (frames or clips: ``satellite=*/year=*/*.parquet``)
    holds now: the name, inode, mtime and size of each live file. Catalog files are only ever
    replaced whole (written aside, renamed into place), so every commit, compaction or clip
    rebuild changes the stamp: a long-lived reader (the service) caches what it read by it."""
    stamp = set()
    for path in root.glob("satellite=*/year=*/*.parquet"):
        if path.name.startswith((".", "_")):
            continue
        try:
            st = path.stat()
        except FileNotFoundError:  # renamed away while listed: the next look sees the change
            continue
        stamp.add((str(path.relative_to(root)), st.st_ino, st.st_mtime_ns, st.st_size))
    return frozenset(stamp)


def staging_folders(workspace: Workspace) -> list[Path]:
    """Leftovers of replacements a killed writer did not finish."""
    return sorted(workspace.catalog_dir.glob(f"{STAGING}/satellite=*/year=*"))


def _staging(workspace: Workspace, folder: Path) -> Path:
    return workspace.catalog_dir / STAGING / folder.parent.name / folder.name


def _partition_of(workspace: Workspace, staging: Path) -> Path:
    name = staging.name.removesuffix(OLD_SUFFIX)
    return workspace.frames_catalog / staging.parent.name / name


def recover(workspace: Workspace) -> int:
    """Clean up after a writer killed mid-way: temporaries, replacements it did not finish
    (see the module doc), old-version leftovers. Run under the ingest lock. Returns how many
    replacements were found unfinished."""
    remove_temporaries(workspace.frames_catalog)
    leftovers = staging_folders(workspace)
    for staging in leftovers:
        partition = _partition_of(workspace, staging)
        if staging.name.endswith(OLD_SUFFIX) or partition.exists():
            shutil.rmtree(staging)  # the old parts of a finished swap, or a swap never made
        else:  # two-rename fallback killed between its renames: the staging copy is complete
            os.replace(staging, partition)
            fsync_path(partition.parent)
    for folder in sorted(workspace.frames_catalog.glob("satellite=*/year=*")):
        listed = _listed(folder)
        names = {p.name for p in listed}
        for merged in listed:
            if merged.name.startswith("compact-"):
                for name in _legacy_replaced(merged) & names:
                    (folder / name).unlink()
        fsync_path(folder)
    return len(leftovers)


def replace_parts(workspace: Workspace, folder: Path, table: pa.Table, parts: list[Path]) -> Path:
    """Replace ``parts`` of a partition folder by one file holding ``table``, in one atomic
    step for every reader (see the module doc); returns the merged file's path."""
    staging = _staging(workspace, folder)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for part in _listed(folder):
        if part not in parts:
            os.link(part, staging / part.name)
    name = parts[0].name if parts else f"part-{uuid.uuid4().hex[:12]}.parquet"
    atomic_write_table(table, staging / name)
    fsync_path(staging.parent)
    try:
        exchange(folder, staging)
    except OSError as exc:
        if exc.errno not in _NO_EXCHANGE:
            raise
        old = staging.with_name(staging.name + OLD_SUFFIX)
        os.replace(folder, old)
        os.replace(staging, folder)
        staging = old
    fsync_path(folder.parent)
    shutil.rmtree(staging)
    return folder / name


def rewrite_partitions(
    workspace: Workspace, rewrite: Callable[[pa.Table], pa.Table | None]
) -> None:
    """For each frame-catalog partition: ``rewrite`` gets its committed rows and returns the
    rows to keep in their place (None: leave the partition as it is); the parts are replaced
    in one atomic step (``replace_parts``). Run under the ingest lock."""
    for folder in sorted(workspace.frames_catalog.glob("satellite=*/year=*")):
        parts = live_parts(folder)
        if not parts:
            continue
        table = rewrite(pa.concat_tables(read_part(p) for p in parts))
        if table is not None:
            replace_parts(workspace, folder, table, parts)


def update_frames(workspace: Workspace, changes: dict[str, dict[str, object]]) -> None:
    """Set columns of some catalog rows (frame id -> {column: value}), one atomic partition
    replacement per partition holding any of them. Run under the ingest lock."""
    columns = sorted({c for change in changes.values() for c in change})

    def update(table: pa.Table) -> pa.Table | None:
        ids = table["frame_id"].to_pylist()
        if not changes.keys() & set(ids):
            return None
        for name in columns:
            old = table[name].to_pylist()
            new = [changes.get(f, {}).get(name, v) for f, v in zip(ids, old, strict=True)]
            at = table.schema.get_field_index(name)
            table = table.set_column(at, name, pa.array(new, FRAME_SCHEMA.field(name).type))
        return table.sort_by([("channel", "ascending"), ("store_row", "ascending")]).cast(
            FRAME_SCHEMA
        )

    rewrite_partitions(workspace, update)


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
        parts = live_parts(folder)
        if len(parts) < min_parts:
            continue
        table = pa.concat_tables(read_part(p) for p in parts)
        table = table.sort_by([("channel", "ascending"), ("store_row", "ascending")])
        replace_parts(workspace, folder, table, parts)
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
    workspace: Workspace,
    satellite: str | None,
    years: Iterable[int] | None,
    columns: list[str],
    where: pc.Expression | None,
) -> pa.Table | None:
    """Committed rows of the partitions (``scan_parts``); None when there are none. A part
    renamed away between listing and reading (a compaction finishing) makes it list again."""
    for attempt in range(_READ_ATTEMPTS):
        parts = frame_parts(workspace, satellite, years)
        if not parts:
            return None
        try:
            return scan_parts(parts, FRAME_SCHEMA, columns, where)
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

    ``start``/``end`` are inclusive bounds (aware UTC or ISO 8601 text; an end given as a date
    alone takes in that whole day, as the CLI's ``--between``); ``channel`` is one name or a
    list. Returns an empty table with the catalog schema when nothing matches.
    Only the ``columns`` asked for (and the sort keys) are read; the filters are pushed down.
    """
    start_t = parse_time(start) if start is not None else None
    end_t = parse_end(end) if end is not None else None
    years = None
    if start_t is not None or end_t is not None:
        lo = start_t.year if start_t else 1900
        hi = end_t.year if end_t else 2200
        years = range(lo, hi + 1)
    schema = column_schema(FRAME_SCHEMA, columns)
    order = [("time", "ascending"), ("satellite", "ascending"), ("channel", "ascending")]
    conditions = []
    if channel is not None:
        chans = [channel] if isinstance(channel, str) else list(channel)
        conditions.append(ds.field("channel").isin(pa.array(chans, pa.string())))
    time_type = FRAME_SCHEMA.field("time").type
    if start_t is not None:
        conditions.append(ds.field("time") >= pa.scalar(start_t, time_type))
    if end_t is not None:
        conditions.append(ds.field("time") <= pa.scalar(end_t, time_type))
    where = functools.reduce(operator.and_, conditions) if conditions else None
    read = list(dict.fromkeys([*schema.names, *(key for key, _ in order)]))
    table = _read_parts(workspace, satellite, years, read, where)
    if table is None:
        return schema.empty_table()
    return table.sort_by(order).select(schema.names)


def channels_by_satellite(frames: pa.Table) -> dict[str, set[str]]:
    """Satellite -> the channels of its rows in ``frames`` (a table with both columns)."""
    have: dict[str, set[str]] = {}
    pairs = zip(frames["satellite"].to_pylist(), frames["channel"].to_pylist(), strict=True)
    for satellite, channel in pairs:
        have.setdefault(satellite, set()).add(channel)
    return have


def describe_channels(have: dict[str, set[str]]) -> str:
    """``goes-east: ir,wv; coms: ir01``: what an archive holds, for messages."""
    return "; ".join(f"{s}: {','.join(sorted(c))}" for s, c in sorted(have.items())) or "none"
