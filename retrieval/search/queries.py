"""Query clips: what a clip query is (:class:`ClipQuery`) and its resolution to pixels.

A query clip is given one of four ways: by start time (``at`` + channel + length + gap: the
catalog's clip, or one assembled from the frame catalog), by a catalog clip id, by frame files
from outside the archive (preprocessed with the satellite's ingest profile to the working
resolution), or by such frames already preprocessed (``pixels``: the service's uploads, decoded
one at a time). :class:`QueryResolver` turns each into a :class:`QueryClip` (pixels + what is
known about them), reading the frame and clip catalogs, the frame store and the ingest
profiles; it also refuses a satellite or channel the archive does not have.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from skysearch.encoders.registry import model_satellites
from skysearch.ingest.catalog import (
    catalog_stamp,
    channels_by_satellite,
    describe_channels,
    read_frames,
)
from skysearch.ingest.simultaneous import at_time, clips_at
from skysearch.retrieval.search.query_files import (
    check_one_event,
    check_spacing,
    expand_files,
    frame_order,
)

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError, some_of
from skysearch.timeutil import parse_time, to_rfc3339

if TYPE_CHECKING:
    from skysearch.ingest.framestore import FrameStore
    from skysearch.ingest.profiles import Profile
    from skysearch.retrieval.store.filters import SearchFilters

#: How far a query time (``at``) may sit from a frame or clip start and still pick it, by
#: default and at most.
DEFAULT_TOLERANCE_MINUTES = 15
MAX_TOLERANCE_MINUTES = 720


def check_whole(value: Any, name: str, lo: int, hi: int | None = None) -> int:
    """``value`` as an int in ``lo..hi``, or a UsageError naming ``{name}`` (a query built in
    Python may hold a string or a float where the CLI and HTTP give ints)."""
    if not isinstance(value, Integral) or isinstance(value, bool):
        raise UsageError(f"{{{name}}} must be a whole number, got {value!r}", params=[name])
    if value < lo or (hi is not None and value > hi):
        span = f"in {lo}..{hi}" if hi is not None else f"at least {lo}"
        raise UsageError(f"{{{name}}} must be {span}, got {value}", params=[name])
    return int(value)


def check_pixels_array(pixels: Any, what: str) -> None:
    if not isinstance(pixels, np.ndarray):
        raise UsageError(f"{what} must be a numpy array, got {type(pixels).__name__}")


@dataclass(frozen=True)
class ClipQuery:
    """What the query clip is. Exactly one of ``at``, ``clip_id``, ``frames``, ``pixels``.

    - ``at``: start time (UTC) of the query clip; ``channels``/``satellite``/``length``/
      ``gap_minutes`` give its spec (unset: the clip model's).
    - ``clip_id``: a clip of the clip catalog.
    - ``frames``: frame files, or ONE folder of them, from outside the archive: L files per
      channel, ordered by the time in their names (the satellite's ingest profile) or by name.
    - ``pixels``: frames from outside the archive already at the working resolution (the
      ingest profile's preprocessing, ``skysearch.ingest.decode.working_frame``), uint8
      (C, L, H, W), channels in ``channels`` order, time order; ``start``: the time of the
      first frame, if known (needed by an exclusion window).
    """

    at: datetime | str | None = None
    clip_id: str | None = None
    frames: tuple[Path, ...] = ()
    channels: tuple[str, ...] = ()
    satellite: str | None = None
    length: int | None = None
    gap_minutes: int | None = None
    tolerance_minutes: int = DEFAULT_TOLERANCE_MINUTES
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)
    start: datetime | str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.at is not None:
            set_(self, "at", parse_time(self.at))
        if self.start is not None:
            set_(self, "start", parse_time(self.start))
        frames = (self.frames,) if isinstance(self.frames, str | Path) else self.frames
        set_(self, "frames", tuple(Path(p) for p in frames))  # one path: one file or folder
        chans = self.channels
        if isinstance(chans, str):
            chans = tuple(c for c in chans.split(","))
        if not all(isinstance(c, str) for c in chans):
            raise UsageError(f"{{channels}} must be names, got {chans!r}", params=["channels"])
        set_(self, "channels", tuple(c.strip() for c in chans if c and c.strip()))
        tolerance = check_whole(
            self.tolerance_minutes, "tolerance_minutes", 0, MAX_TOLERANCE_MINUTES
        )
        set_(self, "tolerance_minutes", tolerance)
        for name in ("length", "gap_minutes"):
            if getattr(self, name) is not None:
                set_(self, name, check_whole(getattr(self, name), name, 1))
        if self.pixels is not None:
            check_pixels_array(self.pixels, "query pixels")
            self._check_pixels(self.pixels)
        given = sum(
            [self.at is not None, bool(self.clip_id), bool(self.frames), self.pixels is not None]
        )
        if given != 1:
            raise UsageError(
                "give the query clip one way: a start time ({at}), a clip id ({clip_id}) "
                "or frames ({frames})",
                params=["at", "clip_id", "frames"],
            )

    def _check_pixels(self, pixels: np.ndarray) -> None:
        """Pixels are uint8 (C, L, H, W), C = the channels given, L = the length given; the
        length defaults to L."""
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or 0 in pixels.shape:
            raise UsageError(
                f"query pixels must be uint8 (channels, frames, height, width), got "
                f"{pixels.dtype} {pixels.shape}"
            )
        channels, length = pixels.shape[:2]
        if self.channels and len(self.channels) != channels:
            raise UsageError(
                f"query pixels hold {channels} channel(s), {len(self.channels)} named: "
                f"{','.join(self.channels)}"
            )
        if self.length is not None and self.length != length:
            raise UsageError(
                f"query pixels hold {length} frames, the length asked is {self.length}"
            )
        object.__setattr__(self, "length", length)


@dataclass
class QueryClip:
    """A resolved query clip: pixels + what is known about it."""

    frames: np.ndarray  # (C, L, H, W) uint8
    mode: str
    satellite: str
    channels: list[str]
    length: int
    gap_minutes: int
    start: datetime | None = None
    clip_id: str | None = None
    frame_ids: list[list[str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    event: str | None = None  # of a catalog clip of a product with events (a storm)

    @property
    def spec(self) -> dict[str, Any]:
        """The clip spec, as a clip model's training ``data`` names it."""
        return {
            "satellite": self.satellite,
            "channels": self.channels,
            "length": self.length,
            "gap_minutes": self.gap_minutes,
        }

    def describe(self) -> dict[str, Any]:
        """The result schema's ``query`` for this clip (the façade adds the ranking)."""
        end = (
            self.start + timedelta(minutes=self.gap_minutes * (self.length - 1))
            if self.start
            else None
        )
        return {
            "kind": "clip",
            "mode": self.mode,
            "clip_id": self.clip_id,
            "satellite": self.satellite,
            "channels": self.channels,
            "start": to_rfc3339(self.start) if self.start else None,
            "end": to_rfc3339(end) if end else None,
            "length": self.length,
            "gap_minutes": self.gap_minutes,
            "frame_ids": self.frame_ids,
            "files": self.files,
            "event": self.event,
        }


class QueryResolver:
    """Resolves :class:`ClipQuery` to :class:`QueryClip` in one workspace. The frame store and
    the clip catalog rows (per spec, until the catalog changes) are opened once and shared by
    threads."""

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._lock = threading.Lock()
        self._frame_store: FrameStore | None = None
        self._catalog: dict[tuple, tuple[frozenset, dict[str, dict[str, Any]]]] = {}
        # (stamp, channels of each satellite, events) of the frame catalog
        self._archived: tuple[frozenset, dict[str, set[str]], set[str]] | None = None

    @property
    def frame_store(self) -> FrameStore:
        with self._lock:
            if self._frame_store is None:
                from skysearch.ingest.framestore import FrameStore

                self._frame_store = FrameStore(self.workspace)
            return self._frame_store

    def clip_rows(
        self, satellite: str, channels: Sequence[str], length: int, gap: int
    ) -> Mapping[str, dict[str, Any]]:
        """clip_id -> catalog row of one clip spec (cached until the catalog changes)."""
        from skysearch.ingest.clips import read_clips

        key = (satellite, tuple(channels), length, gap)
        stamp = catalog_stamp(self.workspace.clips_catalog)
        with self._lock:
            cached = self._catalog.get(key)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        table = read_clips(self.workspace, satellite, list(channels), length, gap)
        rows = {r["clip_id"]: r for r in table.to_pylist()}
        with self._lock:
            self._catalog[key] = (stamp, rows)
        return rows

    def _read_archive(self) -> tuple[dict[str, set[str]], set[str]]:
        """The channels of each satellite, and the events, the frame catalog holds (read once
        per catalog state: a search checks its query and its filters against them)."""
        stamp = catalog_stamp(self.workspace.frames_catalog)
        with self._lock:
            if self._archived is not None and self._archived[0] == stamp:
                return self._archived[1:]
        table = read_frames(self.workspace, columns=["satellite", "channel", "event"])
        have = channels_by_satellite(table)
        events = {e for e in table["event"].unique().to_pylist() if e}
        with self._lock:
            self._archived = (stamp, have, events)
        return have, events

    def check_filters(self, filters: SearchFilters) -> None:
        """NotFoundError for a satellite, channel or event filter the archive does not hold
        (in another case, say): it would match nothing, silently."""
        if not filters.satellites and not filters.channels and not filters.events:
            return
        have, events = self._read_archive()
        if not have:
            return  # nothing to check against (a store loaded without its catalogs)
        listing = describe_channels(have)
        held = f"events {some_of(sorted(events))}" if events else "no events"
        for field_name, values, known, what in (
            ("satellites", filters.satellites, set(have), listing),
            ("channels", filters.channels, set().union(*have.values()), listing),
            ("events", filters.events, events, held),
        ):
            unknown = [v for v in values if v not in known]
            if unknown:
                raise NotFoundError(
                    f"filter {field_name}: unknown {', '.join(map(repr, unknown))}: the archive "
                    f"has {what}",
                    params=[field_name],
                )

    def check_archive(self, satellite: str | None, channels: Sequence[str]) -> None:
        """NotFoundError naming what the archive has when a satellite or channel is unknown."""
        if not satellite and not channels:
            return
        have = self._read_archive()[0]
        if not have:
            raise NotFoundError(
                f"no frames in the catalog of {self.workspace.root}: "
                "run `skysearch ingest PATH` first"
            )
        listing = describe_channels(have)
        if satellite and satellite not in have:
            raise NotFoundError(f"unknown satellite {satellite!r}: the archive has {listing}")
        known = set().union(*(have[s] for s in ([satellite] if satellite else have)))
        unknown = [c for c in channels if c not in known]
        if unknown:
            raise NotFoundError(
                f"unknown channel {','.join(unknown)}: the archive has {listing} "
                f"(pass e.g. {{channel}} {sorted(known)[0]})",
                params=["channel"],
            )

    def profile(self, satellite: str, names: Sequence[str] = ()) -> Profile:
        """The ingest profile that preprocesses query frames of ``satellite``: the first whose
        file-name pattern matches one of ``names``, else the satellite's first. A profile whose
        names carry the satellite (one archive across satellite generations) is found by the
        profile the catalog's frames of ``satellite`` were ingested with."""
        from skysearch.ingest.profiles import load_profiles

        known = load_profiles(workspace=self.workspace)
        profiles = [p for p in known.values() if p.satellite == satellite]
        if not profiles:
            used = read_frames(self.workspace, satellite=satellite, columns=["profile"])
            names_used = sorted(set(used["profile"].to_pylist()))
            profiles = [known[n] for n in names_used if n in known]
        if not profiles:
            raise UsageError(f"no ingest profile for satellite {satellite!r}")
        return next((p for p in profiles if any(p.match(n) for n in names)), profiles[0])

    def resolve(
        self, query: ClipQuery, data: Mapping[str, Any], filters: SearchFilters | None = None
    ) -> QueryClip:
        """The query's pixels; ``data``: the clip model's spec, for the parts the query leaves
        unset (a time is looked up on each satellite the model covers); ``filters``: the
        search's, whose events and satellites pick among clips of several at that time."""
        if query.clip_id:
            return self._check_spec(self._by_id(query.clip_id), query)
        satellite = query.satellite or data["satellite"]
        channels = list(query.channels) or list(data["channels"])
        length = query.length or int(data["length"])
        gap = query.gap_minutes or int(data["gap_minutes"])
        if query.pixels is not None:
            return self.from_pixels(query.pixels, satellite, channels, gap, query.start)
        if query.frames:
            return self._from_files(
                query.frames, satellite, channels, length, gap, query.tolerance_minutes
            )
        assert isinstance(query.at, datetime)
        satellites = [query.satellite] if query.satellite else model_satellites(data)
        tolerance = query.tolerance_minutes
        return self._at(query.at, satellites, channels, length, gap, tolerance, filters)

    @staticmethod
    def _check_spec(clip: QueryClip, query: ClipQuery) -> QueryClip:
        """A catalog clip asked for with a spec of its own: the spec given must be its (it
        was dropped without a word: 6-frame hits for a 3-frame query)."""
        asked = {
            "length": (query.length, clip.length),
            "gap_minutes": (query.gap_minutes, clip.gap_minutes),
            "satellite": (query.satellite, clip.satellite),
        }
        for name, (given, actual) in asked.items():
            if given is not None and given != actual:
                raise UsageError(
                    f"clip {clip.clip_id} has {name.replace('_', ' ')} {actual}, not the {given} "
                    f"asked ({{{name}}}): leave it out, or query by a time ({{at}})",
                    params=[name, "at"],
                )
        return clip

    def _by_id(self, clip_id: str) -> QueryClip:
        import pyarrow.compute as pc
        from skysearch.ingest.clips import read_clips

        table = read_clips(self.workspace)
        found = table.filter(pc.equal(table["clip_id"], clip_id))
        if found.num_rows == 0:
            raise NotFoundError(
                f"clip {clip_id} is not in the clip catalog of {self.workspace.root}: "
                "query by a start time ({at}), or take a clip id from a search's results",
                params=["at"],
            )
        return self._from_row(found.slice(0, 1).to_pylist()[0], "clip_id")

    def _from_row(self, row: Mapping[str, Any], mode: str) -> QueryClip:
        from skysearch.ingest.clips import clip_frames

        return QueryClip(
            frames=clip_frames(self.workspace, row, self.frame_store),
            mode=mode,
            satellite=row["satellite"],
            channels=list(row["channels"]),
            length=int(row["length"]),
            gap_minutes=int(row["gap_minutes"]),
            start=parse_time(row["start"]),
            clip_id=row["clip_id"] if row.get("clip_id") else None,
            frame_ids=[list(ids) for ids in row["frame_ids"]],
            event=row.get("event"),
        )

    def _at(
        self,
        at: datetime,
        satellites: Sequence[str],
        channels: list[str],
        length: int,
        gap: int,
        tolerance: int,
        filters: SearchFilters | None,
    ) -> QueryClip:
        """The clip starting nearest ``at`` (within ``tolerance`` minutes) on one of
        ``satellites``, of one event (two storms seen at once never make one clip)."""

        def find(satellite: str) -> list[dict[str, Any]]:
            return self._clips_at(at, satellite, channels, length, gap, tolerance)

        prefer = {"event": filters.events, "satellite": filters.satellites} if filters else {}
        row = at_time(
            find, satellites, at, time_key="start", id_key="clip_id", what="clip", prefer=prefer
        )
        return self._from_row(row, "at")

    def _clips_at(
        self,
        at: datetime,
        satellite: str,
        channels: list[str],
        length: int,
        gap: int,
        tolerance: int,
    ) -> list[dict[str, Any]]:
        """The clips of one satellite starting within ``tolerance`` of ``at``."""
        catalog = list(self.clip_rows(satellite, channels, length, gap).values())
        return clips_at(self.workspace, catalog, at, satellite, channels, length, gap, tolerance)

    def _from_files(
        self,
        paths: Sequence[Path],
        satellite: str,
        channels: list[str],
        length: int,
        gap: int,
        tolerance: int,
    ) -> QueryClip:
        """A clip of frame files: ordered by the times their names carry (as given when none
        does), the most recent ``length`` of each channel, checked to be ``gap`` minutes apart
        within ``tolerance``."""
        from skysearch.ingest.decode import Source, preprocess

        files = expand_files(paths)
        profile = self.profile(satellite, [f.name for f in files])
        matches = [profile.match(path.name) for path in files]
        check_one_event(m.event for m in matches if m)
        named = [  # (time or None, channel, path)
            (m.time if m else None, m.channel if m else channels[0], path)
            for m, path in zip(matches, files, strict=True)
        ]
        per_channel: list[list[Path]] = []
        start = None
        for chan in channels:
            mine = [n for n in named if n[1] == chan]
            order = frame_order([n[0] for n in mine], [n[2].name for n in mine], chan)
            mine = [mine[i] for i in order]
            if len(mine) < length:
                raise UsageError(
                    f"the query needs {length} {chan} frames ({length}x{gap}m clips), got "
                    f"{len(mine)} file(s): pass {length} files or a folder holding them"
                )
            given, mine = len(mine), mine[-length:]  # the most recent L frames
            if mine[0][0] is not None:
                names = [n[2].name for n in mine]
                check_spacing([n[0] for n in mine], names, gap, tolerance, given)
                if chan == channels[0]:
                    start = mine[0][0]
            per_channel.append([n[2] for n in mine])
        stack = []
        for chan_files in per_channel:
            decoded = []
            for path in chan_files:
                result = preprocess(Source(str(path)), profile)
                if result.frame is None:
                    raise UsageError(f"cannot use query frame {path}: {result.reason}")
                decoded.append(result.frame)
            stack.append(np.stack(decoded))
        qclip = self.from_pixels(np.stack(stack), satellite, channels, gap, start)
        qclip.files = [str(p) for chan_files in per_channel for p in chan_files]
        return qclip

    def from_pixels(
        self,
        pixels: np.ndarray,
        satellite: str,
        channels: list[str],
        gap: int,
        start: datetime | None,
    ) -> QueryClip:
        """A query clip of preprocessed frames (C, L, H, W), checked against the working
        resolution of the satellite's ingest profile."""
        width, height = self.profile(satellite).resolution
        want = (len(channels), pixels.shape[1], height, width)
        if pixels.shape != want:
            raise UsageError(
                f"query pixels are {pixels.shape}; a {satellite} {'+'.join(channels)} query "
                f"clip is (channels, frames, height, width) = {want}"
            )
        return QueryClip(
            frames=pixels,
            mode="frames",
            satellite=satellite,
            channels=channels,
            length=pixels.shape[1],
            gap_minutes=gap,
            start=start,
        )
