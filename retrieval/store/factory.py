"""Which store a configuration names: the embedded engine, a Qdrant server, or memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from skysearch.retrieval.store.base import VectorStore

from skysearch.errors import UsageError


def open_store(settings: Any, location: str | None = None) -> VectorStore:
    """Open the store the configuration names.

    ``location`` overrides the settings: ``":memory:"``, an ``http(s)://`` URL, or a directory
    for the embedded engine. Otherwise ``settings.qdrant_url`` (QDRANT_URL) selects a server,
    and without one the embedded engine under ``settings.workspace.store_dir`` is used, with
    the memory tier ``settings.extra["store_memory"]`` (SKYSEARCH_STORE_MEMORY) for the
    collections it creates.
    """
    url = getattr(settings, "qdrant_url", None)
    if location is None and url and url != ":memory:":
        checked_url(url)  # "localhost:6333" is no folder in the current directory
    target = location or url
    if target == ":memory:":
        from skysearch.retrieval.store.server import ServerStore

        return ServerStore.in_memory()
    if target and "://" in target:
        from skysearch.retrieval.store.server import ServerStore

        return ServerStore.connect(target, settings)
    from skysearch.retrieval.store.embedded import EdgeIndexParams, EmbeddedStore

    root = Path(target) if target else settings.workspace.store_dir
    memory = (getattr(settings, "extra", None) or {}).get("store_memory")
    if not memory:
        return EmbeddedStore(root)
    try:
        params = EdgeIndexParams(memory=str(memory))
    except UsageError as exc:
        where = "store_memory in skysearch.toml, or SKYSEARCH_STORE_MEMORY"
        raise UsageError(f"{where}: {exc}") from None
    return EmbeddedStore(root, params)


def checked_url(url: str) -> str:
    """The URL as messages show it (without a password); a UsageError for one that is not an
    http(s) URL with a host and a valid port (the client's own errors are tracebacks)."""
    from urllib.parse import urlsplit

    what = f"Qdrant URL {url!r} ({{qdrant_url}}, QDRANT_URL)"
    if "://" not in url:
        raise UsageError(f"{what} needs http:// or https://", params=["qdrant_url"])
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"{what}: {exc}", params=["qdrant_url"]) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or url != url.strip():
        raise UsageError(
            f"{what} is not an http:// or https:// URL with a host (e.g. http://localhost:6333)",
            params=["qdrant_url"],
        )
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"
