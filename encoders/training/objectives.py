"""Frame and clip encoder training on arrays: frames, or frame-embedding sequences for clips.

Two objectives:

- ``triplet`` (SkySearch): temporal triplets (``skysearch.encoders.datasets.triplets``),
  triplet margin loss on L2-normalised embeddings (margin 0.5).
- ``metric``: supervision by the ground-truth grid similarity. Every batch is a random set of
  items with their ground-truth similarity matrix ``S``; the loss is the dense log-ratio loss of
  Kim et al. (CVPR 2019), used by weather_similarity: for an anchor ``a`` and neighbours
  ``i, j``, ``(log d(a,i)/d(a,j) - log g(a,i)/g(a,j))**2`` with ``g = 1 - S`` the ground-truth
  distance. Averaged over all ``(i, j)`` it equals twice the variance over ``i`` of
  ``log d(a,i) - log g(a,i)``, which is how it is computed (O(B^2), no triple loop); a scale
  term makes the distances equal (not only proportional) to the ground-truth distances.
  (The ``small-cnn`` frame encoder's metric objective works on cell pairs instead:
  ``skysearch.encoders.training.cells``.)

Both run on the training skeleton (``skysearch.encoders.training.loop``): the batch order and
any dropout are re-seeded from ``(seed, epoch)`` at every epoch, so a resumed run equals an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skysearch.encoders.datasets.triplets import sample_triplets
from skysearch.encoders.device import resolve_device
from skysearch.encoders.training.loop import EpochMeter, RunState, TrainConfig, epoch_seed, fit
from torch import nn

from skysearch.errors import UsageError

OBJECTIVES = ("triplet", "metric")
EPS = 1e-6

# Clip encoders train on top of a frozen frame encoder with a smaller step (measured on GOES Irma,
# README encoders section); frame encoders use EncoderTrainConfig's default lr.
CLIP_LR = 1e-4


@dataclass(frozen=True, kw_only=True)
class EncoderTrainConfig(TrainConfig):
    """Frame and clip encoders: the objective and its parameters."""

    objective: str = "metric"
    weight_decay: float = 1e-4
    window_hours: float = 4.0
    neg_factor: float = 2.0
    margin: float = 0.5
    min_pair_hours: float = 0.0  # metric: ignore pairs closer in time than this

    def check(self) -> EncoderTrainConfig:
        if self.objective not in OBJECTIVES:
            raise UsageError(
                f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}"
            )
        if self.epochs < 1:
            raise UsageError(f"{{epochs}} must be >= 1, got {self.epochs}", params=["epochs"])
        if self.batch_size < 2:
            raise UsageError(
                f"{{batch_size}} must be >= 2, got {self.batch_size}", params=["batch_size"]
            )
        return self


# ----------------------------------------------------------------------------- losses


def pairwise_distance(embeddings: torch.Tensor) -> torch.Tensor:
    """Euclidean distance matrix, differentiable at 0 (clamped)."""
    sq = (embeddings[:, None, :] - embeddings[None, :, :]).pow(2).sum(-1)
    return sq.clamp_min(EPS).sqrt()


def log_ratio_loss(
    embeddings: torch.Tensor, similarity: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """Dense log-ratio loss plus a scale term: embedding distance = ``1 - similarity``.

    The log-ratio part makes distances proportional to the ground-truth distances per anchor;
    it is scale-free, so on its own every embedding may shrink into a tiny cap of the unit
    sphere (all cosines ~1, which float32 ANN search cannot rank). The scale term (squared mean
    log error per anchor) pins the proportionality constant to 1. ``valid`` (n, n) bool keeps
    only some pairs (e.g. those far apart in time, as search candidates are).
    """
    n = embeddings.shape[0]
    mask = ~torch.eye(n, dtype=torch.bool, device=embeddings.device)
    if valid is not None:
        mask &= valid
    weight = mask.float()
    count = weight.sum(1)
    keep = count >= 2
    if not keep.any():
        return embeddings.sum() * 0.0
    log_d = pairwise_distance(embeddings).log()
    log_g = (1.0 - similarity).clamp_min(EPS).log()
    z = (log_d - log_g) * weight
    centre = z.sum(1) / count.clamp_min(1)
    spread = ((z - centre[:, None]).pow(2) * weight).sum(1) / count.clamp_min(1)
    return (2.0 * spread + centre.pow(2))[keep].mean()


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float
) -> torch.Tensor:
    return F.triplet_margin_loss(anchor, positive, negative, margin=margin)


# ----------------------------------------------------------------------------- loop

Batches = Callable[[np.random.Generator], Iterator[tuple[torch.Tensor, int]]]


def seed_epoch(seed: int, epoch: int) -> np.random.Generator:
    """Seed torch (dropout) for this epoch and return its batch-order generator."""
    torch.manual_seed(epoch_seed(seed, epoch))
    return np.random.default_rng([seed, epoch])


def fit_batches(
    model: nn.Module,
    batches: Batches,
    config: EncoderTrainConfig,
    run_dir: Path,
    run_fingerprint: str,
    desc: str = "train",
    trainable: list[nn.Parameter] | None = None,
    unit: str = "items",
) -> list[dict[str, float]]:
    """Train on ``batches(rng)`` (``(loss, items)`` per step) with AdamW; resumable in
    ``run_dir``. Returns the per-epoch history ``[{"epoch", "loss", "<unit>_per_s"}]``:
    ``unit`` names what a step's items are (the frame trainer's are cell pairs)."""
    params = trainable if trainable is not None else list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)

    def run_epoch(epoch: int, meter: EpochMeter) -> dict[str, float]:
        rng = seed_epoch(config.seed, epoch)
        model.train()
        for loss, n in batches(rng):
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            meter.step(float(loss.detach()), n)
        return {"loss": float(np.mean(meter.step_losses() or [0.0])), f"{unit}_per_s": meter.rate}

    state = RunState({"model": model}, {"optim": optimizer})
    history = fit(config, run_epoch, state, run_dir, run_fingerprint, desc).history
    model.eval()
    return history


def _to_device(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(array).to(device)


def item_batches(
    model: Callable[[torch.Tensor], torch.Tensor],
    items: torch.Tensor,
    times_s: np.ndarray,
    similarity: np.ndarray | None,
    config: EncoderTrainConfig,
    series: np.ndarray | None = None,
) -> Callable[[np.random.Generator], Iterator[tuple[torch.Tensor, int]]]:
    """Batches for one epoch over ``items`` (frames or frame-embedding sequences).

    ``metric``: random batches of ``batch_size`` items, log-ratio loss against ``similarity``.
    ``triplet``: one temporal triplet per eligible anchor, ``batch_size`` triplets per step;
    positives of one ``series`` (satellite and event) as the anchor.
    """
    device = items.device
    n = len(items)
    if config.objective == "metric":
        if similarity is None:
            raise UsageError("the metric objective needs ground-truth similarities (sketches)")
        span_h = float(np.ptp(times_s)) / 3600.0 if n else 0.0
        if n < 3 or span_h < config.min_pair_hours:  # every loss would be 0: nothing learnt
            raise UsageError(
                f"no training pairs: {n} items over {span_h:.0f} h, and pairs closer than "
                f"{{min_pair_hours}} {config.min_pair_hours:g} h are left out; lower it or "
                "train on a longer period",
                params=["min_pair_hours"],
            )
        sim = torch.as_tensor(similarity, dtype=torch.float32, device=device)
        times = torch.as_tensor(np.asarray(times_s, dtype=np.float64), device=device)

        def metric_epoch(rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, int]]:
            order = torch.as_tensor(rng.permutation(n), device=device)
            for start in range(0, n - 2, config.batch_size):
                idx = order[start : start + config.batch_size]
                if len(idx) < 3:
                    continue
                emb = model(items[idx])
                valid = None
                if config.min_pair_hours > 0:
                    t = times[idx]
                    valid = (t[:, None] - t[None, :]).abs() >= config.min_pair_hours * 3600.0
                yield log_ratio_loss(emb, sim[idx][:, idx], valid), len(idx)

        return metric_epoch

    window = config.window_hours * 3600.0

    def triplet_epoch(rng: np.random.Generator) -> Iterator[tuple[torch.Tensor, int]]:
        a, p, q = sample_triplets(times_s, window, config.neg_factor, rng, series)
        if len(a) == 0:
            raise UsageError(
                "no temporal triplets: the training range is shorter than "
                f"{config.neg_factor} x {config.window_hours} h; use more data or a smaller window"
            )
        step = max(config.batch_size // 3, 1)
        for start in range(0, len(a), step):
            sel = [x[start : start + step] for x in (a, p, q)]
            idx = torch.as_tensor(np.concatenate(sel), device=device)
            emb = model(items[idx]).reshape(3, len(sel[0]), -1)
            yield triplet_loss(emb[0], emb[1], emb[2], config.margin), 3 * len(sel[0])

    return triplet_epoch


def train_on_arrays(
    model: nn.Module,
    items: np.ndarray | torch.Tensor,
    times_s: np.ndarray,
    similarity: np.ndarray | None,
    config: EncoderTrainConfig,
    run_dir: Path,
    run_fingerprint: str,
    desc: str,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    trainable: list[nn.Parameter] | None = None,
    series: np.ndarray | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` on in-memory ``items`` (frames ``(N, C, H, W)`` uint8, or frame
    embeddings ``(N, L, D)``) with ``times_s`` (N,), ``series`` (N,) (see ``item_batches``)
    and, for ``metric``, ``similarity`` (N, N)."""
    config.check()
    device = resolve_device(config.device)
    model.to(device)
    tensor = _to_device(items, device)
    times = np.asarray(times_s)
    batches = item_batches(forward or model, tensor, times, similarity, config, series)
    return fit_batches(model, batches, config, run_dir, run_fingerprint, desc, trainable)
