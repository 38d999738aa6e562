"""Decode engines: where the ingest pipeline's decoding runs.

An engine maps the pipeline's (source, profile) items, in their fixed order, to their
``Decoded`` answers in the same order. Everything else (skip rules, appending pixels, fsync,
committing catalog rows) stays with the pipeline's one writer in the calling process, so an
engine changes where the work runs, never what is written: the frame store, catalog,
sketches and clips of a run are byte-for-byte the same whichever engine decoded them.

``local``: a process pool on this machine (the default). ``ray``: Ray tasks, on a local Ray
started for the run or on a cluster (``address``); the optional extra ``ray``
(``pip install -e '.[ray]'``).
``ordered_map`` runs any picklable task the same way (the indexing layer embeds frames on it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol
from urllib.parse import urlsplit

from skysearch.ingest.decode import Decoded, Source
from skysearch.ingest.profiles import Profile

from skysearch.errors import UsageError

Item = tuple[Source, Profile]
ENGINES = ("local", "ray")
RAY_INSTALL = "pip install -e '.[ray]' in the SkySearch checkout"


class Engine(Protocol):
    name: str

    def decoded_stream(self, items: list[Item], workers: int) -> Iterator[Decoded]:
        """The answer of every item, in input order; ``workers``: decode processes here."""
        ...

    def ordered_map(
        self,
        task: Callable[[Any], Any],
        parts: Iterable[Any],
        workers: int,
        gpus: float | None = 0,
    ) -> Iterator[Any]:
        """``task(part)`` of every part, run by the engine's workers, yielded in input order
        (a bounded number in flight). ``task`` must be picklable (a module-level function or
        a ``functools.partial`` of one); ``gpus``: GPUs a task needs (None: one if any)."""
        ...

    def close(self) -> None:
        """Release what the engine started (a local Ray); the commands close it when done."""
        ...


def check_address(address: str) -> tuple[str, int]:
    """(host, port) of a Ray Client address ``ray://host:port``, else a UsageError."""
    parts = urlsplit(address)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "ray" or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise UsageError(
            f"{{address}} {address!r} is not a Ray cluster address: write ray://HOST:PORT "
            "(the head node's Ray Client port, 10001 by default)",
            params=["address"],
        )
    return parts.hostname, port


def get_engine(name: str = "local", address: str | None = None) -> Engine:
    """The engine called ``name``; ``address``: the Ray cluster (ray engine only; none: a
    local Ray for this run). Usage errors before any work: unknown name, a malformed
    address, Ray not installed."""
    if name not in ENGINES:
        raise UsageError(
            f"unknown {{engine}} {name!r}: one of {', '.join(ENGINES)}", params=["engine"]
        )
    if name == "local":
        if address:
            raise UsageError(
                "{address} names a Ray cluster: it needs {engine} ray", params=["address", "engine"]
            )
        from skysearch.ingest.engines.local import LocalEngine

        return LocalEngine()
    if address:
        check_address(address)
    try:
        import ray  # noqa: F401 - only to say how to install it when missing
    except ImportError:
        raise UsageError(
            "{engine} ray needs Ray, which is not installed", params=["engine"], hint=RAY_INSTALL
        ) from None
    from skysearch.ingest.engines.ray import RayEngine

    return RayEngine(address)
