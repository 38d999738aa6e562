"""A damaged workspace is never served: the service does not report ready (and says which file),
and a clip search with a trained model refuses a damaged frame store instead of ranking from
misread pixels; after ``repair`` the search gives the undamaged answer again. A store
collection that cannot be read takes only its own kind of search out of service."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from service_env import QUERY_AT, SAMPLE, shared_workspace

FRAMES_U8 = Path("frames/goes-east/ir/2017/frames.u8")


def _zero(path: Path) -> None:
    path.write_bytes(bytes(path.stat().st_size))


def test_service_refuses_ready_on_a_damaged_workspace_until_repaired(tmp_path, cli):
    import uvicorn
    from skysearch.retrieval.service.app import create_app
    from skysearch.retrieval.service.service import SearchService

    from skysearch.config import load_settings

    ws = tmp_path / "ws"
    assert cli("ingest", SAMPLE / "goes-irma-2017", "-w", ws, "--workers", "1").exit_code == 0
    _zero(ws / FRAMES_U8)
    svc = SearchService(load_settings(workspace=ws), torch_threads=None)
    svc.start(background=False)
    state = svc.readiness()
    assert not state.ready and str(ws / FRAMES_U8) in state.detail
    config = uvicorn.Config(create_app(svc), host="127.0.0.1", port=0, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=10)
            raise AssertionError("/ready answered 200 on a damaged workspace")
        except urllib.error.HTTPError as exc:
            assert exc.code == 503
            assert str(ws / FRAMES_U8) in exc.read().decode()
        # repaired while it runs: it loads, in the background (it stayed failed until a restart)
        assert cli("repair", "-w", ws).exit_code == 0
        deadline, states = time.monotonic() + 120, []
        while not states or states[-1] != "ready":
            assert time.monotonic() < deadline, states
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=30) as answer:
                    states.append(json.loads(answer.read())["state"])
            except urllib.error.HTTPError as exc:
                states.append(json.loads(exc.read())["state"])
                time.sleep(0.5)
        assert "loading" in states or "starting" in states, states  # not loaded on the request
    finally:
        server.should_exit = True
        thread.join(10)
        svc.close()


def test_clip_search_refuses_a_zeroed_store_and_repair_restores_it(tmp_path_factory, cli):
    shared = shared_workspace(tmp_path_factory)
    ws = tmp_path_factory.mktemp("damaged") / "ws"
    shutil.copytree(shared.root, ws, ignore=shutil.ignore_patterns(".*owner"))
    query = ["search", "clip", "--at", QUERY_AT, "--channel", "ir", "--k", "5", "--json"]
    expected = shared.cli_clip_json["results"]
    assert expected
    _zero(ws / FRAMES_U8)
    refused = cli(*query, "-w", ws)
    assert refused.exit_code == 2 and "Traceback" not in refused.stderr
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and str(ws / FRAMES_U8) in errors[0], refused.stderr
    repaired = cli("repair", "-w", ws, "--json")
    assert repaired.exit_code == 0, repaired.stderr
    assert json.loads(repaired.stdout)["ok"]
    again = cli(*query, "-w", ws)
    assert again.exit_code == 0, again.stderr
    _assert_same_hits(json.loads(again.stdout.strip().splitlines()[-1])["results"], expected)


def _assert_same_hits(got: list[dict], want: list[dict]) -> None:
    """The same hits with the same scores to float rounding: the answer compared with was
    recorded by another process (its own torch thread count), so hits whose scores tie within
    the rounding may trade places."""
    by_id = {hit["id"]: hit for hit in want}
    assert sorted(hit["id"] for hit in got) == sorted(by_id)
    scored = ("rank", "score", "vector_score")
    for hit in got:
        other = by_id[hit["id"]]
        assert abs(hit["score"] - other["score"]) < 1e-5, (hit, other)
        assert {k: v for k, v in hit.items() if k not in scored} == {
            k: v for k, v in other.items() if k not in scored
        }


def test_ready_turns_false_when_a_request_meets_damage_and_true_once_repaired(
    tmp_path_factory,
):
    """/ready reflected start-up only: a file damaged later made searches answer 503 while
    /ready still said ready (a load balancer kept sending traffic). A request that meets a
    damaged file now turns /ready to 503, naming it, until the workspace checks out again."""
    from fastapi.testclient import TestClient
    from skysearch.retrieval.service.app import create_app
    from skysearch.retrieval.service.service import SearchService

    from skysearch.config import load_settings

    shared = shared_workspace(tmp_path_factory)
    ws = tmp_path_factory.mktemp("later") / "ws"
    shutil.copytree(shared.root, ws, ignore=shutil.ignore_patterns(".*owner"))
    svc = SearchService(load_settings(workspace=ws), torch_threads=None)
    svc.start(background=False)
    try:
        client = TestClient(create_app(svc))
        assert client.get("/ready").status_code == 200
        good = (ws / FRAMES_U8).read_bytes()
        _zero(ws / FRAMES_U8)
        assert client.get("/ready").status_code == 200  # nothing has met it yet: no cost
        body = {"at": QUERY_AT, "channels": ["ir"], "rerank": 5, "filters": {"k": 3}}
        refused = client.post("/search/clip", json=body)
        assert refused.status_code == 503 and str(ws / FRAMES_U8) in refused.json()["detail"]
        ready = client.get("/ready")
        assert ready.status_code == 503
        assert not ready.json()["ready"] and str(ws / FRAMES_U8) in ready.json()["detail"]
        (ws / FRAMES_U8).write_bytes(good)  # what repair restores
        assert client.get("/ready").status_code == 200
        assert client.post("/search/clip", json=body).status_code == 200
        # the model registry is read by every search: damaged, it is named the same way
        registry = ws / "models" / "registry.json"
        entries = registry.read_bytes()
        registry.write_bytes(b"\x00garbage")
        refused = client.post("/search/clip", json=body)
        assert refused.status_code == 503 and str(registry) in refused.json()["detail"]
        ready = client.get("/ready")
        assert ready.status_code == 503 and str(registry) in ready.json()["detail"]
        registry.write_bytes(entries)
        assert client.get("/ready").status_code == 200
    finally:
        svc.close()


def test_a_service_restarted_on_a_vector_file_cut_short_serves_the_other_kinds(tmp_path_factory):
    """What the serve guide promises after a SIGBUS and a restart: ready, the clip kind names
    the collection that cannot be read (and repair), clip search is 503 and text search
    answers."""
    from skysearch.retrieval.search import ClipQuery
    from skysearch.retrieval.service.service import SearchService
    from skysearch.retrieval.store.filters import SearchFilters

    from skysearch.config import load_settings
    from skysearch.errors import StoreError

    shared = shared_workspace(tmp_path_factory)
    ws = tmp_path_factory.mktemp("cut-vectors") / "ws"
    shutil.copytree(shared.root, ws, ignore=shutil.ignore_patterns(".*owner"))
    (chunk,) = (ws / "store" / "clips").rglob("vectors/chunk_0.mmap")
    chunk.write_bytes(b"")
    svc = SearchService(load_settings(workspace=ws), torch_threads=None)
    try:
        svc.start(background=False)
        state = svc.readiness()
        assert state.ready, state.detail
        assert str(ws / "store" / "clips") in state.searches["clip"]
        assert "skysearch repair" in state.searches["clip"]
        assert state.searches["text"] == "ok"
        assert svc.search_text("a river", SearchFilters(k=3))["results"]
        try:
            svc.search_clip(ClipQuery(at=QUERY_AT, channels=["ir"]), SearchFilters(k=3))
            raise AssertionError("a clip search read the cut vector file")
        except StoreError as exc:  # -> 503
            assert str(ws / "store" / "clips") in str(exc)
    finally:
        svc.close()


def test_a_damaged_frame_the_checks_do_not_sample_is_served_again_after_repair(
    tmp_path_factory, cli
):
    """A request met a damaged frame row that the start-up checks do not sample (they read
    the first, middle and last rows): /ready said ready again at the next call, and once
    `skysearch repair` had rebuilt the array beside the running service, searches stayed 503
    until a restart (the frame store kept its mapping of the old file)."""
    from fastapi.testclient import TestClient
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.framestore import read_shape
    from skysearch.retrieval.service.app import create_app
    from skysearch.retrieval.service.service import SearchService

    from skysearch.config import Workspace, load_settings
    from skysearch.timeutil import parse_time

    shared = shared_workspace(tmp_path_factory)
    ws = tmp_path_factory.mktemp("row") / "ws"
    shutil.copytree(shared.root, ws, ignore=shutil.ignore_patterns(".*owner"))
    ir = [r for r in read_frames(Workspace(ws)).to_pylist() if r["channel"] == "ir"]
    row = next(r["store_row"] for r in ir if r["time"] == parse_time(QUERY_AT))
    assert row not in {0, len(ir) // 2, len(ir) - 1}  # not one the checks sample
    height, width = read_shape((ws / FRAMES_U8).parent)
    svc = SearchService(load_settings(workspace=ws), torch_threads=None)
    svc.start(background=False)
    try:
        client = TestClient(create_app(svc))
        body = {"at": QUERY_AT, "channels": ["ir"], "rerank": 5, "filters": {"k": 3}}
        good = client.post("/search/clip", json=body)
        assert good.status_code == 200
        with open(ws / FRAMES_U8, "r+b") as handle:
            handle.seek(row * height * width)
            handle.write(bytes(height * width))
        refused = client.post("/search/clip", json=body)
        assert refused.status_code == 503 and f"frame row {row}" in refused.json()["detail"]
        for _ in range(2):  # the sampled checks pass: the damage met stays
            ready = client.get("/ready")
            assert ready.status_code == 503 and f"frame row {row}" in ready.json()["detail"]
        repaired = cli("repair", "-w", ws)
        assert f"repaired {ws / FRAMES_U8}" in repaired.stderr
        assert "Traceback" not in repaired.stderr
        assert client.get("/ready").status_code == 200
        again = client.post("/search/clip", json=body)
        assert again.status_code == 200 and again.json()["results"] == good.json()["results"]
    finally:
        svc.close()
