"""Service parts that need no workspace: upload checks, bind rules, body limit, readiness,
the committed OpenAPI document."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import pytest
from PIL import Image
from skysearch.retrieval.service import SearchService, ServiceLimits
from skysearch.retrieval.uploads import UploadLimits, header_size, sniff_format, validate_image

from skysearch.config import Settings, Workspace
from skysearch.errors import UsageError

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"
MULTIPART = "multipart/form-data; boundary=b"


def _encoded(fmt: str, size: tuple[int, int], **kwargs) -> bytes:
    out = io.BytesIO()
    Image.new("L", size, 128).save(out, format=fmt, **kwargs)
    return out.getvalue()


@pytest.mark.parametrize(
    "path",
    [
        next((SAMPLE / "goes-irma-2017" / "infrared").glob("HUIR17249*.GIF")),
        next((SAMPLE / "rsscn7-mini" / "aGrass").glob("*.jpg")),
    ],
    ids=["goes-gif", "rsscn7-jpeg"],
)
def test_header_size_of_real_files_matches_pillow(path: Path):
    data = path.read_bytes()
    fmt = sniff_format(data)
    with Image.open(path) as im:
        assert (fmt, header_size(data, fmt)) == (im.format, im.size)


@pytest.mark.parametrize(
    ("fmt", "kwargs"),
    [("PNG", {}), ("GIF", {}), ("JPEG", {}), ("JPEG", {"progressive": True})],
)
def test_header_size_of_encoded_images(fmt: str, kwargs: dict):
    data = _encoded(fmt, (123, 45), **kwargs)
    assert sniff_format(data) == fmt and header_size(data, fmt) == (123, 45)
    upload = validate_image(data, "x", UploadLimits())
    assert (upload.format, upload.width, upload.height) == (fmt, 123, 45)


def test_limits_checked_before_decoding(monkeypatch):
    limits = UploadLimits(max_bytes=10_000, max_side=100, max_pixels=50 * 50)

    def no_decoding(*args, **kwargs):
        raise AssertionError("Pillow was asked to decode an upload that fails the limits")

    monkeypatch.setattr(Image, "open", no_decoding)
    for data, words in [
        (_png_ihdr(101, 10), "pixels a side"),
        (_png_ihdr(60, 60), "pixels in all"),
        (b"GIF89a" + struct.pack("<HH", 70000 % 65536, 1), "pixels a side"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 10_000, "bytes; the limit"),
        (b"<!DOCTYPE html><html>", "not a PNG, JPEG or GIF"),
        (b"BM" + b"\0" * 100, "not a PNG, JPEG or GIF"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "cannot read the PNG header"),
    ]:
        with pytest.raises(UsageError, match=words):
            validate_image(data, "x", limits)


def _png_ihdr(width: int, height: int) -> bytes:
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", 13)
        + b"IHDR"
        + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
        + b"\0\0\0\0"
    )


def test_header_lying_about_size_is_refused():
    real = _encoded("PNG", (40, 30))
    forged = real[:16] + struct.pack(">II", 20, 30) + real[24:]  # CRC now wrong as well
    with pytest.raises(UsageError, match="upload 'x'"):
        validate_image(forged, "x", UploadLimits())


def test_bind_rules(cli):
    from skysearch.cli.serve import check_bind, is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.8.0.1"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.org", ""))
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "secret")
    with pytest.raises(UsageError, match="API key"):
        check_bind("0.0.0.0", None)
    result = cli("serve", "--host", "0.0.0.0", "-w", str(REPO / "no-such-workspace"))
    assert result.exit_code == 2 and "set an API key" in result.stderr


def _unloaded_app(**limits):
    from skysearch.retrieval.http_app import create_app

    settings = Settings(workspace=Workspace(Path("/nonexistent-skysearch-workspace")))
    return create_app(SearchService(settings, ServiceLimits(**limits)), api_key="k")


def test_body_limit_and_not_ready():
    from fastapi.testclient import TestClient

    client = TestClient(_unloaded_app(max_request_bytes=1000), headers={"X-API-Key": "k"})
    r = client.post("/search/text", content=b"x" * 1001, headers={"content-type": "text/plain"})
    assert r.status_code == 413 and "larger than 1000 bytes" in r.json()["detail"]

    def chunks():  # no Content-Length: counted while read
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n\r\n'
        for _ in range(20):
            yield b"y" * 100

    for path, kind in (("/search/text", "application/json"), ("/search/image", MULTIPART)):
        r = client.post(path, content=chunks(), headers={"content-type": kind})
        assert r.status_code == 413 and "larger than 1000 bytes" in r.json()["detail"], path
    r = client.get("/ready")  # lifespan not run: nothing loaded yet
    assert r.status_code == 503 and r.json()["state"] == "starting"
    r = client.post("/search/text", json={"text": "river"})
    assert r.status_code == 503 and "not ready" in r.json()["detail"]
    r = client.get("/collections", headers={"X-API-Key": "nope"})
    assert r.status_code == 401


def test_failed_start_is_reported_not_raised(tmp_path):
    from fastapi.testclient import TestClient
    from skysearch.retrieval.http_app import create_app

    service = SearchService(Settings(workspace=Workspace(tmp_path / "missing")))
    with TestClient(create_app(service)) as client:
        service.wait_ready(60)
        r = client.get("/ready")
        assert r.status_code == 503 and r.json()["state"] == "failed"
        assert "does not exist" in r.json()["detail"]
        assert client.get("/health").status_code == 200


def test_committed_openapi_matches_the_served_schema():
    from fastapi.testclient import TestClient
    from skysearch.retrieval.http_app import openapi_json

    committed = (REPO / "openapi.json").read_text()
    assert committed == openapi_json(), (
        "openapi.json is stale: regenerate with `skysearch serve --write-openapi openapi.json`"
    )
    served = TestClient(_unloaded_app()).get("/openapi.json").json()
    assert served == json.loads(committed)
