"""The web page (``GET /``) in a real browser: headless Debian chromium driven by playwright.

One browser and one page for the module, against the shared service on loopback (with its API
key, so the page must ask for it) over the shared small workspace (``service_env``). Each step
searches as a user does (form, clicks, file chooser), then compares the hits the page shows,
in order, with the JSON API's answer to the same request. Every request the page makes is
recorded; none may leave the server's origin (the page's Content-Security-Policy stays on, so
the browser would refuse them too). A screenshot per step goes to ``$SKYSEARCH_PAGE_SHOTS``
or a temporary folder (its path is printed).

Skipped with the reason when ``/usr/bin/chromium`` (Debian's ``chromium``; ``.ci/run`` installs
it) or playwright is missing: playwright's own browser download does not work offline.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest
from service_env import API_KEY, QUERY_AT, SAMPLE, server, shared_workspace

CHROMIUM = Path("/usr/bin/chromium")
GOES = SAMPLE / "goes-irma-2017" / "infrared"
#: Six consecutive hourly frames of the sample: one query clip of the workspace's spec.
CLIP_FILES = [GOES / f"HUIR17250{h:02d}45.GIF" for h in range(6)]
WAIT_MS = 30_000

if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium; "
        ".ci/run does) to run the browser tests",
        allow_module_level=True,
    )
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    where = os.environ.get("SKYSEARCH_PAGE_SHOTS")
    folder = Path(where) if where else tmp_path_factory.mktemp("page-screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"page screenshots: {folder}")
    return folder


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


class Session:
    """The page under test, the requests it made, and the API beside it."""

    def __init__(self, page, url: str, shots: Path) -> None:
        self.page = page
        self.url = url
        self.shots = shots
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.api = httpx.Client(base_url=url, headers={"X-API-Key": API_KEY}, timeout=60)
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shot(self, name: str) -> None:
        self.page.screenshot(
            path=self.shots / f"{len(list(self.shots.glob('*.png'))):02d}-{name}.png"
        )

    def search(self, kind: str | None = None, **fields: str) -> None:
        """Choose the query kind, fill fields (by id), press Search, wait until every image
        of the answer is shown."""
        page = self.page
        if kind:
            page.check(f"input[name=kind][value={kind}]")
        for field_id, value in fields.items():
            page.fill(f"#{field_id}", value)
        self.submit()

    def submit(self) -> None:
        done = int(self.page.get_attribute("body", "data-images") or 0)
        self.page.click("#go")
        self.page.wait_for_selector(f"body[data-images='{done + 1}']", timeout=WAIT_MS)

    def shown(self) -> list[str]:
        return [h.get_attribute("data-id") for h in self.page.query_selector_all("#hits .hit")]

    def answer(self, path: str, **kw) -> list[str]:
        response = self.api.post(path, **kw)
        assert response.status_code == 200, response.text
        return [hit["id"] for hit in response.json()["results"]]

    def images_loaded(self) -> bool:
        """Every hit shows an image the browser decoded (no 'no image' placeholder)."""
        imgs = self.page.query_selector_all("#hits .hit img")
        widths = [img.evaluate("i => i.naturalWidth") for img in imgs]
        return len(imgs) == len(self.shown()) and all(w > 0 for w in widths)


@pytest.fixture(scope="module")
def session(browser, served_url, shots):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    s = Session(page, served_url, shots)
    page.goto(f"{served_url}/")
    # The service needs a key: the page's first API call is refused, so it asks for it.
    page.wait_for_selector("#key-dialog[open]", timeout=WAIT_MS)
    s.shot("asks-for-key")
    page.fill("#key-input", API_KEY)
    page.click("#key-dialog button[value=save]")
    page.wait_for_selector("body[data-archive=loaded]", timeout=WAIT_MS)
    s.shot("status")
    yield s
    s.api.close()
    context.close()


def test_the_key_is_asked_once_kept_in_the_tab_and_never_in_a_url(session):
    page = session.page
    assert page.evaluate("() => sessionStorage.getItem('skysearch.apiKey')") == API_KEY
    assert not page.is_visible("#key-dialog")
    status = page.inner_text("#status")
    archive = session.api.get("/archive").json()
    assert f"{archive['frames']}" in status and "goes-east" in status
    assert all(m["model_id"] in status for m in archive["models"])
    assert page.get_attribute("#at", "min") == archive["start"][:16]


def test_clip_search_by_time_shows_the_api_answer_as_animations(session):
    session.search("clip-time", at=QUERY_AT[:16], k="8")
    session.shot("clip-by-time")
    body = {"at": f"{QUERY_AT[:16]}:00Z", "channels": [], "filters": {"k": 8}}
    assert session.shown() == session.answer("/search/clip", json=body)
    assert session.images_loaded()
    srcs = [i.get_attribute("src") for i in session.page.query_selector_all("#hits img")]
    assert all(s.startswith(f"blob:{session.url}/") for s in srcs)
    assert any("/animation.webp" in r for r in session.requests)
    assert session.page.query_selector("#query img") is not None  # the query clip, on top
    assert len(session.page.query_selector_all("#timeline a.tick")) == 8
    # each hit's JSON and contact sheet download with the key (a plain link would send none)
    first = session.shown()[0]
    with session.page.expect_download() as got:
        session.page.click("#hit-1 .links a:text('JSON')")
    assert (
        json.loads(Path(got.value.path()).read_text()) == session.api.get(f"/clips/{first}").json()
    )
    with session.page.expect_download() as got:
        session.page.click("#hit-1 .links a:text('Contact sheet')")
    assert Path(got.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert got.value.suggested_filename == f"clip-{first}.png"


def test_more_like_this_makes_a_hit_the_query(session):
    second = session.shown()[1]
    done = int(session.page.get_attribute("body", "data-images"))
    session.page.focus("#hit-2 .media")  # by keyboard: the picture is a button
    session.page.keyboard.press("Enter")
    session.page.wait_for_selector(f"body[data-images='{done + 1}']", timeout=WAIT_MS)
    session.shot("more-like-this")
    assert session.page.input_value("#clip_id") == second
    body = {"clip_id": second, "rerank": 0, "augment": False, "filters": {"k": 8}}
    shown = session.shown()
    assert shown == session.answer("/search/clip", json=body)
    assert shown[0] == second  # the clip itself is the best match of its own query


def test_a_filter_changes_the_answer_as_the_api_does(session):
    page = session.page
    page.check("input[name=kind][value=clip-time]")
    page.fill("#at", QUERY_AT[:16])
    page.fill("#k", "8")
    page.fill("#hours", "0-5")
    page.check("#one_per_day")
    session.submit()
    session.shot("filter-hours-one-per-day")
    page.fill("#hours", "")
    page.uncheck("#one_per_day")
    flt = {"k": 8, "hours": [0, 1, 2, 3, 4, 5], "one_per_day": True}
    shown = session.shown()
    body = {"at": f"{QUERY_AT[:16]}:00Z", "filters": flt}
    assert shown == session.answer("/search/clip", json=body)
    times = [t.inner_text() for t in page.query_selector_all("#hits .caption span")]
    days = [t[:10] for t in times if t.startswith("20")]
    assert len(days) == len(set(days)) == len(shown)
    assert all(0 <= int(t[11:13]) <= 5 for t in times if t.startswith("20"))


def test_text_search_shows_scene_images(session):
    session.search("text", text="a river next to a road", k="6")
    session.shot("text")
    body = {"text": "a river next to a road", "filters": {"k": 6}}
    assert session.shown() == session.answer("/search/text", json=body)
    assert session.images_loaded()
    assert any("/scenes/" in r for r in session.requests)

    # more like a scene: its image (as the service serves it) becomes an image query
    first = session.shown()[0]
    done = int(session.page.get_attribute("body", "data-images"))
    session.page.click("#hit-1 .media")
    session.page.wait_for_selector(f"body[data-images='{done + 1}']", timeout=WAIT_MS)
    session.shot("more-like-a-scene")
    image = session.api.get(f"/scenes/{first}/thumbnail.png", params={"size": 512}).content
    files = {"image": ("scene.png", image, "image/png")}
    form = {"k": "6", "one_per_day": "false"}
    shown = session.shown()
    assert shown == session.answer("/search/image", files=files, data=form)
    assert shown[0] == first  # the scene is the best match of its own image


def test_uploaded_frames_search_clips_and_one_frame_searches_frames(session):
    page = session.page
    page.check("input[name=kind][value=upload]")
    page.fill("#k", "5")
    page.set_input_files("#files", [str(p) for p in reversed(CLIP_FILES)])  # sorted by name
    assert len(page.query_selector_all("#previews img")) == len(CLIP_FILES)
    session.submit()
    session.shot("upload-clip")
    files = [("frames", (p.name, p.read_bytes(), "image/gif")) for p in CLIP_FILES]
    form = {"k": "5", "rerank": "0", "augment": "false", "one_per_day": "false"}
    assert session.shown() == session.answer("/search/clip/frames", files=files, data=form)
    assert len(page.query_selector_all("#query img")) == len(CLIP_FILES)

    page.set_input_files("#files", str(CLIP_FILES[0]))
    session.submit()
    session.shot("upload-frame")
    one = {"frame": (CLIP_FILES[0].name, CLIP_FILES[0].read_bytes(), "image/gif")}
    form = {"k": "5", "rerank": "0", "one_per_day": "false"}
    shown = session.shown()
    assert shown == session.answer("/search/frame/upload", files=one, data=form)
    assert {h.get_attribute("data-kind") for h in page.query_selector_all("#hits .hit")} == {
        "frame"
    }


@pytest.mark.parametrize("width", [1024, 1366])
def test_laptop_widths_need_no_sideways_scrolling(session, width):
    page = session.page
    page.set_viewport_size({"width": width, "height": 768})
    session.shot(f"width-{width}")
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    page.set_viewport_size({"width": 1280, "height": 860})
    assert overflow <= 0


def test_event_and_track_filters_reach_the_api(session):
    """The best-track and place inputs go into the request's filters: this archive (GOES) has
    no events, tracks or footprints, so the page shows what the API answers for them: an event
    is refused by name, a minimum class and a box are said to match nothing."""
    page = session.page
    page.check("input[name=kind][value=clip-time]")
    page.fill("#at", QUERY_AT[:16])
    page.fill("#k", "8")
    page.fill("#events", "198702")
    page.click("#go")
    page.wait_for_selector("body[data-state=error]", timeout=WAIT_MS)
    assert "unknown '198702': the archive has no events" in page.inner_text("#message")
    page.fill("#events", "")
    page.select_option("#min_class", "4")  # no clip has a track: it would keep nothing
    page.click("#go")
    said = "min_class filter matches nothing: no clip has a best track"
    page.wait_for_selector(f"#message:has-text('{said}')", timeout=WAIT_MS)
    page.select_option("#min_class", "")
    page.fill("#bbox", "120, 10, 150, 30")  # clips of no storm, no footprint: placed nowhere
    page.click("#go")
    said = "bbox filter matches nothing: no clip has a place"
    page.wait_for_selector(f"#message:has-text('{said}')", timeout=WAIT_MS)
    page.fill("#bbox", "")


def test_the_frames_field_reaches_the_api(session):
    """The Frames (length) input was never sent: ``form.elements.length`` is the number of the
    form's controls, not the input named "length"; the model's clips came back instead."""
    page = session.page
    page.check("input[name=kind][value=clip-time]")
    page.fill("#at", QUERY_AT[:16])
    page.fill("#length", "3")  # the service's clip model embeds 6-frame clips
    page.click("#go")
    page.wait_for_selector("body[data-state=error]", timeout=WAIT_MS)
    assert "length 3" in page.inner_text("#message")
    page.fill("#length", "")


def test_a_refused_request_shows_the_servers_detail(session):
    session.search("clip-time", at=QUERY_AT[:16], k="5")  # an answer on show before
    assert session.shown()
    unknown = "00000000-0000-4000-8000-000000000000"
    session.page.check("input[name=kind][value=clip-id]")
    session.page.fill("#clip_id", unknown)
    session.page.click("#go")
    session.page.wait_for_selector("body[data-state=error]", timeout=WAIT_MS)
    session.shot("error")
    detail = session.api.post("/search/clip", json={"clip_id": unknown}).json()["detail"]
    message = session.page.inner_text("#message")
    assert detail in message and "404" in message
    assert session.shown() == [] and not session.page.is_visible("#query")  # no stale answer


def test_a_shared_link_runs_its_search_once_the_key_is_given(session, browser):
    """A link opened in a new tab (no key there yet) asked for the key, then did nothing."""
    session.search("clip-time", at=QUERY_AT[:16], k="5")
    expected = session.shown()
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    tab = context.new_page()
    tab.goto(session.page.url)  # the form is in the link
    tab.wait_for_function("() => window.skysearch.refused", timeout=WAIT_MS)
    tab.fill("#key-input", API_KEY)
    tab.click("#key-dialog button[value=save]")
    tab.wait_for_selector("body[data-state=done]", timeout=WAIT_MS)
    shown = [h.get_attribute("data-id") for h in tab.query_selector_all("#hits .hit")]
    context.close()
    assert expected and shown == expected


def test_a_service_out_of_reach_is_said_so(session):
    """It said "Error: Failed to fetch"."""
    page = session.page
    page.route("**/search/**", lambda route: route.abort())
    try:
        page.check("input[name=kind][value=clip-time]")
        page.fill("#at", QUERY_AT[:16])
        page.click("#go")
        page.wait_for_selector("body[data-state=error]", timeout=WAIT_MS)
        message = page.inner_text("#message")
    finally:
        page.unroute("**/search/**")
    assert f"cannot reach the SkySearch service at {session.url}; is it running?" in message


def test_the_page_works_on_loopback_without_a_key(browser, tmp_path_factory):
    """A service started without a key: the page never asks; its status loads."""
    keyless = server(shared_workspace(tmp_path_factory).root, api_key=None)
    page = browser.new_page()
    page.goto(f"{keyless}/")
    page.wait_for_selector("body[data-archive=loaded]", timeout=WAIT_MS)
    assert not page.is_visible("#key-dialog")
    page.close()


def test_no_request_leaves_the_servers_origin(session):
    """Last: every request of every step went to the server itself (or a blob of it)."""
    assert session.requests
    own = (f"{session.url}/", f"blob:{session.url}/", "data:")
    outside = [r for r in session.requests if not r.startswith(own)]
    assert not outside, outside
    assert not [r for r in session.requests if API_KEY in r]
    assert not session.errors, session.errors


def test_the_api_docs_render_with_nothing_fetched_from_outside(browser, served_url):
    """/docs loaded Swagger UI from a CDN: a blank page on a network without internet (where
    forecasters' services run). Its scripts now come from the service; requests anywhere else
    are blocked, and the page must still show the API's operations."""
    context = browser.new_context()
    page = context.new_page()
    outside: list[str] = []

    def only_the_service(route) -> None:
        if route.request.url.startswith(served_url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", only_the_service)
    page.goto(f"{served_url}/docs")
    page.wait_for_selector("#operations-search-search_text_search_text_post", timeout=WAIT_MS)
    assert "SkySearch" in page.inner_text(".swagger-ui .info .title")
    assert outside == []
    context.close()
