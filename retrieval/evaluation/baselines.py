"""Untrained clip-search baselines: down-sampled raw pixels and ImageNet EfficientNet-Lite0.

Both turn every frame into a vector and a clip into the concatenation of its frames' vectors
(frame order kept, as the ground truth compares frame i with frame i); clips are then compared
by Euclidean distance, like the trained embeddings.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skysearch.encoders.factory import embed_in_batches
from skysearch.encoders.models.frame import to_float

#: Raw-pixel baseline resolution: the ground truth's own 24 x 24 grid (cell means).
RAW_PIXELS_GRID = (24, 24)


def raw_pixel_features(frames: np.ndarray, size: tuple[int, int] = RAW_PIXELS_GRID) -> np.ndarray:
    """Area-averaged frames (S, C, H, W) uint8 -> (S, C * h * w) float32 in [0, 1]."""
    pooled = F.adaptive_avg_pool2d(to_float(torch.as_tensor(frames)), size)
    return pooled.flatten(1).numpy().astype(np.float32)


def imagenet_features(
    frames: np.ndarray, device: torch.device | None = None, batch_size: int = 16
) -> np.ndarray:
    """Pooled ImageNet EfficientNet-Lite0 features per frame, L2-normalised: (S, 1280 * C)."""
    from skysearch.encoders.models.frame import FrameEncoderConfig, build_frame_encoder

    channels = [str(c) for c in range(frames.shape[1])]
    encoder = build_frame_encoder(
        FrameEncoderConfig(backbone="efficientnet-lite0", channels=channels)
    ).eval()
    device = device or torch.device("cpu")
    encoder.to(device)
    tensor = to_float(torch.as_tensor(frames))
    feats = embed_in_batches(encoder.net.features, tensor, batch_size, device)
    return F.normalize(feats, dim=-1).numpy().astype(np.float32)


def clip_vectors(step_features: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Per-step features (S, D) and clip step indices (M, L) -> clip vectors (M, L * D)."""
    return step_features[index].reshape(len(index), -1)
