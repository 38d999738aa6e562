"""The update job's state file, ``<workspace>/update.json``.

``built_at_points``: per store and catalog collection, the point count at the last vector-index
build the job finished (a build killed midway runs again). ``last_run``: when the last run
started, its inputs, and when it finished; it stays unfinished when the run was killed or
stopped by an error, which ``skysearch doctor`` reports with the command that completes it.
A damaged file counts as absent: it costs one index build, never a crash.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skysearch.atomic import atomic_write_json
from skysearch.config import Workspace

STATE_FILE = "update.json"
#: The job's lock file: held by a running job (the kernel drops it when the job dies).
LOCK_FILE = ".update.lock"


def read_state(path: Path) -> dict[str, Any]:
    """The job's state; what is damaged in it counts as absent."""
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):  # ValueError: not UTF-8, not JSON
        return {}
    if not isinstance(state, dict):
        return {}
    built = state.get("built_at_points", {})
    if not isinstance(built, dict) or not all(
        isinstance(counts, dict) and all(isinstance(n, int) for n in counts.values())
        for counts in built.values()
    ):
        return {}
    run = state.get("last_run")
    if run is not None and not (
        isinstance(run, dict)
        and isinstance(run.get("started"), str)
        and isinstance(run.get("args"), list)
        and all(isinstance(arg, str) for arg in run["args"])
        and isinstance(run.get("finished"), str | None)
    ):
        del state["last_run"]
    return state


def write_state(workspace: Workspace, state: dict[str, Any]) -> None:
    atomic_write_json(workspace.root / STATE_FILE, state, indent=1)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def run_started(workspace: Workspace, args: list[str]) -> None:
    """Record a run's start, with the arguments that run it again (its inputs and options),
    as not finished."""
    state = read_state(workspace.root / STATE_FILE)
    state["last_run"] = {"started": _now(), "args": args, "finished": None}
    write_state(workspace, state)


def run_finished(workspace: Workspace) -> None:
    state = read_state(workspace.root / STATE_FILE)
    if "last_run" in state:
        state["last_run"]["finished"] = _now()
        write_state(workspace, state)


def last_run(workspace: Workspace) -> dict[str, Any] | None:
    """``{"started", "args", "finished"}`` of the last run (None: no run recorded)."""
    return read_state(workspace.root / STATE_FILE).get("last_run")
