"""The search result schema (``skysearch.search/1``) and the shaping of store hits into it.

Every search returns a :class:`SearchResult`; ``SearchResult.to_dict()`` is the JSON the CLI's
``--json`` prints and the service returns (``RESULT_SCHEMA`` names its version); its fields are
documented once, in docs/reference/schemas.md ("Result schema").

``score`` is the value the results are ordered by: cosine similarity of the vectors, the
grid-metric similarity when re-ranked (then ``vector_score`` keeps the cosine), or the fused
score when augmented (then ``vector_score`` is null).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
from skysearch.ingest.clip_specs import spec_label

from skysearch.timeutil import parse_time, to_rfc3339

if TYPE_CHECKING:
    import pandas as pd
    from skysearch.retrieval.store.base import Hit

#: Version of the JSON result schema (bump on any incompatible change).
RESULT_SCHEMA = "skysearch.search/1"

#: The clip catalog rows of one clip spec, by clip id: ``(satellite, channels, length, gap)``.
ClipRows = Callable[[str, list[str], int, int], Mapping[str, Mapping[str, Any]]]


@dataclass
class ResultItem:
    """One hit. Fields that do not apply to a kind are None (clips have start/end/frame_ids;
    frames have start = end = the frame's time; scenes have source_path/label, and start/end
    when the scene is a dated frame)."""

    rank: int
    score: float
    id: str
    kind: str
    start: str | None = None
    end: str | None = None
    satellite: str | None = None
    channels: list[str] = field(default_factory=list)
    frame_ids: list[Any] = field(default_factory=list)
    length: int | None = None
    gap_minutes: int | None = None
    source_path: str | None = None
    label: str | None = None
    dataset: str | None = None
    location: dict[str, float] | None = None
    event: str | None = None
    #: the storm's best track at the hit's time (a clip: at its end), after `ingest-track`
    track_class: int | None = None
    pressure_hpa: float | None = None
    wind_kt: float | None = None
    vector_score: float | None = None
    rerank_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Columns of :func:`results_table`: every hit field but ``frame_ids`` (a list per channel for
#: clips, the frame itself for frames: the ``id`` column already names the hit).
RESULT_COLUMNS = pa.schema(
    [
        ("rank", pa.int32()),
        ("score", pa.float64()),
        ("id", pa.string()),
        ("kind", pa.string()),
        ("start", pa.timestamp("us", tz="UTC")),
        ("end", pa.timestamp("us", tz="UTC")),
        ("satellite", pa.string()),
        ("channels", pa.list_(pa.string())),
        ("event", pa.string()),
        ("track_class", pa.int32()),
        ("pressure_hpa", pa.float64()),
        ("wind_kt", pa.float64()),
        ("length", pa.int32()),
        ("gap_minutes", pa.int32()),
        ("source_path", pa.string()),
        ("label", pa.string()),
        ("dataset", pa.string()),
        ("location", pa.struct([("lon", pa.float64()), ("lat", pa.float64())])),
        ("vector_score", pa.float64()),
        ("rerank_score", pa.float64()),
    ]
)


def results_table(items: Sequence[ResultItem]) -> pa.Table:
    """Hits as an Arrow table (times as UTC timestamps), best first: what ``to_arrow`` of a
    search result (the façade's or the HTTP client's) returns."""
    columns: dict[str, list[Any]] = {name: [] for name in RESULT_COLUMNS.names}
    for item in items:
        for name in RESULT_COLUMNS.names:
            value = getattr(item, name)
            if name in ("start", "end") and value is not None:
                value = parse_time(value)
            columns[name].append(value)
    return pa.table(columns, schema=RESULT_COLUMNS)


def results_frame(items: Sequence[ResultItem]) -> pd.DataFrame:
    """:func:`results_table` as a pandas DataFrame (needs pandas). Integer columns are pandas'
    nullable ``Int32`` whether or not a hit lacks the value (NumPy's would be float64 with NaN
    then, int32 otherwise)."""
    import pandas as pd

    return results_table(items).to_pandas(types_mapper={pa.int32(): pd.Int32Dtype()}.get)


@dataclass
class SearchResult:
    query: dict[str, Any]
    results: list[ResultItem]
    filters: dict[str, Any]
    timing_ms: dict[str, float]
    #: Query pixels (C, L, H, W) uint8 of a clip search, (1, 1, H, W) of a frame search
    #: (contact sheets); not in JSON.
    query_frames: np.ndarray | None = field(default=None, repr=False)

    def to_arrow(self) -> pa.Table:
        """The hits as an Arrow table (:func:`results_table`)."""
        return results_table(self.results)

    def to_pandas(self) -> pd.DataFrame:
        """The hits as a pandas DataFrame (:func:`results_frame`)."""
        return results_frame(self.results)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RESULT_SCHEMA,
            "query": self.query,
            "results": [r.to_dict() for r in self.results],
            "filters": self.filters,
            "timing_ms": {k: round(v, 2) for k, v in self.timing_ms.items()},
        }


class Timer:
    """The ``timing_ms`` of a result: ``with timer("embed"): ...`` adds up per stage."""

    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._t0 = time.perf_counter()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t) * 1000

    def done(self) -> dict[str, float]:
        self.ms["total"] = (time.perf_counter() - self._t0) * 1000
        return self.ms


def _channels(payload: Mapping[str, Any]) -> list[str]:
    """A payload's ``channel``: one name (frames, scenes) or a list (clips) -> a list."""
    chans = payload.get("channel", [])
    return [chans] if isinstance(chans, str) else list(chans or [])


def _storm(payload: Mapping[str, Any]) -> dict[str, Any]:
    """A frame's or clip's best-track fields (storm centre as ``location``), where joined."""
    return {
        "event": payload.get("event"),
        "location": payload.get("location"),
        "track_class": payload.get("track_class"),
        "pressure_hpa": payload.get("pressure_hpa"),
        "wind_kt": payload.get("wind_kt"),
    }


def clip_item(rank: int, hit: Hit, data: Mapping[str, Any], clip_rows: ClipRows) -> ResultItem:
    """A hit of the ``clips`` collection; ``data``: the clip model's spec (payload fallbacks);
    ``clip_rows`` gives the catalog row (end, frame ids) of the hit's clip spec."""
    p = hit.payload
    chans = _channels(p)
    length = int(p.get("length", data["length"]))
    gap = int(p.get("gap_minutes", data["gap_minutes"]))
    start = parse_time(p["time"]) if p.get("time") else None
    rows = clip_rows(p.get("satellite", data["satellite"]), chans, length, gap)
    row = rows.get(p.get("clip_id", hit.id), {})
    end = row.get("end") or (start + timedelta(minutes=gap * (length - 1)) if start else None)
    return ResultItem(
        rank=rank,
        score=float(hit.score),
        id=p.get("clip_id", hit.id),
        kind="clip",
        start=to_rfc3339(start) if start else None,
        end=to_rfc3339(end) if end else None,
        satellite=p.get("satellite"),
        channels=chans,
        frame_ids=row.get("frame_ids", []),
        length=length,
        gap_minutes=gap,
        source_path=p.get("source_path"),
        **_storm(p),
        vector_score=float(hit.score),
    )


def frame_item(rank: int, hit: Hit) -> ResultItem:
    """A hit of the ``frames`` collection: one archive frame."""
    p = hit.payload
    return ResultItem(
        rank=rank,
        score=float(hit.score),
        id=p.get("frame_id", hit.id),
        kind="frame",
        start=p.get("time"),
        end=p.get("time"),
        satellite=p.get("satellite"),
        channels=_channels(p),
        frame_ids=[p.get("frame_id", hit.id)],
        source_path=p.get("source_path"),
        **_storm(p),
        vector_score=float(hit.score),
    )


def scene_item(rank: int, hit: Hit) -> ResultItem:
    """A hit of the ``scenes`` collection (a scene image, or a dated satellite frame)."""
    p = hit.payload
    frame_id = p.get("frame_id")
    return ResultItem(
        rank=rank,
        score=float(hit.score),
        id=hit.id,
        kind="scene",
        start=p.get("time"),
        end=p.get("time"),
        satellite=p.get("satellite"),
        channels=_channels(p),
        frame_ids=[frame_id] if frame_id else [],
        source_path=p.get("source_path") or p.get("path"),
        label=p.get("label") or p.get("class") or p.get("caption"),
        dataset=p.get("dataset"),
        location=p.get("location"),
        vector_score=float(hit.score),
    )


def spec_text(spec: Mapping[str, Any]) -> str:
    """A clip spec in words: ``goes-east ir 6x60m`` (``coms,gk2a ir 6x60m``: a model of
    several satellites)."""
    sat = ",".join(spec.get("satellites") or []) or spec.get("satellite") or "any satellite"
    return spec_label(
        spec.get("channels") or "any channel",
        spec.get("length") or "L",
        spec.get("gap_minutes") or "G",
        sat,
    )
