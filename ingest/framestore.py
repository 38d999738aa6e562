"""The frame store: working-resolution grey frames as uint8 arrays, memory-mapped.

Layout: ``<workspace>/frames/<satellite>/<channel>/<year>/frames.u8`` holds rows of H*W bytes
(append-only), ``frames.crc`` the CRC-32 of each row and ``meta.json`` the frame shape. Which
row belongs to which frame is recorded in the frame catalog (``store_row``), and a row counts
only once the catalog references it: the writer appends and fsyncs pixels (and their CRCs)
first and commits catalog rows after, and on start it truncates every array to the rows the
catalog knows. So a crash at any moment leaves at most an unreferenced tail, which the next
run cuts off and rewrites.

Every open checks an array against the catalog (cheap): ``meta.json`` readable and equal to
the profile's working resolution, every referenced row present, and the CRCs of the first,
middle and last referenced rows. A failed check is a ``DamagedError`` naming the file.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.checksums import (
    complete_crcs,
    crc_bytes,
    read_crcs,
    row_crcs,
    spot_mismatch,
)
from skysearch.ingest.profiles import load_profiles

from skysearch.atomic import atomic_write_json, file_identity, fsync_file
from skysearch.config import Workspace
from skysearch.errors import DamagedError, NotFoundError, SkySearchError, StoreError, UsageError

DATA_FILE = "frames.u8"
CRC_FILE = "frames.crc"
META_FILE = "meta.json"
LOCK_FILE = ".ingest.lock"
Key = tuple[str, str, int]


def store_path(workspace: Workspace, satellite: str, channel: str, year: int) -> Path:
    """Folder of one satellite/channel/year array."""
    return workspace.frame_store_dir / satellite / channel / str(int(year))


def read_shape(folder: Path) -> tuple[int, int]:
    """(height, width) from ``meta.json``; ``DamagedError`` if missing or unreadable."""
    path = folder / META_FILE
    try:
        meta = json.loads(path.read_text())
        height, width = int(meta["height"]), int(meta["width"])
    except FileNotFoundError:
        raise DamagedError(path, "missing") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DamagedError(path, f"unreadable ({exc})") from None
    if height <= 0 or width <= 0:
        raise DamagedError(path, f"frame shape {height}x{width}")
    return height, width


@dataclass(frozen=True)
class Expected:
    """What the catalog says one array must hold: ``rows`` referenced rows, each of ``shape``
    (the profile's working resolution; None when the profile is not known here)."""

    rows: int
    shape: tuple[int, int] | None


def _profile_shapes(workspace: Workspace) -> dict[str, tuple[int, int]]:
    """(height, width) of the frames each profile known here makes."""
    try:
        profiles = load_profiles(workspace=workspace)
    except SkySearchError:  # e.g. $SKYSEARCH_PROFILES names a folder gone since the ingest
        return {}
    return {name: (p.resolution[1], p.resolution[0]) for name, p in profiles.items()}


def expected_arrays(catalog: pa.Table, workspace: Workspace) -> dict[Key, Expected]:
    """Per array, what the catalog of ``workspace`` expects (``catalog`` needs satellite,
    channel, year, store_row, profile)."""
    rows: dict[Key, int] = {}
    profiles: dict[Key, str] = {}
    for sat, chan, year, row, profile in zip(
        catalog["satellite"].to_pylist(),
        catalog["channel"].to_pylist(),
        catalog["year"].to_pylist(),
        catalog["store_row"].to_pylist(),
        catalog["profile"].to_pylist(),
        strict=True,
    ):
        key = (sat, chan, int(year))
        rows[key] = max(rows.get(key, 0), int(row) + 1)
        profiles.setdefault(key, profile)
    shapes = _profile_shapes(workspace)
    return {key: Expected(n, shapes.get(profiles[key])) for key, n in rows.items()}


def frame_rows(catalog: pa.Table) -> dict[Key, dict[int, str]]:
    """Per array, the frame id of each store row the catalog references (``catalog`` needs
    satellite, channel, year, store_row, frame_id)."""
    out: dict[Key, dict[int, str]] = {}
    columns = ("satellite", "channel", "year", "store_row", "frame_id")
    for sat, chan, year, row, fid in zip(*(catalog[c].to_pylist() for c in columns), strict=True):
        out.setdefault((sat, chan, int(year)), {})[int(row)] = fid
    return out


def check_array(folder: Path, expected: Expected, spot: bool = True) -> tuple[int, int]:
    """The cheap checks of one array against the catalog; returns its frame shape.

    Raises ``DamagedError`` naming the file at fault. Rows past ``expected.rows`` (an ingest
    appending, or a killed one's tail) are not looked at.
    """
    height, width = read_shape(folder)
    if expected.shape is not None and (height, width) != expected.shape:
        want = "x".join(map(str, expected.shape))
        raise DamagedError(
            folder / META_FILE,
            f"says {height}x{width} frames, the source profile stores {want} frames",
        )
    data = folder / DATA_FILE
    size = data.stat().st_size if data.exists() else 0
    if size < expected.rows * height * width:
        raise DamagedError(
            data,
            f"{size} bytes hold {size // (height * width)} whole {height}x{width} frames, "
            f"the catalog references {expected.rows}",
        )
    if spot and expected.rows:
        crcs = read_crcs(folder / CRC_FILE, expected.rows)
        mapped = np.memmap(data, np.uint8, "r", shape=(expected.rows, height * width))
        bad = spot_mismatch(mapped, crcs)
        if bad is not None:
            raise _row_damaged(data, bad)
    return height, width


def _check_still_holds(data: Path, rows: int, row_bytes: int) -> None:
    """A mapped file cut short after it was mapped (by hand, a full disk, a bad restore) would
    kill the process with SIGBUS when a row past its end is read: one stat before reading."""
    try:
        size = data.stat().st_size
    except OSError as exc:
        raise DamagedError(data, f"unreadable ({exc.strerror})") from None
    if size < rows * row_bytes:
        raise DamagedError(
            data, f"{size} bytes hold {size // row_bytes} whole frames, row {rows - 1} is wanted"
        )


@dataclass(frozen=True)
class _Index:
    """One reading of the catalog: frame id -> (array, row), what each array must hold, and
    the arrays mapped so far. Replaced whole by ``refresh``, so a reader that took it sees
    one consistent catalog even while another thread refreshes."""

    sorted_ids: np.ndarray  # frame ids as S36, sorted
    order: np.ndarray  # sorted position -> catalog row
    keys: list[Key]
    key_codes: np.ndarray  # catalog row -> index into keys
    rows: np.ndarray  # catalog row -> store row
    expected: dict[Key, Expected]
    # rows, CRCs, and the files' inodes when mapped (see ``_inodes``)
    maps: dict[Key, tuple[np.memmap, np.ndarray, tuple]] = field(default_factory=dict)


def _inodes(folder: Path) -> tuple[int | None, ...]:
    """The inodes of an array's frames and CRC files (None: not there): a repair replaces
    both (atomic writes: another inode), an ingest appends to them in place."""
    files = file_identity(folder / DATA_FILE, folder / CRC_FILE)  # (inode, size, mtime)
    return tuple(found[0] if found else None for found in files)


def _row_damaged(data: Path, row: int) -> DamagedError:
    """The error of a frame row that does not match its stored CRC."""
    return DamagedError(data, f"frame row {row} does not match its checksum", row=row)


def check_row(data: Path, row: int) -> None:
    """``DamagedError`` unless frame ``row`` of the array file ``data`` matches its stored
    CRC: a damaged row a search met, checked again after a repair (the cheap checks sample
    three rows)."""
    height, width = read_shape(data.parent)
    _check_still_holds(data, row + 1, height * width)
    with open(data, "rb") as handle:
        handle.seek(row * height * width)
        pixels = np.frombuffer(handle.read(height * width), np.uint8).reshape(1, -1)
    crcs = read_crcs(data.parent / CRC_FILE, row + 1)
    if row < len(crcs) and row_crcs(pixels)[0] != crcs[row]:
        raise _row_damaged(data, row)


class FrameStore:
    """Read frames by id: ``read(id) -> (H, W)``, ``read_many(ids) -> (n, H, W)`` uint8.

    The id -> (array, row) index comes from the frame catalog when first needed; call
    ``refresh()`` to see frames ingested after that (safe while other threads read).
    """

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._index: _Index | None = None

    def refresh(self) -> None:
        """Reload the index from the catalog (after another ingest)."""
        cols = ["frame_id", "satellite", "channel", "year", "store_row", "profile"]
        table = read_frames(self.workspace, columns=cols)
        triples = list(
            zip(
                table["satellite"].to_pylist(),
                table["channel"].to_pylist(),
                table["year"].to_pylist(),
                strict=True,
            )
        )
        keys = sorted(set(triples))
        code_of = {key: i for i, key in enumerate(keys)}
        ids = np.asarray(table["frame_id"].to_numpy(zero_copy_only=False), dtype="S36")
        order = np.argsort(ids, kind="stable")
        self._index = _Index(
            sorted_ids=ids[order],
            order=order,
            keys=keys,
            key_codes=np.fromiter((code_of[t] for t in triples), np.int32, len(triples)),
            rows=table["store_row"].to_numpy(),
            expected=expected_arrays(table, self.workspace),
        )

    def _current(self) -> _Index:
        if self._index is None:
            self.refresh()
        assert self._index is not None
        return self._index

    def __len__(self) -> int:
        return len(self._current().rows)

    def array(self, satellite: str, channel: str, year: int) -> np.memmap:
        """The memory-mapped (n, H, W) array of one satellite/channel/year: every row the
        catalog references (checked on first use; ``DamagedError`` if it fails)."""
        return self._array(self._current(), (satellite, channel, int(year)))[0]

    def _array(self, index: _Index, key: Key) -> tuple[np.memmap, np.ndarray]:
        """The array of ``key`` and its rows' stored CRCs (fewer for files from before them);
        mapped again when its files were replaced since (a running service sees a repair,
        where the old mapping held the damaged file and the CRCs read before)."""
        folder = store_path(self.workspace, *key)
        identity = _inodes(folder)
        cached = index.maps.get(key)
        if cached is not None and cached[2] == identity:
            return cached[0], cached[1]
        expected = index.expected.get(key)
        if expected is None:
            raise NotFoundError(f"no frames stored for {'/'.join(map(str, key))}")
        try:
            height, width = check_array(folder, expected)
            if expected.rows == 0:
                return np.zeros((0, height, width), np.uint8), np.zeros(0, np.uint32)  # type: ignore[return-value]
            shape = (expected.rows, height, width)
            mapped = np.memmap(folder / DATA_FILE, np.uint8, "r", shape=shape)
            crcs = read_crcs(folder / CRC_FILE, expected.rows)
        except PermissionError as exc:
            raise UsageError(f"cannot read the frame store: {exc}") from None
        index.maps[key] = (mapped, crcs, identity)
        return mapped, crcs

    def read(self, frame_id: str) -> np.ndarray:
        """One frame, (H, W) uint8."""
        return self.read_many([frame_id])[0]

    @staticmethod
    def _lookup(index: _Index, frame_ids: Sequence[str]) -> np.ndarray:
        """Catalog rows of ids by binary search (a hash build per call costs ~1 s at 1M)."""
        wanted = np.asarray(list(frame_ids), dtype="S36")
        known = index.sorted_ids
        if len(known) == 0:
            pos = np.zeros(len(wanted), np.int64)
            found = np.zeros(len(wanted), bool)
        else:
            pos = np.minimum(np.searchsorted(known, wanted), len(known) - 1)
            found = known[pos] == wanted
        if not found.all():
            missing = wanted[~found][0].decode()
            raise NotFoundError(
                f"{int((~found).sum())} frame id(s) not in the catalog (first: {missing}); "
                "run `skysearch ingest` first"
            )
        return index.order[pos]

    def read_many(self, frame_ids: Sequence[str]) -> np.ndarray:
        """Frames in the order asked, (n, H, W) uint8 (one shape: ids of one product)."""
        if isinstance(frame_ids, str):  # would be read as one id per character
            raise UsageError(
                "{frame_ids} is a list of frame ids; read(id) reads one", params=["frame_ids"]
            )
        index = self._current()
        idx = self._lookup(index, frame_ids)
        codes = index.key_codes[idx]
        rows = index.rows[idx]
        arrays = {int(c): self._array(index, index.keys[c]) for c in np.unique(codes)}
        shapes = {a.shape[1:] for a, _ in arrays.values()}
        if len(shapes) > 1:
            raise UsageError(
                f"frames of different sizes {sorted(shapes)} cannot share one array; "
                "read one satellite product at a time"
            )
        height, width = shapes.pop() if shapes else (0, 0)
        out = np.empty((len(idx), height, width), np.uint8)
        for code, (arr, crcs) in arrays.items():
            sel = np.nonzero(codes == code)[0]
            data = store_path(self.workspace, *index.keys[code]) / DATA_FILE
            _check_still_holds(data, int(rows[sel].max()) + 1, height * width)
            out[sel] = arr[rows[sel]]
            checked = sel[rows[sel] < len(crcs)]  # a store from before checksums has none
            bad = (
                np.nonzero(row_crcs(out[checked]) != crcs[rows[checked]])[0] if len(checked) else []
            )
            if len(bad):
                row = int(rows[checked[bad[0]]])
                raise _row_damaged(data, row)
        return out


class StoreWriter:
    """Append-only writer used by ingest (one at a time per workspace, under a lock)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._files: dict[Key, tuple[BinaryIO, BinaryIO]] = {}  # (pixels, CRCs)
        self._counts: dict[Key, int] = {}
        self._shapes: dict[Key, tuple[int, int]] = {}
        self._lock: BinaryIO | None = None

    def __enter__(self) -> StoreWriter:
        self.workspace.frame_store_dir.mkdir(parents=True, exist_ok=True)
        path = self.workspace.frame_store_dir / LOCK_FILE
        try:
            self._lock = open(path, "ab")  # noqa: SIM115
        except OSError as exc:
            raise StoreError(f"cannot open the ingest lock {path}: {exc}") from None
        try:  # a POSIX record lock: decode workers forked later do not inherit it
            fcntl.lockf(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise StoreError(
                f"another ingest is writing to {self.workspace.root}; wait for it to finish "
                "or use another {workspace}",
                params=["workspace"],
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        for handles in self._files.values():
            for handle in handles:
                handle.close()
        self._files.clear()
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def reconcile(self, committed: pa.Table) -> int:
        """Check every array against the catalog, then cut it to the rows the catalog
        references; returns frames dropped. A damaged array stops the ingest (``DamagedError``)
        before anything is written, so nothing is ever appended to a misread store.

        ``committed`` needs satellite, channel, year, store_row, profile columns.
        """
        expected = expected_arrays(committed, self.workspace)
        folders = {store_path(self.workspace, *key) for key in expected}
        folders |= {d.parent for d in self.workspace.frame_store_dir.glob(f"*/*/*/{DATA_FILE}")}
        dropped = 0
        for folder in sorted(folders):
            data = folder / DATA_FILE
            key = (folder.parent.parent.name, folder.parent.name, int(folder.name))
            want = expected.get(key, Expected(0, None))
            if want.rows == 0 and not (folder / META_FILE).exists():
                data.unlink(missing_ok=True)  # written before its meta.json: never committed
                (folder / CRC_FILE).unlink(missing_ok=True)
                continue
            height, width = check_array(folder, want)
            frame_bytes = height * width
            dropped += max(0, data.stat().st_size // frame_bytes - want.rows)
            os.truncate(data, want.rows * frame_bytes)
            complete_crcs(data, folder / CRC_FILE, want.rows, frame_bytes)
        self._counts = {key: want.rows for key, want in expected.items()}
        return dropped

    def append(self, satellite: str, channel: str, year: int, frame: np.ndarray) -> int:
        """Append one (H, W) uint8 frame; returns its row (durable only after ``sync``)."""
        key = (satellite, channel, int(year))
        handles = self._files.get(key)
        if handles is None:
            handles = self._open(key, frame.shape)
        if frame.shape != self._shapes[key] or frame.dtype != np.uint8:
            raise UsageError(
                f"frame store {satellite}/{channel}/{year} holds {self._shapes[key]} frames, "
                f"got {frame.shape} {frame.dtype}: the profile's resolution changed; "
                "use a new {workspace}",
                params=["workspace"],
            )
        pixels = np.ascontiguousarray(frame)
        handles[0].write(pixels.tobytes())
        handles[1].write(crc_bytes(pixels))
        row = self._counts.get(key, 0)
        self._counts[key] = row + 1
        return row

    def _open(self, key: Key, shape: tuple[int, ...]) -> tuple[BinaryIO, BinaryIO]:
        folder = store_path(self.workspace, *key)
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / META_FILE).exists():
            meta = {"height": shape[0], "width": shape[1], "dtype": "uint8"}
            atomic_write_json(folder / META_FILE, meta)
        self._shapes[key] = read_shape(folder)
        handles = (open(folder / DATA_FILE, "ab"), open(folder / CRC_FILE, "ab"))  # noqa: SIM115
        self._files[key] = handles
        return handles

    def sync(self) -> None:
        """Flush and fsync every array (and its CRCs) written since the last sync."""
        for handles in self._files.values():
            for handle in handles:
                fsync_file(handle)
