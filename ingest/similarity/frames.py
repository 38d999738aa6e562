"""Catalog frames by id: one query frame scored against many stored frames."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from skysearch.ingest.similarity.grid import cell_sizes, sketch_frame, sketch_geometry
from skysearch.ingest.similarity.scoring import similarity_block
from skysearch.ingest.similarity.store import SketchStore


def score_frames(store: SketchStore, query: np.ndarray, frame_ids: Sequence[str]) -> np.ndarray:
    """Grid similarity (len(frame_ids),) of a uint8 frame (H, W) with each stored frame."""
    if not frame_ids:
        return np.empty(0)
    pool, rows, geometry = store.pool(frame_ids)
    sizes_q = cell_sizes(sketch_geometry(query.shape, store.spec))
    q = sketch_frame(query, store.spec)[None]
    return similarity_block(q, pool, rows, sizes_q, cell_sizes(geometry))[0]
