"""``skysearch update``: the ingestion job. Loads new archive files in one idempotent step.

Stages, each incremental, so a job killed at any moment (even ``kill -9``) and run again ends
as an uninterrupted run would (same catalogs, point ids and vectors):

1. ingest: files not yet in the frame catalog under the same path, or changed since, are
   decoded into the frame store (``skysearch.ingest.pipeline``); bad files are skipped with a
   reason;
2. sketches: the grid-metric sketches of new frames, for every metric spec the workspace keeps;
3. clips: every clip spec the clip catalog already has (or the ones asked for) assembled again
   over the grown frame catalog; only new clips are added, unchanged files are not rewritten;
4. index: new frames and clips embedded and upserted by every registered model that fits them
   (or the ones asked for); points a model already wrote are not embedded again; a model
   that fails (a damaged checkpoint) is listed and the others still run;
5. store index: the vector index (HNSW) of a catalog collection is built when ``index_after``
   points or more arrived since the last build this job made. The point count at that build
   is kept in ``<workspace>/update.json`` per store, written once the build has finished, so
   a build that is killed runs again on the next run. Until then the newest points are searched
   exactly (brute force over the unindexed segments: cheap for a few thousand points).

One job at a time per workspace (``.update.lock``). The vector store is opened, and each
catalog collection in it taken, before anything changes: a store another process holds
(``skysearch serve`` on the embedded engine) stops the job before it starts (a StoreError).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skysearch.workflows.steps import Steps
from skysearch.workflows.update_report import UpdateReport
from skysearch.workflows.update_state import (
    LOCK_FILE,
    STATE_FILE,
    read_state,
    run_finished,
    run_started,
    write_state,
)

from skysearch.config import Settings, Workspace
from skysearch.errors import SkySearchError, StoreError, UsageError
from skysearch.locks import job_lock

if TYPE_CHECKING:
    from skysearch.ingest.engines import Engine

#: Build a collection's vector index once this many points arrived since its last build.
INDEX_AFTER = 1000


def run_update(
    settings: Settings,
    paths: Sequence[Path],
    clip_specs: Sequence[str] = (),
    model_ids: Sequence[str] = (),
    source: str = "auto",
    profile_dirs: list[Path] | None = None,
    workers: int | None = None,
    index_after: int = INDEX_AFTER,
    say: Callable[[str], None] = print,
    progress: bool = True,
    engine: Engine | None = None,
) -> UpdateReport:
    """Load ``paths`` into the workspace: ingest, sketch, clip, index, build the store index.

    ``clip_specs`` (``12x60``, ``ir+wv_12x60m``): the clips to assemble; default: every spec
    the clip catalog holds. ``model_ids``: the frame/clip models to index with; default: every
    registered one that fits the data. ``workers``: decode and frame-reading processes (None:
    one per CPU). ``engine``: where files are decoded (default: a local process pool).
    """
    from skysearch.ingest.clip_specs import ClipSpec
    from skysearch.ingest.clips import catalog_specs
    from skysearch.ingest.pipeline import check_inputs
    from skysearch.ingest.profiles import select_profiles

    from skysearch.cpus import usable_cpus

    started = time.perf_counter()
    check_inputs(paths)
    if index_after < 1:
        raise UsageError("{index_after} must be at least 1", params=["index_after"])
    workspace = settings.workspace
    specs = [ClipSpec.from_user(text) for text in clip_specs]
    select_profiles(source, profile_dirs, workspace)  # a bad --source or --profiles: nothing made
    models = _models(workspace, model_ids)
    given = {
        "--workers": workers,
        "--index-after": index_after if index_after != INDEX_AFTER else None,
        "--device": settings.device if settings.device != "auto" else None,
    }
    if engine is not None and engine.name != "local":
        given |= {"--engine": engine.name, "--address": getattr(engine, "address", None)}
    workers = workers or usable_cpus()
    report = UpdateReport(inputs=[str(Path(p).resolve()) for p in paths])
    step = Steps("update", say, report.steps)
    workspace.ensure()
    busy = f"another update is running on {workspace.root}; wait for it to finish"
    with job_lock(workspace.root / LOCK_FILE, busy):
        # A run refused (the store or the ingest lock held by another process, a profile
        # edited, a damaged frame store) changes nothing, not even the record of an earlier
        # run that was cut off (doctor says how to finish it): the run is recorded once the
        # ingest is under way.
        store = _open_store(settings) if models else None
        again = [*report.inputs, *_options(clip_specs, model_ids, source, profile_dirs, given)]
        try:
            with step("ingest") as detail:
                _ingest(
                    workspace,
                    paths,
                    source,
                    profile_dirs,
                    workers,
                    engine,
                    progress,
                    report,
                    detail,
                    on_start=partial(run_started, workspace, again),
                )
            for line in _skip_lines(report):  # one line each, as ingest prints them
                say(line)
            with step("sketches") as detail:
                _sketches(workspace, progress, report, detail)
            with step("clips") as detail:
                _clips(workspace, specs or catalog_specs(workspace), report, detail)
            with step("index") as detail:
                if store is None:
                    detail.append("no frame or clip model registered: nothing to index")
                else:
                    _index(settings, store, models, workers, progress, report, detail, engine)
            if store is not None:
                with step("store index") as detail:
                    _build_index(workspace, store, index_after, report, detail)
        finally:
            if store is not None:
                store.close()
        run_finished(workspace)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _options(
    clip_specs: Sequence[str],
    model_ids: Sequence[str],
    source: str,
    profile_dirs: list[Path] | None,
    given: dict[str, Any],
) -> list[str]:
    """The command-line options that chose what a run loads and how (to run it again);
    ``given``: other options by flag, None where not given."""
    out = [arg for spec in clip_specs for arg in ("--clip-spec", spec)]
    out += [arg for mid in model_ids for arg in ("--model", mid)]
    out += ["--source", source] if source != "auto" else []
    out += [arg for d in profile_dirs or () for arg in ("--profiles", str(Path(d).resolve()))]
    return out + [arg for flag, value in given.items() if value for arg in (flag, str(value))]


def _models(workspace: Workspace, model_ids: Sequence[str]) -> list[tuple[str, Any]]:
    """(collection, model record) of the models to index with: the ones named (each must
    fill a catalog collection), else every registered one that does."""
    from skysearch.encoders import registry
    from skysearch.retrieval.indexing.catalogs import CATALOG_COLLECTIONS, catalog_models

    fills = {
        record.model_id: (collection, record)
        for collection in CATALOG_COLLECTIONS
        for record in catalog_models(workspace, collection)
    }
    if not model_ids:
        return list(fills.values())
    chosen = []
    for model_id in dict.fromkeys(model_ids):
        record = registry.get_model(workspace, model_id)  # NotFoundError naming known ids
        if model_id not in fills:
            raise UsageError(
                f"{{model_id}} {model_id} is a {record.kind} model; update indexes with clip "
                "models and single-channel frame models",
                params=["model_id"],
            )
        chosen.append(fills[model_id])
    return chosen


def _open_store(settings: Settings) -> Any:
    """The vector store, with each catalog collection in it opened now: one another process
    holds is a StoreError here, before the job changes anything."""
    from skysearch.retrieval.indexing.catalogs import CATALOG_COLLECTIONS
    from skysearch.retrieval.store import open_store

    store = open_store(settings)
    try:
        for name in store.collections():
            if name in CATALOG_COLLECTIONS:
                store.count(name)
    except BaseException:
        store.close()
        raise
    return store


def _ingest(
    workspace: Workspace,
    paths: Sequence[Path],
    source: str,
    profile_dirs: list[Path] | None,
    workers: int,
    engine: Engine | None,
    progress: bool,
    report: UpdateReport,
    detail: list[str],
    on_start: Callable[[], None],
) -> None:
    from skysearch.ingest.pipeline import ingest

    done = ingest(
        paths,
        workspace,
        source=source,
        profile_dirs=profile_dirs,
        workers=workers,
        progress=progress,
        engine=engine,
        on_start=on_start,
    )
    report.files = {
        "seen": done.files_seen,
        "frames_added": done.frames_added,
        "unchanged": done.unchanged,
        "identical_duplicates": done.identical_duplicates,
        "moved": done.moved,
        "skipped": len(done.skipped),
        "suspect": done.suspect,
        "repaired": done.repaired,
    }
    report.skipped = done.skipped
    report.ingest_report = done.report_path
    copies = (
        f", {done.identical_duplicates} copies of frames already in"
        if done.identical_duplicates
        else ""
    )
    detail.append(
        f"{done.files_seen} files: {done.frames_added} frames added, {done.unchanged} already "
        f"in{copies}, {len(done.skipped)} skipped; {done.frames_total} frames in the catalog"
    )


def _skip_lines(report: UpdateReport, shown: int = 20) -> list[str]:
    """The first ``shown`` files ingest skipped, with their reasons, and where the rest are."""
    lines = [f"  skipped {item['path']}: {item['reason']}" for item in report.skipped[:shown]]
    if len(report.skipped) > shown:
        more = len(report.skipped) - shown
        lines.append(f"  ... {more} more skipped (see {report.ingest_report})")
    return lines


def _sketches(
    workspace: Workspace, progress: bool, report: UpdateReport, detail: list[str]
) -> None:
    from skysearch.ingest.similarity import SketchStore, sketch_specs

    sketched = total = 0
    for spec in sketch_specs(workspace):
        done = SketchStore(workspace, spec).update(progress=progress)
        sketched, total = sketched + done.sketched, total + done.total
    report.sketches = {"sketched": sketched, "total": total}
    detail.append(f"{sketched} images sketched, {total} stored")


def _clips(workspace: Workspace, specs: list[Any], report: UpdateReport, detail: list[str]) -> None:
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.clips import ChannelsNotFound, build_clips

    if not specs:
        detail.append("no clip spec in the clip catalog yet: none assembled (give a clip spec)")
        return
    if read_frames(workspace, columns=["frame_id"]).num_rows == 0:
        detail.append("no frames in the catalog: none assembled")
        return
    for spec in specs:
        try:
            done = build_clips(
                workspace, spec.length, spec.gap_minutes, spec.channels, spec.tolerance_minutes
            )
        except ChannelsNotFound as exc:  # a channel not delivered yet: the other specs go on
            report.clips[spec.text] = {"added": 0, "total": 0, "skipped": str(exc)}
            detail.append(f"{spec.text}: none assembled: {exc}")
            continue
        report.clips[spec.text] = {
            "added": done.clips_added,
            "removed": done.clips_removed,
            "total": done.clips_total,
            "incomplete": done.incomplete,
            "by_spec": done.by_spec,
        }
        removed = f", {done.clips_removed} removed" if done.clips_removed else ""
        detail.append(
            f"{spec.text}: {done.clips_added} added{removed}, {done.clips_total} in the catalog"
        )


def _index(
    settings: Settings,
    store: Any,
    models: list[tuple[str, Any]],
    workers: int,
    progress: bool,
    report: UpdateReport,
    detail: list[str],
    engine: Engine | None = None,
) -> None:
    """Index with every model that has data to embed; a model whose data the archive does not
    hold (yet) is listed, not an error."""
    from skysearch.retrieval.indexing.catalogs import CATALOG_COLLECTIONS

    have = _data_of(settings.workspace)
    report.not_indexed = _unmodelled(settings.workspace, have)
    detail += [f"not searchable yet: {line}" for line in report.not_indexed]
    for collection, record in models:
        missing = _missing_data(record, have)
        if missing:
            report.models_skipped.append({"model_id": record.model_id, "reason": missing})
            detail.append(f"{record.model_id}: skipped ({missing})")
            continue
        _, index = CATALOG_COLLECTIONS[collection]
        try:
            done = index(
                settings,
                record.model_id,
                workers=workers,
                store=store,
                progress=progress,
                engine=engine,
            )
        except StoreError:
            raise  # the store, not the model: nothing else can be written either
        except SkySearchError as exc:
            report.models_failed.append({"model_id": record.model_id, "error": str(exc)})
            detail.append(f"{record.model_id}: FAILED ({exc})")
            continue
        report.points.setdefault(collection, {})[record.model_id] = done.written
        report.points_rewritten.setdefault(collection, {})[record.model_id] = done.rewritten
        report.points_removed.setdefault(collection, {})[record.model_id] = done.removed
        report.skipped += [
            {"path": s.get("path", ""), "reason": f"{record.model_id}: {s.get('reason', '')}"}
            for s in done.skipped
        ]
        again = (
            f" ({done.changed} embedded again: frames, event, track or footprint changed)"
            if done.changed
            else ""
        )
        removed = f", {done.removed} removed (left the catalog)" if done.removed else ""
        detail.append(
            f"{collection} by {record.model_id}: {done.written} points written{again}{removed}, "
            f"{done.skipped_existing} already indexed"
        )


def _data_of(workspace: Workspace) -> dict[str, set[tuple]]:
    """What the catalogs hold: frame (satellite, channel) pairs and clip specs."""
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.clips import read_clips, spec_keys

    frames = read_frames(workspace, columns=["satellite", "channel"])
    pairs = zip(frames["satellite"].to_pylist(), frames["channel"].to_pylist(), strict=True)
    clips = read_clips(workspace, columns=["satellite", "channels", "length", "gap_minutes"])
    return {"frame": set(pairs), "clip": set(spec_keys(clips))}


def _data_keys(record: Any) -> list[tuple]:
    """What a model embeds, as ``_data_of`` keys it (frame pairs or clip specs), one per
    satellite it was trained on."""
    from skysearch.encoders.registry import model_satellites

    data = record.config.get("data", {})
    channels = "+".join(data.get("channels", []))
    if record.kind == "frame":
        return [(sat, channels) for sat in model_satellites(data)]
    spec = (channels, data.get("length"), data.get("gap_minutes"))
    return [(sat, *spec) for sat in model_satellites(data)]


def _unmodelled(workspace: Workspace, have: dict[str, set[tuple]]) -> list[str]:
    """Frames and clip specs of the catalogs that no registered model embeds, and the command
    that makes one."""
    from skysearch.ingest.clip_specs import spec_label
    from skysearch.retrieval.indexing.catalogs import CATALOG_COLLECTIONS, catalog_models

    covered = {
        key
        for collection in CATALOG_COLLECTIONS
        for record in catalog_models(workspace, collection)
        for key in _data_keys(record)
    }
    lines = [
        f"{sat} {chan} frames have no single-channel frame model "
        f"(skysearch train frames --satellite {sat} --channels {chan})"
        for sat, chan in sorted(have["frame"])
        if (sat, chan) not in covered
    ]
    lines += [
        f"{spec_label(chans, length, gap, sat)} clips have no clip model (skysearch train frames "
        f"--channels {chans.replace('+', ',')} --length {length} --gap {gap}; then train clips)"
        for sat, chans, length, gap in sorted(have["clip"])
        if (sat, chans, length, gap) not in covered
    ]
    return lines


def _missing_data(record: Any, have: dict[str, set[tuple]]) -> str:
    """Why the catalogs hold nothing for this model to embed ("" when they do)."""
    keys = _data_keys(record)
    if not keys or not keys[0][1]:
        return "its registry entry names no satellite and channels it embeds"
    for key in keys:  # a cross-satellite model indexes every satellite it was trained on
        if record.kind == "frame" and (key[0], key[1].split("+")[0]) not in have["frame"]:
            return f"no {key[0]} {key[1]} frames in the catalog"
        if record.kind != "frame" and key not in have["clip"]:
            return f"no {key[0]} {key[1]} {key[2]}x{key[3]}m clips in the clip catalog"
    return ""


def _build_index(
    workspace: Workspace,
    store: Any,
    index_after: int,
    report: UpdateReport,
    detail: list[str],
) -> None:
    """Build the vector index of each catalog collection that got ``index_after`` points or
    more since its last build; record the count once each build has finished."""
    from skysearch.retrieval.indexing.catalogs import CATALOG_COLLECTIONS

    state = read_state(workspace.root / STATE_FILE)
    built_at = state.setdefault("built_at_points", {}).setdefault(store.where, {})
    for name in store.collections():
        if name not in CATALOG_COLLECTIONS:
            continue
        points = store.count(name)
        last = int(built_at.get(name, 0))
        new = points - last if points >= last else points
        since = (  # before the job's first build of it, every point counts as new
            f"{new} since the job's last index build"
            if name in built_at
            else "no index build by the job yet"
        )
        build = new >= index_after
        if build:
            store.optimize(name)
            built_at[name] = points
            write_state(workspace, state)
        else:  # the new points dropped the store's search copies: cheaper to rebuild
            store.refresh_search_copies(name)
        report.index[name] = {"built": build, "points": points, "new_points": new}
        said = "built" if build else f"not built (under {index_after} points since a build)"
        detail.append(f"{name}: {points} points, {since}; index {said}")
