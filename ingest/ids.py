"""Deterministic ids (UUIDv5): the same frame or clip always gets the same id.

Every write keyed by these ids is an idempotent upsert, in the catalogs and in the vector store.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from skysearch.timeutil import to_rfc3339

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "skysearch")


def _event_suffix(event: str | None) -> str:
    return f"/event={event}" if event else ""


def frame_id(satellite: str, channel: str, time: datetime, event: str | None = None) -> str:
    """Id of one frame: UUIDv5 of ``frame/{satellite}/{channel}/{rfc3339 time}``, plus
    ``/event={event}`` for products with events (Digital Typhoon's storm-centred crops: two
    storms seen by one satellite at one time are two frames)."""
    text = f"frame/{satellite}/{channel}/{to_rfc3339(time)}{_event_suffix(event)}"
    return str(uuid.uuid5(NAMESPACE, text))


def clip_id(
    satellite: str,
    channels: Sequence[str],
    start: datetime,
    length: int,
    gap_minutes: int,
    event: str | None = None,
) -> str:
    """Id of one clip: UUIDv5 of ``clip/{satellite}/{ch1+ch2}/{start}/{length}x{gap}m``
    (plus ``/event={event}`` as for frames).

    Channel order matters (it is the order of the clip's channel axis).
    """
    chans = "+".join(channels)
    text = f"clip/{satellite}/{chans}/{to_rfc3339(start)}/{length}x{gap_minutes}m"
    text += _event_suffix(event)
    return str(uuid.uuid5(NAMESPACE, text))
