"""``skysearch ingest``, ``ingest-track`` and ``clips``: archive files -> frame store, catalogs."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from skysearch.cli.app import app
from skysearch.cli.options import (
    AddressOption,
    EngineName,
    EngineOption,
    JsonOption,
    ProfilesOption,
    SourceOption,
    WorkspaceOption,
    input_path,
    names,
    one_name,
)
from skysearch.cli.output import emit_json, info

from skysearch.config import load_settings


@app.command()
def ingest(
    paths: Annotated[
        list[Path],
        typer.Argument(help="Folders, files or zip archives to ingest.", parser=input_path),
    ],
    source: SourceOption = "auto",
    profiles: ProfilesOption = None,
    workers: Annotated[
        int, typer.Option(help="Decode processes (0 = one per CPU core).", min=0)
    ] = 0,
    commit_every: Annotated[
        int, typer.Option(help="Frames per catalog commit.", hidden=True)
    ] = 512,
    bad_frames: Annotated[
        str | None,
        typer.Option(
            help="Frames with physically impossible values (HDF5/NetCDF/zarr profiles): skip, "
            "keep (flagged suspect) or repair from clean neighbours. Default: the profile's."
        ),
    ] = None,
    engine: EngineOption = EngineName.local,
    address: AddressOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Ingest satellite archive files into the frame store and the Parquet frame catalog.

    Idempotent and resumable: re-running skips what is already in, a killed run resumes.
    Bad files are skipped and listed with their reason (exit code 0; --json and the saved
    report have them all); `skysearch update`, made for schedulers, exits 1 then.

    Example: skysearch ingest ../shared/data/goes-irma-2017 --source auto -w ws
    """
    from skysearch.ingest.engines import get_engine
    from skysearch.ingest.pipeline import ingest as run_ingest

    settings = load_settings(workspace=workspace)
    with closing(get_engine(engine.value, address)) as decoder:
        report = run_ingest(
            paths,
            settings.workspace,
            source=source,
            profile_dirs=profiles,
            workers=workers or None,
            commit_every=max(1, commit_every),
            engine=decoder,
            bad_frames=bad_frames,
        )
    for item in report.skipped[:20]:
        info(f"skipped {item['path']}: {item['reason']}")
    if len(report.skipped) > 20:
        info(f"... {len(report.skipped) - 20} more skipped (see {report.report_path})")
    info(report.summary_line())
    from skysearch.ingest.similarity import SketchStore  # per-frame similarity sketches

    info(SketchStore(settings.workspace).update().summary_line())
    if json_out:
        emit_json(report.to_dict())


@app.command()
def clips(
    length: Annotated[int, typer.Option(help="Frames per clip (L).", min=1, max=1000)] = 12,
    gap: Annotated[int, typer.Option(help="Minutes between clip frames (G).", min=1)] = 60,
    channels: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated channels of multi-channel clips, e.g. ir,wv. "
            "Default: single-channel clips for every channel."
        ),
    ] = None,
    tolerance: Annotated[
        int, typer.Option(help="Minutes a frame may sit from its step's time.", min=0)
    ] = 15,
    satellite: Annotated[str | None, typer.Option(help="Only this satellite.")] = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Assemble clips (L frames G minutes apart) from the frame catalog into the clip catalog.

    Start times step through every frame of the first channel; a step with no frame within
    the tolerance makes the clip incomplete (skipped, counted). Re-runs change nothing.

    Example: skysearch clips --length 12 --gap 60 --channels ir,wv --tolerance 15 -w ws
    """
    from skysearch.ingest.clips import build_clips

    settings = load_settings(workspace=workspace)
    report = build_clips(
        settings.workspace,
        length=length,
        gap_minutes=gap,
        channels=names(channels, "channels") or None,
        tolerance_minutes=tolerance,
        satellite=one_name(satellite, "satellite"),
    )
    for spec, count in report.by_spec.items():
        info(f"  {spec}: {count} clips")
    info(report.summary_line())
    if json_out:
        emit_json(report.to_dict())


@app.command("ingest-track")
def ingest_track(
    path: Annotated[
        Path,
        typer.Argument(
            help="A JMA best-track file EVENT.tsv, or a folder of them (the event id is "
            "the file name)."
        ),
    ],
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Load JMA best tracks (hourly class, central pressure, wind, centre) of ingested events.

    A file with any bad row is rejected whole, each bad row listed as FILE:LINE: why; the other
    files load; exit code 1 when any was rejected. Re-loading the same rows changes nothing.
    An event without frames in the catalog is an error (in a folder: skipped and listed).

    Example: skysearch ingest-track ../shared/data/digital-typhoon/jma -w ws
    """
    from skysearch.ingest.tracks import ingest_tracks

    settings = load_settings(workspace=workspace)
    report = ingest_tracks(settings.workspace, path)
    for item in report.rejected[:20]:
        where = f"{item['path']}:{item['line']}" if item["line"] else item["path"]
        info(f"rejected {where}: {item['reason']}")
    if len(report.rejected) > 20:
        info(f"... {len(report.rejected) - 20} more problems (see --json)")
    if report.unknown_events:
        info(f"skipped (no frames of the event): {', '.join(report.unknown_events)}")
    info(report.summary_line())
    if json_out:
        emit_json(report.to_dict())
    if report.rejected:
        raise typer.Exit(1)
