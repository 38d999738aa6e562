"""A query given by a time where several series hold data at that time: two storms seen at once
(Digital Typhoon's events), or two satellites a cross-satellite model covers. Each series'
nearest candidate is found; the query is taken from the one series that has one (or the one
the search's own event or satellite filter names), else it is refused naming each, never
taken silently from one of them."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError
from skysearch.timeutil import parse_time, to_rfc3339


def at_time(
    find: Callable[[str], list[dict[str, Any]]],
    satellites: Sequence[str],
    at: datetime,
    *,
    time_key: str,
    id_key: str,
    what: str,
    prefer: Mapping[str, Sequence[str]],
) -> dict[str, Any]:
    """The query row at ``at``: ``find(satellite)`` lists each satellite's rows near it (or
    raises ``NotFoundError`` saying why it has none); one is picked among them (``prefer``:
    the search's ``events`` and ``satellites`` filters)."""
    rows, misses = [], []
    for satellite in satellites:
        try:
            rows += find(satellite)
        except NotFoundError as exc:
            misses.append((satellite, exc))
    if not rows:
        raise _why_none(misses)
    return pick(rows, at, time_key, id_key, what, prefer, id_param=id_key)


def clips_at(
    workspace: Workspace,
    catalog: Sequence[dict[str, Any]],
    at: datetime,
    satellite: str,
    channels: list[str],
    length: int,
    gap: int,
    tolerance: int,
) -> list[dict[str, Any]]:
    """The clips of one satellite starting within ``tolerance`` of ``at``: the clip catalog's
    (``catalog``: its rows of the spec), and for every event whose frames are there but whose
    clips the catalog lacks (a storm ingested since the clips were built), one assembled from
    the frame catalog (any spec: no clip catalog is needed)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.clip_specs import spec_label
    from skysearch.ingest.clips import assemble

    cols = ["frame_id", "satellite", "channel", "time", "event"]
    frames = read_frames(workspace, satellite=satellite, columns=cols)
    if frames.num_rows == 0:
        raise NotFoundError(
            f"no {satellite} frames in the catalog of {workspace.root}: "
            "run `skysearch ingest PATH` first"
        )
    tol = timedelta(minutes=tolerance)
    near = [r for r in catalog if abs(parse_time(r["start"]) - at) <= tol]
    span = timedelta(minutes=gap * (length - 1))
    time = frames["time"].type
    window = frames.filter(
        pc.and_(
            pc.greater_equal(frames["time"], pa.scalar(at - tol, time)),
            pc.less_equal(frames["time"], pa.scalar(at + span + tol, time)),
        )
    )
    built = {r.get("event") for r in near}
    if near and set(window["event"].to_pylist()) <= built:
        return near
    if not near:
        times = frames.filter(pc.equal(frames["channel"], channels[0]))["time"].to_pylist()
        first, last = min(times), max(times)
        if at < first - tol or at + span > last + tol:
            raise NotFoundError(
                f"{to_rfc3339(at)} is outside the archive: {satellite} {channels[0]} frames "
                f"cover {to_rfc3339(first)}..{to_rfc3339(last)}, and a {length}x{gap}m clip "
                f"must start by {to_rfc3339(last - span)}"
            )
    clips = assemble(window, satellite, channels, length, gap, tolerance)[0].to_pylist()
    near += [
        r for r in clips if abs(parse_time(r["start"]) - at) <= tol and r.get("event") not in built
    ]
    if not near:
        raise NotFoundError(
            f"no complete {spec_label(channels, length, gap)} clip starts at "
            f"{to_rfc3339(at)} (a frame is missing within +-{tolerance} min of a step): "
            "try another {at}, or a larger {tolerance_minutes}",
            params=["at", "tolerance_minutes"],
        )
    return near


def pick(
    rows: Sequence[dict[str, Any]],
    at: datetime,
    time_key: str,
    id_key: str,
    what: str,
    prefer: Mapping[str, Sequence[str]],
    id_param: str | None = None,
) -> dict[str, Any]:
    """The row nearest ``at`` of the one (satellite, event) series ``rows`` hold, or of the
    one ``prefer`` names (``{"event": [...], "satellite": [...]}``); ``UsageError`` naming
    each otherwise, and how to pick one (the parameter that takes an id: ``id_param``)."""
    nearest: dict[tuple[str, str | None], tuple[Any, dict[str, Any]]] = {}
    for row in rows:
        series = (row["satellite"], row.get("event"))
        off = abs(parse_time(row[time_key]) - at)
        if series not in nearest or off < nearest[series][0]:
            nearest[series] = (off, row)
    chosen = [row for _, row in nearest.values()]
    for key in ("event", "satellite"):
        named = [row for row in chosen if row.get(key) in prefer.get(key, ())]
        chosen = named or chosen  # a filter naming none of them filters results only
    if len(chosen) == 1:
        return chosen[0]
    listing = "; ".join(
        sorted(
            f"{row['satellite']}{' event ' + row['event'] if row.get('event') else ''} at "
            f"{to_rfc3339(parse_time(row[time_key]))} ({id_key.replace('_', ' ')} "
            f"{row[id_key]})"
            for row in chosen
        )
    )
    differ = [key for key in ("event", "satellite") if len({r.get(key) for r in chosen}) > 1]
    by_id = f"pass its {{{id_param}}}" if id_param else f"give its {id_key.replace('_', ' ')}"
    raise UsageError(
        f"{len(chosen)} {what}s fit {to_rfc3339(at)}: {listing}. Pick one with "
        f"{' or '.join('{' + key + '}' for key in differ)}, or {by_id}",
        params=[*differ, *([id_param] if id_param else [])],
    )


def _why_none(misses: Sequence[tuple[str, NotFoundError]]) -> NotFoundError:
    """Why no satellite had a query at the time: the one reason, or each satellite's."""
    if len(misses) == 1:
        return misses[0][1]
    params = list(dict.fromkeys(p for _, miss in misses for p in miss.params))
    text = "; ".join(f"{satellite}: {miss.message}" for satellite, miss in misses)
    return NotFoundError(text, params=params)
