"""Service parts that need no workspace: upload checks, bind rules, body limit, readiness,
the committed OpenAPI document."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from service_env import png_declaring
from skysearch.retrieval.service.service import SearchService, ServiceLimits
from skysearch.retrieval.service.uploads import UploadLimits, decode, open_image, validate_image

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
def test_open_image_reads_the_header_only(path: Path):
    image = open_image(path.read_bytes(), "x", UploadLimits())
    with Image.open(path) as reference:
        assert (image.format, image.size) == (reference.format, reference.size)
    assert image.tile  # nothing decoded yet
    decoded = decode(image, "x")
    assert not decoded.tile and decoded.getbbox() is not None


@pytest.mark.parametrize(
    ("fmt", "kwargs"),
    [("PNG", {}), ("GIF", {}), ("JPEG", {}), ("JPEG", {"progressive": True})],
)
def test_validate_encoded_images(fmt: str, kwargs: dict):
    upload = validate_image(_encoded(fmt, (123, 45), **kwargs), "x", UploadLimits())
    assert (upload.format, upload.width, upload.height) == (fmt, 123, 45)
    assert np.asarray(upload.image.convert("L")).mean() == pytest.approx(128, abs=1)


def _gif_declaring(width: int, height: int) -> bytes:
    """A real GIF whose logical screen says ``width`` x ``height``."""
    data = _encoded("GIF", (10, 10))
    return data[:6] + struct.pack("<HH", width, height) + data[10:]


def test_limits_checked_before_decoding(monkeypatch):
    """Bytes, magic, header size: each refused without decoding a pixel."""
    from PIL import ImageFile

    limits = UploadLimits(max_bytes=10_000, max_side=100, max_pixels=50 * 50)

    def no_decoding(*args, **kwargs):
        raise AssertionError("Pillow was asked to decode an upload that fails the limits")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    for data, words in [
        (png_declaring(101, 10, b""), "is 101x10 pixels; the limit is 100 pixels a side"),
        (png_declaring(60, 60, b""), "is 60x60 pixels; .* 2500 pixels in all"),
        (_gif_declaring(4464, 10), "is 4464x10 pixels"),
        (png_declaring(20000, 20000, b""), "is a decompression bomb"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 10_000, "larger than the limit of"),
        (b"<!DOCTYPE html><html>", "not a PNG, JPEG or GIF"),
        (b"BM" + b"\0" * 100, "not a PNG, JPEG or GIF"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "cannot read the PNG header"),
        (b"", "is empty"),
    ]:
        with pytest.raises(UsageError, match=words):
            validate_image(data, "x", limits)


def test_header_lying_about_size_is_refused():
    real = _encoded("PNG", (40, 30))
    forged = real[:16] + struct.pack(">II", 20, 30) + real[24:]  # CRC now wrong as well
    with pytest.raises(UsageError, match="upload 'x': cannot read the PNG header"):
        validate_image(forged, "x", UploadLimits())
    noise = np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, format="PNG")
    cut = out.getvalue()[: len(out.getvalue()) // 2]  # header intact, pixel data cut short
    with pytest.raises(UsageError, match="upload 'x': cannot decode the PNG image"):
        validate_image(cut, "x", UploadLimits())


def test_bind_rules(cli):
    from skysearch.cli.serve import check_bind, is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "[::1]", "127.8.0.1"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "example.org", ""))
    check_bind("127.0.0.1", None)
    check_bind("127.0.0.1", "short")  # loopback: any key, or none
    check_bind("0.0.0.0", "0123456789abcdef")
    check_bind("0.0.0.0", "ключ-доступа")  # 12 characters, 23 bytes
    with pytest.raises(UsageError, match="API key"):
        check_bind("0.0.0.0", None)
    with pytest.raises(
        UsageError, match="the API key is 15 bytes; off loopback it needs at least 16"
    ):
        check_bind("0.0.0.0", "0123456789abcde")
    for key in (" " * 16, "0123456789abcdef "):  # every request was refused: 401
        with pytest.raises(UsageError, match="white space, which an HTTP header cannot carry"):
            check_bind("127.0.0.1", key)
    result = cli("serve", "--host", "0.0.0.0", "-w", str(REPO / "no-such-workspace"))
    assert result.exit_code == 2 and "set an API key" in result.stderr


def _unloaded_app(**limits):
    from skysearch.retrieval.service.app import create_app

    settings = Settings(workspace=Workspace(Path("/nonexistent-skysearch-workspace")))
    return create_app(SearchService(settings, ServiceLimits(**limits)), api_key="k")


def test_a_json_body_sent_without_its_content_type_is_said_so():
    from fastapi.testclient import TestClient

    client = TestClient(_unloaded_app(), headers={"X-API-Key": "k"})
    body = b'{"text": "river"}'
    for kind in (None, "text/plain", "application/x-www-form-urlencoded"):
        headers = {"content-type": kind} if kind else {}
        r = client.post("/search/text", content=body, headers=headers)
        assert r.status_code == 422, r.text
        assert (
            "send the body as JSON, with the header content-type: application/json"
            in (r.json()["detail"])
        )
    r = client.post("/search/text", content=b"[1]", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "content-type" not in r.json()["detail"]  # JSON, wrong shape


def test_a_single_valued_form_field_sent_twice_is_refused():
    """The form took the last value: a second `frame` part dropped the first query frame, and
    `k=3&k=50` searched for 50. Fields that take several values may repeat."""
    from fastapi.testclient import TestClient

    client = TestClient(_unloaded_app(), headers={"X-API-Key": "k"})
    png = ("a.png", b"\x89PNG\r\n\x1a\n", "image/png")
    form = {"satellite": "goes-east", "channel": "ir"}
    r = client.post("/search/frame/upload", data=form, files=[("frame", png), ("frame", png)])
    assert r.status_code == 422 and r.json()["detail"] == "frame: given 2 times; send it once"
    r = client.post("/search/frame/upload", data={**form, "k": ["3", "50"]}, files={"frame": png})
    assert r.status_code == 422 and r.json()["detail"] == "k: given 2 times; send it once"
    many = {**form, "months": ["1", "2"], "bbox": ["0", "0", "1", "1"]}  # on to the service
    r = client.post("/search/frame/upload", data=many, files={"frame": png})
    assert r.status_code == 503, r.text
    r = client.post("/search/image", files=[("image", png), ("image", png)])
    assert r.status_code == 503, r.text  # several example images: allowed


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


def test_a_served_models_damaged_checkpoint_is_503_not_the_clients_mistake(monkeypatch):
    """A text-image checkpoint missing its weights answered 400 ("the detail says what to
    change"), so clients and load balancers did not try elsewhere."""
    from fastapi.testclient import TestClient
    from skysearch.retrieval.service.app import create_app

    from skysearch.errors import CheckpointError

    service = SearchService(Settings(workspace=Workspace(Path("/nonexistent-skysearch-ws"))))
    monkeypatch.setattr(service, "require_ready", lambda: None)

    def damaged(*args):
        raise CheckpointError("checkpoint /ws/models/text-image-x has no model.safetensors")

    monkeypatch.setattr(service, "search_text", damaged)
    r = TestClient(create_app(service)).post("/search/text", json={"text": "river"})
    assert r.status_code == 503 and "has no model.safetensors" in r.json()["detail"]


def test_failed_start_is_reported_not_raised(tmp_path):
    from fastapi.testclient import TestClient
    from skysearch.retrieval.service.app import create_app

    service = SearchService(Settings(workspace=Workspace(tmp_path / "missing")))
    with TestClient(create_app(service)) as client:
        service.wait_ready(60)
        r = client.get("/ready")
        assert r.status_code == 503 and r.json()["state"] == "failed"
        assert "does not exist" in r.json()["detail"]
        assert client.get("/health").status_code == 200


def test_http_messages_name_fields_not_cli_flags(tmp_path):
    """A service message is about the request or the served workspace, never a CLI flag
    (it said "pass --workspace DIR")."""
    from fastapi.testclient import TestClient
    from skysearch.retrieval.service.app import create_app

    service = SearchService(Settings(workspace=Workspace(tmp_path / "missing")))
    with TestClient(create_app(service)) as client:
        service.wait_ready(60)
        assert (
            client.get("/ready").json()["detail"]
            == f"workspace {tmp_path / 'missing'} does not exist (check workspace)"
        )


def test_thumbnail_shrinks_to_the_longest_side_and_never_enlarges():
    from skysearch.retrieval.service.catalogs import thumbnail

    pixels = np.arange(300 * 200, dtype=np.uint32).reshape(200, 300).astype(np.uint8)
    assert thumbnail(pixels, 100).shape == (67, 100)
    assert thumbnail(pixels.T, 100).shape == (100, 67)
    assert np.array_equal(thumbnail(pixels, 300), pixels)  # already fits: the same pixels
    flat = np.full((40, 20), 77, np.uint8)
    assert (thumbnail(flat, 10) == 77).all()  # an area average of one grey stays that grey


def test_committed_openapi_matches_the_served_schema():
    from fastapi.testclient import TestClient
    from skysearch.retrieval.service.app import openapi_json

    committed = (REPO / "openapi.json").read_text()
    assert committed == openapi_json(), (
        "openapi.json is stale: regenerate with `skysearch serve --write-openapi openapi.json`"
    )
    served = TestClient(_unloaded_app()).get("/openapi.json").json()
    assert served == json.loads(committed)


def test_animation_cache_is_bounded_in_bytes_and_least_recently_used():
    from skysearch.retrieval.service.animation import BytesCache, animated_webp

    made = []

    def make(key: str, size: int):
        return lambda: made.append(key) or bytes(size)

    cache = BytesCache(max_bytes=100)
    for key in "abc":
        cache.get(key, make(key, 40))  # c pushes a out (120 > 100)
    assert len(cache) == 2 and cache.size == 80
    cache.get("b", make("b", 40))  # hit: b is now the most recent
    cache.get("d", make("d", 40))  # evicts c, not b
    cache.get("b", make("b", 40))
    cache.get("c", make("c", 40))
    assert made == ["a", "b", "c", "d", "c"]
    assert cache.get("huge", make("huge", 101)) == bytes(101)  # answered, never kept
    assert "huge" in made and cache.size <= 100

    frames = [np.full((20, 30), v, np.uint8) for v in (0, 128, 255)]
    webp = Image.open(io.BytesIO(animated_webp(frames)))
    assert (webp.n_frames, webp.size) == (3, (30, 20))
    with pytest.raises(ValueError):
        animated_webp([])


def test_clip_animations_are_drawn_again_when_the_frame_catalog_changes(monkeypatch):
    """Frames ingested again keep their ids: the cached loop must not outlive their pixels."""
    service = SearchService(Settings(workspace=Workspace(Path("/nonexistent-skysearch-ws"))))
    monkeypatch.setattr(service, "require_ready", lambda: None)
    drawn = []

    class Catalogs:
        version = frozenset({("a.parquet", 1, 1, 1)})

        def clip(self, clip_id):
            return {"clip_id": clip_id}

        def stamp(self, what):
            return self.version

        def clip_frames(self, clip_id, size):
            drawn.append(clip_id)
            return clip_id, [np.full((8, 8), len(drawn), np.uint8)]

    service.catalogs = catalogs = Catalogs()
    first = service.clip_animation("c1", 64)
    assert service.clip_animation("c1", 64) == first and drawn == ["c1"]  # cached
    catalogs.version = frozenset({("a.parquet", 2, 2, 2)})  # frames written again
    assert service.clip_animation("c1", 64) != first and drawn == ["c1", "c1"]
    with pytest.raises(UsageError, match="at most 512"):
        service.clip_animation("c1", 513)


def test_serve_batches_by_the_services_default_window():
    """``skysearch serve --batch-window-ms`` defaults to the service's window (the CLI cannot
    import it at start-up: it pulls in the models); 0 turns batching off."""
    import inspect

    from skysearch.cli.serve import serve_command
    from skysearch.retrieval.search.batching import QueryEncoder
    from skysearch.retrieval.service.service import BATCH_WINDOW_MS

    option = inspect.signature(serve_command).parameters["batch_window_ms"]
    assert option.default == BATCH_WINDOW_MS > 0
    assert QueryEncoder(0)._batcher is None and QueryEncoder(BATCH_WINDOW_MS)._batcher


def test_the_lifecycle_fails_on_damage_and_loads_once_repaired(monkeypatch, tmp_path):
    """starting -> failed on a damaged file -> ready after the repair, without a restart; the
    check runs at most every RETRY_S; damage a request met keeps it not ready until its
    folder's files change and it checks out (the checks sample frames: passing alone, they
    cleared damage they had not looked at); an error of the load itself is a failed start
    that is not retried."""
    from skysearch.retrieval.service import lifecycle

    from skysearch.errors import DamagedError, StoreError

    damaged = [True]
    loads = []

    def check_intact() -> None:
        if damaged[0]:
            raise DamagedError("/ws/catalog/x.parquet", "cut short")

    life = lifecycle.Lifecycle(lambda: loads.append(1) or {"text": "ok"}, check_intact)
    assert (life.state, life.ready) == ("starting", False)
    life.start(background=False)
    assert life.state == "failed" and "cut short" in life.detail and loads == []
    life.load_when_repaired()  # still damaged: checked, said
    assert life.state == "failed" and "cut short" in life.detail
    damaged[0] = False
    life.load_when_repaired()  # checked less than RETRY_S ago: not again yet
    assert life.state == "failed" and loads == []
    monkeypatch.setattr(lifecycle, "RETRY_S", 0.0)
    life.load_when_repaired()
    life.wait(10)
    assert life.ready and life.searches == {"text": "ok"} and loads == [1]
    array, rows_damaged = tmp_path / "frames.u8", {7}

    def check_damage(exc: DamagedError) -> None:  # the service reads the row again
        if exc.row in rows_damaged:
            raise DamagedError(exc.path, f"frame row {exc.row} does not match", row=exc.row)

    life = lifecycle.Lifecycle(life._load_fn, check_intact, check_damage)
    array.write_bytes(b"damaged")
    life.note_damage(DamagedError(array, "frame row 7 does not match its checksum", row=7))
    assert "row 7" in life.damage_remains()  # the checks pass: row 7 was not in their sample
    with open(array, "ab") as handle:  # an ingest appends: the row is still damaged
        handle.write(b"next frame")
    assert "row 7" in life.damage_remains()
    rows_damaged.clear()  # `skysearch repair` rebuilt the array
    damaged[0] = True
    assert "cut short" in life.damage_remains()  # what is damaged now, from the checks
    damaged[0] = False
    assert life.damage_remains() is None and life.damage_remains() is None

    def load() -> dict[str, str]:
        raise StoreError("store directory x is in use by another process (pid 1)")

    other = lifecycle.Lifecycle(load, lambda: None)
    other.start(background=False)
    other.load_when_repaired()  # not damage: only a restart loads it again
    assert other.state == "failed" and "in use" in other.detail
    other.close()
    assert other.state == "starting" and other.detail == "closed"


def test_the_clip_warm_up_searches_a_clip_of_the_models_spec(tmp_path):
    """The catalog's first clip is of a spec no model fits (water vapour, another length): the
    warm-up searches one the latest clip model fits, so /ready says clip search works."""
    from types import SimpleNamespace

    import pyarrow as pa
    import torch
    from skysearch.encoders.factory import save_model
    from skysearch.encoders.models.clip import build_clip_embedder, clip_config_for
    from skysearch.encoders.models.frame import FrameEncoderConfig
    from skysearch.ingest.clips import CLIP_SCHEMA
    from skysearch.retrieval.service.catalogs import CatalogIndex
    from skysearch.retrieval.service.warmup import _warm_clip

    from skysearch.config import Workspace
    from skysearch.errors import NotFoundError

    ws = Workspace(tmp_path / "ws")
    frame = FrameEncoderConfig(channels=["ir"], height=32, width=32)
    data = {"satellite": "goes-east", "channels": ["ir"], "length": 3, "gap_minutes": 30}
    torch.manual_seed(0)
    clip = clip_config_for(frame, 3)
    embedder = build_clip_embedder(frame.to_dict(), clip.to_dict(), pretrained=False)
    config = {"frame": frame.to_dict(), "clip": clip.to_dict(), "data": data}
    save_model(ws, "clip", embedder, config)
    rows = [("wv", 4, 60), ("ir", 4, 60), ("ir", 3, 30)]
    table = pa.Table.from_pylist(
        [
            {"clip_id": f"{c}-{n}x{g}", "satellite": "goes-east", "channels": [c], "length": n}
            | {"gap_minutes": g}
            for c, n, g in rows
        ],
        schema=CLIP_SCHEMA,
    )
    searched = []

    def search_clip(query, filters):
        searched.append(query.clip_id)
        if query.clip_id != "ir-3x30":
            raise NotFoundError(f"no clip model fits {query.clip_id}")

    searcher = SimpleNamespace(settings=SimpleNamespace(workspace=ws), search_clip=search_clip)
    catalogs = SimpleNamespace(get=lambda what: CatalogIndex(table, "clip_id"))
    assert _warm_clip(searcher, catalogs, ws.root) == "ok" and searched == ["ir-3x30"]
    table = table.slice(0, 2)  # no clip the model fits: the first one's search says why
    assert _warm_clip(searcher, catalogs, ws.root) == "no clip model fits wv-4x60"
