"""``skysearch serve``: the HTTP search service (FastAPI + uvicorn, one process)."""

from __future__ import annotations

import contextlib
import faulthandler
import io
import ipaddress
import logging
import socket
from pathlib import Path
from typing import Annotated

import typer
from skysearch.cli.app import app
from skysearch.cli.options import DeviceOption, WorkspaceOption
from skysearch.cli.output import info

from skysearch.config import load_settings
from skysearch.errors import UsageError


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals; any other name or address is not."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


#: Shortest API key accepted off loopback (bytes, UTF-8): 16 random bytes' worth of hex is 32.
MIN_KEY_BYTES = 16


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to serve beyond loopback without an API key of at least MIN_KEY_BYTES, and
    anywhere with a key no client can send (HTTP strips a header value's outer white space)."""
    if api_key and api_key != api_key.strip():
        raise UsageError(
            "the API key starts or ends with white space, which an HTTP header cannot carry "
            "(every request would be refused): remove it"
        )
    if is_loopback(host):
        return
    if not api_key:
        raise UsageError(
            f"--host {host} is reachable from other machines: set an API key "
            "(SKYSEARCH_API_KEY=... or --api-key) or bind to 127.0.0.1"
        )
    if len(api_key.encode("utf-8")) < MIN_KEY_BYTES:
        raise UsageError(
            f"the API key is {len(api_key.encode('utf-8'))} bytes; off loopback it needs at "
            f"least {MIN_KEY_BYTES} (e.g. SKYSEARCH_API_KEY=$(openssl rand -hex 16))"
        )


def check_listen(host: str, port: int) -> None:
    """Fail in one line, before models load, when the address cannot be bound (a busy port, an
    unknown host name) instead of uvicorn's log lines after start-up."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            probe.bind(address)
    except OSError as exc:  # socket.gaierror included
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror or exc})") from None


@app.command("serve")
def serve_command(
    host: Annotated[str, typer.Option(help="Bind address (loopback needs no API key).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="SKYSEARCH_API_KEY",
            help="Key clients send in the X-API-Key header; required off loopback. "
            "Prefer the SKYSEARCH_API_KEY environment variable (a flag shows in `ps`).",
            show_default=False,
        ),
    ] = None,
    qdrant_url: Annotated[
        str | None,
        typer.Option(
            envvar="QDRANT_URL",
            help="Qdrant server instead of the workspace's embedded store (needed to run "
            "several service processes or hosts).",
            show_default=False,
        ),
    ] = None,
    torch_threads: Annotated[
        int,
        typer.Option(
            help="Torch threads per inference (0: one per CPU this process may use).", min=0
        ),
    ] = 1,
    batch_window_ms: Annotated[
        float,
        typer.Option(
            help="Concurrent text and image queries share one model forward pass; a batch "
            "waits at most this many milliseconds for the queries in flight (0: no batching).",
            min=0,
            max=1000,
        ),
    ] = 10.0,  # the service's BATCH_WINDOW_MS (imported late: it pulls in the models)
    trace_text: Annotated[
        bool,
        typer.Option(
            help="Text queries through a TorchScript trace of the text tower, checked against "
            "it at start-up (same embeddings, ~30% less CPU); off: the eager tower.",
        ),
    ] = True,
    write_openapi: Annotated[
        Path | None,
        typer.Option(help="Write the OpenAPI document to this file and exit (no server)."),
    ] = None,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Serve search over HTTP: text, clip and image search, metadata, thumbnails, and a web
    page at / (search and look at the answers as moving pictures).

    One process with a thread pool (the embedded store allows one process); models and the
    store load once at start-up, GET /ready says when. OpenAPI docs at /docs.

    Example: skysearch serve -w ws --port 8000
    """
    import uvicorn
    from skysearch.retrieval.service.app import create_app
    from skysearch.retrieval.service.service import SearchService

    if write_openapi is not None:
        from skysearch.retrieval.service.app import openapi_json

        try:
            write_openapi.write_text(openapi_json())
        except OSError as exc:
            raise UsageError(f"cannot write {write_openapi}: {exc.strerror}") from None
        info(f"wrote {write_openapi}")
        return
    check_bind(host, api_key)
    from skysearch.encoders.device import resolve_device

    settings = load_settings(workspace=workspace, qdrant_url=qdrant_url, device=device)
    resolve_device(settings.device)  # models load after start-up: a bad value fails here
    if not settings.workspace.root.is_dir():
        raise UsageError(f"workspace {settings.workspace.root} does not exist; pass --workspace")
    check_listen(host, port)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    service_log = logging.getLogger("skysearch.service")
    service_log.addHandler(handler)  # start-up (ready in N s, or why it failed) and 500s
    service_log.setLevel(logging.INFO)
    service_log.propagate = False
    service = SearchService(
        settings,
        torch_threads=torch_threads or None,
        batch_window_ms=batch_window_ms,
        trace_text=trace_text,
    )
    service.open_store()  # a store another process holds: one error line, exit 2
    auth = "API key required (X-API-Key)" if api_key else "no API key (loopback only)"
    info(
        f"serving {settings.workspace.root} on http://{host}:{port} ({auth}): "
        f"web page at http://{host}:{port}/, API docs at /docs"
    )
    # the store's files are memory-mapped: one damaged under the running service ends it with
    # SIGBUS, which Python cannot catch; this at least says so, with each thread's stack
    with contextlib.suppress(AttributeError, ValueError, io.UnsupportedOperation):
        faulthandler.enable()  # (not where stderr has no file descriptor)
    uvicorn.run(
        create_app(service, api_key=api_key),
        host=host,
        port=port,
        workers=1,
        log_level="info",
        access_log=False,
    )
