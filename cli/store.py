"""``skysearch store info|export|import|optimize``: inspect the vector store and move it."""

from __future__ import annotations

import warnings
from dataclasses import asdict
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from skysearch.cli.groups import store_app
from skysearch.cli.options import JsonOption, WorkspaceOption
from skysearch.cli.output import emit_json, info, per_name, table

from skysearch.config import Workspace, load_settings
from skysearch.errors import SkySearchError, some_of

if TYPE_CHECKING:  # the store (qdrant-client: ~1 s to import) loads when a command needs it
    from skysearch.retrieval.store import VectorStore

QdrantUrlOption = Annotated[
    str | None,
    typer.Option(
        "--qdrant-url",
        help="Qdrant server URL (default: $QDRANT_URL; none = the workspace's embedded store). "
        "':memory:' for a throwaway store.",
        show_default=False,
    ),
]
CollectionOption = Annotated[
    list[str] | None,
    typer.Option("--collection", "-c", help="Collection (repeatable). Default: all."),
]


def _open(workspace: Path | None, qdrant_url: str | None, new: bool = False) -> VectorStore:
    """The configured store; an embedded one must be in an existing workspace unless ``new``
    (a mistyped -w would otherwise show an empty store)."""
    from skysearch.retrieval.store import open_store

    settings = load_settings(workspace=workspace, qdrant_url=qdrant_url)
    if not new and not settings.qdrant_url:
        settings.workspace.existing()
    return open_store(settings)


@store_app.command("info")
def info_cmd(
    workspace: WorkspaceOption = None,
    qdrant_url: QdrantUrlOption = None,
    collection: CollectionOption = None,
    json_out: JsonOption = False,
) -> None:
    """Collections, points, indexed vectors, segments, disk size, vectors and payload indexes.

    Example: skysearch store info -w ws --json
    """
    with _open(workspace, qdrant_url) as store:
        names = collection or store.collections()
        infos = [store.info(name) for name in names]
        where = store.where
        foreign = store.foreign_folders()
    info(f"{where}: {len(infos)} collection(s)")
    for path in foreign:
        warnings.warn(
            f"{path} is not a collection (none of the engine's files): left out", stacklevel=1
        )
    rows = [
        {
            "collection": i.name,
            "points": i.points,
            "indexed": i.indexed_vectors,
            "segments": i.segments,
            "disk_mb": "-" if i.disk_bytes is None else f"{i.disk_bytes / 2**20:.1f}",
            "vectors": ", ".join(f"{k}:{v}" for k, v in i.vectors.items()),
            "indexes": len(i.payload_indexes),
        }
        for i in infos
    ]
    if rows:
        info(table(rows, list(rows[0])))
    if json_out:
        emit_json({"store": where, "collections": [asdict(i) for i in infos]})


class ExportFormat(str, Enum):
    jsonl = "jsonl"
    parquet = "parquet"


@store_app.command("export")
def export_cmd(
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Output .jsonl (or .jsonl.gz) file; a folder for --format parquet."
        ),
    ],
    format_: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="jsonl: one file `store import` reads back; parquet: a folder of "
            "COLLECTION/VECTOR_NAME.parquet files (fixed-size float32 vectors, typed "
            "payload columns) for DuckDB, polars, pandas.",
        ),
    ] = ExportFormat.jsonl,
    workspace: WorkspaceOption = None,
    qdrant_url: QdrantUrlOption = None,
    collection: CollectionOption = None,
    json_out: JsonOption = False,
) -> None:
    """Export collections (ids, named vectors, payloads) to a JSON Lines file or Parquet.

    Example: skysearch store export -w ws --out store.jsonl.gz
    """
    from skysearch.retrieval.store.parquet_export import export_parquet
    from skysearch.retrieval.store.transfer import export_store

    write = export_parquet if format_ is ExportFormat.parquet else export_store
    with _open(workspace, qdrant_url) as store:
        counts = write(store, out, collection or None)
        where = store.where
    info(f"exported {sum(counts.values())} points from {where} to {out} ({per_name(counts)})")
    if json_out:
        emit_json({"out": str(out), "store": where, "points": counts})


@store_app.command("import")
def import_cmd(
    file: Annotated[
        Path,
        typer.Argument(
            help="A file written by `skysearch store export`; with --format parquet a .parquet "
            "file or a folder of them (an export, or the part files of `index ... --to-parquet`)."
        ),
    ],
    format_: Annotated[
        ExportFormat,
        typer.Option(
            "--format",
            help="jsonl: a `store export` file; parquet: point files (each names its "
            "collection, vector name and dimension), streamed in batches.",
        ),
    ] = ExportFormat.jsonl,
    workspace: WorkspaceOption = None,
    qdrant_url: QdrantUrlOption = None,
    optimize: Annotated[
        bool, typer.Option("--optimize/--no-optimize", help="Build the index after loading.")
    ] = True,
    json_out: JsonOption = False,
) -> None:
    """Import an export into the configured store: points are added to (or replace those of the
    same id in) its collections, which are created with their payload indexes where missing.

    Idempotent: points keep their ids, so a re-run (or a run after a killed one) ends the same.

    Example: QDRANT_URL=http://localhost:6333 skysearch store import store.jsonl.gz
    """
    from skysearch.retrieval.store.parquet_import import import_parquet
    from skysearch.retrieval.store.transfer import import_store

    load = import_parquet if format_ is ExportFormat.parquet else import_store
    vector_names: set[str] = set()
    with _open(workspace, qdrant_url, new=True) as store:
        counts = load(store, file, vector_names=vector_names)
        if optimize:
            for name in counts:
                store.optimize(name)
        where = store.where
    info(f"imported {sum(counts.values())} points into {where} ({per_name(counts)})")
    _warn_foreign_models(load_settings(workspace=workspace).workspace, vector_names)
    if json_out:
        emit_json({"file": str(file), "format": format_.value, "store": where, "points": counts})


def _warn_foreign_models(ws: Workspace, vector_names: set[str]) -> None:
    """Searches embed queries with the workspace's registered models: points imported under
    another workspace's model ids answer none of them (silently) until those models are here."""
    from skysearch.encoders.registry import list_models
    from skysearch.retrieval.store.schema import DEFAULT_VECTOR  # not a model's: the plain API's

    if not ws.root.is_dir():  # a server loaded from a machine without a workspace
        return
    try:
        registered = {m.model_id for m in list_models(ws)}
    except SkySearchError:  # a damaged registry: doctor says so; the import itself is done
        return
    foreign = sorted(vector_names - registered - {DEFAULT_VECTOR})
    if foreign:
        warnings.warn(
            f"the imported vectors of {some_of(foreign)} were made by models not registered in "
            f"workspace {ws.root}: its searches will not return them until those models' "
            f"folders are copied into {ws.models_dir} from the workspace that made them and "
            f"registered (skysearch repair -w {ws.root})",
            stacklevel=1,
        )


@store_app.command("optimize")
def optimize_cmd(
    workspace: WorkspaceOption = None,
    qdrant_url: QdrantUrlOption = None,
    collection: CollectionOption = None,
    json_out: JsonOption = False,
) -> None:
    """Build the HNSW index and merge segments (run after bulk loads; blocks while it runs).

    Example: skysearch store optimize -w ws -c clips
    """
    import time

    timings: dict[str, float] = {}
    with _open(workspace, qdrant_url) as store:
        names = collection or store.collections()
        if not names:
            info("the store has no collection yet: nothing to optimize (index something first)")
        for name in names:
            store.vector_config(name)  # NotFoundError for an unknown collection, before any work
        for name in names:
            info(f"optimizing {name} ...")
            started = time.monotonic()
            store.optimize(name)
            timings[name] = round(time.monotonic() - started, 2)
            info(f"optimized {name} in {timings[name]:.1f} s")
    if json_out:
        emit_json({"optimized": timings})
