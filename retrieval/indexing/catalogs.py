"""Readers and embedders of the catalog collections (``skysearch index frames|clips``).

Frames: one point per frame of a single-channel frame model's satellites/channel, embedded by the
frame encoder. Clips: one point per clip of the clip model's spec and satellites; the distinct
frames (steps) are embedded once per chunk by the frame encoder, then the clip encoder pools them.
Frame pixels are read from the frame store by ``DataLoader`` workers on both cores. Points go
through the shared pipeline (``skysearch.retrieval.indexing.pipeline``) with the payloads of
``skysearch.retrieval.store.schema``, under the vector name = the model id, so vectors of
different models never mix (search with ``vector_name=record.model_id``).
"""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from qdrant_client import models
from skysearch.encoders import registry
from skysearch.encoders.datasets.clips import load_clip_set
from skysearch.encoders.device import resolve_device
from skysearch.encoders.factory import (
    frame_channel,
    load_clip_embedder,
    load_frame_encoder,
    single_channel_frame_models,
)
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.clips import read_clips
from skysearch.ingest.engines import Engine
from skysearch.ingest.footprints import BOUND_COLUMNS, is_box
from skysearch.ingest.tracks import PAYLOAD_KEYS, track_payloads
from skysearch.retrieval.indexing.pipeline import IndexReport, Item, Listing
from skysearch.retrieval.indexing.runner import index_with
from skysearch.retrieval.indexing.steps import clip_vectors, clips_task, frame_vectors, frames_task
from skysearch.retrieval.store import VectorStore
from skysearch.retrieval.store.filters import holding_vector
from skysearch.retrieval.store.schema import CLIPS, FRAMES, time_payload

from skysearch.config import Settings, Workspace

#: Payload fields an indexed frame or clip must still match to count as up to date: its pixels
#: (``content``: a frame repaired after indexing, a clip whose step got a nearer frame), and a
#: best track loaded after indexing (and a storm-centred footprint); the next index run
#: rewrites those points.
FINGERPRINT = ("content", "event", *PAYLOAD_KEYS, *BOUND_COLUMNS)


def content_digest(frames: list[tuple[str, int]]) -> str:
    """What a vector was embedded from: its frames (ids, in order) and where the frame store
    holds their pixels (a repair writes a frame's new pixels to a new row)."""
    text = "|".join(f"{frame_id}:{row}" for frame_id, row in frames)
    return f"{zlib.crc32(text.encode()):08x}"


def _not_listed_of(satellites: list[str], **fields: Any) -> Callable[[dict[str, Any]], bool]:
    """``Listing.gone`` of a catalog collection: a point of these satellites and fields that the
    catalog no longer lists (its frame or clip was dropped: a clip spec rebuilt with another
    tolerance, a frame a repair removed) is gone."""

    def gone(payload: dict[str, Any]) -> bool:
        return payload.get("satellite") in satellites and all(
            payload.get(name) == value for name, value in fields.items()
        )

    return gone


def footprint_payload(row: dict[str, Any]) -> dict[str, float]:
    """A catalog row's footprint bounds (``west, south, east, north``) when it has them."""
    box = {name: row.get(name) for name in BOUND_COLUMNS}
    return box if is_box(list(box.values())) else {}


def event_payloads(
    workspace: Workspace, events: list[str | None], times: list[Any]
) -> list[dict[str, Any]]:
    """Per frame or clip (a clip at its last frame's time): its event, and where a best track
    covers that time the storm's class, pressure, wind and centre (also as ``location``, so
    ``--bbox`` keeps the storms centred inside). Empty for products without events."""
    tracks = track_payloads(workspace, events, times)
    out = []
    for event, track in zip(events, tracks, strict=True):
        payload: dict[str, Any] = {"event": event} if event else {}
        if track:
            lon = track["lon"] - 360.0 if track["lon"] > 180.0 else track["lon"]  # 0..360 east
            payload |= track | {"location": {"lon": lon, "lat": track["lat"]}}
        out.append(payload)
    return out


def _source_paths(workspace: Workspace, frame_ids: list[str]) -> list[str]:
    table = read_frames(workspace, columns=["frame_id", "source_path"])
    pos = pc.index_in(pa.array(frame_ids, pa.string()), value_set=table["frame_id"])
    paths = table["source_path"].to_pylist()
    return [paths[p] if p is not None else "" for p in pos.to_pylist()]


def _store_rows(workspace: Workspace, satellites: list[str]) -> dict[str, int]:
    """frame id -> its row in the frame store, for the frames of these satellites."""
    out: dict[str, int] = {}
    for sat in satellites:
        table = read_frames(workspace, satellite=sat, columns=["frame_id", "store_row"])
        out.update(zip(table["frame_id"].to_pylist(), table["store_row"].to_pylist(), strict=True))
    return out


def index_clips(
    settings: Settings,
    model_id: str | None = None,
    device: str | None = None,
    workers: int = 2,
    store: VectorStore | None = None,
    progress: bool = True,
    engine: Engine | None = None,
    satellite: str | None = None,
    to_parquet: Path | None = None,
) -> IndexReport:
    """Embed every clip of the clip model's spec and upsert it into the ``clips`` collection.
    ``engine``: where the clips are embedded (default: here); ``satellite``: only its clips
    (see :func:`~skysearch.encoders.registry.embedding_plan`; default: every satellite the
    model was trained on); ``to_parquet``: a folder the points go to as Parquet part files
    instead of the store."""
    workspace = settings.workspace
    device_setting = device or settings.device
    torch_device = resolve_device(device_setting)
    record, satellites = registry.embedding_plan(workspace, "clip", model_id, satellite)
    embedder, record = load_clip_embedder(workspace, record.model_id, str(torch_device))
    data = record.config["data"]
    clip_set = load_clip_set(
        workspace, satellites, data["channels"], data["length"], data["gap_minutes"]
    )
    columns = ["clip_id", "satellite", "channels", "start", "event", *BOUND_COLUMNS]
    rows = clip_set.clips.select(columns).to_pylist()
    sources = _source_paths(workspace, [clip_set.steps[s][0] for s in clip_set.index[:, 0]])
    single = len(clip_set.channels) == 1
    rows_of = _store_rows(workspace, satellites)  # -1: a frame gone from the catalog
    digests = [
        content_digest([(f, rows_of.get(f, -1)) for s in steps for f in clip_set.steps[s]])
        for steps in clip_set.index
    ]
    last_times = clip_set.step_times[clip_set.index[:, -1]]
    extras = event_payloads(workspace, [r["event"] for r in rows], list(last_times))
    items = [
        Item(
            row["clip_id"],
            {
                "satellite": row["satellite"],
                "channel": row["channels"][0] if single else row["channels"],
                **time_payload(row["start"]),
                "length": clip_set.length,
                "gap_minutes": clip_set.gap_minutes,
                "clip_id": row["clip_id"],
                "source_path": sources[m],
                "model_id": record.model_id,
                "content": {record.model_id: digests[m]},
                **extras[m],
                **footprint_payload(row),
            },
            [tuple(clip_set.steps[s]) for s in clip_set.index[m]],
        )
        for m, row in enumerate(rows)
    ]
    local = functools.partial(clip_vectors, embedder, workspace, torch_device, workers)
    task = functools.partial(clips_task, str(workspace.root), record.model_id, device_setting)
    spec = {
        "channel": data["channels"][0] if single else list(data["channels"]),
        "length": clip_set.length,
        "gap_minutes": clip_set.gap_minutes,
    }
    gone = _not_listed_of(satellites, **spec)
    listing = Listing(CLIPS, items, fingerprint=FINGERPRINT, gone=gone, gone_of_any_model=False)
    return index_with(
        settings, listing, local, task, record.model_id,
        embedder.clip.config.dim, engine, workers, store, progress, to_parquet,
    )  # fmt: skip


def index_frames(
    settings: Settings,
    model_id: str | None = None,
    device: str | None = None,
    workers: int = 2,
    store: VectorStore | None = None,
    progress: bool = True,
    engine: Engine | None = None,
    satellite: str | None = None,
    to_parquet: Path | None = None,
) -> IndexReport:
    """Embed every frame of a single-channel frame model's satellites and channel into
    ``frames``. ``engine``, ``satellite``, ``to_parquet``: as for :func:`index_clips`."""
    workspace = settings.workspace
    device_setting = device or settings.device
    torch_device = resolve_device(device_setting)
    record, satellites = registry.embedding_plan(workspace, "frame", model_id, satellite)
    encoder, record = load_frame_encoder(workspace, record.model_id, str(torch_device))
    channel = frame_channel(record, "index frames")
    columns = ["frame_id", "satellite", "channel", "time", "source_path", "event", "store_row"]
    columns += BOUND_COLUMNS
    rows = [
        row
        for sat in satellites
        for row in read_frames(
            workspace, satellite=sat, channel=channel, columns=columns
        ).to_pylist()
    ]
    extras = event_payloads(workspace, [r["event"] for r in rows], [r["time"] for r in rows])
    items = [
        Item(
            r["frame_id"],
            {
                "satellite": r["satellite"],
                "channel": r["channel"],
                **time_payload(r["time"]),
                "frame_id": r["frame_id"],
                "source_path": r["source_path"],
                "model_id": record.model_id,
                "content": {record.model_id: content_digest([(r["frame_id"], r["store_row"])])},
                **extra,
                **footprint_payload(r),
            },
            (r["frame_id"],),
        )
        for r, extra in zip(rows, extras, strict=True)
    ]

    local = functools.partial(frame_vectors, encoder, workspace, torch_device, workers)
    task = functools.partial(frames_task, str(workspace.root), record.model_id, device_setting)
    gone = _not_listed_of(satellites, channel=channel)
    listing = Listing(FRAMES, items, fingerprint=FINGERPRINT, gone=gone, gone_of_any_model=False)
    return index_with(
        settings, listing, local, task, record.model_id, encoder.dim, engine,
        workers, store, progress, to_parquet,
    )  # fmt: skip


#: Catalog collection -> the kind of model that fills it and the function that indexes it.
CATALOG_COLLECTIONS = {CLIPS: ("clip", index_clips), FRAMES: ("frame", index_frames)}


def catalog_models(workspace: Workspace, collection: str) -> list[registry.ModelRecord]:
    """The registered models that fill a catalog collection, oldest first: every clip model
    fills ``clips``; single-channel frame models fill ``frames`` (a stacked-channel frame model
    embeds no single frame)."""
    if collection == FRAMES:
        return single_channel_frame_models(workspace)
    return registry.list_models(workspace, CATALOG_COLLECTIONS[collection][0])


def index_gaps(
    workspace: Workspace, store: VectorStore, collection: str, record: registry.ModelRecord
) -> tuple[int, int, int]:
    """How the store differs from the catalog for the frames or clips ``record`` indexes (those
    of the satellites it was trained on): how many hold no vector of it (an index run that
    stopped early, points the store lost), how many of its points the catalog no longer lists
    (a clip spec rebuilt, a frame a repair dropped: the next index run deletes them), and how
    many it indexes."""
    data = record.config["data"]
    satellites = registry.model_satellites(data)
    key = "frame_id" if collection == FRAMES else "clip_id"
    if collection == FRAMES:
        channel = data["channels"][0]
        listed = [read_frames(workspace, sat, channel, columns=[key]) for sat in satellites]
    else:
        spec = (data["channels"], data["length"], data["gap_minutes"])
        listed = [read_clips(workspace, sat, *spec, columns=[key]) for sat in satellites]
    total = sum(table.num_rows for table in listed)
    if record.model_id not in store.vector_config(collection):
        return total, 0, total
    of_satellites = models.FieldCondition(key="satellite", match=models.MatchAny(any=satellites))
    held = holding_vector(record.model_id, models.Filter(must=[of_satellites]))
    ids = {i for table in listed for i in table[key].to_pylist()}
    stored = {r.id for r in store.scroll(collection, held)}
    return len(ids - stored), len(stored - ids), total
