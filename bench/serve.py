"""Load test of the HTTP search service on loopback: text and clip search, concurrent clients.

Starts ``skysearch serve`` as a child process on a free loopback port (with an API key, as a
deployment would), waits for /ready, then runs one bounded phase per kind: ``--clients``
threads, each with its own typed client, send requests until ``--requests`` are done or
``--seconds`` have passed; then it stops the server. Latency is client-side wall time per
request (HTTP included); qps = completed requests / phase wall time.

    python bench/serve.py -w WORKSPACE [--clients 4] [--requests 200] [--seconds 60] [--json]

The workspace needs a text-image model with indexed scenes and a clip model with indexed clips
(``skysearch demo`` makes one). With ``--json`` the last stdout line is
``{"text": {"p50_ms", "p99_ms", "qps", "n", "server_cpu_ms_per_request"}, "clip": {...},
"errors": int, "loadavg_before", ...}``; progress goes to stderr. Latencies depend on what else
runs on the machine (the load averages are printed beside them); the server's CPU time per
request does much less.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from skysearch.client import Filters, SkySearchClient

TEXTS = [
    "a river next to green fields",
    "dense residential area with small houses",
    "parking lot full of cars",
    "industrial buildings and warehouses",
    "a forest",
    "grassland",
    "farmland with crops",
    "a lake surrounded by trees",
    "houses with gardens",
    "a large factory roof",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(workspace: Path, port: int, key: str, cpus: int | None) -> subprocess.Popen:
    """``skysearch serve`` in a child process (optionally pinned to the first ``cpus`` cores)."""
    env = {**os.environ, "SKYSEARCH_API_KEY": key}
    cmd = [sys.executable, "-m", "skysearch", "serve", "--port", str(port), "-w", str(workspace)]

    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, set(range(cpus)))

    return subprocess.Popen(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr, preexec_fn=pin)


def wait_ready(url: str, key: str, server: subprocess.Popen, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    with SkySearchClient(url, api_key=key) as client:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise SystemExit(f"error: the server exited ({server.returncode}) before ready")
            try:
                state = client.ready()
            except Exception:  # noqa: BLE001 - not listening yet
                time.sleep(0.2)
                continue
            if state.ready or state.state == "failed":
                return state.__dict__
            time.sleep(0.2)
    raise SystemExit(f"error: the service was not ready after {timeout:.0f} s")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def clip_times(workspace: Path, limit: int = 200) -> tuple[list[str], dict]:
    """Start times of catalog clips of the latest clip model's spec (the clip queries)."""
    from skysearch.encoders.registry import latest
    from skysearch.ingest.clips import read_clips

    from skysearch.config import load_settings
    from skysearch.timeutil import to_rfc3339

    ws = load_settings(workspace=workspace).workspace
    data = latest(ws, "clip").config["data"]
    table = read_clips(ws, data["satellite"], data["channels"], data["length"], data["gap_minutes"])
    starts = [to_rfc3339(t) for t in table["start"].to_pylist()]
    if not starts:
        raise SystemExit("error: no clips of the clip model's spec in the catalog")
    step = max(1, len(starts) // limit)
    return starts[::step][:limit], data


def run_phase(
    name: str,
    url: str,
    key: str,
    call: Callable[[SkySearchClient, int], object],
    clients: int,
    requests: int,
    seconds: float,
) -> tuple[dict, int, list[str]]:
    """``clients`` threads share a request counter; returns stats, error count, error samples."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    deadline = time.monotonic() + seconds

    def worker() -> None:
        nonlocal issued
        with SkySearchClient(url, api_key=key, timeout=120) as client:
            while True:
                with lock:
                    if issued >= requests or time.monotonic() > deadline:
                        return
                    i = issued
                    issued += 1
                t0 = time.perf_counter()
                try:
                    call(client, i)
                    ok = True
                except Exception as exc:  # noqa: BLE001 - every failure is counted
                    ok = False
                    message = f"{type(exc).__name__}: {exc}"
                elapsed = (time.perf_counter() - t0) * 1000
                with lock:
                    if ok:
                        latencies.append(elapsed)
                    else:
                        errors.append(message)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = np.array(latencies) if latencies else np.array([np.nan])
    stats = {
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "qps": round(len(latencies) / wall, 2),
        "n": len(latencies),
        "seconds": round(wall, 2),
    }
    log(
        f"{name}: {stats['n']} ok, {len(errors)} errors in {wall:.1f} s: p50 {stats['p50_ms']} "
        f"ms, p99 {stats['p99_ms']} ms, {stats['qps']} req/s ({clients} clients)"
    )
    return stats, len(errors), errors[:5]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--workspace", type=Path, default=None)
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients per phase")
    parser.add_argument("--requests", type=int, default=200, help="requests per phase")
    parser.add_argument("--seconds", type=float, default=60.0, help="time cap per phase")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured requests per kind")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cpus", type=int, default=2, help="pin the server to N cores (0: no)")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()

    from skysearch.config import load_settings

    workspace = load_settings(workspace=args.workspace).workspace.root
    times, spec = clip_times(workspace)
    key = secrets.token_urlsafe(16)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cpus = min(args.cpus, os.cpu_count() or 1) if args.cpus else None
    load_before = os.getloadavg()
    log(f"starting skysearch serve on {url} (workspace {workspace}, cpus {cpus or 'all'})")
    server = start_server(workspace, port, key, cpus)
    try:
        t0 = time.perf_counter()
        state = wait_ready(url, key, server, args.ready_timeout)
        if not state["ready"]:
            raise SystemExit(f"error: the service failed to load: {state['detail']}")
        log(f"ready in {time.perf_counter() - t0:.1f} s (server load {state['load_seconds']} s)")
        channel = spec["channels"]

        def text(client: SkySearchClient, i: int) -> object:
            return client.search_text(TEXTS[i % len(TEXTS)], k=args.k)

        def clip(client: SkySearchClient, i: int) -> object:
            return client.search_clip(
                at=times[i % len(times)],
                channels=channel,
                length=spec["length"],
                gap_minutes=spec["gap_minutes"],
                k=args.k,
                filters=Filters(exclude_window_s=12 * 3600),
            )

        results: dict = {}
        errors = 0
        samples: list[str] = []
        for name, call in (("text", text), ("clip", clip)):
            run_phase(f"{name} warm-up", url, key, call, 1, args.warmup, args.seconds)
            cpu0 = cpu_seconds(server.pid)
            stats, n_err, errs = run_phase(
                name, url, key, call, args.clients, args.requests, args.seconds
            )
            # Server CPU time per request: what a request costs, whatever else loads the machine.
            cpu_ms = (cpu_seconds(server.pid) - cpu0) * 1000 / max(1, stats["n"] + n_err)
            results[name] = {**stats, "server_cpu_ms_per_request": round(cpu_ms, 2)}
            errors += n_err
            samples += errs
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    for message in samples:
        log(f"error sample: {message}")
    out = {
        **results,
        "errors": errors,
        "clients": args.clients,
        "requests_per_phase": args.requests,
        "k": args.k,
        "server_cpus": cpus or os.cpu_count(),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "workspace": str(workspace),
    }
    if args.json:
        print(json.dumps(out), flush=True)
    else:
        log(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
