"""The web page's files (``static/``: HTML, JS, CSS; no build step) and how the app serves them.

The page is plain files shipped in the package: ``/`` is ``index.html``, ``/static/...`` the
rest. They are public (they hold nothing of the workspace); every call the page makes to the
API carries the key. The Content-Security-Policy lets the page talk to its own origin only, so
a browser refuses any outside request (fonts, CDNs) the page might ever try.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

#: URL prefix (and package folder) of the page's files.
STATIC = "static"
FOLDER = Path(__file__).resolve().parent / STATIC
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def mount_page(app: FastAPI) -> None:
    """Serve the page at ``/`` (in the OpenAPI document, tag ``page``) and ``static/`` at
    ``/static`` (not in the document: files, not API)."""
    app.mount(f"/{STATIC}", StaticFiles(directory=FOLDER), name=STATIC)

    @app.get(
        "/",
        tags=["page"],
        response_class=FileResponse,
        responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}},
    )
    def page() -> FileResponse:
        """The web page: search by clip, frame, upload or text; results as moving pictures
        (no API key needed to load it; it asks for one when the service requires it)."""
        return FileResponse(FOLDER / "index.html", headers=PAGE_HEADERS)
