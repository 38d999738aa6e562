"""Errors a user can meet and fix. The CLI prints them as one line and exits with code 2."""


class SkySearchError(Exception):
    """An expected error: bad input, missing data or model, locked store. Never a traceback."""


class UsageError(SkySearchError):
    """The command cannot run as asked (missing path, unknown channel, bad time...)."""


class NotFoundError(SkySearchError):
    """Something asked for does not exist (frame, clip, model, collection)."""


class StoreError(SkySearchError):
    """The vector store cannot be used (locked by another process, unreachable server...)."""


class DamagedError(StoreError):
    """A workspace file is damaged (truncated, garbled, inconsistent with the catalog).

    ``path`` names the file, ``what`` says what is wrong; the workspace repair rebuilds it.
    """

    def __init__(self, path: object, what: str) -> None:
        self.path = str(path)
        self.what = what
        super().__init__(f"{path} is damaged: {what}; run `skysearch repair` to rebuild it")
