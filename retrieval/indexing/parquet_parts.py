"""An index run into Parquet part files instead of the store (``index ... --to-parquet DIR``).

For many embedding workers and no Qdrant server: each engine task embeds a part of ``PART``
items and writes its points itself as ``DIR/<collection>/<vector name>/part-NNNNN-<digest>
.parquet`` (the store's point format, ``parquet_format``), written aside and renamed, so a
part file is whole or absent. The driver never opens the store; ``store import --format
parquet DIR`` then loads the parts with the store's one writer.

The name is the part's number and a digest of what it holds (model, dimension, point ids,
payloads): a task Ray runs again writes the same file, a re-run skips the parts already
written (a killed run resumes) and re-embeds a part whose points changed (a best track
loaded since changes payloads). Parts of an earlier run that this run would not write are
deleted first, so the folder never holds two versions of a point.
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skysearch.ingest.engines import Engine
from skysearch.retrieval.indexing.distributed import PART, run_parts
from skysearch.retrieval.indexing.pipeline import IndexReport, Item, Listing, SourceTask
from skysearch.retrieval.store.parquet_format import write_points

from skysearch.atomic import remove_temporaries
from skysearch.errors import UsageError


@dataclass(frozen=True)
class PartJob:
    """One part: the file to write and its points (ids, payloads, embedder sources)."""

    path: str
    collection: str
    vector_name: str
    dim: int
    ids: list[str]
    payloads: list[dict[str, Any]]
    sources: list[Any]


def write_part(task: SourceTask, job: PartJob) -> tuple[int, list[dict[str, str]]]:
    """An engine task: embed the part and write its file; (points written, skipped)."""
    kept, vectors, skipped = task(job.sources)
    rows = [(job.ids[i], vec, job.payloads[i]) for i, vec in zip(kept, vectors, strict=True)]
    written = write_points(Path(job.path), job.collection, job.vector_name, job.dim, rows)
    return written, skipped


def _digest(model_id: str, dim: int, items: list[Item]) -> str:
    held = [model_id, dim, [[it.id, it.payload] for it in items]]
    return hashlib.sha256(json.dumps(held, sort_keys=True, default=str).encode()).hexdigest()


def part_jobs(listing: Listing, folder: Path, model_id: str, dim: int) -> list[PartJob]:
    """The parts of the listing's items, in order, each with its deterministic file name."""
    jobs = []
    for number, start in enumerate(range(0, len(listing.items), PART)):
        items = listing.items[start : start + PART]
        name = f"part-{number:05d}-{_digest(model_id, dim, items)[:16]}.parquet"
        ids, payloads = [it.id for it in items], [it.payload for it in items]
        sources = [it.source for it in items]
        path = str(folder / name)
        jobs.append(PartJob(path, listing.collection, model_id, dim, ids, payloads, sources))
    return jobs


def _prepare(folder: Path, jobs: list[PartJob]) -> None:
    """Create ``folder``; delete the parts no job writes and temporaries of killed writers."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot write Parquet parts into {folder}: {exc.strerror}") from None
    keep = {Path(job.path).name for job in jobs}
    for stale in folder.glob("part-*.parquet"):
        if stale.name not in keep:
            stale.unlink()
    remove_temporaries(folder)


def index_to_parquet(
    listing: Listing,
    task: SourceTask,
    engine: Engine | None,
    folder: Path,
    model_id: str,
    dim: int,
    workers: int,
    progress: bool = True,
) -> IndexReport:
    """Embed the listing's items with ``task`` on the engine's workers (no engine: here),
    each part written by its task as a Parquet part file under ``folder``."""
    from tqdm import tqdm

    target = Path(folder).resolve() / listing.collection / model_id  # the workers' cwd differs
    report = IndexReport(
        listing.collection,
        model_id,
        model_id,
        total=len(listing.items) + len(listing.skipped),
        skipped=list(listing.skipped),
        parquet=str(folder),
    )
    jobs = part_jobs(listing, target, model_id, dim)
    _prepare(target, jobs)
    todo = [job for job in jobs if not Path(job.path).exists()]
    report.skipped_existing = len(listing.items) - sum(len(job.ids) for job in todo)
    t0 = time.perf_counter()
    todo_items = len(listing.items) - report.skipped_existing
    bar = tqdm(
        total=todo_items, desc=f"index {listing.collection}", unit="item", disable=not progress
    )
    with bar:
        run = run_parts(engine, functools.partial(write_part, task), todo, workers)
        for job, (written, skipped) in zip(todo, run, strict=True):
            report.written += written
            report.skipped.extend(skipped)
            bar.update(len(job.ids))
    if report.written:
        report.items_per_s = round(report.written / (time.perf_counter() - t0), 2)
    return report
