"""Local vs Ray (local mode) ingest on the same files in the same run, Ray's cost per task,
and an estimate, from the measured per-frame costs, of a 10-year COMS load on a cluster.

For each dataset (the first ``--limit`` files): a fresh ``ingest()`` with the local engine
(a process pool of ``--workers``) and one with the Ray engine on a local Ray of ``--workers``
CPUs (started once, outside the timings; its start-up is printed apart). Then one-process
costs per frame: decode (``preprocess_chunk``), the writer (a one-process ingest minus its
decode) and embedding (the default frame encoder, CPU, one thread). The 10-year estimate is
computed from those numbers and the scenario's sizes; nothing in it is a constant result.

    .venv/bin/python bench/distributed.py [--data ../shared/data] [--workers 2] [--limit 0]
        [--repeats 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import ray
import torch
from load import load_average
from skysearch.encoders.models.frame import build_frame_encoder
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.decode import preprocess_chunk
from skysearch.ingest.engines import get_engine
from skysearch.ingest.engines.local import CHUNK as LOCAL_CHUNK
from skysearch.ingest.engines.ray import CHUNK as RAY_CHUNK
from skysearch.ingest.engines.ray import RayEngine, start_local
from skysearch.ingest.framestore import FrameStore
from skysearch.ingest.pipeline import discover, ingest
from skysearch.ingest.profiles import select_profiles

from ingest import timed  # bench/ingest.py: best of N wall times
from skysearch.config import Workspace

REPO = Path(__file__).resolve().parent.parent
DATASETS = ["goes-irma-2017", "digital-typhoon/image", "coms-2011-03-03"]
COMS = "coms-2011-03-03"  # the per-frame costs the 10-year estimate scales


def _files(folder: Path, limit: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    return files[:limit] if limit else files


def _ingest(files: list[Path], workers: int, engine, root: Path | None = None):
    """An ingest into ``root``, or into a fresh workspace thrown away after."""
    if root is not None:
        return ingest(files, Workspace(root), workers=workers, progress=False, engine=engine)
    with tempfile.TemporaryDirectory() as tmp:
        return _ingest(files, workers, engine, Path(tmp))


def _noop(items: list) -> list:
    return items


def _task_overhead(tasks: int, workers: int) -> dict[str, float]:
    """Seconds per empty task, round trip, ``workers`` in parallel: Ray vs the process pool."""
    remote = ray.remote(_noop)
    ray.get([remote.remote([]) for _ in range(workers * 4)])  # workers up and warm
    start = time.perf_counter()
    ray.get([remote.remote([]) for _ in range(tasks)])
    ray_s = (time.perf_counter() - start) / tasks
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_noop, [[]] * workers * 4))
        start = time.perf_counter()
        list(pool.map(_noop, [[]] * tasks))
        pool_s = (time.perf_counter() - start) / tasks
    return {"ray_task_s": ray_s, "pool_task_s": pool_s}


def _embed_s_per_frame(frames: np.ndarray, batch: int = 32) -> tuple[float, str]:
    """One CPU thread's seconds per frame for the default frame encoder (random weights: the
    cost, not the quality)."""
    height, width = frames.shape[-2:]
    encoder = build_frame_encoder({"height": height, "width": width}, pretrained=False).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tensor = torch.from_numpy(np.ascontiguousarray(frames[:batch]))[:, None]
        with torch.inference_mode():
            encoder(tensor)  # warm-up
            start = time.perf_counter()
            encoder(tensor)
            seconds = (time.perf_counter() - start) / len(tensor)
    finally:
        torch.set_num_threads(threads)
    return seconds, encoder.config.backbone


def bench_dataset(folder: Path, args: argparse.Namespace) -> dict:
    files = _files(folder, args.limit)
    for path in files:  # a warm page cache for every measurement alike
        path.read_bytes()
    local_s, report = timed(args.repeats, _ingest, files, args.workers, get_engine("local"))
    ray_s, _ = timed(args.repeats, _ingest, files, args.workers, RayEngine())
    frames = max(1, report.frames_added)
    return {
        "dataset": str(folder.relative_to(args.data)),
        "frames": report.frames_added,
        "files": len(files),
        "local_s": round(local_s, 3),
        "ray_s": round(ray_s, 3),
        "local_frames_per_s": round(frames / local_s, 1),
        "ray_frames_per_s": round(frames / ray_s, 1),
        "ray_vs_local": round(ray_s / local_s, 2),
    }


class _Replay:
    """An engine handing back answers decoded before: ingest with it costs the writer only."""

    name = "replay"

    def __init__(self, answers: list) -> None:
        self.answers = answers

    def decoded_stream(self, items: list, workers: int):
        yield from self.answers


def per_frame_costs(folder: Path, args: argparse.Namespace) -> dict:
    """One-process seconds per frame (first ``--limit`` files): decode (``preprocess_chunk``),
    the writer (an ingest fed decoded answers: append, fsync, commit, catalog), embed."""
    files = _files(folder, args.limit)
    candidates, _ = discover(files, select_profiles("auto"))
    decode_s, decoded = timed(
        args.repeats, preprocess_chunk, [(c.source, c.profile) for c in candidates]
    )
    frames = sum(d.frame is not None for d in decoded)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp))
        writer_s, _ = timed(1, _ingest, files, 1, _Replay(decoded), ws.root)
        ids = read_frames(ws, columns=["frame_id"])["frame_id"].to_pylist()
        pixels = FrameStore(ws).read_many(ids)
    embed_s, backbone = _embed_s_per_frame(pixels)
    return {
        "frames": frames,
        "decode_s": decode_s / max(1, frames),
        "writer_s": writer_s / max(1, frames),
        "embed_s": embed_s,
        "embed_backbone": backbone,
        "source_bytes": sum(p.stat().st_size for p in files) / max(1, len(files)),
        "working_bytes": pixels[0].nbytes,  # one decoded frame, as a task hands it back
    }


def estimate(costs: dict, overhead: dict, args: argparse.Namespace) -> dict:
    """Wall time and workers for the scenario, from the measured per-frame costs."""
    frames = args.frames_per_year * args.channels * args.years
    per_frame_cpu = costs["decode_s"] + overhead["ray_task_s"] / RAY_CHUNK
    decode_cpu_h = frames * per_frame_cpu / 3600
    embed_cpu_h = frames * costs["embed_s"] / 3600
    writer_h = frames * costs["writer_s"] / 3600  # one driver writes one workspace
    partitions = args.channels * args.years  # satellite/channel/year: one writer each
    saturate = math.ceil(per_frame_cpu / max(costs["writer_s"], 1e-9))
    read_h = frames * args.frame_bytes / (args.storage_gb_s * 1e9) / 3600
    rows = []
    for workers in args.cluster_cpus:
        ingest_h = max(decode_cpu_h / workers, writer_h, read_h)
        ingest_partitioned_h = max(decode_cpu_h / workers, writer_h / partitions, read_h)
        rows.append(
            {
                "cpus": workers,
                "ingest_h_one_writer": round(ingest_h, 2),
                "ingest_h_per_partition_writers": round(ingest_partitioned_h, 2),
                "embed_h_cpu": round(embed_cpu_h / workers, 2),
            }
        )
    return {
        "frames": frames,
        "source_tb": round(frames * args.frame_bytes / 1e12, 2),
        "decode_cpu_h": round(decode_cpu_h, 1),
        "embed_cpu_h": round(embed_cpu_h, 1),
        "writer_h_one_writer": round(writer_h, 2),
        "partitions": partitions,
        "workers_to_saturate_one_writer": saturate,
        "read_h_at_storage_bandwidth": round(read_h, 2),
        "to_driver_gb": round(frames * costs["working_bytes"] / 1e9, 1),
        "by_cluster_size": rows,
    }


def _table(rows: list[dict]) -> list[str]:
    return ["  ".join(rows[0])] + ["  ".join(str(v) for v in row.values()) for row in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="first N files per dataset (0: all)")
    parser.add_argument("--repeats", type=int, default=1, help="best of N runs per measurement")
    parser.add_argument("--tasks", type=int, default=200, help="empty tasks timed per engine")
    scenario = parser.add_argument_group("the scenario estimated (10 years of COMS)")
    scenario.add_argument("--years", type=int, default=10)
    scenario.add_argument("--channels", type=int, default=4)
    scenario.add_argument("--frames-per-year", type=int, default=35_000, help="per channel")
    scenario.add_argument("--frame-bytes", type=float, default=1.8e6, help="one COMS PNG")
    scenario.add_argument(
        "--storage-gb-s", type=float, default=1.0, help="assumed aggregate read bandwidth"
    )
    scenario.add_argument("--cluster-cpus", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    args = parser.parse_args(argv)
    for name in DATASETS:
        if not (args.data / name).is_dir():
            print(f"error: {args.data / name} not found (pass --data DIR)", file=sys.stderr)
            return 2

    load_start = load_average()
    start = time.perf_counter()
    start_local(args.workers)
    ray_start_s = time.perf_counter() - start
    try:
        rows = [bench_dataset(args.data / d, args) for d in DATASETS]
        overhead = _task_overhead(args.tasks, args.workers)
    finally:
        ray.shutdown()
    costs = per_frame_costs(args.data / COMS, args)
    plan = estimate(costs, overhead, args)
    load = {"start": load_start, "end": load_average()}

    lines = _table(rows)
    lines.append(
        f"local Ray start {ray_start_s:.1f} s (not in ray_s); per empty task: Ray "
        f"{overhead['ray_task_s'] * 1e3:.2f} ms, process pool {overhead['pool_task_s'] * 1e3:.2f}"
        f" ms; chunks of {RAY_CHUNK} (Ray) and {LOCAL_CHUNK} (pool) files per task"
    )
    lines.append(
        f"COMS per frame, one process ({costs['frames']} frames, "
        f"{costs['source_bytes'] / 1e6:.2f} MB a file): decode {costs['decode_s'] * 1e3:.1f} ms, "
        f"writer {costs['writer_s'] * 1e3:.2f} ms, embed ({costs['embed_backbone']}, 1 CPU "
        f"thread) {costs['embed_s'] * 1e3:.1f} ms"
    )
    lines.append(
        f"estimate: {args.years} years x {args.channels} channels x {args.frames_per_year} "
        f"frames = {plan['frames']} frames, {plan['source_tb']} TB; decode "
        f"{plan['decode_cpu_h']} CPU-h, embed {plan['embed_cpu_h']} CPU-h; one writer needs "
        f"{plan['writer_h_one_writer']} h and is kept busy by "
        f"{plan['workers_to_saturate_one_writer']} decode workers; reading at "
        f"{args.storage_gb_s} GB/s takes {plan['read_h_at_storage_bandwidth']} h; the "
        f"workers hand the driver {plan['to_driver_gb']} GB of working frames"
    )
    lines += _table(plan["by_cluster_size"])
    lines.append(
        f"load average start {' '.join(f'{x:.2f}' for x in load['start'])}, end "
        f"{' '.join(f'{x:.2f}' for x in load['end'])} on {os.cpu_count()} cores"
    )
    print("\n".join(lines), file=sys.stderr)
    if args.json:
        payload = {
            "workers": args.workers,
            "limit": args.limit,
            "repeats": args.repeats,
            "load_average": load,
            "ray_start_s": round(ray_start_s, 2),
            "task_overhead_s": {k: round(v, 6) for k, v in overhead.items()},
            "results": rows,
            "coms_per_frame_s": costs,
            "estimate": plan,
        }
        print(json.dumps(payload))
    return 0


if __name__ == "__main__":
    sys.exit(main())
