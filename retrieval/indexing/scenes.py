"""Scene indexing: embed scene images into the ``scenes`` collection for text/image search.

Queries go through the search façade (``skysearch.retrieval.search.search_text`` /
``search_image``), which embeds the query with the same text-image model.

Vectors are stored under the vector name = the text-image model id (as the frames and clips
collections do), so a query embedded by one model only ever meets vectors of the same model.
Point ids are UUIDv5 of ``scene/{absolute path}``; indexing is incremental (rclip-style):
a file already indexed by this model with the same size, modification time and metadata is
skipped, new or changed files are (re-)embedded, unreadable files are skipped with a reason,
and the points of images that were under an indexed folder and are gone (deleted or moved) are
removed. A linked image is stored under its target's path, so it leaves when its target is
gone from the indexed folder, not when the link is.

Payload (filterable, ``skysearch.retrieval.store.schema``): ``dataset`` (the folder above the
image's folder, the CSV's name, or a ``dataset`` column), ``label`` (the folder holding the
image, or a ``label`` column), ``source_path``, and from a CSV's columns, when present:
``time`` (RFC 3339) and a location: ``lon``,``lat`` or ``bbox`` (``west,south,east,north``; its
centre becomes the point ``location``). A CSV row whose time or location cannot be read is
skipped with its line and reason; a dataset or label holding a comma is refused (no filter
could select it); the point of a CSV row whose image is gone is removed.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skysearch.encoders.factory import load_text_image
from skysearch.encoders.models.text_image import TextImageModel, load_rgb
from skysearch.ingest.decode import IMAGE_SUFFIXES, printable_path, utf8_path
from skysearch.ingest.engines import Engine
from skysearch.ingest.ids import NAMESPACE
from skysearch.retrieval.indexing.pipeline import Embedded, IndexReport, Item, Listing
from skysearch.retrieval.indexing.runner import index_with
from skysearch.retrieval.store import VectorStore
from skysearch.retrieval.store.filters import check_bbox
from skysearch.retrieval.store.schema import SCENES, time_payload

from skysearch.config import Settings, Workspace
from skysearch.errors import UsageError

#: Images embedded and written per chunk.
BATCH = 32
#: Payload fields that must be unchanged for an indexed scene to be skipped.
FINGERPRINT = ("file_size", "mtime_ns", "meta_key")


def scene_id(path: str | Path) -> str:
    """Deterministic point id of a scene image: UUIDv5 of ``scene/{absolute path}``."""
    return str(uuid.uuid5(NAMESPACE, f"scene/{Path(path).resolve()}"))


def find_images(root: str | Path, skipped: list[dict[str, str]] | None = None) -> list[Path]:
    """Image files under ``root`` (recursive, sorted); a single image file is allowed too.
    Broken links and names that are not valid UTF-8 go to ``skipped`` when it is given."""
    root = Path(root)
    if root.is_file():
        return [root.resolve()]
    if not root.exists():  # gone, or a typo: its indexed scenes stay until it is indexed empty
        raise UsageError(
            f"{root} does not exist (to drop the scenes indexed from a folder that is gone, "
            "make it again, empty, and index it)"
        )
    if not root.is_dir():
        raise UsageError(f"{root} is neither an image nor a folder of images")
    found, left = [], skipped if skipped is not None else []
    for p in sorted(root.rglob("*")):
        if p.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if not utf8_path(p):
            left.append({"path": printable_path(p), "reason": "name is not valid UTF-8: rename it"})
        elif p.is_file():
            found.append(p.resolve())
        elif p.is_symlink() and not p.exists():
            left.append({"path": str(p), "reason": "broken link"})
    return sorted(found)


def scene_metadata(path: Path, root: Path, dataset: str | None) -> dict[str, Any]:
    """``dataset`` and ``label`` of an image found under ``root``: the folder that holds it is
    its class, and the folder above that its dataset (unless ``dataset`` is given), so an
    image gets the same metadata from whichever folder is indexed."""
    return {"dataset": dataset or path.parent.parent.name or root.name, "label": path.parent.name}


def gone_under(root: Path, payload: dict[str, Any]) -> bool:
    """A stored scene whose image was under ``root`` and is no longer there (one that cannot
    be checked, e.g. in a folder without read permission, is not gone)."""
    source = Path(payload.get("source_path") or "")
    try:
        return source.is_relative_to(root) and not source.exists()
    except OSError:
        return False


def name_problem(kind: str, value: str | None) -> str | None:
    """Why ``value`` cannot be a scene's dataset or label: filters on several names take them
    comma-separated, so a name holding a comma could never be selected."""
    if value and "," in value:
        return (
            f"{value!r} has a comma, which no {kind} filter can select (several names are "
            "given comma-separated): rename it (a point indexed under it before stays until then)"
        )
    return None


def _csv_rows(csv_path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The rows of a scene CSV, each with the line it ends on; the header checked."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's BOM
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            rows = [(reader.line_num, row) for row in reader]
    except UnicodeDecodeError as exc:
        raise UsageError(f"{csv_path} is not UTF-8 text ({exc}): save it as UTF-8") from None
    except (OSError, csv.Error) as exc:
        raise UsageError(f"cannot read {csv_path}: {exc}") from None
    found = f"found {', '.join(map(repr, columns))}" if columns else "the file is empty"
    if "filepath" not in columns:
        sep = next((s for s in ";\t|" if len(columns) == 1 and s in columns[0]), None)
        hint = (
            f"; it looks separated by {sep!r}: a scene CSV is comma-separated"
            if sep
            else "; column names are lower case"
            if any(c.strip().lower() == "filepath" for c in columns)
            else ""
        )
        raise UsageError(f"{csv_path} has no 'filepath' column ({found}){hint}")
    for have, lack in (("lon", "lat"), ("lat", "lon")):
        if have in columns and lack not in columns:
            raise UsageError(
                f"{csv_path} has a {have!r} column but no {lack!r} column ({found}): a "
                "location is both, or a 'bbox' column (west,south,east,north)"
            )
    return rows


def _coordinate(row: dict[str, Any], name: str, limit: float) -> float:
    """A row's ``lon`` or ``lat`` in degrees, within +-``limit``; ValueError saying why not."""
    text = (row.get(name) or "").strip()
    if not text:
        raise ValueError(f"{name} is empty")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} is not a number: {text!r}") from None
    if not -limit <= value <= limit:  # NaN too
        raise ValueError(f"{name} {text} is not in -{limit:g}..{limit:g} degrees")
    return value


def _centre_lon(west: float, east: float) -> float:
    """The middle longitude of a box; one crossing the antimeridian (west > east) has its
    middle on the far side of the globe, in -180..180."""
    middle = (west + east + (360.0 if west > east else 0.0)) / 2
    return middle - 360.0 if middle > 180.0 else middle


def _row_metadata(row: dict[str, Any], dataset: str) -> dict[str, Any]:
    """The payload metadata of one CSV row; ValueError saying what is wrong with it."""
    if row.get(None):  # DictReader's key for the fields past the header's
        raise ValueError('more fields than the header has (quote a bbox: "west,south,east,north")')
    meta: dict[str, Any] = {"dataset": dataset, "label": row.get("label") or None}
    for kind in ("dataset", "label"):
        if problem := name_problem(kind, meta[kind]):
            raise ValueError(f"{kind} {problem}")
    try:
        if row.get("time"):
            meta.update(time_payload(row["time"]))
        if row.get("bbox"):
            west, south, east, north = check_bbox(row["bbox"].split(","))
            meta["bbox"] = [west, south, east, north]
            meta["location"] = {"lon": _centre_lon(west, east), "lat": (south + north) / 2}
        elif row.get("lon") or row.get("lat"):
            meta["location"] = {
                "lon": _coordinate(row, "lon", 180),
                "lat": _coordinate(row, "lat", 90),
            }
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    return {k: v for k, v in meta.items() if v is not None}


def gone_of_csv(missing: set[str], payload: dict[str, Any]) -> bool:
    """A stored scene whose image a CSV lists and that image is gone (a scene merely left out
    of the CSV stays: the same image may be listed elsewhere, or indexed from its folder)."""
    return payload.get("source_path") in missing


def _named_scenes(
    root: Path, dataset: str | None, skipped: list[dict[str, str]]
) -> list[tuple[Path, dict[str, Any]]]:
    """The images under ``root`` with their metadata; those whose folder names make a label
    or dataset no filter can select go to ``skipped``."""
    scenes = []
    for path in find_images(root, skipped):
        meta = scene_metadata(path, root, dataset)
        kind = next((k for k in ("label", "dataset") if name_problem(k, meta[k])), None)
        if kind:
            reason = f"{kind} (a folder's name) {name_problem(kind, meta[kind])}"
            skipped.append({"path": str(path), "reason": reason})
        else:
            scenes.append((path, meta))
    return scenes


def csv_scenes(
    csv_path: Path, dataset: str | None
) -> tuple[list[tuple[Path, dict[str, Any]]], list[dict[str, str]]]:
    """``[(image path, metadata)]`` from a scene CSV (``filepath`` plus optional ``label``,
    ``dataset``, ``time``, ``lon``/``lat`` or ``bbox``), and the rows skipped with a reason
    naming their line (a file listed twice keeps its first row). ``dataset``, when given, is
    every row's (over a ``dataset`` column)."""
    scenes, skipped = [], []
    first: dict[Path, int] = {}
    for line, row in _csv_rows(csv_path):
        where = f"line {line} of {csv_path.name}"
        if not (row["filepath"] or "").strip():
            skipped.append({"path": str(csv_path), "reason": f"{where}: empty filepath"})
            continue
        try:
            path = (csv_path.parent / row["filepath"]).resolve()  # an absolute one stays
        except (ValueError, OSError) as exc:  # a NUL byte, say
            reason = f"{where}: filepath {row['filepath']!r} is not a path ({exc})"
            skipped.append({"path": str(csv_path), "reason": reason})
            continue
        if path in first:
            reason = f"listed again on {where}; line {first[path]} is kept"
            skipped.append({"path": str(path), "reason": reason})
            continue
        first[path] = line
        try:
            meta = _row_metadata(row, dataset or row.get("dataset") or csv_path.stem)
        except ValueError as exc:
            skipped.append({"path": str(path), "reason": f"{where}: bad metadata: {exc}"})
            continue
        scenes.append((path, meta))
    return scenes, skipped


def _meta_key(meta: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]


def scene_listing(images: str | Path, model_id: str, dataset: str | None = None) -> Listing:
    """The scenes under ``images`` (a folder, an image, or a scene CSV), each with its payload:
    metadata, file name, size and mtime, metadata key (the fingerprint of an up-to-date point)."""
    if problem := name_problem("dataset", dataset):
        raise UsageError(f"{{dataset}} {problem}", params=["dataset"])
    root = Path(images).resolve()
    skipped: list[dict[str, str]] = []
    missing: set[str] = set()
    if root.is_file() and root.suffix.lower() == ".csv":
        scenes, skipped = csv_scenes(root, dataset)
        gone = functools.partial(gone_of_csv, missing)
    else:
        scenes = _named_scenes(root, dataset, skipped)
        gone = functools.partial(gone_under, root) if root.is_dir() else None
    items = []
    for path, meta in dict(scenes).items():
        try:
            stat = path.stat()
        except FileNotFoundError as exc:
            missing.add(str(path))
            reason = f"image is gone ({exc.strerror}): its indexed scene, if any, is removed"
            skipped.append({"path": str(path), "reason": reason})
            continue
        except OSError as exc:
            skipped.append({"path": str(path), "reason": f"cannot read: {exc}"})
            continue
        payload = {
            **meta,
            "source_path": str(path),
            "name": path.name,
            "file_size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
            "meta_key": _meta_key(meta),
            "model_id": model_id,
        }
        items.append(Item(scene_id(path), payload, path))
    return Listing(SCENES, items, skipped, fingerprint=FINGERPRINT, chunk=BATCH, gone=gone)


def embed_images(tim: TextImageModel, paths: list[Path]) -> Embedded:
    """Scene images -> image-tower embeddings; an image that cannot be decoded is skipped."""
    kept, pixels, skipped = [], [], []
    for i, path in enumerate(paths):
        try:
            pixels.append(tim.preprocess(load_rgb(path)))
            kept.append(i)
        except UsageError as exc:
            skipped.append({"path": str(path), "reason": str(exc)})
    if not kept:
        return [], np.empty((0, tim.embed_dim), np.float32), skipped
    vectors = np.concatenate(
        [tim.encode_pixels(torch.stack(pixels[i : i + BATCH])) for i in range(0, len(kept), BATCH)]
    )
    return kept, vectors, skipped


@functools.lru_cache(maxsize=2)
def _model(root: str, model_id: str, device: str) -> TextImageModel:
    """The registered text-image model, loaded once per worker process."""
    return load_text_image(Workspace(Path(root)), model_id, device)


def scenes_task(root: str, model_id: str, device: str, paths: list[Path]) -> Embedded:
    """An engine task: the embeddings of the scene images at ``paths``."""
    return embed_images(_model(root, model_id, device), paths)


def index_scenes(
    settings: Settings,
    images: str | Path,
    model_id: str | None = None,
    tim: TextImageModel | None = None,
    store: VectorStore | None = None,
    progress: bool = True,
    dataset: str | None = None,
    engine: Engine | None = None,
    workers: int = 2,
) -> IndexReport:
    """Embed new or changed images under ``images`` (a folder, an image, or a scene CSV) into
    the ``scenes`` collection; ``dataset`` names the set (default: the folder's/CSV's name).
    ``engine``: where the images are embedded (default: here; the registered model, loaded
    on each worker, when the engine is not the local one)."""
    tim = tim or load_text_image(settings.workspace, model_id, settings.device)
    mid = tim.model_id or "untuned"
    listing = scene_listing(images, mid, dataset)
    local = functools.partial(embed_images, tim)
    task = functools.partial(scenes_task, str(settings.workspace.root), mid, settings.device)
    return index_with(
        settings, listing, local, task, mid, tim.embed_dim, engine, workers, store, progress
    )
