"""Prediction-augmented clip queries: search with the query AND its predicted future.

A clip in the archive has a known future: the clip that follows it (starting ``L * gap`` later),
which is in the store too. A query clip's future is unknown, so the predictor
(:mod:`skysearch.encoders.models.predictor`) predicts its next L frames and the clip encoder embeds
them (``future``). A candidate then scores on two counts:

- present: cosine(query vector, candidate vector) -- the plain search;
- future: cosine(predicted future vector, vector of the candidate's FOLLOWING clip).

Fusion methods (measured by ``skysearch eval augment``; see docs/design/augmentation.md):

- ``rrf`` (default, best on GOES Irma): reciprocal-rank fusion of the present and future
  rankings of a pool of plain hits (what Qdrant's prefetch + RRF computes, without storing a
  second vector per point). Filters stay exactly those of the plain search.
- ``rerank``: the same pool re-scored by ``(1 - beta) * present + beta * future``.
- ``sum``: one search with the normalised weighted sum ``(1 - beta) * q + beta * future``
  against the clips' own vectors (a vector combination; no following clips needed).

A candidate whose following clip is not in the store (the archive's most recent clips) keeps
its present score as its future score (no evidence either way).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
from qdrant_client import models
from skysearch.encoders.models.clip import ClipEmbedder
from skysearch.encoders.models.predictor import SimVP, predict
from skysearch.ingest.ids import clip_id
from skysearch.retrieval.store import Hit, VectorStore
from skysearch.retrieval.store.base import FilterLike
from skysearch.retrieval.store.schema import DEFAULT_VECTOR
from torch.nn import functional as F  # noqa: N812

from skysearch.errors import UsageError
from skysearch.timeutil import parse_time

METHODS = ("rerank", "rrf", "sum")


@dataclass(frozen=True)
class AugmentOptions:
    method: str = "rrf"
    beta: float = 0.5  # weight of the future score (rerank) or future vector (sum)
    pool: int = 100  # plain hits re-ranked (rerank, rrf)
    rrf_k: int = 60

    def check(self) -> AugmentOptions:
        if self.method not in METHODS:
            raise UsageError(f"unknown fusion {self.method!r}; choose one of {', '.join(METHODS)}")
        if not 0.0 <= self.beta <= 1.0:
            raise UsageError("{beta} must be between 0 and 1", params=["beta"])
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def unit(vectors: np.ndarray) -> np.ndarray:
    v = np.asarray(vectors, dtype=np.float32)
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-12)


def combine_vectors(query: np.ndarray, future: np.ndarray, beta: float) -> np.ndarray:
    """The ``sum`` method's single query vector (unit length)."""
    return unit((1.0 - beta) * unit(query) + beta * unit(future))


def rank_positions(scores: np.ndarray) -> np.ndarray:
    """1-based rank of every entry along the last axis (highest score = 1)."""
    order = np.argsort(-scores, axis=-1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(1, scores.shape[-1] + 1), axis=-1)
    return ranks


def fuse(present: np.ndarray, future: np.ndarray, options: AugmentOptions) -> np.ndarray:
    """Fused scores of a candidate pool (last axis), higher is better (rerank or rrf)."""
    if options.method == "rrf":
        return 1.0 / (options.rrf_k + rank_positions(present)) + 1.0 / (
            options.rrf_k + rank_positions(future)
        )
    return (1.0 - options.beta) * present + options.beta * future


@torch.no_grad()
def embed_predicted(embedder: ClipEmbedder, clips: torch.Tensor, size: Sequence[int]) -> np.ndarray:
    """Unit clip vectors of predicted clips (N, L, C, h, w) in [0, 1].

    Predictions come at the predictor's working resolution; they are resized (bilinear) to the
    frame store's ``size`` (H, W) so the clip encoder sees its usual input.
    """
    n, length, c, h, w = clips.shape
    big = F.interpolate(
        clips.reshape(n * length * c, 1, h, w).float(), size=tuple(size), mode="bilinear"
    )
    batch = big.reshape(n, length, c, *size).permute(0, 2, 1, 3, 4).clamp(0, 1).contiguous()
    device = next(embedder.parameters()).device
    embedder.eval()
    out = [embedder(batch[i : i + 16].to(device)).cpu() for i in range(0, n, 16)]
    return unit(torch.cat(out).numpy())


def future_vector(embedder: ClipEmbedder, predictor: SimVP, frames: np.ndarray) -> np.ndarray:
    """Unit vector of the predicted next clip of ``frames`` (C, L, H, W uint8, a catalog clip)."""
    clip = torch.as_tensor(np.asarray(frames))
    pred = predict(predictor, clip).permute(1, 0, 2, 3).unsqueeze(0)  # (1, L, C, h, w)
    return embed_predicted(embedder, pred, clip.shape[-2:])[0]


def following_clip_id(payload: dict[str, Any]) -> str | None:
    """Id of the clip that follows a clip point (from its payload), or None if unknown."""
    try:
        channels = payload["channel"]
        channels = [channels] if isinstance(channels, str) else list(channels)
        length, gap = int(payload["length"]), int(payload["gap_minutes"])
        start = parse_time(payload["time"])
        return clip_id(
            payload["satellite"], channels, start + timedelta(minutes=length * gap), length, gap
        )
    except (KeyError, TypeError, ValueError, UsageError):
        return None


def _vectors_by_clip_id(
    store: VectorStore, collection: str, ids: Sequence[str], vector_name: str | None
) -> dict[str, np.ndarray]:
    if not ids:
        return {}
    flt = models.Filter(
        must=[models.FieldCondition(key="clip_id", match=models.MatchAny(any=list(ids)))]
    )
    out = {}
    for record in store.scroll(collection, flt, with_vectors=True):
        vec = record.vectors.get(vector_name or DEFAULT_VECTOR)
        if vec is not None:
            out[record.payload.get("clip_id")] = np.asarray(vec, dtype=np.float32)
    return out


def augmented_search(
    store: VectorStore,
    query: np.ndarray,
    future: np.ndarray,
    k: int = 10,
    filters: FilterLike = None,
    options: AugmentOptions | None = None,
    collection: str = "clips",
    vector_name: str | None = None,
) -> list[Hit]:
    """Top-k clips for a query vector and its predicted-future vector; filters unchanged."""
    options = (options or AugmentOptions()).check()
    if options.method == "sum":
        vec = combine_vectors(query, future, options.beta)
        return store.search(collection, vec, k=k, filters=filters, vector_name=vector_name)
    hits = store.search(
        collection, unit(query), k=max(k, options.pool), filters=filters, vector_name=vector_name
    )
    if not hits:
        return []
    next_ids = [following_clip_id(h.payload) for h in hits]
    next_vecs = _vectors_by_clip_id(store, collection, [i for i in next_ids if i], vector_name)
    f = unit(future)
    present = np.array([h.score for h in hits], dtype=np.float64)
    fut = np.array(
        [
            float(unit(next_vecs[i]) @ f) if i in next_vecs else h.score
            for h, i in zip(hits, next_ids, strict=True)
        ]
    )
    fused = fuse(present, fut, options)
    order = np.argsort(-fused, kind="stable")[:k]
    return [Hit(hits[i].id, float(fused[i]), hits[i].payload) for i in order]
