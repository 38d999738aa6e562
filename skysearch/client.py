"""Typed Python client of the SkySearch HTTP service (``skysearch serve``), on httpx.

    from skysearch.client import Filters, SkySearchClient

    with SkySearchClient("http://127.0.0.1:8000", api_key=None) as sky:
        sky.wait_ready()
        result = sky.search_text("a river next to fields", k=5)
        for hit in result.results:
            print(hit.rank, hit.score, hit.label, hit.id)
        clips = sky.search_clip(at="2017-09-07T00:45Z", channels=["ir"], k=5,
                                filters=Filters(exclude_window_s=12 * 3600))
        png = sky.clip_thumbnail(clips.results[0].id)

Every method mirrors one endpoint; results are dataclasses. An error answer raises
:class:`ApiError` (``status_code`` and the service's one-line ``detail``). Importing this
module needs httpx and numpy, not torch.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from skysearch.errors import SkySearchError
from skysearch.retrieval.search.facade import (
    ResultItem as Hit,  # the result schema's one definition
)

API_KEY_HEADER = "X-API-Key"
ImageInput = str | Path | bytes | tuple[str, bytes]


class ApiError(SkySearchError):
    """The service answered with an error status."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


def _iso(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


@dataclass
class Filters:
    """Search filters, as the CLI's (``k`` is a method argument)."""

    start: datetime | str | None = None
    end: datetime | str | None = None
    months: Sequence[int] = ()
    hours: Sequence[int] = ()
    day_of_year: tuple[int, int] | None = None
    channels: Sequence[str] = ()
    satellites: Sequence[str] = ()
    exclude_around: datetime | str | None = None
    exclude_window_s: float = 0.0
    one_per_day: bool = False
    datasets: Sequence[str] = ()
    labels: Sequence[str] = ()
    bbox: tuple[float, float, float, float] | None = None  # west, south, east, north

    def to_json(self, k: int) -> dict[str, Any]:
        """The request's ``filters`` object (only what is set)."""
        out: dict[str, Any] = {"k": k}
        for name in ("start", "end", "exclude_around"):
            if getattr(self, name) is not None:
                out[name] = _iso(getattr(self, name))
        for name in ("months", "hours", "channels", "satellites", "datasets", "labels"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
        if self.day_of_year is not None:
            out["day_of_year"] = list(self.day_of_year)
        if self.bbox is not None:
            out["bbox"] = list(self.bbox)
        if self.exclude_window_s:
            out["exclude_window_s"] = self.exclude_window_s
        if self.one_per_day:
            out["one_per_day"] = True
        return out


@dataclass(frozen=True)
class SearchResult:
    schema: str
    query: dict[str, Any]
    results: list[Hit]
    filters: dict[str, Any]
    timing_ms: dict[str, float]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SearchResult:
        return cls(
            schema=data["schema"],
            query=data["query"],
            results=[_build(Hit, item) for item in data["results"]],
            filters=data["filters"],
            timing_ms=data["timing_ms"],
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON the service sent (same as the CLI's ``--json``)."""
        return asdict(self)


@dataclass(frozen=True)
class Readiness:
    ready: bool
    state: str
    detail: str
    load_seconds: float | None = None
    store: str | None = None
    collections: dict[str, int] = field(default_factory=dict)
    searches: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Collection:
    name: str
    points: int
    vectors: dict[str, int]
    backend: str


@dataclass(frozen=True)
class FrameInfo:
    frame_id: str
    satellite: str
    channel: str
    time: str
    source_width: int
    source_height: int
    thumbnail: str


@dataclass(frozen=True)
class ClipInfo:
    clip_id: str
    satellite: str
    channels: list[str]
    start: str
    end: str
    length: int
    gap_minutes: int
    frame_ids: list[list[str]]
    thumbnail: str


def _build(cls: type, data: dict[str, Any]) -> Any:
    """A dataclass from a JSON object, ignoring fields a newer service may add."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def _file(item: ImageInput, default_name: str) -> tuple[str, bytes]:
    if isinstance(item, tuple):
        return item
    if isinstance(item, bytes):
        return default_name, item
    path = Path(item)
    return path.name, path.read_bytes()


def _form(filters: Filters | None, k: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Multipart form fields: the filters flat, lists as repeated fields, Nones left out."""
    flat = {**(filters or Filters()).to_json(k), **extra}
    return {
        key: [str(v) for v in value] if isinstance(value, list) else _scalar(value)
        for key, value in flat.items()
        if value is not None
    }


def _scalar(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class SkySearchClient:
    """Client of one SkySearch service. ``http``: an httpx.Client to use instead of a new one
    (e.g. a Starlette TestClient); ``timeout`` in seconds."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        timeout: float = 60.0,
        http: httpx.Client | None = None,
    ) -> None:
        headers = {API_KEY_HEADER: api_key.encode("utf-8")} if api_key else {}  # any key
        self._own = http is None
        self._http = http or httpx.Client(base_url=base_url, timeout=timeout)
        self._http.headers.update(headers)

    def close(self) -> None:
        if self._own:
            self._http.close()

    def __enter__(self) -> SkySearchClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing -------------------------------------------------------------------------
    def _call(self, method: str, path: str, ok: Iterable[int] = (200,), **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if response.status_code not in ok:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, str(detail))
        return response

    def _search(self, path: str, **kwargs: Any) -> SearchResult:
        return SearchResult.from_json(self._call("POST", path, **kwargs).json())

    # ---- service --------------------------------------------------------------------------
    def health(self) -> dict[str, str]:
        """GET /health."""
        return self._call("GET", "/health").json()

    def ready(self) -> Readiness:
        """GET /ready (a service still loading answers ready=False, not an error)."""
        return _build(Readiness, self._call("GET", "/ready", ok=(200, 503)).json())

    def wait_ready(self, timeout: float = 300.0, interval: float = 0.5) -> Readiness:
        """Poll /ready until ready; ApiError 503 if loading failed or took too long."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.ready()
            if state.ready:
                return state
            if state.state == "failed" or time.monotonic() > deadline:
                raise ApiError(503, f"service not ready ({state.state}): {state.detail}")
            time.sleep(interval)

    # ---- metadata -------------------------------------------------------------------------
    def collections(self) -> list[Collection]:
        """GET /collections: collections and their sizes."""
        return [_build(Collection, c) for c in self._call("GET", "/collections").json()]

    def frame(self, frame_id: str) -> FrameInfo:
        """GET /frames/{id}."""
        return _build(FrameInfo, self._call("GET", f"/frames/{frame_id}").json())

    def clip(self, clip_id: str) -> ClipInfo:
        """GET /clips/{id}."""
        return _build(ClipInfo, self._call("GET", f"/clips/{clip_id}").json())

    def frame_thumbnail(self, frame_id: str, size: int = 256) -> bytes:
        """GET /frames/{id}/thumbnail.png: PNG bytes."""
        path = f"/frames/{frame_id}/thumbnail.png"
        return self._call("GET", path, params={"size": size}).content

    def clip_thumbnail(self, clip_id: str, size: int = 256) -> bytes:
        """GET /clips/{id}/thumbnail.png: PNG bytes (the clip's frames side by side)."""
        return self._call("GET", f"/clips/{clip_id}/thumbnail.png", params={"size": size}).content

    # ---- searches -------------------------------------------------------------------------
    def search_text(
        self,
        text: str,
        k: int = 10,
        filters: Filters | None = None,
        model_id: str | None = None,
    ) -> SearchResult:
        """POST /search/text: scenes matching free text."""
        body: dict[str, Any] = {"text": text, "filters": (filters or Filters()).to_json(k)}
        if model_id:
            body["model_id"] = model_id
        return self._search("/search/text", json=body)

    def search_image(
        self,
        image: ImageInput | Sequence[ImageInput],
        k: int = 10,
        filters: Filters | None = None,
        model_id: str | None = None,
        text: str | None = None,
    ) -> SearchResult:
        """POST /search/image: scenes like an image, or like several examples (a list), each a
        path, bytes, or (name, bytes); ``text`` adds words to the same query."""
        images = list(image) if isinstance(image, list) else [image]
        data = _form(filters, k, {"model_id": model_id, "text": text})
        files = [("image", _file(item, f"image{i}")) for i, item in enumerate(images)]
        return self._search("/search/image", data=data, files=files)

    def search_clip(
        self,
        at: datetime | str | None = None,
        clip_id: str | None = None,
        channels: Sequence[str] = (),
        satellite: str | None = None,
        length: int | None = None,
        gap_minutes: int | None = None,
        k: int = 10,
        filters: Filters | None = None,
        rerank: int = 0,
        augment: bool = False,
        model_id: str | None = None,
        tolerance_minutes: int = 15,
    ) -> SearchResult:
        """POST /search/clip: clips like the clip starting ``at`` (with ``channels``,
        ``length``, ``gap_minutes``; unset: the clip model's) or the catalog clip ``clip_id``."""
        body: dict[str, Any] = {
            "at": _iso(at),
            "clip_id": clip_id,
            "channels": list(channels),
            "satellite": satellite,
            "length": length,
            "gap_minutes": gap_minutes,
            "tolerance_minutes": tolerance_minutes,
            "rerank": rerank,
            "augment": augment,
            "model_id": model_id,
            "filters": (filters or Filters()).to_json(k),
        }
        return self._search("/search/clip", json={k_: v for k_, v in body.items() if v is not None})

    def search_clip_frames(
        self,
        frames: Sequence[ImageInput],
        satellite: str | None = None,
        channel: str | None = None,
        gap_minutes: int | None = None,
        k: int = 10,
        filters: Filters | None = None,
        rerank: int = 0,
        model_id: str | None = None,
    ) -> SearchResult:
        """POST /search/clip/frames: clips like a clip of frame images (one channel, in time
        order, raw files of the satellite's product: paths, bytes or (name, bytes))."""
        extra = {
            "satellite": satellite,
            "channel": channel,
            "gap_minutes": gap_minutes,
            "rerank": rerank or None,
            "model_id": model_id,
        }
        files = [("frames", _file(f, f"frame-{i:04d}")) for i, f in enumerate(frames)]
        return self._search("/search/clip/frames", data=_form(filters, k, extra), files=files)
