"""The Ray engine: decoding as Ray tasks, on a local Ray or a Ray cluster.

Ray core tasks, not Ray Data: the pipeline needs its answers streamed back in input order
with a bounded number in flight (its one writer commits in that order; that is what makes a
killed run resume exactly). A window of chunk tasks read back first-in first-out gives that
in a few lines, and Ray retries a task whose worker died (``max_retries``), so a lost worker
costs a re-decode, never a duplicate or a gap. Ray Data would add a streaming executor, its
own batching and an order-preserving mode to configure, for no gain here.

Every source file must be readable at the same path from every Ray node (a shared file
system): the catalog records that path.
"""

from __future__ import annotations

import itertools
import logging
import socket
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import ray
from skysearch.ingest.decode import Decoded, preprocess_chunk
from skysearch.ingest.engines import Item, check_address
from skysearch.ingest.engines.local import chunks

from skysearch.errors import UsageError

P = TypeVar("P")
R = TypeVar("R")
CHUNK = 16  # items per task: Ray costs ~1 ms a task (bench/distributed.py), a chunk tens of ms
RETRIES = 3  # times a chunk is run again when its worker dies
LOCAL_OBJECT_STORE = 256 * 2**20  # a local Ray's shared memory; the window needs far less


class RayEngine:
    """Chunks of ``CHUNK`` items as Ray tasks, at most 4 per cluster CPU in flight, read back
    in order. On first use, starts a local Ray (``workers`` CPUs) or connects to ``address``,
    and keeps it for the next maps (a job's ingest and index stages) until ``close()``; a Ray
    the caller already started is used as it is and left up. ``task``: the function a task
    runs on a chunk (tests inject a worker that dies)."""

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        task: Callable[[list[Item]], list[Decoded]] = preprocess_chunk,
    ) -> None:
        if address is not None:
            _check_reachable(address)
        self.address = address
        self.task = task
        self._started = False  # whether this engine started (or connected) the Ray it uses

    def close(self) -> None:
        """Shut down the Ray this engine started or connected to (a caller's Ray stays up)."""
        if self._started:
            ray.shutdown()
            self._started = False

    def decoded_stream(self, items: list[Item], workers: int) -> Iterator[Decoded]:
        for results in self.ordered_map(self.task, chunks(items, CHUNK), workers, what=_files):
            yield from results

    def ordered_map(
        self,
        task: Callable[[P], R],
        parts: Iterable[P],
        workers: int,
        gpus: float | None = 0,
        what: Callable[[P], str] = lambda part: "run a task",
    ) -> Iterator[R]:
        """``gpus``: GPUs each task needs (Ray places it on a node that has them; None: one
        when the cluster has any); ``what``: a part in words, for the error when its workers
        keep dying."""
        todo = iter(parts)
        first = next(todo, None)
        if first is None:
            return  # nothing to do: no Ray started
        if not ray.is_initialized():
            self._start(workers)
            self._started = True
        pending: deque[tuple[P, ray.ObjectRef]] = deque()
        try:
            if gpus is None:
                gpus = 1 if ray.cluster_resources().get("GPU") else 0
            remote = ray.remote(max_retries=RETRIES, num_gpus=gpus)(_call)
            shared = ray.put(task)  # shipped once, not with every part
            window = 4 * max(1, int(ray.cluster_resources().get("CPU", 1)))
            for part in itertools.chain([first], todo):
                pending.append((part, remote.remote(shared, part)))
                if len(pending) >= window:
                    break
            while pending:
                part, ref = pending.popleft()
                result = _result(ref, what(part))
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, remote.remote(shared, nxt)))
                yield result
        finally:
            for _, ref in pending:
                ray.cancel(ref)

    def _start(self, workers: int) -> None:
        if self.address is None:
            start_local(max(1, workers))  # index --workers 0: no DataLoader processes, one CPU
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Ray Client's timeout warning: we say it
                ray.init(self.address, logging_level=logging.ERROR, log_to_driver=False)
        except (ConnectionError, RuntimeError) as exc:
            raise UsageError(
                f"cannot reach the Ray cluster at {{address}} {self.address} ({exc})",
                params=["address"],
            ) from None


def start_local(workers: int) -> None:
    """A Ray on this machine only, with ``workers`` CPUs, quiet, no dashboard."""
    ray.init(
        address="local",
        num_cpus=workers,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
        object_store_memory=LOCAL_OBJECT_STORE,
    )


def _check_reachable(address: str) -> None:
    """A UsageError now, before any work, when nothing listens at the cluster's address (Ray
    Client itself would wait 30 s, then fail with a warning and a traceback)."""
    host, port = check_address(address)
    try:
        socket.create_connection((host, port), timeout=10).close()
    except OSError as exc:
        raise UsageError(
            f"cannot reach the Ray cluster at {{address}} {address} ({exc})", params=["address"]
        ) from None


def _call(task: Callable[[P], R], part: P) -> R:
    """What a Ray task runs (Ray wants a plain function; ``task`` may be a partial)."""
    return task(part)


def _files(part: list[Item]) -> str:
    return f"decode {len(part)} files ({part[0][0].path} .. {part[-1][0].path})"


def _result(ref: ray.ObjectRef, what: str) -> Any:
    """A task's result; a task whose worker died ``RETRIES`` times over is a clear error
    (a re-run resumes after the last committed result)."""
    try:
        return ray.get(ref)
    except ray.exceptions.RayError as exc:
        raise UsageError(
            f"Ray could not {what} after {RETRIES} retries: {type(exc).__name__}; a re-run "
            "resumes after the last committed frame or point"
        ) from None
