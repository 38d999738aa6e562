"""JMA best tracks: hourly storm rows (class, central pressure, wind, centre) joined by event.

Input: the Digital Typhoon layout's ``<event>.tsv`` (one file per typhoon, the event id is the
file stem): tab-separated, no header, one row per hour, 20 numeric columns (``COLUMNS``).
Validation is strict and per row, so every problem names ``file:line`` and why: wrong column
count, a non-numeric or non-integer field, a date that does not exist, class not in 2..6, an
impossible latitude, longitude, pressure or wind, a duplicate, out-of-order or non-hourly time.
(A hand-written reader: the CSV readers of pyarrow/pandas name the line of a wrong column
count but not of a bad value, and never the time order.)

A file with any bad row is rejected whole, every bad row reported: a best track half-loaded
would silently give frames of the missing hours no payload, or the payload of a neighbour.
Other files of a folder still load (one bad file never blocks a batch). A track whose event has
no frame in the frame catalog is refused too ("unknown event"): ingest the frames first.

Storage: ``catalog/tracks/event=<id>.parquet``, one file per event, written atomically and only
when its rows change, so re-ingesting the same file is a no-op (reported ``unchanged``).

Footprints (:func:`set_footprints`, run by every load): frames of a storm-centred profile get
the lat/lon box around their track centre in the frame catalog, and clips the union of their
frames' (``skysearch.ingest.footprints``). A load takes the workspace's ingest lock before it
writes a track, so a load refused by a running ingest changes nothing (a track stored without
its footprints would give the next index points outside their own box).

Lookup (:func:`track_rows`, :func:`track_payloads`): the row nearest a time within 30 minutes
(on a tie, the earlier row); tables are cached per file version, so payloads for thousands of
items read each event's file once.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from skysearch.ingest.catalog import atomic_write_table, read_frames, read_part, update_frames
from skysearch.ingest.clips import refresh_footprints
from skysearch.ingest.footprints import BOUND_COLUMNS, centred_boxes
from skysearch.ingest.framestore import StoreWriter
from skysearch.ingest.profiles import load_profiles

from skysearch.config import Workspace
from skysearch.errors import DamagedError, NotFoundError, StoreError, UsageError
from skysearch.timeutil import parse_time

#: The 20 columns of a JMA best-track TSV, in file order (the pyphoon loader's names).
COLUMNS = (
    "year",
    "month",
    "day",
    "hour",
    "class",
    "latitude",
    "longitude",
    "pressure",
    "wind",
    "gust",
    "storm_direc",
    "storm_radius_major",
    "storm_radius_minor",
    "gale_direc",
    "gale_radius_major",
    "gale_radius_minor",
    "landfall",
    "speed",
    "direction",
    "interpolated",
)
_INTEGER = {"year", "month", "day", "hour", "class", "interpolated"}
#: Physically possible values: JMA classes 2 (tropical depression) .. 6 (extra-tropical);
#: the lowest sea-level pressure ever measured is 870 hPa, the highest 1084 hPa.
LIMITS = {
    "class": (2, 6),
    "latitude": (-90.0, 90.0),
    "longitude": (-180.0, 360.0),
    "pressure": (850.0, 1090.0),
    "wind": (0.0, 250.0),
    "interpolated": (0, 1),
}
TRACK_SCHEMA = pa.schema(
    [
        ("time", pa.timestamp("us", tz="UTC")),
        ("track_class", pa.int8()),
        ("lat", pa.float64()),
        ("lon", pa.float64()),
        ("pressure_hpa", pa.float64()),
        ("wind_kt", pa.float64()),
        ("interpolated", pa.bool_()),
    ]
)
#: Payload keys of a frame or clip with a best track (the vector store's field names).
PAYLOAD_KEYS = ("track_class", "pressure_hpa", "wind_kt", "lat", "lon")
MATCH_MINUTES = 30  # a time takes the track row nearest it within this
FOOTPRINTS_PENDING = ".footprints-pending"  # in the catalog folder: clips not refreshed yet
_EVENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class TrackReport:
    """One ``ingest_tracks`` run (``--json`` prints it)."""

    loaded: list[str] = field(default_factory=list)  # events written (new or changed)
    unchanged: list[str] = field(default_factory=list)  # events whose rows were already in
    rows: int = 0  # rows of the loaded events
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {path, line, reason}
    unknown_events: list[str] = field(default_factory=list)  # skipped in a folder: no frames
    footprints: int = 0  # storm-centred frames whose footprint was set (or changed)
    #: loaded events with no track row within MATCH_MINUTES of any of their frames (a track
    #: of another year or storm under this event's name?)
    unmatched: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        files = len({item["path"] for item in self.rejected})
        text = (
            f"tracks: {len(self.loaded)} events loaded ({self.rows} rows), "
            f"{len(self.unchanged)} unchanged, {files} files rejected"
        )
        if self.unknown_events:
            text += f", {len(self.unknown_events)} skipped (no frames of their event)"
        if self.footprints:
            text += f", {self.footprints} frame footprints changed"
        if self.unmatched:
            text += (
                f"; warning: the tracks of {', '.join(self.unmatched)} match none of their "
                f"frames' times (within {MATCH_MINUTES} min): another year or storm?"
            )
        return text


def tracks_dir(workspace: Workspace) -> Path:
    return workspace.catalog_dir / "tracks"


def track_path(workspace: Workspace, event: str) -> Path:
    return tracks_dir(workspace) / f"event={event}.parquet"


class _BadRow(ValueError):
    pass


def _number(name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _BadRow(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _BadRow(f"{name} {text!r} is not a finite number")
    if name in _INTEGER and value != int(value):
        raise _BadRow(f"{name} {text!r} is not a whole number")
    low, high = LIMITS.get(name, (-math.inf, math.inf))
    if not low <= value <= high:
        raise _BadRow(f"{name} {text!r} is outside {low:g}..{high:g}")
    return value


def _parse_row(line: str) -> tuple[datetime, dict[str, float]]:
    if not line.strip():
        raise _BadRow("empty line")
    cells = line.split("\t")
    if len(cells) != len(COLUMNS):
        raise _BadRow(f"{len(cells)} tab-separated columns, expected {len(COLUMNS)}")
    values = {name: _number(name, text) for name, text in zip(COLUMNS, cells, strict=True)}
    try:
        time = datetime(
            *(int(values[k]) for k in ("year", "month", "day", "hour")), tzinfo=timezone.utc
        )
    except ValueError as exc:
        raise _BadRow(f"no such time ({exc})") from None
    return time, values


def _time_problem(time: datetime, previous: datetime | None, first_line: dict) -> str | None:
    if time in first_line:
        return f"duplicate time {time:%Y-%m-%d %H}h (line {first_line[time]})"
    if previous is None:
        return None
    hours = (time - previous).total_seconds() / 3600
    if hours < 0:
        return f"time {time:%Y-%m-%d %H}h is before the previous row's"
    if hours != 1:
        return f"time {time:%Y-%m-%d %H}h is {hours:g} h after the previous row (hourly rows)"
    return None


def parse_track(path: Path) -> tuple[pa.Table | None, list[dict[str, Any]]]:
    """A best-track file -> (its rows as a ``TRACK_SCHEMA`` table, problems). With any
    problem the table is None: the file is rejected whole (see the module doc)."""
    problems: list[dict[str, Any]] = []

    def bad(line: int | None, reason: str) -> None:
        problems.append({"path": str(path), "line": line, "reason": reason})

    try:
        text = path.read_bytes().decode("utf-8-sig")  # -sig: a BOM some editors write
    except UnicodeDecodeError as exc:
        bad(None, f"not UTF-8 text (byte {exc.start})")
        return None, problems
    except OSError as exc:
        bad(None, f"cannot read it ({exc.strerror})")
        return None, problems
    lines = text.rstrip("\r\n").splitlines()
    rows: list[tuple[datetime, dict[str, float]]] = []
    first_line: dict[datetime, int] = {}
    previous = None
    for number, line in enumerate(lines, start=1):
        try:
            time, values = _parse_row(line.rstrip("\r"))
        except _BadRow as exc:
            bad(number, str(exc))
            previous = None  # the next row's step cannot be judged
            continue
        problem = _time_problem(time, previous, first_line)
        if problem:
            bad(number, problem)
        first_line.setdefault(time, number)
        previous = max(time, previous) if previous else time
        rows.append((time, values))
    if not lines:
        bad(None, "no rows")
    if problems:
        return None, problems
    table = pa.table(
        {
            "time": [t for t, _ in rows],
            "track_class": [int(v["class"]) for _, v in rows],
            "lat": [v["latitude"] for _, v in rows],
            "lon": [v["longitude"] for _, v in rows],
            "pressure_hpa": [v["pressure"] for _, v in rows],
            "wind_kt": [v["wind"] for _, v in rows],
            "interpolated": [v["interpolated"] == 1 for _, v in rows],
        },
        schema=TRACK_SCHEMA,
    )
    return table, problems


def _track_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.glob("*.tsv") if p.is_file())
        if not files:
            raise UsageError(f"no best-track files (*.tsv) in {path}")
        return files
    raise UsageError(f"best-track path not found: {path}")


def catalog_events(workspace: Workspace) -> set[str]:
    """Events that have frames in the frame catalog."""
    events = read_frames(workspace, columns=["event"])["event"]
    return {e for e in pc.unique(events).to_pylist() if e is not None}


def ingest_tracks(workspace: Workspace, path: Path) -> TrackReport:
    """Load one best-track file or every ``*.tsv`` of a folder (see the module doc).

    A single file of an event without frames raises ``NotFoundError``; in a folder such files
    are skipped and listed (a track archive usually covers more storms than a workspace).
    """
    workspace = workspace.existing()  # a mistyped -w: not "unknown event"
    files = _track_files(Path(path))
    report, tables = _parse_files(workspace, files, one_file=Path(path).is_file())
    with StoreWriter(workspace):  # before any write: see the module doc
        for event, table in tables.items():
            target = track_path(workspace, event)
            if target.exists() and _stored_equals(target, table):
                report.unchanged.append(event)
                continue
            atomic_write_table(table, target)
            report.loaded.append(event)
            report.rows += table.num_rows
        report.footprints = set_footprints(workspace, [*report.loaded, *report.unchanged])
    report.unmatched = _unmatched(workspace, [*report.loaded, *report.unchanged])
    return report


def _parse_files(
    workspace: Workspace, files: Sequence[Path], one_file: bool
) -> tuple[TrackReport, dict[str, pa.Table]]:
    """(the report of the files' problems, {event: its valid track table}); writes nothing.
    ``one_file``: the user named the file (an unknown event is an error, not a skip)."""
    known = catalog_events(workspace)
    report = TrackReport()
    tables: dict[str, pa.Table] = {}
    for file in files:
        event = file.stem
        if not _EVENT.match(event):
            reason = f"event id {event!r} (the file name) is not a plain name"
            report.rejected.append({"path": str(file), "line": None, "reason": reason})
            continue
        if event not in known:
            if one_file:
                raise NotFoundError(
                    f"unknown event {event!r} ({file.name}): no frames of it in the frame "
                    f"catalog of {workspace.root}",
                    hint="ingest its frames first (`skysearch ingest`)",
                )
            report.unknown_events.append(event)
            continue
        table, problems = parse_track(file)
        report.rejected += problems
        if table is not None:
            tables[event] = table
    return report, tables


def _unmatched(workspace: Workspace, events: Sequence[str]) -> list[str]:
    """The events none of whose frames has a track row within MATCH_MINUTES."""
    if not events:
        return []
    frames = read_frames(workspace, columns=["time", "event"])
    frames = frames.filter(pc.fill_null(pc.is_in(frames["event"], pa.array(list(events))), False))
    times: dict[str, list[datetime]] = {}
    for row in frames.to_pylist():
        times.setdefault(row["event"], []).append(row["time"])
    return [e for e in events if not any(track_rows(workspace, e, times.get(e, [])))]


def set_footprints(workspace: Workspace, events: Sequence[str]) -> int:
    """Give the frames of these events whose profile is storm-centred (``"footprint":
    {"centred_on": "track"}``) the box around their best-track centre (none where the track
    has no row within 30 minutes), then the clips the union of their frames'. Only rows whose
    box changes are rewritten (re-runs, and a changed ``pixel_km``, apply). A marker lasts
    from the frames' write to the clips', so the re-run of a run killed between them gives the
    clips theirs. Run under the ingest lock. Returns the frames whose box changed."""
    centred = {
        name: p.footprint.pixel_km
        for name, p in load_profiles(workspace=workspace).items()
        if p.footprint is not None and p.footprint.centred
    }
    if not centred or not events:
        return 0
    columns = ["frame_id", "time", "event", "profile", "width", "height", *BOUND_COLUMNS]
    frames = read_frames(workspace, columns=columns)
    mask = pc.and_(
        pc.is_in(frames["event"], pa.array(list(events), pa.string())),
        pc.is_in(frames["profile"], pa.array(sorted(centred), pa.string())),
    )
    rows = frames.filter(pc.fill_null(mask, False)).to_pylist()
    changes: dict[str, dict[str, object]] = {}
    for event in events:
        mine = [r for r in rows if r["event"] == event]
        tracks = track_rows(workspace, event, [r["time"] for r in mine])
        found = [(r, t) for r, t in zip(mine, tracks, strict=True) if t is not None]
        boxes: dict[str, list[float | None]] = {r["frame_id"]: [None] * 4 for r in mine}
        if found:
            computed = centred_boxes(
                np.array([t["lat"] for _, t in found]),
                np.array([t["lon"] for _, t in found]),
                np.array([r["width"] for r, _ in found]),
                np.array([r["height"] for r, _ in found]),
                np.array([centred[r["profile"]] for r, _ in found]),
            )
            for (r, _), box in zip(found, computed.tolist(), strict=True):
                boxes[r["frame_id"]] = box
        for r in mine:
            if boxes[r["frame_id"]] != [r[name] for name in BOUND_COLUMNS]:
                changes[r["frame_id"]] = dict(zip(BOUND_COLUMNS, boxes[r["frame_id"]], strict=True))
    pending = workspace.catalog_dir / FOOTPRINTS_PENDING
    if changes:
        pending.touch()  # until the clips have theirs: a kill between the two writes
        update_frames(workspace, changes)
    if pending.exists():
        refresh_footprints(workspace)
        pending.unlink()
    return len(changes)


def _stored_equals(path: Path, table: pa.Table) -> bool:
    """Whether the stored track holds exactly these rows (a damaged one does not: the new
    rows replace it)."""
    try:
        return read_part(path, TRACK_SCHEMA).equals(table)
    except DamagedError:
        return False


@functools.lru_cache(maxsize=256)
def _cached(path: str, version: tuple[int, int, int]) -> tuple[np.ndarray, dict[str, list]]:
    del version  # part of the cache key only: a rewritten file is read again
    try:
        table = read_part(Path(path), TRACK_SCHEMA)
    except DamagedError as exc:  # not rebuilt by `skysearch repair`: the source file is needed
        raise StoreError(
            f"{path} is damaged ({exc.what}); load the best track again with "
            "`skysearch ingest-track`"
        ) from None
    return table["time"].cast(pa.int64()).to_numpy(), table.to_pydict()


def _load(workspace: Workspace, event: str) -> tuple[np.ndarray, dict[str, list]] | None:
    """(times in µs since the epoch, columns) of an event's track; None without one."""
    path = track_path(workspace, event)
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return _cached(str(path), (st.st_ino, st.st_mtime_ns, st.st_size))


def _micros(times: Iterable[datetime | np.datetime64 | str]) -> np.ndarray:
    out = []
    for t in times:
        if isinstance(t, str):  # ISO 8601, as everywhere (numpy warns on a "Z")
            t = parse_time(t)
        elif not isinstance(t, datetime | np.datetime64):
            raise UsageError(f"a time is a datetime or an ISO 8601 string, not {t!r}")
        if isinstance(t, datetime):
            t = t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t
        out.append(np.datetime64(t, "us").astype(np.int64))
    return np.asarray(out, dtype=np.int64)


def _nearest(track_times: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Row of ``track_times`` (sorted) nearest each time within ``MATCH_MINUTES``, else -1."""
    right = np.clip(np.searchsorted(track_times, times), 1, len(track_times) - 1)
    left = right - 1
    if len(track_times) == 1:
        left = right = np.zeros_like(times)
    pick = np.where(
        np.abs(times - track_times[left]) <= np.abs(track_times[right] - times), left, right
    )
    close = np.abs(track_times[pick] - times) <= MATCH_MINUTES * 60_000_000
    return np.where(close, pick, -1)


def _check_list(values: Any, name: str) -> None:
    """One value given where a list goes (a string was read letter by letter)."""
    listed = isinstance(values, Sequence | np.ndarray)
    if isinstance(values, str | datetime | np.datetime64) or not listed:
        raise UsageError(f"{name} is a list, one per item, not {values!r}")


def track_rows(
    workspace: Workspace, event: str | None, times: Sequence[datetime | np.datetime64]
) -> list[dict[str, Any] | None]:
    """The best-track row of ``event`` at each time (nearest within 30 min), else None:
    ``{"time", "class", "pressure_hpa", "wind_kt", "lat", "lon", "interpolated"}``."""
    _check_list(times, "times")
    loaded = _load(workspace, event) if event is not None else None
    if loaded is None or not len(times):
        return [None] * len(times)
    track_times, columns = loaded
    rows = _nearest(track_times, _micros(times))
    out: list[dict[str, Any] | None] = []
    for row in rows:
        if row < 0:
            out.append(None)
            continue
        out.append(
            {
                "time": columns["time"][row],
                "class": columns["track_class"][row],
                "pressure_hpa": columns["pressure_hpa"][row],
                "wind_kt": columns["wind_kt"][row],
                "lat": columns["lat"][row],
                "lon": columns["lon"][row],
                "interpolated": columns["interpolated"][row],
            }
        )
    return out


def track_payloads(
    workspace: Workspace,
    events: Sequence[str | None],
    times: Sequence[datetime | np.datetime64],
) -> list[dict[str, Any]]:
    """Vector-store payload fields of items (frames; clips at their last frame's time): keys
    ``PAYLOAD_KEYS``, or an empty dict where the item's event has no track row at that time."""
    _check_list(events, "events")
    _check_list(times, "times")
    if len(events) != len(times):
        raise UsageError(f"{len(events)} events for {len(times)} times")
    out: list[dict[str, Any]] = [{} for _ in events]
    by_event: dict[str, list[int]] = {}
    for i, event in enumerate(events):
        if event is not None:
            by_event.setdefault(event, []).append(i)
    for event, items in by_event.items():
        rows = track_rows(workspace, event, [times[i] for i in items])
        for i, row in zip(items, rows, strict=True):
            if row is not None:
                out[i] = {
                    "track_class": int(row["class"]),
                    **{k: float(row[k]) for k in PAYLOAD_KEYS[1:]},
                }
    return out


def track_arrays(
    workspace: Workspace,
    events: Sequence[str | None],
    times: Sequence[datetime | np.datetime64],
) -> dict[str, np.ndarray]:
    """Track values of many items as arrays (NaN / class 0 where an item has none):
    ``{"track_class", "pressure_hpa", "wind_kt"}``; for evaluation."""
    payloads = track_payloads(workspace, events, times)
    return {
        "track_class": np.array([p.get("track_class", 0) for p in payloads], dtype=np.int64),
        "pressure_hpa": np.array([p.get("pressure_hpa", np.nan) for p in payloads]),
        "wind_kt": np.array([p.get("wind_kt", np.nan) for p in payloads]),
    }
