"""A small real workspace and ONE running search service, shared by the service test modules.

Built once per test session (``functools.cache``: the embedded store can be open once per
process, so every module of a process must share the same service): the bundled GOES-East Irma
sample (ingest, 6x60m clips, one-epoch frame and clip encoders, indexed clips) and the RSSCN7 mini
sample (a two-step text-image fine-tune, indexed scenes). Before the service starts, the CLI's
``search clip --json`` answers are recorded, so tests can compare the service's JSON with them.
"""

from __future__ import annotations

import atexit
import functools
import io
import json
import os
import socket
import struct
import threading
import time
import zlib
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"
API_KEY = "test-key-0123456789"
QUERY_AT = "2017-09-07T00:45Z"
CLI_JSON = "cli-search-clip.json"
CLIP_FRAMES = 6  # frames per clip of the service workspace
GOES = SAMPLE / "goes-irma-2017" / "infrared"
SCENES = SAMPLE / "rsscn7-mini"


def _cli(*args: str) -> str:
    """Run ``skysearch ARGS`` in-process; its stdout (stops the session on failure)."""
    from skysearch.cli.app import main

    out = io.StringIO()
    with redirect_stdout(out):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise RuntimeError(f"skysearch {' '.join(args)} failed ({exc.code})") from None
    return out.getvalue()


@dataclass(frozen=True)
class Workspace:
    root: Path
    cli_clip_text: str  # `skysearch search clip --at QUERY_AT --channel ir --k 5 --json`

    @property
    def cli_clip_json(self) -> dict:
        """The CLI's answer, parsed afresh: a test may change its copy."""
        return json.loads(self.cli_clip_text)


@functools.cache
def build_workspace(root: Path) -> Workspace:
    """Build the workspace under ``root``, or under ``$SKYSEARCH_SERVICE_TEST_WS`` and reuse it
    there if already built (developer loop: build once, re-run the tests fast)."""
    root = Path(os.environ.get("SKYSEARCH_SERVICE_TEST_WS") or root)
    if (root / CLI_JSON).is_file():
        return Workspace(root, (root / CLI_JSON).read_text())
    ws = ["-w", str(root)]
    _cli("ingest", SAMPLE / "goes-irma-2017", *ws)
    _cli("clips", "--length", str(CLIP_FRAMES), "--gap", "60", *ws)
    _cli("train", "frames", "--epochs", "1", "--device", "cpu", *ws)
    _cli("train", "clips", "--epochs", "1", "--device", "cpu", *ws)
    _cli("index", "clips", "--device", "cpu", "--workers", "0", *ws)
    _cli("index", "frames", "--device", "cpu", "--workers", "0", *ws)
    images = SAMPLE / "rsscn7-mini"
    _cli("train", "text-image", "--images", images, "--epochs", "1", "--max-steps", "2", *ws)
    _cli("index", "scenes", images, *ws)
    out = _cli("search", "clip", "--at", QUERY_AT, "--channel", "ir", "--k", "5", "--json", *ws)
    (root / CLI_JSON).write_text(out.strip().splitlines()[-1])
    return Workspace(root, (root / CLI_JSON).read_text())


def shared_workspace(tmp_path_factory) -> Workspace:
    """The session's service workspace (one per test process, whichever module asks first).
    Under pytest-xdist the workers build it once, under a file lock in the session's folder
    above theirs (or in ``$SKYSEARCH_SERVICE_TEST_WS``), and each serves its own copy (the
    embedded store serves one process)."""
    mine = tmp_path_factory.getbasetemp() / "service-ws"
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build_workspace(mine)
    return _copy_of_the_sessions(mine)


@functools.cache
def _copy_of_the_sessions(mine: Path) -> Workspace:
    import fcntl
    import shutil

    built = Path(os.environ.get("SKYSEARCH_SERVICE_TEST_WS") or mine.parent.parent / "service-ws")
    built.parent.mkdir(parents=True, exist_ok=True)
    with open(built.parent / f".{built.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first worker builds, the others wait for it
        try:
            shared = build_workspace(built)
        except BaseException:
            if not (built / CLI_JSON).is_file():  # half built: the next worker starts afresh
                shutil.rmtree(built, ignore_errors=True)
            raise
    shutil.copytree(built, mine, ignore=shutil.ignore_patterns(".*owner"))
    return Workspace(mine, shared.cli_clip_text)


@functools.cache
def service(root: Path):
    """The started, ready SearchService over the workspace (closed at exit)."""
    from skysearch.retrieval.service.service import SearchService

    from skysearch.config import load_settings

    svc = SearchService(load_settings(workspace=root), torch_threads=None)  # leave torch be
    svc.start(background=False)
    state = svc.readiness()
    if not state.ready:
        raise RuntimeError(f"service did not load: {state.detail}")
    atexit.register(svc.close)
    return svc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(app) -> str:
    """``app`` served by a real uvicorn server on a free loopback port, in a daemon thread
    (stopped at exit); its URL. The socket is bound here and handed over, so no other test
    process can take the port in between."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)

    def stop() -> None:
        srv.should_exit = True
        thread.join(10)

    atexit.register(stop)
    return f"http://127.0.0.1:{port}"


@functools.cache
def server(root: Path, api_key: str | None = API_KEY) -> str:
    """The shared service served over loopback (one server per API key); its URL."""
    from skysearch.retrieval.service.app import create_app

    return serve(create_app(service(root), api_key=api_key))


def png_declaring(width: int, height: int, idat: bytes, color_type: int = 0) -> bytes:
    """A PNG file stating ``width`` x ``height`` (8-bit grey, or ``color_type`` 6: RGBA) in
    its header, around ``idat`` (compressed scanlines, or anything: a forged upload)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def api_error(call, *args, **kwargs):
    """The ``ApiError`` that ``call(*args, **kwargs)`` must raise."""
    import pytest

    from skysearch.client import ApiError

    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value
