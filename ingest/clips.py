"""Clips: L frames G minutes apart, assembled from the frame catalog; a Parquet clip catalog.

A clip may start at every frame time of its first channel (so clips overlap and step by the
product's native cadence). Step k wants the frame nearest ``start + k*G`` within the tolerance,
in every channel; if any step of any channel has none (a gap in the archive), or one frame
would fill two steps, the clip is incomplete and skipped (counted).

Catalog layout: ``catalog/clips/satellite=S/year=Y/{ch1+ch2}_{L}x{G}m.parquet`` (year of the
clip start), one file per clip spec and year, rewritten atomically and only when it changes,
so re-runs are idempotent.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from skysearch.ingest import ids
from skysearch.ingest.catalog import (
    atomic_write_table,
    channels_by_satellite,
    column_schema,
    describe_channels,
    read_frames,
    read_part,
    scan_parts,
)
from skysearch.ingest.clip_specs import (
    MAX_LENGTH,
    STEP_TOLERANCE_MINUTES,
    ClipSpec,
    asked_specs,
    clip_files,
    remember_spec,
    spec_key,
    spec_name,
)
from skysearch.ingest.footprints import BOUND_COLUMNS, is_box, union_box
from skysearch.ingest.framestore import FrameStore

from skysearch.atomic import remove_temporaries
from skysearch.config import Workspace
from skysearch.errors import NotFoundError, SkySearchError, UsageError, some_of

TIME = pa.timestamp("us", tz="UTC")
CLIP_SCHEMA = pa.schema(
    [
        ("clip_id", pa.string()),
        ("satellite", pa.string()),
        ("channels", pa.list_(pa.string())),
        ("start", TIME),
        ("end", TIME),
        ("year", pa.int32()),
        ("length", pa.int32()),
        ("gap_minutes", pa.int32()),
        ("tolerance_minutes", pa.int32()),
        ("frame_ids", pa.list_(pa.list_(pa.string()))),
        ("event", pa.string()),  # the frames' event (null for products without events)
        # the union box of the frames' footprints (null where any frame has none)
        *((name, pa.float64()) for name in BOUND_COLUMNS),
    ]
)
_MINUTE_US = 60_000_000


class ChannelsNotFound(UsageError):
    """No satellite in the frame catalog has every channel a multi-channel clip spec asks for
    (the data, not the spec, is short: the update job skips such a spec with this reason)."""


@dataclass
class ClipReport:
    """Summary of one ``build_clips`` run (``--json`` prints it)."""

    clips_added: int = 0
    #: Clips the catalog held and no longer does (e.g. a spec rebuilt with a smaller
    #: tolerance); their points leave the store at the next index run.
    clips_removed: int = 0
    clips_total: int = 0
    incomplete: int = 0
    by_spec: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        removed = (
            f"{self.clips_removed} removed (their points leave the store at the next index run), "
            if self.clips_removed
            else ""
        )
        return (
            f"clips: {self.clips_added} added, {removed}{self.clips_total} in catalog for these "
            f"specs, {self.incomplete} incomplete start times skipped (gaps beyond the tolerance)"
        )


def built_tolerance(workspace: Workspace, spec: ClipSpec, paths: Iterable[Path]) -> int:
    """The tolerance the clips in these catalog files of ``spec`` were built with (the first
    readable, non-empty one's), else the one it was asked with (``specs.json``: every file
    may be damaged), else the default."""
    for path in paths:
        try:
            table = read_part(path, CLIP_SCHEMA)
        except (SkySearchError, FileNotFoundError):
            continue
        if table.num_rows:
            return int(table["tolerance_minutes"][0].as_py())
    asked = [s for s in asked_specs(workspace) if spec_key(s) == spec_key(spec)]
    return asked[0].tolerance_minutes if asked else STEP_TOLERANCE_MINUTES


def catalog_specs(workspace: Workspace) -> list[ClipSpec]:
    """The clip specs the clip catalog holds, each with the tolerance it was built with, and
    the specs asked for that hold no clip yet (a first run on too few frames). A single-channel
    spec stands for every channel (what ``build_clips`` makes by default)."""
    files: dict[ClipSpec, list[Path]] = {}
    for path in clip_files(workspace.clips_catalog):
        try:
            spec = ClipSpec.parse(path.stem)
        except UsageError:
            continue  # not a file build_clips writes
        files.setdefault(spec, []).append(path)
    built = [
        ClipSpec(s.length, s.gap_minutes, s.channels, built_tolerance(workspace, s, paths))
        for s, paths in files.items()
    ]
    return built + [s for s in asked_specs(workspace) if spec_key(s) not in map(spec_key, built)]


def parse_channels(channels: str | Sequence[str] | None) -> list[str] | None:
    """``"ir,wv"`` or ``["ir", "wv"]`` -> ``["ir", "wv"]``; None stays None."""
    if channels is None:
        return None
    items = channels.split(",") if isinstance(channels, str) else list(channels)
    out = [c.strip() for c in items if c.strip()]
    return out or None


def _nearest(times: np.ndarray, targets: np.ndarray, tol_us: int) -> np.ndarray:
    """Index of the nearest time to each target (ties -> earlier), -1 beyond the tolerance."""
    right = np.clip(np.searchsorted(times, targets), 0, len(times) - 1)
    left = np.clip(right - 1, 0, len(times) - 1)
    d_left = np.abs(targets - times[left])
    d_right = np.abs(times[right] - targets)
    pick = np.where(d_left <= d_right, left, right)
    dist = np.minimum(d_left, d_right)
    return np.where(dist <= tol_us, pick, -1)


def assemble(
    frames: pa.Table,
    satellite: str,
    channels: Sequence[str],
    length: int,
    gap_minutes: int,
    tolerance_minutes: int,
) -> tuple[pa.Table, int]:
    """Clips of one satellite and channel list from catalog rows; returns (clips, incomplete).
    Frames of different events (e.g. two typhoons seen at once) never share a clip."""
    frames = frames.filter(pc.equal(frames["satellite"], satellite))
    if "event" not in frames.column_names:
        frames = frames.append_column("event", pa.nulls(frames.num_rows, pa.string()))
    tables, incomplete = [], 0
    for event in sorted(set(frames["event"].to_pylist()), key=lambda e: (e is not None, e)):
        same = pc.is_null(frames["event"]) if event is None else pc.equal(frames["event"], event)
        table, missed = _assemble_series(
            frames.filter(same), satellite, channels, length, gap_minutes, tolerance_minutes, event
        )
        tables.append(table)
        incomplete += missed
    if not tables:
        return CLIP_SCHEMA.empty_table(), 0
    return pa.concat_tables(tables).sort_by([("start", "ascending"), ("clip_id", "ascending")]), (
        incomplete
    )


def _assemble_series(
    frames: pa.Table,
    satellite: str,
    channels: Sequence[str],
    length: int,
    gap_minutes: int,
    tolerance_minutes: int,
    event: str | None,
) -> tuple[pa.Table, int]:
    """``assemble`` for the frames of one event (or of none)."""
    per_channel = []
    for chan in channels:
        sel = frames.filter(pc.equal(frames["channel"], chan)).sort_by("time")
        times = sel["time"].cast(pa.int64()).to_numpy()
        per_channel.append((times, np.asarray(sel["frame_id"].to_pylist(), dtype=object)))
    starts = per_channel[0][0]
    if len(starts) == 0 or any(len(t) == 0 for t, _ in per_channel):
        return CLIP_SCHEMA.empty_table(), len(starts)
    offsets = np.arange(length, dtype=np.int64) * gap_minutes * _MINUTE_US
    targets = starts[:, None] + offsets[None, :]
    tol = tolerance_minutes * _MINUTE_US
    picks = [_nearest(times, targets, tol) for times, _ in per_channel]
    ok = np.ones(len(starts), bool)
    for pick in picks:
        ok &= (pick >= 0).all(axis=1)
        ok &= (np.diff(pick, axis=1) > 0).all(axis=1)  # one frame never fills two steps
    rows = np.nonzero(ok)[0]
    start_us = starts[rows]
    start_ts = pa.array(start_us, pa.int64()).cast(TIME)
    start_dt = start_ts.to_pylist()
    frame_ids = [
        [per_channel[c][1][picks[c][r]].tolist() for c in range(len(channels))] for r in rows
    ]
    table = pa.table(
        {
            "clip_id": [
                ids.clip_id(satellite, channels, s, length, gap_minutes, event) for s in start_dt
            ],
            "satellite": [satellite] * len(rows),
            "channels": [list(channels)] * len(rows),
            "start": start_ts,
            "end": pa.array(start_us + offsets[-1], pa.int64()).cast(TIME),
            "year": [s.year for s in start_dt],
            "length": [length] * len(rows),
            "gap_minutes": [gap_minutes] * len(rows),
            "tolerance_minutes": [tolerance_minutes] * len(rows),
            "frame_ids": frame_ids,
            "event": [event] * len(rows),
            **{name: pa.nulls(len(rows), pa.float64()) for name in BOUND_COLUMNS},
        },
        schema=CLIP_SCHEMA,
    )
    return table, int(len(starts) - len(rows))


def _write_spec(
    workspace: Workspace, satellite: str, name: str, clips: pa.Table
) -> tuple[int, int]:
    """Write one spec's clips per start year, only what changed; returns clips added and
    clips removed."""
    sat_dir = workspace.clips_catalog / f"satellite={satellite}"
    old_files = {p.parent.name: p for p in sat_dir.glob(f"year=*/{name}.parquet")}
    added = removed = 0
    years = sorted(set(clips["year"].to_pylist()))
    for year in years:
        part = clips.filter(pc.equal(clips["year"], year))
        path = sat_dir / f"year={year}" / f"{name}.parquet"
        old = old_files.pop(path.parent.name, None)
        old_table = read_part(old, CLIP_SCHEMA) if old else CLIP_SCHEMA.empty_table()
        old_ids, new_ids = set(old_table["clip_id"].to_pylist()), set(part["clip_id"].to_pylist())
        added += len(new_ids - old_ids)
        removed += len(old_ids - new_ids)
        if not old_table.equals(part):
            atomic_write_table(part, path)
    for stale in old_files.values():  # years that no longer have a complete clip
        removed += read_part(stale, CLIP_SCHEMA).num_rows
        stale.unlink()
    return added, removed


def build_clips(
    workspace: Workspace,
    length: int = 12,
    gap_minutes: int = 60,
    channels: str | Sequence[str] | None = None,
    tolerance_minutes: int = STEP_TOLERANCE_MINUTES,
    satellite: str | None = None,
) -> ClipReport:
    """Build (or refresh) the clip catalog from the frame catalog; idempotent.

    ``channels`` None: single-channel clips for every channel of every satellite. A list:
    multi-channel clips (every channel at every step), for each satellite that has them all.
    """
    if not 1 <= length <= MAX_LENGTH or gap_minutes < 1:
        raise UsageError(
            f"{{length}} must be in 1..{MAX_LENGTH} and {{gap_minutes}} at least 1",
            params=["length", "gap_minutes"],
        )
    if not 0 <= tolerance_minutes < gap_minutes:
        raise UsageError(
            "{tolerance_minutes} must be >= 0 and smaller than {gap_minutes}",
            params=["tolerance_minutes", "gap_minutes"],
        )
    wanted = parse_channels(channels)
    if wanted and len(set(wanted)) < len(wanted):
        raise UsageError(
            f"{{channels}} {','.join(wanted)} names a channel twice", params=["channels"]
        )
    cols = ["frame_id", "satellite", "channel", "time", "event", *BOUND_COLUMNS]
    frames = read_frames(workspace, satellite=satellite, columns=cols)
    if frames.num_rows == 0:
        where = f" for satellite {satellite}" if satellite else ""
        raise NotFoundError(f"no frames in the catalog{where}: run `skysearch ingest PATH` first")
    remove_temporaries(workspace.clips_catalog)
    available = channels_by_satellite(frames)
    specs: list[tuple[str, list[str]]] = []
    for sat in sorted(available):
        if wanted is None:
            specs += [(sat, [chan]) for chan in sorted(available[sat])]
        elif set(wanted) <= available[sat]:
            specs.append((sat, wanted))
    if not specs:
        raise ChannelsNotFound(
            f"no satellite has all channels {','.join(wanted or [])} "
            f"({describe_channels(available)})"
        )
    asked = tuple(wanted) if wanted and len(wanted) > 1 else None
    remember_spec(workspace, ClipSpec(length, gap_minutes, asked, tolerance_minutes))
    report = ClipReport()
    boxes = frame_boxes(frames)
    for sat, chans in specs:
        clips, incomplete = assemble(frames, sat, chans, length, gap_minutes, tolerance_minutes)
        clips = with_footprints(clips, boxes)
        name = spec_name(chans, length, gap_minutes)
        added, removed = _write_spec(workspace, sat, name, clips)
        report.clips_added += added
        report.clips_removed += removed
        report.clips_total += clips.num_rows
        report.incomplete += incomplete
        report.by_spec[f"{sat}/{name}"] = clips.num_rows
    return report


def frame_boxes(frames: pa.Table) -> dict[str, tuple[float, float, float, float]]:
    """Frame id -> footprint box, for the catalog rows that have one."""
    columns = [frames[name].to_pylist() for name in ("frame_id", *BOUND_COLUMNS)]
    return {fid: tuple(box) for fid, *box in zip(*columns, strict=True) if is_box(box)}


def with_footprints(clips: pa.Table, boxes: Mapping[str, Sequence[float]]) -> pa.Table:
    """Clips with their bound columns set: the union box of their frames' footprints (null
    where any frame has none)."""
    unions = [
        union_box(boxes.get(fid) for row in grid for fid in row)
        for grid in clips["frame_ids"].to_pylist()
    ]
    for i, name in enumerate(BOUND_COLUMNS):
        column = pa.array([u[i] if u else None for u in unions], pa.float64())
        clips = clips.set_column(clips.schema.get_field_index(name), name, column)
    return clips


def refresh_footprints(workspace: Workspace) -> int:
    """Set every clip's footprint from its frames' as the frame catalog holds them now (after
    ``skysearch ingest-track`` gave storm-centred frames theirs); returns files rewritten."""
    paths = clip_files(workspace.clips_catalog)
    if not paths:
        return 0
    frames = read_frames(workspace, columns=["frame_id", *BOUND_COLUMNS])
    boxes = frame_boxes(frames)
    rewritten = 0
    for path in paths:
        table = read_part(path, CLIP_SCHEMA)
        updated = with_footprints(table, boxes)
        if not updated.equals(table):
            atomic_write_table(updated, path)
            rewritten += 1
    return rewritten


def spec_keys(table: pa.Table) -> list[tuple[str, str, int, int]]:
    """Per clip row, its spec: (satellite, "ch1+ch2", length, gap_minutes)."""
    return [
        (sat, "+".join(channels), length, gap)
        for sat, channels, length, gap in zip(
            table["satellite"].to_pylist(),
            table["channels"].to_pylist(),
            table["length"].to_pylist(),
            table["gap_minutes"].to_pylist(),
            strict=True,
        )
    ]


def read_clips(
    workspace: Workspace,
    satellite: str | None = None,
    channels: str | Sequence[str] | None = None,
    length: int | None = None,
    gap_minutes: int | None = None,
    columns: list[str] | None = None,
) -> pa.Table:
    """Clips in the catalog, sorted by start (then satellite, clip id).

    ``channels`` selects clips whose channel list is exactly this one (``"ir,wv"`` or a list).
    Only the ``columns`` asked for (and the sort keys) are read: leave out ``frame_ids``, the
    bulk of the catalog, where it is not needed.
    """
    schema = column_schema(CLIP_SCHEMA, columns)
    names = schema.names
    root = workspace.clips_catalog
    sat_glob = f"satellite={satellite}" if satellite else "satellite=*"
    chans = parse_channels(channels)
    parts = []
    for path in clip_files(root, sat_glob):
        stem_chans, _, dims = path.stem.rpartition("_")
        if chans is not None and stem_chans != "+".join(chans):
            continue
        if length is not None and not dims.startswith(f"{length}x"):
            continue
        if gap_minutes is not None and not dims.endswith(f"x{gap_minutes}m"):
            continue
        parts.append(path)
    if not parts:
        return schema.empty_table()
    order = [("start", "ascending"), ("satellite", "ascending"), ("clip_id", "ascending")]
    read = list(dict.fromkeys([*names, *(key for key, _ in order)]))
    return scan_parts(parts, CLIP_SCHEMA, read).sort_by(order).select(names)


def clip_frames(
    workspace: Workspace,
    clip: str | Mapping[str, Any],
    store: FrameStore | None = None,
) -> np.ndarray:
    """Pixels of one clip, uint8 (C, L, H, W); ``clip`` is a clip id or a catalog row (dict).

    Pass a ``store`` to reuse one FrameStore (and its index) across many clips.
    """
    if isinstance(clip, str):
        table = read_clips(workspace)
        found = table.filter(pc.equal(table["clip_id"], clip))
        if found.num_rows == 0:
            raise NotFoundError(f"clip {clip} not in the clip catalog: run `skysearch clips`")
        clip = found.slice(0, 1).to_pylist()[0]
    grid = clip["frame_ids"]
    channels, steps = len(grid), len(grid[0])
    store = store or FrameStore(workspace)
    flat = store.read_many([fid for row in grid for fid in row])
    return flat.reshape(channels, steps, *flat.shape[1:])


def no_clips_error(
    workspace: Workspace,
    satellite: str | None,
    chans: list[str] | None,
    length: int | None,
    gap_minutes: int | None,
    param: str,
) -> NotFoundError:
    """No clip of the spec asked for: what the catalog has instead (or how to make clips)."""
    columns = ["satellite", "channels", "length", "gap_minutes"]
    have = Counter(spec_keys(read_clips(workspace, columns=columns)))
    if not have:
        return NotFoundError(
            f"no clips in the clip catalog of {workspace.root}: run `skysearch clips` (after "
            "`skysearch ingest PATH`)"
        )
    shape = f"{length or '*'}x{gap_minutes or '*'}m" if length or gap_minutes else ""
    asked = " ".join(x for x in (satellite, "+".join(chans or []), shape) if x)
    listing = some_of([f"{s} {c} {n}x{g}m: {k}" for (s, c, n, g), k in sorted(have.items())])
    return NotFoundError(
        f"no clips of {asked} in the clip catalog of {workspace.root} (it has {listing}; "
        "satellite channels length x gap: clips): "
        "choose among those, or build them with `skysearch clips`",
        params=[param] if satellite else [],
    )
