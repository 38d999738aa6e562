"""The training skeleton every trainer uses (frames, clips, predictor, text-image).

A trainer brings what is its own (data, model, loss) as one function, ``run_epoch(epoch,
meter)``, that trains one epoch and returns that epoch's record. :func:`fit` does the rest the
same way for all: the epochs, a tqdm bar with the running loss and items/s, one line per epoch
on stderr, a resumable state written after every epoch (modules and optimizers, safetensors +
JSON) and, on a re-run of the same setup, the resume after the last finished epoch.

Runs are deterministic for a seed when ``run_epoch`` draws its randomness from the epoch (each
trainer seeds its batch order per ``(seed, epoch)``), so a resumed run equals an uninterrupted
one. The shared options live in :class:`TrainConfig`; each trainer subclasses it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from skysearch.encoders.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_into,
    save_checkpoint,
)
from torch import nn
from tqdm import tqdm

from skysearch.errors import UsageError

log = logging.getLogger(__name__)

#: Bumped when the layout of the resume state changes: older states are started over.
STATE_FORMAT = 2


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """The options every trainer shares; a trainer's config subclasses it with its own."""

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    seed: int = 0
    #: where the model trains (``auto``, ``cpu``, ``cuda``...); not part of the run's identity
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """The config of saved values; keys it does not know (older or newer) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def identity(self) -> dict[str, Any]:
        """What makes a run the same run: everything but the epoch count (a re-run with more
        epochs continues) and the device (a run may resume elsewhere)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("epochs", "device")}


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch of a run: a resumed run draws what an uninterrupted one did."""
    return seed * 100_003 + epoch


def fingerprint(payload: dict[str, Any]) -> str:
    """Short stable hash of a training setup: a re-run with the same one resumes."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- state


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> dict[str, torch.Tensor]:
    """The optimizer's per-parameter state as flat ``{prefix}.{param}.{slot}`` tensors."""
    tensors = {}
    for idx, slots in optimizer.state_dict()["state"].items():
        for name, value in slots.items():
            tensors[f"{prefix}.{idx}.{name}"] = torch.as_tensor(value)
    return tensors


def restore_optimizer(
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    prefix: str,
    param_groups: Any = None,
) -> None:
    """Load the ``{prefix}.*`` tensors of :func:`optimizer_tensors` back into ``optimizer``;
    ``param_groups``: the saved groups (``None`` keeps the optimizer's own)."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith(prefix + "."):
            idx, name = key[len(prefix) + 1 :].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    if param_groups is None:
        param_groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": state, "param_groups": param_groups})


@dataclass
class RunState:
    """What a run saves after every epoch and restores on resume, each part under a prefix:
    ``modules`` and ``optimizers``, and ``tensors`` (named tensors a trainer keeps, such as
    the best weights so far; restored in place)."""

    modules: dict[str, nn.Module]
    optimizers: dict[str, torch.optim.Optimizer]
    tensors: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)

    def save(self, run_dir: Path, history: list[dict[str, Any]], run_fingerprint: str) -> None:
        out: dict[str, torch.Tensor] = {}
        for prefix, module in self.modules.items():
            out.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
        for prefix, named in self.tensors.items():
            out.update({f"{prefix}.{k}": v for k, v in named.items()})
        for prefix, optimizer in self.optimizers.items():
            out.update(optimizer_tensors(optimizer, prefix))
        groups = {p: o.state_dict()["param_groups"] for p, o in self.optimizers.items()}
        meta = {
            "format": STATE_FORMAT,
            "epoch": len(history),
            "history": history,
            "fingerprint": run_fingerprint,
            "param_groups": groups,
        }
        save_checkpoint(run_dir, out, meta)

    def load(self, run_dir: Path, run_fingerprint: str) -> list[dict[str, Any]]:
        """The history of the epochs done by an earlier run of this setup ([] when none).

        A half-written or older-format state (a killed run, an older version) is started
        over; a state of another setup in the same place is an error, not silently lost."""
        if not (run_dir / "config.json").is_file():
            return []
        try:
            saved, meta = load_checkpoint(run_dir)
        except CheckpointError as exc:
            log.warning("resume state in %s is damaged (%s): training starts over", run_dir, exc)
            return []
        if meta.get("format") != STATE_FORMAT:
            return []
        if meta.get("fingerprint") != run_fingerprint:
            raise CheckpointError(
                f"resume state in {run_dir} was made with other settings; pass the same "
                "options, or delete that folder to start over"
            )
        history = meta.get("history")
        if not isinstance(history, list) or meta.get("epoch") != len(history):
            log.warning(
                "resume state in %s is damaged (its epoch count and history disagree): "
                "training starts over",
                run_dir,
            )
            return []
        # Saved tensors are on the CPU: loading copies weights onto the modules' device, and
        # torch moves optimizer moments to their parameters' (keeping Adam's step on the CPU).
        for prefix, module in self.modules.items():
            load_into(module, _section(saved, prefix), source=str(run_dir))
        for prefix, named in self.tensors.items():
            named.clear()
            named.update(_section(saved, prefix))
        for prefix, optimizer in self.optimizers.items():
            restore_optimizer(optimizer, saved, prefix, meta["param_groups"][prefix])
        return list(history)


def _section(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


# ----------------------------------------------------------------------------- loop


class EpochMeter:
    """One epoch's progress: a tqdm bar showing running mean losses (per kind) and items/s;
    ``history``: the records of the epochs before this one (resumed ones included)."""

    def __init__(
        self, desc: str, total: int | None, progress: bool, history: list[dict[str, Any]]
    ) -> None:
        self.history = history
        self.desc = desc
        self.bar = tqdm(total=total, desc=desc, leave=False, file=sys.stderr, disable=not progress)
        self.losses: dict[str, list[tuple[float, int]]] = {}
        self.items = 0
        self.started = time.perf_counter()

    def step(self, loss: float, items: int, kind: str = "loss") -> None:
        """Record one step's ``loss`` (a mean over its ``items``). A loss that is NaN or
        infinite ends the run (the weights it updates are no model any more) before this
        epoch is saved or the model registered."""
        if not math.isfinite(loss):
            steps = sum(len(v) for v in self.losses.values()) + 1
            what = kind if kind == "loss" else f"{kind} loss"
            raise UsageError(
                f"{self.desc} diverged: the {what} of step {steps} is {loss}; the model was not "
                "registered. Train again with a lower {lr} (or smaller loss weights)",
                params=["lr"],
            )
        self.losses.setdefault(kind, []).append((loss, items))
        self.items += items
        postfix = {k: f"{self.mean(k):.4f}" for k in self.losses}
        self.bar.set_postfix(postfix | {"items_s": f"{self.rate:.1f}"})
        self.bar.update(1)

    def mean(self, kind: str = "loss") -> float:
        """Mean loss of ``kind`` per item (nan when no step of that kind ran)."""
        values = self.losses.get(kind, [])
        n = sum(items for _, items in values)
        return sum(loss * items for loss, items in values) / n if n else float("nan")

    def step_losses(self, kind: str = "loss") -> list[float]:
        return [loss for loss, _ in self.losses.get(kind, [])]

    @property
    def seconds(self) -> float:
        return max(time.perf_counter() - self.started, 1e-9)

    @property
    def rate(self) -> float:
        return self.items / self.seconds


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    resumed_from_epoch: int


def fit(
    config: TrainConfig,
    run_epoch: Callable[[int, EpochMeter], dict[str, Any]],
    state: RunState,
    run_dir: Path | None,
    run_fingerprint: str,
    desc: str = "train",
    progress: bool = True,
    steps_per_epoch: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``config.epochs`` epochs: ``run_epoch(epoch, meter)`` trains one (0-based) and
    returns its record; ``{"epoch": n}`` is added. With ``run_dir``, resume after the last
    epoch saved there by a run of the same ``run_fingerprint`` and save after every epoch."""
    history = state.load(run_dir, run_fingerprint) if run_dir is not None else []
    done = len(history)
    if done > config.epochs:  # continuing cannot give fewer epochs: it registered the longer
        raise UsageError(
            f"this run already trained {done} epochs ({run_dir}), more than the {config.epochs} "
            f"asked: ask for {{epochs}} {done} or more to take it, or delete that folder to "
            f"train {config.epochs} from the start",
            params=["epochs"],
        )
    if done and progress:
        tqdm.write(f"resuming {desc} after epoch {done}/{config.epochs} ({run_dir})", sys.stderr)
    for epoch in range(done, config.epochs):
        label = f"{desc} epoch {epoch + 1}/{config.epochs}"
        meter = EpochMeter(label, steps_per_epoch, progress, list(history))
        with meter.bar:
            record = {"epoch": epoch + 1, **run_epoch(epoch, meter)}
        _check_finite(state, label)
        history.append(record)
        if progress:
            shown = [measure(k, v) for k, v in record.items() if k != "epoch" and _number(v)]
            tqdm.write(f"{label}: {', '.join(shown)}", file=sys.stderr)
        if run_dir is not None:
            state.save(run_dir, history, run_fingerprint)
        if on_epoch is not None:
            on_epoch(record)
    return FitResult(history, done)


def _check_finite(state: RunState, label: str) -> None:
    """The weights after an epoch are numbers (a step's loss is computed before its update,
    so an update that overflows shows only here), before the epoch is saved."""
    for prefix, module in state.modules.items():
        for name, tensor in module.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise UsageError(
                    f"{label} diverged: weight {prefix}.{name} holds NaN or infinite values; "
                    "the model was not registered. Train again with a lower {lr} (or smaller "
                    "loss weights)",
                    params=["lr"],
                )


def measure(key: str, value: float) -> str:
    """One value of an epoch's record for a line: ``loss 0.438``; a rate ``<unit>_per_s``
    as ``1943 cell pairs/s``."""
    if key.endswith("_per_s"):
        return f"{value:.4g} {key[: -len('_per_s')].replace('_', ' ')}/s"
    return f"{key} {value:.4g}"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
