"""``skysearch eval clips``: clip embeddings against the ground-truth grid metric, with baselines.

Protocol (held-out time range = the clip model's, the most recent ~20% of the archive;
``split="validation"``: the model's validation slice instead, on the archive before the
hold-out, so settings can be chosen without looking at the held-out period):

- **Pearson**: correlation between the Euclidean distance of two clips' vectors and their
  ground-truth similarity, over distinct pairs of held-out clips (all pairs, or ``max_pairs``
  random ones). A good embedding gives a strongly negative value (weather_similarity: -0.955).
- **Search**: every held-out clip is a query; candidates are all clips of the archive (training
  and held-out period) that start more than ``exclude_hours`` (12 h) from the query's start.
  Methods rank candidates by vector distance; the ideal ranking is by ground-truth similarity.
- **NDCG@10** and **Recall@10** as :mod:`~skysearch.retrieval.evaluation.ranking` defines them.
- Baselines on the same queries and candidates: down-sampled raw pixels (24 x 24 cell means
  per frame), ImageNet EfficientNet-Lite0 features without training, and a random ranking.

``eval frames`` and ``eval analogs`` reuse this protocol (:class:`EvalOptions`,
:func:`build_protocol`, :func:`score_methods`) on frames and on best tracks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from skysearch.encoders.datasets.clips import (
    ClipSet,
    Split,
    clip_similarity_matrix,
    load_clip_set,
    load_step_frames,
    model_split,
    split_by_time,
    step_similarity_matrix,
    to_datetime64,
)
from skysearch.encoders.device import resolve_device
from skysearch.encoders.factory import embed_in_batches, load_clip_embedder
from skysearch.encoders.models.clip import ClipEmbedder
from skysearch.encoders.registry import ModelRecord, model_satellites
from skysearch.retrieval.evaluation.baselines import (
    RAW_PIXELS_GRID,
    clip_vectors,
    imagenet_features,
    raw_pixel_features,
)
from skysearch.retrieval.evaluation.ranking import distance_matrix, pearson, search_scores

from skysearch.config import Workspace
from skysearch.errors import UsageError

METHODS = ("trained", "raw_pixels", "imagenet", "random")


@dataclass
class EvalOptions:
    k: int = 10
    exclude_hours: float = 12.0
    max_pairs: int = 20_000
    seed: int = 0
    baselines: bool = True
    device: str | None = "cpu"
    #: "test": the held-out period; "validation": the model's validation slice, scored on the
    #: archive before the hold-out only (for choosing settings; the hold-out stays unseen)
    split: str = "test"
    #: the satellite whose clips are scored (default: the model's first); one the model was
    #: never trained on is held out by the model's hold-out fraction of its own time range
    satellite: str | None = None


@dataclass
class Protocol:
    """Queries, their candidate masks, and the held-out pairs for Pearson."""

    queries: np.ndarray  # (Q,) clip rows
    candidates: np.ndarray  # (Q, M) bool
    pair_a: np.ndarray
    pair_b: np.ndarray

    def describe(self) -> dict[str, Any]:
        return {
            "queries": int(len(self.queries)),
            "mean_candidates": float(self.candidates.sum(1).mean()),
            "pearson_pairs": int(len(self.pair_a)),
        }


def candidate_mask(starts: np.ndarray, queries: np.ndarray, exclude_hours: float) -> np.ndarray:
    """(Q, M) bool: the items (starting at ``starts``, datetime64) that start more than
    ``exclude_hours`` from each query's start."""
    starts_h = starts.astype("datetime64[us]").astype(np.int64) / 3.6e9
    return np.abs(starts_h[queries][:, None] - starts_h[None, :]) > exclude_hours


def build_protocol(starts: np.ndarray, heldout: np.ndarray, options: EvalOptions) -> Protocol:
    """Held-out queries (``heldout``, a mask over items starting at ``starts``, datetime64[us])
    with their candidates outside +-exclude_hours, and held-out pairs."""
    queries = np.flatnonzero(heldout)
    candidates = candidate_mask(starts, queries, options.exclude_hours)
    keep = candidates.sum(1) >= options.k
    if not keep.any():
        raise UsageError(
            f"no held-out query has {options.k} candidates outside +-{options.exclude_hours:g} h; "
            "ingest a longer period"
        )
    held = np.flatnonzero(heldout)
    ia, ib = np.triu_indices(len(held), 1)
    if len(ia) > options.max_pairs:
        pick = np.random.default_rng(options.seed).choice(len(ia), options.max_pairs, False)
        ia, ib = ia[pick], ib[pick]
    return Protocol(queries[keep], candidates[keep], held[ia], held[ib])


def score(vectors: np.ndarray, truth: np.ndarray, protocol: Protocol, k: int = 10) -> dict:
    """NDCG@k, recall@k and Pearson of one method's clip vectors (M, D)."""
    dist = distance_matrix(vectors)
    ndcg, recall = search_scores(dist, truth, protocol.queries, protocol.candidates, k)
    r = pearson(dist[protocol.pair_a, protocol.pair_b], truth[protocol.pair_a, protocol.pair_b])
    return {"ndcg_at_10": ndcg, "recall_at_10": recall, "pearson": r}


@dataclass
class ClipData:
    """What a clip evaluation scores: a clip model, the clips of its spec, its split (test, or
    the validation slice), and the clips' step frames."""

    embedder: ClipEmbedder
    record: ModelRecord
    clip_set: ClipSet
    split: Split
    frames: np.ndarray  # (S, C, H, W) uint8, the frames of clip_set's steps
    device: torch.device

    def trained_vectors(self) -> np.ndarray:
        """The clip model's vectors of every clip (M, D)."""
        with torch.no_grad():
            frames = torch.as_tensor(self.frames)
            step_emb = embed_in_batches(self.embedder.frame, frames, 32, self.device)
            seq = step_emb[torch.as_tensor(self.clip_set.index)]
            return embed_in_batches(self.embedder.clip, seq, 256, self.device).numpy()

    def protocol(self) -> dict[str, Any]:
        """The clip spec and the split, as every clip evaluation reports them."""
        return {
            "satellite": self.clip_set.satellite,
            "trained_on": model_satellites(self.record.config["data"]),
            "channels": self.clip_set.channels,
            "length": self.clip_set.length,
            "gap_minutes": self.clip_set.gap_minutes,
            **self.split.to_dict(),
        }


def load_clip_data(workspace: Workspace, model_id: str | None, options: EvalOptions) -> ClipData:
    """A registered clip model (latest by default) with the clips it is evaluated on."""
    device = resolve_device(options.device)
    embedder, record = load_clip_embedder(workspace, model_id, options.device)
    data = record.config["data"]
    satellite = options.satellite or data["satellite"]
    clip_set = load_clip_set(
        workspace, satellite, data["channels"], data["length"], data["gap_minutes"]
    )
    split = model_split(clip_set, data)
    if options.split == "validation":
        if split.validation_start is None:
            raise UsageError(
                f"model {record.model_id} has no validation slice; train one with "
                "`skysearch train frames --validation 0.2` and `train clips`"
            )
        clip_set = clip_set.subset(clip_set.ends < to_datetime64(split.holdout_start))
        split = split_by_time(clip_set, holdout_start=split.validation_start)
    elif options.split != "test":
        raise UsageError(f"unknown split {options.split!r}; use test or validation")
    frames = load_step_frames(workspace, clip_set, np.arange(len(clip_set.steps)))
    return ClipData(embedder, record, clip_set, split, frames, device)


def evaluate_clips(
    workspace: Workspace, model_id: str | None = None, options: EvalOptions | None = None
) -> dict[str, Any]:
    """Evaluate a registered clip model (latest by default); returns the JSON-ready result."""
    options = options or EvalOptions()
    data = load_clip_data(workspace, model_id, options)
    clip_set = data.clip_set
    truth = clip_similarity_matrix(step_similarity_matrix(data.frames), clip_set.index)
    protocol = build_protocol(clip_set.starts, data.split.heldout, options)
    vectors = {"trained": data.trained_vectors()}
    if options.baselines:
        vectors.update(baseline_vectors(data.frames, clip_set.index, data.device, options.seed))
    result = {
        "model_id": data.record.model_id,
        **score_methods(vectors, truth, protocol, options.k),
    }
    result["protocol"] = {**data.protocol(), **protocol.describe(), **protocol_terms(options)}
    return result


def baseline_vectors(
    frames: np.ndarray,
    index: np.ndarray,
    device: torch.device,
    seed: int,
    raw_grid: tuple[int, int] = RAW_PIXELS_GRID,
) -> dict[str, np.ndarray]:
    """Raw-pixel (``raw_grid`` cell means per frame), ImageNet and random vectors of the items
    (M, L) made of step ``frames``."""
    rng = np.random.default_rng(seed)
    return {
        "raw_pixels": clip_vectors(raw_pixel_features(frames, raw_grid), index),
        "imagenet": clip_vectors(imagenet_features(frames, device), index),
        "random": rng.standard_normal((len(index), 8)),
    }


def score_methods(
    vectors: dict[str, np.ndarray], truth: np.ndarray, protocol: Protocol, k: int
) -> dict[str, dict[str, float]]:
    """``{"ndcg_at_10": {method: value}, "recall_at_10": {...}, "pearson": {...}}``."""
    result: dict[str, dict[str, float | None]] = {
        "ndcg_at_10": {},
        "recall_at_10": {},
        "pearson": {},
    }
    for name, vecs in vectors.items():
        for metric, value in score(vecs, truth, protocol, k).items():
            result[metric][name] = value
    return result


def protocol_terms(options: EvalOptions) -> dict[str, Any]:
    """The protocol's settings and definitions, as every evaluation reports them."""
    return {
        "exclude_hours": options.exclude_hours,
        "k": options.k,
        "split": options.split,
        "relevance": "ground-truth similarity min-max normalised per query (graded, 0..1)",
        "ground_truth": "grid KS similarity, clean mode, N=24, B=20",
    }
