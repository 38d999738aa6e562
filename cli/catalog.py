"""``skysearch catalog export``: the frame catalog for other tools."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from skysearch.cli.groups import catalog_app
from skysearch.cli.options import JsonOption, WorkspaceOption, folder_path
from skysearch.cli.output import emit_json, info, per_name

from skysearch.config import load_settings


@catalog_app.command("export")
def export_cmd(
    stac: Annotated[
        Path,
        typer.Option(
            help="Write a self-contained STAC catalog (one Item per frame) here: a new or "
            "empty folder.",
            parser=folder_path,
            metavar="PATH",
        ),
    ],
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Export the frame catalog as STAC Items (one Collection per satellite).

    Example: skysearch catalog export --stac stac/ -w ws
    """
    from skysearch.ingest.stac import export_stac

    report = export_stac(load_settings(workspace=workspace).workspace, stac)
    total = sum(report.collections.values())
    info(
        f"catalog export: {total} STAC items in {report.folder}/catalog.json "
        f"({per_name(report.collections)})"
    )
    if json_out:
        emit_json(report.to_dict())
