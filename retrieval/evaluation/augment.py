"""``skysearch eval augment``: does a predicted future make clip search better in the long term?

Protocol (same hold-out and ground truth as ``skysearch eval clips``):

- Clip spec = the predictor's (e.g. IR 6 x 60 min); every clip's *following* clip is the one
  starting ``L * gap`` later. Queries: held-out clips (the most recent ~20% of time, the
  predictor's hold-out start) that have a following clip. Candidates: every archive clip that
  has a following clip and starts more than ``exclude_hours`` (12 h) from the query.
- Short-term relevance of a candidate = ground-truth similarity (grid KS metric) of the present
  clips. Long-term relevance = ``(1 - w) * present + w * similarity of the two FOLLOWING clips``
  with ``w = 0.5`` (``future_only`` = ``w = 1`` is reported too): since clip similarity is
  the mean of frame similarities, this is exactly
  the ground-truth similarity of the 2L-frame windows (present + following), i.e. "looked like
  the query AND evolved like it" over the whole horizon, each hour counting the same.
- NDCG@10 as ``eval clips`` (per-query min-max normalised gains).
- Plain = ranking by cosine(query vector, candidate vector). Augmented = the fusion options of
  :mod:`skysearch.retrieval.search.augment`, computed exactly as the store path does (pool re-rank),
  with the predictor's future, and two references: persistence (the last frame repeated as the
  "future") and the oracle (the query's TRUE following clip embedded: what a perfect
  predictor would give with this encoder and fusion).
- Predictor quality on the held-out pairs: MSE, PSNR, SSIM of the model, of persistence, and
  of the latest plain-MSE and adversarial predictors of the same clip spec (``mse_model_*``,
  ``adversarial_model_*``) when registered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from skysearch.encoders.datasets.clips import (
    clip_similarity_matrix,
    load_clip_set,
    load_step_frames,
    split_by_time,
    step_similarity_matrix,
)
from skysearch.encoders.device import resolve_device
from skysearch.encoders.factory import embed_in_batches, load_clip_embedder, load_predictor_model
from skysearch.encoders.metrics import mse, psnr, ssim
from skysearch.encoders.models.predictor import SimVP, persistence, to_working
from skysearch.encoders.registry import ModelRecord, list_models
from skysearch.encoders.training.predictor_data import following_rows
from skysearch.retrieval.evaluation.ranking import search_scores
from skysearch.retrieval.search.augment import (
    METHODS,
    AugmentOptions,
    combine_vectors,
    embed_predicted,
    fuse,
    unit,
)

from skysearch.config import Workspace
from skysearch.errors import UsageError
from skysearch.timeutil import parse_time


@dataclass
class AugmentEvalOptions:
    k: int = 10
    exclude_hours: float = 12.0
    future_weight: float = 0.5  # w of the long-term relevance
    fusion: AugmentOptions = AugmentOptions()
    betas: tuple[float, ...] = (0.25, 0.5, 0.75)
    device: str = "cpu"


def ndcg(scores: np.ndarray, truth: np.ndarray, candidates: np.ndarray, k: int) -> float:
    """Mean NDCG@k over queries (rows of ``scores``, higher first, and of ``truth``)."""
    rows = np.arange(len(truth))
    return search_scores(-scores, truth, rows, candidates, k)[0]


def pool_rerank(
    present: np.ndarray, future: np.ndarray, candidates: np.ndarray, options: AugmentOptions
) -> np.ndarray:
    """What the store path does: fuse within the top-``pool`` plain hits; the rest rank below."""
    out = np.full(present.shape, -np.inf)
    for q in range(len(present)):
        cand = np.flatnonzero(candidates[q])
        pool = cand[np.argsort(-present[q, cand], kind="stable")[: options.pool]]
        fused = fuse(present[q, pool], future[q, pool], options)
        # Keep pool members above everything else, ordered by the fused score.
        out[q, pool] = 10.0 + (fused - fused.min())
    return out


@torch.no_grad()
def _predict_all(model: SimVP, clips: torch.Tensor, batch: int = 16) -> torch.Tensor:
    """Predictions (N, L, C, h, w) in [0, 1] for working-resolution inputs (N, L, C, h, w)."""
    model.eval()
    device = next(model.parameters()).device
    outs = [
        model(clips[i : i + batch].to(device).float() / 255.0).clamp(0, 1).cpu()
        for i in range(0, len(clips), batch)
    ]
    return torch.cat(outs)


def _frame_quality(pred: torch.Tensor, truth: torch.Tensor) -> dict[str, float]:
    return {
        "mse": float(mse(pred, truth)),
        "psnr": float(psnr(pred, truth)),
        "ssim": float(ssim(pred, truth)),
    }


def _latest_by_mode(workspace: Workspace, main: ModelRecord) -> dict[str, ModelRecord]:
    """The latest plain-MSE and adversarial predictors of ``main``'s clip spec."""
    keys = ("satellite", "channels", "length", "gap_minutes")
    spec = [main.config.get(k) for k in keys]
    found: dict[str, ModelRecord] = {}
    for record in list_models(workspace, "predictor"):  # oldest first: later ones win
        if [record.config.get(k) for k in keys] == spec:
            mode = "adversarial" if record.config.get("training", {}).get("adversarial") else "mse"
            found[mode] = record
    return found


def evaluate_augment(
    workspace: Workspace,
    predictor_id: str | None = None,
    clip_model_id: str | None = None,
    options: AugmentEvalOptions | None = None,
) -> dict[str, Any]:
    """Short- and long-term NDCG@k, plain vs augmented, and predictor quality, in one run."""
    options = options or AugmentEvalOptions()
    predictor, info, record = load_predictor_model(workspace, predictor_id, options.device)
    embedder, clip_record = load_clip_embedder(workspace, clip_model_id, options.device)
    if embedder.length != int(info["length"]):
        raise UsageError(
            f"clip model {clip_record.model_id} embeds {embedder.length}-frame clips but the "
            f"predictor works on {info['length']}-frame clips: train one with "
            f"skysearch train clips --length {info['length']} --gap {info['gap_minutes']}"
        )
    clip_set = load_clip_set(
        workspace, info["satellite"], info["channels"], info["length"], info["gap_minutes"]
    )
    split = split_by_time(clip_set, holdout_start=parse_time(info["holdout_start"]))
    nxt = following_rows(clip_set)
    queries = np.flatnonzero(split.heldout & (nxt >= 0))
    starts_h = clip_set.starts.astype(np.int64) / 3.6e9
    candidates = (
        np.abs(starts_h[queries][:, None] - starts_h[None, :]) > options.exclude_hours
    ) & (nxt >= 0)[None, :]
    keep = candidates.sum(1) >= options.k
    queries, candidates = queries[keep], candidates[keep]
    if len(queries) == 0:
        raise UsageError(
            "no held-out query has a following clip and enough candidates: ingest a longer "
            "period or use shorter clips"
        )

    frames = load_step_frames(workspace, clip_set, np.arange(len(clip_set.steps)))
    step_sim = step_similarity_matrix(frames)
    truth = clip_similarity_matrix(step_sim, clip_set.index)  # (M, M)
    safe_next = np.where(nxt >= 0, nxt, 0)
    short = truth[queries]
    future_truth = truth[np.ix_(nxt[queries], safe_next)]
    w = options.future_weight
    long = (1 - w) * short + w * future_truth

    device = resolve_device(options.device)
    frames_t = torch.as_tensor(frames)
    step_emb = embed_in_batches(embedder.frame, frames_t, 32, device)
    vectors = unit(
        embed_in_batches(
            embedder.clip, step_emb[torch.as_tensor(clip_set.index)], 256, device
        ).numpy()
    )

    # Query inputs and true futures at the predictor's resolution; predictions; their vectors.
    cfg = predictor.config
    small = (to_working(frames_t, cfg.height, cfg.width) * 255).round().to(torch.uint8)
    q_in = small[torch.as_tensor(clip_set.index[queries])]  # (Q, L, C, h, w)
    q_true = small[torch.as_tensor(clip_set.index[nxt[queries]])]
    pred = _predict_all(predictor, q_in)
    target, base = q_true.float() / 255, persistence(q_in.float() / 255)
    futures = {
        "predicted": embed_predicted(embedder, pred, frames.shape[-2:]),
        "persistence": embed_predicted(embedder, base, frames.shape[-2:]),
        "oracle": vectors[nxt[queries]],
    }
    quality: dict[str, Any] = _frame_quality(pred, target)
    quality.update({f"persistence_{k}": v for k, v in _frame_quality(base, target).items()})
    # The plain-MSE and the adversarial predictor side by side (whichever is registered).
    for mode, other in _latest_by_mode(workspace, record).items():
        other_model = predictor if other.model_id == record.model_id else None
        if other_model is None:
            other_model = load_predictor_model(workspace, other.model_id, options.device)[0]
        scores = _frame_quality(_predict_all(other_model, q_in), target)
        quality.update({f"{mode}_model_{k}": v for k, v in scores.items()})
        quality[f"{mode}_model_id"] = other.model_id
    quality["model_id"] = record.model_id
    quality["adversarial"] = bool(info.get("training", {}).get("adversarial"))
    quality["pairs"] = len(queries)

    present = vectors[queries] @ vectors.T  # (Q, M)
    k = options.k

    def scores_for(future_vecs: np.ndarray, opts: AugmentOptions) -> np.ndarray:
        if opts.method == "sum":
            return combine_vectors(vectors[queries], future_vecs, opts.beta) @ vectors.T
        fut = future_vecs @ vectors[safe_next].T  # vs each candidate's following clip
        return pool_rerank(present, fut, candidates, opts)

    def both(scores: np.ndarray) -> dict[str, float]:
        return {
            "short": ndcg(scores, short, candidates, k),
            "long": ndcg(scores, long, candidates, k),
            "future": ndcg(scores, future_truth, candidates, k),
        }

    plain = both(present)
    chosen = both(scores_for(futures["predicted"], options.fusion))
    table = []
    for source, fvecs in futures.items():
        for method in METHODS:
            for beta in options.betas if method != "rrf" else (0.5,):
                opts = AugmentOptions(method, beta, options.fusion.pool, options.fusion.rrf_k)
                res = both(scores_for(fvecs, opts))
                table.append(
                    {
                        "future": source,
                        "method": method,
                        "beta": beta,
                        "short_ndcg_at_10": res["short"],
                        "long_ndcg_at_10": res["long"],
                        "future_only_ndcg_at_10": res["future"],
                    }
                )
    return {
        "long_term_ndcg_at_10": {"plain": plain["long"], "augmented": chosen["long"]},
        "short_term_ndcg_at_10": {"plain": plain["short"], "augmented": chosen["short"]},
        "future_only_ndcg_at_10": {"plain": plain["future"], "augmented": chosen["future"]},
        "predictor": quality,
        "fusion": options.fusion.to_dict(),
        "options": table,
        "queries": len(queries),
        "candidates_per_query": float(candidates.sum(1).mean()),
        "spec": {k2: info[k2] for k2 in ("satellite", "channels", "length", "gap_minutes")},
        "holdout_start": info["holdout_start"],
        "long_term_future_weight": w,
        "exclude_hours": options.exclude_hours,
        "clip_model_id": clip_record.model_id,
    }
