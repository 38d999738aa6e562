"""Errors a user can meet and fix. The CLI prints them as one line and exits with code 2; the
HTTP service answers them with a 4xx/503 and a ``detail`` line.

An error names the parameters it is about by their Python names, written ``{name}`` in the
message (``UsageError("{rerank} must be in 0..10000", params=["rerank"])``), and may carry a
``hint`` (what to do). Each front end renders the names in its own words: the CLI as its flags
(``--rerank``), the HTTP service as its fields (``rerank``), ``str()`` as the plain names. So
the library never speaks one front end's language about the call it answers; advice to run
another command may quote that ``skysearch`` command whole (the CLI is the admin tool).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class SkySearchError(Exception):
    """An expected error: bad input, missing data or model, locked store. Never a traceback."""

    def __init__(
        self, message: str, *, params: Sequence[str] = (), hint: str | None = None
    ) -> None:
        self.message = message
        self.params = tuple(params)
        self.hint = hint
        super().__init__(self.render())

    def render(self, name: Callable[[str], str] = str) -> str:
        """The message with each ``{param}`` written as ``name(param)``, then the hint."""
        text = self.message
        for param in self.params:
            text = text.replace("{" + param + "}", name(param))
        return f"{text}: {self.hint}" if self.hint else text


def some_of(names: Sequence[str], shown: int = 12) -> str:
    """The first ``shown`` of ``names`` for a message, and how many more there are."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more


class UsageError(SkySearchError):
    """The command cannot run as asked (missing path, unknown channel, bad time...)."""


class NotFoundError(SkySearchError):
    """Something asked for does not exist (frame, clip, model, collection)."""


class CheckpointError(SkySearchError):
    """A checkpoint is missing, corrupt, or does not match the model it is loaded into."""


class StoreError(SkySearchError):
    """The vector store cannot be used (locked by another process, unreachable server...)."""


class StoreInUse(StoreError):
    """The embedded store is held by another process (e.g. ``skysearch serve``): nothing is
    wrong with it, it just cannot be opened here now."""

    def __init__(self, path: object, pid: str) -> None:
        self.path = str(path)
        self.pid = pid
        super().__init__(
            f"store directory {path} is in use by another process (pid {pid}); stop it, "
            "or serve both from a Qdrant server (QDRANT_URL)"
        )


class StoreNotWritable(StoreError):
    """The embedded store's files cannot be opened for writing (a read-only file system or
    another user's workspace): the engine maps them read-write even to search, so nothing is
    wrong with them, but this process cannot use them."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"store directory {path} cannot be opened: {reason}, and the embedded store opens "
            "its files for writing even to search. Search it through a service run by a user "
            "who can write them (skysearch serve), or copy the workspace somewhere writable"
        )


class DamagedError(StoreError):
    """A workspace file is damaged (truncated, garbled, inconsistent with the catalog).

    ``path`` names the file, ``what`` says what is wrong, ``row`` the frame row of a frame
    array that does not match its checksum (None: the file); the workspace repair rebuilds it.
    """

    def __init__(self, path: object, what: str, row: int | None = None) -> None:
        self.path = str(path)
        self.what = what
        self.row = row
        super().__init__(f"{path} is damaged: {what}; run `skysearch repair` to rebuild it")
