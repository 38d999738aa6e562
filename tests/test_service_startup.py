"""The search service's start-up and readiness: a workspace served twice, a store that stops
answering, the ``serve`` command end to end (the shared service of ``service_env``)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from service_env import (
    API_KEY,
    QUERY_AT,
    free_port,
    serve,
)

from skysearch.client import Filters, ServiceUnreachable, SkySearchClient


# ---- start-up and readiness ---------------------------------------------------------------
def test_second_service_on_a_served_workspace_fails_clearly(served_ws, served_url):
    """Another service on a workspace this one serves: failed, naming the lock, and /ready's
    503 is a ReadinessBody (before: "service ready" with nothing searchable, and an error
    body where the document declares a ReadinessBody)."""
    from skysearch.retrieval.service.app import create_app
    from skysearch.retrieval.service.responses import ReadinessBody
    from skysearch.retrieval.service.service import SearchService

    from skysearch.config import load_settings

    second = SearchService(load_settings(workspace=served_ws.root), torch_threads=None)
    second.start(background=False)  # `served_url`: the shared service holds the store already
    try:
        response = httpx.get(serve(create_app(second)) + "/ready")
    finally:
        second.close()
    assert response.status_code == 503
    body = response.json()
    assert set(body) == set(ReadinessBody.model_fields) and ReadinessBody(**body)
    assert (body["ready"], body["state"]) == (False, "failed")
    assert "is in use by another process" in body["detail"] and body["collections"] == {}


def test_ready_reports_a_store_that_stopped_answering(sky, served_ws, monkeypatch):
    from service_env import service

    from skysearch.errors import StoreError

    def unreachable():
        raise StoreError("cannot reach the Qdrant server at http://qdrant:6333")

    monkeypatch.setattr(service(served_ws.root), "collections", unreachable)
    state = sky.ready()  # 503 with a ReadinessBody, not an error body
    assert (state.ready, state.state) == (False, "failed")
    assert state.detail == "store unavailable: cannot reach the Qdrant server at http://qdrant:6333"


def _serve_cli(*args: str, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """``skysearch serve ARGS`` as a user runs it: a child process (with the test API key)."""
    cmd = [sys.executable, "-m", "skysearch", "serve", *map(str, args)]
    env = {**os.environ, "SKYSEARCH_API_KEY": API_KEY}
    if wait:
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _one_error_line(run: subprocess.CompletedProcess, *needles: str) -> None:
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr[-2000:]
    assert lines[0].startswith("error: ") and all(n in lines[0] for n in needles), lines[0]


def test_serve_refuses_a_workspace_another_process_serves(served_ws, served_url):
    """`skysearch serve` on a workspace this process serves: one error line, exit 2, at once
    (before: it logged "service ready" and served nothing)."""
    run = _serve_cli("-w", served_ws.root, "--port", free_port())
    _one_error_line(run, "store directory", "is in use by another process")


def test_serve_command_writes_openapi_and_refuses_a_missing_workspace(tmp_path):
    run = _serve_cli("--write-openapi", tmp_path / "openapi.json")
    assert run.returncode == 0, run.stderr[-2000:]
    committed = (Path(__file__).resolve().parent.parent / "openapi.json").read_text()
    assert (tmp_path / "openapi.json").read_text() == committed
    run = _serve_cli("-w", tmp_path / "no-such-workspace", "--port", free_port())
    _one_error_line(run, "workspace", "no-such-workspace", "does not exist")


def test_a_service_ended_by_a_bus_error_says_so_in_its_log(tmp_path):
    """A store file truncated under the running service ends it with SIGBUS at the next search
    of it (the engine memory-maps the vectors; Python cannot catch the signal): it died with
    nothing in its log. Now the log says so, with each thread's stack (the search's names the
    store). The signal is sent here; a real truncation gives the same log."""
    (tmp_path / "ws").mkdir()
    proc = _serve_cli("-w", tmp_path / "ws", "--port", free_port(), wait=False)
    seen = []
    try:
        while not any("Uvicorn running on" in line for line in seen):
            seen.append(proc.stderr.readline())
            assert seen[-1], "".join(seen)  # exited before listening
        os.kill(proc.pid, signal.SIGBUS)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGBUS
    assert "Fatal Python error: Bus error" in stderr and "most recent call first" in stderr


def test_serve_command_end_to_end(served_ws, tmp_path):
    """`skysearch serve -w WS --port P` started by the CLI answers what `skysearch search clip
    --json` printed, then stops on Ctrl-C. On a copy of the workspace (its own store; models
    linked), as the shared service holds the original's store."""
    copy = tmp_path / "ws"
    shutil.copytree(served_ws.root, copy, ignore=shutil.ignore_patterns("models"))
    (copy / "models").symlink_to(served_ws.root / "models")
    port = free_port()
    proc = _serve_cli("-w", copy, "--port", port, wait=False)
    try:
        with SkySearchClient(f"http://127.0.0.1:{port}", api_key=API_KEY) as client:
            deadline = time.monotonic() + 120
            while True:  # listening?
                try:
                    assert client.health()["status"] == "ok"
                    break
                except ServiceUnreachable:
                    assert proc.poll() is None and time.monotonic() < deadline, "not listening"
                    time.sleep(0.2)
            state = client.wait_ready(timeout=300)
            assert state.collections == {"clips": 44, "frames": 60, "scenes": 84}
            result = client.search_clip(
                at=QUERY_AT, channels=["ir"], k=5, filters=Filters(channels=["ir"])
            )
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    got, want = result.to_json(), dict(served_ws.cli_clip_json)
    scores = []  # cosines, equal to float rounding (one torch thread here)
    for answer in (got, want):
        answer.pop("timing_ms")
        scores.append([(h.pop("score"), h.pop("vector_score")) for h in answer["results"]])
    assert got == want
    assert np.allclose(scores[0], scores[1], atol=1e-5)
    assert proc.returncode == 0, stderr[-2000:]
    assert f"serving {copy} on http://127.0.0.1:{port}" in stderr and "service ready" in stderr
    assert "Traceback" not in stderr
