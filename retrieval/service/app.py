"""The HTTP layer of the search service (FastAPI): routes, auth, limits, error mapping. Thin.

Everything a route does is one call into :class:`skysearch.retrieval.service.service.SearchService`;
its request and response models are the wire schema (:mod:`skysearch.retrieval.service.wire`).
``create_app(service, api_key)`` builds the app; ``skysearch serve`` runs it with uvicorn in
ONE process (the embedded store is locked to one process); sync routes run in a thread pool.

Errors: every error body is ``{"detail": "<one line>"}``. Expected errors map to 4xx
(``UsageError`` 400, missing/wrong API key 401, ``NotFoundError`` 404, body too large 413,
invalid parameters 422) and to 503 while the service is loading, or when the store or a
served model's checkpoint cannot be used (``StoreError``, ``CheckpointError``).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, File, Form, Path, Query, Security, UploadFile
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel
from skysearch.retrieval.search import ClipQuery, FrameQuery
from skysearch.retrieval.service.animation import ANIMATION_MAX
from skysearch.retrieval.service.body_limit import BodyLimit
from skysearch.retrieval.service.error_handlers import install_error_handlers
from skysearch.retrieval.service.methods import HeadAndOptions
from skysearch.retrieval.service.page import STATIC, mount_page
from skysearch.retrieval.service.repeated_fields import sent_once
from skysearch.retrieval.service.responses import (
    ArchiveBody,
    ClipMeta,
    CollectionBody,
    ErrorBody,
    FrameMeta,
    Health,
    ReadinessBody,
    SearchResponse,
)
from skysearch.retrieval.service.service import SearchService
from skysearch.retrieval.service.uploads import Upload
from skysearch.retrieval.service.wire import (
    MAX_EXAMPLE_IMAGES,
    MAX_FRAMES,
    PNG_RESPONSE,
    THUMB_DEFAULT,
    THUMB_MAX,
    THUMB_MIN,
    UUID_PATTERN,
    WEBP_RESPONSE,
    ClipSearch,
    FrameSearch,
    FramesSearchForm,
    FrameUploadForm,
    ImageSearchForm,
    TextSearch,
    close_upload_forms,
)
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from skysearch import __version__
from skysearch.errors import (
    UsageError,
)

log = logging.getLogger("skysearch.service")

API_KEY_HEADER = "X-API-Key"
#: An uploaded file in the schema: an empty one is refused (400), so the document says so.
NONEMPTY_FILE = {"type": "string", "contentMediaType": "application/octet-stream", "minLength": 1}
#: Threads answering sync routes (inference is serialised per model; these mostly wait).
THREADS = 8

IdPath = Annotated[str, Path(pattern=UUID_PATTERN, description="UUID")]
Size = Annotated[
    int, Query(ge=THUMB_MIN, le=THUMB_MAX, description="longest side of a frame, pixels")
]

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "Bad request (the detail says what to change)"),
        (401, "Missing or wrong API key"),
        (
            404,
            "No such frame, clip, model or collection; or the archive has no such "
            "satellite, channel or time",
        ),
        (413, "Request body too large"),
        (422, "Invalid parameters"),
        (503, "Service still loading, a search kind not available, or its model's files damaged"),
    )
}
AnimationSize = Annotated[
    int, Query(ge=THUMB_MIN, le=ANIMATION_MAX, description="longest side of a frame, pixels")
]


# ---- auth -------------------------------------------------------------------------------
_key_header = APIKeyHeader(name=API_KEY_HEADER, auto_error=False, description="API key")
#: Paths served without a key: liveness, the API's own documentation and the web page (its
#: files hold nothing of the workspace; the page asks for the key and sends it with its calls).
DOCS_ASSETS = "/docs-assets"  # Swagger UI and ReDoc scripts, served by the service itself
PUBLIC_PATHS = frozenset(
    {"/", "/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
PUBLIC_PREFIXES = (f"/{STATIC}/", f"{DOCS_ASSETS}/")


def is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)


_UNAUTHORIZED = f"missing or wrong API key: send it in the {API_KEY_HEADER} header"


def key_matches(given: bytes | None, expected: str | None) -> bool:
    """True when no key is required or ``given`` (the header's raw bytes) is the key in UTF-8
    (constant-time comparison). HTTP header values are bytes; servers hand them on decoded
    as latin-1, so a non-ASCII key only matches byte for byte."""
    if expected is None:
        return True
    return given is not None and hmac.compare_digest(given, expected.encode("utf-8"))


class ApiKeyGate:
    """Refuse requests without the key (401) before anything reads their body."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_public(scope["path"]):
            raw = dict(scope.get("headers") or []).get(API_KEY_HEADER.lower().encode())
            if not key_matches(raw, self.api_key):
                response = JSONResponse(
                    {"detail": _UNAUTHORIZED},
                    status_code=401,
                    headers={"WWW-Authenticate": "ApiKey"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _auth(api_key: str | None) -> Callable[..., Awaitable[None]]:
    """The same check as a dependency: declares the key in the OpenAPI document."""

    async def check(key: Annotated[str | None, Security(_key_header)] = None) -> None:
        if not key_matches(key.encode("latin-1") if key is not None else None, api_key):
            raise StarletteHTTPException(401, _UNAUTHORIZED, headers={"WWW-Authenticate": "ApiKey"})

    return check


# ---- the app ----------------------------------------------------------------------------
def create_app(service: SearchService, api_key: str | None = None) -> FastAPI:
    """The FastAPI app over ``service``; ``api_key`` None serves without auth (loopback only:
    ``skysearch serve`` refuses a non-loopback bind without a key)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        import anyio.to_thread

        anyio.to_thread.current_default_thread_limiter().total_tokens = THREADS
        owned = service.readiness().state == "starting"  # else a caller started it (tests)
        if owned:
            service.start(background=True)
        yield
        if owned:
            service.close()

    app = FastAPIOffline(  # /docs and /redoc from files in the package, not a CDN (offline)
        static_url=DOCS_ASSETS,
        title="SkySearch",
        version=__version__,
        description="Search satellite imagery and video by text, clip or image. "
        f"Send the API key in the `{API_KEY_HEADER}` header when the service requires one.",
        lifespan=lifespan,
        responses={k: v for k, v in ERRORS.items() if k in (401, 413, 422)},
    )
    app.openapi = lambda: close_upload_forms(FastAPI.openapi(app))  # type: ignore[method-assign]
    install_error_handlers(app, service)
    app.add_middleware(BodyLimit, max_bytes=service.limits.max_request_bytes)
    app.add_middleware(HeadAndOptions)
    if api_key is not None:
        app.add_middleware(ApiKeyGate, api_key=api_key)  # outermost: checked first
    auth = [Depends(_auth(api_key))]
    limits = service.limits

    mount_page(app)

    @app.get("/health", response_model=Health, tags=["service"])
    def health() -> Health:
        """Liveness: the process answers (no API key needed; says nothing else)."""
        return Health(status="ok", version=__version__)

    @app.get(
        "/ready",
        response_model=ReadinessBody,
        tags=["service"],
        dependencies=auth,
        responses={503: {"model": ReadinessBody, "description": "Not ready yet (or failed)"}},
    )
    def ready() -> JSONResponse:
        """Readiness: 200 once the store, catalogs and models are loaded, else 503."""
        state = ReadinessBody(**service.readiness().__dict__)
        return JSONResponse(state.model_dump(), status_code=200 if state.ready else 503)

    @app.get(
        "/collections",
        response_model=list[CollectionBody],
        tags=["metadata"],
        dependencies=auth,
        responses={503: ERRORS[503]},
    )
    def collections() -> list[CollectionBody]:
        """Collections in the store and their sizes."""
        return [
            CollectionBody(name=c.name, points=c.points, vectors=c.vectors, backend=c.backend)
            for c in service.collections()
        ]

    @app.get(
        "/archive",
        response_model=ArchiveBody,
        tags=["metadata"],
        dependencies=auth,
        responses={503: ERRORS[503]},
    )
    def archive() -> dict[str, Any]:
        """What the workspace's catalogs hold: frame and clip counts, time range, each
        satellite's channels, the clip specs; and the registered models."""
        return service.archive()

    meta_errors = {c: ERRORS[c] for c in (404, 503)}
    meta = {"tags": ["metadata"], "dependencies": auth, "responses": meta_errors}
    png = {**meta, "response_class": Response, "responses": {**PNG_RESPONSE, **meta_errors}}

    @app.get("/frames/{frame_id}", response_model=FrameMeta, **meta)
    def frame(frame_id: IdPath) -> dict[str, Any]:
        """A frame's metadata."""
        return service.frame(frame_id)

    @app.get("/frames/{frame_id}/thumbnail.png", **png)
    def frame_thumbnail(frame_id: IdPath, size: Size = THUMB_DEFAULT) -> Response:
        """The frame (working resolution, grey) as PNG."""
        return Response(service.frame_thumbnail(frame_id, size), media_type="image/png")

    @app.get("/clips/{clip_id}", response_model=ClipMeta, **meta)
    def clip(clip_id: IdPath) -> dict[str, Any]:
        """A clip's metadata, with its frame ids."""
        return service.clip(clip_id)

    @app.get("/clips/{clip_id}/thumbnail.png", **png)
    def clip_thumbnail(clip_id: IdPath, size: Size = THUMB_DEFAULT) -> Response:
        """The clip's frames (first channel) side by side, as PNG."""
        return Response(service.clip_thumbnail(clip_id, size), media_type="image/png")

    @app.get(
        "/clips/{clip_id}/animation.webp",
        **{**png, "responses": {**WEBP_RESPONSE, **meta_errors}},
    )
    def clip_animation(clip_id: IdPath, size: AnimationSize = THUMB_DEFAULT) -> Response:
        """The clip's frames (first channel) as a looping animated WebP (cached)."""
        return Response(
            service.clip_animation(clip_id, size),
            media_type="image/webp",
            headers={"Cache-Control": "private, max-age=600"},
        )

    @app.get("/scenes/{scene_id}/thumbnail.png", **png)
    def scene_thumbnail(scene_id: IdPath, size: Size = THUMB_DEFAULT) -> Response:
        """A scene's image (as indexed by `skysearch index scenes`) as PNG."""
        return Response(service.scene_thumbnail(scene_id, size), media_type="image/png")

    search = {
        "response_model": SearchResponse,
        "tags": ["search"],
        "dependencies": auth,
        "responses": {c: ERRORS[c] for c in (400, 404, 503)},
    }

    def uploads(form: type[BaseModel], single_files: frozenset[str]) -> dict[str, Any]:
        """A multipart search route's settings: a single-valued field sent twice is refused."""
        return {**search, "dependencies": [*auth, Depends(sent_once(form, single_files))]}

    @app.post("/search/text", **search)
    def search_text(body: TextSearch) -> dict[str, Any]:
        """Scenes matching free text (text-image model)."""
        return service.search_text(body.text, body.filters.to_filters(), body.model_id)

    @app.post(
        "/search/image",
        **uploads(ImageSearchForm, frozenset()),
        openapi_extra=_image_parts("image"),
    )
    def search_image(
        params: Annotated[ImageSearchForm, Form()],
        image: Annotated[
            list[UploadFile],
            File(
                description="PNG, JPEG or GIF, at most 8 MiB and 4096x4096 each; repeat the "
                "field for several examples",
                min_length=1,
                max_length=MAX_EXAMPLE_IMAGES,
                json_schema_extra={"items": NONEMPTY_FILE},
            ),
        ],
    ) -> dict[str, Any]:
        """Scenes like one or several uploaded example images, optionally with words
        (multipart form: `image` (repeatable) + `text` + filter fields)."""
        uploads = [_read_upload(f, limits.upload.max_bytes) for f in image]
        return service.search_image(uploads, params.to_filters(), params.model_id, params.text)

    @app.post("/search/clip", **search)
    def search_clip(body: ClipSearch) -> dict[str, Any]:
        """Clips like a query clip given by start time (+ channels, length, gap) or clip id."""
        query = ClipQuery(
            at=body.at,
            clip_id=body.clip_id,
            channels=tuple(body.channels),
            satellite=body.satellite,
            length=body.length,
            gap_minutes=body.gap_minutes,
            tolerance_minutes=body.tolerance_minutes,
        )
        return service.search_clip(query, body.filters.to_filters(), body.to_options())

    @app.post(
        "/search/clip/frames",
        **uploads(FramesSearchForm, frozenset()),
        openapi_extra=_image_parts("frames"),
    )
    def search_clip_frames(
        params: Annotated[FramesSearchForm, Form()],
        frames: Annotated[
            list[UploadFile],
            File(
                description="the query clip's frames, in time order (PNG, JPEG or GIF)",
                min_length=1,
                max_length=MAX_FRAMES,
                json_schema_extra={"items": NONEMPTY_FILE},
            ),
        ],
    ) -> dict[str, Any]:
        """Clips like a clip of uploaded frames (multipart: `frames` repeated, one channel,
        in time order, raw images of the satellite's product; + filter fields)."""
        if len(frames) > limits.max_frames:
            raise UsageError(f"{len(frames)} frames uploaded; the limit is {limits.max_frames}")
        uploads = [_read_upload(f, limits.upload.max_bytes) for f in frames]
        return service.search_clip_frames(
            uploads,
            params.satellite,
            params.channel,
            params.gap_minutes,
            params.to_filters(),
            params.to_options(),
        )

    @app.post("/search/frame", **search)
    def search_frame(body: FrameSearch) -> dict[str, Any]:
        """Archive frames like a query frame given by time (+ channel) or frame id."""
        query = FrameQuery(
            at=body.at,
            frame_id=body.frame_id,
            channel=body.channel,
            satellite=body.satellite,
            tolerance_minutes=body.tolerance_minutes,
        )
        return service.search_frame(query, body.filters.to_filters(), body.to_options())

    @app.post(
        "/search/frame/upload",
        **uploads(FrameUploadForm, frozenset({"frame"})),
        openapi_extra=_image_parts("frame"),
    )
    def search_frame_upload(
        params: Annotated[FrameUploadForm, Form()],
        frame: Annotated[
            UploadFile,
            File(
                description="the query frame, a raw image of the satellite's product (PNG, "
                "JPEG or GIF)",
                json_schema_extra=NONEMPTY_FILE,
            ),
        ],
    ) -> dict[str, Any]:
        """Archive frames like one uploaded frame (multipart: `frame` + filter fields)."""
        upload = _read_upload(frame, limits.upload.max_bytes)
        return service.search_frame_upload(
            upload, params.satellite, params.channel, params.to_filters(), params.to_options()
        )

    return app


def _image_parts(field: str) -> dict[str, Any]:
    """The multipart ``encoding`` of an upload field: the image types the server decodes."""
    form = {"encoding": {field: {"contentType": "image/png, image/jpeg, image/gif"}}}
    return {"requestBody": {"content": {"multipart/form-data": form}}}


def _read_upload(file: UploadFile, max_bytes: int) -> Upload:
    """The upload's bytes (at most one byte past the limit, so an oversize file is refused
    without reading it all) and its client-side name, shortened, only ever echoed."""
    name = (file.filename or "upload").replace("\\", "/").rsplit("/", 1)[-1][:128] or "upload"
    return Upload(name=name, data=file.file.read(max_bytes + 1))


def openapi_json() -> str:
    """The service's OpenAPI document as committed in ``openapi.json`` (stable text)."""
    import json
    import pathlib

    from skysearch.config import Settings, Workspace

    unused = Settings(workspace=Workspace(pathlib.Path("/nonexistent")))  # never loaded
    app = create_app(SearchService(unused))
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"
