"""The text-image fine-tuning recipe: its options, what trains and what stays frozen, the loss.

Three recipes for the image tower (``TextImageTrainConfig.image_tower``):

- ``last-stage`` (default): the ImageNet trunk's last two stages (EfficientNet blocks 5-6, at 1/32
  of the input's resolution) train with the image projection head; the frozen stages before them
  run ONCE per image, for its four 90-degree rotations (overhead imagery has no "up"), and their
  activations are cached (``<workspace>/cache/``, ~90 KB an image): each epoch draws one rotation
  per image and trains only the last stages (~3x the images per second of tuning the tower on
  pixels). Then a concept bank joins the heads, built from the tuned trunk's features (fused
  heads, see :class:`~skysearch.encoders.models.text_image.ConceptBankTextHead`). Chosen on
  validation splits (bench/RESULTS.md, 2026-11-30): it keeps the locked recipe's unseen-class
  accuracy and separates the trained classes far better.
- ``locked`` (LiT-style): the ImageNet image trunk is frozen and its pooled features are
  computed once per image (no augmentation; cached in ``<workspace>/cache/``); only the
  projection heads train, in seconds, then the concept bank joins them.
- ``tuned``: the last ``unlocked_image_groups`` timm groups train with the image projection
  head, on SkyScript-style augmentation of the pixels (random resized crop, random 90-degree
  rotations, flips); frozen BatchNorm layers keep their ImageNet statistics. The concept bank is
  then built from the tuned trunk's features.

With ``text_head="trained"`` there is no concept bank (the fused text half is the untrained
sentence embedding, which would drop the trained text projection).

The text transformer is always frozen (its sentence semantics are what make free-text queries
beyond the training captions work) and its pooled features are memoised per caption (exact:
frozen, eval mode). ``text_head="locked"`` also keeps the text projection fixed (the identity
for the offline MiniLM tower, so queries live in MiniLM's own sentence space and the image head
learns to map into it); ``"trained"`` trains it. The loss is a multi-positive contrastive loss:
in a batch, pairs of the same class (the CSV's ``label`` column, written by the converter) are
all positives; without labels, identical captions are.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from skysearch.encoders.datasets.captions import file_sha1
from skysearch.encoders.models.text_image import (
    DEFAULT_MODEL,
    KIND,
    TextImageModel,
    create_text_image_model,
)
from skysearch.encoders.training.loop import TrainConfig
from torch import nn

from skysearch.errors import UsageError

#: Epochs of each image-tower recipe unless given (the counts they were chosen with).
RECIPE_EPOCHS = {"last-stage": 15, "locked": 30, "tuned": 30}
#: last-stage recipe: how many of the trunk's last stages train, over how many rotations.
LAST_STAGES = 2
ROTATIONS = 4
#: The choices of the recipe's named options.
CHOICES = {
    "positives": ("label", "caption"),
    "image_tower": tuple(RECIPE_EPOCHS),
    "text_head": ("locked", "trained"),
}


def check_choices(**given: str) -> None:
    """Each of ``positives``, ``image_tower``, ``text_head`` given is one of its choices."""
    for name, value in given.items():
        allowed = CHOICES[name]
        if value not in allowed:
            raise UsageError(
                f"{{{name}}} must be one of {', '.join(allowed)}, not {value!r}", params=[name]
            )


@dataclass(frozen=True, kw_only=True)
class TextImageTrainConfig(TrainConfig):
    """The text-image run: its data (caption CSVs) and recipe (see the module docstring)."""

    train_csv: str
    val_csv: str | None = None
    caption_key: str = "title"
    model_name: str = DEFAULT_MODEL
    pretrained: str | None = None
    epochs: int | None = None  # None: the recipe's (RECIPE_EPOCHS)
    batch_size: int = 128
    lr: float = 5e-4  # the trunk layers that train (image_tower "last-stage" or "tuned")
    head_lr: float = 1e-3  # projection heads and logit scale
    weight_decay: float = 0.0
    warmup_steps: int = 10
    image_size: int | None = None  # None: the model config's (160 for the default)
    image_tower: str = "last-stage"  # or "locked", "tuned": see the module docstring
    unlocked_image_groups: int = 11  # tuned: timm groups of tf_efficientnet_lite0, blocks.3 on
    text_head: str = "locked"  # "locked": text projection fixed (identity for MiniLM)
    logit_scale: float | None = 30.0  # fixed contrastive temperature; None: trained
    bank_tau: float | None = 0.05  # fused concept-bank heads, locked text head (None: off)
    positives: str = "label"  # "label": same-class pairs are positives; "caption": same text
    seed: int = 0
    split_seed: int | None = None  # set when the CSVs were made from a class folder
    max_steps_per_epoch: int | None = None  # tests / smoke runs

    def __post_init__(self) -> None:
        check_architecture(self.model_name)
        check_choices(
            positives=self.positives, image_tower=self.image_tower, text_head=self.text_head
        )
        if self.epochs is None:  # frozen dataclass: set once, here
            object.__setattr__(self, "epochs", RECIPE_EPOCHS[self.image_tower])

    def check_files(self) -> None:
        """The caption CSVs exist (checked when training, not when a trained model's recipe
        is rebuilt: its CSVs may be gone)."""
        for csv_file in (self.train_csv, self.val_csv):
            if csv_file is not None and not Path(csv_file).is_file():
                raise UsageError(f"caption CSV {csv_file} not found")

    def run_key(self) -> str:
        """Identity of a training run (see :meth:`TrainConfig.identity`) and of its data."""
        fields = self.identity()
        fields["train_csv_sha1"] = file_sha1(self.train_csv)
        text = json.dumps(fields, sort_keys=True)
        return hashlib.sha1(text.encode()).hexdigest()[:10]


def check_architecture(model_name: str) -> None:
    """``model_name`` names an architecture to train; a trained model's id is refused (search,
    index and eval take those, so the two are easily swapped)."""
    if model_name.startswith(f"{KIND}-"):
        raise UsageError(
            f"{{model_name}} {model_name} is a trained model id; {{model_name}} names the "
            "architecture to train (search, index and eval take a trained model's id)",
            params=["model_name"],
        )


def check_epochs(epochs: int | None, pretrained: str | None) -> None:
    """0 epochs registers a checkpoint unchanged: without one, the towers' heads would be
    registered untrained (and text searches would use them)."""
    if epochs == 0 and pretrained is None:
        raise UsageError(
            "{epochs} 0 registers a {pretrained} checkpoint unchanged; give one, or train at "
            "least 1 epoch",
            params=["epochs", "pretrained"],
        )


class FrozenTextFeatures(nn.Module):
    """Pooled features of the frozen HF text transformer, memoised per caption string."""

    def __init__(self, tim: TextImageModel):
        super().__init__()
        self.text = tim.model.text
        self.tokenizer = tim.tokenizer
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def pooled(self, captions: Sequence[str]) -> torch.Tensor:
        device = next(self.text.parameters()).device
        todo = sorted({c for c in captions if c not in self.cache})
        if todo:
            tokens = self.tokenizer(todo).to(device)
            mask = (tokens != self.text.config.pad_token_id).long()
            out = self.text.transformer(input_ids=tokens, attention_mask=mask)
            for caption, vec in zip(todo, self.text.pooler(out, mask), strict=True):
                self.cache[caption] = vec.cpu()  # kept where the model may move back to
        return torch.stack([self.cache[c] for c in captions]).to(device)

    def forward(self, captions: Sequence[str]) -> torch.Tensor:
        return self.text.proj(self.pooled(captions))


class TrunkSplit:
    """A timm EfficientNet image trunk cut before its last ``LAST_STAGES`` stages: ``front``
    (frozen; its activations of every rotation are cached) and ``back`` (trains).
    ``back(front(x))`` is the trunk's own pooled output."""

    def __init__(self, trunk: nn.Module):
        self.trunk = trunk
        self.cut = len(trunk.blocks) - LAST_STAGES

    @staticmethod
    def fits(model: nn.Module) -> bool:
        trunk = getattr(getattr(model, "visual", None), "trunk", None)
        return all(hasattr(trunk, a) for a in ("conv_stem", "bn1", "blocks", "conv_head", "bn2"))

    def back_modules(self) -> list[nn.Module]:
        return [*self.trunk.blocks[self.cut :], self.trunk.conv_head, self.trunk.bn2]

    def front(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.trunk.bn1(self.trunk.conv_stem(pixels))
        for block in self.trunk.blocks[: self.cut]:
            x = block(x)
        return x

    @torch.no_grad()
    def front_rotations(self, pixels: torch.Tensor) -> torch.Tensor:
        """(n, ROTATIONS, C, H, W) float16: the front's activations of each 90-degree turn."""
        turns = [self.front(torch.rot90(pixels, k, dims=(2, 3))) for k in range(ROTATIONS)]
        return torch.stack(turns, dim=1).half()

    def back(self, activations: torch.Tensor) -> torch.Tensor:
        x = activations
        for block in self.trunk.blocks[self.cut :]:
            x = block(x)
        return self.trunk.forward_head(self.trunk.bn2(self.trunk.conv_head(x)))


def freeze_for_training(tim: TextImageModel, cfg: TextImageTrainConfig) -> None:
    """Freeze the image trunk (all of it, all but its last stages, or its early blocks) and the
    text transformer; the image head, the trunk's unlocked part, the logit scale (unless fixed)
    and the text projection (unless locked) train."""
    model = tim.model
    if cfg.image_tower == "locked" and not hasattr(model.visual, "trunk"):
        raise UsageError(
            f"{cfg.model_name} has no separable image trunk; the locked image tower recipe "
            "needs a timm image tower (train this model with {image_tower} tuned)",
            params=["image_tower"],
        )
    if cfg.image_tower == "last-stage" and not TrunkSplit.fits(model):
        raise UsageError(
            f"{cfg.model_name} has no EfficientNet-style image trunk; the last-stage recipe "
            "needs one (train this model with {image_tower} tuned)",
            params=["image_tower"],
        )
    unlocked = cfg.unlocked_image_groups if cfg.image_tower == "tuned" else 0
    with warnings.catch_warnings():  # open_clip imports timm's grouping helpers by an old path
        warnings.filterwarnings("ignore", "Importing from timm.models.helpers", FutureWarning)
        model.lock_image_tower(unlocked_groups=unlocked, freeze_bn_stats=False)
    if cfg.image_tower == "last-stage":
        for module in TrunkSplit(model.visual.trunk).back_modules():
            for p in module.parameters():
                p.requires_grad = True
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


def train_mode(model: nn.Module) -> None:
    """Train mode, except frozen parts (BatchNorm keeps ImageNet statistics, no text dropout)."""
    model.train()
    for module in model.modules():
        params = list(module.parameters(recurse=False))
        if params and not any(p.requires_grad for p in params):
            module.eval()
    if hasattr(model, "text") and hasattr(model.text, "transformer"):
        model.text.transformer.eval()


def param_groups(model: nn.Module, cfg: TextImageTrainConfig) -> list[dict[str, Any]]:
    """AdamW groups: projection heads and logit scale at ``head_lr``, tower layers at ``lr``."""
    heads, tower = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = name.startswith(("visual.head", "text.proj", "text_projection", "logit_scale"))
        (heads if is_head else tower).append(p)
    # initial_lr: the peak of the learning-rate schedule, which may start mid-run (resume)
    groups = [{"params": heads, "lr": cfg.head_lr, "initial_lr": cfg.head_lr}]
    if tower:
        groups.append({"params": tower, "lr": cfg.lr, "initial_lr": cfg.lr})
    return groups


def contrastive_loss(
    img: torch.Tensor, txt: torch.Tensor, logit_scale: torch.Tensor, keys: Sequence[str]
) -> torch.Tensor:
    """Multi-positive CLIP loss on unit embeddings: pairs with the same key are positives.

    Keys are the labels (``positives="label"``, when the CSV has them) or the captions
    (templated captions repeat)."""
    logits = logit_scale.exp().clamp(max=100) * img @ txt.T
    same = torch.tensor([[a == b for b in keys] for a in keys], dtype=torch.float32)
    targets = (same / same.sum(1, keepdim=True)).to(logits.device)
    loss_i = -(targets * logits.log_softmax(1)).sum(1).mean()
    loss_t = -(targets * logits.T.log_softmax(1)).sum(1).mean()
    return (loss_i + loss_t) / 2


class TrainedParts(nn.Module):
    """The parts of a model that train in the locked or last-stage recipe (image head, text
    projection, logit scale; the trunk's last stages), sharing its parameters: what their resume
    point needs (the rest is the packages' weights, rebuilt identically), not the whole model."""

    def __init__(self, model: nn.Module, stages: Sequence[nn.Module] = ()):
        super().__init__()
        self.image_head = model.visual.head
        self.text_proj = getattr(model.text, "proj", None) if hasattr(model, "text") else None
        self.logit_scale = model.logit_scale
        self.trunk_stages = nn.ModuleList(stages)


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


def create_untuned_model(tuned: TextImageModel) -> TextImageModel:
    """The towers a fine-tuned model started from, before any training (the baseline of an
    evaluation): same architecture and base weights, heads as its recipe initialised them."""
    train = tuned.metadata.get("train", {})
    untuned = create_text_image_model(
        train.get("model_name", tuned.spec["open_clip_model"]),
        train.get("pretrained"),
        image_size=tuned.image_size,
        seed=int(train.get("seed", 0)),
    )
    if train.get("train_csv"):
        # Models trained before the recipe options existed used the tuned recipe.
        before = {"image_tower": "tuned", "text_head": "trained", "logit_scale": None}
        known = {k: v for k, v in train.items() if k in TextImageTrainConfig.__dataclass_fields__}
        freeze_for_training(untuned, TextImageTrainConfig(**{**before, **known}))
    untuned.model.eval()
    return untuned
