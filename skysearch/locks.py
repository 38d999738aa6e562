"""A job lock: one process at a time runs a given job on a workspace."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skysearch.errors import StoreError

#: How long a job waits for a lock held only for an instant (by ``is_held``) before it says busy.
GRACE_S = 1.0


@contextmanager
def job_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created) for the block; a StoreError saying
    ``busy`` when another process holds it. The kernel drops the lock when its holder dies,
    so a killed job never leaves it behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + GRACE_S
    with open(path, "ab") as lock:
        while True:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreError(busy) from None
                time.sleep(0.05)
        yield


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock at ``path`` (False when there is no such file).
    It takes the lock for an instant: a job starting then waits (``GRACE_S``)."""
    try:
        with open(path, "rb") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # dropped on close
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False
