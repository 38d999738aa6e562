"""Frame and clip embeddings of steps (one frame id per channel): frames read from the frame
store and embedded here by DataLoader workers, or by engine tasks (``--engine ray``).

An engine task (``frames_task``, ``clips_task``) loads the registered model from the
workspace once per worker process (the workspace must be on a file system every worker reads
at the same path) and embeds its part on the worker's device (a GPU when Ray gave the task
one); a clip task pools its clips there too. Same model, same frames: the vectors equal the
local ones up to float rounding.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import torch
from skysearch.encoders.device import resolve_device
from skysearch.encoders.factory import load_clip_embedder, load_frame_encoder
from skysearch.ingest.framestore import FrameStore
from skysearch.retrieval.indexing.pipeline import Embedded
from torch.utils.data import DataLoader, Dataset

from skysearch.config import Workspace

Step = tuple[str, ...]


class StepFrames(Dataset):
    """Frames of given (frame id per channel) steps: item -> uint8 (C, H, W)."""

    def __init__(self, workspace: Workspace, steps: list[Step]) -> None:
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
    steps: list[Step],
    device: torch.device,
    batch_size: int = 32,
    workers: int = 2,
) -> torch.Tensor:
    """Frame embeddings (S, D) of the steps, read by ``workers`` DataLoader processes. A batch
    of frames of several working sizes (a cross-satellite model's satellites) is embedded one
    size at a time."""
    loader = DataLoader(
        StepFrames(workspace, steps),
        batch_size=batch_size,
        num_workers=workers,
        persistent_workers=False,
        collate_fn=list,
    )
    with torch.no_grad():
        out = [_embed_by_size(encoder, batch, device) for batch in loader]
    return torch.cat(out) if out else torch.empty(0)


def _embed_by_size(
    encoder: torch.nn.Module, frames: list[torch.Tensor], device: torch.device
) -> torch.Tensor:
    sizes: dict[tuple[int, ...], list[int]] = {}
    for i, frame in enumerate(frames):
        sizes.setdefault(tuple(frame.shape), []).append(i)
    parts = {
        size: encoder(torch.stack([frames[i] for i in rows]).to(device)).cpu()
        for size, rows in sizes.items()
    }
    if len(parts) == 1:
        return next(iter(parts.values()))
    first = next(iter(parts.values()))
    out = torch.empty((len(frames), *first.shape[1:]), dtype=first.dtype)
    for size, rows in sizes.items():
        out[torch.as_tensor(rows)] = parts[size]
    return out


def frame_vectors(
    encoder: torch.nn.Module,
    workspace: Workspace,
    device: torch.device,
    workers: int,
    steps: list[Step],
) -> Embedded:
    """The frame embeddings of ``steps``, frames read by ``workers`` DataLoader processes."""
    vectors = embed_steps(encoder, workspace, steps, device, workers=workers)
    return list(range(len(steps))), vectors.numpy(), []


def clip_vectors(
    embedder: Any, workspace: Workspace, device: torch.device, workers: int, clips: list[list[Step]]
) -> Embedded:
    """Clip embeddings of clips given as their steps: each distinct step is embedded once by
    the clip embedder's frame encoder, then its clip encoder pools each clip's frames."""
    steps = list(dict.fromkeys(step for c in clips for step in c))
    where = {step: i for i, step in enumerate(steps)}
    frames = embed_steps(embedder.frame, workspace, steps, device, workers=workers)
    local = torch.tensor([[where[step] for step in c] for c in clips])
    with torch.no_grad():
        vectors = embedder.clip(frames[local].to(device)).cpu().numpy()
    return list(range(len(clips))), vectors, []


@functools.lru_cache(maxsize=4)
def _model(root: str, model_id: str, kind: str, device: str) -> tuple[Any, torch.device]:
    """The registered frame encoder or clip embedder and its device, loaded once per worker
    process (a task's process runs many tasks)."""
    torch_device = resolve_device(device)
    load = load_frame_encoder if kind == "frame" else load_clip_embedder
    return load(Workspace(Path(root)), model_id, str(torch_device))[0], torch_device


def frames_task(root: str, model_id: str, device: str, steps: list[Step]) -> Embedded:
    """An engine task: the embeddings of ``steps`` by a frame model, frames read here."""
    encoder, torch_device = _model(root, model_id, "frame", device)
    return frame_vectors(encoder, Workspace(Path(root)), torch_device, 0, steps)


def clips_task(root: str, model_id: str, device: str, clips: list[list[Step]]) -> Embedded:
    """An engine task: the embeddings of ``clips`` (each its steps) by a clip model."""
    embedder, torch_device = _model(root, model_id, "clip", device)
    return clip_vectors(embedder, Workspace(Path(root)), torch_device, 0, clips)
