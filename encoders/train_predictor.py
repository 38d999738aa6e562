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

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from skysearch.encoders.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from skysearch.encoders.predictor import PredictorConfig, SimVP, persistence
from skysearch.encoders.video_metrics import mse, ssim
from torch import nn
from torch.nn import functional as F  # noqa: N812
from tqdm import tqdm


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
    total = torch.zeros(())
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
        x, y = _to_float(inputs[i : i + batch_size]), _to_float(targets[i : i + batch_size])
        pred, base = model(x).clamp(0, 1), persistence(x)
        k = x.shape[0]
        sums["mse"] += float(mse(pred, y)) * k
        sums["ssim"] += float(ssim(pred, y)) * k
        sums["persistence_mse"] += float(mse(base, y)) * k
        sums["persistence_ssim"] += float(ssim(base, y)) * k
    return {key: value / max(n, 1) for key, value in sums.items()}


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for idx, state in opt.state_dict()["state"].items():
        for key, value in state.items():
            out[f"{prefix}.{idx}.{key}"] = torch.as_tensor(value)
    return out


def _restore_optimizer(
    prefix: str, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]
) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith(prefix + "."):
            idx, key = name[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[key] = value
    current = opt.state_dict()
    opt.load_state_dict({"state": state, "param_groups": current["param_groups"]})


@dataclass
class TrainResult:
    history: list[dict[str, float]]
    resumed_from_epoch: int


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

    With ``state_dir``, resume from the last completed epoch saved there and save after every
    epoch (interrupting loses at most the epoch in progress).
    """
    if inputs.shape != targets.shape or inputs.shape[0] == 0:
        raise ValueError(f"need matching non-empty pairs, got {inputs.shape} / {targets.shape}")
    opt_g = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=1e-4)
    disc = opt_d = None
    if config.adversarial:
        torch.manual_seed(config.seed + 1)
        disc = Discriminator(model.config)
        opt_d = torch.optim.Adam(disc.parameters(), lr=config.lr_d, betas=(0.5, 0.999))
    history: list[dict[str, float]] = []
    start_epoch = 0
    if state_dir is not None and (Path(state_dir) / "config.json").is_file():
        start_epoch, history = _load_state(state_dir, model, opt_g, disc, opt_d, config)

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
            x, y = _to_float(inputs[idx]), _to_float(targets[idx])
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
        history.append(record)
        if state_dir is not None:
            _save_state(state_dir, model, opt_g, disc, opt_d, config, history)
        if on_epoch is not None:
            on_epoch(record)
    return TrainResult(history=history, resumed_from_epoch=start_epoch)


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
) -> None:
    tensors = {f"g.{k}": v for k, v in model.state_dict().items()}
    tensors.update(_flatten_optimizer("opt_g", opt_g))
    if disc is not None and opt_d is not None:
        tensors.update({f"d.{k}": v for k, v in disc.state_dict().items()})
        tensors.update(_flatten_optimizer("opt_d", opt_d))
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
) -> tuple[int, list[dict[str, float]]]:
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
    _restore_optimizer("opt_g", opt_g, tensors)
    if disc is not None and opt_d is not None:
        disc.load_state_dict({k[2:]: v for k, v in tensors.items() if k.startswith("d.")})
        _restore_optimizer("opt_d", opt_d, tensors)
    return int(meta["epoch"]), list(meta.get("history", []))
