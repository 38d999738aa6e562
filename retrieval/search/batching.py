"""Micro-batching of query embeddings: concurrent searches share one forward pass.

A text query's cost is almost all the text tower's forward pass, and most of that is fixed
per call (MiniLM on one core: one text ~11 ms, four ~19 ms). :class:`MicroBatcher` lets
threads that embed at the same time (the service's request threads) hand their inputs to one
call of the model: the first caller of a batch (its leader) gathers others, runs the batch in
its own thread and hands each caller its own row. A batch waits for as many callers as were
in :meth:`MicroBatcher.submit` at once (gathering or running) while it gathered: one client
at a time never waits; four clients whose queries meet batch four at a time, the callers of
a running batch joining the next when they come back. It waits for them no longer than
``window_s`` after its start or after the end of the batches running meanwhile (callers that
do not come back), and gathers at most ``max_items``. No thread of its own: nothing to start
or stop.

Errors: when a batch fails, each of its items is run again alone, so each caller gets its own
result or its own exception (one bad input does not fail the others).

:class:`QueryEncoder` is what the search façade calls: text and image embeddings through a
batcher (``window_ms`` > 0), or directly (0: the CLI, one query per process).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from PIL import Image
    from skysearch.encoders.models.text_image import TextImageModel
    from skysearch.encoders.models.text_query import TextQuery

#: Items of one forward pass at most (more callers start the next batch).
MAX_BATCH = 16


@dataclass
class _Call:
    item: Any
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


@dataclass
class _Batch:
    run: Callable[[list[Any]], Sequence[Any]]
    calls: list[_Call] = field(default_factory=list)
    full: threading.Event = field(default_factory=threading.Event)
    expected: int = 1  # callers it waits for: the most seen in submit while it gathered


class MicroBatcher:
    """Groups concurrent :meth:`submit` calls with the same key into one ``run`` call."""

    def __init__(self, window_s: float, max_items: int = MAX_BATCH) -> None:
        if window_s < 0 or max_items < 1:
            raise ValueError(f"window_s must be >= 0 and max_items >= 1: {window_s}, {max_items}")
        self.window_s = window_s
        self.max_items = max_items
        self._lock = threading.Lock()
        self._open: dict[Hashable, _Batch] = {}  # gathering callers
        self._inside: dict[Hashable, int] = {}  # callers in submit (gathering or running)
        self._running: dict[Hashable, int] = {}  # batches being run

    def submit(self, key: Hashable, run: Callable[[list[Any]], Sequence[Any]], item: Any) -> Any:
        """``run([item, ...])[i]`` for this caller's ``item``, computed in a batch with the
        items other threads submit under ``key`` meanwhile (``run`` maps a list of items to
        as many results, in order; calls under one key must pass equivalent ``run``s)."""
        call = _Call(item)
        with self._lock:
            inside = self._inside[key] = self._inside.get(key, 0) + 1
            batch = self._open.get(key)
            leader = batch is None
            if batch is None:
                batch = self._open[key] = _Batch(run)
            batch.calls.append(call)
            batch.expected = max(batch.expected, inside)
            if len(batch.calls) >= min(batch.expected, self.max_items):
                del self._open[key]
                batch.full.set()
        try:
            if leader:
                # a window, and more while a batch runs: its callers come back after it
                while not batch.full.wait(self.window_s) and self._running.get(key):
                    pass
                with self._lock:
                    if self._open.get(key) is batch:
                        del self._open[key]
                    self._running[key] = self._running.get(key, 0) + 1
                try:
                    _run(batch)
                finally:
                    with self._lock:
                        self._running[key] -= 1
            else:
                call.done.wait()
        finally:
            with self._lock:
                self._inside[key] -= 1
        if call.error is not None:
            raise call.error
        return call.result


def _run(batch: _Batch) -> None:
    """Run the batch; on failure each item alone. Every caller is released, whatever happens."""
    calls = batch.calls
    try:
        try:
            results = batch.run([c.item for c in calls])
            if len(results) != len(calls):
                raise RuntimeError(f"a batch of {len(calls)} gave {len(results)} results")
        except Exception as exc:
            if len(calls) == 1:
                calls[0].error = exc
                return
            for c in calls:
                try:
                    c.result = batch.run([c.item])[0]
                except Exception as own:  # noqa: BLE001 - handed to its caller
                    c.error = own
            return
        for c, result in zip(calls, results, strict=True):
            c.result = result
    except BaseException as exc:  # interrupted: the waiting callers see it too
        for c in calls:
            if c.result is None and c.error is None:
                c.error = exc
        raise
    finally:
        for c in calls:
            c.done.set()


class QueryEncoder:
    """Text and image query embeddings of a text-image model, batched across threads when
    ``window_ms`` > 0 (see :class:`MicroBatcher`), else one call per query."""

    def __init__(self, window_ms: float = 0.0, max_items: int = MAX_BATCH) -> None:
        self.window_ms = window_ms
        self._batcher = MicroBatcher(window_ms / 1000, max_items) if window_ms > 0 else None

    def text(self, tim: TextImageModel | TextQuery, text: str) -> np.ndarray:
        """The unit embedding of ``text``."""
        if self._batcher is None:
            return tim.encode_texts([text])[0]
        return self._batcher.submit(("text", id(tim)), tim.encode_texts, text)

    def image(self, tim: TextImageModel, image: Image.Image | str | bytes) -> np.ndarray:
        """The unit embedding of an image (a path, encoded bytes or a PIL image); decoded and
        preprocessed in the caller's thread, batched for the forward pass."""
        if self._batcher is None:
            return tim.encode_images([image])[0]
        import torch
        from skysearch.encoders.models.text_image import load_rgb

        pixels = tim.preprocess(load_rgb(image))
        return self._batcher.submit(
            ("image", id(tim)), lambda batch: tim.encode_pixels(torch.stack(batch)), pixels
        )
