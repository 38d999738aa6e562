"""``skysearch ingest`` and ``skysearch clips``: archive files -> frame store, catalogs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from skysearch.cli.app import app
from skysearch.cli.options import JsonOption, WorkspaceOption
from skysearch.cli.output import emit_json, info

from skysearch.config import load_settings


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Folders, files or zip archives to ingest.")],
    source: Annotated[
        str,
        typer.Option(help="Source profile: auto (by file name), coms, gk2a, goes-sector, ..."),
    ] = "auto",
    profiles: Annotated[
        list[Path] | None,
        typer.Option("--profiles", help="Extra folder of source-profile JSON files (repeatable)."),
    ] = None,
    workers: Annotated[int, typer.Option(help="Decode processes (0 = one per CPU core).")] = 0,
    commit_every: Annotated[
        int, typer.Option(help="Frames per catalog commit.", hidden=True)
    ] = 512,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Ingest satellite archive files into the frame store and the Parquet frame catalog.

    Idempotent and resumable: re-running skips what is already in, a killed run resumes.

    Example: skysearch ingest ../shared/data/goes-irma-2017 --source auto -w ws
    """
    from skysearch.ingest.pipeline import ingest as run_ingest

    settings = load_settings(workspace=workspace)
    report = run_ingest(
        paths,
        settings.workspace,
        source=source,
        profile_dirs=profiles,
        workers=workers or None,
        commit_every=max(1, commit_every),
    )
    for item in report.skipped[:20]:
        info(f"skipped {item['path']}: {item['reason']}")
    if len(report.skipped) > 20:
        info(f"... {len(report.skipped) - 20} more skipped (see {report.report_path})")
    info(report.summary_line())
    if json_out:
        emit_json(report.to_dict())
