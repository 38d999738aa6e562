"""Load test of the HTTP search service on loopback: text and clip search, concurrent clients,
and the server's peak memory under the largest uploads the documented limits allow.

Starts ``skysearch serve`` as a child process on a free loopback port (with an API key, as a
deployment would), waits for /ready, then runs one bounded phase per kind and client count:
``--clients`` threads (a list: ``1,4`` runs both), each with its own typed client, send
requests until ``--requests`` are done or ``--seconds`` have passed; then it stops the server.
With several ``--batch-window-ms`` (e.g. ``0,2``: without and with micro-batching) one server
per window runs the same phases, one after the other, so the numbers sit side by side. Latency
is client-side wall time per request (HTTP included); qps = completed requests / phase wall
time; server CPU per request = the server's CPU time during the phase / its requests.

Upload phases (on the first server; ``--upload-requests`` each, 0: none; ``--upload-clients``
at once; the peak RSS of the server process is measured per phase: /proc/PID/clear_refs
resets VmHWM, then VmHWM - VmRSS before the phase = ``peak_extra_rss_mb``):

- ``frames_max``: a query clip of the clip model's length whose frames are the largest the
  limits allow (the satellite profile's largest accepted size, capped by the per-frame and
  per-request pixel limits; RGBA), each padded to its share of the body limit (<= 8 MiB a
  file) with Pillow's maximum of PNG text chunks (60 x 1 MB, decompressed on open) and a
  private chunk: the worst case a served request can be;
- ``frames_48``: 48 such frames (the frame limit; refused before decoding unless a 48-frame
  clip model exists);
- ``frames_attack``: the issue-14 attack, 48 PNGs of ~65 KB declaring 4096x4096 RGBA;
- ``image_max``: ``/search/image`` with a 4096x4096 RGBA PNG padded likewise.

    python bench/serve.py -w WORKSPACE [--clients 1,4] [--batch-window-ms 0,2]
        [--torch-threads 1,2] [--trace-text 1,0] [--kinds text] [--requests 200] [--seconds 60]
        [--upload-requests 0] [--json]

The workspace needs a text-image model with indexed scenes and a clip model with indexed clips
(``skysearch demo`` makes one). With ``--json`` the last stdout line is
``{"phases": [{"kind", "clients", "batch_window_ms", "torch_threads", "trace_text", "p50_ms",
"p95_ms", "p99_ms", "qps", "n", "server_cpu_ms_per_request"}, ...], "frames_max": {..., "status",
"peak_extra_rss_mb"}, ..., "errors": int, "load_average": {"start", "end"}, ...}``; a table
of the phases and progress go to stderr. Latencies depend on what else runs on the machine (the
load averages are printed beside them); the server's CPU time per request and its peak memory
do much less.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from load import load_average

from skysearch.client import ApiError, Filters, SkySearchClient

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


def start_server(
    workspace: Path, port: int, key: str, cpus: int | None, options: Sequence[str] = ()
) -> subprocess.Popen:
    """``skysearch serve [options]`` in a child process (optionally pinned to the first
    ``cpus`` cores); no options: the service's defaults."""
    env = {**os.environ, "SKYSEARCH_API_KEY": key}
    cmd = [sys.executable, "-m", "skysearch", "serve", "--port", str(port), "-w", str(workspace)]
    cmd += list(options)

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


def proc_status_mb(pid: int, field: str) -> float:
    """A memory field of /proc/PID/status (VmRSS, VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"error: no {field} in /proc/{pid}/status")


@contextmanager
def peak_extra_rss(pid: int, out: dict) -> Iterator[None]:
    """Sets ``out["peak_extra_rss_mb"]``: the server's peak RSS during the block above its RSS
    before it (the kernel's high-water mark, reset first: every allocation counts, however
    brief)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = proc_status_mb(pid, "VmRSS")
    yield
    out["rss_before_mb"] = round(before, 1)
    out["peak_extra_rss_mb"] = round(proc_status_mb(pid, "VmHWM") - before, 1)


def largest_frame(profile, pixels_cap: int, max_side: int) -> tuple[int, int]:
    """The largest (width, height) a crop rule of ``profile`` accepts within the caps."""
    best = (0, 0)
    for rule in profile.crops:
        width, height = rule.get("width"), rule.get("height")
        if width is None and height is None:
            width = height = min(max_side, int(pixels_cap**0.5))
        elif width is None:
            width = min(max_side, pixels_cap // height)
        elif height is None:
            height = min(max_side, pixels_cap // width)
        fits = width * height <= pixels_cap and profile.crop_box(width, height) is not None
        if fits and width * height > best[0] * best[1]:
            best = (width, height)
    if best == (0, 0):
        raise SystemExit(f"error: no frame size of profile {profile.name} fits the limits")
    return best


def padded_png(size: tuple[int, int], max_bytes: int) -> bytes:
    """An RGBA PNG of zeros of ``size`` carrying Pillow's maximum of text (60 zTXt chunks of
    1 MB, decompressed when the file is opened) and a private chunk filling it to
    ``max_bytes``: small pixel data, the most memory a header may cost."""
    import io

    from PIL import Image, PngImagePlugin

    def encode(fill: int) -> bytes:
        info = PngImagePlugin.PngInfo()
        for i in range(60):
            info.add_text(f"t{i}", "0" * 1_000_000, zip=True)
        if fill:
            info.add(b"fiLl", bytes(fill))
        out = io.BytesIO()
        Image.new("RGBA", size).save(out, format="PNG", pnginfo=info, compress_level=9)
        return out.getvalue()

    bare = encode(0)
    fill = max_bytes - len(bare) - 12  # a chunk's length, type and CRC: 12 bytes
    return encode(fill) if fill > 0 else bare


def upload_requests(spec: dict) -> dict[str, tuple[str, list[tuple[str, bytes]]]]:
    """The upload phases: name -> ("frames" or "image", files), from the service's limits."""
    import io

    from PIL import Image
    from skysearch.ingest.profiles import load_profiles
    from skysearch.retrieval.service.service import ServiceLimits

    limits = ServiceLimits()
    profile = next(p for p in load_profiles().values() if p.satellite == spec["satellite"])
    overhead = 4096  # multipart headers and form fields, generously

    def frames(n: int) -> list[tuple[str, bytes]]:
        cap = min(limits.upload.max_pixels, limits.max_request_pixels // n)
        size = largest_frame(profile, cap, limits.upload.max_side)
        share = min(limits.upload.max_bytes, (limits.max_request_bytes - overhead) // n - 256)
        log(f"upload frames: {n} x {size[0]}x{size[1]} RGBA, {share} bytes each")
        data = padded_png(size, share)
        return [(f"frame-{i:02d}.png", data) for i in range(n)]

    zeros = io.BytesIO()
    Image.new("RGBA", (4096, 4096)).save(zeros, format="PNG", compress_level=9)
    side = limits.upload.max_side
    image_share = min(limits.upload.max_bytes, limits.max_request_bytes - overhead)
    attack = [(f"zeros-{i:02d}.png", zeros.getvalue()) for i in range(limits.max_frames)]
    return {
        "frames_max": ("frames", frames(spec["length"])),
        "frames_48": ("frames", frames(limits.max_frames)),
        "frames_attack": ("frames", attack),
        "image_max": ("image", [("image.png", padded_png((side, side), image_share))]),
    }


def upload_call(kind: str, files: list[tuple[str, bytes]], spec: dict) -> Callable:
    """One upload request through the client. Its HTTP status is recorded: a 4xx is the
    expected outcome of a refused phase, not an error; a 5xx is an error."""
    statuses: list[int] = []

    def call(client: SkySearchClient, _: int) -> object:
        try:
            if kind == "image":
                result = client.search_image(files[0])
            else:
                result = client.search_clip_frames(
                    files, channel=spec["channels"][0], gap_minutes=spec["gap_minutes"]
                )
        except ApiError as exc:
            statuses.append(exc.status_code)
            if exc.status_code >= 500:
                raise
            return exc
        statuses.append(200)
        return result

    call.statuses = statuses  # type: ignore[attr-defined]
    return call


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
        "p95_ms": round(float(np.percentile(lat, 95)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "qps": round(len(latencies) / wall, 2),
        "n": len(latencies),
        "seconds": round(wall, 2),
    }
    log(
        f"{name}: {stats['n']} ok, {len(errors)} errors in {wall:.1f} s: p50 {stats['p50_ms']} "
        f"ms, p95 {stats['p95_ms']} ms, p99 {stats['p99_ms']} ms, {stats['qps']} req/s "
        f"({clients} clients)"
    )
    return stats, len(errors), errors[:5]


def numbers(text: str, kind: type = int) -> list:
    """A comma-separated list of numbers (an option)."""
    try:
        return [kind(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of numbers: {text!r}") from None


def stop_server(server: subprocess.Popen) -> None:
    server.send_signal(signal.SIGINT)
    try:
        server.wait(30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def table(phases: list[dict]) -> str:
    """The phases as a Markdown table (stderr; RESULTS.md entries)."""
    keys = ["kind", "clients", "batch_window_ms", "torch_threads", "trace_text"]
    keys += ["p50_ms", "p95_ms", "p99_ms", "qps"]
    keys += ["server_cpu_ms_per_request", "n"]
    rows = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    rows += ["| " + " | ".join(str(p[k]) for k in keys) + " |" for p in phases]
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-w", "--workspace", type=Path, default=None)
    parser.add_argument(
        "--clients", type=numbers, default=[4], help="concurrent clients per phase (list: 1,4)"
    )
    for flag, kind, default, values in (
        ("--batch-window-ms", float, 2.0, "0,2"),
        ("--torch-threads", int, 1, "1,2"),
        ("--trace-text", int, 1, "0,1"),  # 1: --trace-text, 0: --no-trace-text
    ):
        parser.add_argument(
            flag,
            type=lambda text, kind=kind: numbers(text, kind),
            default=[default],
            help=f"serve {flag}; a list ({values}) runs one server per value and other lists'",
        )
    parser.add_argument("--kinds", default="text,clip", help="search kinds: text,clip")
    parser.add_argument("--requests", type=int, default=200, help="requests per phase")
    parser.add_argument("--seconds", type=float, default=60.0, help="time cap per phase")
    parser.add_argument("--warmup", type=int, default=5, help="unmeasured requests per kind")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--cpus", type=int, default=2, help="pin the server to N cores (0: no)")
    parser.add_argument("--ready-timeout", type=float, default=600.0)
    parser.add_argument(
        "--upload-requests", type=int, default=4, help="requests per upload phase (0: none)"
    )
    parser.add_argument("--upload-clients", type=int, default=1, help="concurrent upload clients")
    parser.add_argument("--json", action="store_true", help="print one JSON object last")
    args = parser.parse_args()
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not set(kinds) <= {"text", "clip"}:
        parser.error(f"--kinds: text and/or clip, got {args.kinds!r}")

    from skysearch.config import load_settings

    workspace = load_settings(workspace=args.workspace).workspace.root
    times, spec = clip_times(workspace)
    uploads = upload_requests(spec) if args.upload_requests > 0 else {}
    key = secrets.token_urlsafe(16)
    cpus = min(args.cpus, os.cpu_count() or 1) if args.cpus else None
    load_start = load_average()
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

    calls = {"text": text, "clip": clip}
    results: dict = {"phases": []}
    errors = 0
    samples: list[str] = []
    servers = itertools.product(
        args.batch_window_ms, args.torch_threads, map(bool, args.trace_text)
    )
    for number, (window, threads, trace) in enumerate(servers):
        url = f"http://127.0.0.1:{free_port()}"
        log(
            f"starting skysearch serve on {url} (workspace {workspace}, cpus {cpus or 'all'}, "
            f"batch window {window} ms, {threads} torch threads, text tower "
            f"{'traced' if trace else 'eager'})"
        )
        options = ["--batch-window-ms", str(window), "--torch-threads", str(threads)]
        options.append("--trace-text" if trace else "--no-trace-text")
        server = start_server(workspace, int(url.rsplit(":", 1)[1]), key, cpus, options)
        try:
            t0 = time.perf_counter()
            state = wait_ready(url, key, server, args.ready_timeout)
            if not state["ready"]:
                raise SystemExit(f"error: the service failed to load: {state['detail']}")
            log(
                f"ready in {time.perf_counter() - t0:.1f} s (server load {state['load_seconds']} s)"
            )
            for name in kinds:
                call = calls[name]
                run_phase(f"{name} warm-up", url, key, call, 1, args.warmup, args.seconds)
                for clients in args.clients:
                    cpu0 = cpu_seconds(server.pid)
                    label = f"{name} (window {window} ms)"
                    stats, n_err, errs = run_phase(
                        label, url, key, call, clients, args.requests, args.seconds
                    )
                    # Server CPU per request: what a request costs, whatever else loads the machine.
                    cpu_ms = (cpu_seconds(server.pid) - cpu0) * 1000 / max(1, stats["n"] + n_err)
                    results["phases"].append(
                        {
                            "kind": name,
                            "clients": clients,
                            "batch_window_ms": window,
                            "torch_threads": threads,
                            "trace_text": trace,
                            **stats,
                            "server_cpu_ms_per_request": round(cpu_ms, 2),
                        }
                    )
                    errors += n_err
                    samples += errs
            for name, (kind, files) in uploads.items() if number == 0 else ():
                call = upload_call(kind, files, spec)
                with peak_extra_rss(server.pid, results.setdefault(name, {})):
                    stats, n_err, errs = run_phase(
                        name,
                        url,
                        key,
                        call,
                        args.upload_clients,
                        args.upload_requests,
                        args.seconds,
                    )
                codes = sorted(set(call.statuses))
                results[name].update(stats, status=codes, bytes=sum(len(d) for _, d in files))
                log(f"{name}: HTTP {codes}, peak extra RSS {results[name]['peak_extra_rss_mb']} MB")
                errors += n_err
                samples += errs
        finally:
            stop_server(server)
    for message in samples:
        log(f"error sample: {message}")
    log(table(results["phases"]))
    out = {
        **results,
        "errors": errors,
        "upload_clients": args.upload_clients,
        "requests_per_phase": args.requests,
        "k": args.k,
        "server_cpus": cpus or os.cpu_count(),
        "load_average": {"start": load_start, "end": load_average()},
        "workspace": str(workspace),
    }
    if args.json:
        print(json.dumps(out), flush=True)
    else:
        log(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
