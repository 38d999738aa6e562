"""``skysearch train clips``: fit a clip encoder over a frozen frame encoder's embeddings."""

from __future__ import annotations

import shutil

import numpy as np
import torch
from skysearch.encoders import registry
from skysearch.encoders.datasets.clips import (
    clip_similarity_matrix,
    load_clip_set,
    load_step_frames,
    model_split,
    seconds,
    step_similarity_matrix,
)
from skysearch.encoders.device import resolve_device
from skysearch.encoders.factory import embed_in_batches, load_frame_encoder, save_model
from skysearch.encoders.models.clip import ClipEmbedder, ClipEncoder, clip_config_for
from skysearch.encoders.training.loop import fingerprint
from skysearch.encoders.training.objectives import EncoderTrainConfig, train_on_arrays

from skysearch.config import Workspace


def train_clips(
    workspace: Workspace,
    train: EncoderTrainConfig,
    frame_model_id: str | None = None,
    length: int | None = None,
    gap_minutes: int | None = None,
) -> registry.ModelRecord:
    """Train (or resume) a clip encoder on the frame model's channels and training period.

    The frame encoder is frozen: its embeddings of every training frame are computed once, and
    the clip encoder trains on sequences of them. The hold-out (and validation) start is the
    frame model's, so no held-out or validation frame is ever seen by either model.
    """
    train.check()
    registry.check_writable(workspace)
    device = resolve_device(train.device)
    frame_model, frame_record = load_frame_encoder(workspace, frame_model_id, train.device)
    data = frame_record.config["data"]
    clip_set = load_clip_set(
        workspace,
        registry.model_satellites(data),
        data["channels"],
        length or data["length"],
        gap_minutes or data["gap_minutes"],
        "train clips",
    )
    split = model_split(clip_set, data)
    train_set = clip_set.subset(split.train)
    steps = train_set.used_steps()
    frames = load_step_frames(workspace, clip_set, steps)
    step_embeddings = embed_in_batches(frame_model, torch.as_tensor(frames), 32, device)
    position = {int(s): i for i, s in enumerate(steps)}
    local_index = np.vectorize(position.__getitem__)(train_set.index)
    sequences = step_embeddings[torch.as_tensor(local_index)]  # (M, L, D)
    similarity = None
    if train.objective == "metric":
        similarity = clip_similarity_matrix(step_similarity_matrix(frames), local_index)
    clip_config = clip_config_for(frame_model.config, clip_set.length)
    torch.manual_seed(train.seed)  # the initial weights are part of a deterministic run
    clip_model = ClipEncoder(clip_config)
    setup = {
        "kind": "clip",
        "frame_model": frame_record.model_id,
        "clip": clip_config.to_dict(),
        "train": train.identity(),
        "split": split.to_dict(),
        "gap_minutes": clip_set.gap_minutes,
    }
    run_fp = fingerprint(setup)
    run_dir = workspace.models_dir / f".run-clip-{run_fp}"
    if (done := registry.trained_run(workspace, "clip", run_fp, train.epochs)) is not None:
        return done
    history = train_on_arrays(
        clip_model,
        sequences,
        seconds(train_set.starts),
        similarity,
        train,
        run_dir,
        run_fp,
        "train clips",
        trainable=clip_model.trainable_parameters(),
        series=train_set.series(),
    )
    embedder = ClipEmbedder(frame_model.cpu(), clip_model.cpu()).eval()
    config = {
        "frame": frame_record.config["frame"],
        "clip": clip_config.to_dict(),
        "frame_model_id": frame_record.model_id,
        "train": train.to_dict(),
        "data": {
            **data,
            "length": clip_set.length,
            "gap_minutes": clip_set.gap_minutes,
            "clips": int(split.train.sum()),
            **split.to_dict(),
        },
        "history": history,
        "run": run_fp,
    }
    record = save_model(workspace, "clip", embedder, config, {"final_loss": history[-1]["loss"]})
    shutil.rmtree(run_dir, ignore_errors=True)
    return record
