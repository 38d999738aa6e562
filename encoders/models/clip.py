"""Clip encoder: the sequence of frame embeddings -> one 256-d unit vector.

SkySearch's design: sinusoidal positional encoding + one transformer encoder layer + a linear
layer to 256-d. The transformer layer is a gated residual (``e + gate * layer(e + positions)``,
gate starting at 0), so an untrained clip encoder passes the frame embeddings through unchanged
and training adds what helps. The output layer is fixed: the mean of each of ``segments``
consecutive groups of frames (the ground truth compares frame i with frame i, so order
matters), and for frame embeddings with a spatial layout (``small-cnn``'s pooled cell map) a
``spatial_pool`` x ``spatial_pool`` average of the map, so the result is 256-d. Measured on the
GOES validation slice: 4 segments x a 2x2-pooled map ranked clips of 6 and 12 frames better
than the temporal mean (4-frame clips: the reverse), and far better than a learned or random
3072 -> 256 projection (trained on ~150 overlapping clips it learned the training period's
calendar).

:class:`ClipEmbedder` bundles a (frozen) frame encoder with a clip encoder; a clip checkpoint
stores both (keys ``frame.*`` and ``clip.*``), so one registry entry embeds raw clips.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from skysearch.encoders.models.frame import (
    FrameEncoder,
    FrameEncoderConfig,
    build_frame_encoder,
)
from torch import nn

from skysearch.errors import UsageError


@dataclass
class ClipEncoderConfig:
    length: int = 12
    in_dim: int = 256
    dim: int = 256
    heads: int = 4
    ff: int = 512
    dropout: float = 0.1
    segments: int = 1  # temporal groups averaged in the output (1 = the temporal mean)
    frame_grid: int = 0  # side of the frame embedding's spatial map (0 = no spatial layout)
    spatial_pool: int = 1  # average-pool that map by this factor in the output

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ClipEncoderConfig:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """The transformer's fixed sine/cosine positional encoding, ``(length, dim)``."""
    position = torch.arange(length, dtype=torch.float32).unsqueeze(1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
    return table


#: ``small-cnn`` clips of at least this many frames are read out in segments (see below)
SEGMENTED_LENGTH = 6


def clip_config_for(frame: FrameEncoderConfig, length: int) -> ClipEncoderConfig:
    """Clip encoder settings for a frame encoder: for ``small-cnn``'s cell map and clips of at
    least 6 frames, 4 segments x the 2x2-pooled map; otherwise the temporal mean (chosen on the
    GOES IR validation slice for 4, 6 and 12 frames: bench/RESULTS.md, 2026-11-29)."""
    if frame.backbone == "small-cnn" and length >= SEGMENTED_LENGTH and frame.out_grid % 2 == 0:
        return ClipEncoderConfig(
            length, frame.dim, segments=4, frame_grid=frame.out_grid, spatial_pool=2
        )
    return ClipEncoderConfig(length, frame.dim)


def readout_matrix(config: ClipEncoderConfig) -> torch.Tensor:
    """The fixed output layer ``(dim, length * in_dim)``: segment means x spatial pooling."""
    if not 1 <= config.segments <= config.length:
        raise UsageError(f"clip encoder: {config.segments} segments for {config.length} frames")
    bounds = np.linspace(0, config.length, config.segments + 1).round().astype(int)
    temporal = torch.zeros(config.segments, config.length)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        temporal[i, lo:hi] = 1.0 / (hi - lo)
    spatial = torch.eye(config.in_dim)
    grid, pool = config.frame_grid, config.spatial_pool
    if grid:
        features, rem = divmod(config.in_dim, grid * grid)
        if rem or grid % pool:
            raise UsageError(
                f"clip encoder: a {grid} x {grid} map does not fit {config.in_dim}-d frame "
                f"embeddings pooled by {pool}"
            )
        maps = spatial.reshape(config.in_dim, features, grid, grid)
        spatial = F.avg_pool2d(maps, pool).reshape(config.in_dim, -1).T
    readout = torch.kron(temporal, spatial.contiguous())
    if readout.shape[0] != config.dim:
        raise UsageError(
            f"clip encoder: {config.segments} segments x {spatial.shape[0]} values = "
            f"{readout.shape[0]}, not dim {config.dim}"
        )
    return readout


class ClipEncoder(nn.Module):
    """``(B, L, in_dim)`` frame embeddings -> ``(B, dim)`` L2-normalised clip embeddings."""

    kind = "clip"

    def __init__(self, config: ClipEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer(
            "positions", sinusoidal_positions(config.length, config.in_dim), persistent=False
        )
        self.layer = nn.TransformerEncoderLayer(
            d_model=config.in_dim,
            nhead=config.heads,
            dim_feedforward=config.ff,
            dropout=config.dropout,
            batch_first=True,
        )
        self.gate = nn.Parameter(torch.zeros(()))
        self.register_buffer("readout", readout_matrix(config), persistent=False)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What training updates: the transformer layer and its gate (the readout is fixed)."""
        return [self.gate, *self.layer.parameters()]

    def forward(self, frame_embeddings: torch.Tensor) -> torch.Tensor:
        _, length, dim = frame_embeddings.shape
        if length != self.config.length or dim != self.config.in_dim:
            raise UsageError(
                f"clip encoder expects {self.config.length} frames of {self.config.in_dim}-d "
                f"embeddings, got {length} x {dim}; build clips of {self.config.length} frames "
                "or train a clip encoder for this length"
            )
        x = frame_embeddings + self.gate * self.layer(frame_embeddings + self.positions)
        return F.normalize(x.flatten(1) @ self.readout.T, dim=-1)


class ClipEmbedder(nn.Module):
    """Frame encoder + clip encoder: raw clips ``(B, C, L, H, W)`` -> ``(B, dim)``."""

    kind = "clip"

    def __init__(self, frame: FrameEncoder, clip: ClipEncoder) -> None:
        super().__init__()
        self.frame = frame
        self.clip = clip

    @property
    def channels(self) -> list[str]:
        return list(self.frame.config.channels)

    @property
    def length(self) -> int:
        return self.clip.config.length

    def frame_embeddings(self, clips: torch.Tensor) -> torch.Tensor:
        """``(B, C, L, H, W)`` -> ``(B, L, D)`` frame embeddings."""
        if clips.ndim != 5:
            raise UsageError(f"expected clips shaped (B, C, L, H, W), got {tuple(clips.shape)}")
        b, c, length, h, w = clips.shape
        frames = clips.permute(0, 2, 1, 3, 4).reshape(b * length, c, h, w)
        return self.frame(frames).reshape(b, length, -1)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.clip(self.frame_embeddings(clips))

    @torch.no_grad()
    def embed_clip(self, frames: np.ndarray | torch.Tensor) -> np.ndarray:
        """One clip ``(C, L, H, W)`` (uint8, as ``clip_frames`` returns) -> ``(dim,)`` float32."""
        tensor = torch.as_tensor(np.asarray(frames))
        if tensor.ndim != 4:
            raise UsageError(f"expected one clip shaped (C, L, H, W), got {tuple(tensor.shape)}")
        was_training = self.training
        self.eval()
        device = next(self.parameters()).device
        vector = self(tensor.unsqueeze(0).to(device))[0].cpu().numpy().astype(np.float32)
        self.train(was_training)
        return vector


def build_clip_embedder(
    frame_config: dict[str, Any], clip_config: dict[str, Any], pretrained: bool = False
) -> ClipEmbedder:
    """Factory from the two config dicts stored in a clip checkpoint."""
    frame = build_frame_encoder(frame_config, pretrained=pretrained)
    return ClipEmbedder(frame, ClipEncoder(ClipEncoderConfig.from_dict(clip_config)))
