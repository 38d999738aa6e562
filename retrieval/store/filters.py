"""Search filters, translated to a ``qdrant_client.models.Filter`` in ONE place (``to_qdrant``).

The embedded adapter translates that Filter further into qdrant-edge types; the server and
``:memory:`` backends send it as is. Every field filtered here has a payload index
(``skysearch.retrieval.store.schema.PAYLOAD_INDEXES``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from numbers import Integral, Real
from typing import Any

from qdrant_client import models
from skysearch.retrieval.store.schema import SCENES

from skysearch.errors import UsageError
from skysearch.filter_ranges import DAYS_OF_YEAR, HOURS, JMA_CLASSES, MONTHS, PRESSURE_HPA
from skysearch.timeutil import MAX_DURATION, parse_time, to_rfc3339


def _ints(values: Iterable[int] | None, name: str, lo: int, hi: int) -> tuple[int, ...]:
    if isinstance(values, Integral | str):  # one value, not its digits
        values = (values,)
    try:
        out = tuple(sorted({_whole(v) for v in (() if values is None else values)}))
    except (TypeError, ValueError, OverflowError):  # OverflowError: inf
        raise UsageError(
            f"{{{name}}} must be whole numbers in {lo}..{hi}, got {values!r}", params=[name]
        ) from None
    bad = [v for v in out if not lo <= v <= hi]
    if bad:
        raise UsageError(f"{{{name}}} must be in {lo}..{hi}, got {bad}", params=[name])
    return out


def _whole(value: Any) -> int:
    """An int, or a string or float holding one (a bool or 2.5 is a TypeError/ValueError)."""
    if isinstance(value, bool) or float(value) != int(float(value)):
        raise ValueError(value)
    return int(float(value))


def _names(values: Any, name: str) -> tuple[str, ...]:
    """A tuple of names: one string is one name (not its letters)."""
    if isinstance(values, str):
        return (values,)
    try:
        out = tuple(values)
    except TypeError:
        out = (values,)  # not iterable: refused below
    if not all(isinstance(v, str) for v in out):
        raise UsageError(f"{{{name}}} must be a list of names, got {values!r}", params=[name])
    return out


def check_bbox(values: Iterable[float]) -> tuple[float, float, float, float]:
    """``(west, south, east, north)`` in degrees, checked. West > east crosses the antimeridian;
    the two latitudes may come in either order (there is only one band between two parallels,
    while two meridians bound two boxes: the order of the longitudes says which)."""
    try:
        west, south, east, north = (float(v) for v in values)
    except (TypeError, ValueError):
        raise UsageError(
            f"a bounding box is four numbers west,south,east,north, got {values}"
        ) from None
    if not (
        -180 <= west <= 180
        and -180 <= east <= 180
        and -90 <= min(south, north)
        and max(south, north) <= 90
    ):
        raise UsageError(
            f"bounding box {west},{south},{east},{north} is not west,south,east,north in degrees "
            "(longitudes -180..180, latitudes -90..90)"
        )
    return west, min(south, north), east, max(south, north)


@dataclass(frozen=True)
class SearchFilters:
    """What a search may return. Empty fields do not filter.

    - ``start``/``end``: closed time range on ``time``; either side may be None (open-ended).
    - ``months`` (1-12), ``hours`` (0-23 UTC): match any.
    - ``day_of_year``: ``(first, last)`` inclusive season window; wraps the year end when
      ``first > last`` (e.g. ``(335, 59)`` = December-February).
    - ``channels``/``satellites``/``model_id``: match any (a clip's channel list matches when
      any of its channels is listed).
    - ``exclude_around`` + ``exclude_window``: drop everything within the window of that time
      (the query's own event).
    - ``datasets``/``labels`` (scenes): match any.
    - ``events``: match any (e.g. typhoon ids; frames and clips of products with events).
    - ``min_class`` (JMA class 2-6) / ``max_pressure`` (hPa): keep points whose best-track
      payload is at least that class / at most that central pressure (points without a track
      are dropped by either).
    - ``bbox``: ``(west, south, east, north)`` in degrees (GeoJSON order; west > east crosses
      the antimeridian); keeps points whose ``location`` lies inside (a closed box: edges,
      poles and the antimeridian included) OR whose footprint (``west, south, east, north``
      payload of frames and clips whose profile knows the projection) intersects it.
    - ``k``: number of hits; ``one_per_day``: at most one hit per UTC day (a point without
      a time, such as a scene, is a hit of its own).
    """

    start: datetime | None = None
    end: datetime | None = None
    months: tuple[int, ...] = ()
    hours: tuple[int, ...] = ()
    day_of_year: tuple[int, int] | None = None
    channels: tuple[str, ...] = ()
    satellites: tuple[str, ...] = ()
    model_id: str | None = None
    exclude_around: datetime | None = None
    exclude_window: timedelta = field(default=timedelta(0))
    datasets: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    bbox: tuple[float, float, float, float] | None = None
    events: tuple[str, ...] = ()
    min_class: int | None = None
    max_pressure: float | None = None
    k: int = 10
    one_per_day: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen dataclass: normalise once, here
        for name in ("start", "end", "exclude_around"):
            value = getattr(self, name)
            if value is not None:
                set_(self, name, parse_time(value))
        if self.start and self.end and self.end < self.start:
            raise UsageError(
                f"time range ends ({to_rfc3339(self.end)}) before it starts "
                f"({to_rfc3339(self.start)})"
            )
        set_(self, "months", _ints(self.months, "months", *MONTHS))
        set_(self, "hours", _ints(self.hours, "hours", *HOURS))
        if self.day_of_year is not None:
            lo, hi = DAYS_OF_YEAR
            try:
                first, last = (_whole(v) for v in self.day_of_year)
            except (TypeError, ValueError, OverflowError):
                raise UsageError(
                    f"{{day_of_year}} is two whole numbers (first, last day) in {lo}..{hi}, "
                    f"got {self.day_of_year!r}",
                    params=["day_of_year"],
                ) from None
            if not (lo <= first <= hi and lo <= last <= hi):
                raise UsageError(
                    f"{{day_of_year}} must be in {lo}..{hi}, got {first}-{last}",
                    params=["day_of_year"],
                )
            set_(self, "day_of_year", (first, last))
        for name in ("channels", "satellites", "datasets", "labels", "events"):
            set_(self, name, _names(getattr(self, name), name))
        lo, hi = JMA_CLASSES
        if self.min_class is not None:
            try:
                klass = _whole(self.min_class)
            except (TypeError, ValueError, OverflowError):
                klass = None
            if klass is None or not lo <= klass <= hi:
                raise UsageError(
                    f"{{min_class}} must be a JMA class in {lo}..{hi}, got {self.min_class!r}",
                    params=["min_class"],
                )
            set_(self, "min_class", klass)
        lo, hi = PRESSURE_HPA
        if self.max_pressure is not None:
            pressure = self.max_pressure
            number = isinstance(pressure, Real) and not isinstance(pressure, bool)
            if not number or not lo <= float(pressure) <= hi:
                raise UsageError(
                    f"{{max_pressure}} must be in {lo}..{hi} hPa, got {pressure!r}",
                    params=["max_pressure"],
                )
            set_(self, "max_pressure", float(pressure))
        if not isinstance(self.one_per_day, bool):
            raise UsageError(
                f"{{one_per_day}} must be True or False, got {self.one_per_day!r}",
                params=["one_per_day"],
            )
        if self.bbox is not None:
            set_(self, "bbox", check_bbox(self.bbox))
        if not isinstance(self.exclude_window, timedelta):
            raise UsageError(
                f"{{exclude_window}} must be a timedelta, got {self.exclude_window!r}",
                params=["exclude_window"],
            )
        if not isinstance(self.k, Integral) or isinstance(self.k, bool):  # numpy's too
            raise UsageError(f"{{k}} must be a whole number, got {self.k!r}", params=["k"])
        set_(self, "k", int(self.k))
        if not timedelta(0) <= self.exclude_window <= MAX_DURATION:
            raise UsageError(
                f"{{exclude_window}} must be in 0..{MAX_DURATION.days} days",
                params=["exclude_window"],
            )
        if not 1 <= self.k <= 10_000:
            raise UsageError(f"{{k}} must be in 1..10000, got {self.k}", params=["k"])

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the result schema's ``filters``, the HTTP request's fields)."""

        def iso(value: datetime | None) -> str | None:
            return to_rfc3339(value) if value is not None else None

        return {
            "start": iso(self.start),
            "end": iso(self.end),
            "months": list(self.months),
            "hours": list(self.hours),
            "day_of_year": list(self.day_of_year) if self.day_of_year else None,
            "channels": list(self.channels),
            "satellites": list(self.satellites),
            "exclude_around": iso(self.exclude_around),
            "exclude_window_s": self.exclude_window.total_seconds(),
            "datasets": list(self.datasets),
            "labels": list(self.labels),
            "bbox": list(self.bbox) if self.bbox else None,
            "events": list(self.events),
            "min_class": self.min_class,
            "max_pressure": self.max_pressure,
            "k": self.k,
            "one_per_day": self.one_per_day,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], model_id: str | None = None) -> SearchFilters:
        """The inverse of :meth:`to_dict`; absent keys do not filter, unknown keys are refused."""
        known = set(cls().to_dict())
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown filter fields {unknown}: known are {sorted(known)}")
        fields = {k: v for k, v in data.items() if v is not None and k != "exclude_window_s"}
        for name in ("day_of_year", "bbox"):
            if name in fields and isinstance(fields[name], list | tuple):
                fields[name] = tuple(fields[name])  # anything else: refused as it is
        seconds = data.get("exclude_window_s") or 0
        if not isinstance(seconds, Real) or isinstance(seconds, bool):
            raise UsageError(f"exclude_window_s must be a number of seconds, got {seconds!r}")
        window = timedelta(seconds=float(seconds))
        return cls(**fields, exclude_window=window, model_id=model_id)

    def payload_fields(self) -> dict[str, str]:
        """Filter name -> the payload field it reads, for the filters that are set."""
        return {
            name: key
            for name, key in _PAYLOAD_FIELD.items()
            if getattr(self, name) not in (None, ())
        }

    def to_qdrant(self, collection: str | None = None) -> models.Filter | None:
        """The one translation of these filters into Qdrant's vocabulary (None: no filter);
        for the ``scenes`` collection, whose points have no footprint, ``bbox`` is the
        location's box alone (the footprint conditions read every point's payload)."""
        must: list[models.Condition] = []
        must_not: list[models.Condition] = []
        if self.start or self.end:
            must.append(
                models.FieldCondition(
                    key="time",
                    range=models.DatetimeRange(
                        gte=to_rfc3339(self.start) if self.start else None,
                        lte=to_rfc3339(self.end) if self.end else None,
                    ),
                )
            )
        for key, values in (
            ("month", self.months),
            ("hour", self.hours),
            ("channel", self.channels),
            ("satellite", self.satellites),
            ("dataset", self.datasets),
            ("label", self.labels),
            ("event", self.events),
        ):
            if values:
                must.append(models.FieldCondition(key=key, match=models.MatchAny(any=list(values))))
        if self.model_id:
            must.append(
                models.FieldCondition(key="model_id", match=models.MatchValue(value=self.model_id))
            )
        if self.day_of_year:
            first, last = self.day_of_year
            if first <= last:
                must.append(
                    models.FieldCondition(
                        key="day_of_year", range=models.Range(gte=first, lte=last)
                    )
                )
            else:  # wraps the year end: doy >= first OR doy <= last
                must.append(
                    models.Filter(
                        should=[
                            models.FieldCondition(key="day_of_year", range=models.Range(gte=first)),
                            models.FieldCondition(key="day_of_year", range=models.Range(lte=last)),
                        ]
                    )
                )
        if self.min_class is not None:
            must.append(
                models.FieldCondition(key="track_class", range=models.Range(gte=self.min_class))
            )
        if self.max_pressure is not None:
            must.append(
                models.FieldCondition(key="pressure_hpa", range=models.Range(lte=self.max_pressure))
            )
        if self.bbox is not None:
            must.append(_bbox_condition(self.bbox, footprints=collection != SCENES))
        if self.exclude_around is not None:
            must_not.append(
                models.FieldCondition(
                    key="time",
                    range=models.DatetimeRange(
                        gte=to_rfc3339(self.exclude_around - self.exclude_window),
                        lte=to_rfc3339(self.exclude_around + self.exclude_window),
                    ),
                )
            )
        if not must and not must_not:
            return None
        return models.Filter(must=must or None, must_not=must_not or None)


#: the payload field each filter reads (``bbox`` also reads the footprint bounds of frames
#: and clips; ``location`` is in every collection)
_PAYLOAD_FIELD = {
    "start": "time",
    "end": "time",
    "exclude_around": "time",
    "months": "month",
    "hours": "hour",
    "day_of_year": "day_of_year",
    "channels": "channel",
    "satellites": "satellite",
    "model_id": "model_id",
    "datasets": "dataset",
    "labels": "label",
    "bbox": "location",
    "events": "event",
    "min_class": "track_class",
    "max_pressure": "pressure_hpa",
}


def _bbox_condition(
    bbox: tuple[float, float, float, float], footprints: bool = True
) -> models.Filter:
    """``location`` in the box, or a footprint intersecting it: four range conditions per
    copy of the box in the footprints' unwrapped longitudes (``skysearch.ingest.footprints``:
    west in -180..180, east >= west, past 180 across the antimeridian), i.e. the box, the box
    shifted by +360 (footprints crossing 180), and by -360 when the box itself crosses."""
    west, south, east, north = bbox
    if east < west:
        east += 360.0
    shifts = (0.0, 360.0, -360.0) if east >= 180.0 else (0.0, 360.0)
    boxes = [
        models.Filter(
            must=[
                models.FieldCondition(key="west", range=models.Range(lte=east + shift)),
                models.FieldCondition(key="east", range=models.Range(gte=west + shift)),
                models.FieldCondition(key="south", range=models.Range(lte=north)),
                models.FieldCondition(key="north", range=models.Range(gte=south)),
            ]
        )
        for shift in shifts
    ]
    return models.Filter(should=[*_location_conditions(bbox), *(boxes if footprints else [])])


def _location_conditions(bbox: tuple[float, float, float, float]) -> list[models.Condition]:
    """``location`` in the closed box. Qdrant's geo box leaves out its edges: widened by one
    float step on each side it is the closed box (and its geo index answers it), except on a
    side at a limit (longitude +-180, latitude +-90), whose points are added by range
    conditions on the coordinates. Longitude -180 and 180 are one meridian; a pole is one
    point, whatever longitude it is written with."""
    west, south, east, north = bbox
    geo = models.FieldCondition(
        key="location",
        geo_bounding_box=models.GeoBoundingBox(
            top_left=models.GeoPoint(lon=_step(west, -180.0), lat=_step(north, 90.0)),
            bottom_right=models.GeoPoint(lon=_step(east, 180.0), lat=_step(south, -90.0)),
        ),
    )
    lat = models.FieldCondition(key="location.lat", range=models.Range(gte=south, lte=north))
    on_limits: list[models.Condition] = []
    if west <= east and (west == -180.0 or east == 180.0):  # the meridian +-180, either name
        meridian = [_lon_is(m) for m in (-180.0, 180.0)]
        on_limits.append(models.Filter(must=[lat], should=meridian))
    for pole in {south, north} & {-90.0, 90.0}:  # a pole is on every meridian: any longitude
        on_limits.append(
            models.FieldCondition(key="location.lat", range=models.Range(gte=pole, lte=pole))
        )
    return [geo, *on_limits]


def _step(value: float, limit: float) -> float:
    """``value`` one float step towards ``limit`` (not past it)."""
    stepped = math.nextafter(value, limit)
    return max(stepped, limit) if limit < 0 else min(stepped, limit)


def _lon_is(lon: float) -> models.FieldCondition:
    return models.FieldCondition(key="location.lon", range=models.Range(gte=lon, lte=lon))


def holding_vector(name: str, base: models.Filter | None = None) -> models.Filter:
    """``base`` (or no condition) and: the point holds a vector named ``name`` (a model's)."""
    base = base or models.Filter()
    return base.model_copy(
        update={"must": [*(base.must or []), models.HasVectorCondition(has_vector=name)]}
    )
