"""UTC time helpers: every interface speaks timezone-aware ISO 8601 / RFC 3339."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from skysearch.errors import UsageError

_TIME_OF_DAY = re.compile(r"[Tt ]\d|:")  # what a date alone lacks (2017-09-07, 20170907)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]|min)\s*$")
_DURATION_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}
#: Longest duration accepted: longer than any satellite archive, and far inside what
#: ``datetime`` arithmetic around an archive time can hold.
MAX_DURATION = timedelta(days=36525)  # 100 years


def parse_time(text: str | datetime) -> datetime:
    """Parse ISO 8601 (``2017-09-07T00:45Z``, ``2017-09-07 00:45``, ``2017-09-07``) to aware UTC.

    A time without an offset is taken as UTC.
    """
    if isinstance(text, datetime):
        value = text
    elif not isinstance(text, str):
        raise UsageError(
            f"cannot read time {text!r}: a time is an ISO 8601 string "
            "(e.g. 2017-09-07T00:45Z) or a datetime"
        )
    else:
        raw = text.strip()
        if raw.endswith(("Z", "z")):
            raw = raw[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(raw)
        except ValueError:
            raise UsageError(
                f"cannot read time {text!r}: use ISO 8601 UTC, e.g. 2017-09-07T00:45Z"
            ) from None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


#: the UTC time in file and folder names (model ids, reports, copies set aside): sorts by time
FILE_STAMP = "%Y%m%dT%H%M%SZ"


def file_stamp(when: datetime | None = None, micro: bool = False) -> str:
    """``when`` (default now) as ``20170907T004500Z``; ``micro`` adds microseconds before the
    Z, for names made more often than once a second."""
    when = parse_time(when) if when is not None else datetime.now(timezone.utc)
    return when.strftime(FILE_STAMP.replace("Z", "%fZ") if micro else FILE_STAMP)


def to_rfc3339(value: datetime) -> str:
    """Aware UTC datetime -> ``2017-09-07T00:45:00Z`` (the Qdrant payload format); the year
    always has 4 digits (``0001-01-01T00:00:00Z``: glibc's ``strftime("%Y")`` writes ``1``)."""
    return parse_time(value).replace(tzinfo=None, microsecond=0).isoformat() + "Z"


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``/``15min``, ``24h``, ``2d`` -> timedelta, at most :data:`MAX_DURATION`."""
    if text.strip() == "0":  # none, in any unit
        return timedelta(0)
    match = _DURATION.match(text)
    if not match:
        raise UsageError(f"cannot read duration {text!r}: use e.g. 30m, 24h or 2d")
    seconds = float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
    if not seconds <= MAX_DURATION.total_seconds():  # also catches inf from 400-digit numbers
        raise UsageError(f"duration {text!r} is too long: at most {MAX_DURATION.days} days")
    return timedelta(seconds=seconds)


def is_date_alone(text: str | datetime) -> bool:
    """True for a date written without a time of day (``2017-09-07``, ``20170907``)."""
    return isinstance(text, str) and not _TIME_OF_DAY.search(text.strip())


def parse_end(text: str | datetime) -> datetime:
    """The end of a time range: as :func:`parse_time`, but a date alone takes in that whole
    day, so ``2017-09-07`` ends at 23:59:59.999999."""
    end = parse_time(text)
    return end + timedelta(days=1, microseconds=-1) if is_date_alone(text) else end


def parse_between(text: str) -> tuple[datetime | None, datetime | None]:
    """``2017-09-05..2017-09-08``; either side may be empty (open-ended). An end given as a
    date alone takes in that whole day (``2017-09-07..2017-09-07`` is one day)."""
    if ".." not in text:
        raise UsageError(f"cannot read range {text!r}: use START..END, either side may be empty")
    start_text, end_text = text.split("..", 1)
    start = parse_time(start_text) if start_text.strip() else None
    end = parse_end(end_text) if end_text.strip() else None
    if start and end and end < start:
        raise UsageError(f"range {text!r} ends before it starts")
    return start, end
