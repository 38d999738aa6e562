"""``skysearch eval analogs``: were the past clips a method retrieves storms of alike strength?

The first measure not defined by our own grid metric: the JMA best track
(:mod:`skysearch.ingest.tracks`) at each clip's last frame, its "now" (the nearest track row
within 30 min): central pressure, JMA class, maximum wind.

Protocol, on the clips of the clip model's spec and its split, of one satellite (default: the
model's first; as ``eval clips``):

- **Queries**: the held-out clips (``split="validation"``: the validation slice) that have a
  best-track row.
- **Candidates**: clips with a best-track row that start more than ``exclude_hours`` (12 h)
  from the query's start, in two settings reported apart: ``same_event`` (the query's own
  storm: time proximity makes this easy) and ``other_events`` (other storms only: the honest
  test). A query counts in a setting when it has at least ``k`` candidates there; a setting
  with no such query is ``{"n/a": reason}``.
- **Scores** of a method's top ``k`` (default 5) candidates, averaged over queries:
  ``pressure_mae_hpa`` (mean |pressure difference|), ``class_agreement_at_k`` (share with the
  query's class), ``wind_mae_kt`` (mean |wind difference|; JMA writes 0 kt where it estimated
  no wind, as for the tropical depressions of older years).
- **Methods**, same queries and candidates: the trained clip model; raw pixels (64 x 64 cell
  means per frame, concatenated over the clip); ImageNet EfficientNet-Lite0 features; the grid
  metric itself (candidates ranked by the ground truth of ``eval clips``: KS grid similarity,
  clean mode, N=24, B=20); random, as its exact expected value (the mean over all the query's
  candidates, no seed).
- **Bounds**: ``best_possible``, per metric the ``k`` candidates that score best on that very
  metric (an oracle that reads the track): how much room the queries and candidates leave. A
  method at the bound cannot be beaten on that split, only matched.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from skysearch.encoders.datasets.clips import clip_similarity_matrix, step_similarity_matrix
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.tracks import track_arrays
from skysearch.retrieval.evaluation.clips import (
    ClipData,
    EvalOptions,
    baseline_vectors,
    candidate_mask,
    load_clip_data,
)
from skysearch.retrieval.evaluation.ranking import distance_matrix

from skysearch.config import Workspace
from skysearch.errors import NotFoundError

SETTINGS = ("same_event", "other_events")
METRICS = ("pressure_mae_hpa", "class_agreement_at_k", "wind_mae_kt")
RAW_GRID = (64, 64)
NO_TRACK = "no clip of this spec has a best track: load one with `skysearch ingest-track`"
ONE_EVENT = "needs clips of at least 2 events with a best track"


def storm_scores(
    tracks: dict[str, np.ndarray], query: int, picked: np.ndarray
) -> tuple[float, float, float]:
    """(mean |pressure diff|, class agreement, mean |wind diff|) of ``picked`` clips."""
    pressure = np.abs(tracks["pressure_hpa"][picked] - tracks["pressure_hpa"][query]).mean()
    agree = (tracks["track_class"][picked] == tracks["track_class"][query]).mean()
    wind = np.abs(tracks["wind_kt"][picked] - tracks["wind_kt"][query]).mean()
    return float(pressure), float(agree), float(wind)


def best_possible(
    tracks: dict[str, np.ndarray], query: int, candidates: np.ndarray, k: int
) -> tuple[float, float, float]:
    """The best top-``k`` scores any ranking could reach, each metric on its own."""
    pressure = np.abs(tracks["pressure_hpa"][candidates] - tracks["pressure_hpa"][query])
    same = np.count_nonzero(tracks["track_class"][candidates] == tracks["track_class"][query])
    wind = np.abs(tracks["wind_kt"][candidates] - tracks["wind_kt"][query])
    return (
        float(np.sort(pressure)[:k].mean()),
        min(same, k) / min(k, len(candidates)),
        float(np.sort(wind)[:k].mean()),
    )


def analog_scores(
    distances: dict[str, np.ndarray],
    tracks: dict[str, np.ndarray],
    queries: np.ndarray,
    candidates: np.ndarray,
    k: int,
) -> dict[str, dict[str, float]]:
    """``{metric: {method: mean over queries}}`` of each method's top ``k`` candidates
    (``distances[method]``: (M, M), smaller = more alike; ``candidates[q]``: a mask over M),
    ``random``'s expected value and the ``best_possible`` bound."""
    per_method: dict[str, list[tuple[float, float, float]]] = {}
    for q, mask in zip(queries, candidates, strict=True):
        cand = np.flatnonzero(mask)
        for name, dist in distances.items():
            top = cand[np.argsort(dist[q, cand], kind="stable")[:k]]
            per_method.setdefault(name, []).append(storm_scores(tracks, q, top))
        per_method.setdefault("random", []).append(storm_scores(tracks, q, cand))
        per_method.setdefault("best_possible", []).append(best_possible(tracks, q, cand, k))
    means = {name: np.mean(np.array(rows), axis=0) for name, rows in per_method.items()}
    return {
        metric: {name: float(values[i]) for name, values in means.items()}
        for i, metric in enumerate(METRICS)
    }


def _settings(
    data: ClipData, tracked: np.ndarray, events: np.ndarray, options: EvalOptions
) -> dict[str, tuple[np.ndarray, np.ndarray] | str]:
    """Per setting: (queries, candidate masks), or the reason it has none."""
    queries = np.flatnonzero(data.split.heldout & tracked)
    if not tracked.any():
        return dict.fromkeys(SETTINGS, NO_TRACK)
    if len(queries) == 0:
        return dict.fromkeys(SETTINGS, "no held-out clip has a best track")
    base = candidate_mask(data.clip_set.starts, queries, options.exclude_hours) & tracked
    same = events[queries][:, None] == events[None, :]
    out: dict[str, tuple[np.ndarray, np.ndarray] | str] = {}
    window = f"outside +-{options.exclude_hours:g} h"
    for setting, mask in (("same_event", base & same), ("other_events", base & ~same)):
        keep = mask.sum(1) >= options.k
        if setting == "other_events" and len(set(events[tracked])) < 2:
            out[setting] = ONE_EVENT
        elif not keep.any():
            where = "of its own event" if setting == "same_event" else "of other events"
            out[setting] = f"no held-out clip has {options.k} candidates {where} {window}"
        else:
            out[setting] = (queries[keep], mask[keep])
    return out


def _repaired_frames(workspace: Workspace, data: ClipData) -> int:
    """How many of the clips' frames were repaired at ingest (bad rows filled in)."""
    used = [fid for s in data.clip_set.used_steps() for fid in data.clip_set.steps[s]]
    frames = read_frames(workspace, data.clip_set.satellite, columns=["frame_id", "status"])
    mine = pc.is_in(frames["frame_id"], value_set=pa.array(used, pa.string()))
    return int(pc.sum(pc.and_(mine, pc.equal(frames["status"], "repaired"))).as_py() or 0)


def evaluate_analogs(
    workspace: Workspace, model_id: str | None = None, options: EvalOptions | None = None
) -> dict[str, Any]:
    """Score analog search by the best track (see the module doc); the JSON-ready result."""
    options = options or EvalOptions(k=5)
    data = load_clip_data(workspace, model_id, options)
    clips = data.clip_set.clips
    events = np.array([e or "" for e in clips["event"].to_pylist()], dtype=object)
    now = data.clip_set.step_times[data.clip_set.index[:, -1]]  # each clip's last frame
    tracks = track_arrays(workspace, clips["event"].to_pylist(), list(now))
    tracked = ~np.isnan(tracks["pressure_hpa"])
    if options.satellite and not tracked.any():
        raise NotFoundError(
            f"no clip of {{satellite}} {options.satellite} has a best track: load one with "
            "`skysearch ingest-track`",
            params=["satellite"],
        )
    settings = _settings(data, tracked, events, options)
    result: dict[str, Any] = {"model_id": data.record.model_id}
    computable = {s: v for s, v in settings.items() if not isinstance(v, str)}
    distances: dict[str, np.ndarray] = {}
    if computable:
        truth = clip_similarity_matrix(step_similarity_matrix(data.frames), data.clip_set.index)
        distances["trained"] = distance_matrix(data.trained_vectors())
        if options.baselines:
            baselines = baseline_vectors(
                data.frames, data.clip_set.index, data.device, options.seed, RAW_GRID
            )
            del baselines["random"]  # scored by its expected value instead
            distances.update({name: distance_matrix(v) for name, v in baselines.items()})
        distances["grid_metric"] = -truth
    for setting, value in settings.items():
        if isinstance(value, str):
            result[setting] = {"n/a": value}
            continue
        queries, candidates = value
        result[setting] = {
            **analog_scores(distances, tracks, queries, candidates, options.k),
            "queries": int(len(queries)),
            "mean_candidates": float(candidates.sum(1).mean()),
        }
    result["protocol"] = {
        **data.protocol(),
        "events_with_track": sorted(set(events[tracked])),
        "clips_with_track": int(tracked.sum()),
        "repaired_frames": _repaired_frames(workspace, data),
        "exclude_hours": options.exclude_hours,
        "k": options.k,
        "split": options.split,
        "ground_truth": "JMA best track at each clip's last frame (nearest row within 30 min)",
        "grid_metric": "candidates ranked by grid KS similarity, clean mode, N=24, B=20",
        "random": "expected value of a random top k: the mean over the query's candidates",
        "best_possible": "per metric, the k candidates best on that metric (reads the track)",
    }
    return result
