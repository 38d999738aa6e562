"""Where models run: the one resolution of the ``device`` setting to a torch device.

The setting comes from ``skysearch.config.load_settings`` (flag > ``SKYSEARCH_DEVICE`` >
``skysearch.toml`` > ``auto``); every command that runs a model resolves it here, so a bad value
fails the same way everywhere, and only where a model runs.
"""

from __future__ import annotations

import re

import torch

from skysearch.errors import UsageError

_VALID = re.compile(r"auto|cpu|cuda(:\d+)?")


def resolve_device(requested: str | None) -> torch.device:
    """``auto`` (or unset): CUDA when available, else CPU; ``cpu``; ``cuda`` / ``cuda:N``."""
    name = (requested or "auto").strip().lower()
    if not _VALID.fullmatch(name):
        raise UsageError(
            f"{{device}} is {requested!r}, not one of auto, cpu, cuda, cuda:N",
            params=["device"],
            hint="set it by the flag, SKYSEARCH_DEVICE or the device key of skysearch.toml",
        )
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(
            f"{{device}} is {requested!r} but no CUDA GPU is available",
            params=["device"],
            hint="use cpu or auto",
        )
    return torch.device(name)
