"""Text-image search speed on CPU: text query latency end to end, image embedding throughput.

- image embedding throughput: decode + preprocess + image tower over a folder of real scenes
  (default: the bundled rsscn7-mini), batches of 32;
- text query latency: tokenize + text tower + store search (embedded Qdrant engine, the
  product path), per query, p50/p95 over the query set; printed beside its two parts (text
  encoding alone, store search alone) and beside a brute-force numpy search over the same
  vectors as the baseline for the store part.

Uses the workspace's fine-tuned text-image model when there is one (``--workspace``), else the
untuned offline towers (same architecture, same cost). The machine is shared: the load average
is printed with the numbers.

    .venv/bin/python bench/text_image.py [--images DIR] [--workspace W] [--threads 1] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from load import load_average
from skysearch.encoders.factory import load_text_image
from skysearch.encoders.models.text_image import create_text_image_model
from skysearch.retrieval.indexing.scenes import find_images, index_scenes
from skysearch.retrieval.store import open_store
from skysearch.retrieval.store.schema import SCENES

from skysearch.config import load_settings
from skysearch.errors import NotFoundError

REPO = Path(__file__).resolve().parent.parent
QUERIES = [
    "houses",
    "parking lot next to a river",
    "a dense forest",
    "factories and warehouses",
    "green farmland",
    "a lake surrounded by trees",
    "rows of parked cars",
    "a meadow",
    "residential buildings with roads",
    "industrial area near water",
]


def _pct(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", default=str(REPO / "data" / "sample" / "rsscn7-mini"))
    parser.add_argument("--workspace", default=None, help="use its fine-tuned model if any")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--repeats", type=int, default=3, help="passes over the query set")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)

    load_start = load_average()
    tim = None
    if args.workspace:
        try:
            tim = load_text_image(load_settings(workspace=args.workspace).workspace)
        except NotFoundError:
            tim = None
    model_label = tim.model_id if tim else "untuned offline towers"
    tim = tim or create_text_image_model()

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(workspace=tmp)
        settings.workspace.ensure()
        n_images = len(find_images(args.images))
        t0 = time.perf_counter()
        report = index_scenes(settings, args.images, tim=tim, progress=False)
        index_s = time.perf_counter() - t0
        store = open_store(settings)
        try:
            vname = tim.model_id or "untuned"
            records = list(store.scroll(SCENES, with_vectors=True))
            matrix = np.array([r.vectors[vname] for r in records], dtype=np.float32)
            tim.encode_texts(["warm-up"])
            store.search(SCENES, matrix[0], k=10, vector_name=vname)
            total, encode, search, brute = [], [], [], []
            for _ in range(args.repeats):
                for q in QUERIES:
                    a = time.perf_counter()
                    vec = tim.encode_texts([q])[0]
                    b = time.perf_counter()
                    store.search(SCENES, vec, k=10, vector_name=vname)
                    c = time.perf_counter()
                    np.argsort(-(matrix @ vec))[:10]
                    d = time.perf_counter()
                    total.append((c - a) * 1000)
                    encode.append((b - a) * 1000)
                    search.append((c - b) * 1000)
                    brute.append((d - c) * 1000)
        finally:
            store.close()
    # Baseline in the same run: the same towers with plain 384-d projection heads (what the
    # fused heads of the default recipe add to a text query is the rest).
    plain = create_text_image_model() if tim.spec.get("heads") else tim
    plain.encode_texts(["warm-up"])
    plain_encode = []
    for _ in range(args.repeats):
        for q in QUERIES:
            a = time.perf_counter()
            plain.encode_texts([q])
            plain_encode.append((time.perf_counter() - a) * 1000)

    result = {
        "model": model_label,
        "images": n_images,
        "threads": torch.get_num_threads(),
        "load_average": {"start": load_start, "end": load_average()},
        "image_embedding": {
            "images_per_s": report.items_per_s,
            "index_wall_s": round(index_s, 2),
        },
        "text_query_ms": {
            "queries": len(total),
            "end_to_end_p50": _pct(total, 50),
            "end_to_end_p95": _pct(total, 95),
            "text_encode_p50": _pct(encode, 50),
            "store_search_p50": _pct(search, 50),
            "baseline_numpy_bruteforce_p50": _pct(brute, 50),
            "baseline_plain_heads_text_encode_p50": _pct(plain_encode, 50),
        },
    }
    print(
        f"model: {model_label}; {n_images} images; threads {result['threads']}; "
        f"load average start {result['load_average']['start']} "
        f"end {result['load_average']['end']}\n"
        f"image embedding: {report.items_per_s} img/s\n"
        f"text query end to end: p50 {result['text_query_ms']['end_to_end_p50']} ms, "
        f"p95 {result['text_query_ms']['end_to_end_p95']} ms "
        f"(encode {result['text_query_ms']['text_encode_p50']} ms + store search "
        f"{result['text_query_ms']['store_search_p50']} ms; numpy brute force baseline "
        f"{result['text_query_ms']['baseline_numpy_bruteforce_p50']} ms; plain 384-d heads "
        f"encode {result['text_query_ms']['baseline_plain_heads_text_encode_p50']} ms)",
        file=sys.stderr,
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
