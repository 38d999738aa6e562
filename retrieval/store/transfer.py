"""Move collections between backends (embedded -> server/cluster, or back): scroll + upsert.

Export format (JSON Lines, ``.gz`` suffix = gzip): for each collection a header line
``{"format": "skysearch-store/1", "collection": NAME, "vectors": {name: dim}, "points": N,
"payload_indexes": {...}, "collections": [every collection of the file]}`` followed by one
line per point
``{"id": UUID, "vectors": {name: base64 float32 little-endian}, "payload": {...}}``.
Base64 keeps vectors exact and ~3.5x smaller than decimal text. Import creates each missing
collection with its vectors and every schema payload index, then upserts in batches (into an
existing collection too: points are added, or replaced by id): re-importing the same file is
idempotent.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import zlib
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import IO, Any

import numpy as np
from skysearch.retrieval.store.base import Point, VectorStore

from skysearch.atomic import atomic_path
from skysearch.errors import SkySearchError, UsageError

FORMAT = "skysearch-store/1"
FORMAT_HINT = "not a file written by a store export"
#: A point line is a few KB; a longer "line" means the file is something else (a binary).
MAX_LINE_BYTES = 64 * 2**20


def _open_for_write(path: Path, gz: bool) -> IO[str]:
    if gz:
        return io.TextIOWrapper(gzip.open(path, "wb"), encoding="utf-8")
    return open(path, "w", encoding="utf-8")


def encode_vector(vector: list[float]) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def decode_vector(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text, validate=True), dtype="<f4")


def export_names(store: VectorStore, collections: list[str] | None) -> list[str]:
    """The collections an export writes (default: all); a NotFoundError for an unknown one,
    before anything is written."""
    names = list(dict.fromkeys(collections or store.collections()))  # each once
    if not names:
        raise UsageError(f"{store.where} has no collections: nothing to export")
    for name in names:
        store.vector_config(name)
    return names


def export_store(
    store: VectorStore, out: Path, collections: list[str] | None = None, progress: bool = True
) -> dict[str, int]:
    """Write the collections (default: all) to ``out`` atomically; returns points per collection."""
    out = Path(out)
    if not out.parent.is_dir():
        raise UsageError(f"cannot write {out}: {out.parent} is not an existing folder")
    if out.suffix == ".parquet":
        raise UsageError(
            f"cannot write {out}: this export is JSON Lines (.jsonl, .jsonl.gz); "
            "the parquet format writes a folder of .parquet files"
        )
    if out.is_dir():
        raise UsageError(f"cannot write {out}: it is a folder, not a file name")
    if out.exists() or out.is_symlink():  # as the parquet export and `catalog export` refuse
        raise UsageError(f"cannot write {out}: it exists (an older export?); remove it first")
    names = export_names(store, collections)
    with atomic_path(out) as tmp:  # a failed export leaves no partial file behind
        try:
            fh = _open_for_write(tmp, gz=out.suffix == ".gz")
        except OSError as exc:
            raise UsageError(f"cannot write {out}: {exc.strerror}") from None
        with fh:
            counts = {name: _export_collection(store, name, names, fh, progress) for name in names}
    return counts


def _export_collection(
    store: VectorStore, name: str, names: list[str], fh: IO[str], progress: bool
) -> int:
    """Write one collection's header line and point lines; returns the points written."""
    from tqdm import tqdm

    info = store.info(name)
    header = {
        "format": FORMAT,
        "collection": name,
        "vectors": info.vectors,
        "points": info.points,
        "payload_indexes": info.payload_indexes,
        "collections": names,  # every collection of the file: a file cut short shows
    }
    fh.write(json.dumps(header) + "\n")
    n = 0
    with tqdm(total=info.points, desc=f"export {name}", unit="pt", disable=not progress) as bar:
        for record in store.scroll(name, with_vectors=True):
            vectors = {vn: encode_vector(v) for vn, v in record.vectors.items()}
            line = {"id": record.id, "vectors": vectors, "payload": record.payload}
            fh.write(json.dumps(line) + "\n")
            n += 1
            bar.update(1)
    return n


def _read_export(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, JSON object)`` of an export file; a file that is not one (binary, not
    gzip, truncated, not JSON objects) is a :class:`UsageError` naming the file and line."""
    lineno = 0
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
            while raw := fh.readline(MAX_LINE_BYTES + 1):
                lineno += 1
                yield lineno, _parse_line(raw, f"{path}:{lineno}")
    except EOFError:  # a gzip file cut short: the lines before the cut were read
        raise UsageError(
            f"{path} ends at line {lineno + 1} before its gzip stream does: it was cut short"
        ) from None
    except (OSError, zlib.error) as exc:  # not gzip, unreadable
        raise UsageError(f"{path}:{lineno + 1}: cannot read it ({exc}): {FORMAT_HINT}") from None
    if lineno == 0:
        raise UsageError(f"{path} is empty: {FORMAT_HINT}")


def _parse_line(raw: bytes, where: str) -> dict[str, Any]:
    if len(raw) > MAX_LINE_BYTES:
        raise UsageError(f"{where}: line longer than {MAX_LINE_BYTES >> 20} MB: {FORMAT_HINT}")
    try:
        item = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise UsageError(f"{where} is not UTF-8 text: {FORMAT_HINT}") from None
    except json.JSONDecodeError:
        raise UsageError(f"{where} is not JSON (truncated export?)") from None
    if not isinstance(item, dict):
        raise UsageError(f"{where} is not a JSON object: {FORMAT_HINT}")
    return item


def _header(item: dict[str, Any], where: str) -> tuple[str, dict[str, int]]:
    """A header line -> (collection, {vector name: dimension})."""
    if item["format"] != FORMAT:
        raise UsageError(f"{where}: unknown format {item['format']!r}")
    name, vectors = item.get("collection"), item.get("vectors")
    if not (
        isinstance(name, str)
        and name
        and isinstance(vectors, dict)
        and all(isinstance(dim, int) and dim > 0 for dim in vectors.values())
    ):
        raise UsageError(
            f"{where}: header line needs a collection name and vectors {{name: dimension}}"
        )
    return name, vectors


def _point(item: dict[str, Any], where: str) -> Point:
    try:
        vectors = {str(vn): decode_vector(v) for vn, v in item["vectors"].items()}
        payload = item.get("payload") or {}
        if not isinstance(payload, dict):
            raise TypeError("payload is not an object")
        return Point(str(item["id"]), vectors, payload)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # ValueError: base64
        raise UsageError(
            f"{where}: point line needs an id, base64 vectors and an object payload ({exc})"
        ) from None


def import_store(
    store: VectorStore,
    path: Path,
    progress: bool = True,
    batch_size: int = 512,
    vector_names: set[str] | None = None,
) -> dict[str, int]:
    """Load an export into ``store`` (collections, vectors, payload indexes, points). A file
    that fails part-way (a bad line, cut short) is a UsageError after the points before the
    failure are loaded. The vector names the file holds are added to ``vector_names`` when
    given."""
    from tqdm import tqdm

    path = Path(path)
    _refuse_parquet(path)
    if not path.is_file():
        what = "is a folder, not an export file" if path.is_dir() else "does not exist"
        raise UsageError(f"export file {path} {what}")
    existing = set(store.collections())
    failed = False
    counts: dict[str, int] = {}
    declared: dict[str, Any] = {}  # points per collection, as its header says
    listed: Any = None  # the collections the file holds, as its first header says
    name: str | None = None
    batch: list[Point] = []
    bar = None
    loading = ExitStack()  # each collection in bulk-load mode until the import ends

    def flush() -> None:
        if batch and name is not None:
            counts[name] += store.upsert(name, batch, batch_size=batch_size)
            if bar is not None:
                bar.update(len(batch))
            batch.clear()

    try:
        for lineno, item in _read_export(path):
            where = f"{path}:{lineno}"
            if "format" in item:
                flush()
                name, vectors = _header(item, where)
                declared[name] = item.get("points")
                listed = listed or item.get("collections")
                for vector_name, dim in vectors.items():
                    store.ensure_collection(name, dim, vector_name=vector_name)
                if vector_names is not None:
                    vector_names.update(vectors)
                loading.enter_context(store.bulk_load(name))
                counts[name] = 0
                if bar is not None:
                    bar.close()
                bar = tqdm(
                    total=item.get("points"), desc=f"import {name}", unit="pt", disable=not progress
                )
                continue
            if name is None:
                raise UsageError(f"{path} does not start with a {FORMAT} header line")
            batch.append(_point(item, where))
            if len(batch) >= batch_size:
                flush()
        flush()
        _check_whole(path, counts, declared, listed)
    except UsageError as exc:
        with suppress(UsageError):
            flush()  # the points read before a bad line or the cut: a re-import is idempotent
        failed = True
        if not counts or exc.hint:  # before any header, or it says already (_check_whole)
            raise
        raise UsageError(exc.message, params=exc.params, hint=_imported(counts)) from None
    finally:
        if bar is not None:
            bar.close()
        loading.close()
        if failed:  # a collection this import made and put nothing in: leave no empty shell
            with suppress(SkySearchError):  # never in place of the import's own error
                for created in counts.keys() - existing:
                    if not store.count(created):
                        store.drop_collection(created)
    return counts


def _imported(counts: dict[str, int]) -> str:
    """What a failed import loaded before the failure, and what to do."""
    total = sum(counts.values())
    per = ", ".join(f"{name} {n}" for name, n in counts.items())
    done = f"the {total} points before it were imported ({per})" if total else "none imported"
    return f"{done}; export again and import the whole file (importing again is idempotent)"


def _refuse_parquet(path: Path) -> None:
    """A UsageError naming the Parquet import for a Parquet file, or a folder holding them
    (as ``store export --format parquet`` writes it: one sub-folder per collection)."""
    if path.is_dir():
        parquet = any(next(path.glob(p), None) for p in ("*.parquet", "*/*.parquet"))
    elif path.is_file():
        try:
            with open(path, "rb") as fh:
                parquet = fh.read(4) == b"PAR1"  # the magic number a Parquet file starts with
        except OSError:
            return  # said when it is read, as for any file that cannot be
    else:
        return
    if parquet:
        raise UsageError(
            f"{path} is a Parquet export, not JSON Lines: import it with {{format}} parquet",
            params=["format"],
        )


def _check_whole(path: Path, counts: dict[str, int], declared: dict[str, Any], listed: Any) -> None:
    """Refuse (after loading what it holds: a re-import is idempotent) a file that holds fewer
    points or collections than its headers declare: cut short at a line boundary."""
    short = [
        f"{name}: {counts[name]} of {n} points"
        for name, n in declared.items()
        if isinstance(n, int) and counts[name] != n
    ]
    if isinstance(listed, list):
        short += [f"{name}: missing" for name in listed if name not in counts]
    if short:
        raise UsageError(
            f"{path} is not whole ({'; '.join(short)}): it was cut short or changed after the "
            "export",
            hint="what it holds was imported; export again and import the whole file",
        )
