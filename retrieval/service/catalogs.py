"""The frame and clip catalogs as the service serves them: rows by id, metadata, thumbnails.

A catalog is read again (the frame store's index with the frame catalog) when its files change,
so a running service answers for frames and clips loaded after it started (``skysearch update``).
Nothing from a request becomes a path: ids must be UUIDs and are looked up in the catalogs.
"""

from __future__ import annotations

import io
import logging
import threading
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from PIL import Image
from skysearch.retrieval.service.wire import THUMB_DEFAULT, THUMB_MAX, THUMB_MIN

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError
from skysearch.timeutil import to_rfc3339

if TYPE_CHECKING:
    from skysearch.ingest.framestore import FrameStore

log = logging.getLogger("skysearch.service")


def canonical_id(value: str, what: str) -> str:
    """A frame/clip id as a canonical UUID string, or a UsageError (never a path)."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise UsageError(f"{what} id {value!r} is not a UUID") from None


def thumbnail(pixels: np.ndarray, max_side: int) -> np.ndarray:
    """A thumbnail of grey uint8 (H, W): downscaled (area average) so the longest side is
    <= ``max_side``; never enlarged."""
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8))
    scale = max_side / max(image.size)
    if scale < 1:
        size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.BOX)
    return np.asarray(image)


def png_bytes(pixels: np.ndarray) -> bytes:
    """Grey uint8 (H, W) or RGB (H, W, 3) -> PNG bytes."""
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def _thumb_size(size: int) -> int:
    if not THUMB_MIN <= size <= THUMB_MAX:
        raise UsageError(f"thumbnail size must be in {THUMB_MIN}..{THUMB_MAX}, got {size}")
    return size


class CatalogIndex:
    """Rows of a catalog table by id."""

    def __init__(self, table: pa.Table, key: str) -> None:
        self.table = table
        self.rows = {value: i for i, value in enumerate(table[key].to_pylist())}

    def row(self, key: str) -> dict[str, Any] | None:
        i = self.rows.get(key)
        return None if i is None else self.table.slice(i, 1).to_pylist()[0]


class Catalogs:
    """The workspace's frame and clip catalogs by id; ``frame_store`` gives the (shared) frame
    store whose index is refreshed with the frame catalog. Safe to share between threads."""

    def __init__(self, workspace: Workspace, frame_store: Callable[[], FrameStore]) -> None:
        self.workspace = workspace
        self._frame_store = frame_store
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[frozenset, CatalogIndex]] = {}  # what: (stamp, rows)

    def get(self, what: str) -> CatalogIndex:
        """The ``frame`` or ``clip`` catalog by id, read again (with the frame store's index)
        when its files have changed since it was last read."""
        from skysearch.ingest.catalog import catalog_stamp, read_frames
        from skysearch.ingest.clips import read_clips

        ws = self.workspace
        stamp = catalog_stamp(ws.frames_catalog if what == "frame" else ws.clips_catalog)
        with self._lock:
            cached = self._cache.get(what)
            if cached is not None and cached[0] == stamp:
                return cached[1]
            if what == "frame":
                cols = ["frame_id", "satellite", "channel", "time", "width", "height"]
                index = CatalogIndex(read_frames(ws, columns=cols), "frame_id")
                if index.rows:
                    self._frame_store().refresh()
            else:
                cols = ["clip_id", "satellite", "channels", "start", "end", "length"]
                cols += ["gap_minutes", "frame_ids"]
                index = CatalogIndex(read_clips(ws).select(cols), "clip_id")
            if cached is not None:
                log.info("%s catalog changed: %d rows now", what, len(index.rows))
            self._cache[what] = (stamp, index)
            return index

    def stamp(self, what: str) -> frozenset:
        """The stamp of the ``frame`` or ``clip`` catalog as last read (read again if changed):
        a cache of what the catalog's frames look like keys by it."""
        self.get(what)
        with self._lock:
            return self._cache[what][0]

    def _lookup(self, value: str, what: str) -> tuple[str, dict[str, Any]]:
        """(canonical id, catalog row) of a frame or clip id; 400 if not a UUID, 404 if unknown."""
        key = canonical_id(value, what)
        row = self.get(what).row(key)
        if row is None:
            raise NotFoundError(f"{what} {key} is not in the {what} catalog")
        return key, row

    def frame(self, frame_id: str) -> dict[str, Any]:
        """A frame's catalog metadata."""
        fid, row = self._lookup(frame_id, "frame")
        return {
            "frame_id": fid,
            "satellite": row["satellite"],
            "channel": row["channel"],
            "time": to_rfc3339(row["time"]),
            "source_width": row["width"],
            "source_height": row["height"],
            "thumbnail": f"/frames/{fid}/thumbnail.png",
        }

    def clip(self, clip_id: str) -> dict[str, Any]:
        """A clip's catalog metadata, with its frames' ids per channel."""
        cid, row = self._lookup(clip_id, "clip")
        return {
            "clip_id": cid,
            "satellite": row["satellite"],
            "channels": list(row["channels"]),
            "start": to_rfc3339(row["start"]),
            "end": to_rfc3339(row["end"]),
            "length": row["length"],
            "gap_minutes": row["gap_minutes"],
            "frame_ids": [list(ids) for ids in row["frame_ids"]],
            "thumbnail": f"/clips/{cid}/thumbnail.png",
        }

    def frame_thumbnail(self, frame_id: str, size: int = THUMB_DEFAULT) -> bytes:
        """The frame at working resolution as a grey PNG, longest side <= ``size``."""
        meta = self.frame(frame_id)
        pixels = self._frame_store().read(meta["frame_id"])
        return png_bytes(thumbnail(pixels, _thumb_size(size)))

    def clip_frames(self, clip_id: str, size: int = THUMB_DEFAULT) -> tuple[str, list[np.ndarray]]:
        """(canonical id, the clip's frames of its first channel in time order), each frame's
        longest side <= ``size``."""
        meta = self.clip(clip_id)
        self.get("frame")  # the frame store's index, as new as the clip catalog
        frames = self._frame_store().read_many(meta["frame_ids"][0])
        side = _thumb_size(size)
        return meta["clip_id"], [thumbnail(f, side) for f in frames]

    def clip_thumbnail(self, clip_id: str, size: int = THUMB_DEFAULT) -> bytes:
        """The clip's frames (first channel, time left to right) as one PNG strip; each
        frame's longest side <= ``size``."""
        return png_bytes(np.concatenate(self.clip_frames(clip_id, size)[1], axis=1))

    def archive(self) -> dict[str, Any]:
        """What the catalogs hold: counts, time range, channels per satellite, clip specs."""
        import pyarrow.compute as pc

        frames, clips = self.get("frame").table, self.get("clip").table
        satellites: dict[str, set[str]] = {}
        for sat, chan in zip(
            frames["satellite"].to_pylist(), frames["channel"].to_pylist(), strict=True
        ):
            satellites.setdefault(sat, set()).add(chan)
        specs: dict[tuple, int] = {}
        for row in clips.select(["satellite", "channels", "length", "gap_minutes"]).to_pylist():
            key = (row["satellite"], tuple(row["channels"]), row["length"], row["gap_minutes"])
            specs[key] = specs.get(key, 0) + 1
        times = pc.min_max(frames["time"]) if frames.num_rows else None
        return {
            "frames": frames.num_rows,
            "clips": clips.num_rows,
            "start": to_rfc3339(times["min"].as_py()) if times else None,
            "end": to_rfc3339(times["max"].as_py()) if times else None,
            "satellites": {sat: sorted(chans) for sat, chans in sorted(satellites.items())},
            "clip_specs": [
                {"satellite": s, "channels": list(c), "length": n, "gap_minutes": g, "clips": k}
                for (s, c, n, g), k in sorted(specs.items())
            ],
        }
