"""Batch embedding of a whole catalog into the vector store (``skysearch index clips|frames``).

A small pipeline as clip-retrieval's: reader (a torch ``Dataset`` over frame-store rows, read
by ``DataLoader`` workers on both cores) -> mapper (frame encoder, then clip encoder) -> writer
(idempotent upserts with the payloads of ``skysearch.retrieval.store.schema``).

Vectors are stored under the vector name = the model id (one named vector per encoder, as the
frames collection's schema says), so vectors of different models never mix; search with
``vector_name=record.model_id``. Resumable: points already written by this model (payload
``model_id``) are skipped, work is upserted chunk by chunk, so an interrupted run loses at most
one chunk and a re-run finishes the rest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from skysearch.encoders.datasets.clips import ClipSet, load_clip_set
from skysearch.encoders.device import resolve_device
from skysearch.encoders.factory import load_clip_embedder, load_frame_encoder
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.framestore import FrameStore
from skysearch.retrieval.store import Point, VectorStore, open_store
from skysearch.retrieval.store.schema import CLIPS, FRAMES, time_payload
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from skysearch.config import Settings, Workspace

#: Clips embedded and upserted per chunk (the unit of resumption).
CHUNK_CLIPS = 2048


@dataclass
class IndexReport:
    collection: str
    model_id: str
    vector_name: str
    written: int = 0
    skipped_existing: int = 0
    total: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class StepFrames(Dataset):
    """Frames of given (frame id per channel) steps: item -> uint8 (C, H, W)."""

    def __init__(self, workspace: Workspace, steps: list[tuple[str, ...]]) -> None:
        self.workspace = workspace
        self.steps = steps
        self._store: FrameStore | None = None  # opened lazily in each worker

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, i: int) -> torch.Tensor:
        if self._store is None:
            self._store = FrameStore(self.workspace)
        return torch.from_numpy(self._store.read_many(list(self.steps[i])))


def embed_steps(
    encoder: torch.nn.Module,
    workspace: Workspace,
    steps: list[tuple[str, ...]],
    device: torch.device,
    batch_size: int = 32,
    workers: int = 2,
    desc: str = "embed frames",
) -> torch.Tensor:
    """Frame embeddings (S, D) of the steps, read by ``workers`` DataLoader processes."""
    loader = DataLoader(
        StepFrames(workspace, steps),
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=False,
    )
    out = []
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="batch", leave=False):
            out.append(encoder(batch.to(device)).cpu())
    return torch.cat(out) if out else torch.empty(0)


def _existing(store: VectorStore, collection: str, model_id: str) -> set[str]:
    if collection not in store.collections():
        return set()
    from qdrant_client import models

    flt = models.Filter(
        must=[models.FieldCondition(key="model_id", match=models.MatchValue(value=model_id))]
    )
    return {r.id for r in store.scroll(collection, flt)}


def _source_paths(workspace: Workspace, frame_ids: list[str]) -> list[str]:
    table = read_frames(workspace, columns=["frame_id", "source_path"])
    pos = pc.index_in(pa.array(frame_ids, pa.string()), value_set=table["frame_id"])
    paths = table["source_path"].to_pylist()
    return [paths[p] if p is not None else "" for p in pos.to_pylist()]


def _chunks(items: np.ndarray, size: int) -> Iterator[np.ndarray]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@contextmanager
def _collection(
    settings: Settings,
    store: VectorStore | None,
    collection: str,
    dim: int,
    model_id: str,
) -> Iterator[tuple[VectorStore, set[str]]]:
    """The store (opened here and closed after, unless given) with ``collection`` ready for
    ``model_id``'s vectors, and the ids that model already wrote there (skipped on a re-run)."""
    own_store = store is None
    store = store or open_store(settings)
    try:
        store.ensure_collection(collection, dim, model_id)
        yield store, _existing(store, collection, model_id)
    finally:
        if own_store:
            store.close()


def index_clips(
    settings: Settings,
    model_id: str | None = None,
    device: str | None = None,
    workers: int = 2,
    store: VectorStore | None = None,
) -> IndexReport:
    """Embed every clip of the clip model's spec and upsert it into the ``clips`` collection."""
    workspace = settings.workspace
    torch_device = resolve_device(device or settings.device)
    embedder, record = load_clip_embedder(workspace, model_id, str(torch_device))
    data = record.config["data"]
    clip_set: ClipSet = load_clip_set(
        workspace, data["satellite"], data["channels"], data["length"], data["gap_minutes"]
    )
    report = IndexReport(CLIPS, record.model_id, record.model_id, total=clip_set.clips.num_rows)
    dim = embedder.clip.config.dim
    with _collection(settings, store, CLIPS, dim, record.model_id) as (store, done):
        ids = np.array(clip_set.clip_ids, dtype=object)
        pending = np.flatnonzero([cid not in done for cid in ids])
        report.skipped_existing = int(len(ids) - len(pending))
        rows = clip_set.clips.select(["clip_id", "satellite", "channels", "start"]).to_pylist()
        single = len(clip_set.channels) == 1
        for chunk in _chunks(pending, CHUNK_CLIPS):
            steps = np.unique(clip_set.index[chunk])
            frames = embed_steps(
                embedder.frame,
                workspace,
                [clip_set.steps[s] for s in steps],
                torch_device,
                workers=workers,
            )
            local = np.searchsorted(steps, clip_set.index[chunk])
            with torch.no_grad():
                vectors = embedder.clip(frames[torch.as_tensor(local)].to(torch_device)).cpu()
            sources = _source_paths(
                workspace, [clip_set.steps[s][0] for s in clip_set.index[chunk, 0]]
            )
            points = [
                Point(
                    id=rows[m]["clip_id"],
                    vector=vectors[i].numpy(),
                    payload={
                        "satellite": rows[m]["satellite"],
                        "channel": rows[m]["channels"][0] if single else rows[m]["channels"],
                        **time_payload(rows[m]["start"]),
                        "length": clip_set.length,
                        "gap_minutes": clip_set.gap_minutes,
                        "clip_id": rows[m]["clip_id"],
                        "source_path": sources[i],
                        "model_id": record.model_id,
                    },
                )
                for i, m in enumerate(chunk)
            ]
            report.written += store.upsert(
                CLIPS, points, vector_name=record.model_id, progress=True
            )
    return report


def index_frames(
    settings: Settings,
    model_id: str | None = None,
    device: str | None = None,
    workers: int = 2,
    store: VectorStore | None = None,
) -> IndexReport:
    """Embed every frame of a single-channel frame model's satellite/channel into ``frames``."""
    from skysearch.errors import UsageError

    workspace = settings.workspace
    torch_device = resolve_device(device or settings.device)
    encoder, record = load_frame_encoder(workspace, model_id, str(torch_device))
    data = record.config["data"]
    if len(data["channels"]) != 1:
        raise UsageError(
            "index frames needs a single-channel frame model (one point per frame); "
            f"{record.model_id} stacks {','.join(data['channels'])}"
        )
    channel = data["channels"][0]
    table = read_frames(
        workspace,
        satellite=data["satellite"],
        channel=channel,
        columns=["frame_id", "satellite", "channel", "time", "source_path"],
    )
    report = IndexReport(FRAMES, record.model_id, record.model_id, total=table.num_rows)
    with _collection(settings, store, FRAMES, encoder.dim, record.model_id) as (store, done):
        rows = [r for r in table.to_pylist() if r["frame_id"] not in done]
        report.skipped_existing = table.num_rows - len(rows)
        for start in range(0, len(rows), CHUNK_CLIPS):
            part = rows[start : start + CHUNK_CLIPS]
            vectors = embed_steps(
                encoder, workspace, [(r["frame_id"],) for r in part], torch_device, workers=workers
            )
            points = [
                Point(
                    id=r["frame_id"],
                    vector=vectors[i].numpy(),
                    payload={
                        "satellite": r["satellite"],
                        "channel": r["channel"],
                        **time_payload(r["time"]),
                        "frame_id": r["frame_id"],
                        "source_path": r["source_path"],
                        "model_id": record.model_id,
                    },
                )
                for i, r in enumerate(part)
            ]
            report.written += store.upsert(
                FRAMES, points, vector_name=record.model_id, progress=True
            )
    return report
