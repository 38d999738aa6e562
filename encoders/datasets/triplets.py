"""Temporal triplets (SkySearch's self-supervision) and the time-based hold-out split.

A positive is another item within ``window`` of the anchor (the sky changes little in a few
hours) of the same series (two storms seen at once are two: the other one's frame at the same
hour is not "the same sky"); a negative is further than ``neg_factor * window`` away. Each
anchor gets exactly one positive and one negative, so positives and negatives are equally
many.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np

from skysearch.errors import UsageError


def sample_triplets(
    times_s: np.ndarray,
    window_s: float,
    neg_factor: float,
    rng: np.random.Generator,
    series: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One (anchor, positive, negative) index triple per eligible item, in random order.

    ``times_s``: item times in seconds (any origin); ``series``: each item's series (satellite
    and event), if more than one. An item is an eligible anchor when it has at least one
    positive and one negative. Returns three equally long int arrays.
    """
    times_s = np.asarray(times_s, dtype=np.float64)
    dt = np.abs(times_s[:, None] - times_s[None, :])
    positive = (dt <= window_s) & ~np.eye(len(times_s), dtype=bool)
    if series is not None:
        positive &= series[:, None] == series[None, :]
    negative = dt > neg_factor * window_s
    anchors = np.flatnonzero(positive.any(1) & negative.any(1))
    anchors = rng.permutation(anchors)
    pos = np.array([rng.choice(np.flatnonzero(positive[a])) for a in anchors], dtype=np.int64)
    neg = np.array([rng.choice(np.flatnonzero(negative[a])) for a in anchors], dtype=np.int64)
    return anchors.astype(np.int64), pos, neg


def holdout_start(first: datetime, last: datetime, fraction: float) -> datetime:
    """The start of the held-out period: the most recent ``fraction`` of ``[first, last]``."""
    if not 0.0 < fraction < 1.0:
        raise UsageError(f"a held-out fraction must be between 0 and 1 (exclusive), got {fraction}")
    span = (last - first).total_seconds()
    return first + timedelta(seconds=span * (1.0 - fraction))
