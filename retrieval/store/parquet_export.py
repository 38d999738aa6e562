"""Export collections as Parquet that DuckDB, polars and pandas read directly.

Layout: ``<folder>/<collection>/<vector name>.parquet``, one file per named vector (encoders
differ in dimension), in the point format of ``parquet_format`` (each row a point holding that
vector, typed payload columns, the whole payload as JSON). Files are written in batches
(memory stays bounded) into a folder beside the target, renamed to it when every collection
is written: an export cut short leaves nothing an import would read. ``store import
--format parquet`` loads them back (``parquet_import``).

    SELECT time, event, pressure_hpa FROM 'out/clips/clip-2026....parquet' ORDER BY time
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from contextlib import ExitStack
from pathlib import Path

import pyarrow.parquet as pq
from skysearch.retrieval.store.base import VectorStore
from skysearch.retrieval.store.parquet_format import BATCH, Row, point_batch, point_schema
from skysearch.retrieval.store.transfer import export_names

from skysearch.atomic import atomic_path
from skysearch.errors import UsageError


def export_parquet(
    store: VectorStore, folder: Path, collections: list[str] | None = None, progress: bool = True
) -> dict[str, int]:
    """Write the collections (default: all) under ``folder`` (new or empty); returns points
    per collection."""
    folder = Path(folder)
    if folder.suffix == ".parquet" and not folder.is_dir():  # else a folder named x.parquet
        raise UsageError(
            f"cannot write Parquet into {folder}: the export is a folder of "
            "COLLECTION/VECTOR_NAME.parquet files; name a folder (without .parquet)"
        )
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"cannot write Parquet into {folder}: it is a file, not a folder")
    if folder.is_dir() and any(folder.iterdir()):
        raise UsageError(f"cannot write Parquet into {folder}: it is not empty (an older export?)")
    if not folder.parent.is_dir():
        raise UsageError(f"cannot write {folder}: {folder.parent} is not an existing folder")
    names = export_names(store, collections)
    # written aside, renamed when whole: a failed export (a full disk) leaves no folder that
    # an import would take for a whole export
    _sweep_killed_exports(folder)
    staging = folder.with_name(f".{folder.name}.export-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        try:
            staging.mkdir()
        except OSError as exc:
            raise UsageError(f"cannot write Parquet into {folder}: {exc.strerror}") from None
        counts = {name: _export_collection(store, name, staging, progress) for name in names}
        if folder.exists():
            folder.rmdir()
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return counts


def _sweep_killed_exports(folder: Path) -> None:
    """Delete the staging folders of earlier exports to ``folder`` whose process is gone (a
    kill -9 skips the cleanup), never one of a process still running (another export)."""
    pattern = re.compile(rf"\.{re.escape(folder.name)}\.export-(\d+)-[0-9a-f]{{8}}")
    for path in folder.parent.iterdir():
        found = pattern.fullmatch(path.name)
        if found and path.is_dir() and not _running(int(found.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process; or not a pid
        return True
    return True


def _export_collection(store: VectorStore, name: str, folder: Path, progress: bool) -> int:
    """One collection's files under ``folder/name``; returns its points."""
    from tqdm import tqdm

    dims = store.vector_config(name)
    target = folder / name
    target.mkdir()  # the staging folder gone (deleted meanwhile) is an error, not a gap
    schemas = {vn: point_schema(name, vn, dim) for vn, dim in dims.items()}
    pending: dict[str, list[Row]] = {vn: [] for vn in dims}
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
                pending[vn].append((record.id, vector, record.payload))
                if len(pending[vn]) >= BATCH:
                    writers[vn].write_batch(point_batch(pending[vn], schemas[vn]))
                    pending[vn].clear()
            n += 1
            bar.update(1)
        for vn, rows in pending.items():
            if rows:
                writers[vn].write_batch(point_batch(rows, schemas[vn]))
    return n
