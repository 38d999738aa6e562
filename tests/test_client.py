"""The typed client speaks the service's wire schema (``retrieval/service/wire.py``): its
requests pass the service's own validation, its answers are the wire models, and importing it
loads no web framework. Against the real app in process, before it has loaded anything: a
request the schema accepts is answered 503 ("not ready"), one it refuses 422.
(``test_service.py`` drives every endpoint through the client over loopback HTTP.)"""

from __future__ import annotations

import io
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image
from skysearch.retrieval.service import responses
from skysearch.retrieval.service.app import create_app
from skysearch.retrieval.service.service import SearchService

from skysearch.client import ApiError, Filters, SkySearchClient
from skysearch.config import Settings, Workspace
from skysearch.errors import SkySearchError, UsageError

UUID = "00000000-0000-4000-8000-000000000000"


@pytest.fixture
def sky():
    from fastapi.testclient import TestClient

    unloaded = SearchService(Settings(workspace=Workspace(Path("/nonexistent-skysearch-ws"))))
    with SkySearchClient("", api_key="k", http=TestClient(create_app(unloaded, "k"))) as client:
        yield client


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("L", (8, 8), 9).save(out, format="PNG")
    return out.getvalue()


def test_requests_pass_the_service_schema(sky):
    when = datetime(2017, 9, 7, tzinfo=timezone.utc)
    common = dict(
        start=when,
        end="2017-09-08T00:00Z",
        months=[9],
        hours=(0, 23),
        day_of_year=(335, 59),
        channels=["ir"],
        satellites=["goes-east"],
        exclude_around=when,
        exclude_window_s=3600,
        bbox=(-100, 10, -60, 40),
        one_per_day=True,
    )
    scenes = Filters(**common, datasets=["rsscn7"], labels=["aGrass"])
    archive = Filters(**common, events=["198702"], min_class=3, max_pressure=980)
    calls = [
        lambda: sky.search_text("river", k=3, filters=scenes, model_id="text-image-1"),
        lambda: sky.search_clip(at=when, channels=["ir"], length=4, gap_minutes=60, k=5),
        lambda: sky.search_clip(clip_id=UUID, rerank=3, augment=True, filters=archive),
        lambda: sky.search_image([_png(), ("b.png", _png())], k=4, text="trees", filters=scenes),
        lambda: sky.search_image((_png(), _png()), k=4),  # a tuple of two images, not a pair
        lambda: sky.search_clip(at=when, channels="ir", k=5),  # one channel as a string
        lambda: sky.search_clip_frames([_png()] * 2, channel="ir", rerank=2, filters=archive),
        lambda: sky.search_clip_frames([_png()] * 2, augment=True),
        lambda: sky.search_clip(at=when, tolerance_minutes=30),
        lambda: sky.search_frame(at=when, channel="ir", rerank=4, filters=archive),
        lambda: sky.search_frame(frame_id=UUID, k=3, model_id="frame-1"),
        lambda: sky.search_frame_upload(("f.png", _png()), channel="ir", rerank=2, filters=archive),
        lambda: sky.search_text("river", k=3, filters={"labels": ["aGrass"]}),  # the JSON form
    ]
    for call in calls:
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status_code == 503 and "not ready" in info.value.detail


def test_numpy_values_ranges_and_odd_ids_are_sent_as_json_and_one_path_segment(sky):
    import numpy as np

    for call in (  # pydantic could not write these into an unchecked body
        lambda: sky.search_text("river", k=np.int64(3)),
        lambda: sky.search_frame(at="2017-09-07T00:45Z", filters=Filters(months=range(8, 10))),
        lambda: sky.search_clip(at="2017-09-07T00:45Z", filters=Filters(hours=np.array([1, 2]))),
    ):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status_code == 503  # reached the service (not ready yet)
    for odd in ("../health", "..", "."):  # were GET /health, GET / and GET /frames/
        with pytest.raises(ApiError) as info:
            sky.frame(odd)
        assert info.value.status_code in (404, 422), odd


def test_a_filter_of_another_search_kind_is_refused(sky):
    """Labels filter scenes, best-track fields frames and clips: sent to the other kind of
    search (JSON body or form) they are refused by name, not dropped or matched to nothing."""
    labels = Filters(labels=["aGrass"])
    for call in (
        lambda: sky.search_clip(clip_id=UUID, filters=labels),
        lambda: sky.search_frame_upload(("f.png", _png()), channel="ir", filters=labels),
        lambda: sky.search_clip_frames([_png()] * 2, channel="ir", filters=labels),
        lambda: sky.search_text("river", filters=Filters(min_class=3)),
        lambda: sky.search_image([_png()], filters=Filters(events=["198702"])),
    ):
        with pytest.raises(ApiError) as info:
            call()
        assert info.value.status_code == 422
        assert any(name in info.value.detail for name in ("labels", "min_class", "events"))


def test_the_service_checks_what_the_client_sends(sky):
    with pytest.raises(ApiError) as info:
        sky.search_text("river", filters=Filters(months=[13]))
    assert info.value.status_code == 422 and "months" in info.value.detail
    with pytest.raises(ApiError) as info:  # the clip id names the spec: no second one
        sky.search_clip(clip_id=UUID, channels=["ir"], length=4)
    assert info.value.status_code == 422
    assert "clip_id names the clip, its spec too: leave out channels, length" in info.value.detail
    with pytest.raises(ApiError) as info:  # nothing is matched by time
        sky.search_clip(clip_id=UUID, tolerance_minutes=30)
    assert "leave out tolerance_minutes (fields of a query by at)" in info.value.detail
    with pytest.raises(ApiError) as info:  # so does a frame id
        sky.search_frame(frame_id=UUID, channel="ir")
    assert info.value.status_code == 422
    assert "frame_id names the frame, its satellite and channel too: leave out channel" in (
        info.value.detail
    )
    with pytest.raises(TypeError, match="'k', 'month'. .k is the search method's argument.$"):
        Filters(month=[1], k=5)  # a typo would filter nothing; k is the methods' argument
    with pytest.raises(TypeError, match="use exclude_window_s, in seconds"):  # SearchFilters'
        Filters(exclude_window=3600)
    with pytest.raises(UsageError, match=r"filters are Filters\(\.\.\.\) or a dict, not str"):
        sky.search_text("river", filters="labels=aGrass")


def test_answers_are_wire_models(sky):
    state = sky.ready()
    assert isinstance(state, responses.ReadinessBody)
    assert (state.ready, state.state) == (False, "starting")
    assert sky.health() == {
        "status": "ok",
        "version": responses.Health.model_validate(sky.health()).version,
    }


def test_an_error_that_is_not_the_services_body():
    """A proxy's answer in front of the service: its text, not a crash (a JSON list made
    ``.get`` fail)."""
    import httpx

    for answer in (httpx.Response(502, json=["bad gateway"]), httpx.Response(502, text="<h1>")):
        transport = httpx.MockTransport(lambda _, answer=answer: answer)
        proxy = httpx.Client(base_url="http://proxy", transport=transport)
        with pytest.raises(ApiError) as info:
            SkySearchClient("", http=proxy).collections()
        assert info.value.status_code == 502 and info.value.detail == answer.text


def test_wait_ready_waits_for_a_service_not_listening_yet():
    """Just after `skysearch serve &` the port refuses connections: wait_ready keeps polling
    (no httpx traceback), and says plainly when nothing ever answered."""
    import httpx

    calls = []

    def starting(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) < 3:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return httpx.Response(200, json={"ready": True, "state": "ready", "detail": "ok"})

    http = httpx.Client(base_url="http://svc", transport=httpx.MockTransport(starting))
    assert SkySearchClient("", http=http).wait_ready(timeout=5, interval=0.01).ready
    assert calls == ["/ready"] * 3

    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    http = httpx.Client(base_url="http://svc", transport=httpx.MockTransport(refused))
    with pytest.raises(ApiError, match="service not reachable at http://svc.*refused") as info:
        SkySearchClient("", http=http).wait_ready(timeout=0.05, interval=0.01)
    assert info.value.status_code == 503


def test_client_and_wire_import_without_the_web_stack():
    code = (
        "import sys, skysearch.client, skysearch.retrieval.service.wire\n"
        "print(sorted({'fastapi', 'starlette', 'torch', 'qdrant_client'} & set(sys.modules)))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stderr[-2000:]


def test_every_failure_is_a_client_error_never_an_httpx_or_json_one():
    """Applications catch one family (ApiError, a SkySearchError): no answer (refused, reset,
    timed out), a proxy's HTML page with 200, JSON of another shape, a page served as an
    image, a URL without its scheme."""
    import httpx

    from skysearch.client import ServiceUnreachable

    def answer(kind: str):
        def handler(request: httpx.Request) -> httpx.Response:
            if kind == "reset":
                raise httpx.RemoteProtocolError("peer closed connection", request=request)
            if kind == "timeout":
                raise httpx.ReadTimeout("timed out", request=request)
            if kind == "html":
                return httpx.Response(200, html="<html>sign in</html>")
            return httpx.Response(200, json={"unexpected": True})

        return SkySearchClient(
            "", http=httpx.Client(base_url="http://svc", transport=httpx.MockTransport(handler))
        )

    for kind in ("reset", "timeout"):
        with pytest.raises(ServiceUnreachable, match="service not reachable at http://svc"):
            answer(kind).archive()
    for kind in ("html", "json"):
        with pytest.raises(ApiError, match="not the service's answer") as info:
            answer(kind).frame("00000000-0000-4000-8000-000000000000")
        assert info.value.status_code == 200
        with pytest.raises(ApiError, match="not the service's answer"):
            answer(kind).search_text("a river")
    with pytest.raises(ApiError, match="expected image/png, got text/html"):
        answer("html").frame_thumbnail("00000000-0000-4000-8000-000000000000")
    with pytest.raises(ValueError, match="needs http:// or https://"):
        SkySearchClient("localhost:8765")
    client = answer("json")  # misuse: said before any request, as a SkySearchError
    for call, said in (
        (lambda: client.search_image(None), "is a path, bytes or (name, bytes), not NoneType"),
        (lambda: client.search_image("/nonexistent/x.jpg"), "cannot read /nonexistent/x.jpg"),
        # a str was read one character at a time: "cannot read /: Is a directory"
        (lambda: client.search_clip_frames("/data/HUIR172500045.GIF"), "frames is a list of"),
        (lambda: client.search_clip(at="2017-09-07T00:45Z", k=True), "k is a number of hits"),
        (lambda: client.search_image(b"x", k=False), "k is a number of hits, not False"),
        # httpx refused the header: every call said "service not reachable", for 5 minutes
        # in wait_ready
        (lambda: SkySearchClient("http://svc", api_key="key\n"), "api_key holds a line break"),
        (lambda: SkySearchClient("http://svc", api_key=" key"), "or spaces at an end"),
        (lambda: client.search_clip_frames([("a.png",)]), "as a tuple is (name, bytes)"),
    ):
        with pytest.raises(SkySearchError, match=re.escape(said)):
            call()
    own = SkySearchClient("http://127.0.0.1:9")
    own.close()
    with pytest.raises(SkySearchError, match="this SkySearchClient is closed"):
        own.archive()  # httpx's RuntimeError before
