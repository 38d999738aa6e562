"""``skysearch update``: the ingestion job in one idempotent step
(:mod:`skysearch.workflows.update`)."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from skysearch.cli.app import app, failure
from skysearch.cli.options import (
    AddressOption,
    DeviceOption,
    EngineName,
    EngineOption,
    JsonOption,
    ProfilesOption,
    SourceOption,
    ThreadsOption,
    WorkspaceOption,
    input_path,
    set_threads,
)
from skysearch.cli.output import emit_json, info
from skysearch.workflows.update import INDEX_AFTER

from skysearch.config import load_settings


@app.command()
def update(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="New folders, files or zip archives to load.",
            parser=input_path,
        ),
    ],
    clip_spec: Annotated[
        list[str] | None,
        typer.Option(
            "--clip-spec",
            help="Clips to assemble, LxG (e.g. 12x60: every channel) or CHANNELS_LxGm (e.g. "
            "ir+wv_12x60m); repeatable. Default: every spec the clip catalog has.",
        ),
    ] = None,
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            help="Frame or clip model to index with (repeatable). Default: every registered "
            "model that fits the data.",
        ),
    ] = None,
    index_after: Annotated[
        int,
        typer.Option(
            help="Build a collection's vector index once this many points arrived since its "
            "last build.",
            min=1,
        ),
    ] = INDEX_AFTER,
    source: SourceOption = "auto",
    profiles: ProfilesOption = None,
    workers: Annotated[
        int,
        typer.Option(help="Processes decoding files and reading frames (0 = one per CPU).", min=0),
    ] = 0,
    engine: EngineOption = EngineName.local,
    address: AddressOption = None,
    threads: ThreadsOption = 0,
    device: DeviceOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Load new archive files: ingest, sketch, assemble clips, index with every fitting model.

    Idempotent (a second run on the same paths adds nothing and says so) and resumable (a run
    killed at any moment is finished by the next). One progress line per stage on stderr.
    Exit code 0: everything found was loaded; 1: some files were skipped or a model failed
    (listed, with the reason); 2: usage error, or the workspace or its store is in use by
    another process; 3: an unexpected failure (its traceback is printed).

    Example: skysearch update /archive/goes/2024-06-01 -w ws --json
    """
    from skysearch.ingest.engines import get_engine
    from skysearch.workflows.update import run_update

    try:
        decoder = get_engine(engine.value, address)
        set_threads(threads)
        settings = load_settings(workspace=workspace, device=device)
        with closing(decoder):  # one Ray for the ingest and index stages
            report = run_update(
                settings,
                paths,
                clip_specs=clip_spec or (),
                model_ids=model or (),
                source=source,
                profile_dirs=profiles,
                workers=workers or None,
                index_after=index_after,
                engine=decoder,
                say=info,
            )
    except (Exception, KeyboardInterrupt) as exc:  # a scheduler's JSON log gets a line too
        if json_out:
            code, error = failure(exc)  # what `main` prints and exits with
            inputs = [str(Path(p).resolve()) for p in paths]  # as a run's report has them
            emit_json({"exit_code": code, "error": error, "inputs": inputs})
        raise
    info(report.summary_line())
    if json_out:
        emit_json(report.to_dict())
    if report.exit_code:
        raise SystemExit(report.exit_code)
