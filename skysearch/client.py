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

Every method mirrors one endpoint. Requests are built from, and answers parsed into, the
service's own wire schema (:mod:`skysearch.retrieval.service.wire`): one definition of every
body. The client checks nothing the service checks: a bad value comes back as the service's
answer. An error answer raises :class:`ApiError` (``status_code`` and the service's one-line
``detail``). Importing this module needs httpx, pydantic and numpy; not torch, fastapi or
the store.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import httpx
import pyarrow as pa
from pydantic import BaseModel, TypeAdapter

from skysearch.errors import SkySearchError, UsageError
from skysearch.retrieval.search import ResultItem as Hit
from skysearch.retrieval.search.results import results_frame, results_table
from skysearch.retrieval.service import responses, wire

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["ApiError", "Filters", "Hit", "SearchResult", "SkySearchClient"]

API_KEY_HEADER = "X-API-Key"
ImageInput = str | Path | bytes | tuple[str, bytes]


class ApiError(SkySearchError):
    """The service answered with an error status, or with something that is not its answer
    (e.g. a proxy's HTML page): ``status_code`` is the HTTP status either way."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"HTTP {status_code}: {detail}")
        self.status_code = status_code
        self.detail = detail


class ServiceUnreachable(ApiError):
    """No answer at all: the connection was refused, reset or timed out (status 503, as for
    a service that answers it is not ready)."""

    def __init__(self, detail: str) -> None:
        super().__init__(503, detail)


#: what a field of the library's SearchFilters is called here
_FILTER_HINTS = {
    "k": "k is the search method's argument",
    "exclude_window": "use exclude_window_s, in seconds",
}


def Filters(**fields: Any) -> wire.Filters:
    """Search filters (the wire's ``filters`` object; ``k`` is a method argument). Times are
    ``datetime`` or ISO 8601 text. Not validated here: the service checks them (422)."""
    unknown = sorted(set(fields) - (set(wire.Filters.model_fields) - {"k"}))
    if unknown:
        said = "; ".join(_FILTER_HINTS[name] for name in unknown if name in _FILTER_HINTS)
        raise TypeError(f"Filters() got unexpected fields {unknown}{f' ({said})' if said else ''}")
    return wire.Filters.model_construct(**{name: _plain(v) for name, v in fields.items()})


class SearchResult(responses.SearchResponse):
    """A search answer (``responses.SearchResponse``): ``results`` are :class:`Hit` items."""

    @property
    def schema(self) -> str:  # type: ignore[override] - BaseModel's is a deprecated method
        return self.schema_

    def to_json(self) -> dict[str, Any]:
        """The JSON the service sent (same as the CLI's ``--json``)."""
        return self.model_dump(mode="json", by_alias=True)

    def to_arrow(self) -> pa.Table:
        """The hits as an Arrow table, times as UTC timestamps (as ``Searcher`` results)."""
        return results_table(self.results)

    def to_pandas(self) -> pd.DataFrame:
        """The hits as a pandas DataFrame (as ``Searcher`` results)."""
        return results_frame(self.results)


def _plain(value: Any) -> Any:
    """Numbers and sequences as JSON knows them: numpy scalars and arrays, ranges, sets and
    tuples become Python numbers and lists (the bodies are built unchecked, so pydantic would
    refuse to write them)."""
    if isinstance(value, (str, bytes, datetime)):
        return value
    if hasattr(value, "tolist"):  # a numpy scalar or array
        return value.tolist()
    if isinstance(value, (list, tuple, range, set, frozenset)):
        return [_plain(v) for v in value]
    return value


def _body(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    """A request body of ``model`` with the fields that are not None, unchecked (the
    service checks it), as JSON values."""
    given = model.model_construct(**{k: _plain(v) for k, v in fields.items() if v is not None})
    return given.model_dump(mode="json", exclude_unset=True, warnings=False)


def _filters(filters: wire.Filters | Mapping[str, Any] | None, k: int) -> dict[str, Any]:
    """The filters given, with ``k``, as JSON values: all of them, also those the route's own
    filters model lacks (dumped through it they would be dropped; the service refuses them)."""
    if isinstance(k, bool):  # dumped as an int field it became 1 or 0
        raise UsageError(f"k is a number of hits, not {k}")
    if isinstance(filters, Mapping):  # the JSON form, as a dict
        filters = Filters(**filters)
    elif filters is not None and not isinstance(filters, wire.Filters):
        raise UsageError(f"filters are Filters(...) or a dict, not {type(filters).__name__}")
    given = (filters or Filters()).model_copy(update={"k": _plain(k)})
    return given.model_dump(mode="json", exclude_unset=True, warnings=False)


def _id(value: str) -> str:
    """An id as one URL path segment: ``..`` or ``../health`` must not reach another route
    (ids hold no dots, so every dot is escaped: a client would resolve ``.``/``..``)."""
    return quote(str(value), safe="").replace(".", "%2E")


def _file(item: ImageInput, default_name: str) -> tuple[str, bytes]:
    """(name, bytes) of an upload: a path, bytes, or (name, bytes); anything else, and a path
    that cannot be read, is a UsageError (raised before any request)."""
    if isinstance(item, tuple):  # an empty name made the part a form field, not a file
        if len(item) != 2 or not isinstance(item[1], bytes):
            raise UsageError("an image to upload as a tuple is (name, bytes)")
        return item[0] or default_name, item[1]
    if isinstance(item, bytes):
        return default_name, item
    if not isinstance(item, str | Path):
        raise UsageError(
            f"an image to upload is a path, bytes or (name, bytes), not {type(item).__name__}"
        )
    path = Path(item)
    try:
        return path.name, path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}") from None


def _form(filters: wire.Filters | None, k: int, **fields: Any) -> dict[str, Any]:
    """Multipart form fields: the filters and ``fields`` flat, lists as repeated fields, Nones
    left out. Every filter given is sent: the service refuses those its form does not take."""
    flat = _filters(filters, k)
    flat.update((key, value) for key, value in fields.items() if value is not None)
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
        if api_key and (
            api_key != api_key.strip() or any(ord(c) < 32 or ord(c) == 127 for c in api_key)
        ):
            raise UsageError(  # httpx refuses to send it: every call would look unreachable
                "api_key holds a line break, another control character or spaces at an end "
                "(a key read from a file keeps its newline: strip() it)"
            )
        headers = {API_KEY_HEADER: api_key.encode("utf-8")} if api_key else {}  # any key
        if http is None and not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url {base_url!r} needs http:// or https://")
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
    def _call(
        self, method: str, path: str, ok: Iterable[int] = (200,), **kwargs: Any
    ) -> httpx.Response:
        if self._http.is_closed:
            raise UsageError("this SkySearchClient is closed: make a new one")
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:  # refused, reset, timed out
            where = str(self._http.base_url).rstrip("/")
            raise ServiceUnreachable(f"service not reachable at {where}: {exc!r}") from exc
        if response.status_code not in ok:
            try:
                detail = responses.ErrorBody.model_validate_json(response.content).detail
            except ValueError:  # not the service's error body (a proxy's page, say)
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response

    def _json(self, method: str, path: str, model: Any = None, **kwargs: Any) -> Any:
        """The answer's JSON, validated as ``model`` (a pydantic model or TypeAdapter) when
        given; anything else (a proxy's page, another service) is an ApiError."""
        response = self._call(method, path, **kwargs)
        try:
            if model is None:
                return response.json()
            parse = getattr(model, "model_validate_json", None) or model.validate_json
            return parse(response.content)
        except ValueError as exc:  # JSONDecodeError, pydantic's ValidationError
            text = response.text[:200].strip()
            raise ApiError(response.status_code, f"not the service's answer: {text!r}") from exc

    def _image(self, path: str, kind: str, size: int) -> bytes:
        response = self._call("GET", path, params={"size": size})
        if not response.headers.get("content-type", "").startswith(kind):
            got = response.headers.get("content-type", "nothing")
            raise ApiError(response.status_code, f"expected {kind}, got {got}")
        return response.content

    def _search(self, path: str, **kwargs: Any) -> SearchResult:
        return self._json("POST", path, SearchResult, **kwargs)

    # ---- service --------------------------------------------------------------------------
    def health(self) -> dict[str, str]:
        """GET /health."""
        return self._json("GET", "/health")

    def ready(self) -> responses.ReadinessBody:
        """GET /ready (a service still loading answers ready=False, not an error)."""
        return self._json("GET", "/ready", responses.ReadinessBody, ok=(200, 503))

    def wait_ready(self, timeout: float = 300.0, interval: float = 0.5) -> responses.ReadinessBody:
        """Poll /ready until ready; ApiError 503 if loading failed or took too long. A service
        not listening yet (just started: connection refused) is waited for like one loading."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                state = self.ready()
            except ServiceUnreachable:
                if time.monotonic() > deadline:
                    raise
            else:
                if state.ready:
                    return state
                if state.state == "failed" or time.monotonic() > deadline:
                    raise ApiError(503, f"service not ready ({state.state}): {state.detail}")
            time.sleep(interval)

    # ---- metadata -------------------------------------------------------------------------
    def collections(self) -> list[responses.CollectionBody]:
        """GET /collections: collections and their sizes."""
        return self._json("GET", "/collections", TypeAdapter(list[responses.CollectionBody]))

    def frame(self, frame_id: str) -> responses.FrameMeta:
        """GET /frames/{id}."""
        return self._json("GET", f"/frames/{_id(frame_id)}", responses.FrameMeta)

    def clip(self, clip_id: str) -> responses.ClipMeta:
        """GET /clips/{id}."""
        return self._json("GET", f"/clips/{_id(clip_id)}", responses.ClipMeta)

    def frame_thumbnail(self, frame_id: str, size: int = 256) -> bytes:
        """GET /frames/{id}/thumbnail.png: PNG bytes."""
        return self._image(f"/frames/{_id(frame_id)}/thumbnail.png", "image/png", size)

    def clip_thumbnail(self, clip_id: str, size: int = 256) -> bytes:
        """GET /clips/{id}/thumbnail.png: PNG bytes (the clip's frames side by side)."""
        return self._image(f"/clips/{_id(clip_id)}/thumbnail.png", "image/png", size)

    def clip_animation(self, clip_id: str, size: int = 256) -> bytes:
        """GET /clips/{id}/animation.webp: the clip's frames as a looping animated WebP."""
        return self._image(f"/clips/{_id(clip_id)}/animation.webp", "image/webp", size)

    def scene_thumbnail(self, scene_id: str, size: int = 256) -> bytes:
        """GET /scenes/{id}/thumbnail.png: the image the scene was indexed from, PNG bytes."""
        return self._image(f"/scenes/{_id(scene_id)}/thumbnail.png", "image/png", size)

    def archive(self) -> responses.ArchiveBody:
        """GET /archive: what the catalogs hold (counts, time range, channels, clip specs)
        and the registered models."""
        return self._json("GET", "/archive", responses.ArchiveBody)

    # ---- searches -------------------------------------------------------------------------
    def search_text(
        self,
        text: str,
        k: int = 10,
        filters: wire.Filters | None = None,
        model_id: str | None = None,
    ) -> SearchResult:
        """POST /search/text: scenes matching free text."""
        body = _body(wire.TextSearch, text=text, filters=_filters(filters, k), model_id=model_id)
        return self._search("/search/text", json=body)

    def search_image(
        self,
        image: ImageInput | Sequence[ImageInput],
        k: int = 10,
        filters: wire.Filters | None = None,
        model_id: str | None = None,
        text: str | None = None,
    ) -> SearchResult:
        """POST /search/image: scenes like an image, or like several examples (a list or a
        tuple), each a path, bytes, or (name, bytes); ``text`` adds words to the same query.
        A tuple of a str and bytes is one (name, bytes) image: pass a path and bytes as two
        examples in a list."""
        pair = (
            isinstance(image, tuple)
            and len(image) == 2
            and isinstance(image[0], str)
            and isinstance(image[1], bytes)
        )
        many = isinstance(image, list | tuple) and not pair
        images = list(image) if many else [image]
        data = _form(filters, k, model_id=model_id, text=text)
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
        filters: wire.Filters | None = None,
        rerank: int = 0,
        augment: bool = False,
        model_id: str | None = None,
        tolerance_minutes: int | None = None,
    ) -> SearchResult:
        """POST /search/clip: clips like the clip starting ``at`` (with ``channels``,
        ``length``, ``gap_minutes``; unset: the clip model's) or the catalog clip ``clip_id``."""
        body = _body(
            wire.ClipSearch,
            at=at,
            clip_id=clip_id,
            channels=([channels] if isinstance(channels, str) else list(channels)) or None,
            satellite=satellite,
            length=length,
            gap_minutes=gap_minutes,
            tolerance_minutes=tolerance_minutes,
            rerank=rerank,
            augment=augment,
            model_id=model_id,
            filters=_filters(filters, k),
        )
        return self._search("/search/clip", json=body)

    def search_clip_frames(
        self,
        frames: Sequence[ImageInput],
        satellite: str | None = None,
        channel: str | None = None,
        gap_minutes: int | None = None,
        k: int = 10,
        filters: wire.Filters | None = None,
        rerank: int = 0,
        augment: bool = False,
        model_id: str | None = None,
    ) -> SearchResult:
        """POST /search/clip/frames: clips like a clip of frame images (one channel, in time
        order, raw files of the satellite's product: paths, bytes or (name, bytes))."""
        data = _form(
            filters,
            k,
            satellite=satellite,
            channel=channel,
            gap_minutes=gap_minutes,
            rerank=rerank or None,
            augment=augment or None,
            model_id=model_id,
        )
        if isinstance(frames, str | bytes | Path):  # would be read one character at a time
            raise UsageError("frames is a list of frame images (paths, bytes or (name, bytes))")
        files = [("frames", _file(f, f"frame-{i:04d}")) for i, f in enumerate(frames)]
        return self._search("/search/clip/frames", data=data, files=files)

    def search_frame(
        self,
        at: datetime | str | None = None,
        frame_id: str | None = None,
        channel: str | None = None,
        satellite: str | None = None,
        k: int = 10,
        filters: wire.Filters | None = None,
        rerank: int = 0,
        model_id: str | None = None,
        tolerance_minutes: int | None = None,
    ) -> SearchResult:
        """POST /search/frame: archive frames like the frame at ``at`` (with ``channel``;
        unset: the frame model's) or the catalog frame ``frame_id``."""
        body = _body(
            wire.FrameSearch,
            at=at,
            frame_id=frame_id,
            channel=channel,
            satellite=satellite,
            tolerance_minutes=tolerance_minutes,
            rerank=rerank,
            model_id=model_id,
            filters=_filters(filters, k),
        )
        return self._search("/search/frame", json=body)

    def search_frame_upload(
        self,
        frame: ImageInput,
        satellite: str | None = None,
        channel: str | None = None,
        k: int = 10,
        filters: wire.Filters | None = None,
        rerank: int = 0,
        model_id: str | None = None,
    ) -> SearchResult:
        """POST /search/frame/upload: archive frames like one frame image (a raw file of the
        satellite's product: a path, bytes or (name, bytes))."""
        data = _form(
            filters,
            k,
            satellite=satellite,
            channel=channel,
            rerank=rerank or None,
            model_id=model_id,
        )
        return self._search(
            "/search/frame/upload", data=data, files=[("frame", _file(frame, "frame"))]
        )
