"""The local engine: decoding in a process pool on this machine, in ordered chunks."""

from __future__ import annotations

import ctypes
import os
import signal
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TypeVar

from skysearch.ingest.decode import Decoded, preprocess_chunk
from skysearch.ingest.engines import Item

P = TypeVar("P")
R = TypeVar("R")
_PR_SET_PDEATHSIG = 1
CHUNK = 8  # items per worker task: amortises inter-process overhead, keeps order fine-grained


def chunks(items: list[Item], size: int) -> Iterator[list[Item]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _init_worker(parent: int) -> None:
    """Workers leave Ctrl-C to the writer (which commits what it has and stops cleanly) and
    die with it: a writer killed with kill -9 leaves no orphan decoders behind (Linux)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: orphans end when their queue breaks
        pass
    if os.getppid() != parent:  # the writer died before prctl took effect
        os._exit(1)


class LocalEngine:
    """Chunks of ``CHUNK`` items in a process pool, at most ``4 * workers`` in flight; one
    process (no pool) when it would not pay off."""

    name = "local"

    def close(self) -> None:
        """Nothing to release: each map's pool ends with it."""

    def decoded_stream(self, items: list[Item], workers: int) -> Iterator[Decoded]:
        if workers <= 1 or len(items) <= CHUNK:
            for item in items:
                yield preprocess_chunk([item])[0]
            return
        for results in self.ordered_map(preprocess_chunk, chunks(items, CHUNK), workers):
            yield from results

    def ordered_map(self, task: Callable[[P], R], parts: Iterable[P], workers: int) -> Iterator[R]:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(os.getpid(),))
        with pool:
            pending: deque[Future[R]] = deque()
            todo = iter(parts)
            for part in todo:
                pending.append(pool.submit(task, part))
                if len(pending) >= workers * 4:
                    break
            while pending:
                result = pending.popleft().result()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append(pool.submit(task, nxt))
                yield result
