"""``qdrant_client.models`` filters (the server's vocabulary) -> qdrant-edge filters: the only
translation the embedded backend needs. A condition not translated raises NotImplementedError
naming it (a Qdrant server via QDRANT_URL takes it as it is)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import qdrant_edge as qe
from qdrant_client import models

from skysearch.timeutil import to_rfc3339


def _range_value(value: Any) -> Any:
    return to_rfc3339(value) if isinstance(value, datetime) else value


def _edge_condition(cond: Any) -> Any:
    if isinstance(cond, models.Filter):
        return to_edge_filter(cond)
    if isinstance(cond, models.HasIdCondition):
        return qe.HasIdCondition(point_ids={str(i) for i in cond.has_id})
    if isinstance(cond, models.IsEmptyCondition):
        return qe.IsEmptyCondition(key=cond.is_empty.key)
    if isinstance(cond, models.IsNullCondition):
        return qe.IsNullCondition(key=cond.is_null.key)
    if isinstance(cond, models.HasVectorCondition):
        return qe.HasVectorCondition(cond.has_vector)
    if not isinstance(cond, models.FieldCondition):
        raise NotImplementedError(
            f"embedded store: filter condition {type(cond).__name__} is not translated to "
            "qdrant-edge; use a Qdrant server (QDRANT_URL) or add it to "
            "retrieval/store/edge_filters.py"
        )
    unsupported = [
        n
        for n in ("geo_radius", "geo_polygon", "values_count", "is_empty")
        if getattr(cond, n, None) is not None
    ]
    if unsupported:
        raise NotImplementedError(
            f"embedded store: field condition {unsupported} on {cond.key!r} is not translated"
        )
    match = None
    if cond.match is not None:
        m = cond.match
        if isinstance(m, models.MatchValue):
            match = qe.MatchValue(m.value)
        elif isinstance(m, models.MatchAny):
            match = qe.MatchAny(list(m.any))
        elif isinstance(m, models.MatchExcept):
            match = qe.MatchExcept(list(m.except_))
        else:
            raise NotImplementedError(
                f"embedded store: match {type(m).__name__} on {cond.key!r} is not translated"
            )
    rng = None
    if cond.range is not None:
        r = cond.range
        bounds = {b: _range_value(getattr(r, b)) for b in ("gte", "gt", "lte", "lt")}
        if isinstance(r, models.DatetimeRange):
            rng = qe.RangeDateTime(**bounds)
        else:
            rng = qe.RangeFloat(**{b: None if v is None else float(v) for b, v in bounds.items()})
    box = None
    if cond.geo_bounding_box is not None:
        tl, br = cond.geo_bounding_box.top_left, cond.geo_bounding_box.bottom_right
        box = qe.GeoBoundingBox(qe.GeoPoint(tl.lon, tl.lat), qe.GeoPoint(br.lon, br.lat))
    return qe.FieldCondition(cond.key, match=match, range=rng, geo_bounding_box=box)


def to_edge_filter(flt: models.Filter | None) -> qe.Filter | None:
    """``qdrant_client.models.Filter`` -> ``qdrant_edge.Filter`` (must/should/must_not)."""
    if flt is None:
        return None
    if flt.min_should is not None:
        raise NotImplementedError("embedded store: min_should filters are not translated")

    def conds(value: Any) -> list[Any] | None:
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        return [_edge_condition(c) for c in items]

    return qe.Filter(must=conds(flt.must), should=conds(flt.should), must_not=conds(flt.must_not))
