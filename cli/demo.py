"""``skysearch demo``: the README path end to end on the bundled sample
(:mod:`skysearch.workflows.demo`)."""

from __future__ import annotations

import shlex
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer
from skysearch.cli.app import app
from skysearch.cli.options import DeviceOption, JsonOption, ThreadsOption, WorkspaceOption
from skysearch.cli.output import emit_json, info, table
from skysearch.workflows.demo import DemoConfig

from skysearch.config import load_settings

DEFAULTS = DemoConfig()


def page_hint(workspace: str) -> str:
    """The demo's last line: how to look at its workspace in the web page."""
    return (
        f"see it in a browser: skysearch serve -w {shlex.quote(workspace)}, "
        "then open http://127.0.0.1:8000/"
    )


@app.command()
def demo(
    sample: Annotated[
        Path | None,
        typer.Option(
            help="Folder holding goes-irma-2017/ and rsscn7-mini/ (default: data/sample)."
        ),
    ] = None,
    frame_epochs: Annotated[
        int, typer.Option(help="Frame encoder epochs.", min=1)
    ] = DEFAULTS.frame_epochs,
    clip_epochs: Annotated[
        int, typer.Option(help="Clip encoder epochs.", min=1)
    ] = DEFAULTS.clip_epochs,
    text_epochs: Annotated[
        int, typer.Option(help="Text-image fine-tuning epochs.", min=1)
    ] = DEFAULTS.text_epochs,
    threads: ThreadsOption = 0,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Ingest the bundled real sample, train small encoders, index, search by clip and by text.

    No server, no network. Prints each step, how long it took and where the outputs are.
    Re-running reuses what is done (models are remembered in WORKSPACE/demo/state.json).

    Example: skysearch demo -w demo-workspace
    """
    from skysearch.workflows.demo import run_demo

    settings = load_settings(workspace=workspace, device=device)
    config = DemoConfig(
        frame_epochs=frame_epochs,
        clip_epochs=clip_epochs,
        text_epochs=text_epochs,
        threads=threads,
    )
    if sample is not None:
        config = replace(config, sample=sample.resolve())
    report = run_demo(settings, config, say=info)
    rows = [
        {"step": s.name, "seconds": f"{s.seconds:.1f}", "result": s.detail} for s in report.steps
    ]
    info("")
    info(table(rows, ["step", "seconds", "result"]))
    info(f"total {report.total_seconds:.1f} s")
    for kind, found in (("clip", report.clip_search), ("frame", report.frame_search)):
        hits = found.get("results", [])
        if hits:
            ranked = ", ".join(f"#{h['rank']} {h['start']} {h['score']:.3f}" for h in hits)
            info(f"{kind} search: {ranked}")
    texts = report.text_search.get("results", [])
    if texts:
        info(
            f"text search {report.text_search['query']['text']!r}: "
            + ", ".join(f"#{h['rank']} {h['label']} {h['score']:.3f}" for h in texts)
        )
    for name, path in report.outputs.items():
        info(f"{name}: {path}")
    info(
        "next: skysearch search clip --help, skysearch search frame --help, "
        "skysearch search text --help, skysearch doctor"
    )
    info(page_hint(report.workspace))
    if json_out:
        emit_json(report.to_dict())
