"""``skysearch doctor``: check the installation and the workspace, say what to do next."""

from __future__ import annotations

from typing import Annotated

import typer
from skysearch.cli.app import app
from skysearch.cli.options import JsonOption, WorkspaceOption
from skysearch.cli.output import emit_json, info, table

from skysearch.config import load_settings


@app.command()
def doctor(
    deep: Annotated[
        bool, typer.Option("--deep", help="Verify every checksum of frames and sketches.")
    ] = False,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Check torch, pretrained weights, data paths, the workspace's files, models and store.

    Says what is missing or damaged and the command that fixes it. The workspace's catalogs,
    frame store and sketches get cheap checks (sizes, shapes, sampled checksums); --deep reads
    them all. Exit code 1 when something is broken (a "fail"), 0 otherwise ("todo" lines are
    steps not done yet).

    Example: skysearch doctor -w ws --deep
    """
    from skysearch.workflows.doctor import FAIL, diagnose

    settings = load_settings(workspace=workspace)
    checks = diagnose(settings, deep=deep)
    info(table([c.to_dict() for c in checks], ["name", "status", "detail", "fix"]))
    failed = [c for c in checks if c.status == FAIL]
    todo = [c for c in checks if c.status == "todo"]
    info(f"{len(checks)} checks: {len(failed)} failed, {len(todo)} to do")
    if json_out:
        emit_json({"ok": not failed, "checks": [c.to_dict() for c in checks]})
    if failed:
        raise SystemExit(1)  # main() passes SystemExit through (typer.Exit becomes 0 there)
