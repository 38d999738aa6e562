"""Frames with physically impossible values: flag, skip or repair (a profile's ``bad_frames``).

A scientific decoder masks the rows of a frame that hold impossible values (grey 0, "no data")
and records the fraction of bad pixels as the frame's ``quality``; such a frame is committed
with status ``suspect``. Then, by the profile's ``bad_frames``:

- ``skip``: the frame is not stored (skipped, with the fraction, in the ingest report). Simple,
  but on Digital Typhoon's 198702 it drops 65 of 156 frames and breaks most 12-frame clips.
- ``keep``: stored as ``suspect``, the masked rows left black.
- ``repair`` (the default): after the ingest commits, each suspect frame's masked pixels are
  filled from the nearest clean frames (status ``ok``) of the same series (satellite, channel,
  event) before and after it, at most ``REACH_CADENCES`` cadences away, linearly in time (one
  side only when the other has none), as the Digital Typhoon tools' "corrected" set does. The
  repaired frame is appended to the frame store as a new row and its catalog row points to it
  with status ``repaired`` (its ``quality`` still says how much was filled). A frame with no
  clean neighbour in reach stays ``suspect``.

A frame with more than ``MAX_BAD_FRACTION`` bad pixels is skipped under every policy.

Only clean frames are used as neighbours, so the result does not depend on the order frames are
repaired in, and a re-run repairs nothing twice. Crash safety is the ingest's: repaired pixels
are fsynced before the catalog rows that reference them are replaced (atomically, per
partition); a kill in between leaves an unreferenced tail the next ingest cuts off.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from skysearch.ingest.catalog import read_frames, update_frames
from skysearch.ingest.decode import Decoded
from skysearch.ingest.framestore import FrameStore, StoreWriter
from skysearch.ingest.profiles import Profile
from skysearch.ingest.readers import NODATA

from skysearch.config import Workspace

REACH_CADENCES = 6  # how far (in the product's cadences) a clean neighbour may be
#: Frames with more bad pixels than this are skipped whatever the policy: a repair would make
#: up most of the frame. Digital Typhoon's 198702 frames reach 19% (29% of rows masked).
MAX_BAD_FRACTION = 0.5


def unusable(result: Decoded) -> bool:
    """Too little valid data to keep or repair (an unwritten field, a lost chunk, wrong units)."""
    return result.quality > MAX_BAD_FRACTION


def reason(result: Decoded) -> str:
    """Why a frame with bad pixels was left out (``bad_frames: skip``, or ``unusable``)."""
    why = f"{result.quality:.1%} of the pixels hold physically impossible values or no data"
    return why + (": too few valid pixels to keep or repair" if unusable(result) else "")


@dataclass
class RepairReport:
    suspect: int = 0  # suspect frames of repairable profiles looked at
    repaired: int = 0


def _fill(frame: np.ndarray, before: np.ndarray | None, after: np.ndarray | None, w: float):
    """``frame``'s no-data pixels from its neighbours: ``(1 - w) * before + w * after``."""
    holes = frame == NODATA
    if before is not None and after is not None:
        source = (1.0 - w) * before.astype(np.float32) + w * after.astype(np.float32)
    else:
        source = (before if before is not None else after).astype(np.float32)
    out = frame.copy()
    out[holes] = np.clip(np.rint(source[holes]), 1, 255).astype(np.uint8)
    return out


def repair_frames(
    workspace: Workspace, writer: StoreWriter, profiles: dict[str, Profile]
) -> RepairReport:
    """Repair every suspect frame of a ``repair`` profile that has a clean neighbour in reach.
    Run by the ingest, under its writer, after everything decoded is committed."""
    report = RepairReport()
    repairable = {
        n
        for n, p in profiles.items()
        if p.decoder.kind != "image" and p.decoder.bad_frames == "repair"
    }
    if not repairable:  # images are never flagged: no catalog read for them
        return report
    cols = ["frame_id", "satellite", "channel", "event", "time", "year", "status", "profile"]
    cols.append("store_row")
    table = read_frames(workspace, columns=cols)
    suspect = pc.and_(
        pc.equal(table["status"], "suspect"),
        pc.is_in(table["profile"], pa.array(sorted(repairable), pa.string())),
    )
    if not pc.any(suspect).as_py():
        return report
    rows = table.to_pylist()
    series: dict[tuple, list[dict]] = {}
    for row in rows:
        series.setdefault((row["satellite"], row["channel"], row["event"]), []).append(row)
    store = FrameStore(workspace)
    moved: dict[str, int] = {}  # frame id -> its repaired frame's store row
    for frames in series.values():
        clean = [r for r in frames if r["status"] == "ok"]
        clean_times = np.array([r["time"].timestamp() for r in clean])
        for row in frames:
            if row["status"] != "suspect" or row["profile"] not in repairable:
                continue
            report.suspect += 1
            reach = timedelta(minutes=REACH_CADENCES * profiles[row["profile"]].cadence_minutes)
            t = row["time"].timestamp()
            at = int(np.searchsorted(clean_times, t))
            before = clean[at - 1] if at > 0 else None
            after = clean[at] if at < len(clean) else None
            if before is not None and t - before["time"].timestamp() > reach.total_seconds():
                before = None
            if after is not None and after["time"].timestamp() - t > reach.total_seconds():
                after = None
            if before is None and after is None:
                continue
            w = 0.0
            if before is not None and after is not None:
                span = after["time"].timestamp() - before["time"].timestamp()
                w = (t - before["time"].timestamp()) / span
            fixed = _fill(
                store.read(row["frame_id"]),
                store.read(before["frame_id"]) if before else None,
                store.read(after["frame_id"]) if after else None,
                w,
            )
            moved[row["frame_id"]] = writer.append(
                row["satellite"], row["channel"], row["year"], fixed
            )
            report.repaired += 1
    if moved:
        writer.sync()
        update_frames(
            workspace, {fid: {"store_row": row, "status": "repaired"} for fid, row in moved.items()}
        )
    return report


def mark_suspect(workspace: Workspace, frame_ids: list[str]) -> None:
    """Flag repaired frames whose pixels were decoded again from their sources (the workspace
    repair): they hold their masked rows again, and the next repair pass fills them."""
    update_frames(workspace, {fid: {"status": "suspect"} for fid in frame_ids})
