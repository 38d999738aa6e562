"""Ranking scores shared by the evaluations (clips, frames, analogs, augmented queries).

- **NDCG@k**: graded relevance of a candidate = its ground-truth similarity to the query,
  min-max normalised over that query's candidates (1 = the most similar candidate, 0 = the
  least), gain = relevance, discount 1/log2(rank + 1), divided by the ideal DCG@k of the
  ground-truth ranking. Raw similarities sit in a narrow band (about 0.35-0.95), so without
  the per-query normalisation every ranking would score close to 1.
- **Recall@k**: the share of the ground truth's k most similar candidates that a method puts
  in its own top k.
- **Pearson**: correlation of vector distances with ground-truth similarities over pairs.
"""

from __future__ import annotations

import numpy as np


def distance_matrix(vectors: np.ndarray) -> np.ndarray:
    """Euclidean distances (M, M) between rows, float64."""
    v = np.asarray(vectors, dtype=np.float64)
    sq = (v * v).sum(1)
    return np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2.0 * v @ v.T, 0.0))


def ndcg_at_k(ranked_gains: np.ndarray, ideal_gains: np.ndarray, k: int) -> float:
    """NDCG@k of gains in a method's rank order against the ideal order."""
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = float((ranked_gains[:k] * discount[: len(ranked_gains[:k])]).sum())
    idcg = float((ideal_gains[:k] * discount[: len(ideal_gains[:k])]).sum())
    return dcg / idcg if idcg > 0 else 0.0


def search_scores(
    distances: np.ndarray,
    truth: np.ndarray,
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
) -> tuple[float, float]:
    """Mean NDCG@k and recall@k over queries; ``candidates[q]`` masks each query's candidates."""
    ndcgs, recalls = [], []
    for q, mask in zip(queries, candidates, strict=True):
        cand = np.flatnonzero(mask)
        sims = truth[q, cand]
        span = sims.max() - sims.min()
        gains = (sims - sims.min()) / span if span > 0 else np.ones_like(sims)
        ideal = np.argsort(-sims, kind="stable")
        ranked = np.argsort(distances[q, cand], kind="stable")
        ndcgs.append(ndcg_at_k(gains[ranked], gains[ideal], k))
        recalls.append(len(set(ranked[:k]) & set(ideal[:k])) / min(k, len(cand)))
    return float(np.mean(ndcgs)), float(np.mean(recalls))


def pearson(x: np.ndarray, y: np.ndarray) -> float | None:
    """Their correlation; None (JSON null) where undefined: fewer than 2 pairs (a hold-out of
    one or two clips), one side constant, or values that are not finite."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    r = float(np.corrcoef(x, y)[0, 1])
    return r if np.isfinite(r) else None
