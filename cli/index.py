"""``skysearch index clips|frames``: embed the catalogs into the store (or Parquet parts)."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Annotated

import typer
from skysearch.cli.groups import index_app
from skysearch.cli.options import (
    AddressOption,
    DeviceOption,
    EngineName,
    EngineOption,
    JsonOption,
    WorkspaceOption,
)
from skysearch.cli.output import emit_json, info

from skysearch.config import load_settings


def _index_report(report, json_out: bool) -> None:
    where = f"to {report.parquet}" if report.parquet else "into the store"
    again = f" ({report.changed} again: frames, event, track or footprint changed)"
    removed = f", {report.removed} removed (no longer in the catalog)"
    info(
        f"{report.collection}: {report.written} vectors written {where}"
        + (again if report.changed else "")
        + (removed if report.removed else "")
        + f", {report.skipped_existing} already indexed by {report.model_id} (vector name "
        f"{report.vector_name}), {report.total} in the catalog"
    )
    if json_out:
        emit_json(report.to_dict())


def _index_catalog(index, settings, model, workers, satellite, engine, address, to_parquet):
    """Run ``index_clips`` or ``index_frames`` on the chosen engine."""
    from skysearch.ingest.engines import get_engine

    with closing(get_engine(engine.value, address)) as runner:
        return index(
            settings,
            model,
            workers=workers,
            engine=runner,
            to_parquet=to_parquet,
            satellite=satellite,
        )


WorkersOption = Annotated[
    int, typer.Option(help="DataLoader worker processes reading frames.", min=0)
]
ToParquetOption = Annotated[
    Path | None,
    typer.Option(
        "--to-parquet",
        help="Leave the store alone: each task writes the points it embedded as a Parquet "
        "part file under this folder (COLLECTION/MODEL_ID/part-*.parquet); load them "
        "later with `skysearch store import --format parquet DIR`. A re-run skips the parts "
        "already written.",
        show_default=False,
    ),
]
IndexSatelliteOption = Annotated[
    str | None,
    typer.Option(
        help="Only this satellite (default: every satellite the model was trained on). With "
        "--model, a satellite the model never saw (same channels): cross-satellite vectors."
    ),
]


@index_app.command("clips")
def index_clips_command(
    model: Annotated[str | None, typer.Option(help="Clip model id (default: the latest).")] = None,
    device: DeviceOption = None,
    workers: WorkersOption = 2,
    satellite: IndexSatelliteOption = None,
    engine: EngineOption = EngineName.local,
    address: AddressOption = None,
    to_parquet: ToParquetOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Embed every clip with a clip model and upsert it into the clips collection (resumable).

    Example: skysearch index clips -w ws
    """
    from skysearch.retrieval.indexing.catalogs import index_clips

    settings = load_settings(workspace=workspace, device=device)
    report = _index_catalog(
        index_clips, settings, model, workers, satellite, engine, address, to_parquet
    )
    _index_report(report, json_out)


@index_app.command("frames")
def index_frames_command(
    model: Annotated[str | None, typer.Option(help="Frame model id (default: the latest).")] = None,
    device: DeviceOption = None,
    workers: WorkersOption = 2,
    satellite: IndexSatelliteOption = None,
    engine: EngineOption = EngineName.local,
    address: AddressOption = None,
    to_parquet: ToParquetOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Embed every frame with a frame model and upsert it into the frames collection (resumable).

    Example: skysearch index frames -w ws
    """
    from skysearch.retrieval.indexing.catalogs import index_frames

    settings = load_settings(workspace=workspace, device=device)
    report = _index_catalog(
        index_frames, settings, model, workers, satellite, engine, address, to_parquet
    )
    _index_report(report, json_out)
