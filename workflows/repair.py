"""``skysearch repair``: rebuild what is damaged in a workspace, and say what cannot be.

Runs the deep checks (``skysearch.ingest.integrity``), then, per damaged file:

- frame-store array (``frames.u8``, ``frames.crc``, ``meta.json``; a folder in place of one is
  moved aside): rows whose checksum still
  matches are kept, the others decoded again from the catalog's source file (only when the
  file's SHA-256 is still the one ingested); frames whose source is gone or changed are
  dropped from the catalog and listed;
- frames-catalog part: set aside (a hidden ``.damaged`` name), its frames ingested again from
  the folders the workspace was ingested from; frames not found there are listed, and the
  set-aside file is kept (doctor and every later repair name it, the repair tries again)
  until its frames are back or the user deletes it to accept the loss;
- clip-catalog file: set aside, rebuilt from the frame catalog (the set-aside file kept only
  when that fails);
- sketches: stored again from the frames, from the first damaged row;
- an interrupted compaction is finished, missing checksums are computed;
- embedded vector store: a collection that no longer opens or reads back whole (every point,
  vectors of unit length) is set aside and re-indexed with the registered models, then its
  damaged copy deleted (scenes need their image folder: said, not done; a repair stopped
  midway re-indexes on the next run);
- frames dropped (their sources gone): their points, and those of the clips built from them,
  are deleted from the embedded store;
- the model registry, damaged or deleted: rebuilt from the checkpoint folders (each whole
  checkpoint registered again; the damaged file kept beside it); whole checkpoint folders a
  readable registry does not list (emptied by hand) are registered again;
- a model whose checkpoint is damaged (config, weights, or their checksum) is unregistered:
  weights cannot be rebuilt, only trained again (reported as not repaired, exit code 1);
- the embedded store held by another process (``skysearch serve``): not checked, said (stop
  the service and run repair again for the store; the files are repaired meanwhile).

Then the deep checks run again; anything still wrong is reported.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skysearch.config import Settings, Workspace
from skysearch.errors import DamagedError, SkySearchError, StoreError, StoreInUse

if TYPE_CHECKING:
    from skysearch.ingest.framestore import StoreWriter

#: Left when a repair dropped frames but could not open the store: the next one deletes their
#: points.
STALE_PENDING = ".repair-stale-points"
IN_USE = "not checked (in use)"  # the action of a store another process holds


@dataclass
class Action:
    """One damaged file (or collection): what was wrong, what the repair did, and whether it
    is whole again."""

    path: str
    problem: str
    done: str
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RepairReport:
    actions: list[Action] = field(default_factory=list)
    lost_frames: list[dict[str, str]] = field(default_factory=list)
    remaining: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    on_server: bool = False  # a Qdrant server's store: left alone (it checks its own data)

    @property
    def ok(self) -> bool:
        return all(a.ok for a in self.actions) and not self.remaining and not self.lost_frames

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "actions": [a.to_dict() for a in self.actions],
            "lost_frames": self.lost_frames,
            "remaining": self.remaining,
            "seconds": self.seconds,
        }

    def summary_line(self) -> str:
        acted = [a for a in self.actions if a.problem != IN_USE]
        held = " (the store is in use: not checked)" if len(acted) < len(self.actions) else ""
        if self.on_server:
            held = " (the store is on a Qdrant server: left to the server)"
        fixed = sum(a.ok for a in acted)
        need = f" ({len(acted) - fixed} need you: see above)" if fixed < len(acted) else ""
        return (
            f"repair: fixed {fixed} of {len(acted)} problems found{need}, "
            f"{len(self.lost_frames)} frames lost, {len(self.remaining)} problems remain"
            f"{held} ({self.seconds:.1f} s)"
        )


def repair_workspace(
    settings: Settings, profile_dirs: list[Path] | None = None, progress: bool = True
) -> RepairReport:
    """Check the workspace deeply and rebuild what is damaged (see the module doc)."""
    from skysearch.ingest.framestore import StoreWriter
    from skysearch.ingest.integrity import TRACKS, check_workspace
    from skysearch.workflows.repair_store import stale_points, vector_store

    started = time.perf_counter()
    workspace = settings.workspace.existing()
    problems = check_workspace(workspace, deep=True)
    report = RepairReport(on_server=bool(settings.qdrant_url))
    with StoreWriter(workspace) as writer:  # the ingest lock: no ingest writes meanwhile
        parts, lost_ids, clip_files = _catalogs(workspace, problems, report)
        _frame_arrays(workspace, problems, profile_dirs, report, writer)
    if parts:
        _reingest(workspace, parts, lost_ids, profile_dirs, report, progress)
    _sketches(workspace, problems, report, progress)
    _clips(workspace, clip_files, bool(report.lost_frames), report)
    _registry(workspace, report)
    _models(workspace, report)  # before the store: re-indexing uses whole models only
    report.actions += [
        Action(p.path, p.what, p.remedy, False) for p in problems if p.kind == TRACKS
    ]
    pending = workspace.root / STALE_PENDING  # points of frames an earlier repair dropped
    try:
        report.actions += vector_store(settings)
        if report.lost_frames or pending.exists():
            report.actions += stale_points(settings)
        if not settings.qdrant_url:  # a server's points are left alone (stale_points)
            pending.unlink(missing_ok=True)
    except StoreInUse as exc:  # e.g. skysearch serve: the files are repaired, not the store
        if report.lost_frames:
            pending.touch()
        done = f"{exc}; then run repair again for the store"
        report.actions.append(Action(exc.path, IN_USE, done, False))
    except StoreError as exc:  # e.g. a file where the store folder belongs: said, not a crash
        if report.lost_frames:
            pending.touch()
        report.actions.append(Action(str(workspace.store_dir), str(exc), "not repaired", False))
    report.remaining = [p.to_dict() for p in check_workspace(workspace, deep=True)]
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _catalogs(
    workspace: Workspace, problems: list[Any], report: RepairReport
) -> tuple[list[tuple[Any, str]], set[str], list[tuple[Any, str]]]:
    """Clean up after interrupted compactions; set damaged catalog files aside. Returns the frame
    parts and the clip files set aside (problem, new name), and the frame ids the parts held
    as far as the stored sketches know."""
    from skysearch.ingest import integrity
    from skysearch.ingest.catalog import recover
    from skysearch.ingest.rebuild import set_aside

    recover(workspace)
    for p in problems:
        if p.kind == integrity.PENDING:
            report.actions.append(Action(p.path, p.what, "deleted the leftover", True))
    aside: dict[str, list[tuple[Any, str]]] = {integrity.CATALOG: [], integrity.CLIPS: []}
    for p in problems:
        if p.kind in aside and Path(p.path).exists():
            aside[p.kind].append((p, set_aside(Path(p.path)).name))
        elif p.kind == integrity.ASIDE:  # set aside by an earlier repair: try again
            clips = Path(p.path).is_relative_to(workspace.clips_catalog)
            aside[integrity.CLIPS if clips else integrity.CATALOG].append((p, Path(p.path).name))
    lost: set[str] = set()
    if aside[integrity.CATALOG]:
        lost = integrity.unreferenced_frames(workspace)
    return aside[integrity.CATALOG], lost, aside[integrity.CLIPS]


def _aside_path(problem: Any, aside: str) -> Path:
    """The set-aside file of a problem (its own path when an earlier repair set it aside)."""
    return Path(problem.path).with_name(aside)


def _original_path(problem: Any, aside: str) -> Path:
    """The catalog file a set-aside file replaced."""
    from skysearch.ingest.catalog import DAMAGED_SUFFIX, unhidden

    return unhidden(_aside_path(problem, aside), DAMAGED_SUFFIX)


def _frame_arrays(
    workspace: Workspace,
    problems: list[Any],
    profile_dirs: list[Path] | None,
    report: RepairReport,
    writer: StoreWriter,
) -> None:
    """Rebuild damaged arrays; drop frames that cannot be rebuilt; repair again the frames
    with physically impossible values that came back from their sources; add missing
    checksums."""
    import pyarrow.compute as pc
    from skysearch.ingest import integrity
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.checksums import complete_crcs
    from skysearch.ingest.framestore import (
        CRC_FILE,
        DATA_FILE,
        expected_arrays,
        read_shape,
        store_path,
    )
    from skysearch.ingest.profiles import load_profiles
    from skysearch.ingest.quality import mark_suspect, repair_frames
    from skysearch.ingest.rebuild import drop_frames, rebuild_array

    profiles = load_profiles(profile_dirs, workspace)
    catalog = read_frames(workspace)
    damaged: dict[tuple[str, str, int], list[Any]] = {}
    unrepaired: list[str] = []
    for p in problems:
        if p.kind == integrity.FRAMES and p.key is not None:
            damaged.setdefault(p.key, []).append(p)
    for key, found in sorted(damaged.items()):
        sat, chan, year = key
        mask = pc.and_(
            pc.and_(pc.equal(catalog["satellite"], sat), pc.equal(catalog["channel"], chan)),
            pc.equal(catalog["year"], year),
        )
        rows = catalog.filter(mask)
        if rows.num_rows == 0:
            continue
        name = rows["profile"][0].as_py()
        if name not in profiles:  # its frames' sizes and sources are unknown: nothing is touched
            done = (
                f"not repaired: its frames were ingested with source profile {name}, not known "
                "here: pass the folder holding it (--profiles DIR, or SKYSEARCH_PROFILES) and "
                "run repair again; nothing was dropped"
            )
            report.actions += [Action(p.path, p.what, done, False) for p in found]
            continue
        result = rebuild_array(workspace, key, rows, profiles[name])
        report.lost_frames += result.lost
        unrepaired += result.unrepaired
        done = f"kept {result.kept} frames, decoded {result.redecoded} again from their sources"
        if result.lost:
            done += f"; {len(result.lost)} could not be rebuilt (dropped from the catalog)"
        for p in found:
            report.actions.append(Action(p.path, p.what, done, not result.lost))
    if report.lost_frames:
        drop_frames(workspace, [f["frame_id"] for f in report.lost_frames])
    if unrepaired:
        mark_suspect(workspace, unrepaired)
        writer.reconcile(read_frames(workspace))
        again = repair_frames(workspace, writer, profiles).repaired
        report.actions.append(
            Action(
                str(workspace.frames_catalog),
                f"{len(unrepaired)} repaired frames decoded again from their sources",
                f"repaired {again} of them again from their clean neighbours",
                again == len(unrepaired),
            )
        )
    expected = expected_arrays(catalog, workspace)
    for p in problems:
        if p.kind != integrity.CHECKSUMS or p.key in damaged or p.key not in expected:
            continue
        folder = store_path(workspace, *p.key)
        if Path(p.path).parent != folder:
            continue  # sketch checksums: the sketch update adds them
        height, width = read_shape(folder)
        rows = expected[p.key].rows
        added = complete_crcs(folder / DATA_FILE, folder / CRC_FILE, rows, height * width)
        report.actions.append(Action(p.path, p.what, f"added {added} checksums", True))


def _reingest(
    workspace: Workspace,
    parts: list[tuple[Any, str]],
    lost_ids: set[str],
    profile_dirs: list[Path] | None,
    report: RepairReport,
    progress: bool,
) -> None:
    """Ingest again from the workspace's source folders: brings back the frames of the
    catalog parts set aside."""
    from skysearch.ingest import integrity
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.pipeline import ingest
    from skysearch.ingest.rebuild import source_roots

    roots, unusable = source_roots(workspace)
    where = ", ".join(map(str, roots)) or "no source folder known"
    if unusable:
        where += " (" + "; ".join(unusable) + ")"
    stopped = False  # by an array this repair left as it is: the parts are kept for the next
    if roots:
        try:
            added = ingest(roots, workspace, profile_dirs=profile_dirs, progress=progress)
        except DamagedError as exc:  # nothing is appended to a damaged array
            stopped = True
            done = f"nothing ingested again: {exc.path} is damaged ({exc.what}), not repaired"
        else:
            done = f"ingested {added.frames_added} frames again from {where}"
    else:
        done = "nothing ingested again: " + where
    missing = []
    if not stopped:
        have = set(read_frames(workspace, columns=["frame_id"])["frame_id"].to_pylist())
        missing = sorted(lost_ids - have)
        reason = f"not found in the source folders ({', '.join(map(str, roots)) or 'none known'})"
        report.lost_frames += [
            {"frame_id": f, "source_path": "", "reason": reason} for f in missing
        ]
        if missing:
            done += f"; {len(missing)} frames of the set-aside parts not found there"
    ok = bool(roots) and not stopped and not missing
    for problem, aside in parts:
        earlier = Path(problem.path).name == aside
        said = f"{'set aside by an earlier repair' if earlier else f'set aside as {aside}'}; {done}"
        if ok:  # its frames are back: nothing left to keep it for
            _discard(_aside_path(problem, aside))
            said += f"; deleted {aside}"
        elif stopped:  # the source folders are fine: the array's product needs its profile
            said += f"; {aside} kept: run repair again with --profiles DIR (the array's)"
        else:
            said += f"; {aside} kept: {integrity.REMEDIES[integrity.ASIDE]}"
        report.actions.append(Action(problem.path, problem.what, said, ok))


def _registry(workspace: Workspace, report: RepairReport) -> None:
    """A model registry that is damaged, or missing while checkpoint folders hold models, is
    rebuilt from those folders (every whole checkpoint registered again); whole checkpoints
    a readable registry does not list (emptied by hand?) are registered again."""
    from skysearch.encoders import registry

    path = workspace.models_dir / registry.REGISTRY_FILE
    try:
        listed = {r.model_id for r in registry.list_models(workspace)}
        if path.exists():
            records = registry.records_from_folders(workspace)[0]
            unlisted = [r for r in records if r.model_id not in listed]
            if unlisted:
                registry.restore(workspace, unlisted)
                ids = ", ".join(r.model_id for r in unlisted)
                problem = f"{len(unlisted)} whole model folders it does not list"
                report.actions.append(Action(str(path), problem, f"registered {ids}", True))
            return
        problem = "missing"
    except DamagedError as exc:
        problem = exc.what
    records, damaged = registry.records_from_folders(workspace)
    if not records and not damaged and problem == "missing":
        return  # nothing trained yet
    aside = registry.restore(workspace, records)
    kinds = ", ".join(sorted({r.kind for r in records})) or "none"
    done = f"rebuilt from {len(records)} checkpoint folders ({kinds}); evaluation metrics added "
    done += "after training are not in the checkpoints"
    done += f"; the old file is {aside}" if aside else ""
    report.actions.append(Action(str(path), problem, done, True))
    for folder, why in damaged.items():
        report.actions.append(Action(str(folder), why, "not registered: train it again", False))


def _models(workspace: Workspace, report: RepairReport) -> None:
    """Unregister every model whose checkpoint is damaged (deep checks): searches then use the
    latest whole one. Weights cannot be rebuilt, only trained again."""
    from skysearch.encoders import registry
    from skysearch.encoders.checkpoints import checkpoint_problem

    for record in registry.list_models(workspace):
        problem = checkpoint_problem(record.directory(workspace), deep=True)
        if problem:
            registry.unregister(workspace, record.model_id)
            done = f"unregistered {record.kind} model {record.model_id}: train it again"
            report.actions.append(Action(str(record.directory(workspace)), problem, done, False))


def _discard(path: Path) -> None:
    """Delete what was set aside: a file, or a folder found where a file should be."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _sketches(
    workspace: Workspace, problems: list[Any], report: RepairReport, progress: bool
) -> None:
    """Discard damaged sketches from their first bad row; store them again from the frames
    (every stored spec: also catches frames rebuilt or re-ingested above)."""
    from skysearch.ingest import integrity
    from skysearch.ingest.similarity import SketchStore, sketch_specs

    damaged = [p for p in problems if p.kind == integrity.SKETCHES and p.key is not None]
    missing = [p for p in problems if p.kind == integrity.UNSKETCHED]
    specs = {spec.tag: spec for spec in sketch_specs(workspace)}
    for p in damaged:
        tag = Path(p.path).relative_to(workspace.sketch_dir).parts[0]
        SketchStore(workspace, specs[tag]).discard(p.key, min(p.rows, default=0))
    sketched, failure = 0, ""
    for spec in specs.values():
        try:
            sketched += SketchStore(workspace, spec).update(progress=progress).sketched
        except SkySearchError as exc:
            failure = str(exc)
    done = f"not re-sketched: {failure}" if failure else f"re-sketched ({sketched} frames)"
    for p in damaged + missing:
        report.actions.append(Action(p.path, p.what, done, not failure))


def _clips(
    workspace: Workspace,
    clip_files: list[tuple[Any, str]],
    frames_dropped: bool,
    report: RepairReport,
) -> None:
    """Rebuild set-aside clip files (and every clip spec when frames were dropped)."""
    from skysearch.ingest.clip_specs import clip_files as clip_files_of

    specs: dict[tuple[Path, str], tuple[Any, str] | None] = {}
    for p, aside in clip_files:
        original = _original_path(p, aside)
        specs[(original.parent.parent, original.name)] = (p, aside)
    if frames_dropped:
        for path in clip_files_of(workspace.clips_catalog):
            specs.setdefault((path.parent.parent, path.name), None)
    for (sat_dir, name), damaged in sorted(specs.items(), key=lambda kv: kv[0]):
        done, ok = _rebuild_clip_spec(workspace, sat_dir, name)
        if damaged is not None:
            problem, aside = damaged
            if ok:  # rebuilt: nothing left to keep it for
                _discard(_aside_path(problem, aside))
                done += f"; deleted {aside}"
            report.actions.append(
                Action(problem.path, problem.what, f"set aside as {aside}; {done}", ok)
            )


def _rebuild_clip_spec(workspace: Workspace, sat_dir: Path, name: str) -> tuple[str, bool]:
    """Build the clips of one spec file name (``ir+wv_12x60m.parquet``) of one satellite
    again, with the tolerance its other years were built with (or it was asked with). A
    rebuild that finds no clip is not taken as done: the damaged file is kept."""
    from skysearch.ingest.clip_specs import ClipSpec, spec_label, spec_parts
    from skysearch.ingest.clips import build_clips, built_tolerance

    satellite = sat_dir.name.split("=", 1)[1]
    try:
        channels, length, gap = spec_parts(Path(name).stem)
        spec = ClipSpec.parse(Path(name).stem)
        tolerance = built_tolerance(workspace, spec, sat_dir.glob(f"year=*/{name}"))
        result = build_clips(workspace, length, gap, channels, tolerance, satellite)
    except (SkySearchError, ValueError) as exc:
        return f"not rebuilt: {exc}", False
    if result.by_spec.get(f"{satellite}/{Path(name).stem}", 0) == 0:
        return (
            f"not rebuilt: no {spec_label(channels, length, gap)} clip can be assembled from "
            f"the frame catalog with a tolerance of {tolerance} min (was the spec built with "
            "another? skysearch clips --tolerance N rebuilds it)",
            False,
        )
    return f"rebuilt: {result.clips_total} clips", True
