"""Every endpoint of the search service, through the typed client, over real HTTP on loopback:
health, metadata, thumbnails and every search. Start-up: ``test_service_startup.py``; refused
and concurrent requests: ``test_service_requests.py``.

The service runs in this process (uvicorn in a thread) over a small real workspace built once
per session (``service_env``, fixtures ``served_*`` and ``sky`` in ``conftest.py``): GOES-East
Irma frames and clips, RSSCN7 scenes, quick models.
"""

from __future__ import annotations

import io
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from service_env import (
    API_KEY,
    GOES,
    QUERY_AT,
    SCENES,
    api_error,
)

from skysearch.client import Filters
from skysearch.timeutil import parse_time


def _png(data: bytes) -> np.ndarray:
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    return np.asarray(Image.open(io.BytesIO(data)))


# ---- service ----------------------------------------------------------------------------
def test_health_and_readiness(sky, served_catalogs):
    frames, clips, _ = served_catalogs
    assert sky.health()["status"] == "ok"
    state = sky.ready()
    assert state.ready and state.state == "ready"
    assert state.searches == {"text": "ok", "clip": "ok", "frame": "ok", "image": "ok"}
    assert state.collections == {"clips": len(clips), "frames": len(frames), "scenes": 84}
    assert state.load_seconds is not None and state.load_seconds > 0


def test_collections_and_sizes(sky, served_catalogs):
    frames, clips, _ = served_catalogs
    got = {c.name: c for c in sky.collections()}
    assert set(got) == {"clips", "frames", "scenes"}
    assert got["clips"].points == len(clips) == 44
    assert got["frames"].points == len(frames) == 60
    assert got["scenes"].points == len(list(SCENES.rglob("*.jpg")))
    assert all(dim > 0 for c in got.values() for dim in c.vectors.values())
    assert {c.backend for c in got.values()} == {"embedded"}


# ---- metadata and thumbnails --------------------------------------------------------------
def test_frame_metadata_and_thumbnail(sky, served_catalogs):
    from skysearch.ingest.framestore import FrameStore

    frames, _, workspace = served_catalogs
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


def test_clip_metadata_and_thumbnail(sky, served_catalogs):
    _, clips, _ = served_catalogs
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


def test_clip_animation_is_a_looping_webp_of_the_clips_frames(sky, served_url, served_catalogs):
    _, clips, _ = served_catalogs
    row = clips[5]
    first = sky.clip_animation(row["clip_id"], size=96)
    image = Image.open(io.BytesIO(first))
    assert image.format == "WEBP" and image.n_frames == 6 and image.info.get("loop") == 0
    tile = _png(sky.frame_thumbnail(row["frame_ids"][0][2], size=96))
    image.seek(2)
    assert image.size == (tile.shape[1], tile.shape[0])  # each frame: the frame's thumbnail
    assert np.abs(np.asarray(image.convert("L"), float) - tile).mean() < 8  # lossy, close
    assert sky.clip_animation(row["clip_id"], size=96) == first  # cached
    path = f"{served_url}/clips/{row['clip_id']}/animation.webp"
    served = httpx.get(path, headers={"X-API-Key": API_KEY})
    assert served.headers["content-type"] == "image/webp"
    too_big = api_error(sky.clip_animation, row["clip_id"], size=513)
    assert too_big.status_code == 422 and "size" in too_big.detail
    missing = "00000000-0000-4000-8000-000000000000"
    assert api_error(sky.clip_animation, missing).status_code == 404
    assert httpx.get(path).status_code == 401


def test_archive_says_what_the_catalogs_hold(sky, served_catalogs):
    frames, clips, _ = served_catalogs
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
    gone = api_error(sky.scene_thumbnail, missing)
    assert gone.status_code == 404 and missing in gone.detail


def test_the_page_and_its_files_are_public_and_same_origin_only(served_url):
    page = httpx.get(f"{served_url}/")  # no key: the page asks for it
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'src="/static/app.js"' in page.text
    texts = [page.text]
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        got = httpx.get(f"{served_url}/static/{name}")
        assert got.status_code == 200 and kind in got.headers["content-type"]
        texts.append(got.text)
    assert not [t for t in texts if "http://" in t or "https://" in t or "@import" in t]
    assert httpx.get(f"{served_url}/static/%2e%2e/app.py").status_code == 404
    assert httpx.get(f"{served_url}/archive").status_code == 401  # the API still needs the key


def test_a_model_of_another_kind_is_not_found(sky):
    """Found by the outside fuzzer once /archive listed model ids: a frame model's id given to
    text search was a 400 (a schema-valid request refused); there is no such text-image model."""
    frame_model = next(m.model_id for m in sky.archive().models if m.kind == "frame")
    err = api_error(sky.search_text, "a river", k=1, model_id=frame_model)
    assert err.status_code == 404 and "is a frame model, not a text-image model" in err.detail


def test_unknown_and_malformed_ids(sky, served_url):
    missing = "00000000-0000-4000-8000-000000000000"
    for call in (sky.frame, sky.clip, sky.frame_thumbnail, sky.clip_thumbnail):
        err = api_error(call, missing)
        assert err.status_code == 404 and missing in err.detail
    assert api_error(sky.frame, "not-a-uuid").status_code == 422
    assert api_error(sky.frame_thumbnail, missing, size=5000).status_code == 422
    headers = {"X-API-Key": API_KEY}
    for path in ("/frames/..%2F..%2Fetc%2Fpasswd", "/clips/../../etc/passwd", "/frames/%00"):
        response = httpx.get(served_url + path, headers=headers)
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
    err = api_error(sky.search_image, [a] * 17)
    assert err.status_code == 422 and "at most 16 items" in err.detail  # the schema's bound


def test_search_clip_same_json_as_cli(sky, served_ws):
    """The service answers exactly what `skysearch search clip --json` printed."""
    result = sky.search_clip(at=QUERY_AT, channels=["ir"], k=5, filters=Filters(channels=["ir"]))
    got, want = result.to_json(), dict(served_ws.cli_clip_json)
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


def test_search_clip_by_id_with_filters(sky, served_catalogs):
    _, clips, _ = served_catalogs
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


def test_an_end_date_alone_takes_in_that_whole_day(sky, served_url, served_catalogs):
    """``end: "2017-09-07"`` is the whole of 7 September (as the CLI's --between), through the
    typed client and in a raw JSON body."""
    _, clips, _ = served_catalogs
    clip_id = clips[20]["clip_id"]
    explicit = Filters(start="2017-09-07T00:00Z", end="2017-09-07T23:59:59Z")
    expected = [h.id for h in sky.search_clip(clip_id=clip_id, k=30, filters=explicit).results]
    by_date = Filters(start="2017-09-07", end="2017-09-07")
    got = [h.id for h in sky.search_clip(clip_id=clip_id, k=30, filters=by_date).results]
    assert len(expected) > 1 and got == expected
    body = {"clip_id": clip_id, "filters": {"start": "2017-09-07", "end": "2017-09-07", "k": 30}}
    with httpx.Client(base_url=served_url, headers={"X-API-Key": API_KEY}) as http:
        raw = http.post("/search/clip", json=body)
    assert raw.status_code == 200 and [h["id"] for h in raw.json()["results"]] == expected
    assert raw.json()["filters"]["end"] == "2017-09-07T23:59:59Z"


def test_search_clip_rerank_is_the_grid_metric_order(sky, served_ws, cli):
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
        r = cli("similarity", query_id, hit.id, "--json", "-w", served_ws.root)
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
    err = api_error(sky.search_clip_frames, [files[0]] * 6, channel="ir", gap_minutes=60)
    assert err.status_code == 400
    assert f"upload 1 ('{files[0].name}') and upload 2 ('{files[0].name}') are the same file" in (
        err.detail
    )
    # one frame sent twice among 6 (so 5 steps): the repeat is named, not a missing model
    err = api_error(sky.search_clip_frames, [*files[:5], files[2]], channel="ir", gap_minutes=60)
    assert err.status_code == 400 and "upload 3" in err.detail and "upload 6" in err.detail


def test_search_frame_by_time_and_id_with_filters(sky, served_catalogs):
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
    missing = api_error(sky.search_frame, at="2016-01-01T00:00:00Z", channel="ir")
    assert missing.status_code == 404 and "no goes-east ir frame within" in missing.detail


def test_search_frame_upload_finds_its_archive_twin_by_the_grid_metric(sky, served_catalogs):
    """An uploaded raw GIF of an archive frame: its twin first with grid similarity 1.0; every
    re-ranked score is the grid metric of the two frames (brute force over stored sketches)."""
    from skysearch.ingest.similarity import SketchStore, frame_similarity

    _, _, workspace = served_catalogs
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
    bad = api_error(sky.search_frame_upload, ("x.png", b"<html>"), k=3)
    assert bad.status_code == 400 and "not a PNG, JPEG or GIF" in bad.detail
