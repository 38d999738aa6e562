"""Fine-tune a text-image model on SkyScript-format caption CSVs (contrastive CLIP loss).

Two recipes for the image tower (``TrainConfig.image_tower``):

- ``locked`` (default, LiT-style): the ImageNet image trunk is frozen and its pooled features are
  computed ONCE per image (no augmentation; cached in ``<workspace>/cache/``, so resumed runs and
  other runs on the same images do not recompute them); only the projection heads train, in
  seconds, then a concept bank joins them (fused heads, see
  :class:`~skysearch.encoders.models.text_image.ConceptBankTextHead`). Measured on leave-classes-
  out folds (bench/text_image_folds.py, bench/RESULTS.md), this generalises to unseen class names
  at least as well as tuning the tower, and trains in a fraction of the time.
- ``tuned``: the last ``unlocked_image_groups`` timm groups train with the image projection
  head, on SkyScript-style augmentation (random resized crop, random 90-degree rotations, flips;
  overhead imagery has no "up"); frozen BatchNorm layers keep their ImageNet statistics.

The text transformer is always frozen (its sentence semantics are what make free-text queries
beyond the training captions work) and its pooled features are memoised per caption (exact:
frozen, eval mode). ``text_head="locked"`` also keeps the text projection fixed (the identity
for the offline MiniLM tower, so queries live in MiniLM's own sentence space and the image head
learns to map into it); ``"trained"`` trains it. The loss is a multi-positive contrastive loss:
in a batch, pairs of the same class (the CSV's ``label`` column, written by the converter) are
all positives; without labels, identical captions are.

Resumable: after every epoch the model and optimizer state go to ``<run>/resume/`` (safetensors
+ JSON); re-running the same command continues after the last finished epoch. The final model is
written to ``<run>/`` (with the phrase table of the classes it trained on, for honest prompts of
the others at evaluation) and registered in the workspace model registry (kind ``text-image``).
Deterministic for a given seed (data order and augmentation are seeded per epoch).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from skysearch.encoders import registry
from skysearch.encoders.datasets.captions import (
    DEFAULT_SEED,
    class_phrases,
    convert_folder,
    exclude_classes,
    normalise_class,
    read_caption_rows,
    read_csv,
    write_csv,
)
from skysearch.encoders.metrics import zero_shot
from skysearch.encoders.models.text_image import (
    DEFAULT_MODEL,
    KIND,
    TextImageModel,
    create_text_image_model,
    install_fused_heads,
    load_rgb,
    save_text_image_model,
)
from skysearch.encoders.training.loop import load_training_state, save_training_state
from skysearch.ingest.decode import open_image
from torch import nn
from torchvision import transforms
from tqdm import tqdm

from skysearch.atomic import atomic_path
from skysearch.config import Workspace
from skysearch.errors import UsageError

RESUME_DIR = "resume"


@dataclass
class TrainConfig:
    train_csv: str
    val_csv: str | None = None
    caption_key: str = "title"
    model_name: str = DEFAULT_MODEL
    pretrained: str | None = None
    epochs: int = 30
    batch_size: int = 128
    lr: float = 5e-4  # unlocked tower layers (image_tower="tuned")
    head_lr: float = 1e-3  # projection heads and logit scale
    weight_decay: float = 0.0
    warmup_steps: int = 10
    image_size: int | None = None  # None: the model config's (160 for the default)
    image_tower: str = "locked"  # "locked": frozen trunk, features once; "tuned": see below
    unlocked_image_groups: int = 11  # tuned: timm groups of tf_efficientnet_lite0, blocks.3 on
    text_head: str = "locked"  # "locked": text projection fixed (identity for MiniLM)
    logit_scale: float | None = 30.0  # fixed contrastive temperature; None: trained
    bank_tau: float | None = 0.05  # locked tower: fused concept-bank heads (None: projection only)
    positives: str = "label"  # "label": same-class pairs are positives; "caption": same text
    seed: int = 0
    split_seed: int | None = None  # set when the CSVs were made from a class folder
    max_steps_per_epoch: int | None = None  # tests / smoke runs

    def __post_init__(self) -> None:
        for name, allowed in (
            ("positives", ("label", "caption")),
            ("image_tower", ("locked", "tuned")),
            ("text_head", ("locked", "trained")),
        ):
            if getattr(self, name) not in allowed:
                raise UsageError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        for csv_file in (self.train_csv, self.val_csv):
            if csv_file is not None and not Path(csv_file).is_file():
                raise UsageError(f"caption CSV {csv_file} not found")

    def run_key(self) -> str:
        """Identity of a training run: everything but ``epochs`` (so more epochs resume)."""
        fields = {k: v for k, v in asdict(self).items() if k != "epochs"}
        fields["train_csv_sha1"] = _file_sha1(self.train_csv)
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


def _file_sha1(path: str | Path) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()


class RandomRot90:
    """Rotate a PIL image by 0/90/180/270 degrees, uniformly (torch RNG: seedable)."""

    def __call__(self, image: Any) -> Any:
        k = int(torch.randint(0, 4, ()).item())
        return image.rotate(90 * k) if k else image


def train_transform(size: int, mean: Sequence[float], std: Sequence[float]) -> Callable:
    """SkyScript-style training augmentation for overhead imagery."""
    return transforms.Compose(
        [
            transforms.RandomResizedCrop(
                size, scale=(0.5, 1.0), interpolation=transforms.InterpolationMode.BICUBIC
            ),
            RandomRot90(),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )


class CaptionDataset(torch.utils.data.Dataset):
    """(image tensor, caption) pairs from SkyScript CSV rows; unreadable images are reported."""

    def __init__(self, rows: Sequence[tuple[str, str, str]], transform: Callable):
        self.rows = list(rows)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, str]:
        path, caption, label = self.rows[i]
        return self.transform(load_rgb(path)), caption, label


def check_images(rows: Sequence[tuple[str, str, str]]) -> tuple[list, list[dict[str, str]]]:
    """Split rows into readable ones and skipped ones (with a reason), without decoding fully."""
    good, skipped = [], []
    for row in rows:
        try:
            with open_image(row[0]) as im:
                im.verify()
            good.append(row)
        except (OSError, ValueError) as exc:
            skipped.append({"path": row[0], "reason": str(exc).splitlines()[0][:200]})
    return good, skipped


class FrozenTextFeatures(nn.Module):
    """Pooled features of the frozen HF text transformer, memoised per caption string."""

    def __init__(self, tim: TextImageModel):
        super().__init__()
        self.text = tim.model.text
        self.tokenizer = tim.tokenizer
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def pooled(self, captions: Sequence[str]) -> torch.Tensor:
        todo = sorted({c for c in captions if c not in self.cache})
        if todo:
            tokens = self.tokenizer(todo)
            mask = (tokens != self.text.config.pad_token_id).long()
            out = self.text.transformer(input_ids=tokens, attention_mask=mask)
            for caption, vec in zip(todo, self.text.pooler(out, mask), strict=True):
                self.cache[caption] = vec
        return torch.stack([self.cache[c] for c in captions])

    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        return self.text.proj(self.pooled(captions))


def freeze_for_training(tim: TextImageModel, cfg: TrainConfig) -> None:
    """Freeze the image trunk (all of it, or its early blocks) and the text transformer; the
    image head, the logit scale (unless fixed) and the text projection (unless locked) train."""
    model = tim.model
    locked = cfg.image_tower == "locked"
    if locked and not hasattr(model.visual, "trunk"):
        raise UsageError(
            f"{cfg.model_name} has no separable image trunk; the locked image tower recipe "
            "needs a timm image tower (train this model with the tuned image tower recipe)"
        )
    unlocked = 0 if locked else cfg.unlocked_image_groups
    model.lock_image_tower(unlocked_groups=unlocked, freeze_bn_stats=False)
    if hasattr(model, "text") and hasattr(model.text, "transformer"):  # HF text tower
        for p in model.text.transformer.parameters():
            p.requires_grad = False
        proj = model.text.proj
        if cfg.text_head == "locked" and isinstance(proj, nn.Linear):
            if tim.spec.get("base_pretrained") == "offline-towers":
                with torch.no_grad():  # a fresh head: lock MiniLM's own sentence space
                    proj.weight.copy_(torch.eye(*proj.weight.shape))
            proj.weight.requires_grad = False
    else:  # open_clip's own text transformer: train only the projection
        for name, p in model.named_parameters():
            if not name.startswith("visual."):
                p.requires_grad = name == "text_projection" and cfg.text_head == "trained"
    if cfg.logit_scale is not None:
        with torch.no_grad():
            model.logit_scale.fill_(math.log(cfg.logit_scale))
    model.logit_scale.requires_grad = cfg.logit_scale is None


def _train_mode(model: nn.Module) -> None:
    """Train mode, except frozen parts (BatchNorm keeps ImageNet statistics, no text dropout)."""
    model.train()
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params and not any(p.requires_grad for p in params):
            module.eval()
    if hasattr(model, "text") and hasattr(model.text, "transformer"):
        model.text.transformer.eval()


def _param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    heads, tower = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = name.startswith(("visual.head", "text.proj", "text_projection", "logit_scale"))
        (heads if is_head else tower).append(p)
    groups = [{"params": heads, "lr": cfg.head_lr, "base_lr": cfg.head_lr}]
    if tower:
        groups.append({"params": tower, "lr": cfg.lr, "base_lr": cfg.lr})
    return groups


def _lr_factor(step: int, total: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


class _HeadsOnly(nn.Module):
    """The trainable part of a locked-tower model (image head, text projection, logit scale),
    sharing its parameters: what a resume point of the locked recipe needs."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.image_head = model.visual.head
        self.text_proj = getattr(model.text, "proj", None) if hasattr(model, "text") else None
        self.logit_scale = model.logit_scale


class FeatureDataset(torch.utils.data.Dataset):
    """(pooled trunk features, caption, label) rows for the locked image tower recipe."""

    def __init__(self, rows: Sequence[tuple[str, str, str]], features: torch.Tensor):
        self.rows = list(rows)
        self.features = features

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, str, str]:
        return self.features[i], self.rows[i][1], self.rows[i][2]


@torch.no_grad()
def trunk_features(
    tim: TextImageModel, paths: Sequence[str], cache: Path, progress: bool = True
) -> torch.Tensor:
    """Pooled image-trunk features of ``paths`` (inference preprocessing), each image computed
    once: ``cache`` (``.npz``: keys, features) keeps them by path, size and modification time,
    so re-runs, resumed runs and other runs on the same images (e.g. leave-classes-out folds)
    only compute what is new."""
    keys = []
    for p in paths:
        stat = Path(p).stat()
        keys.append(f"{Path(p).resolve()}|{stat.st_size}|{stat.st_mtime_ns}")
    known: dict[str, np.ndarray] = {}
    if cache.is_file():
        with np.load(cache) as data:
            known = dict(zip(data["keys"].tolist(), data["features"], strict=True))
    todo = [i for i, k in enumerate(keys) if k not in known]
    tim.model.eval()
    bar = tqdm(total=len(todo), desc="image features", unit="img", disable=not progress)
    for start in range(0, len(todo), 32):
        chunk = todo[start : start + 32]
        pixels = torch.stack([tim.preprocess(load_rgb(paths[i])) for i in chunk])
        for i, vec in zip(chunk, tim.model.visual.trunk(pixels).numpy(), strict=True):
            known[keys[i]] = vec
        bar.update(len(chunk))
    bar.close()
    if todo:
        cache.parent.mkdir(parents=True, exist_ok=True)
        names = sorted(known)
        with atomic_path(cache) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, keys=np.array(names), features=np.stack([known[k] for k in names]))
    return torch.from_numpy(np.stack([known[k] for k in keys]))


@torch.no_grad()
def concept_bank(
    text_features: FrozenTextFeatures,
    rows: Sequence[tuple[str, str, str]],
    feats: torch.Tensor,
    positives: str = "label",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(feature mean, bank texts, bank visuals) for :func:`install_fused_heads`: every distinct
    training caption -> the unit mean of the centred, unit features of its class (its label;
    without labels, the images sharing that caption)."""
    normalize = nn.functional.normalize
    mean = feats.mean(0)
    centred = normalize(feats - mean, dim=-1)
    by_label = positives == "label" and all(r[2] for r in rows)
    groups: dict[str, list[int]] = {}
    for i, (_, caption, label) in enumerate(rows):
        groups.setdefault(label if by_label else caption, []).append(i)
    visual = {k: normalize(centred[idx].mean(0), dim=-1) for k, idx in groups.items()}
    entries = sorted({(caption, label if by_label else caption) for _, caption, label in rows})
    texts = normalize(text_features.pooled([c for c, _ in entries]), dim=-1)
    return mean, texts, torch.stack([visual[k] for _, k in entries])


class Trainer:
    """One fine-tuning run; ``run()`` trains the missing epochs and returns a summary dict."""

    def __init__(self, cfg: TrainConfig, workspace: Workspace, progress: bool = True):
        self.cfg = cfg
        self.workspace = workspace
        self.progress = progress
        self.run_key = cfg.run_key()
        self.model_id = f"{KIND}-{self.run_key}"
        self.run_dir = registry.model_dir(workspace, self.model_id)

    def _features(self, tim: TextImageModel, rows: list) -> torch.Tensor:
        """Trunk features of the rows' images, cached per workspace and image tower."""
        cfg = self.cfg
        tower = json.dumps([cfg.model_name, cfg.pretrained, tim.image_size])
        name = f"{hashlib.sha1(tower.encode()).hexdigest()[:10]}.npz"
        cache = self.workspace.root / "cache" / "text-image-features" / name
        return trunk_features(tim, [r[0] for r in rows], cache, self.progress)

    def _loader(self, rows: list, epoch: int, train: bool, tim: TextImageModel, feats=None):
        """Batches of (images or trunk features, captions, labels)."""
        if feats is not None:
            dataset: torch.utils.data.Dataset = FeatureDataset(rows, feats)
        else:
            size = tim.image_size
            tf = train_transform(size, tim.mean, tim.std) if train else tim.preprocess
            dataset = CaptionDataset(rows, tf)
        gen = torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch)
        return torch.utils.data.DataLoader(
            dataset,
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

    def _image(self, tim: TextImageModel, inputs: torch.Tensor) -> torch.Tensor:
        """Image embeddings (not normalised) of pixels, or of trunk features (locked tower)."""
        if self.cfg.image_tower == "locked":
            return tim.model.visual.head(inputs)
        return tim.model.encode_image(inputs)

    def _text(self, tim: TextImageModel, text_features: FrozenTextFeatures | None, captions):
        if text_features is not None:
            return text_features(captions)
        return tim.model.encode_text(tim.tokenizer(list(captions)))

    def _loss(self, tim, text_features, images, captions, labels) -> torch.Tensor:
        model = tim.model
        img = nn.functional.normalize(self._image(tim, images), dim=-1)
        txt = nn.functional.normalize(self._text(tim, text_features, captions), dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        # Multi-positive CLIP loss: pairs with the same key are positives. Keys are the labels
        # (positives="label", when the CSV has them) or the captions (templated captions repeat).
        keys = labels if self.cfg.positives == "label" and all(labels) else captions
        same = torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.float32)
        targets_i = same / same.sum(1, keepdim=True)
        loss_i = -(targets_i * logits.log_softmax(1)).sum(1).mean()
        loss_t = -(targets_i * logits.T.log_softmax(1)).sum(1).mean()
        return (loss_i + loss_t) / 2

    @torch.no_grad()
    def evaluate(self, tim, text_features, rows, feats=None) -> dict[str, float]:
        """Validation contrastive loss (no augmentation) and zero-shot top-1 when labelled.

        Rows are shuffled with a fixed seed first: CSVs are grouped by class, and batches of
        one class would make the contrastive loss meaningless."""
        tim.model.eval()
        if feats is None and self.cfg.image_tower == "locked":
            feats = self._features(tim, rows)
        order = list(range(len(rows)))
        random.Random(self.cfg.seed).shuffle(order)
        rows = [rows[i] for i in order]
        feats = feats[order] if feats is not None else None
        losses, embs = [], []
        for inputs, captions, labels in self._loader(rows, 0, False, tim, feats):
            losses.append(float(self._loss(tim, text_features, inputs, captions, labels)))
            embs.append(nn.functional.normalize(self._image(tim, inputs), dim=-1).numpy())
        out = {"val_loss": float(np.mean(losses))}
        labels = [r[2] for r in rows]
        if all(labels) and len(set(labels)) > 1:

            def encode(texts: list[str]) -> np.ndarray:
                txt = self._text(tim, text_features, texts)
                return nn.functional.normalize(txt, dim=-1).numpy()

            out["val_zero_shot_top1"] = zero_shot(tim, np.concatenate(embs), labels, encode=encode)[
                0
            ]
        return out

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        train_rows, skipped = check_images(read_csv(cfg.train_csv, cfg.caption_key))
        val_rows: list = []
        if cfg.val_csv:
            val_rows, val_skipped = check_images(read_csv(cfg.val_csv, cfg.caption_key))
            skipped += val_skipped
        if len(train_rows) < 2:
            raise UsageError(f"{cfg.train_csv}: fewer than two readable images to train on")
        final_cfg = self.run_dir / "config.json"
        if final_cfg.is_file():
            done = json.loads(final_cfg.read_text())
            if done.get("epochs_done", 0) >= cfg.epochs:
                return {**done.get("summary", {}), "model_id": self.model_id, "resumed": "done"}

        random.seed(cfg.seed)
        np.random.seed(cfg.seed)
        tim = create_text_image_model(
            cfg.model_name, cfg.pretrained, image_size=cfg.image_size, seed=cfg.seed
        )
        freeze_for_training(tim, cfg)
        text_features = FrozenTextFeatures(tim) if hasattr(tim.model.text, "pooler") else None
        opt = torch.optim.AdamW(_param_groups(tim.model, cfg), weight_decay=cfg.weight_decay)
        train_feats = val_feats = None
        if cfg.image_tower == "locked":
            train_feats = self._features(tim, train_rows)
            val_feats = self._features(tim, val_rows) if val_rows else None
        steps_per_epoch = len(self._loader(train_rows, 0, True, tim, train_feats))
        if cfg.max_steps_per_epoch:
            steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
        total_steps = steps_per_epoch * cfg.epochs

        history: list[dict[str, Any]] = []
        start_epoch = 0
        resume = self.run_dir / RESUME_DIR
        # Locked towers: the resume point holds the heads only (the towers are the packages'
        # weights, rebuilt identically), not ~200 MB of model per epoch.
        resumable = _HeadsOnly(tim.model) if cfg.image_tower == "locked" else tim.model
        start_epoch, history = load_training_state(resume, resumable, opt, self.run_key)
        if start_epoch and self.progress:
            tqdm.write(f"resuming {self.model_id} after epoch {start_epoch}", file=sys.stderr)

        trainable = sum(p.numel() for p in tim.model.parameters() if p.requires_grad)
        for epoch in range(start_epoch, cfg.epochs):
            torch.manual_seed(cfg.seed * 1000 + epoch)
            _train_mode(tim.model)
            losses, seen, t0 = [], 0, time.perf_counter()
            bar = tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{cfg.epochs}",
                unit="step",
                disable=not self.progress,
                leave=True,
            )
            batches = self._loader(train_rows, epoch, True, tim, train_feats)
            for step, (images, captions, labels) in enumerate(batches):
                if step >= steps_per_epoch:
                    break
                global_step = epoch * steps_per_epoch + step
                factor = _lr_factor(global_step, total_steps, cfg.warmup_steps)
                for group in opt.param_groups:
                    group["lr"] = group["base_lr"] * factor
                loss = self._loss(tim, text_features, images, captions, labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
                seen += len(images)
                rate = seen / (time.perf_counter() - t0)
                bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}", img_s=f"{rate:.1f}")
                bar.update(1)
            bar.close()
            seconds = time.perf_counter() - t0
            record = {
                "epoch": epoch + 1,
                "train_loss": float(np.mean(losses)),
                "first_step_loss": losses[0],
                "last_step_loss": losses[-1],
                "images": seen,
                "seconds": round(seconds, 1),
                "images_per_s": round(seen / seconds, 2),
            }
            if val_rows:
                record.update(self.evaluate(tim, text_features, val_rows, val_feats))
            history.append(record)
            if self.progress:
                tqdm.write(json.dumps(record), file=sys.stderr)
            save_training_state(resume, resumable, opt, epoch + 1, history, self.run_key)

        if cfg.image_tower == "locked" and cfg.bank_tau and text_features is not None:
            bank = concept_bank(text_features, train_rows, train_feats, cfg.positives)
            install_fused_heads(tim, *bank, tau=cfg.bank_tau)
        summary = {
            "model_id": self.model_id,
            "path": str(self.run_dir),
            "epochs": cfg.epochs,
            "train_images": len(train_rows),
            "val_images": len(val_rows),
            "skipped": skipped,
            "trainable_params": trainable,
            "history": history,
        }
        save_text_image_model(
            tim,
            self.run_dir,
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
            path=self.run_dir,
        )
        return summary


def train_text_image(
    cfg: TrainConfig, workspace: Workspace, progress: bool = True
) -> dict[str, Any]:
    """Fine-tune (or resume) and register; returns the run summary (see :class:`Trainer`)."""
    workspace.ensure()
    return Trainer(cfg, workspace, progress).run()


def prepare_folder(
    images_dir: str | Path, workspace: Workspace, split_seed: int = DEFAULT_SEED
) -> dict[str, Path]:
    """Class folders -> ``<workspace>/captions/<folder>-<seed>/{train,val,test}.csv``."""
    name = Path(images_dir).resolve().name
    return convert_folder(
        images_dir, workspace.root / "captions" / f"{name}-{split_seed}", seed=split_seed
    )


def prepare_training_data(
    workspace: Workspace,
    images: Sequence[str | Path] = (),
    train_csvs: Sequence[str | Path] = (),
    val_csvs: Sequence[str | Path] = (),
    split_seed: int = DEFAULT_SEED,
    exclude: Sequence[str] = (),
) -> dict[str, Any]:
    """Every caption source -> ONE training CSV and one validation CSV.

    Each class-folder image set is converted and split (:func:`prepare_folder`); caption CSVs
    are taken as they are. ``exclude``: class folders removed from training (their images AND
    every caption naming them, see :func:`~skysearch.encoders.datasets.captions.exclude_classes`).
    One source and nothing excluded: its own CSVs; otherwise merged CSVs under
    ``<workspace>/captions/mix-<hash>/`` (the hash of the sources, seed and exclusions, so the
    same command gives the same files and the same run). Returns ``{"train": Path, "val": Path
    | None, "removed": {"train": n, "val": n}}``.
    """
    if not images and not train_csvs:
        raise UsageError("no training data: give a class-folder image set or a caption CSV")
    folders = [prepare_folder(d, workspace, split_seed) for d in images]
    train_sources = [f["train"] for f in folders] + [Path(c) for c in train_csvs]
    val_sources = [f["val"] for f in folders] + [Path(c) for c in val_csvs]
    if len(train_sources) == 1 and len(val_sources) <= 1 and not exclude:
        return {"train": train_sources[0], "val": (val_sources or [None])[0], "removed": {}}
    key = json.dumps(
        {
            "train": [str(Path(c).resolve()) for c in train_sources],
            "val": [str(Path(c).resolve()) for c in val_sources],
            "seed": split_seed,
            "exclude": sorted(normalise_class(c) for c in exclude),
        },
        sort_keys=True,
    )
    out_dir = workspace.root / "captions" / f"mix-{hashlib.sha1(key.encode()).hexdigest()[:10]}"
    out: dict[str, Any] = {"removed": {}}
    for split, sources in (("train", train_sources), ("val", val_sources)):
        rows = [row for source in sources for row in read_caption_rows(source)]
        kept, removed = exclude_classes(rows, exclude)
        out["removed"][split] = removed
        if split == "train" and len(kept) < 2:
            raise UsageError(f"fewer than two training rows left after excluding {list(exclude)}")
        out[split] = write_csv(kept, out_dir / f"{split}.csv") if kept else None
    (out_dir / "sources.json").write_text(key)
    return out
