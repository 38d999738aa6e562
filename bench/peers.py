"""The embedded store beside the embedded peers a user would pick instead, same data, same run.

Workload: bench/workload.py, as bench/store.py (clustered unit vectors, one every 10 minutes,
held-out queries, time windows holding 1-10% of the points, k=10). Engines:

- ``ours``: the embedded store through ``EmbeddedStore.search``, built and warmed as
  bench/store.py does (the schema's HNSW m/ef_construct, int8, ``schema.SEARCH_HNSW_EF``;
  the exact scan of windows up to ``schema.WINDOW_SCAN_MAX_POINTS`` points), on
  a temp folder; the same store then answers the filtered queries again with the scan
  switched off (row ``ours-engine-only``: every query through the engine, as before);
- ``faiss-flat``: FAISS IndexFlatIP, exact; filtered with ``IDSelectorRange(assume_sorted)``
  over the time-sorted ids, so only the window is scanned;
- ``faiss-hnsw``: FAISS IndexHNSWFlat (same m, ef_construct, ef); filtered with the same
  ID selector during the graph walk (both FAISS indexes search with one OpenMP thread);
- ``hnswlib``: same graph settings, filtered with a Python filter callable;
- ``numpy-int8``: an int8 copy scanned (int32 dot products) over the window only, or over all
  rows unfiltered; the best 4k are rescored in float32;
- ``lancedb``: a LanceDB table on a temp folder, BTREE index on time, no vector index (exact
  scan after a prefilter).

Each engine runs in its own child process (fed the same arrays through memory-mapped .npy files,
so 10M x 256 floats need not fit in RAM), so its peak RSS is that process's high-water mark
(``VmHWM``; or its own children's ``ru_maxrss``, such as our optimize process's, if larger):
Python, numpy, the engine's library, the pages of the float32 input it read (up to n*dim*4
bytes, alike for all) and whatever the engine holds at its peak; ``input_rss_mb`` is the RSS
right after opening the input, before building. Row ``ours-reopened``: a fresh process opening
the built store and answering the same queries, as a service does; it never maps the input (the
warm-up queries come as a small copy), so its peak RSS is what serving the store costs;
``rss_file_parts_mb`` splits its mapped pages by part of the store. ``build_s``: from the
arrays to a queryable index (ours: upsert + optimize).
``disk_mb``: the engine's folder (0: in memory only). Latency: wall time of one query through
the engine's Python API, after the same warm-up for all; CPU ms: the process's CPU time per
query, every thread (ours scores a window of 8k rows or more on every usable CPU; FAISS searches
on one, its fastest here). Recall@10 is against an exact float32 scan of the window (or of all
rows).

    python bench/peers.py [--n 1000000] [--queries 200] [--engines ours,faiss-flat]
        [--memory cached|cold] [--json]

A table on stderr; with ``--json`` the last stdout line is ``{"n", "engines": {name:
{"filtered": {p50_ms, p95_ms, cpu_ms, recall_at_10}, "unfiltered": {...}, build_s, peak_rss_mb,
disk_mb, ...}}, "load_average": {"start", "end"}}``. A peer whose package is missing reports
``{"unavailable": "pip install 'skysearch[bench]'"}`` and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from load import load_average
from skysearch.retrieval.store import schema
from skysearch.retrieval.store.embedded import EdgeIndexParams, EmbeddedStore
from workload import (
    CHUNK,
    COLLECTION,
    DIM,
    MAX_QUERIES,
    K,
    load_store,
    log,
    make_workload,
    mapped_rss_mb,
    memory_status,
    rss_mb,
    warm_up,
    warm_up_set,
    window_filter,
)

ENGINES = ("ours", "faiss-flat", "faiss-hnsw", "hnswlib", "numpy-int8", "lancedb")
MODES = ("unfiltered", "filtered")
UNAVAILABLE = {"unavailable": "pip install 'skysearch[bench]'"}
RESCORE = 4  # numpy-int8: candidates rescored in float32, per result
Window = tuple[int, int] | None  # rows lo..hi inclusive; None: unfiltered


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


class Ours:
    reopens = True  # the built store is measured again in a fresh process

    def __init__(self, folder: Path, memory: str = schema.STORAGE_MEMORY) -> None:
        self.folder = folder
        params = EdgeIndexParams(
            quantization=schema.QUANTIZATION,
            full_scan_threshold_kb=schema.FULL_SCAN_THRESHOLD_KB,
            memory=memory,
        )
        self.store = EmbeddedStore(folder, params)

    def build(self, x: np.ndarray) -> None:
        load_store(self.store, x)

    def search(self, q: np.ndarray, rows: Window) -> list[int]:
        filters = window_filter(*rows) if rows else None
        hits = self.store.search(COLLECTION, q, k=K, filters=filters)  # the schema's hnsw_ef
        return [uuid.UUID(h.id).int for h in hits]

    def variants(self) -> dict[str, Callable[[], None]]:
        """Other settings of the same built store, measured after the default one."""

        def engine_only() -> None:
            self.store.params = replace(self.store.params, window_scan_max_points=0)

        return {"ours-engine-only": engine_only}

    def disk_mb(self) -> float:
        return (self.store.info(COLLECTION).disk_bytes or 0) / 2**20


class FaissFlat:
    def __init__(self, folder: Path) -> None:
        import faiss

        self.faiss = faiss

    def add(self, x: np.ndarray) -> None:
        """Add with all threads, then search with one: one query at a time, as the others run
        (with 2 OpenMP threads on the shared 2-core machine, a 100k flat scan took 32 ms per
        query, 9.6 ms with one)."""
        self.index.add(x)
        self.faiss.omp_set_num_threads(1)

    def build(self, x: np.ndarray) -> None:
        self.index = self.faiss.IndexFlatIP(x.shape[1])
        self.add(x)

    def params(self, rows: Window):
        if not rows:
            return None
        sorted_range = self.faiss.IDSelectorRange(rows[0], rows[1] + 1, True)  # assume_sorted
        return self.faiss.SearchParameters(sel=sorted_range)

    def search(self, q: np.ndarray, rows: Window) -> list[int]:
        _, ids = self.index.search(q[None, :], K, params=self.params(rows))
        return [int(i) for i in ids[0] if i >= 0]

    def disk_mb(self) -> float:
        return 0.0


class FaissHnsw(FaissFlat):
    def build(self, x: np.ndarray) -> None:
        ip = self.faiss.METRIC_INNER_PRODUCT
        self.index = self.faiss.IndexHNSWFlat(x.shape[1], schema.HNSW_M, ip)
        self.index.hnsw.efConstruction = schema.HNSW_EF_CONSTRUCT
        self.add(x)

    def params(self, rows: Window):
        sel = self.faiss.IDSelectorRange(rows[0], rows[1] + 1) if rows else None
        return self.faiss.SearchParametersHNSW(efSearch=schema.SEARCH_HNSW_EF, sel=sel)


class Hnswlib:
    def __init__(self, folder: Path) -> None:
        import hnswlib

        self.hnswlib = hnswlib

    def build(self, x: np.ndarray) -> None:
        self.index = self.hnswlib.Index(space="ip", dim=x.shape[1])
        self.index.init_index(
            max_elements=len(x), M=schema.HNSW_M, ef_construction=schema.HNSW_EF_CONSTRUCT
        )
        self.index.add_items(x, np.arange(len(x)))

    def search(self, q: np.ndarray, rows: Window) -> list[int]:
        def keep(label: int) -> bool:
            return rows[0] <= label <= rows[1]

        self.index.set_ef(schema.SEARCH_HNSW_EF)
        try:
            labels, _ = self.index.knn_query(q, k=K, filter=keep if rows else None)
        except RuntimeError:  # fewer than k found: hnswlib cannot return them, counts as none
            return []
        return [int(i) for i in labels[0]]

    def disk_mb(self) -> float:
        return 0.0


class NumpyInt8:
    def __init__(self, folder: Path) -> None:
        pass

    def build(self, x: np.ndarray) -> None:
        self.x = x
        blocks = range(0, len(x), CHUNK)  # a chunk at a time: x may be a 10 GB memory map
        self.scale = 127 / max(float(np.abs(x[i : i + CHUNK]).max()) for i in blocks)
        self.xq = np.empty(x.shape, dtype=np.int8)
        for i in blocks:
            self.xq[i : i + CHUNK] = np.round(x[i : i + CHUNK] * self.scale)

    def search(self, q: np.ndarray, rows: Window) -> list[int]:
        lo, hi = rows or (0, len(self.xq) - 1)
        qq = np.round(q * self.scale).astype(np.int8)
        scores = np.einsum("ij,j->i", self.xq[lo : hi + 1], qq, dtype=np.int32)
        m = min(K * RESCORE, len(scores))
        cand = np.argpartition(-scores, m - 1)[:m] + lo
        exact = self.x[cand] @ q
        return [int(i) for i in cand[np.argsort(-exact)[:K]]]

    def disk_mb(self) -> float:
        return 0.0


class Lance:
    def __init__(self, folder: Path) -> None:
        import lancedb

        self.folder = folder
        self.db = lancedb.connect(folder)

    def build(self, x: np.ndarray) -> None:
        import pyarrow as pa
        from lancedb.index import BTree

        n, dim = x.shape
        vectors = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), dim)
        rows = np.arange(n, dtype=np.int64)
        data = pa.table({"id": rows, "minute": rows * 10, "vector": vectors})
        self.table = self.db.create_table("bench", data=data)
        self.table.create_index("minute", config=BTree())

    def search(self, q: np.ndarray, rows: Window) -> list[int]:
        query = self.table.search(q).distance_type("dot").limit(K).select(["id", "_distance"])
        if rows:
            where = f"minute >= {rows[0] * 10} AND minute <= {rows[1] * 10}"
            query = query.where(where, prefilter=True)
        return query.to_arrow()["id"].to_pylist()

    def disk_mb(self) -> float:
        return folder_mb(self.folder)


CLASSES = {
    "ours": Ours,
    "faiss-flat": FaissFlat,
    "faiss-hnsw": FaissHnsw,
    "hnswlib": Hnswlib,
    "numpy-int8": NumpyInt8,
    "lancedb": Lance,
}


def timed(engine, queries: np.ndarray, windows: np.ndarray | None) -> dict:
    """Each query once (filtered on its window when ``windows`` is given): latencies, CPU
    time of the process (every thread), ids."""
    lat, cpu, ids = [], [], []
    for qi, q in enumerate(queries):
        rows = (int(windows[qi, 0]), int(windows[qi, 1])) if windows is not None else None
        c, t = time.process_time(), time.perf_counter()
        ids.append(engine.search(q, rows))
        lat.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"lat_s": lat, "cpu_s": cpu, "ids": ids}


def child(name: str, data: Path, folder: Path, reopen: bool) -> dict:
    """Build one engine on the saved arrays in ``folder`` (or, ``reopen``, open the one built
    there), warm it up, time every query; ids and latencies go back to the parent, which scores
    them."""
    queries = np.load(data / "queries.npy")
    windows = np.load(data / "windows.npy")
    warm = np.load(data / "warm_up.npz")
    memory = json.loads((data / "meta.json").read_text())["memory"]
    input_rss = rss_mb()
    try:
        engine = Ours(folder, memory) if name == "ours" else CLASSES[name](folder)
    except ImportError:
        return UNAVAILABLE
    out: dict = {"input_rss_mb": round(input_rss, 1)}
    if not reopen:  # a reopened store never maps the input: its RSS is the store's own
        t = time.perf_counter()
        engine.build(np.load(data / "x.npy", mmap_mode="r"))
        out["build_s"] = round(time.perf_counter() - t, 2)
    warm_up(engine.search, warm["vectors"], warm["windows"])
    for mode in MODES:
        out[mode] = timed(engine, queries, windows if mode == "filtered" else None)
    variants = {} if reopen else getattr(engine, "variants", dict)()
    for variant, switch in variants.items():
        switch()  # the unfiltered path is the same: filtered queries only
        warm_up(engine.search, warm["variant_vectors"], warm["variant_windows"])
        out.setdefault("variants", {})[variant] = {"filtered": timed(engine, queries, windows)}
    out["disk_mb"] = round(engine.disk_mb(), 1)
    status = memory_status()  # VmHWM: its own peak; children: our optimize process
    children_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out["peak_rss_mb"] = round(max(status["VmHWM"], children_kb) / 1024, 1)
    out["rss_anon_mb"] = round(status["RssAnon"] / 1024, 1)
    out["rss_file_mb"] = round(status["RssFile"] / 1024, 1)
    out["rss_file_parts_mb"] = mapped_rss_mb(folder)
    return out


def exact_tops(x: np.ndarray, queries: np.ndarray, windows: np.ndarray) -> dict[str, list]:
    """Per query the ids of its exact top k over all rows ("unfiltered") and over its window
    ("filtered"), in one pass over ``x`` a chunk at a time."""
    nq = len(queries)
    best = {m: (np.full((nq, K), -np.inf, np.float32), np.zeros((nq, K), np.int64)) for m in MODES}
    for lo in range(0, len(x), CHUNK):
        scores = (np.asarray(x[lo : lo + CHUNK]) @ queries.T).T  # queries x rows
        rows = np.arange(lo, lo + scores.shape[1])
        inside = (rows >= windows[:, :1]) & (rows <= windows[:, 1:])
        for mode, s in (("unfiltered", scores), ("filtered", np.where(inside, scores, -np.inf))):
            values = np.concatenate([best[mode][0], s], axis=1)
            ids = np.concatenate([best[mode][1], np.broadcast_to(rows, s.shape)], axis=1)
            top = np.argpartition(-values, K - 1, axis=1)[:, :K]
            best[mode] = (np.take_along_axis(values, top, 1), np.take_along_axis(ids, top, 1))
    return {m: [set(map(int, row)) for row in best[m][1]] for m in MODES}


def score(raw: dict, truths: list[set[int]]) -> dict:
    lat = np.asarray(raw["lat_s"]) * 1000
    recall = [len(t & set(ids)) / K for t, ids in zip(truths, raw["ids"], strict=True)]
    return {
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p95_ms": round(float(np.percentile(lat, 95)), 3),
        "cpu_ms": round(float(np.mean(raw["cpu_s"])) * 1000, 3),
        "recall_at_10": round(float(np.mean(recall)), 4),
    }


def run_engine(name: str, data: Path, truths: dict[str, list[set[int]]]) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"skysearch-peers-{name}-"))
    try:
        raw = run_child(name, data, folder, reopen=False)
        if "error" not in raw and getattr(CLASSES[name], "reopens", False):
            raw.setdefault("variants", {})[f"{name}-reopened"] = run_child(
                name, data, folder, reopen=True
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    for measured in (raw, *raw.get("variants", {}).values()):
        for mode in MODES:
            if mode in measured:
                measured[mode] = score(measured[mode], truths[mode])
    return raw


def run_child(name: str, data: Path, folder: Path, reopen: bool) -> dict:
    log(f"--- {name}{' (reopened)' if reopen else ''}")
    argv = ["--child", name, "--data", str(data), "--folder", str(folder)]
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *argv, *(["--reopen"] if reopen else [])],
        stdout=subprocess.PIPE,
        text=True,
    )
    if proc.returncode != 0:
        return {"error": f"engine process exited with {proc.returncode} (see stderr)"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def table(result: dict) -> str:
    head = (
        f"n={result['n']} dim={result['dim']} queries={result['queries']} k={K}  "
        f"load average start {result['load_average']['start']} "
        f"end {result['load_average']['end']}  cpus {os.cpu_count()}\n"
        "| engine | filtered p50 ms | p95 ms | CPU ms | recall@10 | unfiltered p50 ms | p95 ms "
        "| CPU ms | recall@10 | build s | peak RSS MB | disk MB |\n|---" + "|---" * 11 + "|"
    )
    lines = [head]
    for name, e in result["engines"].items():
        if "filtered" not in e:
            lines.append(f"| {name} | {next(iter(e.values()))} |")
            continue
        cells = [name]
        for mode in ("filtered", "unfiltered"):
            s = e[mode]
            cells += [s["p50_ms"], s["p95_ms"], s["cpu_ms"], s["recall_at_10"]]
        cells += [e["build_s"], e["peak_rss_mb"], e["disk_mb"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--dim", type=int, default=DIM)
    ap.add_argument("--engines", default=",".join(ENGINES), help="comma list of: %(default)s")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--memory",
        choices=("cached", "cold"),
        default=schema.STORAGE_MEMORY,
        help="our store's memory tier (default: %(default)s; cold for archives beyond RAM)",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--reopen", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.data, args.folder, args.reopen)))
        return
    engines = [e for e in args.engines.split(",") if e]
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown or not engines:
        ap.error(f"--engines: unknown {unknown}; choose from {', '.join(ENGINES)}")
    if not 1 <= args.queries <= MAX_QUERIES:
        ap.error(f"--queries must be in 1..{MAX_QUERIES}")
    if args.n < 100 * K:  # the narrowest window (1%) holds at least k points
        ap.error(f"--n must be >= {100 * K}")

    load_start = load_average()
    log(f"load average: {load_start}  cpus: {os.cpu_count()}")
    data = Path(tempfile.mkdtemp(prefix="skysearch-peers-data-"))
    try:
        w = make_workload(args.n, args.queries, args.seed, args.dim, folder=data)
        windows = np.stack([w.starts, w.starts + w.lengths - 1], axis=1)
        truths = exact_tops(w.x, w.queries, windows)
        np.save(data / "queries.npy", w.queries)
        np.save(data / "windows.npy", windows)
        first, variant = (warm_up_set(w.x, np.random.default_rng(args.seed + s)) for s in (2, 3))
        (data / "meta.json").write_text(json.dumps({"memory": args.memory}))
        np.savez(
            data / "warm_up.npz",
            vectors=first[0],
            windows=first[1],
            variant_vectors=variant[0],
            variant_windows=variant[1],
        )
        del w
        results = {}
        for name in engines:
            results[name] = run_engine(name, data, truths)
            log(f"{name}: {json.dumps(results[name])}")  # a long run's results so far
            for variant, measured in results[name].pop("variants", {}).items():
                results[variant] = {**results[name], **measured, "variant_of": name}
    finally:
        shutil.rmtree(data, ignore_errors=True)
    result = {
        "n": args.n,
        "dim": args.dim,
        "queries": args.queries,
        "memory": args.memory,
        "engines": results,
        "load_average": {"start": load_start, "end": load_average()},
    }
    log(table(result))
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
