"""HEAD and OPTIONS for every route: FastAPI's routes answer both with 405.

HEAD runs the GET route and drops the body (same status and headers, Content-Length
included), so a client or monitor can check a thumbnail or ``/health`` without the bytes.
OPTIONS answers 204 with ``Allow``: the methods the path takes. Pure ASGI, inside the API-key
gate: HEAD needs the key where GET does.
"""

from __future__ import annotations

from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def allowed_methods(app: ASGIApp, scope: Scope) -> set[str]:
    """The methods the routes of ``app`` (a Starlette app) take at ``scope``'s path."""
    out: set[str] = set()
    for route in app.router.routes:  # type: ignore[attr-defined]
        match, _ = route.matches({**scope, "method": "GET"})
        if match == Match.NONE:
            continue
        methods = getattr(route, "methods", None)
        if methods is None:  # a mount (the page's static files)
            return {"GET", "HEAD", "OPTIONS"}
        out |= set(methods)
    if "GET" in out:
        out.add("HEAD")
    return out | {"OPTIONS"} if out else out


class HeadAndOptions:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope.get("method") if scope["type"] == "http" else None
        if method == "HEAD":
            await self.app({**scope, "method": "GET"}, receive, _without_body(send))
        elif method == "OPTIONS" and (methods := allowed_methods(scope["app"], scope)):
            allow = ", ".join(sorted(methods)).encode()
            await send(
                {"type": "http.response.start", "status": 204, "headers": [(b"allow", allow)]}
            )
            await send({"type": "http.response.body", "body": b""})
        else:
            await self.app(scope, receive, send)


def _without_body(send: Send) -> Send:
    async def send_head(message: Message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head
