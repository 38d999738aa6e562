"""Whether a store collection can be used: it opens and counts; deep, every point reads back
with unit-length vectors (cosine collections store normalised vectors, so any other length,
or a NaN, is damage: bit rot in a vector file would otherwise surface as impossible scores)."""

from __future__ import annotations

import numpy as np
from skysearch.retrieval.store.base import VectorStore

from skysearch.errors import StoreError, StoreInUse

#: how far a stored vector's length may be from 1 (float32 rounding is ~1e-7)
NORM_TOLERANCE = 1e-3


def collection_problem(store: VectorStore, name: str, deep: bool = False) -> str | None:
    """Why collection ``name`` cannot be used, else None. A store held by another process is
    not a problem of the collection: that ``StoreError`` is raised."""
    try:
        store.count(name)
        if deep:
            return _unreadable_vector(store, name)
    except StoreInUse:
        raise
    except StoreError as exc:
        return str(exc)
    return None


def _unreadable_vector(store: VectorStore, name: str) -> str | None:
    for record in store.scroll(name, with_vectors=True, batch_size=1024):
        for vector_name, vector in (record.vectors or {}).items():
            length = float(np.linalg.norm(np.asarray(vector, np.float32)))
            if not abs(length - 1.0) <= NORM_TOLERANCE:  # also NaN
                return (
                    f"store collection {name}: point {record.id} holds a {vector_name!r} vector "
                    f"of length {length:.4g}, not 1 (damaged vector data); run `skysearch "
                    "repair` to re-index it"
                )
    return None
