"""Where an index run embeds and writes: here or on an engine's workers, into the store or
into Parquet part files. The catalog and scene indexers hand it their listing, a local
embedder (a model already loaded here) and the picklable task an engine runs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from skysearch.ingest.engines import Engine
from skysearch.retrieval.indexing.distributed import ENGINE_CHUNK, engine_embedder, on_engine
from skysearch.retrieval.indexing.parquet_parts import index_to_parquet
from skysearch.retrieval.indexing.pipeline import (
    IndexReport,
    Listing,
    SourceTask,
    items_embedder,
    run_index,
)
from skysearch.retrieval.store import VectorStore

from skysearch.config import Settings


def index_with(
    settings: Settings,
    listing: Listing,
    local: SourceTask,
    task: SourceTask,
    model_id: str,
    dim: int,
    engine: Engine | None = None,
    workers: int = 2,
    store: VectorStore | None = None,
    progress: bool = True,
    to_parquet: Path | None = None,
) -> IndexReport:
    """``to_parquet``: write part files there (``task``, on the engine or here) and leave
    the store alone; else upsert into the store, embedding with ``local`` (no engine, or the
    local one: a model loaded here) or ``task`` on the engine's workers."""
    if to_parquet is not None:
        return index_to_parquet(listing, task, engine, to_parquet, model_id, dim, workers, progress)
    if on_engine(engine):  # chunks of several parts: parts run side by side
        listing = replace(listing, chunk=max(listing.chunk, ENGINE_CHUNK))
        embed = engine_embedder(engine, task, workers)
    else:
        embed = items_embedder(local)
    return run_index(settings, listing, embed, model_id, dim, store, progress)
