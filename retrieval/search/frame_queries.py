"""Query frames: what a frame query is (:class:`FrameQuery`) and its resolution to pixels.

A query frame is given one of four ways: by time and channel (the archive's frame nearest that
time, within a tolerance), by a catalog frame id, by an image file from outside the archive
(preprocessed like an ingest would: by the source profile that recognises its name, or the one
named by ``source``), or by pixels already at the working resolution (the service's uploads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from skysearch.encoders.registry import model_satellites
from skysearch.ingest.simultaneous import at_time
from skysearch.retrieval.search.queries import (
    DEFAULT_TOLERANCE_MINUTES,
    MAX_TOLERANCE_MINUTES,
    check_pixels_array,
    check_whole,
)

from skysearch.errors import NotFoundError, UsageError
from skysearch.timeutil import parse_time, to_rfc3339

if TYPE_CHECKING:
    from skysearch.ingest.decode import Source
    from skysearch.ingest.profiles import Profile
    from skysearch.retrieval.search.queries import QueryResolver
    from skysearch.retrieval.store.filters import SearchFilters


@dataclass(frozen=True)
class FrameQuery:
    """What the query frame is. Exactly one of ``at``, ``frame_id``, ``file``, ``pixels``.

    - ``at``: a time (UTC); ``channel`` (and ``satellite``) say which frame of that time
      (unset: the frame model's).
    - ``frame_id``: a frame of the frame catalog.
    - ``file``: an image file from outside the archive; ``source`` names the source profile
      that preprocesses it (default: the profile that recognises the file's name, else the
      satellite's first profile).
    - ``pixels``: a frame already at the working resolution, uint8 (H, W); ``start``: its time,
      if known (needed by an exclusion window).
    """

    at: datetime | str | None = None
    frame_id: str | None = None
    file: Path | str | None = None
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)
    channel: str | None = None
    satellite: str | None = None
    source: str | None = None
    start: datetime | str | None = None
    tolerance_minutes: int = DEFAULT_TOLERANCE_MINUTES

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("at", "start"):
            if getattr(self, name) is not None:
                set_(self, name, parse_time(getattr(self, name)))
        for name in ("channel", "satellite", "frame_id"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise UsageError(f"{{{name}}} must be one name, got {value!r}", params=[name])
        if self.file is not None:
            set_(self, "file", Path(self.file))
        tolerance = check_whole(
            self.tolerance_minutes, "tolerance_minutes", 0, MAX_TOLERANCE_MINUTES
        )
        set_(self, "tolerance_minutes", tolerance)
        if self.pixels is not None:
            px = self.pixels
            check_pixels_array(px, "query frame pixels")
            if px.dtype != np.uint8 or px.ndim != 2 or 0 in px.shape:
                raise UsageError(
                    f"query frame pixels must be uint8 (height, width), got {px.dtype} {px.shape}"
                )
        given = sum(
            [
                self.at is not None,
                bool(self.frame_id),
                self.file is not None,
                self.pixels is not None,
            ]
        )
        if given != 1:
            raise UsageError(
                "give the query frame one way: a time ({at}), a frame id ({frame_id}) or an "
                "image file ({file})",
                params=["at", "frame_id", "file"],
            )
        if self.source is not None and self.file is None:  # it was dropped without a word
            raise UsageError(
                "{source} picks the profile that reads a query frame file ({file}); an archive "
                "frame is already read",
                params=["source", "file"],
            )


@dataclass
class QueryFrame:
    """A resolved query frame: pixels + what is known about it."""

    pixels: np.ndarray  # (H, W) uint8
    mode: str
    satellite: str
    channel: str
    time: datetime | None = None
    frame_id: str | None = None
    file: str | None = None
    event: str | None = None  # of a catalog frame of a product with events (a storm)

    def describe(self) -> dict[str, Any]:
        """The result schema's ``query`` for this frame (the façade adds the ranking)."""
        when = to_rfc3339(self.time) if self.time else None
        return {
            "kind": "frame",
            "mode": self.mode,
            "frame_id": self.frame_id,
            "satellite": self.satellite,
            "channels": [self.channel],
            "start": when,
            "end": when,
            "frame_ids": [self.frame_id] if self.frame_id else [],
            "files": [self.file] if self.file else [],
            "event": self.event,
        }


def resolve_frame(
    resolver: QueryResolver,
    query: FrameQuery,
    data: Mapping[str, Any],
    channel: str,
    filters: SearchFilters | None = None,
) -> QueryFrame:
    """The query's pixels; ``data``/``channel``: the frame model's, for what the query leaves
    unset (a time is looked up on each satellite the model covers); ``filters``: the search's,
    whose events and satellites pick among frames of several at that time."""
    satellite = query.satellite or data["satellite"]
    channel = query.channel or channel
    if query.frame_id:
        return _by_id(resolver, query.frame_id)
    if query.at is not None:
        satellites = [query.satellite] if query.satellite else model_satellites(data)
        return _at(resolver, query.at, satellites, channel, query.tolerance_minutes, filters)
    if query.file is not None:
        return _from_file(resolver, Path(query.file), satellite, channel, query.source)
    assert query.pixels is not None
    start = query.start if isinstance(query.start, datetime) else None
    return from_pixels(resolver, query.pixels, satellite, channel, start)


def _catalog(
    resolver: QueryResolver, frame_id: str | None = None, **where: Any
) -> list[dict[str, Any]]:
    import pyarrow.compute as pc
    from skysearch.ingest.catalog import read_frames

    cols = ["frame_id", "satellite", "channel", "time", "event"]
    table = read_frames(resolver.workspace, columns=cols, **where)
    if frame_id is not None:
        table = table.filter(pc.equal(table["frame_id"], frame_id))
    return table.to_pylist()


def _from_row(resolver: QueryResolver, row: Mapping[str, Any], mode: str) -> QueryFrame:
    return QueryFrame(
        pixels=resolver.frame_store.read(row["frame_id"]),
        mode=mode,
        satellite=row["satellite"],
        channel=row["channel"],
        time=parse_time(row["time"]),
        frame_id=row["frame_id"],
        event=row.get("event"),
    )


def _by_id(resolver: QueryResolver, frame_id: str) -> QueryFrame:
    rows = _catalog(resolver, frame_id=frame_id)
    if not rows:
        raise NotFoundError(
            f"frame {frame_id} is not in the frame catalog of {resolver.workspace.root}: "
            "query by a time ({at}) and {channel} instead",
            params=["at", "channel"],
        )
    return _from_row(resolver, rows[0], "frame_id")


def _at(
    resolver: QueryResolver,
    at: datetime,
    satellites: Sequence[str],
    channel: str,
    tolerance: int,
    filters: SearchFilters | None,
) -> QueryFrame:
    """The frame nearest ``at`` (within ``tolerance`` minutes) on one of ``satellites``, of
    one event."""

    def find(satellite: str) -> list[dict[str, Any]]:
        return _frames_at(resolver, at, satellite, channel, tolerance)

    prefer = {"event": filters.events, "satellite": filters.satellites} if filters else {}
    row = at_time(
        find, satellites, at, time_key="time", id_key="frame_id", what="frame", prefer=prefer
    )
    return _from_row(resolver, row, "at")


def _frames_at(
    resolver: QueryResolver, at: datetime, satellite: str, channel: str, tolerance: int
) -> list[dict[str, Any]]:
    rows = _catalog(resolver, satellite=satellite, channel=channel)
    if not rows:
        raise NotFoundError(f"no {satellite} {channel} frames in {resolver.workspace.root}")
    tol = timedelta(minutes=tolerance)
    near = [r for r in rows if abs(parse_time(r["time"]) - at) <= tol]
    if not near:
        best = min(rows, key=lambda r: abs(parse_time(r["time"]) - at))
        times = [parse_time(r["time"]) for r in rows]
        raise NotFoundError(
            f"no {satellite} {channel} frame within {tolerance} min of {to_rfc3339(at)} "
            f"(frames cover {to_rfc3339(min(times))}..{to_rfc3339(max(times))}; nearest "
            f"{to_rfc3339(parse_time(best['time']))}): try another {{at}}",
            params=["at"],
        )
    return near


def _file_profile(
    resolver: QueryResolver, path: Path, satellite: str, source: str | None
) -> Profile:
    from skysearch.ingest.profiles import load_profiles, match_name

    profiles = load_profiles(workspace=resolver.workspace)
    if source:
        if source not in profiles:
            raise UsageError(
                f"unknown source profile {source!r}: known {', '.join(sorted(profiles))}",
                params=["source"],
            )
        return profiles[source]
    found = match_name(path.name, list(profiles.values()))
    return found[0] if found else resolver.profile(satellite)


def _query_source(path: Path) -> Source:
    """The file ``path`` names; ``FILE#frame=N`` (as a catalog's ``source_path`` names it)
    is step N of a NetCDF or zarr file of many frames."""
    from skysearch.ingest.decode import Source, split_step

    head, index = split_step(str(path))
    if index is not None and not path.exists():
        return Source(head, index=index)
    return Source(str(path))


def _from_file(
    resolver: QueryResolver, path: Path, satellite: str, channel: str, source: str | None
) -> QueryFrame:
    from skysearch.ingest.decode import FRAME_SEP, preprocess

    step = _query_source(path)
    file = Path(step.file)
    store = file.is_dir() and file.suffix.lower() == ".zarr"  # a zarr store is a folder
    if not (file.is_file() or store):
        what = "is a folder: pass one frame file" if file.is_dir() else "does not exist"
        raise UsageError(f"query frame {file} {what}", params=["file"])
    profile = _file_profile(resolver, file, satellite, source)
    if step.index is not None and not profile.decoder.multi_frame:
        raise UsageError(
            f"query frame {path}: {FRAME_SEP}N picks a step of a NetCDF or zarr file of many "
            f"frames; source profile {profile.name} reads {file.name} as one frame",
            params=["file"],
        )
    match = profile.match(file.name)
    at = match.time if match else None
    if profile.decoder.multi_frame:
        at = _step_time(file, step.index, profile)
    result = preprocess(step, profile)
    if result.frame is None:
        raise UsageError(f"cannot use query frame {path}: {result.reason}", params=["file"])
    frame = from_pixels(
        resolver,
        result.frame,
        match.satellite if match else profile.satellite,
        match.channel if match else channel,
        at,
    )
    frame.mode, frame.file = "file", str(path)
    return frame


def _step_time(file: Path, index: int | None, profile: Profile) -> datetime | None:
    """The time of step ``index`` of a NetCDF/zarr file of many frames (None: not known); a
    UsageError for a file of many frames given without a step, or a step it does not hold."""
    from skysearch.ingest.decode import FRAME_SEP
    from skysearch.ingest.readers import FieldError, frame_times

    try:
        times = frame_times(str(file), profile.decoder)
    except FieldError:
        return None  # not a file of steps: decoding it says what it is
    if (index is None and len(times) > 1) or (index is not None and index >= len(times)):
        raise UsageError(
            f"query frame {file} holds {len(times)} frames: pick one as {file}{FRAME_SEP}N, "
            f"N from 0 to {len(times) - 1}",
            params=["file"],
        )
    at = times[index or 0]
    return at if isinstance(at, datetime) else None


def from_pixels(
    resolver: QueryResolver,
    pixels: np.ndarray,
    satellite: str,
    channel: str,
    time: datetime | None,
) -> QueryFrame:
    """A query frame of preprocessed pixels (H, W), checked against the working resolution of
    the satellite's ingest profile."""
    width, height = resolver.profile(satellite).resolution
    if pixels.shape != (height, width):
        raise UsageError(
            f"query frame pixels are {pixels.shape}; a {satellite} frame is (height, width) = "
            f"{(height, width)}"
        )
    return QueryFrame(pixels, "pixels", satellite, channel, time)
