"""Options shared by many commands, so every command spells them the same way."""

from __future__ import annotations

import math
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from skysearch.errors import UsageError


def names(text: str | None, param: str) -> tuple[str, ...]:
    """``"A, B,,C"`` -> ``("A", "B", "C")``; an option not given -> ``()``. A value that names
    nothing (``--label "$UNSET"``) is refused rather than read as no filter or the default;
    ``param`` is the option's parameter name, for the message."""
    if text is None:
        return ()
    found = tuple(n.strip() for n in text.split(",") if n.strip())
    if not found:
        raise UsageError(f"{{{param}}} names nothing", params=[param])
    return found


def one_name(text: str | None, param: str) -> str | None:
    """One name (stripped), as :func:`names` reads it; a list is refused."""
    given = names(text, param)
    if len(given) > 1:
        raise UsageError(f"{{{param}}} takes one name, got {', '.join(given)}", params=[param])
    return given[0] if given else None


def folder_path(text: str) -> Path:
    """A folder named on the command line: an empty name (``-w "$WS"`` with WS unset) is refused
    rather than read as the current directory."""
    if not text.strip():
        raise typer.BadParameter("an empty name; name a folder (. for the current one)")
    return Path(text)


def input_path(text: str) -> Path:
    """A folder, file or zip archive to load: an empty name (an unset ``"$DIR"``) is refused
    rather than read as the current directory (which would load whatever lies there)."""
    if not text.strip():
        raise typer.BadParameter("an empty name (an unset variable?): name a folder, file or zip")
    return Path(text)


WorkspaceOption = Annotated[
    Path | None,
    typer.Option(
        "--workspace",
        "-w",
        help="Workspace folder (catalogs, frames, models, embedded store). "
        "Default: $SKYSEARCH_WORKSPACE, skysearch.toml, or ./skysearch-workspace.",
        show_default=False,
        parser=folder_path,
        metavar="PATH",
    ),
]
JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON object on stdout (logs go to stderr).")
]
ClipEventOption = Annotated[
    str | None,
    typer.Option("--event", help="For a clip given by time: its event (two storms at one time)."),
]
SourceOption = Annotated[
    str,
    typer.Option(help="Source profile: auto (by file name), coms, gk2a, goes-sector, ..."),
]
ProfilesOption = Annotated[
    list[Path] | None,
    typer.Option(
        "--profiles",
        help="Extra folder of source-profile JSON files (repeatable).",
        parser=folder_path,
        metavar="PATH",
    ),
]


class EngineName(str, Enum):
    local = "local"
    ray = "ray"


EngineOption = Annotated[
    EngineName,
    typer.Option(
        help="Where the decoding and embedding run: local (processes on this machine) or ray "
        "(Ray tasks, on a local Ray or the cluster at --address; needs the ray extra of "
        "skysearch).",
    ),
]
AddressOption = Annotated[
    str | None,
    typer.Option(
        help="With --engine ray: the Ray cluster, ray://HOST:PORT. Default: a local Ray "
        "started for this run.",
        show_default=False,
    ),
]
DeviceOption = Annotated[
    str | None,
    typer.Option(
        help="Where models run: auto (CUDA when available), cpu, cuda or cuda:N. "
        "Default: $SKYSEARCH_DEVICE, skysearch.toml, or auto.",
        show_default=False,
    ),
]
ThreadsOption = Annotated[
    int,
    typer.Option(
        help="CPU threads for torch (0 = one per CPU this process may use). On a busy shared "
        "machine 1 is often fastest.",
        min=0,
        max=256,  # 100000 made the thread pools fail to map their stacks (a crash, exit 139)
    ),
]


def set_threads(threads: int) -> None:
    """Apply a ``--threads`` value (0 keeps the per-CPU default set at start-up)."""
    if threads > 0:
        import torch

        torch.set_num_threads(threads)


def share(value: float) -> float:
    """Option callback for a share of a time range held out: 0 < x < 1."""
    if not 0 < value < 1:
        raise typer.BadParameter(f"must be between 0 and 1 (both excluded), got {value}")
    return value


def share_or_none(value: float) -> float:
    """Option callback for a share of a time range that may be 0 (none): 0 <= x < 1."""
    if not 0 <= value < 1:
        raise typer.BadParameter(f"must be at least 0 and below 1, got {value}")
    return value


def positive(value: float | None) -> float | None:
    """Option callback for learning rates: a finite number above 0 (click's ranges let nan
    and inf through)."""
    if value is not None and not (math.isfinite(value) and value > 0):
        raise typer.BadParameter(f"must be a finite number > 0, got {value}")
    return value
