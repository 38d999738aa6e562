"""The service's wire schema: the pydantic models of every request body (responses:
:mod:`skysearch.retrieval.service.responses`).

One definition shared by the service (:mod:`skysearch.retrieval.service.app` validates requests
with these models and declares them in the OpenAPI document) and the typed client
(:mod:`skysearch.client` builds its requests from and parses the answers into them). Importing
it needs pydantic and numpy, never fastapi, starlette or the store.

Filters carry the names of the result's ``filters`` object (``SearchFilters.to_dict``).
JSON bodies are strict (:data:`JSON_BODY`); form fields are text, so the form models are not.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    ValidationInfo,
    model_validator,
)
from pydantic.json_schema import WithJsonSchema
from skysearch.retrieval.search import SearchOptions
from skysearch.retrieval.search.queries import DEFAULT_TOLERANCE_MINUTES, MAX_TOLERANCE_MINUTES
from skysearch.retrieval.search.scenes import MAX_TEXT_CHARS

from skysearch.errors import UsageError
from skysearch.filter_ranges import DAYS_OF_YEAR, HOURS, JMA_CLASSES, MONTHS, PRESSURE_HPA
from skysearch.timeutil import is_date_alone, parse_end

if TYPE_CHECKING:
    from skysearch.retrieval.store.filters import SearchFilters

#: Thumbnail sizes (longest side of one frame, pixels) a request may ask for.
THUMB_MIN, THUMB_MAX, THUMB_DEFAULT = 16, 1024, 256


def image_response(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` entry of an endpoint answering with an image."""
    return {
        200: {
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
            "description": what,
        },
    }


PNG_RESPONSE = image_response("image/png", "PNG image")
WEBP_RESPONSE = image_response("image/webp", "Animated WebP image (loops)")
#: Upper bounds the schema enforces (the service's ``ServiceLimits`` may only lower them).
MAX_K = 100
MAX_RERANK = 100
MAX_FRAMES = 48
#: Example images of one "more like these" image search.
MAX_EXAMPLE_IMAGES = 16

UUID_PATTERN = r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$"
Name = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")]
#: A scene's dataset or label: any folder or CSV name (spaces, accents), not control characters.
SceneName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"^[^\x00-\x1f\x7f-\x9f]+$")]


def _json_number(value: Any, info: ValidationInfo) -> Any:
    """In a JSON body (a strict model) a number is what JSON Schema calls one (an integer may
    be ``10.0`` too), never a string or a boolean. Form fields are text."""
    if info.config and info.config.get("strict") and isinstance(value, str | bool):
        raise ValueError("expected a number")
    return value


def integer(low: int, high: int) -> Any:
    """An integer type in ``low..high`` (the bounds inside the type: given to ``Field`` of
    an optional or nested field, pydantic would leave them out of the schema)."""
    return Annotated[int, Field(ge=low, le=high), Strict(False), BeforeValidator(_json_number)]


def degrees(limit: int) -> Any:
    """A finite number of degrees in ``-limit..limit``."""
    bounds = Field(ge=-limit, le=limit, allow_inf_nan=False)
    return Annotated[float, bounds, Strict(False), BeforeValidator(_json_number)]


Month, Hour, DayOfYear = integer(*MONTHS), integer(*HOURS), integer(*DAYS_OF_YEAR)
Longitude, Latitude = degrees(180), degrees(90)
YEARS = (1900, 2200)


def _in_years(value: datetime) -> datetime:
    if not YEARS[0] <= value.year <= YEARS[1]:
        raise ValueError(f"year must be in {YEARS[0]}..{YEARS[1]}")
    return value


def _text(value: Any) -> Any:
    """A time comes as text (a number is not a time here, as the document says)."""
    if not isinstance(value, str | datetime):
        raise ValueError("a time is an ISO 8601 / RFC 3339 string")
    return value


#: RFC 3339 date-times of the years above, as the document declares them (the server's
#: parser takes ISO 8601 more loosely; a client generated from the document sends these).
#: Parsed from text even in strict JSON bodies (JSON has no time type).
TIME_PATTERN = r"^(19\d\d|2[01]\d\d|2200)-"
Time = Annotated[
    datetime,
    Strict(False),
    BeforeValidator(_text),
    AfterValidator(_in_years),
    WithJsonSchema({"type": "string", "format": "date-time", "pattern": TIME_PATTERN}),
]


def _whole_day(value: Any) -> Any:
    """An end given as a date alone takes in that whole day (as the CLI's ``--between``)."""
    if not is_date_alone(value):
        return value
    try:
        return parse_end(value)
    except UsageError as error:
        raise ValueError(str(error)) from None


#: The end of a time range.
EndTime = Annotated[Time, BeforeValidator(_whole_day)]


def _not_nullable(schema: dict[str, Any]) -> None:
    """Declare optional fields as absent-or-a-value, never null: a multipart form cannot
    send null (a client generated from the document would send the text ``null``, which the
    server refuses). ``json_schema_extra`` of the form models and of optional JSON fields
    that refuse an explicit null."""
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf", [])
        if {"type": "null"} in branches:
            rest = [b for b in branches if b != {"type": "null"}]
            del prop["anyOf"]
            prop.update(rest[0] if len(rest) == 1 else {"anyOf": rest})
        _no_null_default(prop)


def _upload_form(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of the upload forms: not nullable, and an exclusion window names
    its centre (an upload's time is known only from its file name, which the document cannot
    see, so the server cannot promise to centre the window on it)."""
    _not_nullable(schema)
    schema["dependentRequired"] = {"exclude_window_s": ["exclude_around"]}


def _no_null_default(prop: dict[str, Any]) -> None:
    """Drop ``"default": null`` from a property that is optional but not nullable."""
    if "default" in prop and prop["default"] is None:
        del prop["default"]


# ---- request models: the CLI's filters, same names as the result's "filters" object ----------
class FilterFields(BaseModel):
    """Filters of every search (the CLI's --between/--months/... options)."""

    start: Time | None = Field(None, description="ISO 8601 UTC; results at or after")
    end: EndTime | None = Field(
        None, description="ISO 8601 UTC; results at or before (a date alone: that whole day)"
    )
    months: list[Month] = Field(default_factory=list, max_length=12)
    hours: list[Hour] = Field(default_factory=list, max_length=24, description="UTC hours")
    day_of_year: list[DayOfYear] | None = Field(
        None, min_length=2, max_length=2, description="[first, last]; wraps when first > last"
    )
    channels: list[Name] = Field(default_factory=list, max_length=16)
    satellites: list[Name] = Field(default_factory=list, max_length=16)
    exclude_around: Time | None = Field(None, description="drop results near this time")
    exclude_window_s: float = Field(
        0, ge=0, le=366 * 86400, allow_inf_nan=False, description="half-width, seconds"
    )
    bbox: Annotated[tuple[Longitude, Latitude, Longitude, Latitude], Strict(False)] | None = Field(
        None,
        description="[west, south, east, north] in degrees (west > east crosses the "
        "antimeridian): scenes located inside; frames/clips whose storm centre (best track) "
        "lies inside or whose footprint intersects it",
        # numbers all: so a form's encoder sends them as repeated fields, not one JSON part
        json_schema_extra={"items": {"type": "number"}},
    )
    k: integer(1, MAX_K) = Field(10, description="number of results")
    one_per_day: bool = False

    def to_filters(self) -> SearchFilters:
        # Imported here: the store's filters load qdrant-client (a second), which the typed
        # client, importing this module, never needs.
        from skysearch.retrieval.store.filters import SearchFilters

        names = set(SearchFilters().to_dict()) & set(type(self).model_fields)
        return SearchFilters.from_dict(self.model_dump(include=names))


class SceneFilterFields(FilterFields):
    """Filters of a scene search (text, image)."""

    datasets: list[SceneName] = Field(default_factory=list, max_length=64, description="scenes")
    labels: list[SceneName] = Field(default_factory=list, max_length=64, description="scenes")


class ArchiveFilterFields(FilterFields):
    """Filters of an archive search (clips, frames): also the best-track fields."""

    events: list[Name] = Field(
        default_factory=list, max_length=64, description="event ids, e.g. typhoon 198702"
    )
    min_class: integer(*JMA_CLASSES) | None = Field(
        None, description="JMA best-track class at least"
    )
    max_pressure: float | None = Field(
        None,
        ge=PRESSURE_HPA[0],
        le=PRESSURE_HPA[1],
        allow_inf_nan=False,
        description="central pressure (hPa) at most",
    )


#: JSON bodies: no unknown field, no coercion (``0`` is not ``false``, ``"10"`` not ``10``):
#: a value the document's types refuse, the server refuses too (422).
JSON_BODY = ConfigDict(extra="forbid", strict=True)


class SceneFilters(SceneFilterFields):
    model_config = JSON_BODY


class ArchiveFilters(ArchiveFilterFields):
    model_config = JSON_BODY


class Filters(SceneFilters, ArchiveFilters):
    """Every filter: what the typed client's ``Filters()`` holds; each route takes its own
    kind's (a scene filter on a clip search would match nothing: 422)."""


class FormFields(BaseModel):
    """Multipart form fields: one the form does not declare is refused (422), as in JSON
    bodies (a misspelt filter would otherwise be dropped, silently). ``FILE_PARTS``: the
    file fields that travel in the same form."""

    FILE_PARTS: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _declared_only(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(cls.model_fields) - cls.FILE_PARTS)
            if unknown:
                raise ValueError(
                    f"unknown form fields {unknown}; this form takes "
                    f"{sorted(set(cls.model_fields) | cls.FILE_PARTS)}"
                )
        return data


class RankFields(BaseModel):
    rerank: integer(0, MAX_RERANK) = Field(
        0, description="exact re-rank of the top N by the grid metric (at least the k hits)"
    )
    augment: bool = Field(False, description="fuse with the predicted future (needs a predictor)")
    model_id: Name | None = Field(None, description="clip model id (default: the latest fitting)")

    def to_options(self) -> SearchOptions:
        return SearchOptions(rerank=self.rerank, augment=self.augment, model_id=self.model_id)


class TextSearch(BaseModel):
    model_config = JSON_BODY
    text: str = Field(
        min_length=1,
        max_length=MAX_TEXT_CHARS,
        pattern=r"\S",
        description="free text: at least one letter, digit, symbol or punctuation mark (only "
        "spaces: a 422; only control or invisible characters: a 400)",
        examples=["a river next to a road"],
    )
    filters: SceneFilters = Field(default_factory=SceneFilters)
    model_id: Name | None = Field(
        None, description="text-image model id (default: the latest the scenes were indexed with)"
    )


#: the query's satellite and channels name the query alone (the CLI's options also filter the
#: results): the results are filtered by ``filters``
NOT_A_FILTER = " (not a filter on the results: filters.{})"
#: Fields of a query by time that a query by id must leave out (the id says them, or, for the
#: tolerance, nothing is matched by time).
CLIP_SPEC_FIELDS = ("satellite", "channels", "length", "gap_minutes", "tolerance_minutes")
FRAME_SPEC_FIELDS = ("satellite", "channel", "tolerance_minutes")


def _one_query(
    search: BaseModel, kind: str, at_means: str, implied: tuple[str, ...], implied_means: str
) -> str | None:
    """Check that a clip or frame search has exactly one of ``at`` or ``<kind>_id``, and that
    an id comes without the fields it implies; return the id as the GET routes read it."""
    id_name = f"{kind}_id"
    ident = getattr(search, id_name)
    if (search.at is None) == (ident is None):
        raise ValueError(
            f"give exactly one of at ({at_means}) or {id_name} (a {kind} of the {kind} catalog)"
        )
    if ident is None:
        return None
    given = [name for name in implied if name in search.model_fields_set]
    if given:
        raise ValueError(
            f"{id_name} names the {kind}, {implied_means} too: leave out {', '.join(given)} "
            "(fields of a query by at)"
        )
    return str(uuid.UUID(ident))


class ClipSearch(RankFields):
    """The query clip by start time (``at`` + spec) or by catalog ``clip_id``: exactly one."""

    model_config = ConfigDict(
        **JSON_BODY,
        json_schema_extra={
            "oneOf": [
                {"required": ["at"], "not": {"required": ["clip_id"]}},
                {  # the clip names its spec
                    "required": ["clip_id"],
                    "not": {"anyOf": [{"required": [f]} for f in ("at", *CLIP_SPEC_FIELDS)]},
                },
            ],
            "examples": [  # the bundled GOES-East sample (README)
                {"at": "2017-09-07T00:45:00Z", "channels": ["ir"], "filters": {"k": 5}},
                {"at": "2017-09-07T00:45:00Z", "rerank": 10, "filters": {"k": 3}},
            ],
        },
    )
    # Optional, not nullable (an explicit null is refused): the oneOf above stays exact.
    at: Time = Field(
        None,
        description="start time of the query clip, ISO 8601 UTC",
        json_schema_extra=_no_null_default,
    )
    clip_id: str = Field(
        None,
        pattern=UUID_PATTERN,
        description="a clip of the clip catalog",
        json_schema_extra=_no_null_default,
    )
    satellite: Name | None = Field(
        None, description="the query clip's satellite" + NOT_A_FILTER.format("satellites")
    )
    channels: list[Name] = Field(
        default_factory=list,
        max_length=8,
        description="the query clip's channels" + NOT_A_FILTER.format("channels"),
    )
    length: integer(1, MAX_FRAMES) | None = Field(None, description="frames per clip")
    gap_minutes: integer(1, 1440) | None = Field(None, description="minutes between frames")
    tolerance_minutes: integer(0, MAX_TOLERANCE_MINUTES) = DEFAULT_TOLERANCE_MINUTES
    filters: ArchiveFilters = Field(default_factory=ArchiveFilters)

    @model_validator(mode="after")
    def _one_query(self) -> ClipSearch:
        self.clip_id = _one_query(
            self, "clip", "the query clip's start time", CLIP_SPEC_FIELDS, "its spec"
        )
        return self


class FrameRankFields(BaseModel):
    rerank: integer(0, MAX_RERANK) = Field(
        0,
        description="exact re-rank of the top N by the grid metric on single frames (at least "
        "the k hits)",
    )
    model_id: Name | None = Field(
        None, description="frame model id (default: the latest of the channel and satellite)"
    )

    def to_options(self) -> SearchOptions:
        return SearchOptions(rerank=self.rerank, model_id=self.model_id)


class FrameSearch(FrameRankFields):
    """The query frame by time (``at`` + channel) or by catalog ``frame_id``: exactly one."""

    model_config = ConfigDict(
        **JSON_BODY,
        json_schema_extra={
            "oneOf": [
                {"required": ["at"], "not": {"required": ["frame_id"]}},
                {  # the frame names its satellite and channel
                    "required": ["frame_id"],
                    "not": {"anyOf": [{"required": [f]} for f in ("at", *FRAME_SPEC_FIELDS)]},
                },
            ],
            "examples": [  # the bundled GOES-East sample (README)
                {"at": "2017-09-07T00:45:00Z", "channel": "ir", "filters": {"k": 5}},
                {"at": "2017-09-07T00:45:00Z", "rerank": 10, "filters": {"k": 3}},
            ],
        },
    )
    at: Time = Field(
        None,
        description="time of an archive frame, ISO 8601 UTC",
        json_schema_extra=_no_null_default,
    )
    frame_id: str = Field(
        None,
        pattern=UUID_PATTERN,
        description="a frame of the frame catalog",
        json_schema_extra=_no_null_default,
    )
    satellite: Name | None = Field(
        None, description="the query frame's satellite" + NOT_A_FILTER.format("satellites")
    )
    channel: Name | None = Field(
        None, description="the query frame's channel" + NOT_A_FILTER.format("channels")
    )
    tolerance_minutes: integer(0, MAX_TOLERANCE_MINUTES) = DEFAULT_TOLERANCE_MINUTES
    filters: ArchiveFilters = Field(default_factory=ArchiveFilters)

    @model_validator(mode="after")
    def _one_query(self) -> FrameSearch:
        self.frame_id = _one_query(
            self, "frame", "the query frame's time", FRAME_SPEC_FIELDS, "its satellite and channel"
        )
        return self


class FrameUploadForm(FormFields, ArchiveFilterFields, FrameRankFields):
    """Form fields of a search by one uploaded frame (the filters, flat)."""

    model_config = ConfigDict(json_schema_extra=_upload_form)
    FILE_PARTS = frozenset({"frame"})
    satellite: Name | None = Field(None, description="satellite whose ingest profile to use")
    channel: Name | None = Field(
        None, description="channel of the frame (default: from its file name, or the model's)"
    )


class ImageSearchForm(FormFields, SceneFilterFields):
    """Form fields of an image search (the filters, flat)."""

    model_config = ConfigDict(json_schema_extra=_not_nullable)
    FILE_PARTS = frozenset({"image"})
    model_id: Name | None = Field(
        None, description="text-image model id (default: the latest the scenes were indexed with)"
    )
    text: str | None = Field(
        None, max_length=MAX_TEXT_CHARS, description="words combined with the example images"
    )


class FramesSearchForm(FormFields, ArchiveFilterFields, RankFields):
    """Form fields of a search by uploaded frames (the filters, flat, and the clip spec)."""

    model_config = ConfigDict(json_schema_extra=_upload_form)
    FILE_PARTS = frozenset({"frames"})
    satellite: Name | None = Field(None, description="satellite whose ingest profile to use")
    channel: Name | None = Field(None, description="channel of the frames")
    gap_minutes: integer(1, 1440) | None = Field(None, description="minutes between frames")


def close_upload_forms(document: dict[str, Any]) -> dict[str, Any]:
    """The OpenAPI document with each multipart body as one closed object: FastAPI declares
    it as ``allOf`` its form model plus the file parts, which leaves other fields allowed,
    while the form models refuse them (:class:`FormFields`). Idempotent."""
    schemas = document.get("components", {}).get("schemas", {})
    for name, body in list(schemas.items()):
        if not name.startswith("Body_") or "allOf" not in body:
            continue
        (ref,) = body.pop("allOf")
        form = schemas.pop(ref["$ref"].rsplit("/", 1)[-1])
        body["properties"] = {**form["properties"], **body.get("properties", {})}
        body["required"] = sorted({*form.get("required", ()), *body.get("required", ())})
        for key in ("description", "dependentRequired"):
            if key in form:
                body[key] = form[key]
        body["additionalProperties"] = False
    return document
