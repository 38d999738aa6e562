"""A job lock: one process at a time runs a given job on a workspace."""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from skysearch.errors import StoreError


@contextmanager
def job_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created) for the block; a StoreError saying
    ``busy`` when another process holds it. The kernel drops the lock when its holder dies,
    so a killed job never leaves it behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(busy) from None
        yield


def is_held(path: Path) -> bool:
    """Whether a live process holds the lock at ``path`` (False when there is no such file)."""
    try:
        with open(path, "rb") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # dropped on close
    except FileNotFoundError:
        return False
    except BlockingIOError:
        return True
    return False
