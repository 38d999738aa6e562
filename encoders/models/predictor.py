"""SimVP-style video predictor: L input frames -> the next L frames.

Architecture (Gao et al., "SimVP: Simpler yet Better Video Prediction", CVPR 2022), kept small
for CPU training on a few hundred frames:

- spatial encoder: strided conv blocks applied to every frame independently
  (B*T, C, H, W) -> (B*T, hid_s, H/4, W/4), the first block's output kept as a skip;
- temporal translator: the T frame latents stacked along channels (B, T*hid_s, h, w) and mixed
  by a small U-Net of grouped inception blocks (time is mixed by the channel dimension);
- decoder: transposed conv blocks back to (B*T, C, H, W), using the skip.

With ``residual=True`` (default) the decoder predicts a change relative to the last input frame
and its read-out starts at zero, so an untrained model is exactly persistence and training only
has to learn the change.

Tensors are float in [0, 1], shape (B, T, C, H, W) with T = the clip length L. Output frame k
(0-based) is the frame ``k + 1`` steps of the clip gap after the last input frame (see
:func:`predicted_offsets`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw, ImageFont
from skysearch.encoders.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_into,
    save_checkpoint,
)
from skysearch.encoders.device import resolve_device
from torch import nn
from torch.nn import functional as F  # noqa: N812


@dataclass(frozen=True)
class PredictorConfig:
    """Everything needed to rebuild a predictor (stored in its checkpoint's config.json)."""

    length: int = 6
    channels: int = 1
    height: int = 64
    width: int = 96
    hid_s: int = 8
    hid_t: int = 48
    n_s: int = 4
    n_t: int = 2
    residual: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PredictorConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})


def _group_norm(channels: int) -> nn.GroupNorm:
    groups = 2 if channels % 2 == 0 else 1
    return nn.GroupNorm(groups, channels)


class ConvBlock(nn.Module):
    """Conv (or transposed conv for upsampling) + GroupNorm + LeakyReLU (SimVP's BasicConv2d)."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, transpose: bool = False) -> None:
        super().__init__()
        if transpose and stride > 1:
            self.conv: nn.Module = nn.ConvTranspose2d(
                c_in, c_out, 3, stride=stride, padding=1, output_padding=stride - 1
            )
        else:
            self.conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1)
        self.norm = _group_norm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.norm(self.conv(x)), 0.2)


def _strides(n: int) -> list[int]:
    """SimVP's stride pattern: 1, 2, 1, 2, ... (n blocks, n//2 downsamplings)."""
    return [2 if i % 2 else 1 for i in range(n)]


class Encoder(nn.Module):
    def __init__(self, c_in: int, hid: int, n_s: int) -> None:
        super().__init__()
        strides = _strides(n_s)
        self.blocks = nn.ModuleList(
            [ConvBlock(c_in if i == 0 else hid, hid, s) for i, s in enumerate(strides)]
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        skip = self.blocks[0](x)
        z = skip
        for block in self.blocks[1:]:
            z = block(z)
        return z, skip


class Decoder(nn.Module):
    def __init__(self, hid: int, c_out: int, n_s: int) -> None:
        super().__init__()
        strides = list(reversed(_strides(n_s)))
        self.blocks = nn.ModuleList([ConvBlock(hid, hid, s, transpose=True) for s in strides[:-1]])
        self.last = ConvBlock(2 * hid, hid, strides[-1], transpose=True)
        self.readout = nn.Conv2d(hid, c_out, 1)

    def forward(self, z: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            z = block(z)
        return self.readout(self.last(torch.cat([z, skip], dim=1)))


class Inception(nn.Module):
    """1x1 bottleneck, then grouped convs with kernels 3/5/7, summed (SimVP's GroupConv2d)."""

    def __init__(self, c_in: int, c_hid: int, c_out: int, groups: int = 4) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(c_in, c_hid, 1)
        g = groups if c_hid % groups == 0 and c_out % groups == 0 else 1
        self.branches = nn.ModuleList(
            [nn.Conv2d(c_hid, c_out, k, padding=k // 2, groups=g) for k in (3, 5, 7)]
        )
        self.norm = _group_norm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.reduce(x)
        return F.leaky_relu(self.norm(sum(b(x) for b in self.branches)), 0.2)


class Translator(nn.Module):
    """U-Net over the stacked frame latents: n_t encoder and n_t decoder inception blocks."""

    def __init__(self, c_in: int, c_hid: int, n_t: int) -> None:
        super().__init__()
        self.down = nn.ModuleList(
            [Inception(c_in if i == 0 else c_hid, c_hid // 2, c_hid) for i in range(n_t)]
        )
        self.up = nn.ModuleList(
            [Inception(2 * c_hid, c_hid // 2, c_hid if i < n_t - 1 else c_in) for i in range(n_t)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        z = x
        for block in self.down:
            z = block(z)
            skips.append(z)
        for block, skip in zip(self.up, reversed(skips), strict=True):
            z = block(torch.cat([z, skip], dim=1))
        return z


class SimVP(nn.Module):
    """(B, L, C, H, W) in [0, 1] -> the next L frames, same shape."""

    def __init__(self, config: PredictorConfig) -> None:
        super().__init__()
        if config.height % 4 or config.width % 4:
            raise ValueError("predictor working resolution must be divisible by 4")
        self.config = config
        self.encoder = Encoder(config.channels, config.hid_s, config.n_s)
        self.translator = Translator(config.length * config.hid_s, config.hid_t, config.n_t)
        self.decoder = Decoder(config.hid_s, config.channels, config.n_s)
        if config.residual:
            # Zero read-out: the untrained model IS persistence, training moves away from it.
            nn.init.zeros_(self.decoder.readout.weight)
            nn.init.zeros_(self.decoder.readout.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        cfg = self.config
        if (t, c, h, w) != (cfg.length, cfg.channels, cfg.height, cfg.width):
            raise ValueError(
                f"predictor expects (B, {cfg.length}, {cfg.channels}, {cfg.height}, {cfg.width}), "
                f"got {tuple(x.shape)}"
            )
        z, skip = self.encoder(x.reshape(b * t, c, h, w))
        _, hid, hh, ww = z.shape
        z = self.translator(z.reshape(b, t * hid, hh, ww)).reshape(b * t, hid, hh, ww)
        y = self.decoder(z, skip).reshape(b, t, c, h, w)
        if cfg.residual:
            y = y + x[:, -1:]
        return y


def predicted_offsets(length: int, gap_minutes: int) -> list[int]:
    """Minutes after the LAST input frame of each predicted frame: gap, 2*gap, ..., L*gap."""
    return [gap_minutes * (k + 1) for k in range(length)]


def persistence(x: torch.Tensor) -> torch.Tensor:
    """The baseline every predictor must beat: repeat the last input frame L times."""
    return x[:, -1:].expand_as(x).clone()


def to_working(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize (..., H, W) uint8 or float frames to the predictor resolution, float in [0, 1]."""
    x = frames.float()
    if frames.dtype == torch.uint8:
        x = x / 255.0
    lead = x.shape[:-2]
    x = x.reshape(-1, 1, *x.shape[-2:])
    if x.shape[-2:] != (height, width):
        x = F.interpolate(x, size=(height, width), mode="area")
    return x.reshape(*lead, height, width)


@torch.no_grad()
def predict(model: SimVP, clip: torch.Tensor) -> torch.Tensor:
    """Predict the next clip of one clip (C, L, H, W) (catalog layout), any resolution.

    Returns (C, L, h, w) float in [0, 1] at the predictor's working resolution.
    """
    cfg = model.config
    x = to_working(clip, cfg.height, cfg.width).permute(1, 0, 2, 3).unsqueeze(0)
    model.eval()
    y = model(x.to(next(model.parameters()).device)).clamp(0.0, 1.0).cpu()
    return y[0].permute(1, 0, 2, 3).contiguous()


def save_predictor(directory: Path, model: SimVP, info: dict[str, Any]) -> Path:
    """Checkpoint a predictor: architecture under ``predictor``, plus ``info`` (data, metrics)."""
    config = {**info, "kind": "predictor", "predictor": model.config.to_dict()}
    return save_checkpoint(directory, model, config)


def load_predictor(directory: Path, device: str = "cpu") -> tuple[SimVP, dict[str, Any]]:
    """Rebuild a predictor from its checkpoint folder, on ``device`` (a setting such as
    ``auto``); a mismatch is a clear CheckpointError."""
    torch_device = resolve_device(device)
    state, config = load_checkpoint(directory, device=torch_device)
    if config.get("kind") != "predictor" or "predictor" not in config:
        raise CheckpointError(f"{directory} is not a predictor checkpoint; pass a predictor model")
    model = SimVP(PredictorConfig.from_dict(config["predictor"]))
    load_into(model, state, source=str(directory))
    model.to(torch_device).eval()
    return model, config


def render_strip(
    rows: list[tuple[str, torch.Tensor, list[str]]], scale: int = 2, channel: int = 0
) -> Image.Image:
    """One labelled image: a row per (label, frames (C, L, h, w) in [0, 1], per-frame captions).

    Frames are shown at ``scale`` x their size (bilinear), one channel (``channel``).
    """
    _, length, h, w = rows[0][1].shape
    fw, fh = w * scale, h * scale
    label_w, cap_h, pad = 90, 14, 4
    width = label_w + length * (fw + pad)
    height = len(rows) * (fh + cap_h + pad) + pad
    canvas = Image.new("L", (width, height), color=24)
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, (label, frames, captions) in enumerate(rows):
        top = pad + r * (fh + cap_h + pad)
        draw.text((4, top + fh // 2), label, fill=255, font=font)
        big = F.interpolate(frames[channel][:, None].float(), size=(fh, fw), mode="bilinear")
        pixels = (big.clamp(0, 1) * 255).round().to(torch.uint8)[:, 0].numpy()
        for k in range(frames.shape[1]):
            left = label_w + k * (fw + pad)
            canvas.paste(Image.fromarray(pixels[k]), (left, top + cap_h))
            if k < len(captions):
                draw.text((left + 2, top), captions[k], fill=200, font=font)
    return canvas
