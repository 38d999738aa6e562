"""Exact re-ranking of ANN candidates by the ground-truth grid KS similarity.

The vector search proposes candidate clips (or frames); this stage scores each against the
query with the metric itself (from stored per-frame sketches, one batched call) and sorts by it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from skysearch.ingest.similarity import GridSpec, SketchStore, score_clips, score_frames

from skysearch.config import Workspace


@dataclass(frozen=True)
class Reranked:
    """One candidate after re-ranking: its id, metric similarity, and per-channel values."""

    clip_id: str  # a frame id when frames are re-ranked
    similarity: float
    channels: dict[str, float]
    rank_before: int


def rerank(
    workspace: Workspace,
    query: str | np.ndarray,
    candidate_ids: Sequence[str],
    top_k: int | None = None,
    spec: GridSpec | None = None,
    store: SketchStore | None = None,
) -> list[Reranked]:
    """Candidates sorted by grid KS similarity to the query (ties keep the ANN order).

    ``query``: a catalog clip id, or uint8 frames (C, L, H, W) in the candidates' channel
    order. ``candidate_ids``: catalog clip ids in ANN order. Pass one ``store`` to reuse its
    index across queries.
    """
    if not candidate_ids:
        return []
    scores = score_clips(workspace, query, candidate_ids, spec=spec, store=store)
    order = np.argsort(-scores.similarity, kind="stable")
    if top_k is not None:
        order = order[:top_k]
    return [
        Reranked(
            clip_id=candidate_ids[i],
            similarity=float(scores.similarity[i]),
            channels=scores.score(int(i)).channels,
            rank_before=int(i),
        )
        for i in order
    ]


def rerank_frames(
    store: SketchStore, query: np.ndarray, candidate_ids: Sequence[str], channel: str
) -> list[Reranked]:
    """Candidate frames (catalog ids, ANN order) sorted by grid similarity to a uint8 query
    frame (H, W) of the same product (ties keep the ANN order)."""
    similarity = score_frames(store, query, candidate_ids)
    return [
        Reranked(candidate_ids[i], float(similarity[i]), {channel: float(similarity[i])}, int(i))
        for i in np.argsort(-similarity, kind="stable")
    ]
