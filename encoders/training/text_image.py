"""Fine-tune a text-image model on SkyScript-format caption CSVs (contrastive CLIP loss).

The recipe (what trains, what stays frozen, the loss) is
:mod:`skysearch.encoders.training.text_image_recipe`, the image side of each ``--image-tower``
:mod:`skysearch.encoders.training.image_towers`; the data (images or cached trunk features,
caption sources) :mod:`skysearch.encoders.training.text_image_data`. This module runs it on the
training skeleton (:mod:`skysearch.encoders.training.loop`), with transformers' warmup-cosine
learning-rate schedule.

Resumable: after every epoch what trains and the optimizer state go to
``models/.run-text-image-<run>/`` (safetensors + JSON); re-running the same command continues
after the last finished epoch, and asking more epochs continues the same run into a new model.
The final model is written to ``models/<model id>/`` (with the phrase table of the classes it
trained on, for honest prompts of the others at evaluation) and registered in the workspace
model registry (kind ``text-image``). Deterministic for a given seed (data order and
augmentation are seeded per epoch).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skysearch.encoders import registry
from skysearch.encoders.checkpoints import checkpoint_problem
from skysearch.encoders.datasets.captions import class_phrases, read_csv
from skysearch.encoders.device import resolve_device
from skysearch.encoders.metrics import zero_shot
from skysearch.encoders.models.text_image import (
    KIND,
    TextImageModel,
    create_text_image_model,
    install_fused_heads,
    save_text_image_model,
)
from skysearch.encoders.training.image_towers import ImageTower, image_tower
from skysearch.encoders.training.loop import EpochMeter, RunState, fit
from skysearch.encoders.training.text_image_data import cached_image_features, check_images
from skysearch.encoders.training.text_image_recipe import (
    FrozenTextFeatures,
    TextImageTrainConfig,
    check_epochs,
    concept_bank,
    contrastive_loss,
    freeze_for_training,
    param_groups,
    train_mode,
)
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from skysearch.config import Workspace
from skysearch.errors import UsageError

#: Where models trained before 2026-12 kept their resume point, inside the model folder.
LEGACY_RESUME_DIR = "resume"


def lr_schedule(
    optimizer: torch.optim.Optimizer, warmup: int, total: int, step: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' warmup-cosine schedule, set for optimisation step ``step`` (0-based).

    Step ``s`` uses the schedule's factor at ``s + 1``: the warmup then rises from ``1/warmup``
    (not from 0, which would waste the first step) and reaches the peak at ``warmup - 1``.
    Call ``step()`` after every ``optimizer.step()``."""
    return get_cosine_schedule_with_warmup(optimizer, warmup, total, last_epoch=step)


class Trainer:
    """One fine-tuning run; ``run()`` trains the missing epochs and returns a summary dict
    (``left_out``: files the caption sources left out, e.g. not images, listed first in its
    ``skipped``)."""

    def __init__(
        self,
        cfg: TextImageTrainConfig,
        workspace: Workspace,
        progress: bool = True,
        left_out: Sequence[dict[str, str]] = (),
    ):
        self.cfg = cfg
        self.workspace = workspace
        self.progress = progress
        self.left_out = list(left_out)
        self.run_key = cfg.run_key()
        # The id names the weights: the same run with more epochs continues from its resume
        # point but registers another model, so scene vectors embedded by the shorter one are
        # never taken for the longer one's (indexing skips vector names it already holds).
        epochs_key = f"{self.run_key}/{cfg.epochs}".encode()
        self.model_id = f"{KIND}-{hashlib.sha1(epochs_key).hexdigest()[:10]}"
        self.model_dir = registry.model_dir(workspace, self.model_id)
        self.resume_dir = workspace.models_dir / f".run-{KIND}-{self.run_key}"
        # Before 2026-12: one model id per run (any epochs), the resume point inside it.
        self.legacy_id = f"{KIND}-{self.run_key}"

    def _finished(self) -> dict[str, Any] | None:
        """The summary of this model if it is trained already (also under its legacy id) and
        whole (a damaged one is trained again)."""
        for model_id in (self.model_id, self.legacy_id):
            final_cfg = registry.model_dir(self.workspace, model_id) / "config.json"
            if final_cfg.is_file() and not checkpoint_problem(final_cfg.parent, deep=True):
                done = json.loads(final_cfg.read_text())
                if done.get("epochs_done") == self.cfg.epochs:
                    self._register_once(model_id, done)
                    return {**done.get("summary", {}), "model_id": model_id, "resumed": "done"}
        return None

    def _register_once(self, model_id: str, saved: dict[str, Any]) -> None:
        """Register a model trained to the end whose registration failed then (a damaged
        registry, since fixed), from what its folder says about it."""
        if any(r.model_id == model_id for r in registry.list_models(self.workspace, KIND)):
            return
        folder = registry.model_dir(self.workspace, model_id)
        record = registry.record_from_checkpoint(folder, saved)
        registry.register_model(
            self.workspace,
            model_id,
            KIND,
            config=record.config,
            metrics=record.metrics,
            path=folder,
        )

    def _resume_point(self) -> Path:
        """Where epochs are saved and resumed from; a run that trained more epochs than asked
        is an error (its weights are not those of fewer epochs)."""
        legacy = registry.model_dir(self.workspace, self.legacy_id) / LEGACY_RESUME_DIR
        resume = legacy if legacy.is_dir() and not self.resume_dir.exists() else self.resume_dir
        try:
            trained = int(json.loads((resume / "config.json").read_text()).get("epoch", 0))
        except (OSError, ValueError, TypeError, AttributeError):
            trained = 0  # none yet, or unreadable: the loop starts over
        if trained > self.cfg.epochs:
            raise UsageError(
                f"this training run has done {trained} epochs already ({resume}): ask "
                f"{{epochs}} {trained} or more, or delete that folder to train {self.cfg.epochs}",
                params=["epochs"],
            )
        return resume

    def _features(self, tower: ImageTower, rows: list) -> torch.Tensor | None:
        """What the recipe trains on per image (:class:`ImageTower`), cached per workspace
        and image tower; None where it trains on pixels."""
        if tower.cache_kind is None:
            return None
        cfg = self.cfg
        key = json.dumps([cfg.model_name, cfg.pretrained, tower.tim.image_size])
        name = f"{hashlib.sha1(key.encode()).hexdigest()[:10]}.npz"
        cache = self.workspace.root / "cache" / tower.cache_kind / name
        paths = [r[0] for r in rows]
        forward = tower.cache_forward()
        return cached_image_features(
            tower.tim, paths, cache, forward, self.progress, tower.cache_desc
        )

    def _loader(self, rows: list, epoch: int, train: bool, tower: ImageTower, feats=None):
        """Batches of (images or cached features, captions, labels)."""
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        return torch.utils.data.DataLoader(
            tower.dataset(rows, feats, train),
            batch_size=self.cfg.batch_size,
            shuffle=train,
            drop_last=train and len(rows) > self.cfg.batch_size,
            generator=gen,
            num_workers=0,
            collate_fn=lambda batch: (
                torch.stack([b[0] for b in batch]),
                [b[1] for b in batch],
                [b[2] for b in batch],
            ),
        )

    def _text(self, tim: TextImageModel, text_features: FrozenTextFeatures | None, captions):
        if text_features is not None:
            return text_features(captions)
        return tim.model.encode_text(tim.tokenizer(list(captions)).to(tim.device))

    def _keys(self, captions, labels) -> list[str]:
        """What makes two pairs of a batch positives (see :func:`contrastive_loss`)."""
        return list(labels if self.cfg.positives == "label" and all(labels) else captions)

    def _loss(self, tower: ImageTower, text_features, images, captions, labels) -> torch.Tensor:
        tim = tower.tim
        img = nn.functional.normalize(tower.embed(images), dim=-1)
        txt = nn.functional.normalize(self._text(tim, text_features, captions), dim=-1)
        keys = self._keys(captions, labels)
        return contrastive_loss(img, txt, tim.model.logit_scale, keys)

    @torch.no_grad()
    def evaluate(self, tim, text_features, rows, feats=None) -> dict[str, float | None]:
        """Validation contrastive loss (no augmentation) and zero-shot top-1 when labelled.

        Rows are shuffled with a fixed seed first: CSVs are grouped by class, and batches of
        one class would make the contrastive loss meaningless. A batch whose pairs are all
        positives (one image, or one class) has a loss of 0 whatever the model: it is left out,
        and the loss is None when no batch is left (too few validation images)."""
        tim.model.eval()
        tower = image_tower(self.cfg.image_tower, tim)
        if feats is None:
            feats = self._features(tower, rows)
        order = list(range(len(rows)))
        random.Random(self.cfg.seed).shuffle(order)
        rows = [rows[i] for i in order]
        feats = feats[order] if feats is not None else None
        losses, embs = [], []
        for inputs, captions, labels in self._loader(rows, 0, False, tower, feats):
            if len(set(self._keys(captions, labels))) > 1:
                losses.append(float(self._loss(tower, text_features, inputs, captions, labels)))
            embs.append(nn.functional.normalize(tower.embed(inputs), dim=-1).cpu().numpy())
        out: dict[str, float | None] = {"val_loss": float(np.mean(losses)) if losses else None}
        labels = [r[2] for r in rows]
        if all(labels) and len(set(labels)) > 1:

            def encode(texts: list[str]) -> np.ndarray:
                txt = self._text(tim, text_features, texts)
                return nn.functional.normalize(txt, dim=-1).cpu().numpy()

            top1 = zero_shot(tim, np.concatenate(embs), labels, encode=encode)[0]
            out["val_zero_shot_top1"] = top1
        return out

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        device = resolve_device(cfg.device)
        finished = self._finished()
        if finished is not None:
            return finished
        train_rows, skipped = check_images(read_csv(cfg.train_csv, cfg.caption_key))
        skipped = self.left_out + skipped
        val_rows: list = []
        if cfg.val_csv:
            val_rows, val_skipped = check_images(read_csv(cfg.val_csv, cfg.caption_key))
            skipped += val_skipped
        if len(train_rows) < 2:
            raise UsageError(
                f"{cfg.train_csv}: fewer than two rows with a caption and a readable image to "
                "train on"
            )
        resume = self._resume_point()

        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        tim = create_text_image_model(
            cfg.model_name, cfg.pretrained, image_size=cfg.image_size, seed=cfg.seed
        )
        freeze_for_training(tim, cfg)
        tim.to(device)
        text = getattr(tim.model, "text", None)  # CLIP's own text tower is not a `.text` module
        text_features = FrozenTextFeatures(tim) if hasattr(text, "pooler") else None
        opt = torch.optim.AdamW(param_groups(tim.model, cfg), weight_decay=cfg.weight_decay)
        tower = image_tower(cfg.image_tower, tim)
        train_feats = self._features(tower, train_rows)
        val_feats = self._features(tower, val_rows) if val_rows else None
        steps_per_epoch = len(self._loader(train_rows, 0, True, tower, train_feats))
        if cfg.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
        total_steps = steps_per_epoch * cfg.epochs
        # Locked and last-stage: the resume point holds what trains (the rest is the packages'
        # weights, rebuilt identically), not ~200 MB of model per epoch.
        state = RunState({"model": tower.resumable()}, {"optim": opt})
        schedule: list[torch.optim.lr_scheduler.LambdaLR] = []  # made after a resume

        def run_epoch(epoch: int, meter: EpochMeter) -> dict[str, Any]:
            if not schedule:
                step = epoch * steps_per_epoch
                schedule.append(lr_schedule(opt, cfg.warmup_steps, total_steps, step))
            torch.manual_seed(cfg.seed * 1000 + epoch)
            train_mode(tim.model)
            batches = self._loader(train_rows, epoch, True, tower, train_feats)
            for step, (images, captions, labels) in enumerate(batches):
                if step >= steps_per_epoch:
                    break
                loss = self._loss(tower, text_features, images, captions, labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                schedule[0].step()
                meter.step(float(loss.detach()), len(images))
            losses = meter.step_losses()
            record = {
                "train_loss": float(np.mean(losses)),
                "first_step_loss": losses[0],
                "last_step_loss": losses[-1],
                "images": meter.items,
                "seconds": round(meter.seconds, 1),
                "images_per_s": round(meter.rate, 2),
            }
            if val_rows:
                record.update(self.evaluate(tim, text_features, val_rows, val_feats))
            return record

        desc = f"train {self.model_id}"
        history = fit(
            cfg, run_epoch, state, resume, self.run_key, desc, self.progress, steps_per_epoch
        ).history
        trainable = sum(p.numel() for p in tim.model.parameters() if p.requires_grad)
        tim.to(torch.device("cpu"))
        bank_fits = text_features is not None and hasattr(tim.model.visual, "trunk")
        if cfg.bank_tau and bank_fits and cfg.text_head == "locked":
            tim.model.eval()
            feats = tower.bank_features(train_rows, train_feats, self.progress)
            bank = concept_bank(text_features, train_rows, feats, cfg.positives)
            install_fused_heads(tim, *bank, tau=cfg.bank_tau)
        summary = {
            "model_id": self.model_id,
            "path": str(self.model_dir),
            "epochs": cfg.epochs,
            "train_images": len(train_rows),
            "val_images": len(val_rows),
            "skipped": skipped,
            "trainable_params": trainable,
            "history": history,
        }
        save_text_image_model(
            tim,
            self.model_dir,
            {
                "train": asdict(cfg),
                "epochs_done": cfg.epochs,
                "summary": summary,
                # The classes it trained on, with their phrases: evaluation prompts any other
                # class by its folder name alone.
                "class_phrases": {
                    label: list(class_phrases(label))
                    for label in sorted({r[2] for r in train_rows})
                    if label
                },
            },
        )
        metrics = {k: v for k, v in history[-1].items() if k.startswith("val_")} if history else {}
        registry.register_model(
            self.workspace,
            self.model_id,
            KIND,
            config={**tim.spec, "train": asdict(cfg)},
            metrics=metrics,
            path=self.model_dir,
        )
        return summary


def train_text_image(
    cfg: TextImageTrainConfig,
    workspace: Workspace,
    progress: bool = True,
    left_out: Sequence[dict[str, str]] = (),
) -> dict[str, Any]:
    """Fine-tune (or resume) and register; returns the run summary (see :class:`Trainer`)."""
    check_epochs(cfg.epochs, cfg.pretrained)
    cfg.check_files()
    workspace.ensure()
    registry.check_writable(workspace)
    return Trainer(cfg, workspace, progress, left_out).run()
