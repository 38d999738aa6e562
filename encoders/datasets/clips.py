"""Training and evaluation data from a workspace: one clip spec, its frames, its ground truth.

A *clip set* is every clip of one (satellite, channels, length, gap) spec from the clip catalog,
or of one (channels, length, gap) spec over several satellites (a cross-satellite model's
training set: ``train frames --satellites a,b``). Its clips overlap, so their frames are
factored into *steps*: the distinct time steps (one frame id per channel) that clips use,
with ``index[clip, l]`` the step of the clip's frame ``l``. Frames and ground-truth
similarities are then computed once per step, not once per clip.

Ground truth: the grid Kolmogorov-Smirnov similarity (``skysearch.ingest.similarity``,
clean mode, N=24, B=20). Clip similarity is by definition the mean over frames (frame i against
frame i) and channels of frame similarities, so the clip matrix is an average of rows and
columns of the step matrix (:func:`clip_similarity_matrix`).
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.clips import no_clips_error, parse_channels, read_clips, spec_keys
from skysearch.ingest.framestore import FrameStore
from skysearch.ingest.similarity import (
    GridSpec,
    cell_sizes,
    similarity_block,
    sketch_frames,
    sketch_geometry,
)

from skysearch.config import Workspace
from skysearch.errors import UsageError


@dataclass
class ClipSet:
    """Clips of one spec, with their frames factored into distinct steps."""

    satellites: list[str]  # the first is the set's primary satellite
    channels: list[str]
    length: int
    gap_minutes: int
    clips: pa.Table  # catalog rows, sorted by start
    steps: list[tuple[str, ...]]  # one frame id per channel, sorted by time
    step_times: np.ndarray  # (S,) datetime64[us] (UTC), time of the first channel's frame
    index: np.ndarray  # (M, L) int: the step of each clip frame
    step_satellite: np.ndarray  # (S,) int: the satellite (position in ``satellites``) of a step

    @property
    def satellite(self) -> str:
        """The primary satellite (the only one of a single-satellite set)."""
        return self.satellites[0]

    @property
    def clip_ids(self) -> list[str]:
        return self.clips["clip_id"].to_pylist()

    @property
    def starts(self) -> np.ndarray:
        """(M,) datetime64[us] clip start times (UTC)."""
        return self.clips["start"].cast(pa.int64()).to_numpy().astype("datetime64[us]")

    @property
    def ends(self) -> np.ndarray:
        return self.clips["end"].cast(pa.int64()).to_numpy().astype("datetime64[us]")

    def subset(self, mask: np.ndarray) -> ClipSet:
        """The clips where ``mask`` is true (steps unchanged)."""
        rows = np.flatnonzero(mask)
        return ClipSet(
            self.satellites,
            self.channels,
            self.length,
            self.gap_minutes,
            self.clips.take(pa.array(rows, pa.int64())),
            self.steps,
            self.step_times,
            self.index[rows],
            self.step_satellite,
        )

    def of(self, satellite: str) -> np.ndarray:
        """bool (M,): the clips of ``satellite``."""
        return pc.equal(self.clips["satellite"], satellite).to_numpy(zero_copy_only=False)

    def series(self) -> np.ndarray:
        """(M,) int: each clip's series, its satellite and event (two storms seen at once are
        two series)."""
        sats, events = self.clips["satellite"].to_pylist(), self.clips["event"].to_pylist()
        keys = list(zip(sats, events, strict=True))
        code = {key: i for i, key in enumerate(dict.fromkeys(keys))}
        return np.array([code[key] for key in keys], dtype=np.int64)

    def step_series(self) -> np.ndarray:
        """(S,) int: each step's series (of the clips using it; -1 for a step none uses)."""
        out = np.full(len(self.steps), -1, dtype=np.int64)
        out[self.index] = np.broadcast_to(self.series()[:, None], self.index.shape)
        return out

    def used_steps(self) -> np.ndarray:
        """Sorted step numbers used by at least one clip."""
        return np.unique(self.index)


def seconds(times: np.ndarray) -> np.ndarray:
    """datetime64 -> float seconds since the epoch."""
    return times.astype("datetime64[us]").astype(np.int64) / 1e6


def to_datetime64(value: datetime) -> np.datetime64:
    return np.datetime64(value.replace(tzinfo=None), "us")


def _pick_spec(table: pa.Table, what: str) -> pa.Table:
    """Among several clip specs, the one with the most clips (ties: the first name)."""
    keys = spec_keys(table)
    counts = Counter(keys)
    best = sorted(counts, key=lambda k: (-counts[k], k))[0]
    mask = np.array([k == best for k in keys])
    if len(counts) > 1:
        from tqdm import tqdm

        tqdm.write(
            f"{what}: {len(counts)} clip specs in the catalog; using {best[0]} {best[1]} "
            f"{best[2]}x{best[3]}m ({counts[best]} clips); choose another by its channels, "
            "length and gap.",
            file=sys.stderr,
        )
    return table.filter(pa.array(mask))


def load_clip_set(
    workspace: Workspace,
    satellite: str | Sequence[str] | None = None,
    channels: str | list[str] | None = None,
    length: int | None = None,
    gap_minutes: int | None = None,
    what: str = "clips",
) -> ClipSet:
    """The clip set of one spec; unset parts of the spec are chosen by clip count.

    ``satellite`` may list several satellites: the first one's spec is chosen as above and
    every other satellite must have clips of that same spec (channels, length, gap)."""
    names = [satellite] if isinstance(satellite, str) or satellite is None else list(satellite)
    param = "satellite" if len(names) == 1 else "satellites"
    if len(set(names)) < len(names):
        twice = ",".join(names)
        raise UsageError(f"{{satellites}} names a satellite twice: {twice}", params=[param])
    first = _load_one(workspace, names[0], channels, length, gap_minutes, what, param)
    if len(names) == 1:
        return first
    spec = (first.channels, first.length, first.gap_minutes)
    rest = [_load_one(workspace, n, *spec, what, param) for n in names[1:]]
    return merge_clip_sets([first, *rest])


def _load_one(
    workspace: Workspace,
    satellite: str | None,
    channels: str | list[str] | None,
    length: int | None,
    gap_minutes: int | None,
    what: str,
    param: str = "satellite",
) -> ClipSet:
    chans = parse_channels(channels)
    table = read_clips(workspace, satellite, chans, length, gap_minutes)
    if table.num_rows == 0:
        raise no_clips_error(workspace, satellite, chans, length, gap_minutes, param)
    table = _pick_spec(table, what)
    first = table.slice(0, 1).to_pylist()[0]
    grids = table["frame_ids"].to_pylist()
    step_of: dict[tuple[str, ...], int] = {}
    raw_index = np.empty((table.num_rows, first["length"]), dtype=np.int64)
    for m, grid in enumerate(grids):
        for step, ids in enumerate(zip(*grid, strict=True)):
            raw_index[m, step] = step_of.setdefault(ids, len(step_of))
    steps = list(step_of)
    frames = read_frames(
        workspace, satellite=first["satellite"], channel=first["channels"][0], columns=None
    ).select(["frame_id", "time"])
    first_ids = pa.array([s[0] for s in steps], pa.string())
    pos = pc.index_in(first_ids, value_set=frames["frame_id"].combine_chunks()).to_numpy(
        zero_copy_only=False
    )
    times = frames["time"].cast(pa.int64()).to_numpy()[pos].astype("datetime64[us]")
    return _time_ordered(
        ClipSet(
            satellites=[first["satellite"]],
            channels=list(first["channels"]),
            length=int(first["length"]),
            gap_minutes=int(first["gap_minutes"]),
            clips=table,
            steps=steps,
            step_times=times,
            index=raw_index,
            step_satellite=np.zeros(len(steps), dtype=np.int64),
        )
    )


def _time_ordered(clip_set: ClipSet) -> ClipSet:
    """The same set with its steps sorted by time and its clips by start."""
    order = np.argsort(clip_set.step_times, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    rows = np.argsort(clip_set.starts, kind="stable")
    return ClipSet(
        clip_set.satellites,
        clip_set.channels,
        clip_set.length,
        clip_set.gap_minutes,
        clip_set.clips.take(pa.array(rows, pa.int64())),
        [clip_set.steps[i] for i in order],
        clip_set.step_times[order],
        rank[clip_set.index[rows]],
        clip_set.step_satellite[order],
    )


def merge_clip_sets(sets: list[ClipSet]) -> ClipSet:
    """One clip set of several single-satellite sets of the same channels, length and gap."""
    offsets = np.cumsum([0] + [len(s.steps) for s in sets])
    return _time_ordered(
        ClipSet(
            satellites=[s.satellite for s in sets],
            channels=sets[0].channels,
            length=sets[0].length,
            gap_minutes=sets[0].gap_minutes,
            clips=pa.concat_tables([s.clips for s in sets]),
            steps=[step for s in sets for step in s.steps],
            step_times=np.concatenate([s.step_times for s in sets]),
            index=np.concatenate([s.index + off for s, off in zip(sets, offsets, strict=False)]),
            step_satellite=np.concatenate([np.full(len(s.steps), i) for i, s in enumerate(sets)]),
        )
    )


def load_step_frames(
    workspace: Workspace, clip_set: ClipSet, steps: np.ndarray, store: FrameStore | None = None
) -> np.ndarray:
    """uint8 frames (len(steps), C, H, W) of the given steps.

    Steps of several satellites whose working sizes differ are resampled (bilinear,
    antialiased) to the size of the first satellite present, so they share one array: the
    training set of a cross-satellite model."""
    store = store or FrameStore(workspace)
    steps = np.asarray(steps, dtype=np.int64)
    sats = clip_set.step_satellite[steps]
    out: np.ndarray | None = None
    for sat in np.unique(sats):
        rows = np.flatnonzero(sats == sat)
        per_channel = [
            store.read_many([clip_set.steps[s][c] for s in steps[rows]])
            for c in range(len(clip_set.channels))
        ]
        part = np.stack(per_channel, axis=1)
        if out is None:
            out = np.empty((len(steps), *part.shape[1:]), np.uint8)
        out[rows] = resample(part, out.shape[2:])
    return out if out is not None else np.empty((0, len(clip_set.channels), 0, 0), np.uint8)


def resample(frames: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """uint8 frames (N, C, H, W) at (height, width) ``size`` (unchanged when they have it)."""
    if tuple(frames.shape[2:]) == tuple(size):
        return frames
    import torch
    import torch.nn.functional as F

    scaled = F.interpolate(
        torch.from_numpy(frames).float(), size=tuple(size), mode="bilinear", antialias=True
    )
    return scaled.round().clamp(0, 255).to(torch.uint8).numpy()


def step_similarity_matrix(frames: np.ndarray, spec: GridSpec | None = None) -> np.ndarray:
    """Ground-truth frame similarity (S, S) of step frames (S, C, H, W), mean over channels."""
    spec = spec or GridSpec()
    n, channels = frames.shape[:2]
    sizes = cell_sizes(sketch_geometry(frames.shape[2:], spec))
    out = np.zeros((n, n), dtype=np.float64)
    for c in range(channels):
        sketches = sketch_frames(np.ascontiguousarray(frames[:, c]), spec)
        out += similarity_block(sketches, sketches, None, sizes)
    return out / channels


def clip_similarity_matrix(
    step_sim: np.ndarray, index_a: np.ndarray, index_b: np.ndarray | None = None
) -> np.ndarray:
    """Ground-truth clip similarity (Ma, Mb): mean over l of ``step_sim[a[l], b[l]]``.

    ``index_*`` hold rows of ``step_sim`` (M, L).
    """
    index_b = index_a if index_b is None else index_b
    if index_a.shape[1] != index_b.shape[1]:
        raise UsageError("clips of different lengths cannot be compared frame by frame")
    total = np.zeros((len(index_a), len(index_b)), dtype=np.float64)
    for step in range(index_a.shape[1]):
        total += step_sim[np.ix_(index_a[:, step], index_b[:, step])]
    return total / index_a.shape[1]


@dataclass
class Split:
    """Time split: train on clips that end before ``holdout_start``, evaluate on the rest.

    With a ``validation_start`` (model selection), training stops earlier: clips ending before
    it train; the clips between it and ``holdout_start`` are the validation slice.
    """

    holdout_start: datetime
    first: datetime
    last: datetime
    train: np.ndarray  # bool (M,): clip ends before the validation slice / the hold-out
    heldout: np.ndarray  # bool (M,): clip starts in the hold-out
    validation_start: datetime | None = None
    #: a cross-satellite set: each satellite's own split (the fields above are the first's)
    parts: dict[str, Split] | None = None

    def to_dict(self) -> dict[str, Any]:
        from skysearch.timeutil import to_rfc3339

        out: dict[str, Any] = {
            "first": to_rfc3339(self.first),
            "holdout_start": to_rfc3339(self.holdout_start),
            "last": to_rfc3339(self.last),
            "train_clips": int(self.train.sum()),
            "heldout_clips": int(self.heldout.sum()),
        }
        if self.validation_start is not None:
            out["validation_start"] = to_rfc3339(self.validation_start)
        if self.parts is not None:
            out["train_clips"] = int(self.train.sum())
            out["heldout_clips"] = int(self.heldout.sum())
            out["splits"] = {sat: part.to_dict() for sat, part in self.parts.items()}
        return out


def _aware(value: np.datetime64) -> datetime:
    from datetime import timezone

    return value.astype("datetime64[us]").astype(datetime).replace(tzinfo=timezone.utc)


def split_by_time(
    clip_set: ClipSet,
    holdout_fraction: float = 0.2,
    holdout_start: datetime | None = None,
    validation_fraction: float = 0.0,
    validation_start: datetime | None = None,
) -> Split:
    """Hold out the most recent ``holdout_fraction`` of the time range (or from a given start).

    ``validation_fraction`` (or ``validation_start``) also keeps the most recent part of the
    remaining training range out of training, for model selection. A cross-satellite set is
    split per satellite (each satellite's own time range, the same fractions): archives of
    different decades would otherwise leave one satellite entirely in training.
    """
    if len(clip_set.satellites) > 1:
        return _per_satellite(
            clip_set,
            lambda part: split_by_time(
                part, holdout_fraction, holdout_start, validation_fraction, validation_start
            ),
        )
    from skysearch.encoders.datasets.triplets import holdout_start as start_of_holdout

    first, last = _aware(clip_set.starts.min()), _aware(clip_set.ends.max())
    start = holdout_start or start_of_holdout(first, last, holdout_fraction)
    if validation_start is None and validation_fraction > 0:
        validation_start = start_of_holdout(first, start, validation_fraction)
    train_end = to_datetime64(validation_start or start)
    split = Split(
        start,
        first,
        last,
        clip_set.ends < train_end,
        clip_set.starts >= to_datetime64(start),
        validation_start,
    )
    if not split.train.any() or not split.heldout.any():
        raise UsageError(
            f"the time split at {start:%Y-%m-%dT%H:%MZ} leaves no training or no held-out clips "
            f"({int(split.train.sum())} / {int(split.heldout.sum())}); ingest a longer period "
            "or use shorter clips"
        )
    return split


def model_split(clip_set: ClipSet, data: dict) -> Split:
    """The split a model was trained with (its config's ``data`` section), per satellite of
    ``clip_set`` (see :func:`model_split_times`)."""
    if len(clip_set.satellites) > 1:
        return _per_satellite(clip_set, lambda part: model_split(part, data))
    first, last = _aware(clip_set.starts.min()), _aware(clip_set.ends.max())
    holdout, validation = model_split_times(data, clip_set.satellite, first, last)
    return split_by_time(clip_set, holdout_start=holdout, validation_start=validation)


def model_split_times(
    data: Mapping[str, Any], satellite: str, first: datetime, last: datetime
) -> tuple[datetime, datetime | None]:
    """(hold-out start, validation start or None) of a model's split (its config's ``data``
    section) for ``satellite``, whose items span ``[first, last]``: as recorded where the model
    was trained on it. A satellite the model was not trained on is split by the model's
    hold-out fraction (default 0.2) of its own time range: every item of it is unseen, this
    keeps the held-out period comparable."""
    from skysearch.encoders.datasets.triplets import holdout_start as start_of_holdout

    from skysearch.timeutil import parse_time

    recorded = data.get("splits", {}).get(satellite)
    if recorded is None and data.get("satellite") == satellite:
        recorded = data
    if recorded is None:
        holdout = start_of_holdout(first, last, data.get("holdout_fraction", 0.2))
        fraction = data.get("validation_fraction", 0.0)
        return holdout, start_of_holdout(first, holdout, fraction) if fraction > 0 else None
    validation = recorded.get("validation_start")
    return parse_time(recorded["holdout_start"]), parse_time(validation) if validation else None


def _per_satellite(clip_set: ClipSet, split_one: Callable[[ClipSet], Split]) -> Split:
    """Split each satellite's clips on their own and join the masks (see :func:`split_by_time`)."""
    train = np.zeros(len(clip_set.index), dtype=bool)
    heldout = np.zeros_like(train)
    parts: dict[str, Split] = {}
    for sat in clip_set.satellites:
        mask = clip_set.of(sat)
        own = clip_set.subset(mask)
        own.satellites = [sat]  # a fresh object: the set's own list is untouched
        parts[sat] = split_one(own)
        train[mask], heldout[mask] = parts[sat].train, parts[sat].heldout
    first = parts[clip_set.satellite]
    return Split(
        first.holdout_start,
        first.first,
        first.last,
        train,
        heldout,
        first.validation_start,
        parts,
    )
