"""Property-based fuzzing of the HTTP API from its OpenAPI schema (schemathesis, in-process ASGI).

Every operation gets schema-valid requests (positive) and schema-violating ones (negative)
against the real service over the shared small workspace. Checks: no 5xx, status codes and
content types the schema declares, response bodies valid against the schema, and invalid
requests rejected with a 4xx. Bounded (``MAX_EXAMPLES`` per operation and mode, derandomized)
so it runs in CI in about a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from service_env import API_KEY, build_workspace, service

REPO = Path(__file__).resolve().parent.parent
MAX_EXAMPLES = 30
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
    from skysearch.retrieval.http_app import create_app

    ws = build_workspace(tmp_path_factory.getbasetemp() / "service-ws")
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
