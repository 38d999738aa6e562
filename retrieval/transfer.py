"""Move collections between backends (embedded -> server/cluster, or back): scroll + upsert.

Export format (JSON Lines, ``.gz`` suffix = gzip): for each collection a header line
``{"format": "skysearch-store/1", "collection": NAME, "vectors": {name: dim}, "points": N,
"payload_indexes": {...}}`` followed by one line per point
``{"id": UUID, "vectors": {name: base64 float32 little-endian}, "payload": {...}}``.
Base64 keeps vectors exact and ~3.5x smaller than decimal text. Import recreates each
collection with its vectors and every schema payload index, then upserts in batches:
re-importing the same file is idempotent.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
from pathlib import Path
from typing import IO

import numpy as np
from skysearch.retrieval.store import Point, VectorStore

from skysearch.atomic import atomic_path
from skysearch.errors import UsageError

FORMAT = "skysearch-store/1"


def _open(path: Path, mode: str, gz: bool) -> IO[str]:
    if gz:
        return io.TextIOWrapper(gzip.open(path, mode + "b"), encoding="utf-8")
    return open(path, mode, encoding="utf-8")


def encode_vector(vector: list[float]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


def export_store(
    store: VectorStore, out: Path, collections: list[str] | None = None, progress: bool = True
) -> dict[str, int]:
    """Write the collections (default: all) to ``out`` atomically; returns points per collection."""
    from tqdm import tqdm

    names = collections or store.collections()
    for name in names:
        store.vector_config(name)  # NotFoundError for an unknown collection, before writing
    out = Path(out)
    counts: dict[str, int] = {}
    with atomic_path(out) as tmp, _open(tmp, "w", gz=out.suffix == ".gz") as fh:
        for name in names:
            info = store.info(name)
            header = {
                "format": FORMAT,
                "collection": name,
                "vectors": info.vectors,
                "points": info.points,
                "payload_indexes": info.payload_indexes,
            }
            fh.write(json.dumps(header) + "\n")
            n = 0
            with tqdm(
                total=info.points, desc=f"export {name}", unit="pt", disable=not progress
            ) as bar:
                for record in store.scroll(name, with_vectors=True):
                    vectors = {vn: encode_vector(v) for vn, v in record.vectors.items()}
                    line = {"id": record.id, "vectors": vectors, "payload": record.payload}
                    fh.write(json.dumps(line) + "\n")
                    n += 1
                    bar.update(1)
            counts[name] = n
    return counts


def import_store(
    store: VectorStore, path: Path, progress: bool = True, batch_size: int = 512
) -> dict[str, int]:
    """Load an export into ``store`` (collections, vectors, payload indexes, points)."""
    from tqdm import tqdm

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"export file {path} does not exist")
    counts: dict[str, int] = {}
    name: str | None = None
    batch: list[Point] = []
    bar = None

    def flush() -> None:
        if batch and name is not None:
            counts[name] += store.upsert(name, batch, batch_size=batch_size)
            if bar is not None:
                bar.update(len(batch))
            batch.clear()

    try:
        with _open(path, "r", gz=path.suffix == ".gz") as fh:
            for lineno, raw in enumerate(fh, 1):
                try:
                    item = json.loads(raw)
                except json.JSONDecodeError:
                    raise UsageError(f"{path}:{lineno} is not JSON (truncated export?)") from None
                if "format" in item:
                    flush()
                    if item["format"] != FORMAT:
                        raise UsageError(f"{path}:{lineno}: unknown format {item['format']!r}")
                    name = str(item["collection"])
                    for vector_name, dim in item["vectors"].items():
                        store.ensure_collection(name, int(dim), vector_name=vector_name)
                    counts[name] = 0
                    if bar is not None:
                        bar.close()
                    bar = tqdm(
                        total=item.get("points"),
                        desc=f"import {name}",
                        unit="pt",
                        disable=not progress,
                    )
                    continue
                if name is None:
                    raise UsageError(f"{path} does not start with a {FORMAT} header line")
                vectors = {vn: decode_vector(v) for vn, v in item["vectors"].items()}
                batch.append(Point(item["id"], vectors, item.get("payload") or {}))
                if len(batch) >= batch_size:
                    flush()
            flush()
    finally:
        if bar is not None:
            bar.close()
    return counts
