"""Frame embeddings of steps (one frame id per channel): read from the frame store and
embedded here by DataLoader workers, or on an engine's workers (``--engine ray``).

On an engine, the steps are split into parts of ``PART``; each task loads the model from the
workspace registry once per worker process (the workspace must be on a file system every
worker reads at the same path), embeds its part on the worker's device (a GPU when Ray gave
the task one) and hands back the vectors, in order. Same model, same frames: the vectors equal
the local ones up to float rounding, and the point ids (from the catalog) are the same.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from skysearch.encoders.device import resolve_device
from skysearch.encoders.factory import load_clip_embedder, load_frame_encoder
from skysearch.ingest.engines import Engine
from skysearch.ingest.framestore import FrameStore
from torch.utils.data import DataLoader, Dataset

from skysearch.config import Workspace

PART = 256  # steps per engine task: a few batches, so a lost worker costs little


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


#: (workspace root, model id) -> the frame encoder and its device, per worker process
_loaded: dict[tuple[str, str], tuple[torch.nn.Module, torch.device]] = {}


def _frame_encoder(root: str, model_id: str, kind: str) -> tuple[torch.nn.Module, torch.device]:
    if (root, model_id) not in _loaded:
        workspace, device = Workspace(Path(root)), resolve_device("auto")
        if kind == "frame":
            encoder, _ = load_frame_encoder(workspace, model_id, str(device))
        else:
            encoder = load_clip_embedder(workspace, model_id, str(device))[0].frame
        _loaded[(root, model_id)] = (encoder, device)
    return _loaded[(root, model_id)]


def embed_part(root: str, model_id: str, kind: str, steps: list[tuple[str, ...]]) -> np.ndarray:
    """An engine task: the frame embeddings (S, D) of ``steps`` with the frame encoder of a
    ``kind`` (frame or clip) model, frames read in this process."""
    encoder, device = _frame_encoder(root, model_id, kind)
    return embed_steps(encoder, Workspace(Path(root)), steps, device, workers=0).numpy()


def steps_embedder(
    engine: Engine | None,
    encoder: torch.nn.Module,
    workspace: Workspace,
    model: tuple[str, str],
    device: torch.device,
    workers: int,
) -> Callable[[list[tuple[str, ...]]], torch.Tensor]:
    """steps -> their frame embeddings (S, D): ``encoder`` here with ``workers`` DataLoader
    processes (no engine, or the local one), else the registered ``model`` (id, kind) on the
    engine's workers, a GPU each when the cluster has them."""
    if engine is None or engine.name == "local":
        return functools.partial(embed_steps, encoder, workspace, device=device, workers=workers)
    model_id, kind = model
    task = functools.partial(embed_part, str(workspace.root), model_id, kind)

    def on_engine(steps: list[tuple[str, ...]]) -> torch.Tensor:
        parts = [steps[i : i + PART] for i in range(0, len(steps), PART)]
        out = [torch.tensor(v) for v in engine.ordered_map(task, parts, workers, gpus=None)]
        return torch.cat(out) if out else torch.empty(0)

    return on_engine
