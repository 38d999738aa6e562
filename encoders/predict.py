"""``skysearch predict``: the video predictor applied to one catalog clip, drawn as a strip."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from skysearch.encoders.factory import load_predictor_model
from skysearch.encoders.metrics import frame_metrics
from skysearch.encoders.models.predictor import (
    predict,
    predicted_offsets,
    render_strip,
    to_working,
)
from skysearch.ingest.clip_specs import spec_label
from skysearch.ingest.clips import clip_frames, read_clips
from skysearch.ingest.framestore import FrameStore
from skysearch.ingest.simultaneous import pick

from skysearch.atomic import image_format, save_image
from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError
from skysearch.timeutil import parse_time, to_rfc3339


def _clip_of_spec(
    workspace: Workspace,
    ref: str,
    satellite: str,
    channels: list[str],
    length: int,
    gap: int,
    event: str | None,
) -> dict[str, Any]:
    """A catalog clip of this spec by id, or by start time (nearest within half a gap; of
    ``event`` where two storms' clips start then)."""
    table = read_clips(workspace, satellite, channels, length, gap)
    by_id = [row for row in table.to_pylist() if row["clip_id"] == ref]
    if by_id:
        return by_id[0]
    try:
        when = parse_time(ref)
    except (UsageError, ValueError):
        _refuse_other_spec(workspace, ref, satellite, channels, length, gap)
        raise NotFoundError(
            f"{ref!r} is neither a clip id nor a time of a {length}x{gap}m clip: pass a start "
            "time, or the id of such a clip (`skysearch search clip --json` lists clip ids)"
        ) from None
    near = [r for r in table.to_pylist() if abs(r["start"] - when) <= timedelta(minutes=gap / 2)]
    if event is not None:
        mine = [r for r in near if r["event"] == event]
        if not mine:
            others = sorted({r["event"] for r in near if r["event"] is not None})
            there = f" (clips of {', '.join(others)} start then)" if others else ""
            if near and not others:
                there = " (the clips starting then belong to no event: drop {event})"
            raise NotFoundError(
                f"no clip of event {event} starts near {to_rfc3339(when)}{there}",
                params=["event"] if "{event}" in there else [],
            )
        near = mine
    if near:
        return pick(near, when, "start", "clip_id", "clip", {})
    raise NotFoundError(
        f"no {spec_label(channels, length, gap)} clip of {satellite} starts near "
        f"{to_rfc3339(when)}: build clips (skysearch clips --length {length} --gap {gap})"
    )


def _refuse_other_spec(
    workspace: Workspace, ref: str, satellite: str, channels: list[str], length: int, gap: int
) -> None:
    """A clip id of the catalog whose spec is not the predictor's: say so (it is not unknown)."""
    columns = ["clip_id", "satellite", "channels", "length", "gap_minutes"]
    rows = [r for r in read_clips(workspace, columns=columns).to_pylist() if r["clip_id"] == ref]
    if rows:
        c = rows[0]
        raise UsageError(
            f"clip {ref} has the spec {spec_label(c['channels'], c['length'], c['gap_minutes'])}"
            f" of {c['satellite']}; this predictor takes {spec_label(channels, length, gap)} "
            f"clips of {satellite}",
            hint="pass the start time or id of such a clip, or train a predictor for that "
            f"spec (skysearch train predictor --length {c['length']} --gap {c['gap_minutes']} "
            f"--channels {','.join(c['channels'])} --satellite {c['satellite']})",
        )


def predict_strip(
    workspace: Workspace,
    ref: str,
    out: Path,
    model_id: str | None = None,
    device: str | None = "cpu",
    event: str | None = None,
) -> dict[str, Any]:
    """Predict the clip after ``ref`` and write input / predicted / true rows as one image;
    the true rows are the same storm's (``event``: which one, where two start at ``ref``)."""
    image_format(out, "prediction strip", "L")  # a name it cannot write: said before the run
    model, info, record = load_predictor_model(workspace, model_id, device)
    sat, chans = info["satellite"], list(info["channels"])
    length, gap = int(info["length"]), int(info["gap_minutes"])
    clip = _clip_of_spec(workspace, ref, sat, chans, length, gap, event)
    store = FrameStore(workspace)
    frames = torch.as_tensor(clip_frames(workspace, clip, store))
    cfg = model.config
    pred = predict(model, frames)
    x = to_working(frames, cfg.height, cfg.width)
    step = timedelta(minutes=gap)
    in_caps = [f"{clip['start'] + k * step:%m-%d %H:%M}" for k in range(length)]
    last = clip["start"] + (length - 1) * step
    out_caps = [
        f"+{m // 60}h{m % 60:02d} {last + timedelta(minutes=m):%H:%M}"
        for m in predicted_offsets(length, gap)
    ]
    rows = [("input", x, in_caps), ("predicted", pred, out_caps)]
    result: dict[str, Any] = {
        "clip_id": clip["clip_id"],
        "start": to_rfc3339(clip["start"]),
        "event": clip.get("event"),
        "model_id": record.model_id,
        "out": str(out),
    }
    following = [
        r
        for r in read_clips(workspace, sat, chans, length, gap).to_pylist()
        if r["start"] == clip["start"] + length * step and r["event"] == clip.get("event")
    ]
    if following:
        truth = to_working(
            torch.as_tensor(clip_frames(workspace, following[0], store)), cfg.height, cfg.width
        )
        rows.append(
            ("true", truth, [f"{following[0]['start'] + k * step:%H:%M}" for k in range(length)])
        )
        rows.append(("persistence", x[:, -1:].expand_as(truth), []))
        result["metrics"] = frame_metrics(pred, truth)
        result["persistence_metrics"] = frame_metrics(x[:, -1:].expand_as(truth), truth)
    save_image(render_strip(rows), out, "prediction strip")
    return result
