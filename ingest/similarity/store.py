"""Per-frame similarity sketches stored beside the frame store (``SketchStore``).

Layout: ``<workspace>/sketches/<spec tag>/<satellite>/<channel>/<year>/`` mirrors the frame
store: ``sketch.bin`` holds one sketch (B x N*N cumulative counts) per frame-store row, in
the same row order; ``ids.txt`` the frame id of each row (36 ASCII bytes, blank for a row the
catalog does not reference); ``sketch.crc`` the CRC-32 of each sketch; ``meta.json`` the
geometry, dtype and ``rows`` sketched.

Crash safety: sketches, ids and CRCs are appended and fsynced before ``meta.json`` (atomic,
durable rename) counts them; an update first cuts the files back to ``rows`` (or to what a
damaged, shorter file still holds), and re-sketches from the first row whose stored id no
longer matches the catalog (a rebuilt frame store). So an update can be killed at any moment
and re-run: nothing is lost or duplicated. Reading checks sizes and three CRCs (cheap).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.checksums import (
    complete_crcs,
    read_crcs,
    row_crcs,
    spot_mismatch,
)
from skysearch.ingest.framestore import FrameStore, frame_rows
from skysearch.ingest.similarity.grid import (
    Geometry,
    GridSpec,
    cell_sizes,
    sketch_dtype,
    sketch_frames,
)
from skysearch.ingest.similarity.scoring import SketchPool
from tqdm import tqdm

from skysearch.atomic import atomic_write_json, fsync_file
from skysearch.config import Workspace
from skysearch.errors import DamagedError, NotFoundError, UsageError
from skysearch.locks import job_lock

DATA_FILE = "sketch.bin"
IDS_FILE = "ids.txt"
CRC_FILE = "sketch.crc"
META_FILE = "meta.json"
LOCK_FILE = ".update.lock"
ID_BYTES = 36
Key = tuple[str, str, int]


@dataclass
class SketchReport:
    """What one ``SketchStore.update`` did (``--json`` friendly)."""

    sketched: int = 0
    total: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        return (
            f"sketches: {self.sketched} images sketched, {self.total} stored ({self.seconds:.1f} s)"
        )


def catalog_positions(
    wanted_ids: Sequence[str], known: pa.ChunkedArray, what: str, where: str, hint: str
) -> np.ndarray:
    """Position of each wanted id in ``known``; NotFoundError naming the first missing one,
    with ``hint`` (what to do)."""
    wanted = pa.array(list(wanted_ids), pa.string())
    found = pc.index_in(wanted, value_set=known.combine_chunks())
    if found.null_count:
        missing = wanted.filter(found.is_null()).to_pylist()
        raise NotFoundError(
            f"{len(missing)} {what} id(s) not in the {where} (first: {missing[0]})", hint=hint
        )
    return found.to_numpy(zero_copy_only=False)


def sketch_specs(workspace: Workspace) -> list[GridSpec]:
    """The metric specs whose sketches a workspace keeps up to date: the default one, and
    every other one stored (``sketches/<tag>/``)."""
    specs = {GridSpec().tag: GridSpec()}
    for folder in sorted(workspace.sketch_dir.glob("*")):
        spec = GridSpec.from_tag(folder.name)
        if spec is not None:
            specs[spec.tag] = spec
    return list(specs.values())


class SketchStore:
    """Per-frame sketches of one metric spec (default: clean, N=24, B=20) for a workspace.

    ``update()`` sketches every catalog frame lacking one (incremental, resumable);
    ``get_many(ids)`` returns sketches in the order asked; ``pool(ids)`` addresses them
    without copying, for the batched clip functions.
    """

    def __init__(self, workspace: Workspace, spec: GridSpec | None = None) -> None:
        self.workspace = workspace
        self.spec = spec or GridSpec()
        self.root = workspace.sketch_dir / self.spec.tag
        self._index: pa.Table | None = None

    # ------------------------------------------------------------------ layout

    def folder(self, key: Key) -> Path:
        """The folder of one (satellite, channel, year) sketch array."""
        satellite, channel, year = key
        return self.root / satellite / channel / str(int(year))

    def _meta(self, key: Key) -> dict[str, Any] | None:
        path = self.folder(key) / META_FILE
        if not path.exists():
            return None
        try:
            meta = json.loads(path.read_text())
            int(meta["rows"]), int(meta["height"]), int(meta["width"]), np.dtype(meta["dtype"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DamagedError(path, f"unreadable ({exc})") from None
        return meta

    def _row_bytes(self, meta: dict[str, Any]) -> int:
        return self.spec.bins * self.spec.cells * np.dtype(meta["dtype"]).itemsize

    def check(self, key: Key, spot: bool = True) -> dict[str, Any] | None:
        """The cheap checks of one array's files: every counted row present, three CRCs
        (``spot``); returns its meta (None: nothing sketched). ``DamagedError`` names the file."""
        meta = self._meta(key)
        if meta is None:
            return None
        rows, row_bytes, folder = int(meta["rows"]), self._row_bytes(meta), self.folder(key)
        for name, size in ((DATA_FILE, row_bytes), (IDS_FILE, ID_BYTES)):
            path = folder / name
            have = path.stat().st_size if path.exists() else 0
            if have < rows * size:
                raise DamagedError(path, f"{have} bytes, {rows} rows of {size} bytes expected")
        if spot and rows:
            shape = (rows, row_bytes)
            mapped = np.memmap(folder / DATA_FILE, np.uint8, "r", shape=shape)
            bad = spot_mismatch(mapped, read_crcs(folder / CRC_FILE, rows))
            if bad is not None:
                what = f"sketch row {bad} does not match its checksum"
                raise DamagedError(folder / DATA_FILE, what)
        return meta

    def geometry(self, key: Key) -> Geometry:
        meta = self._meta(key)
        if meta is None:
            raise NotFoundError(f"no sketches for {'/'.join(map(str, key))}")
        return Geometry(int(meta["height"]), int(meta["width"]), self.spec)

    def array(self, key: Key) -> np.ndarray:
        """The stored sketches of one satellite/channel/year, memory-mapped (rows, B, cells)."""
        meta = self.check(key)
        if meta is None or int(meta["rows"]) == 0:
            return np.zeros((0, self.spec.bins, self.spec.cells), np.uint8)
        shape = (int(meta["rows"]), self.spec.bins, self.spec.cells)
        return np.memmap(self.folder(key) / DATA_FILE, np.dtype(meta["dtype"]), "r", shape=shape)

    # ------------------------------------------------------------------ writing

    def discard(self, key: Key, from_row: int = 0) -> None:
        """Forget the stored sketches of one array from ``from_row`` on (all of them when its
        meta.json is unreadable); the next ``update()`` sketches them again."""
        folder = self.folder(key)
        try:
            meta = self._meta(key)
        except DamagedError:
            meta = None
        if meta is None or from_row <= 0:
            shutil.rmtree(folder, ignore_errors=True)
        elif from_row < int(meta["rows"]):
            atomic_write_json(folder / META_FILE, meta | {"rows": from_row})

    def update(self, progress: bool = True, chunk: int = 256) -> SketchReport:
        """Sketch every catalog frame that has no stored sketch yet."""
        started = time.perf_counter()
        report = SketchReport()
        cols = ["frame_id", "satellite", "channel", "year", "store_row"]
        catalog = read_frames(self.workspace, columns=cols)
        if catalog.num_rows == 0:
            return report
        busy = f"another sketch update is running on {self.workspace.root}; wait for it"
        with job_lock(self.root / LOCK_FILE, busy):
            plans = self._plan(catalog)
            todo = sum(len(ids) - start for _, start, ids in plans)
            frames = FrameStore(self.workspace)
            bar = tqdm(total=todo, desc="sketch", unit="frame", disable=not progress or not todo)
            for key, start, ids in plans:
                report.sketched += self._extend(key, start, ids, frames, chunk, bar)
                report.total += len(ids)
            bar.close()
        self._index = None
        report.seconds = round(time.perf_counter() - started, 3)
        return report

    def _plan(self, catalog: pa.Table) -> list[tuple[Key, int, list[bytes]]]:
        """Per array: the first row to (re)sketch and the frame id of every row."""
        plans = []
        for key, rows in sorted(frame_rows(catalog).items()):
            ids = [b" " * ID_BYTES] * (max(rows) + 1)
            for row, fid in rows.items():
                ids[row] = fid.encode("ascii").ljust(ID_BYTES)[:ID_BYTES]
            try:
                meta = self._meta(key)
            except DamagedError:  # sketches are made from the (checked) frames: start over
                self.discard(key)
                meta = None
            done = self._intact_rows(key, meta)
            if done:
                stored = (self.folder(key) / IDS_FILE).read_bytes()[: done * ID_BYTES]
                stored_ids = np.frombuffer(stored, dtype=f"S{ID_BYTES}")
                expected = np.array(ids[: len(stored_ids)], dtype=f"S{ID_BYTES}")
                differ = np.nonzero(stored_ids[: len(expected)] != expected)[0]
                done = min(len(stored_ids), len(ids), *differ[:1].tolist())
            plans.append((key, done, ids))
        return plans

    def _intact_rows(self, key: Key, meta: dict[str, Any] | None) -> int:
        """Rows counted by ``meta`` that every file still holds (fewer if one was truncated:
        the update then re-sketches the rest from the frames)."""
        if meta is None:
            return 0
        folder = self.folder(key)
        rows = int(meta["rows"])
        for name, size in ((DATA_FILE, self._row_bytes(meta)), (IDS_FILE, ID_BYTES)):
            path = folder / name
            rows = min(rows, path.stat().st_size // size if path.exists() else 0)
        return rows

    def _extend(
        self, key: Key, start: int, ids: list[bytes], frames: FrameStore, chunk: int, bar: tqdm
    ) -> int:
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = frames.array(*key)
        height, width = int(pixels.shape[1]), int(pixels.shape[2])
        geometry = Geometry(height, width, self.spec)
        meta = self._meta(key)
        if meta is not None and (meta["height"], meta["width"]) != (height, width):
            start = 0  # the frame store was rebuilt at another resolution
        dtype = sketch_dtype(geometry)
        meta = {
            "height": height,
            "width": width,
            "dtype": dtype.name,
            "spec": self.spec.tag,
            "rows": start,
        }
        row_bytes = self._row_bytes(meta)
        if meta != self._meta(key):
            atomic_write_json(folder / META_FILE, meta)
        for name, size in ((DATA_FILE, row_bytes), (IDS_FILE, ID_BYTES)):
            path = folder / name
            path.touch()
            os.truncate(path, start * size)
        complete_crcs(folder / DATA_FILE, folder / CRC_FILE, start, row_bytes)
        done = start
        with ExitStack() as stack:
            files = [stack.enter_context(open(folder / n, "ab")) for n in (DATA_FILE, IDS_FILE)]
            files.append(stack.enter_context(open(folder / CRC_FILE, "ab")))
            data, id_file, crc_file = files
            while done < len(ids):
                stop = min(len(ids), done + chunk)
                sketches = sketch_frames(np.asarray(pixels[done:stop]), self.spec)
                raw = sketches.astype(dtype, copy=False).reshape(stop - done, -1).view(np.uint8)
                data.write(raw.tobytes())
                id_file.write(b"".join(ids[done:stop]))
                crc_file.write(row_crcs(raw).tobytes())
                for handle in files:
                    fsync_file(handle)
                meta["rows"] = stop
                atomic_write_json(folder / META_FILE, meta)
                bar.update(stop - done)
                done = stop
        return len(ids) - start

    # ------------------------------------------------------------------ reading

    def _lookup(self, frame_ids: Sequence[str]) -> tuple[list[Key], np.ndarray, np.ndarray]:
        """(keys, key code per id, store row per id) from the frame catalog.

        The catalog index is cached; ids it lacks trigger one reload (frames ingested since).
        """
        cols = ["frame_id", "satellite", "channel", "year", "store_row"]
        fresh = self._index is None
        if fresh:
            self._index = read_frames(self.workspace, columns=cols)
        remedy = ("frame", "catalog", "run `skysearch ingest` first")
        try:
            pos = catalog_positions(frame_ids, self._index["frame_id"], *remedy)
        except NotFoundError:
            if fresh:
                raise
            self._index = read_frames(self.workspace, columns=cols)
            pos = catalog_positions(frame_ids, self._index["frame_id"], *remedy)
        index = self._index
        names = pc.binary_join_element_wise(
            index["satellite"].take(pos),
            index["channel"].take(pos),
            pc.cast(index["year"].take(pos), pa.string()),
            "/",
        )
        encoded = names.combine_chunks().dictionary_encode()
        keys: list[Key] = []
        for name in encoded.dictionary.to_pylist():
            sat, chan, year = name.rsplit("/", 2)
            keys.append((sat, chan, int(year)))
        codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
        rows = index["store_row"].take(pos).to_numpy()
        return keys, codes, rows

    def pool(self, frame_ids: Sequence[str]) -> tuple[SketchPool, np.ndarray, Geometry]:
        """A pool holding these frames' sketches, their rows in it, and their geometry.

        Stored sketches are memory-mapped, not copied; frames not sketched yet are sketched
        on the fly from the frame store (run ``update()`` to store them).
        """
        keys, codes, rows = self._lookup(frame_ids)
        geometries = set()
        parts: list[np.ndarray] = []
        offsets = np.empty(len(keys), np.int64)
        global_rows = np.empty(len(rows), np.int64)
        missing: list[int] = []
        total = 0
        for code, key in enumerate(keys):
            stored = self.array(key)
            sel = np.nonzero(codes == code)[0]
            if len(stored):
                geometries.add(self.geometry(key))
                parts.append(stored)
                offsets[code] = total
                total += len(stored)
            have = rows[sel] < len(stored)
            global_rows[sel[have]] = offsets[code] + rows[sel[have]]
            missing.extend(sel[~have].tolist())
        if missing:
            fresh = FrameStore(self.workspace).read_many([frame_ids[i] for i in missing])
            geometries.add(Geometry(int(fresh.shape[1]), int(fresh.shape[2]), self.spec))
            parts.append(sketch_frames(fresh, self.spec))
            global_rows[missing] = total + np.arange(len(missing))
        if len(geometries) > 1:
            sizes = sorted(g.key for g in geometries)
            raise UsageError(
                f"frames of different working resolutions {sizes}: compare one product at a time"
            )
        return SketchPool(parts), global_rows, geometries.pop()

    def get_many(self, frame_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Sketches (n, B, cells) in the order asked, and the cell sizes (cells,)."""
        pool, rows, geometry = self.pool(frame_ids)
        return pool.take(rows), cell_sizes(geometry)
