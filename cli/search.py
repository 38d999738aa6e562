"""``skysearch search clip|frame``, and the filters and result rendering every search command
shares.

The commands are thin: options -> :class:`SearchFilters` / a query -> the façade
(:mod:`skysearch.retrieval.search`) -> a table on stdout, or with ``--json`` the result
schema ``skysearch.search/1`` on stdout and the table on stderr.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from skysearch.cli.groups import search_app
from skysearch.cli.options import DeviceOption, JsonOption, WorkspaceOption, names, one_name
from skysearch.cli.output import emit_json, info, result_text, table

from skysearch.config import load_settings
from skysearch.errors import UsageError
from skysearch.timeutil import parse_between, parse_duration

if TYPE_CHECKING:
    from skysearch.retrieval.search import Searcher, SearchResult
    from skysearch.retrieval.store.filters import SearchFilters

# ---------------------------------------------------------------------------- shared options
BetweenOption = Annotated[
    str | None,
    typer.Option(
        help="Time range START..END (UTC), either side may be empty: 2017-09-05..2017-09-08 "
        "(an END date alone takes in that whole day)"
    ),
]
MonthsOption = Annotated[
    str | None, typer.Option(help="Months to keep, e.g. 8,9 or 6-9 (1-12; 11-2 wraps around).")
]
HoursOption = Annotated[
    str | None, typer.Option(help="UTC hours to keep, e.g. 0-6,18-23 (22-2 wraps around).")
]
SatelliteOption = Annotated[
    str | None, typer.Option(help="Satellite of the query and of the results, e.g. goes-east.")
]
KOption = Annotated[int, typer.Option("--k", "-k", help="Number of results (1-10000).")]
OnePerDayOption = Annotated[
    bool, typer.Option("--one-per-day", help="At most one result per UTC day.")
]
ExcludeWindowOption = Annotated[
    str | None,
    typer.Option(help="Drop results within this window of the query's time, e.g. 24h."),
]
DayOfYearOption = Annotated[
    str | None,
    typer.Option(
        help="Season window FIRST-LAST in days of the year (1-366), e.g. 152-243 for June to "
        "August; 335-59 wraps the year end."
    ),
]
ToleranceOption = Annotated[
    int | None,
    typer.Option(
        help="Minutes the query's times may be off: --at from the nearest frame, --frames from "
        "the model's steps (default 15).",
        min=0,
        max=720,
    ),
]
RerankOption = Annotated[
    int,
    typer.Option(
        help="Exact re-rank of the top N by the grid metric, and never fewer than the --k "
        "shown (0 = off, at most 10000)."
    ),
]
BboxOption = Annotated[
    str | None,
    typer.Option(
        help="Keep points in WEST,SOUTH,EAST,NORTH (degrees, GeoJSON order; a closed box: "
        "edges included; WEST > EAST crosses the antimeridian, while the two latitudes may "
        "come in either order): scenes located inside, frames/clips whose storm centre "
        "(best track) lies inside or whose footprint (where the profile knows the "
        "projection) intersects it."
    ),
]
EventOption = Annotated[
    str | None, typer.Option(help="Event id(s) to keep, e.g. typhoon 198702 (comma-separated).")
]
MinClassOption = Annotated[
    int | None,
    typer.Option(help="Best-track class at least (JMA 2-6; needs `skysearch ingest-track`)."),
]
MaxPressureOption = Annotated[
    float | None,
    typer.Option(help="Best-track central pressure at most, hPa (needs `ingest-track`)."),
]


#: The cycle of each list option: a range past its end wraps around (hours 22-2, months 11-2).
CYCLES = {"months": (1, 12), "hours": (0, 23)}


def parse_int_list(text: str | None, name: str) -> tuple[int, ...]:
    """``"6-9,12"`` -> ``(6, 7, 8, 9, 12)``; ``"22-2"`` -> ``(22, 23, 0, 1, 2)`` (hours)."""
    if text is None:
        return ()
    first, last = CYCLES[name]
    out: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                if not (first <= lo <= last and first <= hi <= last):
                    raise UsageError(f"--{name} {part}: values must be in {first}..{last}")
                if lo <= hi:
                    out += range(lo, hi + 1)
                else:  # past the cycle's end: wrap around
                    out += [*range(lo, last + 1), *range(first, hi + 1)]
            elif part:
                out.append(int(part))
    except ValueError:
        raise UsageError(f"cannot read --{name} {text!r}: use e.g. 6-9,12") from None
    if not out:
        raise UsageError(f"--{name} names nothing: use e.g. 6-9,12")
    return tuple(out)


def _day_window(text: str | None) -> tuple[int, int] | None:
    """``"335-59"`` -> ``(335, 59)`` (the filter checks the range and wraps the year end)."""
    if text is None:
        return None
    try:
        first, last = (int(v) for v in text.split("-"))
    except ValueError:
        raise UsageError(f"cannot read --day-of-year {text!r}: use e.g. 152-243") from None
    return first, last


def build_filters(
    between: str | None = None,
    months: str | None = None,
    hours: str | None = None,
    channels: str | None = None,
    satellite: str | None = None,
    exclude_window: str | None = None,
    k: int = 10,
    one_per_day: bool = False,
    datasets: str | None = None,
    labels: str | None = None,
    bbox: str | None = None,
    events: str | None = None,
    min_class: int | None = None,
    max_pressure: float | None = None,
    day_of_year: str | None = None,
) -> SearchFilters:
    """CLI filter options (text as typed) -> the one filter shape, :class:`SearchFilters`."""
    from skysearch.retrieval.store.filters import SearchFilters

    start, end = parse_between(between) if between is not None else (None, None)
    sat = one_name(satellite, "satellite")
    return SearchFilters(
        start=start,
        end=end,
        months=parse_int_list(months, "months"),
        day_of_year=_day_window(day_of_year),
        hours=parse_int_list(hours, "hours"),
        channels=names(channels, "channel"),
        satellites=(sat,) if sat else (),
        exclude_window=timedelta(0) if exclude_window is None else parse_duration(exclude_window),
        datasets=names(datasets, "dataset"),
        labels=names(labels, "label"),
        bbox=names(bbox, "bbox") or None,
        events=names(events, "event"),
        min_class=min_class,
        max_pressure=max_pressure,
        k=k,
        one_per_day=one_per_day,
    )


def result_rows(result: SearchResult) -> tuple[list[dict[str, Any]], list[str]]:
    """Table rows and columns of a search result (clips, frames or scenes)."""
    rows, columns = [], ["rank", "score"]
    reranked = any(r.rerank_score is not None for r in result.results)
    if reranked:
        columns.append("vector")
    kind = result.results[0].kind if result.results else "clip"
    columns += (
        ["label", "source_path", "id"]
        if kind == "scene"
        else ["start", "channel", "satellite", f"{kind}_id"]
    )
    if any(r.event for r in result.results):  # products with events: which storm each hit is
        columns.insert(columns.index("satellite") + 1, "event")
    if "event" in columns and any(r.track_class is not None for r in result.results):
        after = columns.index("event") + 1  # and how strong the storm was then
        columns[after:after] = ["class", "hPa"]
    for r in result.results:
        rows.append(
            {
                "rank": r.rank,
                "score": f"{r.score:.4f}",
                "vector": f"{r.vector_score:.4f}" if r.vector_score is not None else "",
                "start": (r.start or "").replace("T", " ").replace(":00Z", "Z"),
                "channel": ",".join(r.channels),
                "satellite": r.satellite or "",
                "event": r.event or "",
                "class": "" if r.track_class is None else r.track_class,
                "hPa": "" if r.pressure_hpa is None else f"{r.pressure_hpa:g}",
                "clip_id": r.id,
                "frame_id": r.id,
                "label": r.label or "",
                "source_path": r.source_path or "",
                "id": r.id,
            }
        )
    return rows, columns


def render_result(
    result: SearchResult, json_out: bool, extra: dict[str, Any] | None = None
) -> None:
    """The results table (stdout; stderr with ``--json``, whose result schema owns stdout);
    the query line and timings are logs (stderr)."""
    q = result.query
    if q["kind"] == "clip":
        what = (
            f"query clip {q['satellite']} {'+'.join(q['channels'])} {q['length']}x"
            f"{q['gap_minutes']}m from {q['start'] or 'files'} (model {q['model_id']}, "
            f"ranked by {q['ranked_by']})"
        )
    elif q["kind"] == "frame":
        what = (
            f"query frame {q['satellite']} {q['channels'][0]} at {q['start'] or 'unknown time'} "
            f"({q['mode']}; model {q['model_id']}, ranked by {q['ranked_by']})"
        )
    elif q["kind"] == "image":  # every example, and the words given with them
        parts = [Path(image).name for image in q.get("images") or [q["image"]]]
        parts += [repr(q["text"])] if q.get("text") else []
        what = f"image query {' + '.join(parts)} (model {q['model_id']})"
    else:
        what = f"text query {q['text']!r} (model {q['model_id']})"
    info(what)
    if q.get("note"):
        info(f"note: {q['note']}")
    rows, columns = result_rows(result)
    result_text(table(rows, columns) if rows else "no results (loosen the filters?)", json_out)
    timing = ", ".join(f"{k} {v:.0f} ms" for k, v in result.timing_ms.items())
    info(f"timing: {timing}")
    if json_out:
        payload = result.to_dict()
        payload.update(extra or {})
        emit_json(payload)


# ---------------------------------------------------------------------------- search clip
@search_app.command("clip")
def search_clip_command(
    at: Annotated[
        str | None, typer.Option(help="Start time (UTC) of the query clip, e.g. 2017-09-07T00:45Z.")
    ] = None,
    clip_id: Annotated[
        str | None, typer.Option("--clip-id", help="Query by a clip id of the clip catalog.")
    ] = None,
    frames: Annotated[
        list[Path] | None,
        typer.Option(
            "--frames",
            help="Query frame files from outside the archive, or one folder of them "
            "(repeatable; ordered by the time in their names, else as given).",
        ),
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(help="Channel(s) of the query clip and of the results, e.g. ir or ir,wv."),
    ] = None,
    satellite: SatelliteOption = None,
    tolerance: ToleranceOption = None,
    length: Annotated[
        int | None, typer.Option(help="Frames per clip (default: the clip model's).")
    ] = None,
    gap: Annotated[
        int | None, typer.Option(help="Minutes between frames (default: the clip model's).")
    ] = None,
    between: BetweenOption = None,
    months: MonthsOption = None,
    hours: HoursOption = None,
    day_of_year: DayOfYearOption = None,
    exclude_window: ExcludeWindowOption = None,
    k: KOption = 10,
    one_per_day: OnePerDayOption = False,
    event: EventOption = None,
    min_class: MinClassOption = None,
    max_pressure: MaxPressureOption = None,
    bbox: BboxOption = None,
    rerank: RerankOption = 0,
    augment: Annotated[
        bool, typer.Option("--augment", help="Fuse with the predicted future (needs a predictor).")
    ] = False,
    model: Annotated[
        str | None, typer.Option(help="Clip model id (default: the latest that fits the spec).")
    ] = None,
    contact_sheet: Annotated[
        Path | None,
        typer.Option(
            help="Write an image (.png, .jpg, ...: the suffix picks the format): the query "
            "clip's frames, then each hit's frames."
        ),
    ] = None,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Find past clips whose cloud evolution looks like the query clip.

    Query by start time (--at, --channel, --length, --gap), by --clip-id, or by --frames.

    Prints a table (rank, score, start, channel, satellite, clip id); --json: schema v1.

    Example: skysearch search clip --at 2017-09-07T00:45Z --channel ir --rerank 20 -w ws
    """
    _check_exist(frames or [], "--frames")
    satellite = one_name(satellite, "satellite")
    from skysearch.retrieval.search import ClipQuery, Searcher, SearchOptions

    settings = load_settings(workspace=workspace, device=device)
    query = ClipQuery(
        at=at,
        clip_id=clip_id,
        frames=tuple(frames or ()),
        channels=names(channel, "channel"),
        satellite=satellite,
        length=length,
        gap_minutes=gap,
        **_tolerance(tolerance, at is not None or bool(frames), "--at or --frames"),
    )
    filters = build_filters(
        between,
        months,
        hours,
        channel,
        satellite,
        exclude_window,
        k,
        one_per_day,
        events=event,
        min_class=min_class,
        max_pressure=max_pressure,
        bbox=bbox,
        day_of_year=day_of_year,
    )
    options = SearchOptions(rerank=rerank, augment=augment, model_id=model)
    with Searcher(settings) as searcher:
        result = searcher.search_clip(query, filters, options)
        _render_with_sheet(searcher, result, contact_sheet, json_out)


def _tolerance(minutes: int | None, timed: bool, needs: str) -> dict[str, int]:
    """``tolerance_minutes`` for a query given by time; refused where nothing is matched by time."""
    if minutes is None:
        return {}
    if not timed:
        raise UsageError(f"{{tolerance}} applies to a query by {needs}", params=["tolerance"])
    return {"tolerance_minutes": minutes}


def _render_with_sheet(
    searcher: Searcher, result: SearchResult, contact_sheet: Path | None, json_out: bool
) -> None:
    extra = {}
    if contact_sheet is not None:
        from skysearch.retrieval.search.contact_sheet import write_contact_sheet

        extra["contact_sheet"] = write_contact_sheet(
            searcher.workspace, result, contact_sheet, frame_store=searcher.frame_store
        )
    render_result(result, json_out, extra)
    if contact_sheet is not None:
        info(f"contact sheet: {contact_sheet}")


def _check_exist(paths: list[Path], flag: str, steps: bool = False) -> None:
    """Query files that are not there: one line before anything loads (torch takes seconds).
    With ``steps``, ``FILE#frame=N`` (step N of a NetCDF or zarr file of many frames) needs
    FILE."""
    from skysearch.ingest.decode import split_step

    def step_of(path: Path) -> bool:  # FILE#frame=N of a FILE that is there
        head, index = split_step(str(path))
        return index is not None and Path(head).exists()

    missing = [p for p in paths if not p.exists() and not (steps and step_of(p))]
    if missing and not steps and step_of(missing[0]):
        raise UsageError(
            f"{flag} {missing[0]}: FILE#frame=N picks a step of a file of many frames in "
            "search frame --file only; here give frame image files"
        )
    if missing:
        raise UsageError(f"{flag} {', '.join(map(str, missing))}: no such file or folder")


# ---------------------------------------------------------------------------- search frame
@search_app.command("frame")
def search_frame_command(
    file: Annotated[
        Path | None,
        typer.Option(
            help="A query frame from outside the archive (an image file, or FILE#frame=N: step "
            "N of a NetCDF or zarr file of many frames), preprocessed by the source profile "
            "that recognises its name (or --source)."
        ),
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="Time (UTC) of an archive frame, e.g. 2017-09-07T00:45Z.")
    ] = None,
    frame_id: Annotated[
        str | None, typer.Option("--frame-id", help="Query by a frame id of the frame catalog.")
    ] = None,
    channel: Annotated[
        str | None,
        typer.Option(help="Channel of the query frame and of the results, e.g. ir or wv."),
    ] = None,
    satellite: SatelliteOption = None,
    tolerance: ToleranceOption = None,
    source: Annotated[
        str | None,
        typer.Option(help="Source profile that preprocesses --file, e.g. goes-sector."),
    ] = None,
    between: BetweenOption = None,
    months: MonthsOption = None,
    hours: HoursOption = None,
    day_of_year: DayOfYearOption = None,
    exclude_window: ExcludeWindowOption = None,
    k: KOption = 10,
    one_per_day: OnePerDayOption = False,
    event: EventOption = None,
    min_class: MinClassOption = None,
    max_pressure: MaxPressureOption = None,
    bbox: BboxOption = None,
    rerank: RerankOption = 0,
    model: Annotated[
        str | None,
        typer.Option(help="Frame model id (default: the latest of the channel and satellite)."),
    ] = None,
    contact_sheet: Annotated[
        Path | None,
        typer.Option(
            help="Write an image (.png, .jpg, ...: the suffix picks the format): the query "
            "frame, then each hit."
        ),
    ] = None,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Find past frames that look like the query frame (needs `skysearch index frames`).

    Query by --file (a frame from outside the archive), by --at and --channel, or by
    --frame-id.

    Prints a table (rank, score, start, channel, satellite, frame id); --json: schema v1.

    Example: skysearch search frame --file HUWV172500015.GIF --one-per-day -w ws
    """
    _check_exist([file] if file else [], "--file", steps=True)
    satellite, channel = one_name(satellite, "satellite"), one_name(channel, "channel")
    from skysearch.retrieval.search import FrameQuery, Searcher, SearchOptions

    settings = load_settings(workspace=workspace, device=device)
    query = FrameQuery(
        at=at,
        frame_id=frame_id,
        file=file,
        channel=channel,
        satellite=satellite,
        source=source,
        **_tolerance(tolerance, at is not None, "--at"),
    )
    filters = build_filters(
        between,
        months,
        hours,
        channel,
        satellite,
        exclude_window,
        k,
        one_per_day,
        events=event,
        min_class=min_class,
        max_pressure=max_pressure,
        bbox=bbox,
        day_of_year=day_of_year,
    )
    options = SearchOptions(rerank=rerank, model_id=model)
    with Searcher(settings) as searcher:
        result = searcher.search_frame(query, filters, options)
        _render_with_sheet(searcher, result, contact_sheet, json_out)
