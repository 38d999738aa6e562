"""One indexing pipeline for frames, clips and scenes: read -> embed -> write.

As clip-retrieval's reader/mapper/writer: a *reader* lists what should be in a collection (point
ids, payloads, and what the embedder needs, e.g. frame ids or an image path); an *embedder* turns
a chunk of those items into vectors, skipping with a reason any it cannot read; the *writer*
(``run_index``) upserts them under the model's vector name, chunk by chunk.

Incremental and resumable everywhere: before embedding, the points that hold a vector of this
model (its vector name) are read back; an item is skipped as up to date when its id is there and
the reader's fingerprint fields (a scene's size, mtime and metadata key; a frame's or clip's event
and best-track fields, which may arrive after indexing) match the stored payload. Work is written
chunk by chunk, so an interrupted run loses at most one chunk and a re-run finishes the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from qdrant_client import models
from skysearch.retrieval.store import Point, VectorStore, open_store
from skysearch.retrieval.store.filters import holding_vector
from tqdm import tqdm

from skysearch.config import Settings


@dataclass
class Item:
    """One point to make: its id and payload (known before embedding) and the embedder's input."""

    id: str
    payload: dict[str, Any]
    source: Any


@dataclass
class Listing:
    """A reader's answer: the items of a collection, and inputs skipped (with a reason) already
    while listing, e.g. a CSV row with bad metadata."""

    collection: str
    items: list[Item]
    skipped: list[dict[str, str]] = field(default_factory=list)
    #: Payload fields that must match the stored point for an item to count as up to date. A
    #: field whose value is a dict holds one entry per model (the models' vectors of a point
    #: share its payload): only this model's entry must match, and writing keeps the others.
    #: A point without the field at all (indexed before it existed) is taken as up to date.
    fingerprint: tuple[str, ...] = ()
    #: Items embedded and written per chunk (the unit of resumption).
    chunk: int = 2048
    #: Stored payload -> whether its source is gone for good (e.g. an image deleted from the
    #: folder being indexed): such points, when not listed, are deleted. None: none are.
    gone: Callable[[dict[str, Any]], bool] | None = None
    #: Check ``gone`` on every point of the collection (scenes: an image deleted is gone for
    #: every model), or only on those holding this model's vector, which the run reads anyway
    #: (catalogs: each model's runs clean its own points; no second scan of a large store).
    gone_of_any_model: bool = True


#: An embedder: a chunk of items -> (the items it embedded, their vectors (N, D), skipped items
#: as ``{"path", "reason"}``).
Embedder = Callable[[list[Item]], tuple[list[Item], np.ndarray, list[dict[str, str]]]]
#: What an embedding task answers for a list of item sources: the positions it embedded, their
#: vectors (N, D), the skipped ones as ``{"path", "reason"}``.
Embedded = tuple[list[int], np.ndarray, list[dict[str, str]]]
#: An embedding task: item sources -> ``Embedded``. Engines run it on their workers, so one
#: that an engine runs must be picklable (a ``functools.partial`` of a module-level function).
SourceTask = Callable[[list[Any]], Embedded]


def items_embedder(task: SourceTask) -> Embedder:
    """The embedder that runs ``task`` on a chunk's sources."""

    def embed(chunk: list[Item]) -> tuple[list[Item], np.ndarray, list[dict[str, str]]]:
        kept, vectors, skipped = task([it.source for it in chunk])
        return [chunk[i] for i in kept], vectors, skipped

    return embed


@dataclass
class IndexReport:
    collection: str
    model_id: str
    vector_name: str
    total: int = 0
    written: int = 0
    skipped_existing: int = 0
    #: Items this model had indexed before, embedded again because their file or metadata
    #: changed (the latest wins: e.g. a scene CSV naming images first indexed from a folder).
    changed: int = 0
    #: Of ``written``, the points that were there before (``changed`` items embedded again).
    rewritten: int = 0
    #: Points deleted because their source is gone (``Listing.gone``).
    removed: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    items_per_s: float | None = None
    #: The folder the points went to as Parquet part files (None: the store).
    parquet: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` report. ``found``/``unchanged``/``images_per_s`` repeat ``total``/
        ``skipped_existing``/``items_per_s`` under the names ``index scenes`` has always used."""
        return {
            **asdict(self),
            "skipped_count": len(self.skipped),
            "found": self.total,
            "unchanged": self.skipped_existing,
            "images_per_s": self.items_per_s,
        }


def _stored(store: VectorStore, collection: str, model_id: str) -> dict[str, dict[str, Any]]:
    """id -> payload of every point holding a vector of ``model_id`` (its vector name). Not
    the payload's ``model_id``: that names the model that wrote the point last, and a point
    keeps the vectors of every model that indexed it."""
    return {r.id: r.payload for r in store.scroll(collection, holding_vector(model_id))}


def _matches(want: Any, have: Any) -> bool:
    if not isinstance(want, dict):
        return have == want
    if have is None:  # indexed before the field existed
        return True
    return isinstance(have, dict) and all(have.get(k) == v for k, v in want.items())


def _up_to_date(item: Item, stored: dict[str, Any] | None, fingerprint: Sequence[str]) -> bool:
    return stored is not None and all(
        _matches(item.payload.get(k), stored.get(k)) for k in fingerprint
    )


def _payload(item: Item, stored: dict[str, Any] | None, fingerprint: Sequence[str]) -> dict:
    """The item's payload, its per-model fingerprint fields merged into the stored ones."""
    merged = dict(item.payload)
    for k in fingerprint:
        old = (stored or {}).get(k)
        if isinstance(merged.get(k), dict) and isinstance(old, dict):
            merged[k] = {**old, **merged[k]}
    return merged


def _other_models_payloads(
    store: VectorStore, collection: str, ids: list[str]
) -> dict[str, dict[str, Any]]:
    """The payloads of points that exist holding only other models' vectors (a model indexing
    them for the first time merges its fingerprint entries into theirs)."""
    if not ids:
        return {}
    found = store.scroll(collection, models.Filter(must=[models.HasIdCondition(has_id=ids)]))
    return {r.id: r.payload for r in found}


def _remove_gone(store: VectorStore, listing: Listing, stored: dict[str, dict[str, Any]]) -> int:
    """Delete the points that are not listed and whose source is gone; how many."""
    if listing.gone is None:
        return 0
    listed = {it.id for it in listing.items}
    if listing.gone_of_any_model:
        payloads = ((r.id, r.payload) for r in store.scroll(listing.collection))
    else:
        payloads = iter(stored.items())
    gone = [i for i, payload in payloads if i not in listed and listing.gone(payload)]
    store.delete_ids(listing.collection, gone)
    return len(gone)


def run_index(
    settings: Settings,
    listing: Listing,
    embed: Embedder,
    model_id: str,
    dim: int,
    store: VectorStore | None = None,
    progress: bool = True,
) -> IndexReport:
    """Embed the listing's items that are not up to date in the store and upsert them under the
    vector name ``model_id`` (the store is opened here and closed after, unless given)."""
    collection = listing.collection
    report = IndexReport(
        collection,
        model_id,
        model_id,
        total=len(listing.items) + len(listing.skipped),
        skipped=list(listing.skipped),
    )
    own_store = store is None
    store = store or open_store(settings)
    try:
        store.ensure_collection(collection, dim, model_id)
        stored = _stored(store, collection, model_id)
        todo = [
            it
            for it in listing.items
            if not _up_to_date(it, stored.get(it.id), listing.fingerprint)
        ]
        report.skipped_existing = len(listing.items) - len(todo)
        report.changed = sum(it.id in stored for it in todo)
        report.removed = _remove_gone(store, listing, stored)
        t0, embedded, fp = time.perf_counter(), 0, listing.fingerprint
        bar = tqdm(total=len(todo), desc=f"index {collection}", unit="item", disable=not progress)
        loading = store.bulk_load(collection) if todo else nullcontext()
        with loading, bar:  # a server builds its index once, after the load
            for start in range(0, len(todo), listing.chunk):
                chunk = todo[start : start + listing.chunk]
                kept, vectors, skipped = embed(chunk)
                report.skipped.extend(skipped)
                embedded += len(kept)
                new = [it.id for it in kept if it.id not in stored]
                report.rewritten += len(kept) - len(new)
                others = _other_models_payloads(store, collection, new)
                points = [
                    Point(it.id, vec, _payload(it, stored.get(it.id, others.get(it.id)), fp))
                    for it, vec in zip(kept, vectors, strict=True)
                ]
                report.written += store.upsert(collection, points, vector_name=model_id)
                bar.update(len(chunk))
        if embedded:
            report.items_per_s = round(embedded / (time.perf_counter() - t0), 2)
    finally:
        if own_store:
            store.close()
    return report
