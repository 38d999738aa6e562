"""Every endpoint of the search service, through the typed client, over real HTTP on loopback.

The service runs in this process (uvicorn in a thread) over a small real workspace built once
per session (``service_env``): GOES-East Irma frames and clips, RSSCN7 scenes, quick models.
"""

from __future__ import annotations

import io
import struct
import zlib
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_env import API_KEY, QUERY_AT, SAMPLE, build_workspace, server

from skysearch.client import ApiError, Filters, SkySearchClient
from skysearch.timeutil import parse_time

GOES = SAMPLE / "goes-irma-2017" / "infrared"
SCENES = SAMPLE / "rsscn7-mini"


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    return build_workspace(tmp_path_factory.getbasetemp() / "service-ws")


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
    assert state.searches == {"text": "ok", "clip": "ok", "image": "ok"}
    assert state.collections == {"clips": len(clips), "scenes": 84}
    assert state.load_seconds is not None and state.load_seconds > 0


def test_collections_and_sizes(sky, catalogs):
    _, clips, _ = catalogs
    got = {c.name: c for c in sky.collections()}
    assert set(got) == {"clips", "scenes"}
    assert got["clips"].points == len(clips) == 44
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


def test_unknown_and_malformed_ids(sky, url):
    import httpx

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
    assert err.status_code == 400 and "1 to 16 example images" in err.detail


def test_search_clip_same_json_as_cli(sky, ws):
    """The service answers exactly what `skysearch search clip --json` printed."""
    result = sky.search_clip(at=QUERY_AT, channels=["ir"], k=5, filters=Filters(channels=["ir"]))
    got, want = result.to_json(), dict(ws.cli_clip_json)
    got.pop("timing_ms")
    want.pop("timing_ms")
    assert got == want
    assert result.results[0].start == "2017-09-07T00:45:00Z"  # the query clip itself


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


def test_search_clip_rerank(sky):
    result = sky.search_clip(at=QUERY_AT, channels=["ir"], k=3, rerank=10)
    assert result.query["ranked_by"] == "rerank"
    assert all(h.rerank_score is not None for h in result.results)


def test_search_clip_by_uploaded_frames(sky):
    files = sorted(GOES.glob("HUIR17250*45.GIF"))[3:9]  # 2017-09-07 03:45..08:45, hourly
    result = sky.search_clip_frames(files, channel="ir", gap_minutes=60, k=3)
    assert result.query["mode"] == "frames"
    assert result.query["files"] == [f.name for f in files]
    top = result.results[0]
    assert top.start == "2017-09-07T03:45:00Z" and top.score == pytest.approx(1.0, abs=1e-4)


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
            ]
            for call in calls:
                err = _error(call, anon)
                assert err.status_code == 401 and "X-API-Key" in err.detail


# ---- bad requests: 4xx with a clear message, never a 5xx ---------------------------------
def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def test_bad_uploads(sky):
    html = GOES / "HUIR172502115.GIF"  # a real HTML error page saved upstream as .GIF
    cases = {
        "not a PNG, JPEG or GIF": ("page.gif", html.read_bytes()),
        "is empty": ("empty.png", b""),
        "is 50000x50000 pixels": ("bomb.png", _png_header(50000, 50000)),
        "cannot decode": ("truncated.png", _png_header(64, 64) + b"\0" * 20),
        "bytes; the limit": ("huge.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (8 * 1024 * 1024 + 1)),
        "cannot read the JPEG header": ("bad.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF"),
    }
    for expected, upload in cases.items():
        err = _error(sky.search_image, upload)
        assert err.status_code == 400 and expected in err.detail, (expected, err.detail)
        err = _error(sky.search_clip_frames, [upload] * 6, channel="ir", gap_minutes=60)
        assert err.status_code == 400 and expected in err.detail, (expected, err.detail)
    scene = next(SCENES.rglob("*.jpg"))  # a valid image, but not a GOES sector frame
    err = _error(sky.search_clip_frames, [scene] * 6, channel="ir", gap_minutes=60)
    assert err.status_code == 400 and "wrong dimensions" in err.detail
    assert f"upload 1 ('{scene.name}')" in err.detail and "/tmp" not in err.detail
    err = _error(sky.search_clip_frames, [sorted(GOES.glob("*45.GIF"))[0]] * 49)
    assert err.status_code == 400 and "limit is 48" in err.detail


def test_bad_parameters(sky):
    cases = [
        (lambda: sky.search_text("river", k=0), 422, "k"),
        (lambda: sky.search_text("river", k=101), 422, "k"),
        (lambda: sky.search_text(""), 422, "text"),
        (lambda: sky.search_text("   "), 400, "empty"),
        (lambda: sky.search_text("x" * 501), 422, "text"),
        (lambda: sky.search_text("river", filters=Filters(months=[13])), 422, "months"),
        (
            lambda: sky.search_text("r", filters=Filters(start="2017-09-08", end="2017-09-07")),
            400,
            "before it starts",
        ),
        (lambda: sky.search_text("r", filters=Filters(start="0001-01-01")), 422, "year"),
        (lambda: sky.search_clip(), 400, "one way"),
        (
            lambda: sky.search_clip(at=QUERY_AT, clip_id="00000000-0000-4000-8000-000000000000"),
            400,
            "one way",
        ),
        (lambda: sky.search_clip(at="1999-01-01T00:00Z", channels=["ir"]), 400, "outside"),
        (lambda: sky.search_clip(at=QUERY_AT, channels=["vis"]), 400, "unknown channel vis"),
        (lambda: sky.search_clip(at=QUERY_AT, length=12), 404, "no clip model"),
        (lambda: sky.search_clip(at="yesterday"), 422, "at"),
        (lambda: sky.search_clip(at=QUERY_AT, rerank=101), 422, "rerank"),
        (lambda: sky.search_clip(clip_id="00000000-0000-4000-8000-000000000000"), 404, "clip"),
        (lambda: sky.search_text("r", model_id="../../etc/passwd"), 422, "model_id"),
        (lambda: sky.search_text("r", model_id="text-image-nope"), 404, "no model"),
    ]
    for call, status, words in cases:
        err = _error(call)
        assert err.status_code == status and words in err.detail, (status, words, err)


def test_malformed_bodies(url):
    import httpx

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
