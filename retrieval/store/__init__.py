"""Vector stores: one interface (:class:`VectorStore`), two engines behind it.

- ``base``: the interface and the plain records it speaks (points, hits, collection info).
- ``embedded`` (qdrant-edge, the default, no server) and ``server`` (a Qdrant server by URL);
  ``window_scan``: the embedded store's exact scan of narrow time windows (its compiled
  loops in ``window_kernels``); ``edge_filters``: filters in the engine's vocabulary;
  ``shard_files``: the shard directory's files the engine does not account for itself.
- ``factory``: :func:`open_store`, which engine a configuration names.
- ``schema``: the collections, their payload fields and indexes; ``filters``: what a search may
  return; ``health``: whether a collection can be used (opens, counts, vectors read back);
  ``application``: the typed API (clips, frames, scenes) above the raw store;
  ``transfer``: export and import of a store as JSON Lines; ``parquet_format``,
  ``parquet_export``, ``parquet_import``: the same as Parquet point files.
"""

from skysearch.retrieval.store.base import Hit, Point, VectorStore
from skysearch.retrieval.store.factory import open_store

__all__ = ["Hit", "Point", "VectorStore", "open_store"]
