"""Quality metrics the trainers validate with and the evaluations report.

- Frame prediction: MSE, PSNR and SSIM over frames in [0, 1]. They take tensors shaped
  (..., H, W) (any leading dims: batch, time, channel) and compute the metric per frame;
  ``reduce=False`` keeps the per-frame values (e.g. to report quality by lead time).
- Text-image: zero-shot top-1 against class prompts, text-to-image recall@k.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from skysearch.encoders.datasets.captions import PROMPTS, display_name
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


KS = (1, 5, 10)


def class_text_embeddings(
    tim: Any,
    classes: Sequence[str],
    table: dict[str, list[str]] | None = None,
    encode: Callable[[list[str]], np.ndarray] | None = None,
) -> np.ndarray:
    """One unit vector per class folder: the mean of its prompt embeddings (``encode``: texts
    -> unit embeddings, default ``tim.encode_texts``; training passes a memoised one)."""
    encode = encode or tim.encode_texts
    out = []
    for label in classes:
        emb = encode([p.format(display_name(label, table)) for p in PROMPTS]).mean(0)
        out.append(emb / np.linalg.norm(emb))
    return np.stack(out)


def zero_shot(
    tim: Any,
    image_embs: np.ndarray,
    labels: Sequence[str],
    table: dict[str, list[str]] | None = None,
    encode: Callable[[list[str]], np.ndarray] | None = None,
) -> tuple[float, dict[str, float]]:
    """Top-1 over all images and per class (each image against every class in ``labels``)."""
    classes = sorted(set(labels))
    pred = (image_embs @ class_text_embeddings(tim, classes, table, encode).T).argmax(1)
    truth = np.array([classes.index(lbl) for lbl in labels])
    hit = pred == truth
    per_class = {c: float(hit[truth == i].mean()) for i, c in enumerate(classes)}
    return float(hit.mean()), per_class


def text_to_image_recall(
    tim: Any,
    image_embs: np.ndarray,
    captions: Sequence[str],
    labels: Sequence[str],
    ks: Sequence[int] = KS,
) -> dict[str, float]:
    """Class-level R@k (``r1``...) and exact-pair R@k (``pair_r1``...) for caption queries."""
    sims = tim.encode_texts(list(captions)) @ image_embs.T
    order = np.argsort(-sims, axis=1, kind="stable")
    labels_arr = np.asarray(labels)
    same_class = labels_arr[order] == labels_arr[:, None]
    own = order == np.arange(len(captions))[:, None]
    out = {}
    for k in ks:
        out[f"r{k}"] = float(same_class[:, :k].any(1).mean())
    for k in ks:
        out[f"pair_r{k}"] = float(own[:, :k].any(1).mean())
    return out
