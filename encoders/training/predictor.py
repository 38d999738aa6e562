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
uninterrupted one. The epochs, resume state (predictor, discriminator, both optimizers, best
weights, history) and progress are the training skeleton's (``skysearch.encoders.training.loop``).
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skysearch.encoders.device import resolve_device
from skysearch.encoders.metrics import mse, ssim
from skysearch.encoders.models.predictor import (
    PredictorConfig,
    SimVP,
    persistence,
    save_predictor,
)
from skysearch.encoders.registry import (
    check_writable,
    model_dir,
    new_model_id,
    register_model,
    trained_run,
)
from skysearch.encoders.training.loop import (
    EpochMeter,
    RunState,
    TrainConfig,
    epoch_seed,
    fingerprint,
)
from skysearch.encoders.training.loop import fit as fit_epochs
from skysearch.encoders.training.predictor_data import load_predictor_data
from torch import nn
from torch.nn import functional as F  # noqa: N812

from skysearch.config import Workspace
from skysearch.errors import UsageError
from skysearch.timeutil import to_rfc3339


@dataclass(frozen=True, kw_only=True)
class PredictorTrainConfig(TrainConfig):
    """The predictor's options: the adversarial mix (see the module docstring)."""

    batch_size: int = 8
    adversarial: bool = False
    lambda_mse: float = 0.6
    lambda_g: float = 0.2
    lambda_d: float = 0.2
    ortho_beta: float = 1e-4
    fm_weight: float = 1.0
    lr_d: float = 2e-4

    def __post_init__(self) -> None:
        names = ("lambda_mse", "lambda_g", "lambda_d", "ortho_beta")
        bad = [n for n in names if not (math.isfinite(getattr(self, n)) and getattr(self, n) >= 0)]
        if bad:
            raise UsageError(
                f"{', '.join('{' + n + '}' for n in bad)} must be a finite number >= 0",
                params=bad,
            )
        if self.lambda_mse + self.lambda_g + self.lambda_d == 0:
            raise UsageError(
                "{lambda_mse}, {lambda_g} and {lambda_d} are all 0: no step could be drawn "
                "(they are the chances of an MSE, G or D step)",
                params=["lambda_mse", "lambda_g", "lambda_d"],
            )


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
    config: PredictorTrainConfig,
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
    epoch (interrupting loses at most the epoch in progress); a state of other settings there
    is a :class:`~skysearch.encoders.checkpoints.CheckpointError`.
    """
    if inputs.shape != targets.shape or inputs.shape[0] == 0:
        raise ValueError(f"need matching non-empty pairs, got {inputs.shape} / {targets.shape}")
    device = next(model.parameters()).device
    opt_g = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    state = RunState({"g": model}, {"opt_g": opt_g}, {"best": {}})
    disc = opt_d = None
    if config.adversarial:
        torch.manual_seed(config.seed + 1)
        disc = Discriminator(model.config).to(device)
        opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr_d, betas=(0.5, 0.999))
        state.modules["d"], state.optimizers["opt_d"] = disc, opt_d
    best = state.tensors["best"]
    probs = torch.tensor([config.lambda_mse, config.lambda_g, config.lambda_d])
    probs = probs / probs.sum()
    n = inputs.shape[0]

    def run_epoch(epoch: int, meter: EpochMeter) -> dict[str, float]:
        gen = torch.Generator().manual_seed(epoch_seed(config.seed, epoch))
        order = torch.randperm(n, generator=gen)
        batches = [order[i : i + config.batch_size] for i in range(0, n, config.batch_size)]
        choices = torch.multinomial(probs, len(batches), replacement=True, generator=gen)
        model.train()
        for bi, idx in enumerate(batches):
            x, y = _to_float(inputs[idx].to(device)), _to_float(targets[idx].to(device))
            kind = ("mse", "g", "d")[int(choices[bi])] if config.adversarial else "mse"
            loss = _step(kind, model, disc, opt_g, opt_d, x, y, config)
            meter.step(loss, len(idx), kind)
        record = {"seconds": meter.seconds}
        record.update({f"train_{k}": meter.mean(k) for k in ("mse", "g", "d") if k in meter.losses})
        record["samples_per_s"] = n / meter.seconds
        if validation is not None:
            record.update({f"val_{k}": v for k, v in evaluate(model, *validation).items()})
            if record["val_mse"] <= min(h["val_mse"] for h in [*meter.history, record]):
                best.clear()
                best.update({k: v.detach().clone() for k, v in model.state_dict().items()})
        return record

    run_fp = fingerprint({"train": config.identity(), "predictor": model.config.to_dict()})
    result = fit_epochs(
        config,
        run_epoch,
        state,
        state_dir,
        run_fp,
        "train predictor",
        progress,
        steps_per_epoch=-(-n // config.batch_size),
        on_epoch=on_epoch,
    )
    history = result.history
    best_epoch = len(history)
    if best:
        model.load_state_dict(best)
        best_epoch = 1 + min(range(len(history)), key=lambda i: history[i]["val_mse"])
    return TrainResult(history, result.resumed_from_epoch, best_epoch)


def _step(
    kind: str,
    model: SimVP,
    disc: Discriminator | None,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer | None,
    x: torch.Tensor,
    y: torch.Tensor,
    config: PredictorTrainConfig,
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


# ----------------------------------------------------------------------------- workflow


def train_predictor(
    workspace: Workspace,
    config: PredictorTrainConfig,
    satellite: str | None = None,
    channels: str | list[str] | None = None,
    length: int | None = None,
    gap_minutes: int | None = None,
    holdout: float = 0.2,
    validation: float = 0.15,
    height: int = 64,
    width: int = 96,
    restart: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Train on the earlier part of one clip spec, evaluate on the hold-out, register the model.

    The last ``validation`` fraction of the training pairs (by time) picks the epoch (early
    stopping); the held-out test pairs are only scored at the end.

    Re-running the same command resumes an interrupted run (state under
    ``models/runs/predictor-<setup hash>``); ``restart`` starts it over.
    """
    check_writable(workspace)
    device = resolve_device(config.device)
    data = load_predictor_data(
        workspace, satellite, channels, length, gap_minutes, height, width, holdout
    )
    cs = data.clip_set
    fit_mask, val_mask = data.validation_split(validation)
    train_x, train_y = data.tensors(fit_mask)
    val_x, val_y = data.tensors(val_mask)
    test_x, test_y = data.tensors(data.test_mask)
    before = int(data.train_mask.sum())
    if len(train_x) == 0 and before and len(test_x):
        raise UsageError(
            f"the {before} clip pairs before the hold-out start {to_rfc3339(data.holdout_start)} "
            f"leave none to train on beside the {{validation}} {validation} pairs (a pair "
            "trained on must end before the first validation pair starts): lower {validation} "
            "(0: none), or ingest more frames",
            params=["validation"],
        )
    if len(train_x) == 0 or len(test_x) == 0:
        raise UsageError(
            f"need clip pairs before and after the hold-out start "
            f"{to_rfc3339(data.holdout_start)} ({len(train_x)} train, {len(test_x)} held out): "
            "ingest more frames or use shorter clips"
        )
    pconf = PredictorConfig(length=cs.length, channels=len(cs.channels), height=height, width=width)
    setup = {  # a re-run with more epochs (or on another device) continues the run
        "train": config.identity(),
        "predictor": pconf.to_dict(),
        "spec": [cs.satellite, cs.channels, cs.length, cs.gap_minutes],
        "holdout": holdout,
        "validation": validation,
        "n_train": len(train_x),
    }
    run = fingerprint(setup)
    run_dir = workspace.models_dir / "runs" / f"predictor-{run}"
    if restart and run_dir.exists():
        shutil.rmtree(run_dir)
    elif (done := trained_run(workspace, "predictor", run, config.epochs)) is not None:
        return {  # the same command again: the model it trained, not a copy
            "model_id": done.model_id,
            "path": str(done.directory(workspace)),
            "resumed_from_epoch": config.epochs,
            "metrics": done.metrics,
            "holdout_start": done.config["holdout_start"],
        }
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
        "run": run,
        "epochs_trained": len(result.history),
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
