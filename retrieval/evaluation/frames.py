"""``skysearch eval frames``: frame embeddings against the ground-truth grid metric on single
frames, with the raw-pixel, ImageNet and random baselines in the same run.

The protocol of ``eval clips`` (:mod:`~skysearch.retrieval.evaluation.clips`) with one frame in
place of a clip: the frames are every catalog frame of one satellite (default: the frame model's
first) in the model's channel; queries are the frames of the model's held-out period (of a
satellite the model was never trained on: the model's hold-out fraction of its own time range;
``split="validation"``: its validation slice, on the archive before the hold-out); candidates
are all frames more than ``exclude_hours`` from the query; relevance is the grid similarity of
the two frames, min-max normalised per query; NDCG@10, recall@10 and Pearson as for clips.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from skysearch.encoders.datasets.clips import (
    model_split_times,
    step_similarity_matrix,
    to_datetime64,
)
from skysearch.encoders.device import resolve_device
from skysearch.encoders.factory import embed_in_batches, frame_channel, load_frame_encoder
from skysearch.encoders.registry import model_satellites
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
from skysearch.timeutil import to_rfc3339


def _frame_table(workspace: Workspace, satellite: str, channel: str) -> pa.Table:
    """The ``satellite``'s ``channel`` frames (frame_id, time), in time order."""
    table = read_frames(
        workspace, satellite=satellite, channel=channel, columns=["frame_id", "time"]
    )
    if table.num_rows:
        return table.sort_by("time")
    known = set(read_frames(workspace, columns=["satellite"])["satellite"].to_pylist())
    if satellite not in known:
        satellites = ", ".join(sorted(known)) or "none"
        raise NotFoundError(
            f"no frames of {{satellite}} {satellite} in the catalog (satellites: {satellites})",
            params=["satellite"],
        )
    raise NotFoundError(
        f"no {channel} frames (the frame model's channel) of {{satellite}} {satellite}",
        params=["satellite"],
    )


def _heldout(
    stamps: np.ndarray,
    span: tuple[datetime, datetime],
    data: dict[str, Any],
    satellite: str,
    split: str,
) -> tuple[datetime, np.ndarray, np.ndarray]:
    """(the queries' start, frames kept, query mask over them) for the ``test`` or
    ``validation`` split of ``satellite``'s frames at ``stamps`` (datetime64, time order),
    which span ``span`` (see ``model_split_times``)."""
    holdout, validation = model_split_times(data, satellite, *span)
    if split == "test":
        return holdout, np.ones(len(stamps), bool), stamps >= to_datetime64(holdout)
    if split != "validation":
        raise UsageError(f"unknown {{split}} {split!r}; use test or validation", params=["split"])
    if validation is None:
        raise UsageError(
            "the frame model has no validation slice; train one with a validation fraction",
            params=["split"],
        )
    keep = stamps < to_datetime64(holdout)  # queries: the validation slice, as eval clips
    return validation, keep, stamps[keep] >= to_datetime64(validation)


def evaluate_frames(
    workspace: Workspace, model_id: str | None = None, options: EvalOptions | None = None
) -> dict[str, Any]:
    """Evaluate a registered single-channel frame model (latest by default) on the frames of
    ``options.satellite`` (default: the model's first); JSON-ready."""
    options = options or EvalOptions()
    device = resolve_device(options.device)
    encoder, record = load_frame_encoder(workspace, model_id, options.device)
    data = record.config["data"]
    channel = frame_channel(record, "frame evaluation")
    satellite = options.satellite or data["satellite"]
    table = _frame_table(workspace, satellite, channel)
    all_times = table["time"].to_pylist()
    stamps = table["time"].cast(pa.int64()).to_numpy().astype("datetime64[us]")
    span = (all_times[0], all_times[-1])
    holdout, keep, heldout = _heldout(stamps, span, data, satellite, options.split)
    ids = [fid for fid, k in zip(table["frame_id"].to_pylist(), keep, strict=True) if k]
    kept_times = [t for t, k in zip(all_times, keep, strict=True) if k]
    times = stamps[keep]
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
        "satellite": satellite,
        "trained_on": model_satellites(data),
        "channel": channel,
        "frames": len(ids),
        "holdout_start": to_rfc3339(holdout),
        "heldout_frames": int(heldout.sum()),
        "first": to_rfc3339(kept_times[0]),
        "last": to_rfc3339(kept_times[-1]),
        **protocol.describe(),
        **protocol_terms(options),
    }
    return result
