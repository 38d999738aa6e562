"""Scene indexing: embed scene images into the ``scenes`` collection for text/image search.

Queries go through the search façade (``skysearch.retrieval.search.search_text`` /
``search_image``), which embeds the query with the same text-image model.

Vectors are stored under the vector name = the text-image model id (as the frames and clips
collections do), so a query embedded by one model only ever meets vectors of the same model.
Point ids are UUIDv5 of ``scene/{absolute path}``; indexing is incremental (rclip-style):
a file already indexed by this model with the same size, modification time and metadata is
skipped, new or changed files are (re-)embedded, unreadable files are skipped with a reason.

Payload (filterable, ``skysearch.retrieval.store.schema``): ``dataset`` (the folder's or CSV's name,
or a ``dataset`` column), ``label`` (the class folder, or a ``label`` column), ``source_path``,
and from a CSV's columns, when present: ``time`` (RFC 3339) and a location: ``lon``,``lat`` or
``bbox`` (``west,south,east,north``; its centre becomes the point ``location``). A CSV row whose
time or location cannot be read is skipped with its reason.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from skysearch.encoders.models.text_image import TextImageModel, load_rgb, load_workspace_model
from skysearch.ingest.decode import IMAGE_SUFFIXES
from skysearch.ingest.ids import NAMESPACE
from skysearch.retrieval.store import Point, VectorStore, open_store
from skysearch.retrieval.store.filters import check_bbox
from skysearch.retrieval.store.schema import SCENES, time_payload
from tqdm import tqdm

from skysearch.config import Settings
from skysearch.errors import UsageError

BATCH = 32


def scene_id(path: str | Path) -> str:
    """Deterministic point id of a scene image: UUIDv5 of ``scene/{absolute path}``."""
    return str(uuid.uuid5(NAMESPACE, f"scene/{Path(path).resolve()}"))


def find_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted); a single image file is allowed too."""
    root = Path(root)
    if root.is_file():
        return [root.resolve()]
    if not root.is_dir():
        raise UsageError(f"{root} is neither an image nor a folder of images")
    return sorted(
        p.resolve() for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


@dataclass
class SceneIndexReport:
    collection: str
    model_id: str
    found: int = 0
    written: int = 0
    unchanged: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    images_per_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "skipped_count": len(self.skipped)}


def scene_metadata(path: Path, root: Path, dataset: str | None) -> dict[str, Any]:
    """``dataset`` and ``label`` of an image found under a folder (its class folder)."""
    try:
        label = path.parent.relative_to(root).parts[0] if root.is_dir() else path.parent.name
    except (ValueError, IndexError):
        label = path.parent.name
    return {"dataset": dataset or root.name, "label": label or path.parent.name}


def csv_scenes(
    csv_path: Path, dataset: str | None
) -> tuple[list[tuple[Path, dict[str, Any]]], list[dict[str, str]]]:
    """``[(image path, metadata)]`` from a scene CSV (``filepath`` plus optional ``label``,
    ``dataset``, ``time``, ``lon``/``lat`` or ``bbox``), and the rows skipped with a reason."""
    scenes, skipped = [], []
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if "filepath" not in (reader.fieldnames or []):
            raise UsageError(f"{csv_path} has no 'filepath' column")
        for row in reader:
            path = Path(row["filepath"])
            path = (path if path.is_absolute() else csv_path.parent / path).resolve()
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


def _payload(path: Path, meta: dict[str, Any], model_id: str) -> dict[str, Any]:
    stat = path.stat()
    return {
        **meta,
        "source_path": str(path),
        "name": path.name,
        "file_size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "meta_key": _meta_key(meta),
        "model_id": model_id,
    }


def _indexed(store: VectorStore, model_id: str) -> dict[str, tuple[int, int]]:
    """id -> (size, mtime, metadata key) of scenes this model already indexed."""
    from skysearch.retrieval.store.filters import SearchFilters

    records = store.scroll(SCENES, SearchFilters(model_id=model_id))
    return {
        r.id: (r.payload.get("file_size"), r.payload.get("mtime_ns"), r.payload.get("meta_key"))
        for r in records
    }


def index_scenes(
    settings: Settings,
    images: str | Path,
    model_id: str | None = None,
    tim: TextImageModel | None = None,
    store: VectorStore | None = None,
    progress: bool = True,
    dataset: str | None = None,
) -> SceneIndexReport:
    """Embed new or changed images under ``images`` (a folder, an image, or a scene CSV) into
    the ``scenes`` collection; ``dataset`` names the set (default: the folder's/CSV's name)."""
    tim = tim or load_workspace_model(settings.workspace, model_id, settings.device)
    mid = tim.model_id or "untuned"
    root = Path(images).resolve()
    skipped: list[dict[str, str]] = []
    if root.is_file() and root.suffix.lower() == ".csv":
        scenes, skipped = csv_scenes(root, dataset)
    else:
        scenes = [(p, scene_metadata(p, root, dataset)) for p in find_images(root)]
    meta = dict(scenes)
    paths = list(meta)
    report = SceneIndexReport(SCENES, mid, found=len(paths) + len(skipped), skipped=skipped)
    own_store = store is None
    store = store or open_store(settings)
    try:
        store.ensure_collection(SCENES, tim.embed_dim, mid)
        done = _indexed(store, mid)
        todo = []
        for p in paths:
            try:
                stat = p.stat()
            except OSError as exc:
                report.skipped.append({"path": str(p), "reason": f"cannot read: {exc}"})
                continue
            if done.get(scene_id(p)) == (stat.st_size, stat.st_mtime_ns, _meta_key(meta[p])):
                report.unchanged += 1
            else:
                todo.append(p)
        t0, embedded = time.perf_counter(), 0
        bar = tqdm(total=len(todo), desc="index scenes", unit="img", disable=not progress)
        for start in range(0, len(todo), BATCH):
            chunk, pixels = [], []
            for p in todo[start : start + BATCH]:
                try:
                    pixels.append(tim.preprocess(load_rgb(p)))
                    chunk.append(p)
                except UsageError as exc:
                    report.skipped.append({"path": str(p), "reason": str(exc)})
            bar.update(len(todo[start : start + BATCH]))
            if not chunk:
                continue
            vectors = tim.encode_pixels(torch.stack(pixels))
            embedded += len(chunk)
            points = [
                Point(scene_id(p), vec, _payload(p, meta[p], mid))
                for p, vec in zip(chunk, vectors, strict=True)
            ]
            report.written += store.upsert(SCENES, points, vector_name=mid)
        bar.close()
        if embedded:
            report.images_per_s = round(embedded / (time.perf_counter() - t0), 2)
    finally:
        if own_store:
            store.close()
    return report
