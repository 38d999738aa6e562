"""The image side of text-image training, one class per ``--image-tower`` recipe.

Each answers the same five questions for the trainer
(:mod:`skysearch.encoders.training.text_image`): what is cached per image, what a batch holds,
how a batch becomes image embeddings, which pooled trunk features the concept bank reads once
training is done, and what a resume point must keep. :func:`image_tower` picks the class.

- ``tuned``: pixels through the whole model (its unlocked trunk groups train), augmented.
- ``locked``: the trunk's pooled features, computed once per image; only the heads train.
- ``last-stage``: the frozen front's activations of four rotations cached per image; the
  trunk's last stages and the heads train on one rotation per draw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from skysearch.encoders.models.text_image import TextImageModel
from skysearch.encoders.training.text_image_data import (
    CaptionDataset,
    FeatureDataset,
    cached_image_features,
    train_transform,
)
from skysearch.encoders.training.text_image_recipe import TrainedParts, TrunkSplit
from torch import nn

Rows = Sequence[tuple[str, str, str]]


class ImageTower:
    """The ``tuned`` recipe; the others override what differs."""

    #: Cache folder kind under ``<workspace>/cache/`` and the progress label; None: no cache.
    cache_kind: ClassVar[str | None] = None
    cache_desc: ClassVar[str] = "image features"

    def __init__(self, tim: TextImageModel) -> None:
        self.tim = tim

    def cache_forward(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """What is cached of a batch of pixels (None: the trunk's pooled features)."""
        return None

    def dataset(self, rows: Rows, feats: torch.Tensor | None, train: bool):
        tim = self.tim
        tf = train_transform(tim.image_size, tim.mean, tim.std) if train else tim.preprocess
        return CaptionDataset(rows, tf)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """Image embeddings (not normalised) of one batch."""
        return self.tim.model.encode_image(inputs.to(self.tim.device))

    @torch.no_grad()
    def bank_features(self, rows: Rows, feats: torch.Tensor | None, progress: bool):
        """The pooled features of the trunk as trained (the whole tuned trunk over the
        images: not cached, they belong to one run)."""
        return cached_image_features(self.tim, [r[0] for r in rows], None, progress=progress)

    def resumable(self) -> nn.Module:
        """What a resume point holds: the whole model."""
        return self.tim.model


class LockedTower(ImageTower):
    cache_kind = "text-image-features"

    def dataset(self, rows: Rows, feats: torch.Tensor | None, train: bool):
        return FeatureDataset(rows, feats, False)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.tim.model.visual.head(inputs.to(self.tim.device))

    def bank_features(self, rows: Rows, feats: torch.Tensor | None, progress: bool):
        return feats

    def resumable(self) -> nn.Module:
        """The heads (the trunk is the package's weights, rebuilt identically)."""
        return TrainedParts(self.tim.model)


class LastStageTower(ImageTower):
    cache_kind = "text-image-fronts"
    cache_desc = "frozen image stages, 4 rotations"

    def __init__(self, tim: TextImageModel) -> None:
        super().__init__(tim)
        self.split = TrunkSplit(tim.model.visual.trunk)

    def cache_forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.split.front_rotations

    def dataset(self, rows: Rows, feats: torch.Tensor | None, train: bool):
        """Training draws one rotation per image; evaluation takes the image as it is."""
        assert feats is not None
        return FeatureDataset(rows, feats if train else feats[:, 0], train)

    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.tim.model.visual.head(self.split.back(inputs.to(self.tim.device)))

    @torch.no_grad()
    def bank_features(self, rows: Rows, feats: torch.Tensor | None, progress: bool):
        """The tuned last stages over the cached front, the images as they are."""
        assert feats is not None
        back = self.split.back
        return torch.cat([back(feats[i : i + 64, 0].float()) for i in range(0, len(feats), 64)])

    def resumable(self) -> nn.Module:
        """The heads and the trunk's last stages."""
        return TrainedParts(self.tim.model, self.split.back_modules())


TOWERS: dict[str, type[ImageTower]] = {
    "tuned": ImageTower,
    "locked": LockedTower,
    "last-stage": LastStageTower,
}


def image_tower(recipe: str, tim: TextImageModel) -> ImageTower:
    """The image side of recipe ``recipe`` (``--image-tower``) for the model ``tim``."""
    return TOWERS[recipe](tim)
