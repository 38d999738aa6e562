"""Announced, timed steps of a workflow (the demo's steps, the update job's stages)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Step:
    name: str
    seconds: float
    detail: str


class Steps:
    """``with steps("ingest") as detail: detail.append("...")`` says ``[label] ingest ...``
    when the step starts and ``[label] ingest: <detail> (1.2 s)`` when it ends, and appends
    the :class:`Step` to ``done``."""

    def __init__(self, label: str, say: Callable[[str], None], done: list[Step]) -> None:
        self.label = label
        self.say = say
        self.done = done

    @contextmanager
    def __call__(self, name: str) -> Iterator[list[str]]:
        detail: list[str] = []
        started = time.perf_counter()
        self.say(f"[{self.label}] {name} ...")
        yield detail
        seconds = time.perf_counter() - started
        self.done.append(Step(name, round(seconds, 2), "; ".join(detail)))
        self.say(f"[{self.label}] {name}: {'; '.join(detail)} ({seconds:.1f} s)")
