"""Contact sheet of a clip or frame search: the query clip's frames (or the query frame) on the
first row, each hit below.

Every row is labelled on the left (query / rank, score, start, channel, satellite; "grid" is
the re-rank's grid-metric similarity, "cosine" the vector similarity) and every frame is
captioned with its UTC time. One channel is shown (the first, or ``channel``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from skysearch.atomic import image_format, save_image
from skysearch.config import Workspace
from skysearch.errors import UsageError
from skysearch.timeutil import parse_time

if TYPE_CHECKING:
    from skysearch.ingest.framestore import FrameStore
    from skysearch.retrieval.search.results import SearchResult

LABEL_WIDTH = 190
CAPTION_HEIGHT = 16
PAD = 4
BACKGROUND = (24, 24, 28)
QUERY_BACKGROUND = (52, 44, 20)


@dataclass(frozen=True)
class SheetLayout:
    """Pixel geometry of a sheet: ``rows`` (query + hits) x ``columns`` frames."""

    rows: int
    columns: int
    tile_width: int
    tile_height: int

    @property
    def row_height(self) -> int:
        return CAPTION_HEIGHT + self.tile_height + PAD

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the image."""
        width = LABEL_WIDTH + self.columns * (self.tile_width + PAD) + PAD
        return width, PAD + self.rows * self.row_height

    def tile_origin(self, row: int, column: int) -> tuple[int, int]:
        return LABEL_WIDTH + PAD + column * (self.tile_width + PAD), PAD + row * self.row_height


def layout_for(
    frame_shape: tuple[int, int], rows: int, columns: int, tile_width: int
) -> SheetLayout:
    """Tiles keep the frames' aspect ratio (``frame_shape`` = (H, W))."""
    height, width = frame_shape
    tile_height = max(1, round(tile_width * height / width))
    return SheetLayout(rows, columns, tile_width, tile_height)


def _frame_times(workspace: Workspace, frame_ids: list[str]) -> dict[str, datetime]:
    import pyarrow as pa
    import pyarrow.compute as pc
    from skysearch.ingest.catalog import read_frames

    table = read_frames(workspace, columns=["frame_id", "time"])
    table = table.filter(pc.is_in(table["frame_id"], value_set=pa.array(frame_ids, pa.string())))
    return dict(zip(table["frame_id"].to_pylist(), table["time"].to_pylist(), strict=True))


def _captions(
    start: str | None, gap_minutes: int, ids: list[str], times: dict[str, datetime]
) -> list[str]:
    out = []
    for k, fid in enumerate(ids):
        when = times.get(fid)
        if when is None and start:
            when = parse_time(start) + timedelta(minutes=gap_minutes * k)
        out.append(f"{when:%m-%d %H:%M}" if when else f"t{k}")
    return out


def _channel_ids(frame_ids: list, channel: int) -> list[str]:
    """The frame ids of one channel: a clip's per-channel lists, or a frame hit's own id."""
    if frame_ids and isinstance(frame_ids[0], list | tuple):
        return list(frame_ids[min(channel, len(frame_ids) - 1)])
    return list(frame_ids)


def write_contact_sheet(
    workspace: Workspace,
    result: SearchResult,
    path: str | Path,
    tile_width: int = 160,
    channel: int = 0,
    frame_store: FrameStore | None = None,
) -> dict[str, Any]:
    """Render a clip or frame :class:`~skysearch.retrieval.search.results.SearchResult` to an
    image at ``path`` (PNG, JPEG...: its suffix, :func:`~skysearch.atomic.image_format`).

    Returns ``{"path", "width", "height", "rows", "columns"}``.
    """
    from skysearch.ingest.framestore import FrameStore

    query = result.query
    if query.get("kind") not in ("clip", "frame") or result.query_frames is None:
        raise UsageError("a contact sheet shows a clip or frame search and its query")
    image_format(Path(path), "contact sheet")  # refused before any frame is read
    store = frame_store or FrameStore(workspace)
    q = np.asarray(result.query_frames)
    channel = min(channel, q.shape[0] - 1)
    rows: list[tuple[list[str], np.ndarray, list[str], bool]] = []
    hit_ids = [_channel_ids(item.frame_ids, channel) for item in result.results]
    q_ids = _channel_ids(query.get("frame_ids") or [], channel) or [""] * q.shape[1]
    times = _frame_times(workspace, [fid for ids in hit_ids + [q_ids] for fid in ids if fid])
    gap = query.get("gap_minutes") or 0
    q_caps = _captions(query.get("start"), gap, q_ids, times)
    chan_name = query["channels"][channel]
    shape = (
        f"frame {query['mode']}"
        if query["kind"] == "frame"
        else f"{query['length']}x{gap}m {query['mode']}"
    )
    q_label = [
        "QUERY",
        (query.get("start") or "outside the archive")[:16].replace("T", " "),
        f"{chan_name} {query['satellite']}",
        shape,
    ]
    rows.append((q_label, q[channel], q_caps, True))
    for item, ids in zip(result.results, hit_ids, strict=True):
        frames = store.read_many(ids) if ids else np.zeros_like(q[channel])
        label = [
            f"#{item.rank}  {'grid' if item.rerank_score is not None else 'score'} "
            f"{item.score:.4f}",
            (item.start or "")[:16].replace("T", " "),
            f"{','.join(item.channels)} {item.satellite}",
        ]
        if item.rerank_score is not None and item.vector_score is not None:
            label.append(f"cosine {item.vector_score:.4f}")
        rows.append(
            (label, frames, _captions(item.start, item.gap_minutes or 0, ids, times), False)
        )
    columns = max(len(r[1]) for r in rows)
    layout = layout_for(q.shape[-2:], len(rows), columns, tile_width)
    canvas = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=12)
    small = ImageFont.load_default(size=11)
    for r, (label, frames, captions, is_query) in enumerate(rows):
        top = PAD + r * layout.row_height
        if is_query:
            draw.rectangle(
                (0, top - PAD, layout.size[0], top + layout.row_height - PAD), QUERY_BACKGROUND
            )
        for n, line in enumerate(label):
            color = (255, 214, 90) if (is_query and n == 0) else (235, 235, 235)
            draw.text((6, top + CAPTION_HEIGHT + n * 15), line, fill=color, font=font)
        for k, frame in enumerate(frames):
            left, ttop = layout.tile_origin(r, k)
            tile = Image.fromarray(np.asarray(frame, dtype=np.uint8)).resize(
                (layout.tile_width, layout.tile_height), Image.Resampling.BILINEAR
            )
            canvas.paste(tile.convert("RGB"), (left, ttop + CAPTION_HEIGHT))
            if k < len(captions):
                draw.text((left + 2, ttop + 2), captions[k], fill=(200, 200, 200), font=small)
    out = Path(path)
    save_image(canvas, out, "contact sheet")
    width, height = layout.size
    return {
        "path": str(out),
        "width": width,
        "height": height,
        "rows": len(rows),
        "columns": columns,
    }
