"""``skysearch train frames``: fit a frame encoder on the clip set's training time range."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from skysearch.encoders import registry
from skysearch.encoders.datasets.clips import (
    load_clip_set,
    load_step_frames,
    seconds,
    split_by_time,
    step_similarity_matrix,
)
from skysearch.encoders.device import resolve_device
from skysearch.encoders.factory import embed_in_batches, save_model
from skysearch.encoders.models.frame import (
    FrameEncoderConfig,
    build_frame_encoder,
    check_backbone,
    to_float,
)
from skysearch.encoders.training.cells import cell_pair_batches
from skysearch.encoders.training.loop import fingerprint
from skysearch.encoders.training.objectives import (
    EncoderTrainConfig,
    fit_batches,
    train_on_arrays,
)

from skysearch.config import Workspace


@dataclass
class DataSpec:
    """Which clips to train on (unset: the spec with the most clips in the catalog).

    ``satellite`` may list several satellites: one model on the clips of each (same channels,
    length and gap; each satellite split by time on its own range)."""

    satellite: str | list[str] | None = None
    channels: list[str] | None = None
    length: int | None = None
    gap_minutes: int | None = None
    holdout_fraction: float = 0.2
    #: > 0: also keep the most recent part of the training range out (``eval clips --split
    #: validation`` scores it), for choosing settings without looking at the hold-out.
    validation_fraction: float = 0.0


def train_frames(
    workspace: Workspace,
    data: DataSpec,
    train: EncoderTrainConfig,
    backbone: str = "small-cnn",
) -> registry.ModelRecord:
    """Train (or resume training) a frame encoder; register and return it.

    Training frames: every frame of a clip that ends before the hold-out period (or the
    validation slice); of several satellites, resampled to the first one's working size. The
    ``efficientnet-lite0`` backbone stays frozen (ImageNet features are computed once) and
    only its projection head trains, which keeps CPU training to seconds.
    """
    train.check()
    registry.check_writable(workspace)
    device = resolve_device(train.device)
    check_backbone(backbone)  # before loading frames
    clip_set = load_clip_set(
        workspace, data.satellite, data.channels, data.length, data.gap_minutes, "train frames"
    )
    split = split_by_time(
        clip_set, data.holdout_fraction, validation_fraction=data.validation_fraction
    )
    steps = clip_set.subset(split.train).used_steps()
    frames = load_step_frames(workspace, clip_set, steps)
    times = seconds(clip_set.step_times[steps])
    # metric objective: small-cnn learns from cell pairs (cell_training), others frame pairs
    cell_metric = train.objective == "metric" and backbone == "small-cnn"
    frame_metric = train.objective == "metric" and not cell_metric
    similarity = step_similarity_matrix(frames) if frame_metric else None
    frame_config = FrameEncoderConfig(
        backbone=backbone,
        channels=clip_set.channels,
        height=int(frames.shape[2]),
        width=int(frames.shape[3]),
    )
    torch.manual_seed(train.seed)  # the initial weights are part of a deterministic run
    model = build_frame_encoder(frame_config)
    setup = {
        "kind": "frame",
        "frame": frame_config.to_dict(),
        "train": train.identity(),
        "split": split.to_dict(),
        "satellite": ",".join(clip_set.satellites),
        "steps": [clip_set.steps[s][0] for s in steps[:: max(1, len(steps) // 50)]],
    }
    run_fp = fingerprint(setup)
    run_dir = workspace.models_dir / f".run-frame-{run_fp}"
    if (done := registry.trained_run(workspace, "frame", run_fp, train.epochs)) is not None:
        return done
    items: np.ndarray | torch.Tensor = frames
    forward, trainable = None, model.trainable_parameters()
    if backbone == "efficientnet-lite0":
        model.to(device).eval()
        net = model.net
        items = embed_in_batches(net.features, to_float(torch.as_tensor(frames)), 16, device)
        forward = lambda feats: F.normalize(net.head(feats), dim=-1)  # noqa: E731
    if cell_metric:
        model.to(device)
        batches = cell_pair_batches(model, frames, device, groups=clip_set.step_satellite[steps])
        history = fit_batches(
            model, batches, train, run_dir, run_fp, "train frames", trainable, unit="cell_pairs"
        )
    else:
        history = train_on_arrays(
            model,
            items,
            times,
            similarity,
            train,
            run_dir,
            run_fp,
            "train frames",
            forward,
            trainable,
            series=clip_set.step_series()[steps],
        )
    config = {
        "frame": frame_config.to_dict(),
        "train": train.to_dict(),
        "data": {
            "satellite": clip_set.satellite,
            "satellites": clip_set.satellites,
            "channels": clip_set.channels,
            "length": clip_set.length,
            "gap_minutes": clip_set.gap_minutes,
            "frames": int(len(steps)),
            "holdout_fraction": data.holdout_fraction,
            "validation_fraction": data.validation_fraction,
            **split.to_dict(),
        },
        "history": history,
        "run": run_fp,
    }
    metrics = {"final_loss": history[-1]["loss"]}
    record = save_model(workspace, "frame", model.cpu(), config, metrics)
    shutil.rmtree(run_dir, ignore_errors=True)
    return record
