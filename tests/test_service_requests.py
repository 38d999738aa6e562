"""Requests the search service must answer with a clear 4xx (never a 5xx): no or a wrong API
key, bad uploads, parameters and bodies, oversized frames; and concurrent searches, which
must equal sequential ones (the shared service of ``service_env``)."""

from __future__ import annotations

import io
import weakref
import zlib

import httpx
import pytest
from PIL import Image
from service_env import (
    API_KEY,
    GOES,
    QUERY_AT,
    SCENES,
    api_error,
    png_declaring,
    server,
)

from skysearch.client import Filters, SkySearchClient


# ---- auth ---------------------------------------------------------------------------------
def test_api_key_required(served_url, served_catalogs):
    frames, clips, _ = served_catalogs
    for key in (None, "wrong-key", API_KEY + "x"):
        with SkySearchClient(served_url, api_key=key) as anon:
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
                err = api_error(call, anon)
                assert err.status_code == 401 and "X-API-Key" in err.detail


def test_non_ascii_api_key(served_ws, served_catalogs):
    """A UTF-8 key matches byte for byte (before: the server compared latin-1-decoded header
    text with the key, so a non-ASCII key never matched; the client could not send one)."""
    key = "clé-d'accès-ключ-0123"
    with SkySearchClient(server(served_ws.root, api_key=key), api_key=key) as client:
        assert [c.name for c in client.collections()] == ["clips", "frames", "scenes"]
        assert client.ready().ready
    with SkySearchClient(
        server(served_ws.root, api_key=key), api_key="clé-d'accès-ключ-0124"
    ) as bad:
        assert api_error(bad.collections).status_code == 401
    with SkySearchClient(server(served_ws.root, api_key=key), api_key=None) as anon:
        assert api_error(anon.collections).status_code == 401


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
        err = api_error(sky.search_image, upload)
        assert err.status_code == 400 and expected in err.detail, (expected, err.detail)
        six = _distinct(upload, 6)
        err = api_error(sky.search_clip_frames, six, channel="ir", gap_minutes=60)
        assert err.status_code == 400 and expected in err.detail, (expected, err.detail)
    scene = next(SCENES.rglob("*.jpg"))  # a valid image, but not a GOES sector frame
    six = _distinct((scene.name, scene.read_bytes()), 6)
    err = api_error(sky.search_clip_frames, six, channel="ir", gap_minutes=60)
    assert err.status_code == 400 and "wrong dimensions" in err.detail
    assert f"upload 1 ('{scene.name}')" in err.detail and "/tmp" not in err.detail
    err = api_error(sky.search_clip_frames, [sorted(GOES.glob("*45.GIF"))[0]] * 49)
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
    err = api_error(sky.search_clip_frames, frames, channel="ir", gap_minutes=60)
    assert err.status_code == 404 and "no clip model fits" in err.detail
    err = api_error(sky.search_clip_frames, frames[:6], satellite="coms", channel="ir")
    assert err.status_code == 404 and "unknown satellite 'coms'" in err.detail
    err = api_error(sky.search_clip_frames, frames[:6], channel="ir", gap_minutes=60)
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


def test_request_pixel_budget(sky, served_ws, monkeypatch):
    """The frames' pixels as their headers state, summed over the request, checked before
    any is decoded."""
    from dataclasses import replace

    from service_env import service

    svc = service(served_ws.root)
    monkeypatch.setattr(svc, "limits", replace(svc.limits, max_request_pixels=5 * 720 * 480))
    spy = DecodeSpy(monkeypatch)
    files = sorted(GOES.glob("HUIR17250*45.GIF"))[3:9]
    err = api_error(sky.search_clip_frames, files, channel="ir", gap_minutes=60)
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
            400,  # the day the end names lasts to its end, said without microseconds
            "time range ends (2017-09-07T23:59:59Z) before it starts (2017-09-08T00:00:00Z)",
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
        # the request's own field: a clip search's is channels, a frame search's channel
        (lambda: sky.search_clip(at=QUERY_AT, channels=["vis"]), 404, "(pass e.g. channels ir)"),
        (lambda: sky.search_frame(at=QUERY_AT, channel="vis"), 404, "(pass e.g. channel ir)"),
        (  # a filter is named as the request has it
            lambda: sky.search_text("r", filters=Filters(bbox=[0, 0, 1, 1])),
            404,
            "the filters.bbox filter matches nothing",
        ),
        (lambda: sky.search_clip(at=QUERY_AT, length=12), 404, "no clip model"),
        (lambda: sky.search_clip(at="yesterday"), 422, "at"),
        (lambda: sky.search_clip(at=QUERY_AT, rerank=101), 422, "rerank"),
        (lambda: sky.search_clip(clip_id="00000000-0000-4000-8000-000000000000"), 404, "clip"),
        (lambda: sky.search_text("r", model_id="../../etc/passwd"), 422, "model_id"),
        (lambda: sky.search_text("r", model_id="text-image-nope"), 404, "no text-image model"),
    ]
    for call, status, words in cases:
        err = api_error(call)
        assert err.status_code == status and words in err.detail, (status, words, err)


def test_head_is_get_without_the_body_and_options_lists_the_methods(served_url, served_catalogs):
    frames, _, _ = served_catalogs
    thumb = f"/frames/{frames[0]['frame_id']}/thumbnail.png"
    with httpx.Client(base_url=served_url, headers={"X-API-Key": API_KEY}) as http:
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
    with httpx.Client(base_url=served_url) as anon:  # HEAD and OPTIONS need the key where GET does
        assert anon.head(thumb).status_code == 401 and anon.head("/health").status_code == 200
        assert anon.options("/search/text").status_code == 401
        assert anon.options("/").headers["allow"] == "GET, HEAD, OPTIONS"  # the page is public


def test_malformed_bodies(served_url):
    headers = {"X-API-Key": API_KEY}
    with httpx.Client(base_url=served_url, headers=headers) as http:
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


def test_concurrent_searches_match_sequential_ones(served_url, served_catalogs):
    """Searches of every kind at once from many threads: same answers as one at a time."""
    from concurrent.futures import ThreadPoolExecutor

    _, clips, _ = served_catalogs
    image = sorted((SCENES / "eForest").glob("*.jpg"))[0]
    some = [c["clip_id"] for c in clips[:: len(clips) // 4]]
    calls = [
        *(lambda c, t=t: c.search_text(t, k=5) for t in ("river", "houses", "a forest", "cars")),
        *(lambda c, i=i: c.search_clip(clip_id=i, k=5) for i in some),
        lambda c: c.search_image(image, k=5),
    ]

    def run(call):
        with SkySearchClient(served_url, api_key=API_KEY) as client:
            return [(h.id, round(h.score, 4)) for h in call(client).results]

    expected = [run(call) for call in calls]
    with ThreadPoolExecutor(8) as pool:
        for _ in range(3):
            assert list(pool.map(run, calls)) == expected


def test_a_filter_naming_what_the_archive_does_not_hold_says_so(sky):
    """A satellite or channel filter the archive does not hold (another case, a typo) would
    match nothing: 404 naming what the archive has, as for the query's own satellite."""
    for search in (sky.search_clip, sky.search_frame):
        err = api_error(search, at=QUERY_AT, filters=Filters(satellites=["GOES-EAST"]))
        assert err.status_code == 404
        assert "filter satellites: unknown 'GOES-EAST': the archive has goes-east: ir" in err.detail
        err = api_error(search, at=QUERY_AT, filters=Filters(channels=["IR", "ir"]))
        assert err.status_code == 404 and "filter channels: unknown 'IR'" in err.detail
    ok = sky.search_frame(at=QUERY_AT, k=2, filters=Filters(satellites=["goes-east"]))
    assert len(ok.results) == 2
