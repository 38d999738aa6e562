"""The video predictor's data: (clip, following clip) pairs of one clip spec, split by time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import torch
from skysearch.encoders.datasets.clips import (
    ClipSet,
    load_clip_set,
    load_step_frames,
    split_by_time,
    to_datetime64,
)
from skysearch.encoders.models.predictor import to_working

from skysearch.config import Workspace
from skysearch.errors import UsageError


@dataclass
class PredictorData:
    """(clip, following clip) pairs of one clip spec, frames at the predictor resolution.

    ``steps``: uint8 (S, C, h, w) frames of every step of the clip set; ``index``/``next_index``
    (N, L) step rows of each pair's input clip and its following clip (the clip starting
    ``L * gap`` after it, i.e. the L steps after the input's last frame).
    """

    clip_set: ClipSet
    steps: torch.Tensor
    rows: np.ndarray  # (N,) clip-set row of each pair's input clip
    next_rows: np.ndarray  # (N,) clip-set row of its following clip
    holdout_start: datetime

    @property
    def starts(self) -> np.ndarray:
        return self.clip_set.starts[self.rows]

    def tensors(self, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (n, L, C, h, w) inputs and targets of the selected pairs."""
        index = torch.as_tensor(self.clip_set.index[self.rows[mask]])
        next_index = torch.as_tensor(self.clip_set.index[self.next_rows[mask]])
        return self.steps[index], self.steps[next_index]

    @property
    def train_mask(self) -> np.ndarray:
        """Pairs entirely before the hold-out start (input and following clip)."""
        ends = self.clip_set.ends[self.next_rows]
        return ends < to_datetime64(self.holdout_start)

    def validation_split(self, fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(fit, validation) masks: the latest ``fraction`` of the training pairs validate;
        fit pairs end before the first validation pair starts (no shared frames)."""
        train = np.flatnonzero(self.train_mask)
        n_val = int(round(len(train) * fraction))
        fit, val = self.train_mask.copy(), np.zeros_like(self.train_mask)
        if n_val == 0 or n_val >= len(train):
            return fit, val
        first_val = self.starts[train[-n_val]]
        val[train[-n_val:]] = True
        fit &= self.clip_set.ends[self.next_rows] < first_val
        return fit, val

    @property
    def test_mask(self) -> np.ndarray:
        """Pairs whose input clip starts in the hold-out period."""
        return self.starts >= to_datetime64(self.holdout_start)


def following_rows(clip_set: ClipSet) -> np.ndarray:
    """For each clip, the row of the clip of the same satellite and event (two storms seen at
    once are two series) starting ``length * gap`` minutes later, or -1."""
    starts = clip_set.starts.astype(np.int64)
    clips = clip_set.clips
    series = list(zip(clips["satellite"].to_pylist(), clips["event"].to_pylist(), strict=True))
    where = {(key, int(t)): i for i, (key, t) in enumerate(zip(series, starts, strict=True))}
    shift = np.timedelta64(clip_set.length * clip_set.gap_minutes, "m").astype("timedelta64[us]")
    later = (clip_set.starts + shift).astype(np.int64)
    return np.array(
        [where.get((key, int(t)), -1) for key, t in zip(series, later, strict=True)], np.int64
    )


def load_predictor_data(
    workspace: Workspace,
    satellite: str | None = None,
    channels: str | list[str] | None = None,
    length: int | None = None,
    gap_minutes: int | None = None,
    height: int = 64,
    width: int = 96,
    holdout: float = 0.2,
) -> PredictorData:
    """Pairs of one clip spec, frames resized to (height, width); hold-out = latest ``holdout``."""
    clip_set = load_clip_set(workspace, satellite, channels, length, gap_minutes, what="predictor")
    nxt = following_rows(clip_set)
    rows = np.flatnonzero(nxt >= 0)
    if len(rows) == 0:
        raise UsageError(
            f"no clip of {clip_set.length}x{clip_set.gap_minutes}m has a following clip (the "
            "predictor learns a clip -> the clip after it): ingest a longer stretch of time"
            + (
                f", or build shorter clips (skysearch clips --length {clip_set.length // 2} "
                f"--gap {clip_set.gap_minutes})"
                if clip_set.length > 1
                else ""
            )
        )
    used = np.arange(len(clip_set.steps))
    frames = torch.as_tensor(load_step_frames(workspace, clip_set, used))
    steps = (to_working(frames, height, width) * 255.0).round().to(torch.uint8)
    # The same time split as the encoders (``eval clips``), so the hold-out starts agree.
    cut = split_by_time(clip_set, holdout).holdout_start
    return PredictorData(clip_set, steps, rows, nxt[rows], cut)
