"""Frame footprints: the lat/lon box a frame covers, where its profile knows the projection.

A profile declares one (``footprint`` in its JSON):

- ``{"bounds": [west, south, east, north]}``: every frame covers the same box (a fixed sector).
- ``{"centred_on": "track", "pixel_km": 5}``: frames centred on the storm (Digital Typhoon); a
  frame's box is its best-track centre +- half its image size in pixels x ``pixel_km``, in
  degrees (latitude: km / 111.32; longitude: km / (111.32 cos(centre latitude))), known once
  the best track is joined (``skysearch ingest-track``).

Stored as four numbers ``west, south, east, north`` (catalog columns, store payload), rounded
to ``DECIMALS`` places (0.1 m): the vector store's JSON payload gives such numbers back
exactly, which an indexed point's fingerprint needs (full doubles may come back 1 ulp off).
Longitudes are *unwrapped*: ``west`` is in -180..180 and ``east`` >= ``west``, so a box crossing the
antimeridian has ``east`` > 180 (e.g. 170..190 for 170E..170W). A box is then four plain range
conditions, and ``--bbox`` tests intersection with the query box and its copies shifted by
+-360 degrees (``skysearch.retrieval.store.filters``). STAC gets the standard form instead
(``west > east`` across the antimeridian, a MultiPolygon split at it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Catalog columns and payload keys of a footprint, in GeoJSON bbox order.
BOUND_COLUMNS = ("west", "south", "east", "north")
KM_PER_DEGREE = 111.32  # one degree of latitude (and of longitude at the equator)
DECIMALS = 6

Box = tuple[float, float, float, float]


def unwrap(west: float, east: float) -> tuple[float, float]:
    """Longitudes as stored: west in -180..180, east >= west (east > 180 across 180)."""
    west = (west + 180.0) % 360.0 - 180.0 if not -180.0 <= west <= 180.0 else west
    while east < west:
        east += 360.0
    return west, east


@dataclass(frozen=True)
class Footprint:
    """A profile's ``footprint``: fixed ``bounds``, or centred on the best track."""

    bounds: Box | None = None
    pixel_km: float = 0.0  # > 0: centred on the track, this many km per source pixel

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Footprint:
        """Checked: latitudes in -90..90 with south < north, longitudes in -180..180
        (west > east: the box crosses the antimeridian), a positive pixel size."""
        if not isinstance(data, dict):
            raise ValueError(f"footprint {data!r} is not an object")
        if "bounds" in data:
            try:
                west, south, east, north = (float(v) for v in data["bounds"])
            except (TypeError, ValueError):
                raise ValueError(
                    f"footprint bounds must be four numbers [west, south, east, north], got "
                    f"{data['bounds']!r}"
                ) from None
            if not (-90.0 <= south < north <= 90.0):
                raise ValueError(
                    f"footprint bounds {data['bounds']}: latitudes must be in -90..90 with "
                    "south < north (order: west, south, east, north)"
                )
            if not (-180.0 <= west <= 180.0 and -180.0 <= east <= 180.0) or west == east:
                raise ValueError(
                    f"footprint bounds {data['bounds']}: longitudes must be in -180..180 and "
                    "differ (west > east crosses the antimeridian)"
                )
            west, east = unwrap(west, east)
            return cls(bounds=_rounded((west, south, east, north)))
        if data.get("centred_on") == "track":
            pixel_km = float(data.get("pixel_km", 0))
            if not 0 < pixel_km < 1000:
                raise ValueError(f"footprint pixel_km {pixel_km} must be in 0..1000 km")
            return cls(pixel_km=pixel_km)
        raise ValueError(
            'a footprint is {"bounds": [west, south, east, north]} or '
            '{"centred_on": "track", "pixel_km": KM}'
        )

    @property
    def centred(self) -> bool:
        return self.pixel_km > 0


def fixed_bounds(footprint: Footprint | None) -> dict[str, float]:
    """The bound columns of a frame known at ingest under a profile's footprint: its fixed
    ``bounds``, else none (a storm-centred box waits for the best track)."""
    if footprint is None or footprint.bounds is None:
        return {}
    return dict(zip(BOUND_COLUMNS, footprint.bounds, strict=True))


def centred_boxes(
    lat: np.ndarray, lon: np.ndarray, width: np.ndarray, height: np.ndarray, pixel_km: Any
) -> np.ndarray:
    """Boxes (n x 4, ``BOUND_COLUMNS``) of frames centred on (lat, lon), ``width`` x
    ``height`` source pixels of ``pixel_km``. Latitudes are clipped to -90..90; a box whose
    longitude span would reach 360 degrees (near a pole) spans -180..180."""
    lat, lon, pixel_km = (np.atleast_1d(np.asarray(v, float)) for v in (lat, lon, pixel_km))
    half_lat = np.asarray(height, float) / 2 * pixel_km / KM_PER_DEGREE
    cos = np.maximum(np.cos(np.radians(lat)), 1e-9)
    half_lon = np.asarray(width, float) / 2 * pixel_km / (KM_PER_DEGREE * cos)
    centre = (lon + 180.0) % 360.0 - 180.0  # best tracks give 0..360 east
    west, east = centre - half_lon, centre + half_lon
    shift = np.where(west < -180.0, 360.0, 0.0)
    west, east = west + shift, east + shift
    full = half_lon >= 180.0
    west, east = np.where(full, -180.0, west), np.where(full, 180.0, east)
    south, north = np.clip(lat - half_lat, -90, 90), np.clip(lat + half_lat, -90, 90)
    return np.round(np.stack([west, south, east, north], axis=1), DECIMALS)


def union_box(boxes: Iterable[Sequence[float | None]]) -> Box | None:
    """The box holding every box (a clip's footprint from its frames'); None when any box is
    missing. Longitudes are taken relative to the first box (a storm crossing 180 keeps one
    narrow box, not one around the world)."""
    boxes = list(boxes)
    if not boxes or any(b is None or any(v is None for v in b) for b in boxes):
        return None
    west0, _, east0, _ = boxes[0]
    centre0 = (west0 + east0) / 2
    wests, easts = [], []
    for west, _, east, _ in boxes:
        shift = 360.0 * round((centre0 - (west + east) / 2) / 360.0)
        wests.append(west + shift)
        easts.append(east + shift)
    west, east = min(wests), max(easts)
    if east - west >= 360.0:
        west, east = -180.0, 180.0
    west, east = unwrap(west, east)
    return _rounded((west, min(b[1] for b in boxes), east, max(b[3] for b in boxes)))


def _rounded(box: Sequence[float]) -> Box:
    west, south, east, north = (round(float(v), DECIMALS) for v in box)
    return west, south, east, north


def stac_shape(box: Sequence[float]) -> tuple[list[float], dict[str, Any]]:
    """A stored box as a STAC/GeoJSON ``bbox`` (west > east across the antimeridian) and
    ``geometry`` (a Polygon; a MultiPolygon split at 180 when it crosses)."""
    west, south, east, north = (float(v) for v in box)

    def ring(w: float, e: float) -> list[list[list[float]]]:
        return [[[w, south], [e, south], [e, north], [w, north], [w, south]]]

    if east <= 180.0:
        return [west, south, east, north], {"type": "Polygon", "coordinates": ring(west, east)}
    wrapped = east - 360.0
    geometry = {"type": "MultiPolygon", "coordinates": [ring(west, 180.0), ring(-180.0, wrapped)]}
    return [west, south, wrapped, north], geometry


def is_box(values: Sequence[Any]) -> bool:
    """Whether all four bounds are present numbers."""
    return all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in values)
