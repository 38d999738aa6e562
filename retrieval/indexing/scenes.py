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
skipped with its reason.
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


def csv_scenes(
    csv_path: Path, dataset: str | None
) -> tuple[list[tuple[Path, dict[str, Any]]], list[dict[str, str]]]:
    """``[(image path, metadata)]`` from a scene CSV (``filepath`` plus optional ``label``,
    ``dataset``, ``time``, ``lon``/``lat`` or ``bbox``), and the rows skipped with a reason (a
    file listed twice keeps its first row)."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:  # -sig: Excel's BOM
            reader = csv.DictReader(fh)
            columns, rows = reader.fieldnames or [], list(reader)
    except UnicodeDecodeError as exc:
        raise UsageError(f"{csv_path} is not UTF-8 text ({exc}): save it as UTF-8") from None
    except (OSError, csv.Error) as exc:
        raise UsageError(f"cannot read {csv_path}: {exc}") from None
    if "filepath" not in columns:
        raise UsageError(f"{csv_path} has no 'filepath' column")
    scenes, skipped = [], []
    first: dict[Path, int] = {}
    for line, row in enumerate(rows, start=2):
        path = Path(row["filepath"] or "")
        path = (path if path.is_absolute() else csv_path.parent / path).resolve()
        if path in first:
            reason = f"listed again on line {line} of {csv_path.name}; line {first[path]} is kept"
            skipped.append({"path": str(path), "reason": reason})
            continue
        first[path] = line
        meta: dict[str, Any] = {
            "dataset": row.get("dataset") or dataset or csv_path.stem,
            "label": row.get("label") or None,
        }
        try:
            if row.get("time"):
                meta.update(time_payload(row["time"]))
            if row.get("bbox"):
                west, south, east, north = check_bbox(row["bbox"].split(","))
                meta["bbox"] = [west, south, east, north]
                meta["location"] = {"lon": (west + east) / 2, "lat": (south + north) / 2}
            elif row.get("lon") or row.get("lat"):
                lon, lat = float(row["lon"]), float(row["lat"])
                check_bbox((lon, lat, lon, lat))
                meta["location"] = {"lon": lon, "lat": lat}
        except (UsageError, ValueError, TypeError) as exc:
            skipped.append({"path": str(path), "reason": f"bad metadata: {exc}"})
            continue
        scenes.append((path, {k: v for k, v in meta.items() if v is not None}))
    return scenes, skipped


def _meta_key(meta: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:12]


def scene_listing(images: str | Path, model_id: str, dataset: str | None = None) -> Listing:
    """The scenes under ``images`` (a folder, an image, or a scene CSV), each with its payload:
    metadata, file name, size and mtime, metadata key (the fingerprint of an up-to-date point)."""
    root = Path(images).resolve()
    skipped: list[dict[str, str]] = []
    gone = None
    if root.is_file() and root.suffix.lower() == ".csv":
        scenes, skipped = csv_scenes(root, dataset)
    else:
        scenes = [(p, scene_metadata(p, root, dataset)) for p in find_images(root, skipped)]
        gone = functools.partial(gone_under, root) if root.is_dir() else None
    items = []
    for path, meta in dict(scenes).items():
        try:
            stat = path.stat()
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
