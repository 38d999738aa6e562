"""Frames as an xarray DataArray: the shape satellite users expect (a time coordinate)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pyarrow.compute as pc
from skysearch.ingest.catalog import channels_by_satellite, describe_channels, read_frames
from skysearch.ingest.framestore import FrameStore

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    import xarray as xr


def frames_dataarray(
    workspace: Workspace,
    satellite: str,
    channel: str,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    event: str | None = None,
) -> xr.DataArray:
    """The working frames of one satellite and channel (optionally a time range and an event)
    as a ``(time, y, x)`` uint8 DataArray: coordinates ``time`` (UTC, as numpy datetime64),
    ``frame_id``, ``event``, ``quality`` and ``status`` along time; attributes say what the grey
    values are. Pixels are read from the frame store (memory-mapped) into memory."""
    import xarray as xr

    for name, value in (("satellite", satellite), ("channel", channel), ("event", event)):
        if not isinstance(value, str) and not (name == "event" and value is None):
            raise UsageError(  # a list or None would mix several series on one time axis
                f"{{{name}}} is one name (a string), got {value!r}: one series per array",
                params=[name],
            )
    cols = ["frame_id", "time", "event", "quality", "status", "profile"]
    table = read_frames(workspace, satellite, channel, start, end, columns=cols)
    if event is not None:
        table = table.filter(pc.equal(table["event"], event))
    elif pc.count_distinct(table["time"]).as_py() < table.num_rows:
        events = sorted({e for e in table["event"].to_pylist() if e})
        raise UsageError(  # several storms seen at one time would share the time axis
            f"{satellite} {channel} frames of several events share times "
            f"({', '.join(events[:12])}): pass {{event}} for one series",
            params=["event"],
        )
    if table.num_rows == 0:
        have = channels_by_satellite(read_frames(workspace, columns=["satellite", "channel"]))
        raise NotFoundError(
            f"no {satellite} {channel} frames in the catalog for that selection (time range, "
            f"event); the catalog holds: {describe_channels(have)}"
        )
    pixels = FrameStore(workspace).read_many(table["frame_id"].to_pylist())
    times = np.array([t.replace(tzinfo=None) for t in table["time"].to_pylist()], "M8[ns]")
    quality = table["quality"].to_numpy(zero_copy_only=False)
    return xr.DataArray(
        pixels,
        dims=("time", "y", "x"),
        coords={
            "time": times,
            "frame_id": ("time", table["frame_id"].to_pylist()),
            "event": ("time", [e or "" for e in table["event"].to_pylist()]),
            "quality": ("time", np.nan_to_num(quality.astype(np.float32), nan=0.0)),
            "status": ("time", table["status"].to_pylist()),
        },
        name=f"{satellite}_{channel}",
        attrs={
            "satellite": satellite,
            "channel": channel,
            "profile": table["profile"][0].as_py(),
            "units": "grey level (0 = no data where the profile's decoder masks)",
            "time_zone": "UTC",
        },
    )
