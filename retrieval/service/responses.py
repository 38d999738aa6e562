"""The service's response bodies: what the OpenAPI document declares for each answer (the
fuzzer checks every response against it) and what the typed client parses answers into.
Importing it needs pydantic and numpy, never fastapi, starlette or the store."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from skysearch.retrieval.search import ResultItem
from typing_extensions import NotRequired, TypedDict  # pydantic needs these on Python < 3.12


class ErrorBody(BaseModel):
    detail: str = Field(description="One line saying what was wrong and what to do.")


class Health(BaseModel):
    status: str = Field(description="Always `ok` while the process answers.")
    version: str


class ReadinessBody(BaseModel):
    ready: bool
    state: str = Field(description="starting, loading, ready or failed")
    detail: str
    load_seconds: float | None = None
    store: str | None = None
    collections: dict[str, int] = Field(default_factory=dict, description="name -> points")
    searches: dict[str, str] = Field(
        default_factory=dict, description="search kind -> `ok` or why it is unavailable"
    )


class CollectionBody(BaseModel):
    name: str
    points: int
    vectors: dict[str, int] = Field(description="vector name (model id) -> dimension")
    backend: str


class FrameMeta(BaseModel):
    frame_id: str
    satellite: str
    channel: str
    time: str = Field(description="RFC 3339 UTC")
    source_width: int
    source_height: int
    thumbnail: str = Field(description="path of the PNG thumbnail on this service")


class ClipMeta(BaseModel):
    clip_id: str
    satellite: str
    channels: list[str]
    start: str = Field(description="RFC 3339 UTC, first frame")
    end: str = Field(description="RFC 3339 UTC, last frame")
    length: int
    gap_minutes: int
    frame_ids: list[list[str]] = Field(description="per channel, frames in time order")
    thumbnail: str


class ClipSpecBody(BaseModel):
    satellite: str
    channels: list[str]
    length: int = Field(description="frames per clip")
    gap_minutes: int
    clips: int = Field(description="clips of this spec in the clip catalog")


class ModelBody(BaseModel):
    model_id: str
    kind: str = Field(description="frame, clip, text-image, predictor...")
    created: str


class ArchiveBody(BaseModel):
    """What the workspace's frame and clip catalogs hold, and the models trained on them."""

    frames: int
    clips: int
    start: str | None = Field(description="RFC 3339 UTC, first frame (null: no frames)")
    end: str | None = Field(description="RFC 3339 UTC, last frame")
    satellites: dict[str, list[str]] = Field(description="satellite -> its channels")
    clip_specs: list[ClipSpecBody]
    models: list[ModelBody] = Field(description="registered models, oldest first")


class FiltersEcho(TypedDict):  # a dict once parsed, as in the CLI's JSON
    """The filters applied (``SearchFilters.to_dict``)."""

    start: str | None
    end: str | None
    months: list[int]
    hours: list[int]
    day_of_year: list[int] | None
    channels: list[str]
    satellites: list[str]
    exclude_around: str | None
    exclude_window_s: float
    datasets: NotRequired[list[str]]
    labels: NotRequired[list[str]]
    bbox: NotRequired[list[float] | None]
    events: NotRequired[list[str]]
    min_class: NotRequired[int | None]
    max_pressure: NotRequired[float | None]
    k: int
    one_per_day: bool


class SearchResponse(BaseModel):
    """The CLI's ``--json`` result, unchanged (schema ``skysearch.search/1``)."""

    model_config = ConfigDict(populate_by_name=True)
    schema_: str = Field(alias="schema", description="result schema version")
    query: dict[str, Any] = Field(description="what was asked (kind: clip, frame, text or image)")
    results: list[ResultItem] = Field(description="hits, best first; null where not of the kind")
    filters: FiltersEcho
    timing_ms: dict[str, float]
