"""Embedded vector store vs numpy brute force, same data, same run.

Data: N clustered 256-d unit vectors (weather-like regimes that persist in time, not uniform
noise) with 10-minute time payloads; queries are held-out points from random times. Query sets:
unfiltered; time-filtered with a window matching 1-10% of the points; one-hit-per-day
(unfiltered; the embedded store over-fetches and keeps each day's best). The store goes through
the public API (``EmbeddedStore.search``, so interface overhead is counted); brute force is one
float32 matrix-vector product over all N plus a time mask (no index), then top-k.

    python bench/store.py --n 100000 [--queries 200] [--json]

With ``--json`` the last stdout line is
``{"n", "filtered": {p50_ms, p99_ms, qps, recall_at_10, speedup_vs_bruteforce}, "unfiltered": {...},
"build_s", ...}``; progress and the table go to stderr. ``--dir D --reuse`` keeps the built
store in D and reuses it (query-side settings such as --ef/--no-acorn, without a rebuild).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
from load import load_average
from skysearch.retrieval.store import schema
from skysearch.retrieval.store.embedded import EdgeIndexParams, EmbeddedStore
from skysearch.retrieval.store.filters import SearchFilters
from skysearch.retrieval.store.schema import SEARCH_HNSW_EF
from workload import (
    COLLECTION,
    MAX_QUERIES,
    T0,
    K,
    load_store,
    log,
    make_workload,
    point_id,
    rss_mb,
    warm_up,
    warm_up_set,
    window_filter,
)


def summarise(
    lat_s: list[float],
    recalls: list[float],
    bf_lat_s: list[float],
    cpu_s: list[float],
    bf_cpu_s: list[float],
) -> dict:
    lat = np.asarray(lat_s) * 1000
    bf = np.asarray(bf_lat_s) * 1000
    cpu = np.asarray(cpu_s) * 1000
    bf_cpu = np.asarray(bf_cpu_s) * 1000
    return {
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "qps": round(float(len(lat) / (lat.sum() / 1000)), 1),
        "recall_at_10": round(float(np.mean(recalls)), 4),
        "speedup_vs_bruteforce": round(float(np.median(bf) / np.median(lat)), 1),
        "bruteforce_p50_ms": round(float(np.percentile(bf, 50)), 3),
        "bruteforce_p99_ms": round(float(np.percentile(bf, 99)), 3),
        # CPU time (all threads of this process) per query: less sensitive to a loaded machine
        "cpu_p50_ms": round(float(np.percentile(cpu, 50)), 3),
        "bruteforce_cpu_p50_ms": round(float(np.percentile(bf_cpu, 50)), 3),
        "speedup_cpu": round(float(np.median(bf_cpu) / np.median(cpu)), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--ef", type=int, default=SEARCH_HNSW_EF, help="hnsw_ef at query time")
    ap.add_argument("--dir", type=Path, default=None, help="store directory (default: temp)")
    ap.add_argument("--reuse", action="store_true", help="reuse a store built in --dir earlier")
    ap.add_argument("--acorn", action=argparse.BooleanOptionalAction, default=schema.SEARCH_ACORN)
    ap.add_argument(
        "--graph-fields",
        default=None,
        help="comma list of fields with payload-aware HNSW links ('' = none; default: schema)",
    )
    ap.add_argument(
        "--quantization",
        choices=["int8", "none"],
        default=schema.QUANTIZATION or "none",
        help="vector quantization of a new store (default: the schema's)",
    )
    ap.add_argument(
        "--full-scan-kb",
        type=int,
        default=schema.FULL_SCAN_THRESHOLD_KB,
        help="full_scan_threshold of a new store (KB of vectors)",
    )
    ap.add_argument(
        "--ef-construct",
        type=int,
        default=schema.HNSW_EF_CONSTRUCT,
        help="HNSW ef_construct of a new store",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    n, nq = args.n, args.queries
    load_start = load_average()
    log(f"load average: {load_start}  cpus: {os.cpu_count()}")
    if nq > MAX_QUERIES:
        ap.error(f"--queries must be <= {MAX_QUERIES}")
    w = make_workload(n, nq, args.seed)
    x, queries, rng = w.x, w.queries, w.rng
    minutes = np.arange(n, dtype=np.int64) * 10  # minutes since T0, 10-minute cadence

    schema.SEARCH_ACORN = args.acorn
    if args.graph_fields is not None:
        schema.PAYLOAD_GRAPH_FIELDS = tuple(f for f in args.graph_fields.split(",") if f)
    root = args.dir or Path(tempfile.mkdtemp(prefix="skysearch-bench-"))
    ids = [point_id(i) for i in range(n)]
    quantization = None if args.quantization == "none" else args.quantization
    params = EdgeIndexParams(
        quantization=quantization,
        full_scan_threshold_kb=args.full_scan_kb,
        ef_construct=args.ef_construct,
    )
    store = EmbeddedStore(root, params)
    reused = args.reuse and COLLECTION in store.collections()
    reused = reused and store.info(COLLECTION).indexed_vectors == n
    load_s = build_s = float("nan")
    if not reused:
        load_s, build_s = load_store(store, x)
    info = store.info(COLLECTION)
    log(f"loaded {n} in {load_s:.1f}s, index built in {build_s:.1f}s: {info}")

    starts, lengths = w.starts, w.lengths  # filtered query windows: 1-10% of the time span
    result: dict = {"n": n, "build_s": None, "load_s": None}  # None: index reused
    if not reused:
        result.update(build_s=round(build_s, 2), load_s=round(load_s, 2))
    days = minutes // 1440
    warm_up(
        lambda q, rows: store.search(
            COLLECTION, q, k=K, filters=rows and window_filter(*rows), hnsw_ef=args.ef
        ),
        *warm_up_set(x, rng),
    )
    for mode in ("unfiltered", "filtered", "one_per_day"):
        # All brute-force queries first, then all store queries: a multi-threaded BLAS keeps
        # its threads spinning for a while after each product, which would otherwise be
        # charged to the next store query's CPU time.
        count = nq if mode != "one_per_day" else nq // 4
        truths, filters, bf_lat, bf_cpu = [], [], [], []
        for qi in range(count):
            t, c = time.perf_counter(), time.process_time()
            scores = x @ queries[qi]
            if mode == "filtered":
                lo, hi = starts[qi] * 10, (starts[qi] + lengths[qi] - 1) * 10
                mask = (minutes >= lo) & (minutes <= hi)
                scores = np.where(mask, scores, -np.inf)
            if mode == "one_per_day":  # best point of each day, then the k best days
                order = np.argsort(-scores)
                _, first = np.unique(days[order], return_index=True)
                top = order[np.sort(first)][:K]
            else:
                top = np.argpartition(-scores, K)[:K]
            bf_lat.append(time.perf_counter() - t)
            bf_cpu.append(time.process_time() - c)
            truths.append({ids[i] for i in top})
            if mode == "filtered":
                start, end = T0 + timedelta(minutes=int(lo)), T0 + timedelta(minutes=int(hi))
                filters.append(SearchFilters(start=start, end=end))
            else:
                filters.append(SearchFilters(one_per_day=mode == "one_per_day"))
        time.sleep(0.5)  # let BLAS threads go idle
        lat, cpu, recalls = [], [], []
        for qi in range(count):
            t, c = time.perf_counter(), time.process_time()
            hits = store.search(COLLECTION, queries[qi], k=K, filters=filters[qi], hnsw_ef=args.ef)
            lat.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
            recalls.append(len(truths[qi] & {h.id for h in hits}) / K)
        result[mode] = summarise(lat, recalls, bf_lat, cpu, bf_cpu)
        log(f"{mode}: {result[mode]}")
    result["rss_mb"] = round(rss_mb(), 1)
    result["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["disk_mb"] = round((info.disk_bytes or 0) / 2**20, 1)
    result["segments"] = info.segments
    result["hnsw_ef"] = args.ef
    result["acorn"] = args.acorn
    result["graph_fields"] = list(schema.PAYLOAD_GRAPH_FIELDS)
    result["quantization"] = args.quantization
    result["full_scan_threshold_kb"] = args.full_scan_kb
    result["reused_index"] = reused
    result["load_average"] = {"start": load_start, "end": load_average()}
    store.close()
    if args.dir is None:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
    else:
        log(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
