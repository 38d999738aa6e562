"""Page load of the web page with K animated clip hits, in a real browser, beside the API's own
latency for the same search.

Starts ``skysearch serve`` on a free loopback port (with an API key, as a deployment would),
then, per run, opens the page in a fresh headless chromium context (no HTTP cache) at
``/#kind=clip-time&at=AT&k=K``: the page searches on load and shows every hit as an animated
WebP. Measured in the browser (performance API, ms since navigation start): the search answer
rendered, and every image decoded and shown (``images``: the number that matters, goal < 2 s
on loopback). Run 1 finds the server's animation cache cold; later runs warm. Beside it, on a
second fresh server: the same search through the JSON API (httpx, warm, ``--runs`` times) and the K
animations fetched one after another, cold and warm.

    python bench/page.py -w WORKSPACE [--k 20] [--runs 5] [--at 2017-09-07T00:45Z] [--json]

Needs Debian's chromium (/usr/bin/chromium) and playwright. With ``--json`` the last stdout
line is ``{"api_search_ms": {...}, "page_images_ms": {"cold", "warm_p50"}, ...}``.
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from load import load_average
from serve import free_port, log, start_server, wait_ready

CHROMIUM = "/usr/bin/chromium"
#: What the page measured (performance marks of its first search, and that search's fetch).
MEASURE = """() => ({
  results: performance.getEntriesByName('results-1')[0].startTime,
  images: performance.getEntriesByName('images-1')[0].startTime,
  search_fetch: performance.getEntriesByType('resource')
    .find((r) => r.name.includes('/search/clip')).duration,
  hits: document.querySelectorAll('#hits .hit img').length,
})"""


def p50(values: list[float]) -> float:
    return round(statistics.median(values), 1)


def api_side(url: str, key: str, body: dict, runs: int) -> tuple[list[str], dict]:
    """The search's ids and its latencies through the JSON API; the animations fetched one
    after another, cold then warm."""
    with httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=120) as api:
        api.post("/search/clip", json=body).raise_for_status()  # warm-up (models are loaded)
        search = []
        for _ in range(runs):
            t = time.perf_counter()
            answer = api.post("/search/clip", json=body)
            search.append((time.perf_counter() - t) * 1000)
            answer.raise_for_status()
        ids = [hit["id"] for hit in answer.json()["results"]]
        fetch = {}
        for state in ("cold", "warm"):
            t = time.perf_counter()
            for clip_id in ids:
                api.get(f"/clips/{clip_id}/animation.webp", params={"size": 256}).raise_for_status()
            fetch[state] = round((time.perf_counter() - t) * 1000, 1)
    return ids, {
        "search_p50": p50(search),
        "search_runs": [round(s, 1) for s in search],
        **{f"animations_{k}_sequential": v for k, v in fetch.items()},
    }


def page_side(url: str, key: str, at: str, k: int, runs: int, cold_first: bool) -> list[dict]:
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        for run in range(runs):
            context = browser.new_context(viewport={"width": 1366, "height": 900})
            context.add_init_script(f"sessionStorage.setItem('skysearch.apiKey', {key!r})")
            page = context.new_page()
            page.goto(f"{url}/#kind=clip-time&at={at[:16]}&k={k}")
            page.wait_for_selector("body[data-images='1']", timeout=120_000)
            row = {key_: round(v, 1) for key_, v in page.evaluate(MEASURE).items()}
            row["cache"] = "cold" if run == 0 and cold_first else "warm"
            out.append(row)
            log(f"page run {run + 1}: {row}")
            context.close()
        browser.close()
    return out


@contextmanager
def served(workspace: Path) -> Iterator[tuple[str, str]]:
    """``skysearch serve`` with a fresh key on a free port, ready; (url, key)."""
    key, port = secrets.token_hex(16), free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(workspace.resolve(), port, key, cpus=None)
    try:
        wait_ready(url, key, server, timeout=300)
        yield url, key
    finally:
        server.terminate()
        server.wait(30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--workspace", type=Path, required=True)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--at", default="2017-09-07T00:45Z", help="query clip start (UTC)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"error: {CHROMIUM} not found (apt-get install chromium)")
    load_start = load_average()
    at = args.at if args.at.endswith("Z") else f"{args.at}Z"
    body = {"at": f"{at[:16]}:00Z", "channels": [], "filters": {"k": args.k}}
    # A fresh server for each side, so both find the animation cache cold at first.
    with served(args.workspace) as (url, key):
        rows = page_side(url, key, at, args.k, args.runs, cold_first=True)
    with served(args.workspace) as (url, key):
        ids, api = api_side(url, key, body, args.runs)
    warm = [r for r in rows if r["cache"] == "warm"]
    report = {
        "k": args.k,
        "hits_shown": rows[0]["hits"],
        "hits_api": len(ids),
        "api_search_ms": {"p50": api["search_p50"], "runs": api["search_runs"]},
        "api_animations_sequential_ms": {
            "cold": api["animations_cold_sequential"],
            "warm": api["animations_warm_sequential"],
        },
        "page_search_fetch_ms": {
            "cold": rows[0]["search_fetch"],
            "warm_p50": p50([r["search_fetch"] for r in warm]),
        },
        "page_results_ms": {
            "cold": rows[0]["results"],
            "warm_p50": p50([r["results"] for r in warm]),
        },
        "page_images_ms": {"cold": rows[0]["images"], "warm_p50": p50([r["images"] for r in warm])},
        "goal_ms": 2000,
        "load_average": {"start": load_start, "end": load_average()},
    }
    print(f"{args.k} animated hits on loopback (ms; page times from navigation start)")
    print(f"{'':38}{'cold':>10}{'warm p50':>10}")
    print(f"{'API: POST /search/clip (httpx)':38}{'':>10}{report['api_search_ms']['p50']:>10}")
    anim = report["api_animations_sequential_ms"]
    print(f"{'API: the animations, one by one':38}{anim['cold']:>10}{anim['warm']:>10}")
    for name, key_ in (
        ("page: search fetch", "page_search_fetch_ms"),
        ("page: results rendered", "page_results_ms"),
        ("page: all images shown", "page_images_ms"),
    ):
        print(f"{name:38}{report[key_]['cold']:>10}{report[key_]['warm_p50']:>10}")
    load = report["load_average"]
    print(
        f"goal: all images shown < {report['goal_ms']} ms; "
        f"load average start {load['start']} end {load['end']}"
    )
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
