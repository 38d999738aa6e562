"""Clips as moving pictures for the web page: animated WebP loops, and a bounded cache of them.

A clip's frames (one channel, time order) become an animated WebP that loops; the page shows
one per hit. Encoding a 6-frame clip at 256 px takes a few milliseconds, but a results page
asks for 20 at once and "more like this" asks again, so answers are kept in an LRU cache
bounded in bytes (a clip id names fixed pixels: ids are UUIDv5 of what the clip is).
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence

import numpy as np
from PIL import Image

#: Longest side of one animation frame a request may ask for, pixels (the page uses 256).
ANIMATION_MAX = 512
#: Milliseconds each frame stays on screen.
FRAME_MS = 400
#: Bytes of animations the service keeps (a 6-frame 256 px loop is ~20-60 KB).
CACHE_BYTES = 64 * 1024 * 1024


def animated_webp(frames: Sequence[np.ndarray], frame_ms: int = FRAME_MS) -> bytes:
    """Grey uint8 frames (H, W), in time order, as one looping animated WebP."""
    if not frames:
        raise ValueError("an animation needs at least one frame")
    images = [Image.fromarray(np.ascontiguousarray(f, dtype=np.uint8)) for f in frames]
    out = io.BytesIO()
    images[0].save(
        out,
        format="WEBP",
        save_all=True,
        append_images=images[1:],
        duration=frame_ms,
        loop=0,
        quality=80,
        method=0,  # fastest encoder setting: these are small grey previews
    )
    return out.getvalue()


class BytesCache:
    """A thread-safe LRU of byte strings, bounded by their total size; an entry larger than
    the bound is returned but never kept."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable, make: Callable[[], bytes]) -> bytes:
        """The cached value of ``key``, else ``make()`` (run outside the lock), kept."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
                return value
        value = make()
        if len(value) > self.max_bytes:
            return value
        with self._lock:
            if key not in self._items:
                self._items[key] = value
                self.size += len(value)
            while self.size > self.max_bytes:
                _, dropped = self._items.popitem(last=False)
                self.size -= len(dropped)
        return value
