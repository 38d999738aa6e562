"""Every endpoint of the search service, through the typed client, over real HTTP on loopback.

The service runs in this process (uvicorn in a thread) over a small real workspace built once
per session (``service_env``): GOES-East Irma frames and clips, RSSCN7 scenes, quick models.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
import time
import weakref
import zlib
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from service_env import (
    API_KEY,
    QUERY_AT,
    SAMPLE,
    free_port,
    png_declaring,
    serve,
    server,
    shared_workspace,
)

from skysearch.client import ApiError, Filters, ServiceUnreachable, SkySearchClient
from skysearch.timeutil import parse_time

GOES = SAMPLE / "goes-irma-2017" / "infrared"
SCENES = SAMPLE / "rsscn7-mini"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return shared_workspace(tmp_path_factory)


@pytest.fixture(scope="module")
def url(ws) -> str:
    return server(ws.root)


@pytest.fixture
def sky(url):
    with SkySearchClient(url, api_key=API_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def catalogs(ws):
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.clips import read_clips

    from skysearch.config import load_settings

    workspace = load_settings(workspace=ws.root).workspace
    return read_frames(workspace).to_pylist(), read_clips(workspace).to_pylist(), workspace


def _png(data: bytes) -> np.ndarray:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(Image.open(io.BytesIO(data)))


def _error(call, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args, **kwargs)
    return info.value


# ---- service ----------------------------------------------------------------------------
def test_health_and_readiness(sky, catalogs):
    frames, clips, _ = catalogs
    assert sky.health()["status"] == "ok"
    state = sky.ready()
    assert state.ready and state.state == "ready"
    assert state.searches == {"text": "ok", "clip": "ok", "frame": "ok", "image": "ok"}
    assert state.collections == {"clips": len(clips), "frames": len(frames), "scenes": 84}
    assert state.load_seconds is not None and state.load_seconds > 0


def test_collections_and_sizes(sky, catalogs):
    frames, clips, _ = catalogs
    got = {c.name: c for c in sky.collections()}
    assert set(got) == {"clips", "frames", "scenes"}
    assert got["clips"].points == len(clips) == 44
    assert got["frames"].points == len(frames) == 60
    assert got["scenes"].points == len(list(SCENES.rglob("*.jpg")))
    assert all(dim > 0 for c in got.values() for dim in c.vectors.values())
    assert {c.backend for c in got.values()} == {"embedded"}


# ---- metadata and thumbnails --------------------------------------------------------------
def test_frame_metadata_and_thumbnail(sky, catalogs):
    from skysearch.ingest.framestore import FrameStore

    frames, _, workspace = catalogs
    row = frames[10]
    meta = sky.frame(row["frame_id"])
    assert (meta.satellite, meta.channel) == (row["satellite"], row["channel"])
    assert parse_time(meta.time) == row["time"]
    assert (meta.source_width, meta.source_height) == (row["width"], row["height"])
    pixels = FrameStore(workspace).read(row["frame_id"])
    full = _png(sky.frame_thumbnail(row["frame_id"], size=1024))
    np.testing.assert_array_equal(full, pixels)  # working resolution, unchanged
    small = _png(sky.frame_thumbnail(row["frame_id"], size=64))
    assert max(small.shape) == 64 and small.dtype == np.uint8


def test_clip_metadata_and_thumbnail(sky, catalogs):
    _, clips, _ = catalogs
    row = clips[3]
    meta = sky.clip(row["clip_id"])
    assert meta.channels == ["ir"] and meta.length == 6 and meta.gap_minutes == 60
    assert parse_time(meta.start) == row["start"] and parse_time(meta.end) == row["end"]
    assert meta.frame_ids == row["frame_ids"]
    first = sky.frame(meta.frame_ids[0][0])
    assert first.time == meta.start
    strip = _png(sky.clip_thumbnail(row["clip_id"], size=100))
    tile = _png(sky.frame_thumbnail(meta.frame_ids[0][0], size=100))
    assert strip.shape == (tile.shape[0], 6 * tile.shape[1])
    np.testing.assert_array_equal(strip[:, : tile.shape[1]], tile)


def test_clip_animation_is_a_looping_webp_of_the_clips_frames(sky, url, catalogs):
    _, clips, _ = catalogs
    row = clips[5]
    first = sky.clip_animation(row["clip_id"], size=96)
    image = Image.open(io.BytesIO(first))
    assert image.format == "WEBP" and image.n_frames == 6 and image.info.get("loop") == 0
    tile = _png(sky.frame_thumbnail(row["frame_ids"][0][2], size=96))
    image.seek(2)
    assert image.size == (tile.shape[1], tile.shape[0])  # each frame: the frame's thumbnail
    assert np.abs(np.asarray(image.convert("L"), float) - tile).mean() < 8  # lossy, close
    assert sky.clip_animation(row["clip_id"], size=96) == first  # cached
    path = f"{url}/clips/{row['clip_id']}/animation.webp"
    served = httpx.get(path, headers={"X-API-Key": API_KEY})
    assert served.headers["content-type"] == "image/webp"
    too_big = _error(sky.clip_animation, row["clip_id"], size=513)
    assert too_big.status_code == 422 and "size" in too_big.detail
    missing = "00000000-0000-4000-8000-000000000000"
    assert _error(sky.clip_animation, missing).status_code == 404
    assert httpx.get(path).status_code == 401


def test_archive_says_what_the_catalogs_hold(sky, catalogs):
    frames, clips, _ = catalogs
    got = sky.archive()
    assert (got.frames, got.clips) == (len(frames), len(clips))
    times = sorted(f["time"] for f in frames)
    assert parse_time(got.start) == times[0] and parse_time(got.end) == times[-1]
    assert got.satellites == {"goes-east": ["ir"]}
    assert [s.model_dump() for s in got.clip_specs] == [
        {"satellite": "goes-east", "channels": ["ir"], "length": 6, "gap_minutes": 60, "clips": 44}
    ]
    kinds = {m.kind for m in got.models}
    assert {"frame", "clip", "text-image"} <= kinds
    assert [m.created for m in got.models] == sorted(m.created for m in got.models)


def test_scene_thumbnail_is_the_indexed_image(sky):
    hit = sky.search_text("a river", k=1).results[0]
    thumb = _png(sky.scene_thumbnail(hit.id, size=64))
    source = Image.open(hit.source_path)
    assert max(thumb.shape[:2]) == 64 and thumb.shape[2] == 3
    assert thumb.shape[1] / thumb.shape[0] == pytest.approx(source.width / source.height, 0.05)
    missing = "00000000-0000-4000-8000-000000000000"
    gone = _error(sky.scene_thumbnail, missing)
    assert gone.status_code == 404 and missing in gone.detail


def test_the_page_and_its_files_are_public_and_same_origin_only(url):
    page = httpx.get(f"{url}/")  # no key: the page asks for it
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="/static/app.js"' in page.text
    texts = [page.text]
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        got = httpx.get(f"{url}/static/{name}")
        assert got.status_code == 200 and kind in got.headers["content-type"]
        texts.append(got.text)
    assert not [t for t in texts if "http://" in t or "https://" in t or "@import" in t]
    assert httpx.get(f"{url}/static/%2e%2e/app.py").status_code == 404
    assert httpx.get(f"{url}/archive").status_code == 401  # the API still needs the key


def test_a_model_of_another_kind_is_not_found(sky):
    """Found by the outside fuzzer once /archive listed model ids: a frame model's id given to
    text search was a 400 (a schema-valid request refused); there is no such text-image model."""
    frame_model = next(m.model_id for m in sky.archive().models if m.kind == "frame")
    err = _error(sky.search_text, "a river", k=1, model_id=frame_model)
    assert err.status_code == 404 and "is a frame model, not a text-image model" in err.detail


def test_unknown_and_malformed_ids(sky, url):
    missing = "00000000-0000-4000-8000-000000000000"
    for call in (sky.frame, sky.clip, sky.frame_thumbnail, sky.clip_thumbnail):
        err = _error(call, missing)
        assert err.status_code == 404 and missing in err.detail
    assert _error(sky.frame, "not-a-uuid").status_code == 422
    assert _error(sky.frame_thumbnail, missing, size=5000).status_code == 422
    headers = {"X-API-Key": API_KEY}
    for path in ("/frames/..%2F..%2Fetc%2Fpasswd", "/clips/../../etc/passwd", "/frames/%00"):
        response = httpx.get(url + path, headers=headers)
        assert response.status_code in (404, 422), path
        assert "root:" not in response.text


# ---- searches -----------------------------------------------------------------------------
def test_search_text(sky):
    result = sky.search_text("a river next to green fields", k=5)
    assert result.schema == "skysearch.search/1"
    assert result.query["kind"] == "text" and result.query["model_id"].startswith("text-image")
    assert [h.rank for h in result.results] == [1, 2, 3, 4, 5]
    scores = [h.score for h in result.results]
    assert scores == sorted(scores, reverse=True)
    assert {h.kind for h in result.results} == {"scene"}
    assert all(h.label and Path(h.source_path).parent.name == h.label for h in result.results)
    assert result.filters["k"] == 5 and "total" in result.timing_ms


def test_search_image_upload_finds_itself(sky):
    query = sorted((SCENES / "gParking").glob("*.jpg"))[2]
    result = sky.search_image(query, k=3)
    assert result.query == {
        "kind": "image",
        "image": query.name,
        "images": [query.name],
        **{"model_id": result.query["model_id"]},
    }
    top = result.results[0]
    assert Path(top.source_path).name == query.name and top.score == pytest.approx(1.0, abs=1e-4)


def test_search_image_several_uploads_words_and_filters(sky):
    """More like these over HTTP: several uploads + words in one query, scene filters apply."""
    a, b = sorted((SCENES / "eForest").glob("*.jpg"))[:2]
    result = sky.search_image(
        [a, b.read_bytes()], k=4, text="dense trees", filters=Filters(labels=["eForest", "aGrass"])
    )
    assert result.query["images"] == [a.name, "image1"] and result.query["text"] == "dense trees"
    assert len(result.results) == 4 and {h.label for h in result.results} <= {"eForest", "aGrass"}
    assert result.filters["labels"] == ["eForest", "aGrass"] and result.filters["bbox"] is None
    err = _error(sky.search_image, [a] * 17)
    assert err.status_code == 422 and "at most 16 items" in err.detail  # the schema's bound


def test_search_clip_same_json_as_cli(sky, ws):
    """The service answers exactly what `skysearch search clip --json` printed."""
    result = sky.search_clip(at=QUERY_AT, channels=["ir"], k=5, filters=Filters(channels=["ir"]))
    got, want = result.to_json(), dict(ws.cli_clip_json)
    got.pop("timing_ms")
    want.pop("timing_ms")
    assert got == want
    assert result.results[0].start == "2017-09-07T00:45:00Z"  # the query clip itself
    # the same hits as an Arrow table / DataFrame: times are UTC timestamps
    table = result.to_arrow()
    assert table["id"].to_pylist() == [r["id"] for r in want["results"]]
    assert table["start"][0].as_py() == datetime(2017, 9, 7, 0, 45, tzinfo=timezone.utc)
    frame = result.to_pandas()
    assert list(frame["rank"]) == [1, 2, 3, 4, 5] and str(frame["start"].dt.tz) == "UTC"
    # integer columns keep one type with or without values (no track here: all missing)
    from skysearch.retrieval.search.results import results_frame

    assert str(frame["track_class"].dtype) == str(results_frame([])["track_class"].dtype)
    assert str(frame["track_class"].dtype) == "Int32" and frame["track_class"].isna().all()


def test_search_clip_by_id_with_filters(sky, catalogs):
    _, clips, _ = catalogs
    query = clips[20]
    start = query["start"]
    window = Filters(exclude_window_s=6 * 3600)
    result = sky.search_clip(clip_id=query["clip_id"], k=10, filters=window)
    assert result.query["mode"] == "clip_id" and result.query["clip_id"] == query["clip_id"]
    assert len(result.results) == 10
    assert all(abs(parse_time(h.start) - start) > timedelta(hours=6) for h in result.results)
    assert result.filters["exclude_around"] is not None

    daily = sky.search_clip(clip_id=query["clip_id"], k=5, filters=Filters(one_per_day=True))
    days = [h.start[:10] for h in daily.results]
    assert len(days) == len(set(days)) == len({c["start"].date() for c in clips})

    sept7 = Filters(start="2017-09-07T00:00Z", end="2017-09-07T23:59Z", hours=[3, 4, 5])
    ranged = sky.search_clip(clip_id=query["clip_id"], k=20, filters=sept7)
    assert ranged.results and all(
        h.start.startswith("2017-09-07T0") and parse_time(h.start).hour in (3, 4, 5)
        for h in ranged.results
    )
    assert sky.search_clip(clip_id=query["clip_id"], filters=Filters(months=[1])).results == []


def test_an_end_date_alone_takes_in_that_whole_day(sky, url, catalogs):
    """``end: "2017-09-07"`` is the whole of 7 September (as the CLI's --between), through the
    typed client and in a raw JSON body."""
    _, clips, _ = catalogs
    clip_id = clips[20]["clip_id"]
    explicit = Filters(start="2017-09-07T00:00Z", end="2017-09-07T23:59:59Z")
    expected = [h.id for h in sky.search_clip(clip_id=clip_id, k=30, filters=explicit).results]
    by_date = Filters(start="2017-09-07", end="2017-09-07")
    got = [h.id for h in sky.search_clip(clip_id=clip_id, k=30, filters=by_date).results]
    assert len(expected) > 1 and got == expected
    body = {"clip_id": clip_id, "filters": {"start": "2017-09-07", "end": "2017-09-07", "k": 30}}
    with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}) as http:
        raw = http.post("/search/clip", json=body)
    assert raw.status_code == 200 and [h["id"] for h in raw.json()["results"]] == expected
    assert raw.json()["filters"]["end"] == "2017-09-07T23:59:59Z"


def test_search_clip_rerank_is_the_grid_metric_order(sky, ws, cli):
    """The top 10 by vector, re-ordered by the ground-truth grid similarity: each hit's score
    is what `skysearch similarity QUERY HIT` says, best first."""
    import json

    plain = sky.search_clip(at=QUERY_AT, channels=["ir"], k=10)
    result = sky.search_clip(at=QUERY_AT, channels=["ir"], k=10, rerank=10)
    assert result.query["ranked_by"] == "rerank" and plain.query["ranked_by"] == "vector"
    assert sorted(h.id for h in result.results) == sorted(h.id for h in plain.results)
    vector = {h.id: h.score for h in plain.results}
    query_id = plain.results[0].id  # the query clip itself, found first
    assert plain.results[0].start == "2017-09-07T00:45:00Z"
    metric = {}
    for hit in result.results:
        r = cli("similarity", query_id, hit.id, "--json", "-w", ws.root)
        assert r.exit_code == 0, r.stderr
        metric[hit.id] = json.loads(r.stdout.strip().splitlines()[-1])["similarity"]
        assert hit.rerank_score == hit.score == pytest.approx(metric[hit.id], abs=1e-6)
        assert hit.vector_score == pytest.approx(vector[hit.id], abs=1e-6)
    scores = [h.score for h in result.results]
    assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0)
    assert [h.rank for h in result.results] == list(range(1, 11))
    by_metric = sorted(metric, key=lambda i: -metric[i])
    assert [h.id for h in result.results] == by_metric
    assert by_metric != [h.id for h in plain.results]  # the re-rank changed the order


def test_search_clip_by_uploaded_frames(sky):
    files = sorted(GOES.glob("HUIR17250*45.GIF"))[3:9]  # 2017-09-07 03:45..08:45, hourly
    result = sky.search_clip_frames(files, channel="ir", gap_minutes=60, k=3)
    assert result.query["mode"] == "frames"
    assert result.query["files"] == [f.name for f in files]
    top = result.results[0]
    assert top.start == "2017-09-07T03:45:00Z" and top.score == pytest.approx(1.0, abs=1e-4)
    # as the CLI reads query files: in the order of the times in their names, which then
    # give the query its start (so exclude_window applies)
    again = sky.search_clip_frames(files[::-1], channel="ir", gap_minutes=60, k=3)
    assert again.query["files"] == [f.name for f in files]
    assert again.query["start"] == "2017-09-07T03:45:00Z"
    assert [h.id for h in again.results] == [h.id for h in result.results]
    away = Filters(exclude_window_s=3600)
    assert sky.search_clip_frames(files, channel="ir", gap_minutes=60, filters=away).results
    err = _error(sky.search_clip_frames, [files[0]] * 6, channel="ir", gap_minutes=60)
    assert err.status_code == 400
    assert f"upload 1 ('{files[0].name}') and upload 2 ('{files[0].name}') are the same file" in (
        err.detail
    )
    # one frame sent twice among 6 (so 5 steps): the repeat is named, not a missing model
    err = _error(sky.search_clip_frames, [*files[:5], files[2]], channel="ir", gap_minutes=60)
    assert err.status_code == 400 and "upload 3" in err.detail and "upload 6" in err.detail


def test_search_frame_by_time_and_id_with_filters(sky, catalogs):
    """A frame found by time finds itself first; by its id with filters, every hit obeys
    them."""
    result = sky.search_frame(at=QUERY_AT, channel="ir", k=5)
    assert result.query["kind"] == "frame" and result.query["mode"] == "at"
    top = result.results[0]
    assert top.kind == "frame" and top.start == "2017-09-07T00:45:00Z"
    assert top.frame_ids == [top.id] == [result.query["frame_id"]]
    assert top.score == pytest.approx(1.0, abs=1e-3)
    scores = [h.score for h in result.results]
    assert scores == sorted(scores, reverse=True) and len(scores) == 5

    at = parse_time(top.start)
    window = sky.search_frame(frame_id=top.id, k=10, filters=Filters(exclude_window_s=6 * 3600))
    assert window.query["mode"] == "frame_id" and len(window.results) == 10
    assert all(abs(parse_time(h.start) - at) > timedelta(hours=6) for h in window.results)
    daily = sky.search_frame(frame_id=top.id, k=5, filters=Filters(one_per_day=True))
    days = [h.start[:10] for h in daily.results]
    assert len(days) == len(set(days)) == 3
    hours = sky.search_frame(frame_id=top.id, k=20, filters=Filters(hours=[3, 4, 5]))
    assert hours.results and all(parse_time(h.start).hour in (3, 4, 5) for h in hours.results)
    assert sky.search_frame(frame_id=top.id, filters=Filters(months=[1])).results == []
    missing = _error(sky.search_frame, at="2016-01-01T00:00:00Z", channel="ir")
    assert missing.status_code == 404 and "no goes-east ir frame within" in missing.detail


def test_search_frame_upload_finds_its_archive_twin_by_the_grid_metric(sky, catalogs):
    """An uploaded raw GIF of an archive frame: its twin first with grid similarity 1.0; every
    re-ranked score is the grid metric of the two frames (brute force over stored sketches)."""
    from skysearch.ingest.similarity import SketchStore, frame_similarity

    _, _, workspace = catalogs
    path = GOES / "HUIR172500045.GIF"
    result = sky.search_frame_upload(path, k=5, rerank=10)
    assert result.query["files"] == [path.name] and result.query["mode"] == "pixels"
    assert result.query["start"] == "2017-09-07T00:45:00Z"
    assert result.query["ranked_by"] == "rerank"
    twin = result.results[0]
    assert twin.start == "2017-09-07T00:45:00Z" and twin.score == pytest.approx(1.0)
    sketches, sizes = SketchStore(workspace).get_many([h.id for h in result.results])
    for hit, sketch in zip(result.results, sketches, strict=True):
        assert hit.rerank_score == hit.score
        assert hit.score == pytest.approx(frame_similarity(sketches[0], sketch, sizes), abs=1e-9)
    scores = [h.score for h in result.results]
    assert scores == sorted(scores, reverse=True)
    bad = _error(sky.search_frame_upload, ("x.png", b"<html>"), k=3)
    assert bad.status_code == 400 and "not a PNG, JPEG or GIF" in bad.detail


# ---- start-up and readiness ---------------------------------------------------------------
def test_second_service_on_a_served_workspace_fails_clearly(ws, url):
    """Another service on a workspace this one serves: failed, naming the lock, and /ready's
    503 is a ReadinessBody (before: "service ready" with nothing searchable, and an error
    body where the document declares a ReadinessBody)."""
    from skysearch.retrieval.service.app import create_app
    from skysearch.retrieval.service.responses import ReadinessBody
    from skysearch.retrieval.service.service import SearchService

    from skysearch.config import load_settings

    second = SearchService(load_settings(workspace=ws.root), torch_threads=None)
    second.start(background=False)  # `url`: the shared service holds the store already
    try:
        response = httpx.get(serve(create_app(second)) + "/ready")
    finally:
        second.close()
    assert response.status_code == 503
    body = response.json()
    assert set(body) == set(ReadinessBody.model_fields) and ReadinessBody(**body)
    assert (body["ready"], body["state"]) == (False, "failed")
    assert "is in use by another process" in body["detail"] and body["collections"] == {}


def test_ready_reports_a_store_that_stopped_answering(sky, ws, monkeypatch):
    from service_env import service

    from skysearch.errors import StoreError

    def unreachable():
        raise StoreError("cannot reach the Qdrant server at http://qdrant:6333")

    monkeypatch.setattr(service(ws.root), "collections", unreachable)
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


def test_serve_refuses_a_workspace_another_process_serves(ws, url):
    """`skysearch serve` on a workspace this process serves: one error line, exit 2, at once
    (before: it logged "service ready" and served nothing)."""
    run = _serve_cli("-w", ws.root, "--port", free_port())
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


def test_serve_command_end_to_end(ws, tmp_path):
    """`skysearch serve -w WS --port P` started by the CLI answers what `skysearch search clip
    --json` printed, then stops on Ctrl-C. On a copy of the workspace (its own store; models
    linked), as the shared service holds the original's store."""
    copy = tmp_path / "ws"
    shutil.copytree(ws.root, copy, ignore=shutil.ignore_patterns("models"))
    (copy / "models").symlink_to(ws.root / "models")
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
    got, want = result.to_json(), dict(ws.cli_clip_json)
    scores = []  # cosines, equal to float rounding (one torch thread here)
    for answer in (got, want):
        answer.pop("timing_ms")
        scores.append([(h.pop("score"), h.pop("vector_score")) for h in answer["results"]])
    assert got == want
    assert np.allclose(scores[0], scores[1], atol=1e-5)
    assert proc.returncode == 0, stderr[-2000:]
    assert f"serving {copy} on http://127.0.0.1:{port}" in stderr and "service ready" in stderr
    assert "Traceback" not in stderr


# ---- auth ---------------------------------------------------------------------------------
def test_api_key_required(url, catalogs):
    frames, clips, _ = catalogs
    for key in (None, "wrong-key", API_KEY + "x"):
        with SkySearchClient(url, api_key=key) as anon:
            assert anon.health()["status"] == "ok"  # liveness only
            calls = [
                lambda c: c.ready(),
                lambda c: c.collections(),
                lambda c: c.frame(frames[0]["frame_id"]),
                lambda c: c.frame_thumbnail(frames[0]["frame_id"]),
                lambda c: c.clip(clips[0]["clip_id"]),
                lambda c: c.clip_thumbnail(clips[0]["clip_id"]),
                lambda c: c.search_text("river"),
                lambda c: c.search_clip(at=QUERY_AT),
                lambda c: c.search_image(next(SCENES.rglob("*.jpg"))),
                lambda c: c.search_clip_frames(sorted(GOES.glob("*.GIF"))[:6]),
                lambda c: c.search_frame(at=QUERY_AT),
                lambda c: c.search_frame_upload(sorted(GOES.glob("*.GIF"))[0]),
            ]
            for call in calls:
                err = _error(call, anon)
                assert err.status_code == 401 and "X-API-Key" in err.detail


def test_non_ascii_api_key(ws, catalogs):
    """A UTF-8 key matches byte for byte (before: the server compared latin-1-decoded header
    text with the key, so a non-ASCII key never matched; the client could not send one)."""
    key = "clé-d'accès-ключ-0123"
    with SkySearchClient(server(ws.root, api_key=key), api_key=key) as client:
        assert [c.name for c in client.collections()] == ["clips", "frames", "scenes"]
        assert client.ready().ready
    with SkySearchClient(server(ws.root, api_key=key), api_key="clé-d'accès-ключ-0124") as bad:
        assert _error(bad.collections).status_code == 401
    with SkySearchClient(server(ws.root, api_key=key), api_key=None) as anon:
        assert _error(anon.collections).status_code == 401


# ---- bad requests: 4xx with a clear message, never a 5xx ---------------------------------
def _distinct(upload: tuple[str, bytes], n: int) -> list[tuple[str, bytes]]:
    """``n`` uploads of one file, each with its own bytes (trailing zeros, which the image
    decoders ignore), so none is refused as a repeat of another."""
    name, data = upload
    return [(name, data + b"\0" * i) for i in range(n)]


def test_bad_uploads(sky):
    html = GOES / "HUIR172502115.GIF"  # a real HTML error page saved upstream as .GIF
    cases = {
        "not a PNG, JPEG or GIF": ("page.gif", html.read_bytes()),
        "is empty": ("empty.png", b""),
        "is 5000x5000 pixels; the limit is 4096": ("big.png", png_declaring(5000, 5000, b"")),
        "is a decompression bomb": ("bomb.png", png_declaring(50000, 50000, b"")),
        "cannot decode": ("cut.png", png_declaring(720, 480, zlib.compress(bytes(721 * 480))[:20])),
        "than the limit of 8388608 bytes": ("huge.png", b"\x89PNG\r\n\x1a\n" + bytes(8388609)),
        "cannot read the JPEG header": ("bad.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF"),
        "cannot read the PNG header": ("header.png", png_declaring(64, 64, b"")[:30]),
    }
    for expected, upload in cases.items():
        err = _error(sky.search_image, upload)
        assert err.status_code == 400 and expected in err.detail, (expected, err.detail)
        six = _distinct(upload, 6)
        err = _error(sky.search_clip_frames, six, channel="ir", gap_minutes=60)
        assert err.status_code == 400 and expected in err.detail, (expected, err.detail)
    scene = next(SCENES.rglob("*.jpg"))  # a valid image, but not a GOES sector frame
    six = _distinct((scene.name, scene.read_bytes()), 6)
    err = _error(sky.search_clip_frames, six, channel="ir", gap_minutes=60)
    assert err.status_code == 400 and "wrong dimensions" in err.detail
    assert f"upload 1 ('{scene.name}')" in err.detail and "/tmp" not in err.detail
    err = _error(sky.search_clip_frames, [sorted(GOES.glob("*45.GIF"))[0]] * 49)
    assert err.status_code == 422 and "at most 48" in err.detail


class DecodeSpy:
    """Records every image Pillow decodes (``ImageFile.load``) in this process, by weak
    reference, and which earlier decoded images were still alive at each decode."""

    def __init__(self, monkeypatch) -> None:
        from PIL import ImageFile

        self.decoded: list[weakref.ref] = []
        self.alive_at_decode: list[int] = []
        load = ImageFile.ImageFile.load

        def spy(image):
            if image.tile:  # not decoded yet (Pillow calls load() again on every access)
                self.alive_at_decode.append(sum(ref() is not None for ref in self.decoded))
                self.decoded.append(weakref.ref(image))
            return load(image)

        monkeypatch.setattr(ImageFile.ImageFile, "load", spy)


@pytest.fixture(scope="module")
def zero_png_4096() -> bytes:
    """The attack frame of issue 14: ~65 KB of zlib zeros declaring 4096x4096 RGBA."""
    out = io.BytesIO()
    Image.new("RGBA", (4096, 4096)).save(out, format="PNG", compress_level=9)
    assert len(out.getvalue()) < 100_000
    return out.getvalue()


def test_oversized_frames_refused_before_decoding(sky, monkeypatch, zero_png_4096):
    """48 PNGs declaring 4096x4096 RGBA: before the fix each was decoded (64 MB apiece) and
    kept before the clip spec was checked (3 GB extra RSS, then 404). Now refused from the
    spec or the headers, decoding nothing."""
    spy = DecodeSpy(monkeypatch)
    frames = _distinct(("zeros.png", zero_png_4096), 48)
    err = _error(sky.search_clip_frames, frames, channel="ir", gap_minutes=60)
    assert err.status_code == 404 and "no clip model fits" in err.detail
    err = _error(sky.search_clip_frames, frames[:6], satellite="coms", channel="ir")
    assert err.status_code == 404 and "unknown satellite 'coms'" in err.detail
    err = _error(sky.search_clip_frames, frames[:6], channel="ir", gap_minutes=60)
    assert err.status_code == 400
    assert "upload 1 ('zeros.png'): wrong dimensions 4096x4096" in err.detail
    assert "expects 720x480" in err.detail
    assert spy.decoded == []


def test_uploaded_frames_decoded_one_at_a_time(sky, monkeypatch):
    spy = DecodeSpy(monkeypatch)
    files = sorted(GOES.glob("HUIR17250*45.GIF"))[3:9]
    result = sky.search_clip_frames(files, channel="ir", gap_minutes=60, k=1)
    assert result.results[0].start == "2017-09-07T03:45:00Z"
    assert len(spy.decoded) == 6
    assert spy.alive_at_decode == [0] * 6  # each full-size frame dropped before the next


def test_uploaded_frames_never_touch_disk(sky, monkeypatch, tmp_path):
    """The query API takes decoded pixels: the frames route writes no temporary file or
    folder (with a temp dir that cannot be created, one would fail the request)."""
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-such-dir"))
    files = sorted(GOES.glob("HUIR17250*45.GIF"))[3:9]
    assert max(f.stat().st_size for f in files) < 1024 * 1024  # kept in memory by starlette
    result = sky.search_clip_frames(files, channel="ir", gap_minutes=60, k=1)
    assert result.results[0].start == "2017-09-07T03:45:00Z"


def test_request_pixel_budget(sky, ws, monkeypatch):
    """The frames' pixels as their headers state, summed over the request, checked before
    any is decoded."""
    from dataclasses import replace

    from service_env import service

    svc = service(ws.root)
    monkeypatch.setattr(svc, "limits", replace(svc.limits, max_request_pixels=5 * 720 * 480))
    spy = DecodeSpy(monkeypatch)
    files = sorted(GOES.glob("HUIR17250*45.GIF"))[3:9]
    err = _error(sky.search_clip_frames, files, channel="ir", gap_minutes=60)
    assert err.status_code == 400
    assert f"hold {6 * 720 * 480} pixels; the limit is {5 * 720 * 480}" in err.detail
    assert spy.decoded == []


def test_bad_parameters(sky):
    cases = [
        (lambda: sky.search_text("river", k=0), 422, "k"),
        (lambda: sky.search_text("river", k=101), 422, "k"),
        (lambda: sky.search_text(""), 422, "text"),
        (lambda: sky.search_text("   "), 422, "text"),
        (lambda: sky.search_text("x" * 501), 422, "text"),
        (lambda: sky.search_text("river", filters=Filters(months=[13])), 422, "months"),
        (
            lambda: sky.search_text("r", filters=Filters(start="2017-09-08", end="2017-09-07")),
            400,
            "before it starts",
        ),
        (lambda: sky.search_text("r", filters=Filters(start="0001-01-01")), 422, "year"),
        (lambda: sky.search_clip(), 422, "exactly one of at (the query clip's start time)"),
        (
            lambda: sky.search_clip(at=QUERY_AT, clip_id="00000000-0000-4000-8000-000000000000"),
            422,
            "exactly one of at (the query clip's start time) or clip_id",
        ),
        (lambda: sky.search_clip(at="1999-01-01T00:00Z", channels=["ir"]), 404, "outside"),
        (lambda: sky.search_clip(at=QUERY_AT, channels=["vis"]), 404, "unknown channel vis"),
        (lambda: sky.search_clip(at=QUERY_AT, length=12), 404, "no clip model"),
        (lambda: sky.search_clip(at="yesterday"), 422, "at"),
        (lambda: sky.search_clip(at=QUERY_AT, rerank=101), 422, "rerank"),
        (lambda: sky.search_clip(clip_id="00000000-0000-4000-8000-000000000000"), 404, "clip"),
        (lambda: sky.search_text("r", model_id="../../etc/passwd"), 422, "model_id"),
        (lambda: sky.search_text("r", model_id="text-image-nope"), 404, "no text-image model"),
    ]
    for call, status, words in cases:
        err = _error(call)
        assert err.status_code == status and words in err.detail, (status, words, err)


def test_head_is_get_without_the_body_and_options_lists_the_methods(url, catalogs):
    frames, _, _ = catalogs
    thumb = f"/frames/{frames[0]['frame_id']}/thumbnail.png"
    with httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}) as http:
        for path in ("/health", "/", thumb, "/collections"):
            got, head = http.get(path), http.head(path)
            assert (head.status_code, got.status_code) == (200, 200), path
            assert head.content == b"" and got.content, path
            for name in ("content-type", "content-length"):
                assert head.headers[name] == got.headers[name], (path, name)
        assert http.head("/frames/00000000-0000-4000-8000-000000000000").status_code == 404
        expected = {
            "/search/text": "OPTIONS, POST",
            thumb: "GET, HEAD, OPTIONS",
            "/static/app.js": "GET, HEAD, OPTIONS",
        }
        for path, allow in expected.items():
            r = http.options(path)
            assert (r.status_code, r.headers["allow"], r.content) == (204, allow, b""), path
        assert http.options("/no/such/route").status_code == 404
    with httpx.Client(base_url=url) as anon:  # HEAD and OPTIONS need the key where GET does
        assert anon.head(thumb).status_code == 401 and anon.head("/health").status_code == 200
        assert anon.options("/search/text").status_code == 401
        assert anon.options("/").headers["allow"] == "GET, HEAD, OPTIONS"  # the page is public


def test_malformed_bodies(url):
    headers = {"X-API-Key": API_KEY}
    with httpx.Client(base_url=url, headers=headers) as http:
        for body in (b"{", b"[]", b'{"text": 5}', b'{"text": "r", "typo": 1}', b"\xff\xfe"):
            r = http.post(
                "/search/text", content=body, headers={"content-type": "application/json"}
            )
            assert r.status_code == 422 and r.json()["detail"], body
        r = http.post(
            "/search/image",
            content=b"--x\r\n",
            headers={"content-type": "multipart/form-data; boundary=x"},
        )
        assert 400 <= r.status_code < 500
        r = http.post("/search/image", files={"wrong_field": ("a.png", b"1")})
        assert r.status_code == 422 and "image" in r.json()["detail"]
        r = http.delete("/collections")
        assert r.status_code == 405


def test_concurrent_searches_match_sequential_ones(url, catalogs):
    """Searches of every kind at once from many threads: same answers as one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    _, clips, _ = catalogs
    image = sorted((SCENES / "eForest").glob("*.jpg"))[0]
    some = [c["clip_id"] for c in clips[:: len(clips) // 4]]
    calls = [
        *(lambda c, t=t: c.search_text(t, k=5) for t in ("river", "houses", "a forest", "cars")),
        *(lambda c, i=i: c.search_clip(clip_id=i, k=5) for i in some),
        lambda c: c.search_image(image, k=5),
    ]

    def run(call):
        with SkySearchClient(url, api_key=API_KEY) as client:
            return [(h.id, round(h.score, 4)) for h in call(client).results]

    expected = [run(call) for call in calls]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            assert list(pool.map(run, calls)) == expected


def test_a_filter_naming_what_the_archive_does_not_hold_says_so(sky):
    """A satellite or channel filter the archive does not hold (another case, a typo) would
    match nothing: 404 naming what the archive has, as for the query's own satellite."""
    for search in (sky.search_clip, sky.search_frame):
        err = _error(search, at=QUERY_AT, filters=Filters(satellites=["GOES-EAST"]))
        assert err.status_code == 404
        assert "filter satellites: unknown 'GOES-EAST': the archive has goes-east: ir" in err.detail
        err = _error(search, at=QUERY_AT, filters=Filters(channels=["IR", "ir"]))
        assert err.status_code == 404 and "filter channels: unknown 'IR'" in err.detail
    ok = sky.search_frame(at=QUERY_AT, k=2, filters=Filters(satellites=["goes-east"]))
    assert len(ok.results) == 2
