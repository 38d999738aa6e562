"""What the text-image test modules share: the bundled RSSCN7 subset, a tiny open_clip
architecture, one torch thread for training runs, and the JSON a command printed last."""

from __future__ import annotations

import json
from contextlib import contextmanager

import torch
from conftest import SAMPLE_DATA

MINI = SAMPLE_DATA / "rsscn7-mini"

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@contextmanager
def one_torch_thread():
    """Train on one thread (the same sums in every run), and give the worker's later tests
    their thread count back."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def last_json(res) -> dict:
    return json.loads(res.stdout.strip().splitlines()[-1])
