"""Saving trained encoders into the workspace registry and loading them back.

The door for other areas (search, indexing, evaluation, service) to every kind of model::

    embedder, record = load_clip_embedder(settings.workspace)     # latest clip model
    vector = embedder.embed_clip(clip_frames(workspace, clip_id))  # (C, L, H, W) uint8 -> (256,)

A clip checkpoint holds the frame encoder too (``frame.*`` + ``clip.*`` tensors, both configs),
so one registry entry turns raw clips into vectors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from skysearch.encoders import registry
from skysearch.encoders.checkpoints import load_checkpoint, load_into, save_checkpoint
from skysearch.encoders.device import resolve_device
from skysearch.encoders.models.clip import ClipEmbedder, build_clip_embedder
from skysearch.encoders.models.frame import FrameEncoder, build_frame_encoder
from torch import nn

from skysearch.config import Workspace
from skysearch.errors import UsageError

if TYPE_CHECKING:
    from skysearch.encoders.models.predictor import SimVP
    from skysearch.encoders.models.text_image import TextImageModel


def save_model(
    workspace: Workspace,
    kind: str,
    model: nn.Module,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
) -> registry.ModelRecord:
    """Checkpoint ``model`` under ``models/<new id>/`` and register it."""
    model_id = registry.new_model_id(kind)
    directory = registry.model_dir(workspace, model_id)
    save_checkpoint(directory, model, {**config, "kind": kind, "model_id": model_id})
    return registry.register_model(workspace, model_id, kind, config, metrics)


def load_frame_encoder(
    workspace: Workspace, model_id: str | None = None, device: str | None = "cpu"
) -> tuple[FrameEncoder, registry.ModelRecord]:
    """A registered frame encoder (latest when ``model_id`` is None), in eval mode."""
    torch_device = resolve_device(device)
    record = registry.resolve(workspace, "frame", model_id)
    state, config = load_checkpoint(record.directory(workspace), sections=("frame",))
    model = build_frame_encoder(config["frame"], pretrained=False)
    load_into(model, state, source=record.model_id)
    return model.to(torch_device).eval(), record


def single_channel_frame_models(workspace: Workspace) -> list[registry.ModelRecord]:
    """Registered frame models of one channel, oldest first: the ones that embed a single frame
    (frame search, the ``frames`` collection); a stacked-channel model embeds none."""
    return [
        r
        for r in registry.list_models(workspace, "frame")
        if len(r.config.get("data", {}).get("channels", [])) == 1
    ]


def frame_channel(record: registry.ModelRecord, purpose: str) -> str:
    """The one channel a frame model embeds; a UsageError naming ``purpose`` (e.g. "frame
    search") when it stacks several."""
    channels = record.config["data"]["channels"]
    if len(channels) != 1:
        raise UsageError(
            f"{purpose} needs a single-channel frame model (one point per frame); "
            f"{record.model_id} stacks {','.join(channels)}: pick another {{model_id}}",
            params=["model_id"],
        )
    return channels[0]


def load_clip_embedder(
    workspace: Workspace, model_id: str | None = None, device: str | None = "cpu"
) -> tuple[ClipEmbedder, registry.ModelRecord]:
    """A registered clip model (frame + clip encoder; latest when ``model_id`` is None)."""
    torch_device = resolve_device(device)
    record = registry.resolve(workspace, "clip", model_id)
    state, config = load_checkpoint(record.directory(workspace), sections=("frame", "clip"))
    model = build_clip_embedder(config["frame"], config["clip"], pretrained=False)
    load_into(model, state, source=record.model_id)
    return model.to(torch_device).eval(), record


def load_predictor_model(
    workspace: Workspace, model_id: str | None = None, device: str | None = "cpu"
) -> tuple[SimVP, dict[str, Any], registry.ModelRecord]:
    """A registered predictor (latest when ``model_id`` is None), its saved config, its record."""
    from skysearch.encoders.models.predictor import load_predictor

    record = registry.resolve(workspace, "predictor", model_id)
    model, info = load_predictor(record.directory(workspace), device)
    return model, info, record


def load_text_image(
    workspace: Workspace, model_id: str | None = None, device: str | None = "cpu"
) -> TextImageModel:
    """The workspace's fine-tuned text-image model (latest, or ``model_id``) from the registry,
    on ``device`` (a setting: ``auto``, ``cpu``, ``cuda``...)."""
    from skysearch.encoders.models.text_image import KIND, load_text_image_model

    torch_device = resolve_device(device)  # a bad device is said before a missing model
    record = (
        registry.resolve(workspace, KIND, model_id)
        if model_id
        else registry.latest(
            workspace, KIND, hint="train one first: skysearch train text-image --images DIR"
        )
    )
    tim = load_text_image_model(record.directory(workspace)).to(torch_device)
    tim.model_id = record.model_id
    return tim


@torch.no_grad()
def embed_in_batches(
    fn: Any, items: torch.Tensor, batch_size: int = 64, device: torch.device | None = None
) -> torch.Tensor:
    """Apply ``fn`` to ``items`` in batches (no grad); results on CPU."""
    device = device or torch.device("cpu")
    out = [fn(items[i : i + batch_size].to(device)).cpu() for i in range(0, len(items), batch_size)]
    return torch.cat(out) if out else torch.empty(0)
