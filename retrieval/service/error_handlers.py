"""The service's error bodies: every error is ``{"detail": "<one line>"}``, a library error
with its parameters named as the request spells them (see the app module for the statuses)."""

from __future__ import annotations

import logging
from functools import partial

from fastapi import FastAPI, Request
from fastapi import params as fastapi_params
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from skysearch.retrieval.service.service import SearchService
from starlette.exceptions import HTTPException as StarletteHTTPException

from skysearch.errors import (
    CheckpointError,
    DamagedError,
    NotFoundError,
    SkySearchError,
    StoreError,
)

log = logging.getLogger("skysearch.service")


def _status(exc: SkySearchError) -> int:
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, (StoreError, CheckpointError)):  # a served model's files: not the request
        return 503
    return 400  # UsageError and any other expected error


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "request"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def _json_type(content_type: str) -> bool:
    """A content type FastAPI reads JSON from (application/json or application/*+json)."""
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or (
        kind.startswith("application/") and kind.endswith("+json")
    )


def _body_fields(request: Request) -> set[str]:
    """The fields of the JSON body the request's route reads, a filter as ``filters.NAME``
    (none: a form)."""
    body = getattr(request.scope.get("route"), "body_field", None)
    model = getattr(getattr(body, "field_info", None), "annotation", None)
    fields = set(getattr(model, "model_fields", {}))
    if "filters" in fields:
        nested = model.model_fields["filters"].annotation  # type: ignore[union-attr]
        fields |= {f"filters.{name}" for name in getattr(nested, "model_fields", {})}
    return fields


def _field_name(fields: set[str], param: str) -> str:
    """A library parameter (``SkySearchError.params``) as the request spells it: a filter is
    ``filters.NAME``, and a list has the plural name (``channel`` is ``channels`` in a clip
    search's body, ``event`` is ``filters.events``)."""
    for name in (param, f"filters.{param}", f"{param}s", f"filters.{param}s"):
        if name in fields:
            return name
    return param


def _takes_json(request: Request) -> bool:
    """Whether the request's route reads a JSON body (not a multipart form)."""
    body = getattr(request.scope.get("route"), "body_field", None)
    return body is not None and not isinstance(body.field_info, fastapi_params.Form)


def install_error_handlers(app: FastAPI, service: SearchService) -> None:
    @app.exception_handler(SkySearchError)
    async def expected(request: Request, exc: SkySearchError) -> JSONResponse:
        if isinstance(exc, DamagedError):
            service.note_damage(exc)  # /ready says so until it is repaired
        detail = exc.render(partial(_field_name, _body_fields(request)))
        return JSONResponse({"detail": detail}, status_code=_status(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_message(exc)
        kind = request.headers.get("content-type", "")
        whole_body = [tuple(e.get("loc", ())) for e in exc.errors()[:1]] == [("body",)]
        if whole_body and _takes_json(request) and not _json_type(kind):  # FastAPI read none
            detail = (
                "request: send the body as JSON, with the header content-type: application/json "
                f"(it came as {kind or 'no content-type'})"
            )
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            {"detail": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": "internal error (logged by the service)"}, 500)
