"""Deterministic ids (UUIDv5): the same frame or clip always gets the same id.

Every write keyed by these ids is an idempotent upsert, in the catalogs and in the vector store.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

from skysearch.timeutil import to_rfc3339

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "skysearch")


def frame_id(satellite: str, channel: str, time: datetime) -> str:
    """Id of one frame: UUIDv5 of ``frame/{satellite}/{channel}/{rfc3339 time}``."""
    return str(uuid.uuid5(NAMESPACE, f"frame/{satellite}/{channel}/{to_rfc3339(time)}"))


def clip_id(
    satellite: str, channels: Sequence[str], start: datetime, length: int, gap_minutes: int
) -> str:
    """Id of one clip: UUIDv5 of ``clip/{satellite}/{ch1+ch2}/{start}/{length}x{gap}m``.

    Channel order matters (it is the order of the clip's channel axis).
    """
    chans = "+".join(channels)
    text = f"clip/{satellite}/{chans}/{to_rfc3339(start)}/{length}x{gap_minutes}m"
    return str(uuid.uuid5(NAMESPACE, text))
