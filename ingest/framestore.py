"""The frame store: working-resolution grey frames as uint8 arrays, memory-mapped.

Layout: ``<workspace>/frames/<satellite>/<channel>/<year>/frames.u8`` holds rows of H*W bytes
(append-only) and ``meta.json`` its frame shape. Which row belongs to which frame is recorded
in the frame catalog (``store_row``), and a row counts only once the catalog references it:
the writer appends and fsyncs pixels first and commits catalog rows after, and on start it
truncates every array to the rows the catalog knows. So a crash at any moment leaves at most
an unreferenced tail, which the next run cuts off and rewrites.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pyarrow as pa
from skysearch.ingest.catalog import fsync_dir, read_frames

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, StoreError, UsageError

DATA_FILE = "frames.u8"
META_FILE = "meta.json"
LOCK_FILE = ".ingest.lock"


def store_path(workspace: Workspace, satellite: str, channel: str, year: int) -> Path:
    """Folder of one satellite/channel/year array."""
    return workspace.frame_store_dir / satellite / channel / str(int(year))


def _read_shape(folder: Path) -> tuple[int, int]:
    meta = json.loads((folder / META_FILE).read_text())
    return int(meta["height"]), int(meta["width"])


class FrameStore:
    """Read frames by id: ``read(id) -> (H, W)``, ``read_many(ids) -> (n, H, W)`` uint8.

    The id -> (array, row) index comes from the frame catalog when first needed; call
    ``refresh()`` to see frames ingested after that.
    """

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._sorted_ids: np.ndarray | None = None  # frame ids as S36, sorted
        self._order: np.ndarray = np.empty(0, np.int64)  # sorted position -> catalog row
        self._keys: list[tuple[str, str, int]] = []
        self._key_codes: np.ndarray = np.empty(0, np.int32)
        self._rows: np.ndarray = np.empty(0, np.int64)
        self._maps: dict[tuple[str, str, int], np.memmap] = {}
        self._shapes: dict[tuple[str, str, int], tuple[int, int]] = {}

    def refresh(self) -> None:
        """Reload the index from the catalog (after another ingest)."""
        cols = ["frame_id", "satellite", "channel", "year", "store_row"]
        table = read_frames(self.workspace, columns=cols)
        triples = list(
            zip(
                table["satellite"].to_pylist(),
                table["channel"].to_pylist(),
                table["year"].to_pylist(),
                strict=True,
            )
        )
        self._keys = sorted(set(triples))
        code_of = {key: i for i, key in enumerate(self._keys)}
        self._key_codes = np.fromiter((code_of[t] for t in triples), np.int32, len(triples))
        self._rows = table["store_row"].to_numpy()
        ids = np.asarray(table["frame_id"].to_numpy(zero_copy_only=False), dtype="S36")
        self._order = np.argsort(ids, kind="stable")
        self._sorted_ids = ids[self._order]
        self._maps.clear()

    def __len__(self) -> int:
        if self._sorted_ids is None:
            self.refresh()
        return len(self._rows)

    def array(self, satellite: str, channel: str, year: int) -> np.memmap:
        """The whole memory-mapped (n, H, W) array of one satellite/channel/year."""
        key = (satellite, channel, int(year))
        cached = self._maps.get(key)
        if cached is not None:
            return cached
        folder = store_path(self.workspace, *key)
        if not (folder / DATA_FILE).exists():
            raise NotFoundError(f"no frames stored for {satellite}/{channel}/{year}")
        height, width = _read_shape(folder)
        size = (folder / DATA_FILE).stat().st_size
        count = size // (height * width)
        if count == 0:
            return np.zeros((0, height, width), np.uint8)  # type: ignore[return-value]
        mapped = np.memmap(folder / DATA_FILE, np.uint8, "r", shape=(count, height, width))
        self._maps[key] = mapped
        return mapped

    def _shape(self, key: tuple[str, str, int]) -> tuple[int, int]:
        if key not in self._shapes:
            self._shapes[key] = _read_shape(store_path(self.workspace, *key))
        return self._shapes[key]

    def read(self, frame_id: str) -> np.ndarray:
        """One frame, (H, W) uint8."""
        return self.read_many([frame_id])[0]

    def _lookup(self, frame_ids: Sequence[str]) -> np.ndarray:
        """Catalog rows of ids by binary search (a hash build per call costs ~1 s at 1M)."""
        assert self._sorted_ids is not None
        wanted = np.asarray(list(frame_ids), dtype="S36")
        if len(self._sorted_ids) == 0:
            pos = np.zeros(len(wanted), np.int64)
            found = np.zeros(len(wanted), bool)
        else:
            pos = np.minimum(np.searchsorted(self._sorted_ids, wanted), len(self._sorted_ids) - 1)
            found = self._sorted_ids[pos] == wanted
        if not found.all():
            missing = wanted[~found][0].decode()
            raise NotFoundError(
                f"{int((~found).sum())} frame id(s) not in the catalog (first: {missing}); "
                "run `skysearch ingest` first"
            )
        return self._order[pos]

    def read_many(self, frame_ids: Sequence[str]) -> np.ndarray:
        """Frames in the order asked, (n, H, W) uint8 (one shape: ids of one product)."""
        if self._sorted_ids is None:
            self.refresh()
        assert self._sorted_ids is not None
        idx = self._lookup(frame_ids)
        codes = self._key_codes[idx]
        rows = self._rows[idx]
        shapes = {self._shape(self._keys[c]) for c in set(codes.tolist())}
        if len(shapes) > 1:
            raise UsageError(
                f"frames of different sizes {sorted(shapes)} cannot share one array; "
                "read one satellite product at a time"
            )
        height, width = shapes.pop() if shapes else (0, 0)
        out = np.empty((len(idx), height, width), np.uint8)
        for code in np.unique(codes):
            sel = np.nonzero(codes == code)[0]
            arr = self.array(*self._keys[code])
            if rows[sel].max() >= len(arr):  # grew since mapped
                self._maps.pop(self._keys[code], None)
                arr = self.array(*self._keys[code])
            out[sel] = arr[rows[sel]]
        return out


class StoreWriter:
    """Append-only writer used by ingest (one at a time per workspace, under a lock)."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._files: dict[tuple[str, str, int], BinaryIO] = {}
        self._counts: dict[tuple[str, str, int], int] = {}
        self._shapes: dict[tuple[str, str, int], tuple[int, int]] = {}
        self._lock: BinaryIO | None = None

    def __enter__(self) -> StoreWriter:
        self.workspace.frame_store_dir.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.workspace.frame_store_dir / LOCK_FILE, "ab")  # noqa: SIM115
        try:  # a POSIX record lock: decode workers forked later do not inherit it
            fcntl.lockf(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise StoreError(
                f"another ingest is writing to {self.workspace.root}; wait for it to finish "
                "or use another --workspace"
            ) from None
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()
        if self._lock is not None:
            self._lock.close()  # releases the lock
            self._lock = None

    def reconcile(self, committed: pa.Table) -> int:
        """Cut every array to the rows the catalog references; returns frames dropped.

        ``committed`` needs satellite, channel, year, store_row columns.
        """
        counts: dict[tuple[str, str, int], int] = {}
        for sat, chan, year, row in zip(
            committed["satellite"].to_pylist(),
            committed["channel"].to_pylist(),
            committed["year"].to_pylist(),
            committed["store_row"].to_pylist(),
            strict=True,
        ):
            key = (sat, chan, int(year))
            counts[key] = max(counts.get(key, 0), int(row) + 1)
        dropped = 0
        for data in self.workspace.frame_store_dir.glob(f"*/*/*/{DATA_FILE}"):
            folder = data.parent
            key = (folder.parent.parent.name, folder.parent.name, int(folder.name))
            if not (folder / META_FILE).exists():
                data.unlink()
                continue
            height, width = _read_shape(folder)
            keep = counts.get(key, 0) * height * width
            size = data.stat().st_size
            if size > keep:
                dropped += (size - keep) // (height * width)
                os.truncate(data, keep)
        self._counts = counts
        return dropped

    def append(self, satellite: str, channel: str, year: int, frame: np.ndarray) -> int:
        """Append one (H, W) uint8 frame; returns its row (durable only after ``sync``)."""
        key = (satellite, channel, int(year))
        handle = self._files.get(key)
        if handle is None:
            handle = self._open(key, frame.shape)
        if frame.shape != self._shapes[key] or frame.dtype != np.uint8:
            raise UsageError(
                f"frame store {satellite}/{channel}/{year} holds {self._shapes[key]} frames, "
                f"got {frame.shape} {frame.dtype}: the profile's resolution changed; "
                "use a new --workspace"
            )
        handle.write(np.ascontiguousarray(frame).tobytes())
        row = self._counts.get(key, 0)
        self._counts[key] = row + 1
        return row

    def _open(self, key: tuple[str, str, int], shape: tuple[int, ...]) -> BinaryIO:
        folder = store_path(self.workspace, *key)
        folder.mkdir(parents=True, exist_ok=True)
        meta = folder / META_FILE
        if not meta.exists():
            tmp = meta.with_name(META_FILE + ".tmp")
            with open(tmp, "w") as handle:
                json.dump({"height": shape[0], "width": shape[1], "dtype": "uint8"}, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, meta)
            fsync_dir(folder)
        self._shapes[key] = _read_shape(folder)
        handle = open(folder / DATA_FILE, "ab")  # noqa: SIM115
        self._files[key] = handle
        return handle

    def sync(self) -> None:
        """Flush and fsync every array written since the last sync."""
        for handle in self._files.values():
            handle.flush()
            os.fsync(handle.fileno())
