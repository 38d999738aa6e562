"""Embedding tasks on an engine's workers (``--engine ray``), in parts of ``PART`` items.

The pipeline's chunks are split into parts; each part is one engine task (``SourceTask``:
item sources -> positions embedded, vectors, skipped), run on the engine's workers with a GPU
each when the cluster has them, and read back in order, so the driver writes what a local
run writes. ``run_parts`` is also how the Parquet writers' tasks run (``parquet_parts``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
from skysearch.ingest.engines import Engine
from skysearch.retrieval.indexing.pipeline import Embedded, Embedder, SourceTask, items_embedder

P = TypeVar("P")
R = TypeVar("R")
PART = 256  # items per engine task: a few batches, so a lost worker costs little
ENGINE_CHUNK = 8 * PART  # items the driver hands the engine at a time (the unit of resumption)


def on_engine(engine: Engine | None) -> bool:
    """Whether tasks run on the engine's workers (not in this process)."""
    return engine is not None and engine.name != "local"


def run_parts(
    engine: Engine | None, task: Callable[[P], R], parts: list[P], workers: int
) -> Iterator[R]:
    """``task(part)`` of every part, in order: on the engine's workers (a GPU each when the
    cluster has any), or one after another in this process (no engine, or the local one)."""
    if on_engine(engine):
        assert engine is not None
        return engine.ordered_map(task, parts, workers, gpus=None)
    return map(task, parts)


def engine_embedder(engine: Engine, task: SourceTask, workers: int) -> Embedder:
    """The embedder that runs ``task`` on the engine's workers, ``PART`` items a task."""

    def run(sources: list[Any]) -> Embedded:
        starts = range(0, len(sources), PART)
        parts = [sources[i : i + PART] for i in starts]
        kept: list[int] = []
        vectors: list[np.ndarray] = []
        skipped: list[dict[str, str]] = []
        for start, (k, v, s) in zip(starts, run_parts(engine, task, parts, workers), strict=True):
            kept += [start + i for i in k]
            vectors.append(v)
            skipped += s
        return kept, np.concatenate(vectors), skipped

    return items_embedder(run)
