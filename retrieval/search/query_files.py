"""Query frames given as files (the CLI's ``--frames``, the service's uploads): which files, in
what order, and whether they are a clip model's steps apart."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path

from skysearch.ingest.decode import IMAGE_SUFFIXES

from skysearch.errors import UsageError


def frame_order(times: Sequence[datetime | None], names: Sequence[str], channel: str) -> list[int]:
    """Positions of query frames in time order, by the times their names carry (in the order
    given when none does: a string sort put frame10 before frame9); a mix of timed and untimed
    names is refused (an untimed "latest.gif" would silently become the most recent frame)."""
    untimed = [name for t, name in zip(times, names, strict=True) if t is None]
    if untimed and len(untimed) < len(names):
        raise UsageError(
            f"{len(untimed)} of the {channel} query frames carry no time in their names "
            f"({', '.join(untimed[:3])}: no time, or a name not of the source profile's "
            "pattern, e.g. another suffix) and the others do: frames are ordered by their "
            "times, so pass only timed frames (or only untimed ones, in the order given)"
        )
    if untimed:
        return list(range(len(names)))
    return sorted(range(len(names)), key=lambda i: times[i])


def check_spacing(
    times: Sequence[datetime], names: Sequence[str], gap: int, tolerance: int, given: int = 0
) -> None:
    """Refuse query frames (in time order) that are not ``gap`` minutes apart: a clip model
    compares motion over its own steps, so other spacings match meaningless clips.
    ``given``: how many frames the user passed when these are the most recent of them."""
    for i in range(1, len(times)):
        minutes = (times[i] - times[i - 1]).total_seconds() / 60
        if abs(minutes - gap) > tolerance:
            same = "the same time" if minutes == 0 else f"{minutes:g} min apart"
            taken = (
                f" (the query is the most recent {len(times)} of the {given} frames given)"
                if given > len(times)
                else ""
            )
            raise UsageError(
                f"query frames {names[i - 1]} and {names[i]} are {same}; the clip model's "
                f"frames are {gap} min apart (+-{tolerance}): pass frames {gap} min apart" + taken,
                params=["frame_files"],
            )


def check_once(keys: Sequence[object], names: Sequence[str]) -> None:
    """Refuse a query frame given twice (the same file, or the same upload twice): the clip
    would hold one time step twice, and a clip model be chosen for the wrong length."""
    first: dict[object, str] = {}
    for key, name in zip(keys, names, strict=True):
        if key in first:
            raise UsageError(
                f"the query frames {first[key]} and {name} are the same file: pass each frame once",
                params=["frame_files"],
            )
        first[key] = name


def expand_files(paths: Sequence[Path]) -> list[Path]:
    """Query frame files: each file given, and the images of each folder given, by name
    (numbers in names by value: frame9 before frame10)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            images = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
            out += sorted(images, key=lambda p: (_natural(p), p.name))
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(f"query frame {path} does not exist")
    if not out:
        raise UsageError(f"no image files in {', '.join(str(p) for p in paths)}")
    check_once([p.resolve() for p in out], [str(p) for p in out])
    return out


def _natural(path: Path) -> list[str | int]:
    """Sort key: the name's digit runs as numbers ("frame9" < "frame10")."""
    parts = re.split(r"(\d+)", path.name)
    return [int(part) if i % 2 else part for i, part in enumerate(parts)]


def check_one_event(events: Iterable[str | None]) -> None:
    """Frames of two events (two storms seen at once) never make one query clip."""
    named = sorted({e for e in events if e})
    if len(named) > 1:
        raise UsageError(
            f"the query frames are of {len(named)} events ({', '.join(named)}): a clip is "
            "one event's frames"
        )
