"""Property-based fuzzing of the HTTP API from its OpenAPI schema (schemathesis).

In-process (ASGI): every operation gets schema-valid requests (positive) and schema-violating
ones (negative) against the real service over the shared small workspace. Checks: no 5xx,
status codes and content types the schema declares, response bodies valid against the
schema, and invalid requests rejected with a 4xx. Bounded (``MAX_EXAMPLES`` per operation and
mode, derandomized) so it runs in CI in about a minute.

From outside (:func:`test_outside_fuzzer_against_a_live_server`): the schemathesis CLI, as an
outside tester runs it, against the shared service served by uvicorn on loopback: every
check (``--checks all``: also schema-valid requests accepted, auth enforced, missing headers
refused), every phase (examples, coverage, fuzzing, stateful), positive and negative modes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from service_env import API_KEY, server, service, shared_workspace

REPO = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = 15
#: Examples per operation and phase of the live run (derandomized: the same requests each run).
LIVE_MAX_EXAMPLES = 5
_PATHS = json.loads((REPO / "openapi.json").read_text())["paths"]
#: (method, path, mode); an operation without inputs has no invalid request to make.
CASES = [
    (method.upper(), path, mode)
    for path, item in _PATHS.items()
    for method, op in item.items()
    for mode in ("positive", "negative")
    if mode == "positive" or op.get("parameters") or op.get("requestBody")
]


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    import schemathesis
    from skysearch.retrieval.service.app import create_app

    ws = shared_workspace(tmp_path_factory)
    app = create_app(service(ws.root), api_key=API_KEY)
    return schemathesis.openapi.from_asgi("/openapi.json", app)


def _checks() -> list:
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    return [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]


@pytest.mark.parametrize(("method", "path", "mode"), CASES, ids=[" ".join(c) for c in CASES])
def test_fuzz_operation(api_schema, method: str, path: str, mode: str) -> None:
    from schemathesis import GenerationMode

    operation = api_schema[path][method]
    strategy = operation.as_strategy(generation_mode=GenerationMode(mode))
    checks = _checks()
    calls = []

    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case) -> None:
        response = case.call_and_validate(headers={"X-API-Key": API_KEY}, checks=checks)
        calls.append(response.status_code)

    run()
    assert calls, f"no request was generated for {method} {path} ({mode})"
    assert all(code < 500 for code in calls)


def test_outside_fuzzer_against_a_live_server(tmp_path_factory, monkeypatch):
    """Zero failures from ``st run --checks all`` (what found three requests that the document
    declares valid and the server refused: at + clip_id, a null form field with no frames, an
    empty image). Path ids are real catalog ids, so metadata routes answer 200 too;
    ``fuzz_hooks`` puts real images in schema-valid uploads, and the service counts the
    uploads it searched, so the run is known to reach the decoding paths."""
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.clips import read_clips
    from skysearch.retrieval.store.filters import SearchFilters

    from skysearch.config import load_settings

    ws = shared_workspace(tmp_path_factory)
    workspace = load_settings(workspace=ws.root).workspace
    frame_id = read_frames(workspace, columns=["frame_id"])["frame_id"][0].as_py()
    clip_id = read_clips(workspace)["clip_id"][0].as_py()
    svc = service(ws.root)
    scene_id = svc.search_text("a river", SearchFilters(k=1))["results"][0]["id"]
    config = tmp_path_factory.mktemp("schemathesis") / "schemathesis.toml"
    config.write_text(
        f'[parameters]\n"path.frame_id" = "{frame_id}"\n"path.clip_id" = "{clip_id}"\n'
        f'"path.scene_id" = "{scene_id}"\n'
    )
    served = dict.fromkeys(
        [
            "search_image",
            "search_clip_frames",
            "search_clip",
            "search_text",
            "search_frame",
            "search_frame_upload",
        ],
        0,
    )
    for name in served:
        monkeypatch.setattr(svc, name, _counting(getattr(svc, name), served, name))
    url = server(ws.root)
    cmd = [
        *(sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "--no-color"),
        *("run", f"{url}/openapi.json", "--header", f"X-API-Key: {API_KEY}"),
        *("--checks", "all", "--mode", "all", "--phases", "examples,coverage,fuzzing,stateful"),
        *("--max-examples", str(LIVE_MAX_EXAMPLES), "--generation-deterministic"),
        *("--workers", "1", "--suppress-health-check", "all", "--request-timeout", "120"),
    ]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "fuzz_hooks"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO / "tests"), env.get("PYTHONPATH")]))
    run = subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=600, cwd=config.parent
    )
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    for phase in ("Examples", "Coverage", "Fuzzing", "Stateful"):
        assert f"✅ {phase}" in out, out[-3000:]
    assert all(count > 0 for count in served.values()), served


def _counting(method, served: dict, name: str):
    def call(*args, **kwargs):
        result = method(*args, **kwargs)
        served[name] += 1  # only searches that answered
        return result

    return call
