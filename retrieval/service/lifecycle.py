"""The service's start-up and readiness: load once in the background, say what ``/ready`` says,
and come back after ``skysearch repair`` without a restart.

States: starting -> loading -> ready | failed. A start that failed on a damaged workspace file
loads again once the file checks out (checked at most every ``RETRY_S``, by one request at a
time); a damaged file a request meets after start-up makes ``/ready`` answer not ready until
the checks pass again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from skysearch.atomic import file_identity
from skysearch.errors import SkySearchError

log = logging.getLogger("skysearch.service")
RETRY_S = 2.0  # a start failed on damage: how often requests check whether it was repaired


@dataclass
class Readiness:
    """What ``/ready`` reports."""

    ready: bool
    state: str  # "starting", "loading", "ready", "failed"
    detail: str
    load_seconds: float | None = None
    store: str | None = None
    collections: dict[str, int] = field(default_factory=dict)
    searches: dict[str, str] = field(default_factory=dict)  # kind -> "ok" or why not


class Lifecycle:
    """Checks the workspace's files (``check_intact`` raises a ``SkySearchError`` naming a
    damaged one), then runs ``load`` once (it returns the searches available, kind -> "ok" or
    why not), and keeps the state. ``check_damage`` checks again what a damage a request met
    named (e.g. its frame row), once its file changed."""

    def __init__(
        self,
        load: Callable[[], dict[str, str]],
        check_intact: Callable[[], None],
        check_damage: Callable[[SkySearchError], None] = lambda exc: None,
    ) -> None:
        self._load_fn = load
        self._check_intact = check_intact
        self._check_damage = check_damage
        self.state = "starting"
        self.detail = "not started"
        self.load_seconds: float | None = None
        self.searches: dict[str, str] = {}
        # damaged workspace files requests met since, by path: the error, the file's identity
        self._damage: dict[str | None, tuple[SkySearchError, tuple]] = {}
        self._damaged_at_start = False  # loading failed on it: loads again once it is whole
        self._retry_lock = threading.Lock()
        self._retried = 0.0  # when the workspace was last checked for that
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def start(self, background: bool = True) -> None:
        """Load everything; in a daemon thread when ``background`` (the state tells when)."""
        if self.state in ("loading", "ready"):
            return
        self.state, self.detail = "loading", "loading the store, catalogs and models"
        if background:
            self._thread = threading.Thread(target=self._run, name="skysearch-load", daemon=True)
            self._thread.start()
        else:
            self._run()

    def wait(self, timeout: float | None = None) -> None:
        """Block until loading has ended."""
        if self._thread is not None:
            self._thread.join(timeout)

    def close(self) -> None:
        self.wait()
        self._thread = None
        self.state, self.detail = "starting", "closed"

    def _run(self) -> None:
        started = time.perf_counter()
        self._damaged_at_start = False
        try:
            try:
                self._check_intact()  # a damaged file is a failed start, named
            except SkySearchError:
                self._damaged_at_start = True  # until repaired: see load_when_repaired
                raise
            self.searches = self._load_fn()
        except SkySearchError as exc:
            self.state, self.detail = "failed", str(exc)
            log.error("service failed to load: %s", exc)
            return
        except Exception as exc:  # noqa: BLE001 - reported by /ready, logged with traceback
            self.state, self.detail = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("service failed to load")
            return
        self.load_seconds = round(time.perf_counter() - started, 3)
        self.state, self.detail = "ready", "store, catalogs and models loaded"
        log.info("service ready in %.1f s: %s", self.load_seconds, self.searches)

    def note_damage(self, exc: SkySearchError) -> None:
        """A request met a damaged workspace file (``DamagedError``): not ready until the file
        changed (``skysearch repair`` rewrote it), the start-up checks pass again and
        ``check_damage`` passes (the checks sample frames: alone they miss a damaged row)."""
        path = getattr(exc, "path", None)
        self._damage[path] = (exc, file_identity(Path(path)) if path else ())

    def load_when_repaired(self) -> None:
        """A start that failed on a damaged workspace file loads again, in the background,
        once the cheap checks pass: no restart. Checked at most every ``RETRY_S`` by one
        request at a time; the others answer at once."""
        if self.state != "failed" or not self._damaged_at_start:
            return
        if time.monotonic() - self._retried < RETRY_S or not self._retry_lock.acquire(False):
            return
        try:
            self._retried = time.monotonic()
            if self.state == "failed" and self._damaged_at_start:
                self._check_intact()
                self.state = "starting"
                self.start()
        except (SkySearchError, OSError) as exc:  # OSError: a repair renaming files meanwhile
            self.detail = str(exc)  # what is damaged now
        finally:
            self._retry_lock.release()

    def damage_remains(self) -> str | None:
        """Why the workspace is still damaged since a request met damage, else None."""
        noted = dict(self._damage)  # requests add more meanwhile: they are checked next time
        if not noted:
            return None
        for path, (exc, identity) in noted.items():
            if path and file_identity(Path(path)) == identity:
                return str(exc)  # not changed since
        try:
            self._check_intact()
            for exc, _ in noted.values():
                self._check_damage(exc)
        except (SkySearchError, OSError) as exc:
            return str(exc)
        for path in noted:
            self._damage.pop(path, None)
        return None
