"""Which store a configuration names: the embedded engine, a Qdrant server, or memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skysearch.retrieval.store.base import VectorStore


def open_store(settings: Any, location: str | None = None) -> VectorStore:
    """Open the store the configuration names.

    ``location`` overrides the settings: ``":memory:"``, an ``http(s)://`` URL, or a directory
    for the embedded engine. Otherwise ``settings.qdrant_url`` (QDRANT_URL) selects a server,
    and without one the embedded engine under ``settings.workspace.store_dir`` is used.
    """
    target = location or getattr(settings, "qdrant_url", None)
    if target == ":memory:":
        from skysearch.retrieval.store.server import ServerStore

        return ServerStore.in_memory()
    if target and "://" in target:
        from skysearch.retrieval.store.server import ServerStore

        return ServerStore.connect(target, settings)
    from skysearch.retrieval.store.embedded import EmbeddedStore

    root = Path(target) if target else settings.workspace.store_dir
    return EmbeddedStore(root)
