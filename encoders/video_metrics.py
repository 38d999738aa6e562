"""Frame-prediction quality: MSE, PSNR and SSIM over frames in [0, 1].

All functions take tensors shaped (..., H, W) (any leading dims: batch, time, channel) and
compute the metric per frame; ``reduce=False`` keeps the per-frame values (e.g. to report
quality by lead time).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F  # noqa: N812


def _frames(x: torch.Tensor) -> torch.Tensor:
    return x.float().reshape(-1, 1, *x.shape[-2:])


def mse(pred: torch.Tensor, target: torch.Tensor, reduce: bool = True) -> torch.Tensor:
    """Mean squared error per frame (values in [0, 1])."""
    per = (pred.float() - target.float()).pow(2).mean(dim=(-2, -1))
    return per.mean() if reduce else per


def psnr(pred: torch.Tensor, target: torch.Tensor, reduce: bool = True) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per frame (data range 1); mean over frames."""
    per = 10.0 * torch.log10(1.0 / mse(pred, target, reduce=False).clamp_min(1e-10))
    return per.mean() if reduce else per


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(
    pred: torch.Tensor, target: torch.Tensor, reduce: bool = True, window: int = 11
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004: Gaussian window 11, sigma 1.5, K1=.01, K2=.03).

    Computed on the valid region (no padding), per frame, data range 1.
    """
    lead = pred.shape[:-2]
    x, y = _frames(pred), _frames(target)
    w = _gaussian_window(window).to(x.device)
    c1, c2 = 0.01**2, 0.03**2
    mu_x, mu_y = F.conv2d(x, w), F.conv2d(y, w)
    sxx = F.conv2d(x * x, w) - mu_x**2
    syy = F.conv2d(y * y, w) - mu_y**2
    sxy = F.conv2d(x * y, w) - mu_x * mu_y
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    per = s.mean(dim=(-3, -2, -1)).reshape(lead)
    return per.mean() if reduce else per


def frame_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """MSE, PSNR and SSIM averaged over all frames, as plain floats for reports."""
    return {
        "mse": float(mse(pred, target)),
        "psnr": float(psnr(pred, target)),
        "ssim": float(ssim(pred, target)),
    }
