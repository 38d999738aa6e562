"""Catalog clips by id: resolve them to stored sketches, score one against many, pairwise."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from skysearch.ingest.clip_specs import spec_label
from skysearch.ingest.clips import no_clips_error, parse_channels, read_clips
from skysearch.ingest.similarity.grid import Geometry, GridSpec, cell_sizes, sketch_frames
from skysearch.ingest.similarity.scoring import (
    ClipScore,
    SketchedClip,
    SketchPool,
    one_to_many,
    pairwise,
)
from skysearch.ingest.similarity.store import SketchStore, catalog_positions

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError
from skysearch.timeutil import parse_time, to_rfc3339


@dataclass(frozen=True)
class ClipSketches:
    """Clips resolved to a sketch pool: ``index`` (K, C, L) rows of ``pool``."""

    clip_ids: list[str]
    channels: list[str]
    pool: SketchPool
    index: np.ndarray
    sizes: np.ndarray


#: What to do about an id not in the clip catalog: one a user gave (a typo, another
#: workspace's), or one of a vector-store point (a re-rank's candidates) whose clip has left it.
UNKNOWN_CLIP_HINT = (
    "check the id: clip ids are in a clip search's results (`skysearch search clip --at TIME "
    "--json`), or give the clip's start time instead"
)
STALE_POINT_HINT = (
    "a point of the vector store whose clip left the catalog: `skysearch index clips` "
    "removes such points"
)


def _clip_rows(workspace: Workspace, clip_ids: Sequence[str], hint: str) -> pa.Table:
    table = read_clips(workspace, columns=["clip_id", "channels", "frame_ids"])
    return table.take(catalog_positions(clip_ids, table["clip_id"], "clip", "clip catalog", hint))


def load_clips(
    store: SketchStore, clip_ids: Sequence[str], hint: str = UNKNOWN_CLIP_HINT
) -> ClipSketches:
    """Resolve catalog clips to stored sketches (one channel list and length for all);
    ``hint`` says what to do about an id the catalog lacks."""
    rows = _clip_rows(store.workspace, clip_ids, hint)
    channel_lists = rows["channels"].to_pylist()
    grids = rows["frame_ids"].to_pylist()
    shapes = {(tuple(ch), len(g[0])) for ch, g in zip(channel_lists, grids, strict=True)}
    if len(shapes) > 1:
        raise UsageError(
            "clips differ in channels or length: "
            + "; ".join(f"{'+'.join(c)} x {n}" for c, n in sorted(shapes))
        )
    channels, length = shapes.pop()
    flat = [fid for grid in grids for row in grid for fid in row]
    pool, global_rows, geometry = store.pool(flat)
    index = global_rows.reshape(len(grids), len(channels), length)
    return ClipSketches(list(clip_ids), list(channels), pool, index, cell_sizes(geometry))


@dataclass(frozen=True)
class ClipScores:
    """One query against K candidates: overall (K,) and per channel (K, C)."""

    clip_ids: list[str]
    channels: list[str]
    similarity: np.ndarray
    per_channel: np.ndarray

    def score(self, k: int) -> ClipScore:
        return ClipScore(
            float(self.similarity[k]),
            {c: float(v) for c, v in zip(self.channels, self.per_channel[k], strict=True)},
        )


def score_clips(
    workspace: Workspace,
    query: str | np.ndarray,
    candidate_ids: Sequence[str],
    spec: GridSpec | None = None,
    store: SketchStore | None = None,
) -> ClipScores:
    """Similarity of one query clip with each candidate clip (by catalog id), in one call.

    ``query``: a clip id, or uint8 frames (C, L, H, W) in the candidates' channel order.
    """
    store = store or SketchStore(workspace, spec)
    candidates = load_clips(store, candidate_ids, STALE_POINT_HINT)
    n_channels, length = candidates.index.shape[1:]
    if isinstance(query, str):
        q = load_clips(store, [query])
        if q.channels != candidates.channels or q.index.shape[2] != length:
            raise UsageError(
                f"query clip has {'+'.join(q.channels)} x {q.index.shape[2]} frames, candidates "
                f"{'+'.join(candidates.channels)} x {length}"
            )
        query_sk = q.pool.take(q.index.ravel()).reshape(n_channels, length, *q.pool.frame_shape)
        sizes_q = q.sizes
    else:
        query = np.asarray(query)
        if query.ndim != 4 or query.shape[:2] != (n_channels, length):
            raise UsageError(
                f"query frames {query.shape} do not match the candidates "
                f"({n_channels} channels x {length} frames x H x W)"
            )
        flat = sketch_frames(query.reshape(-1, *query.shape[2:]), store.spec)
        query_sk = flat.reshape(n_channels, length, *flat.shape[1:])
        sizes_q = cell_sizes(Geometry(query.shape[2], query.shape[3], store.spec))
    per_channel = one_to_many(
        query_sk, candidates.pool, candidates.index, sizes_q, candidates.sizes
    )
    return ClipScores(
        list(candidate_ids), candidates.channels, per_channel.mean(axis=1), per_channel
    )


def sketch_catalog_clip(store: SketchStore, clip_id: str) -> SketchedClip:
    """One catalog clip as a ``SketchedClip`` (from stored sketches)."""
    clips = load_clips(store, [clip_id])
    n_channels, length = clips.index.shape[1:]
    sketches = clips.pool.take(clips.index.ravel())
    return SketchedClip(
        clips.channels,
        sketches.reshape(n_channels, length, *sketches.shape[1:]),
        clips.sizes,
        clip_id,
    )


def find_clip(
    workspace: Workspace,
    start: datetime | str,
    channels: str | Sequence[str] | None = None,
    length: int | None = None,
    gap_minutes: int | None = None,
    satellite: str | None = None,
    event: str | None = None,
) -> str:
    """The catalog clip starting at ``start`` (and matching the filters): its id."""
    when = parse_time(start)
    cols = ["clip_id", "satellite", "channels", "start", "length", "gap_minutes", "event"]
    table = read_clips(workspace, satellite, channels, length, gap_minutes, columns=cols)
    if event is not None:
        table = table.filter(pc.equal(table["event"], event))
        if table.num_rows == 0:
            raise NotFoundError(f"no clip of event {event} in the clip catalog")
    if table.num_rows == 0:
        chans = parse_channels(channels)
        raise no_clips_error(workspace, satellite, chans, length, gap_minutes, "satellite")
    starts = table["start"].to_pylist()
    hits = [i for i, s in enumerate(starts) if s == when]
    if not hits:
        nearest = min(starts, key=lambda s: abs(s - when))
        raise NotFoundError(
            f"no clip starts at {to_rfc3339(when)}; the nearest starts at {to_rfc3339(nearest)}"
        )
    if len(hits) > 1:
        options = sorted(
            spec_label(
                table["channels"][i].as_py(),
                table["length"][i],
                table["gap_minutes"][i],
                table["satellite"][i].as_py(),
            )
            + (f" event {table['event'][i]}" if table["event"][i].is_valid else "")
            for i in hits
        )
        raise UsageError(
            f"{len(hits)} clips start at {to_rfc3339(when)} ({'; '.join(options)}): "
            "pick one with {satellite}, {channel}, {length}, {gap_minutes} or {event}, or "
            "pass its clip id",
            params=["satellite", "channel", "length", "gap_minutes", "event"],
        )
    return table["clip_id"][hits[0]].as_py()


def pairwise_clips(
    workspace: Workspace,
    clip_ids: Sequence[str],
    spec: GridSpec | None = None,
    store: SketchStore | None = None,
) -> np.ndarray:
    """Full similarity matrix (K, K) of catalog clips."""
    clips = load_clips(store or SketchStore(workspace, spec), clip_ids)
    return pairwise(clips.pool, clips.index, clips.sizes)
