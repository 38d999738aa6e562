"""Start-up's one search of each kind: loads every model before the service says it is ready
(first calls are slow), and says per kind why it is unavailable when it is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from skysearch.retrieval.store.filters import SearchFilters

from skysearch.errors import SkySearchError

if TYPE_CHECKING:
    from skysearch.retrieval.search import Searcher
    from skysearch.retrieval.service.catalogs import Catalogs


def warm_up(searcher: Searcher, catalogs: Catalogs, root: Path) -> dict[str, str]:
    """``{kind: "ok" or why not}`` for text, clip, frame and image search."""
    searches = {
        "text": _warm_text(searcher),
        "clip": _warm_clip(searcher, catalogs, root),
        "frame": _warm_frame(searcher, catalogs),
    }
    searches["image"] = searches["text"]
    return searches


def _warm_text(searcher: Searcher) -> str:
    """The text-image model, by one text search."""
    try:
        searcher.search_text("satellite image", SearchFilters(k=1))
    except SkySearchError as exc:
        return str(exc)
    return "ok"


def _warm_clip(searcher: Searcher, catalogs: Catalogs, root: Path) -> str:
    """The clip model, by one search for a catalog clip the latest clip model fits (a catalog
    holding other specs too is no reason to say clip search is unavailable)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from skysearch.encoders.registry import list_models, model_satellites
    from skysearch.retrieval.search import ClipQuery

    clips = catalogs.get("clip")
    if not clips.rows:
        return f"no clips in the clip catalog of {root}"
    table = clips.table
    models = list_models(searcher.settings.workspace, "clip")
    if models:  # none: the search below says how to make one
        data = models[-1].config.get("data", {})
        mine = table.filter(
            pc.and_(
                pc.and_(
                    pc.is_in(table["satellite"], pa.array(model_satellites(data), pa.string())),
                    pc.equal(pc.binary_join(table["channels"], "+"), "+".join(data["channels"])),
                ),
                pc.and_(
                    pc.equal(table["length"], data["length"]),
                    pc.equal(table["gap_minutes"], data["gap_minutes"]),
                ),
            )
        )
        table = mine if mine.num_rows else table  # none fits: the search says why
    try:
        searcher.search_clip(ClipQuery(clip_id=table["clip_id"][0].as_py()), SearchFilters(k=1))
    except SkySearchError as exc:
        return str(exc)
    return "ok"


def _warm_frame(searcher: Searcher, catalogs: Catalogs) -> str:
    """The latest frame model, by one search for one of its frames."""
    import pyarrow.compute as pc
    from skysearch.retrieval.search import FrameQuery

    try:
        _, record = searcher.models.frame_model(None, None, None)
        satellite, (channel,) = (
            record.config["data"]["satellite"],
            record.config["data"]["channels"],
        )
        table = catalogs.get("frame").table
        mine = table.filter(
            pc.and_(pc.equal(table["satellite"], satellite), pc.equal(table["channel"], channel))
        )
        if mine.num_rows == 0:
            return f"no {satellite} {channel} frames in the frame catalog"
        searcher.search_frame(FrameQuery(frame_id=mine["frame_id"][0].as_py()), SearchFilters(k=1))
    except SkySearchError as exc:
        return str(exc)
    return "ok"
