"""Whether a store collection can be used: it opens, counts and the vectors of its first
points (by id) read back; deep, every point's do, with unit length (cosine collections store
normalised vectors, so any other length, or a NaN, is damage: bit rot in a vector file would
otherwise surface as impossible scores)."""

from __future__ import annotations

from itertools import islice

import numpy as np
from skysearch.retrieval.store.base import VectorStore

from skysearch.errors import StoreError, StoreInUse, StoreNotWritable

#: how far a stored vector's length may be from 1 (float32 rounding is ~1e-7)
NORM_TOLERANCE = 1e-3
#: points whose vectors the quick check reads: ids are random, so these sit anywhere in the
#: vector files, and a file cut short misses most of them (~50 ms; all of 100k points: ~5 s)
SPOT_POINTS = 1024


def collection_problem(store: VectorStore, name: str, deep: bool = False) -> str | None:
    """Why collection ``name`` cannot be used, else None. A store held by another process is
    not a problem of the collection, nor is one this process cannot write: those errors are
    raised."""
    try:
        store.count(name)
        return _unreadable_vector(store, name, None if deep else SPOT_POINTS)
    except (StoreInUse, StoreNotWritable):
        raise
    except StoreError as exc:
        return str(exc)


def _unreadable_vector(store: VectorStore, name: str, points: int | None) -> str | None:
    """Why one of the first ``points`` points' vectors (all: None) is damaged, else None."""
    records = store.scroll(name, with_vectors=True, batch_size=1024)
    for record in islice(records, points):
        for vector_name, vector in (record.vectors or {}).items():
            length = float(np.linalg.norm(np.asarray(vector, np.float32)))
            if not abs(length - 1.0) <= NORM_TOLERANCE:  # also NaN
                return (
                    f"store collection {name}: point {record.id} holds a {vector_name!r} vector "
                    f"of length {length:.4g}, not 1 (damaged vector data); run `skysearch "
                    "repair` to re-index it"
                )
    return None
