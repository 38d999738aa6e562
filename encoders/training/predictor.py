"""Training the video predictor: plain MSE, or SkySearch's adversarial mix.

Adversarial mode: a conditional discriminator sees the L input frames together with L future
frames (true or predicted). Every step draws ONE of three updates with probabilities
``lambda_mse``, ``lambda_g``, ``lambda_d`` (normalised):

- MSE: the predictor's pixel MSE;
- G: the non-saturating GAN loss on the predicted future + a feature-matching loss (L2 between
  the batch means of the discriminator's intermediate features for true and predicted futures,
  Salimans et al. 2016), which keeps the adversarial signal stable on tiny data;
- D: the discriminator's binary cross-entropy on true vs predicted futures.

Generator updates (MSE and G) add BigGAN's orthogonal regularisation
``beta * sum ||W W^T * (1 - I)||_F^2`` over the predictor's conv weights.

Deterministic with a seed: each epoch draws its batch order and its loss choices from a generator
seeded by ``(seed, epoch)``, so a run resumed at an epoch boundary continues exactly as an
uninterrupted one. Resume state (predictor, discriminator, both optimizers, history) is written
with safetensors after every epoch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skysearch.encoders.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from skysearch.encoders.datasets.clips import (
    ClipSet,
    load_clip_set,
    load_step_frames,
    split_by_time,
    to_datetime64,
)
from skysearch.encoders.metrics import frame_metrics, mse, ssim
from skysearch.encoders.models.predictor import (
    PredictorConfig,
    SimVP,
    load_predictor,
    persistence,
    predict,
    predicted_offsets,
    render_strip,
    save_predictor,
    to_working,
)
from skysearch.encoders.registry import model_dir, new_model_id, register_model, resolve
from skysearch.encoders.training.loop import optimizer_tensors, restore_optimizer
from skysearch.ingest.clips import clip_frames, read_clips
from skysearch.ingest.framestore import FrameStore
from torch import nn
from torch.nn import functional as F  # noqa: N812
from tqdm import tqdm

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError
from skysearch.timeutil import parse_time, to_rfc3339


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 8
    lr: float = 1e-3
    seed: int = 0
    adversarial: bool = False
    lambda_mse: float = 0.6
    lambda_g: float = 0.2
    lambda_d: float = 0.2
    ortho_beta: float = 1e-4
    fm_weight: float = 1.0
    lr_d: float = 2e-4

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


class Discriminator(nn.Module):
    """Conditional critic over (input clip, future clip) stacked on the channel axis."""

    def __init__(self, config: PredictorConfig, width: int = 32) -> None:
        super().__init__()
        c_in = 2 * config.length * config.channels
        chans = [c_in, width, 2 * width, 4 * width]
        self.blocks = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(a, b, 4, stride=2, padding=1), nn.LeakyReLU(0.2))
                for a, b in zip(chans[:-1], chans[1:], strict=True)
            ]
        )
        self.head = nn.Linear(chans[-1], 1)

    def forward(
        self, context: torch.Tensor, future: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b = context.shape[0]
        z = torch.cat([context, future], dim=1).reshape(b, -1, *context.shape[-2:])
        feats = []
        for block in self.blocks:
            z = block(z)
            feats.append(z)
        return self.head(z.mean(dim=(-2, -1))).squeeze(-1), feats


def orthogonal_penalty(model: nn.Module) -> torch.Tensor:
    """BigGAN orthogonal regularisation: off-diagonal Gram entries of every conv weight."""
    total = torch.zeros((), device=next(model.parameters()).device)
    for name, p in model.named_parameters():
        if p.ndim < 2 or not name.endswith("weight"):
            continue
        w = p.reshape(p.shape[0], -1)
        gram = w @ w.t()
        total = total + (gram * (1 - torch.eye(gram.shape[0], device=gram.device))).pow(2).sum()
    return total


def _feature_matching(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(
        (r.detach().mean(0) - f.mean(0)).pow(2).mean() for r, f in zip(real, fake, strict=True)
    )


def build_predictor(config: PredictorConfig, seed: int) -> SimVP:
    """A freshly initialised predictor; the same seed gives the same weights."""
    torch.manual_seed(seed)
    return SimVP(config)


def _to_float(batch: torch.Tensor) -> torch.Tensor:
    return batch.float() / 255.0 if batch.dtype == torch.uint8 else batch.float()


@torch.no_grad()
def evaluate(
    model: SimVP, inputs: torch.Tensor, targets: torch.Tensor, batch_size: int = 16
) -> dict[str, float]:
    """MSE and SSIM of the model and of persistence on (N, L, C, H, W) pairs."""
    model.eval()
    sums = {"mse": 0.0, "ssim": 0.0, "persistence_mse": 0.0, "persistence_ssim": 0.0}
    n = inputs.shape[0]
    for i in range(0, n, batch_size):
        device = next(model.parameters()).device
        x = _to_float(inputs[i : i + batch_size].to(device))
        y = _to_float(targets[i : i + batch_size].to(device))
        pred, base = model(x).clamp(0, 1), persistence(x)
        k = x.shape[0]
        sums["mse"] += float(mse(pred, y)) * k
        sums["ssim"] += float(ssim(pred, y)) * k
        sums["persistence_mse"] += float(mse(base, y)) * k
        sums["persistence_ssim"] += float(ssim(base, y)) * k
    return {key: value / max(n, 1) for key, value in sums.items()}


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    resumed_from_epoch: int
    best_epoch: int  # the epoch whose weights the model holds (best validation MSE, else last)


def fit(
    model: SimVP,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    config: TrainConfig,
    state_dir: Path | None = None,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train ``model`` on (N, L, C, H, W) input/target pairs (uint8 or float in [0, 1]).

    With ``validation`` pairs (from the training period, never the test period), the model ends
    with the weights of the epoch with the lowest validation MSE (early stopping on 148 pairs
    matters: the predictor overfits within a few epochs).

    With ``state_dir``, resume from the last completed epoch saved there and save after every
    epoch (interrupting loses at most the epoch in progress).
    """
    if inputs.shape != targets.shape or inputs.shape[0] == 0:
        raise ValueError(f"need matching non-empty pairs, got {inputs.shape} / {targets.shape}")
    device = next(model.parameters()).device
    opt_g = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    disc = opt_d = None
    if config.adversarial:
        torch.manual_seed(config.seed + 1)
        disc = Discriminator(model.config).to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr_d, betas=(0.5, 0.999))
    history: list[dict[str, float]] = []
    start_epoch = 0
    best: dict[str, torch.Tensor] = {}
    if state_dir is not None and (Path(state_dir) / "config.json").is_file():
        start_epoch, history, best = _load_state(state_dir, model, opt_g, disc, opt_d, config)

    probs = torch.tensor([config.lambda_mse, config.lambda_g, config.lambda_d])
    probs = probs / probs.sum()
    n = inputs.shape[0]
    for epoch in range(start_epoch, config.epochs):
        gen = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        order = torch.randperm(n, generator=gen)
        batches = [order[i : i + config.batch_size] for i in range(0, n, config.batch_size)]
        choices = torch.multinomial(probs, len(batches), replacement=True, generator=gen)
        model.train()
        sums = {"mse": 0.0, "g": 0.0, "d": 0.0}
        counts = {"mse": 0, "g": 0, "d": 0}
        t0 = time.perf_counter()
        bar = tqdm(
            batches,
            desc=f"predictor epoch {epoch + 1}/{config.epochs}",
            unit="batch",
            file=sys.stderr,
            disable=not progress,
        )
        for bi, idx in enumerate(bar):
            x, y = _to_float(inputs[idx].to(device)), _to_float(targets[idx].to(device))
            kind = ("mse", "g", "d")[int(choices[bi])] if config.adversarial else "mse"
            loss = _step(kind, model, disc, opt_g, opt_d, x, y, config)
            sums[kind] += loss * len(idx)
            counts[kind] += len(idx)
            bar.set_postfix({kind: f"{loss:.4f}"})
        bar.close()
        record: dict[str, float] = {"epoch": epoch + 1, "seconds": time.perf_counter() - t0}
        for key in sums:
            if counts[key]:
                record[f"train_{key}"] = sums[key] / counts[key]
        record["samples_per_s"] = n / max(record["seconds"], 1e-9)
        if validation is not None:
            record.update({f"val_{k}": v for k, v in evaluate(model, *validation).items()})
            if record["val_mse"] <= min(h["val_mse"] for h in [*history, record]):
                best = {k: v.detach().clone() for k, v in model.state_dict().items()}
        history.append(record)
        if state_dir is not None:
            _save_state(state_dir, model, opt_g, disc, opt_d, config, history, best)
        if on_epoch is not None:
            on_epoch(record)
    best_epoch = len(history)
    if best:
        model.load_state_dict(best)
        best_epoch = 1 + min(range(len(history)), key=lambda i: history[i]["val_mse"])
    return TrainResult(history, start_epoch, best_epoch)


def _step(
    kind: str,
    model: SimVP,
    disc: Discriminator | None,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer | None,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
) -> float:
    """One update of the chosen kind; returns the loss value (without the regulariser)."""
    pred = model(x)
    if kind == "d":
        assert disc is not None and opt_d is not None
        real, _ = disc(x, y)
        fake, _ = disc(x, pred.detach())
        loss = F.binary_cross_entropy_with_logits(
            real, torch.ones_like(real)
        ) + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        opt_d.zero_grad(set_to_none=True)
        loss.backward()
        opt_d.step()
        return float(loss.detach())
    if kind == "mse":
        loss = F.mse_loss(pred, y)
    else:
        assert disc is not None
        fake, fake_feats = disc(x, pred)
        _, real_feats = disc(x, y)
        loss = F.binary_cross_entropy_with_logits(fake, torch.ones_like(fake))
        loss = loss + config.fm_weight * _feature_matching(real_feats, fake_feats)
    total = loss
    if config.adversarial and config.ortho_beta > 0:
        total = loss + config.ortho_beta * orthogonal_penalty(model)
    opt_g.zero_grad(set_to_none=True)
    total.backward()
    opt_g.step()
    if disc is not None:
        disc.zero_grad(set_to_none=True)  # G steps must not leave gradients on D
    return float(loss.detach())


def _save_state(
    state_dir: Path,
    model: SimVP,
    opt_g: torch.optim.Optimizer,
    disc: Discriminator | None,
    opt_d: torch.optim.Optimizer | None,
    config: TrainConfig,
    history: list[dict[str, float]],
    best: dict[str, torch.Tensor],
) -> None:
    tensors = {f"g.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"best.{k}": v for k, v in best.items()})
    tensors.update(optimizer_tensors(opt_g, "opt_g"))
    if disc is not None and opt_d is not None:
        tensors.update({f"d.{k}": v for k, v in disc.state_dict().items()})
        tensors.update(optimizer_tensors(opt_d, "opt_d"))
    meta = {
        "epoch": len(history),
        "history": history,
        "train": config.to_dict(),
        "predictor": model.config.to_dict(),
    }
    save_checkpoint(state_dir, tensors, meta)


def _load_state(
    state_dir: Path,
    model: SimVP,
    opt_g: torch.optim.Optimizer,
    disc: Discriminator | None,
    opt_d: torch.optim.Optimizer | None,
    config: TrainConfig,
) -> tuple[int, list[dict[str, float]], dict[str, torch.Tensor]]:
    tensors, meta = load_checkpoint(state_dir)
    saved = TrainConfig.from_dict(meta.get("train", {}))
    # Resuming is only exact when everything but the epoch count is unchanged.
    if {**saved.to_dict(), "epochs": 0} != {**config.to_dict(), "epochs": 0} or meta.get(
        "predictor"
    ) != model.config.to_dict():
        raise CheckpointError(
            f"resume state in {state_dir} was made with other settings; "
            "pass the same options or --restart"
        )
    model.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("g.")})
    restore_optimizer(opt_g, tensors, "opt_g")
    if disc is not None and opt_d is not None:
        disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("d.")})
        restore_optimizer(opt_d, tensors, "opt_d")
    best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    return int(meta["epoch"]), list(meta.get("history", [])), best


# ----------------------------------------------------------------------------- workspace data


@dataclass
class PredictorData:
    """(clip, following clip) pairs of one clip spec, frames at the predictor resolution.

    ``steps``: uint8 (S, C, h, w) frames of every step of the clip set; ``index``/``next_index``
    (N, L) step rows of each pair's input clip and its following clip (the clip starting
    ``L * gap`` after it, i.e. the L steps after the input's last frame).
    """

    clip_set: ClipSet
    steps: torch.Tensor
    rows: np.ndarray  # (N,) clip-set row of each pair's input clip
    next_rows: np.ndarray  # (N,) clip-set row of its following clip
    holdout_start: datetime

    @property
    def starts(self) -> np.ndarray:
        return self.clip_set.starts[self.rows]

    def tensors(self, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (n, L, C, h, w) inputs and targets of the selected pairs."""
        index = torch.as_tensor(self.clip_set.index[self.rows[mask]])
        next_index = torch.as_tensor(self.clip_set.index[self.next_rows[mask]])
        return self.steps[index], self.steps[next_index]

    @property
    def train_mask(self) -> np.ndarray:
        """Pairs entirely before the hold-out start (input and following clip)."""
        ends = self.clip_set.ends[self.next_rows]
        return ends < to_datetime64(self.holdout_start)

    def validation_split(self, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(fit, validation) masks: the latest ``fraction`` of the training pairs validate;
        fit pairs end before the first validation pair starts (no shared frames)."""
        train = np.flatnonzero(self.train_mask)
        n_val = int(round(len(train) * fraction))
        fit, val = self.train_mask.copy(), np.zeros_like(self.train_mask)
        if n_val == 0 or n_val >= len(train):
            return fit, val
        first_val = self.starts[train[-n_val]]
        val[train[-n_val:]] = True
        fit &= self.clip_set.ends[self.next_rows] < first_val
        return fit, val

    @property
    def test_mask(self) -> np.ndarray:
        """Pairs whose input clip starts in the hold-out period."""
        return self.starts >= to_datetime64(self.holdout_start)


def following_rows(clip_set: ClipSet) -> np.ndarray:
    """For each clip, the row of the clip starting ``length * gap`` minutes later, or -1."""
    starts = clip_set.starts
    where = {int(t): i for i, t in enumerate(starts.astype(np.int64))}
    shift = np.timedelta64(clip_set.length * clip_set.gap_minutes, "m").astype("timedelta64[us]")
    later = (starts + shift).astype(np.int64)
    return np.array([where.get(int(t), -1) for t in later], dtype=np.int64)


def load_predictor_data(
    workspace: Workspace,
    satellite: str | None = None,
    channels: str | list[str] | None = None,
    length: int | None = None,
    gap_minutes: int | None = None,
    height: int = 64,
    width: int = 96,
    holdout: float = 0.2,
) -> PredictorData:
    """Pairs of one clip spec, frames resized to (height, width); hold-out = latest ``holdout``."""
    clip_set = load_clip_set(workspace, satellite, channels, length, gap_minutes, what="predictor")
    nxt = following_rows(clip_set)
    rows = np.flatnonzero(nxt >= 0)
    if len(rows) == 0:
        raise UsageError(
            f"no clip of {clip_set.length}x{clip_set.gap_minutes}m has a following clip; "
            "build shorter clips (skysearch clips --length 6 --gap 60)"
        )
    used = np.arange(len(clip_set.steps))
    frames = torch.as_tensor(load_step_frames(workspace, clip_set, used))
    steps = (to_working(frames, height, width) * 255.0).round().to(torch.uint8)
    # The same time split as the encoders (``eval clips``), so the hold-out starts agree.
    cut = split_by_time(clip_set, holdout).holdout_start
    return PredictorData(clip_set, steps, rows, nxt[rows], cut)


# ----------------------------------------------------------------------------- workflow


def train_predictor(
    workspace: Workspace,
    config: TrainConfig,
    satellite: str | None = None,
    channels: str | list[str] | None = None,
    length: int | None = None,
    gap_minutes: int | None = None,
    holdout: float = 0.2,
    validation: float = 0.15,
    height: int = 64,
    width: int = 96,
    device: str = "cpu",
    restart: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on the earlier part of one clip spec, evaluate on the hold-out, register the model.

    The last ``validation`` fraction of the training pairs (by time) picks the epoch (early
    stopping); the held-out test pairs are only scored at the end.

    Re-running the same command resumes an interrupted run (state under
    ``models/runs/predictor-<setup hash>``); ``restart`` starts it over.
    """
    data = load_predictor_data(
        workspace, satellite, channels, length, gap_minutes, height, width, holdout
    )
    cs = data.clip_set
    fit_mask, val_mask = data.validation_split(validation)
    train_x, train_y = data.tensors(fit_mask)
    val_x, val_y = data.tensors(val_mask)
    test_x, test_y = data.tensors(data.test_mask)
    if len(train_x) == 0 or len(test_x) == 0:
        raise UsageError(
            f"need clip pairs before and after the hold-out start "
            f"{to_rfc3339(data.holdout_start)} ({len(train_x)} train, {len(test_x)} held out): "
            "ingest more frames or use shorter clips"
        )
    pconf = PredictorConfig(length=cs.length, channels=len(cs.channels), height=height, width=width)
    setup = {  # the epoch count is left out: a re-run with more epochs continues the run
        "train": {**config.to_dict(), "epochs": None},
        "predictor": pconf.to_dict(),
        "spec": [cs.satellite, cs.channels, cs.length, cs.gap_minutes],
        "holdout": holdout,
        "validation": validation,
        "n_train": len(train_x),
    }
    digest = hashlib.sha256(json.dumps(setup, sort_keys=True).encode()).hexdigest()[:12]
    run_dir = workspace.models_dir / "runs" / f"predictor-{digest}"
    if restart and run_dir.exists():
        shutil.rmtree(run_dir)
    model = build_predictor(pconf, config.seed).to(device)
    val = (val_x, val_y) if len(val_x) else None
    result = fit(model, train_x, train_y, config, run_dir, val, progress=progress)
    metrics = evaluate(model, test_x, test_y)
    metrics["train_pairs"], metrics["val_pairs"] = len(train_x), len(val_x)
    metrics["test_pairs"], metrics["best_epoch"] = len(test_x), result.best_epoch
    model_id = new_model_id("predictor")
    info = {
        "satellite": cs.satellite,
        "channels": cs.channels,
        "length": cs.length,
        "gap_minutes": cs.gap_minutes,
        "holdout_start": to_rfc3339(data.holdout_start),
        "train_range": [to_rfc3339(_aware(cs.step_times.min())), to_rfc3339(data.holdout_start)],
        "training": config.to_dict(),
        "history": result.history,
        "metrics": metrics,
    }
    directory = save_predictor(model_dir(workspace, model_id), model.cpu(), info)
    register_model(workspace, model_id, "predictor", {**info, "history": None}, metrics, directory)
    return {
        "model_id": model_id,
        "path": str(directory),
        "resumed_from_epoch": result.resumed_from_epoch,
        "metrics": metrics,
        "holdout_start": info["holdout_start"],
    }


def _aware(value: np.datetime64) -> datetime:
    return value.astype("datetime64[us]").item().replace(tzinfo=timezone.utc)


# ----------------------------------------------------------------------------- predict one clip


def find_clip(
    workspace: Workspace, ref: str, satellite: str, channels: list[str], length: int, gap: int
) -> dict[str, Any]:
    """A catalog clip of this spec by id, or by start time (nearest within half a gap)."""
    table = read_clips(workspace, satellite, channels, length, gap)
    by_id = [row for row in table.to_pylist() if row["clip_id"] == ref]
    if by_id:
        return by_id[0]
    try:
        when = parse_time(ref)
    except (UsageError, ValueError):
        raise NotFoundError(
            f"{ref!r} is neither a clip id nor a time of a {length}x{gap}m clip; "
            "list clips with `skysearch clips --json` or pass a start time"
        ) from None
    rows = table.to_pylist()
    if rows:
        best = min(rows, key=lambda r: abs(r["start"] - when))
        if abs(best["start"] - when) <= timedelta(minutes=gap / 2):
            return best
    raise NotFoundError(
        f"no {'+'.join(channels)} {length}x{gap}m clip of {satellite} starts near "
        f"{to_rfc3339(when)}: build clips (skysearch clips --length {length} --gap {gap})"
    )


def predict_strip(
    workspace: Workspace,
    ref: str,
    out: Path,
    model_id: str | None = None,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Predict the clip after ``ref`` and write input / predicted / true rows as one image."""
    record = resolve(workspace, "predictor", model_id)
    model, info = load_predictor(record.directory(workspace), device)
    sat, chans = info["satellite"], list(info["channels"])
    length, gap = int(info["length"]), int(info["gap_minutes"])
    clip = find_clip(workspace, ref, sat, chans, length, gap)
    store = FrameStore(workspace)
    frames = torch.as_tensor(clip_frames(workspace, clip, store))
    cfg = model.config
    pred = predict(model, frames)
    x = to_working(frames, cfg.height, cfg.width)
    step = timedelta(minutes=gap)
    in_caps = [f"{clip['start'] + k * step:%m-%d %H:%M}" for k in range(length)]
    last = clip["start"] + (length - 1) * step
    out_caps = [
        f"+{m // 60}h{m % 60:02d} {last + timedelta(minutes=m):%H:%M}"
        for m in predicted_offsets(length, gap)
    ]
    rows = [("input", x, in_caps), ("predicted", pred, out_caps)]
    result: dict[str, Any] = {
        "clip_id": clip["clip_id"],
        "start": to_rfc3339(clip["start"]),
        "model_id": record.model_id,
        "out": str(out),
    }
    following = [
        r
        for r in read_clips(workspace, sat, chans, length, gap).to_pylist()
        if r["start"] == clip["start"] + length * step
    ]
    if following:
        truth = to_working(
            torch.as_tensor(clip_frames(workspace, following[0], store)), cfg.height, cfg.width
        )
        rows.append(
            ("true", truth, [f"{following[0]['start'] + k * step:%H:%M}" for k in range(length)])
        )
        rows.append(("persistence", x[:, -1:].expand_as(truth), []))
        result["metrics"] = frame_metrics(pred, truth)
        result["persistence_metrics"] = frame_metrics(x[:, -1:].expand_as(truth), truth)
    out.parent.mkdir(parents=True, exist_ok=True)
    render_strip(rows).save(out)
    return result
