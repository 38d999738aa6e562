"""``skysearch eval frames``: frame embeddings against the ground-truth grid metric on single
frames, with the raw-pixel, ImageNet and random baselines in the same run.

The protocol of ``eval clips`` (:mod:`~skysearch.retrieval.evaluation.clips`) with one frame in
place of a clip: the frames are every catalog frame of the frame model's satellite and channel;
queries are the frames of the model's held-out period (``split="validation"``: its validation
slice, on the archive before the hold-out); candidates are all frames more than
``exclude_hours`` from the query; relevance is the grid similarity of the two frames, min-max
normalised per query; NDCG@10, recall@10 and Pearson as for clips.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import torch
from skysearch.encoders.datasets.clips import step_similarity_matrix, to_datetime64
from skysearch.encoders.device import resolve_device
from skysearch.encoders.factory import embed_in_batches, frame_channel, load_frame_encoder
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.framestore import FrameStore
from skysearch.retrieval.evaluation.clips import (
    EvalOptions,
    baseline_vectors,
    build_protocol,
    protocol_terms,
    score_methods,
)

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError
from skysearch.timeutil import parse_time, to_rfc3339


def _heldout(times: np.ndarray, data: dict[str, Any], split: str) -> tuple[np.ndarray, np.ndarray]:
    """(frames kept, held-out mask over them) for the ``test`` or ``validation`` split."""
    holdout = to_datetime64(parse_time(data["holdout_start"]))
    if split == "test":
        return np.ones(len(times), bool), times >= holdout
    if split != "validation":
        raise UsageError(f"unknown {{split}} {split!r}; use test or validation", params=["split"])
    if not data.get("validation_start"):
        raise UsageError(
            "the frame model has no validation slice; train one with a validation fraction",
            params=["split"],
        )
    keep = times < holdout
    return keep, times[keep] >= to_datetime64(parse_time(data["validation_start"]))


def evaluate_frames(
    workspace: Workspace, model_id: str | None = None, options: EvalOptions | None = None
) -> dict[str, Any]:
    """Evaluate a registered single-channel frame model (latest by default); JSON-ready."""
    options = options or EvalOptions()
    device = resolve_device(options.device)
    encoder, record = load_frame_encoder(workspace, model_id, options.device)
    data = record.config["data"]
    channel = frame_channel(record, "frame evaluation")
    table = read_frames(
        workspace,
        satellite=data["satellite"],
        channel=channel,
        columns=["frame_id", "time"],
    ).sort_by("time")
    if table.num_rows == 0:
        raise NotFoundError(f"no {data['satellite']} {channel} frames to evaluate")
    times = table["time"].cast(pa.int64()).to_numpy().astype("datetime64[us]")
    keep, heldout = _heldout(times, data, options.split)
    ids = [fid for fid, k in zip(table["frame_id"].to_pylist(), keep, strict=True) if k]
    kept_times = [t for t, k in zip(table["time"].to_pylist(), keep, strict=True) if k]
    times = times[keep]
    frames = FrameStore(workspace).read_many(ids)[:, None]  # (S, 1, H, W)
    truth = step_similarity_matrix(frames)
    protocol = build_protocol(times, heldout, options)
    with torch.no_grad():
        trained = embed_in_batches(encoder, torch.as_tensor(frames), 32, device).numpy()
    vectors = {"trained": trained}
    if options.baselines:
        index = np.arange(len(ids))[:, None]
        vectors.update(baseline_vectors(frames, index, device, options.seed))
    result = {"model_id": record.model_id, **score_methods(vectors, truth, protocol, options.k)}
    result["protocol"] = {
        "satellite": data["satellite"],
        "channel": channel,
        "frames": len(ids),
        "holdout_start": data["holdout_start"],
        "heldout_frames": int(heldout.sum()),
        "first": to_rfc3339(kept_times[0]),
        "last": to_rfc3339(kept_times[-1]),
        **protocol.describe(),
        **protocol_terms(options),
    }
    return result
