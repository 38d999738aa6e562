"""Clip encoder: the sequence of frame embeddings -> one 256-d unit vector.

SkySearch's design: sinusoidal positional encoding + one transformer encoder layer + a linear
layer to 256-d. The time steps are flattened (not averaged) before the last linear layer, since
the ground-truth clip similarity compares frame i with frame i: order matters. The clip length
is therefore part of the config.

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
from skysearch.encoders.frame_encoder import FrameEncoder, build_frame_encoder
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
        self.out = nn.Linear(config.length * config.in_dim, config.dim)
        if config.dim == config.in_dim:
            # Start as the mean over time of the (transformed) frame embeddings: clip distance
            # then starts close to the mean frame distance, which is how the ground truth
            # scores clips; training learns the corrections (few clips: a random 3072 x 256
            # start overfits them).
            with torch.no_grad():
                self.out.weight.copy_(torch.eye(config.dim).repeat(1, config.length))
                self.out.weight.div_(config.length)
                self.out.bias.zero_()

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What training updates: the transformer layer. The output layer stays the temporal
        mean it starts as (trained on ~150 overlapping clips it learned "time since" and
        ranked held-out clips worse)."""
        return list(self.layer.parameters())

    def forward(self, frame_embeddings: torch.Tensor) -> torch.Tensor:
        _, length, dim = frame_embeddings.shape
        if length != self.config.length or dim != self.config.in_dim:
            raise UsageError(
                f"clip encoder expects {self.config.length} frames of {self.config.in_dim}-d "
                f"embeddings, got {length} x {dim}; build clips with --length "
                f"{self.config.length} or train a clip encoder for this length"
            )
        x = self.layer(frame_embeddings + self.positions)
        return F.normalize(self.out(x.flatten(1)), dim=-1)


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
