"""Training loops on arrays: frame encoder on frames, clip encoder on frame-embedding sequences.

Two objectives, same loop:

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

The loop is deterministic for a seed (the batch order and any dropout are re-seeded from
``(seed, epoch)`` at every epoch, so a resumed run equals an uninterrupted one), shows a tqdm bar
with loss and items/s, and writes a resumable state (model + Adam moments, safetensors) after
every epoch.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skysearch.encoders.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_into,
    save_checkpoint,
)
from skysearch.encoders.datasets.triplets import sample_triplets
from torch import nn
from tqdm import tqdm

from skysearch.errors import UsageError

OBJECTIVES = ("triplet", "metric")
EPS = 1e-6


# Clip encoders train on top of a frozen frame encoder with a smaller step (measured on GOES Irma,
# README encoders section); frame encoders use TrainConfig's default lr.
CLIP_LR = 1e-4


@dataclass
class TrainConfig:
    objective: str = "metric"
    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    seed: int = 0
    window_hours: float = 4.0
    neg_factor: float = 2.0
    margin: float = 0.5
    min_pair_hours: float = 0.0  # metric: ignore pairs closer in time than this
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self) -> TrainConfig:
        if self.objective not in OBJECTIVES:
            raise UsageError(
                f"unknown objective {self.objective!r}; choose one of {', '.join(OBJECTIVES)}"
            )
        if self.epochs < 1 or self.batch_size < 2:
            raise UsageError("--epochs must be >= 1 and the batch size >= 2")
        return self


def resolve_device(requested: str | None) -> torch.device:
    """``cuda`` when asked (error if absent), ``cpu`` when asked, else CUDA if available."""
    if requested in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda asked but no CUDA GPU is available; use --device cpu")
    if requested != "cpu" and not requested.startswith("cuda"):
        raise UsageError(f"unknown device {requested!r}; use cpu or cuda")
    return torch.device(requested)


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


# ----------------------------------------------------------------------------- state


def fingerprint(payload: dict[str, Any]) -> str:
    """Short stable hash of a training setup: a re-run with the same one resumes."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :12
    ]


def optimizer_tensors(
    optimizer: torch.optim.Optimizer, prefix: str = "optim"
) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as flat ``{prefix}.{param}.{slot}`` tensors."""
    tensors = {}
    for idx, slots in optimizer.state_dict()["state"].items():
        for name, value in slots.items():
            tensors[f"{prefix}.{idx}.{name}"] = torch.as_tensor(value)
    return tensors


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    prefix: str = "optim",
    param_groups: Any = None,
) -> None:
    """Load the ``{prefix}.*`` tensors of :func:`optimizer_tensors` back into ``optimizer``.

    ``param_groups`` are the saved groups; ``None`` keeps the optimizer's current ones.
    """
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    if param_groups is None:
        param_groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


def save_training_state(
    run_dir: Path,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch: int,
    history: list[dict[str, float]],
    run_fingerprint: str,
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update(optimizer_tensors(optimizer))
    save_checkpoint(
        run_dir,
        tensors,
        {
            "epoch": epoch,
            "history": history,
            "fingerprint": run_fingerprint,
            "param_groups": optimizer.state_dict()["param_groups"],
        },
    )


def load_training_state(
    run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, run_fingerprint: str
) -> tuple[int, list[dict[str, float]]]:
    """(epochs done, history) from a previous interrupted run, or (0, []) when none or stale."""
    if not (run_dir / "config.json").is_file():
        return 0, []
    try:
        tensors, config = load_checkpoint(run_dir)
    except CheckpointError:
        return 0, []  # a half-written state from a killed run: start over
    if config.get("fingerprint") != run_fingerprint:
        return 0, []
    device = next(model.parameters()).device
    model_state = {k[6:]: v.to(device) for k, v in tensors.items() if k.startswith("model.")}
    load_into(model, model_state, source=str(run_dir))
    optim = {k: v.to(device) for k, v in tensors.items() if k.startswith("optim.")}
    restore_optimizer(optimizer, optim, param_groups=config["param_groups"])
    return int(config["epoch"]), list(config.get("history", []))


# ----------------------------------------------------------------------------- loop


def _seed_epoch(seed: int, epoch: int) -> np.random.Generator:
    torch.manual_seed(seed * 100_003 + epoch)
    return np.random.default_rng([seed, epoch])


def fit(
    model: nn.Module,
    batches: Callable[[np.random.Generator], Iterator[tuple[torch.Tensor, int]]],
    config: TrainConfig,
    run_dir: Path,
    run_fingerprint: str,
    desc: str = "train",
    trainable: list[nn.Parameter] | None = None,
) -> list[dict[str, float]]:
    """Run ``config.epochs`` epochs; ``batches(rng)`` yields ``(loss, items)`` per step.

    Resumes from ``run_dir`` when it holds the state of the same setup. Returns the per-epoch
    history ``[{"epoch", "loss", "items_per_s"}]``.
    """
    params = trainable if trainable is not None else list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    done, history = load_training_state(run_dir, model, optimizer, run_fingerprint)
    if done:
        message = f"resuming {desc} from epoch {done}/{config.epochs} ({run_dir})"
        tqdm.write(message, file=sys.stderr)
    for epoch in range(done, config.epochs):
        rng = _seed_epoch(config.seed, epoch)
        model.train()
        total, items, steps = 0.0, 0, 0
        started = time.perf_counter()
        bar = tqdm(batches(rng), desc=f"{desc} {epoch + 1}/{config.epochs}", leave=False)
        for loss, n in bar:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            items += n
            steps += 1
            rate = items / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{total / steps:.4f}", items_s=f"{rate:.1f}")
        bar.close()
        elapsed = time.perf_counter() - started
        record = {
            "epoch": epoch + 1,
            "loss": total / max(steps, 1),
            "items_per_s": items / max(elapsed, 1e-9),
        }
        history.append(record)
        tqdm.write(
            f"{desc} epoch {epoch + 1}/{config.epochs}: loss {record['loss']:.4f}, "
            f"{record['items_per_s']:.1f} items/s",
            file=sys.stderr,
        )
        save_training_state(run_dir, model, optimizer, epoch + 1, history, run_fingerprint)
    model.eval()
    return history


def _to_device(array: np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(array).to(device)


def item_batches(
    model: Callable[[torch.Tensor], torch.Tensor],
    items: torch.Tensor,
    times_s: np.ndarray,
    similarity: np.ndarray | None,
    config: TrainConfig,
) -> Callable[[np.random.Generator], Iterator[tuple[torch.Tensor, int]]]:
    """Batches for one epoch over ``items`` (frames or frame-embedding sequences).

    ``metric``: random batches of ``batch_size`` items, log-ratio loss against ``similarity``.
    ``triplet``: one temporal triplet per eligible anchor, ``batch_size`` triplets per step.
    """
    device = items.device
    n = len(items)
    if config.objective == "metric":
        if similarity is None:
            raise UsageError("the metric objective needs ground-truth similarities (sketches)")
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
        a, p, q = sample_triplets(times_s, window, config.neg_factor, rng)
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
    config: TrainConfig,
    run_dir: Path,
    run_fingerprint: str,
    desc: str,
    forward: Callable[[torch.Tensor], torch.Tensor] | None = None,
    trainable: list[nn.Parameter] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` on in-memory ``items`` (frames ``(N, C, H, W)`` uint8, or frame
    embeddings ``(N, L, D)``) with ``times_s`` (N,) and, for ``metric``, ``similarity`` (N, N)."""
    config.check()
    device = resolve_device(config.device)
    model.to(device)
    tensor = _to_device(items, device)
    batches = item_batches(forward or model, tensor, np.asarray(times_s), similarity, config)
    return fit(model, batches, config, run_dir, run_fingerprint, desc, trainable)
