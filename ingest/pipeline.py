"""Archive ingest: find files -> decode in worker processes -> frame store + frame catalog.

Reader (``discover``) -> mapper (``decode.preprocess_chunk`` run by an engine: a local
process pool or Ray tasks, chunked, answers in input order; ``skysearch.ingest.engines``) ->
writer (this process: append pixels, fsync, commit catalog part files).

Why a re-run is exact after a kill -9 at any moment: files are processed in one fixed order
(sorted paths) and committed in that order, so the committed catalog is always a prefix of
the full run; pixels are fsynced before the catalog rows that reference them are committed
(atomically, by rename); on start the store is cut back to the committed rows. The resumed
run then skips the committed prefix and writes the rest exactly as the full run would.
"""

from __future__ import annotations

import json
import os
import time
import warnings
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
from skysearch.ingest import ids, quality, readers
from skysearch.ingest.catalog import (
    FRAME_SCHEMA,
    compact_partitions,
    read_frames,
    recover,
    update_frames,
    write_frames,
)
from skysearch.ingest.copies import read_copies, under, write_copies
from skysearch.ingest.decode import Decoded, Source, printable_path, split_step, utf8_path
from skysearch.ingest.engines import Engine, get_engine
from skysearch.ingest.footprints import fixed_bounds
from skysearch.ingest.framestore import StoreWriter
from skysearch.ingest.kept_profiles import check_kept, keep_profiles
from skysearch.ingest.profiles import (
    BAD_FRAME_POLICIES,
    NameMatch,
    Profile,
    match_name,
    select_profiles,
    unmatched_reason,
)
from skysearch.ingest.rebuild import retire_reports
from skysearch.ingest.stamps import SourceStamps
from skysearch.ingest.tracks import set_footprints
from tqdm import tqdm

from skysearch.atomic import atomic_write_bytes
from skysearch.config import Workspace
from skysearch.cpus import usable_cpus
from skysearch.errors import UsageError
from skysearch.timeutil import file_stamp


@dataclass
class Candidate:
    source: Source
    profile: Profile
    name: NameMatch
    frame_id: str


@dataclass
class IngestReport:
    """The run's summary (``--json`` prints it); ``by_channel`` counts the whole catalog."""

    frames_added: int = 0
    frames_total: int = 0
    by_channel: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)
    unchanged: int = 0
    suspect: int = 0  # frames added with physically impossible values or no data (quality > 0)
    repaired: int = 0  # suspect frames (of this run or before) repaired from their neighbours
    identical_duplicates: int = 0
    moved: int = 0  # frames found at another step of their many-frame file (it was reordered)
    files_seen: int = 0
    seconds: float = 0.0
    report_path: str = ""
    inputs: list[str] = field(default_factory=list)  # the PATHs given, resolved

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        return (
            f"ingest: {self.frames_added} frames added, {self.frames_total} in catalog, "
            f"{self.unchanged} unchanged, {len(self.skipped)} skipped"
            + (
                f", {self.identical_duplicates} identical copies of other files"
                if self.identical_duplicates
                else ""
            )
            + (f", {self.moved} moved to another step of their file" if self.moved else "")
            + (f", {self.suspect} with bad pixels" if self.suspect else "")
            + (f", {self.repaired} repaired" if self.repaired else "")
            + " "
            f"({self.files_seen} files, {self.seconds:.1f} s)"
            + (f"; report {self.report_path}" if self.report_path else "")
        )


def _walk(
    path: Path, skipped: list[dict[str, str]], passed: frozenset[str] = frozenset()
) -> Iterator[Source]:
    """Files under ``path`` in sorted order; zip archives are opened and walked too (one that
    cannot be read goes to ``skipped``); a zarr store (a folder) is one source. Linked folders
    are followed (each real folder once); unreadable folders and names that are not valid
    UTF-8 (a catalog cannot hold them) go to ``skipped``. Folders in ``passed`` (real paths:
    the workspace, which an archive folder given as input may hold) are not walked."""
    if path.is_dir() and os.path.realpath(path) in passed:
        return
    if not utf8_path(path):
        reason = "name is not valid UTF-8: rename it"
        skipped.append({"path": printable_path(path), "reason": reason})
    elif path.is_dir() and path.suffix.lower() == ".zarr":
        yield Source(str(path))
    elif path.is_dir():

        def unreadable(exc: OSError) -> None:
            skipped.append(
                {"path": str(exc.filename), "reason": f"cannot read folder: {exc.strerror}"}
            )

        seen = {os.path.realpath(path), *passed}
        for root, dirs, files in os.walk(path, onerror=unreadable, followlinks=True):
            real = {d: os.path.realpath(os.path.join(root, d)) for d in dirs}
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and real[d] not in seen)
            seen.update(real[d] for d in dirs)
            stores = [d for d in dirs if d.lower().endswith(".zarr")]
            dirs[:] = [d for d in dirs if d not in stores]
            files = files + stores
            for name in sorted(files):
                if not name.startswith("."):
                    yield from _walk(Path(root) / name, skipped)
    elif not path.is_file():  # opening a named pipe would wait for a writer forever
        reason = "a broken link" if not path.exists() else "not a regular file (a pipe or a device)"
        skipped.append({"path": str(path), "reason": reason})
    elif path.suffix.lower() == ".zip":
        try:
            with zipfile.ZipFile(path) as archive:
                members = sorted(m.filename for m in archive.infolist() if not m.is_dir())
        except (OSError, zipfile.BadZipFile) as exc:
            reason = f"not a readable zip archive: {getattr(exc, 'strerror', None) or exc}"
            skipped.append({"path": str(path), "reason": reason})
            return
        for member in members:
            if not Path(member).name.startswith("."):
                yield Source(str(path), member)
    else:
        yield Source(str(path))


#: How far past the clock a frame's time may be (clocks and products disagree a little); a
#: time beyond is a misnamed file (a two-digit year read in the wrong century, say), which
#: would otherwise become the archive's "most recent" data and the models' hold-out.
FUTURE_SLACK = timedelta(days=1)


def _future(at: datetime) -> str:
    return f"time {at:%Y-%m-%dT%H:%MZ} is in the future: a misnamed file?"


def discover(
    paths: Sequence[Path], profiles: list[Profile], workspace: Path | None = None
) -> tuple[list[Candidate], list[dict[str, str]]]:
    """Every input file recognised by a profile, and the unrecognised ones (skipped). The
    ``workspace`` folder is not input, even inside a folder given (``update .`` in an archive
    folder holding ``./skysearch-workspace``)."""
    candidates: list[Candidate] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()  # a file named twice (a path given twice, a folder and a file in it)
    passed = frozenset([os.path.realpath(workspace)] if workspace is not None else [])
    latest = datetime.now(timezone.utc) + FUTURE_SLACK
    for path in paths:
        for source in _walk(Path(path).resolve(), skipped, passed):
            if source.path in seen:
                continue
            seen.add(source.path)
            found = match_name(source.name, profiles)
            if found is None:
                reason = unmatched_reason(source.name, profiles)
                skipped.append({"path": source.path, "reason": reason})
                continue
            profile, name = found
            if not profile.decoder.multi_frame:
                assert name.time is not None  # a single-frame profile's names carry times
                if name.time > latest:
                    skipped.append({"path": source.path, "reason": _future(name.time)})
                    continue
                fid = ids.frame_id(name.satellite, name.channel, name.time, name.event)
                candidates.append(Candidate(source, profile, name, fid))
                continue
            try:
                times = readers.frame_times(source.file, profile.decoder)
            except readers.FieldError as exc:
                skipped.append({"path": source.path, "reason": str(exc)})
                continue
            for index, at in enumerate(times):
                if isinstance(at, str) or at > latest:
                    reason = at if isinstance(at, str) else _future(at)
                    skipped.append({"path": replace(source, index=index).path, "reason": reason})
                    continue
                step = replace(name, time=at)
                fid = ids.frame_id(step.satellite, step.channel, at, step.event)
                candidates.append(Candidate(replace(source, index=index), profile, step, fid))
    candidates.sort(key=lambda c: (replace(c.source, index=None).path, c.source.index or 0))
    return candidates, skipped


def _catalog_row(
    cand: Candidate, result: Decoded, store_row: int, stamp: str | None
) -> dict[str, Any]:
    name = cand.name
    assert name.time is not None
    return {
        "frame_id": cand.frame_id,
        "satellite": name.satellite,
        "channel": name.channel,
        "time": name.time,
        "year": name.time.year,
        "source_path": cand.source.path,
        "checksum": result.checksum,
        "source_stamp": stamp,
        "width": result.width,
        "height": result.height,
        "status": "suspect" if result.quality else "ok",
        "profile": name.profile,
        "store_row": store_row,
        "event": name.event,
        "quality": result.quality,
        **fixed_bounds(cand.profile.footprint),
    }


def _clash(cand: Candidate, other_path: str) -> str:
    name = cand.name
    return (
        f"duplicate timestamp {name.time:%Y-%m-%dT%H:%MZ} for {name.satellite}/{name.channel} "
        f"with different content than {other_path}"
    )


def _changed(cand: Candidate) -> str:
    return (
        f"changed since its frame {cand.name.time:%Y-%m-%dT%H:%MZ} was ingested, with other "
        "content: the catalog keeps the frame first ingested (frames are never replaced)"
    )


def _moved(cand: Candidate, seen_path: str, steps: dict[str, str]) -> bool:
    """Whether ``cand``'s frame, catalogued at ``seen_path``, moved to another step of the
    same file (rewritten with its steps reordered): that step now holds another frame or
    none. A step that still holds it makes ``cand`` a duplicate within the file."""
    return (
        seen_path != cand.source.path
        and split_step(seen_path)[0] == split_step(cand.source.path)[0]
        and steps.get(seen_path) != cand.frame_id
    )


def _catalog_counts(workspace: Workspace) -> tuple[int, dict[str, int]]:
    table = read_frames(workspace, columns=["satellite", "channel"])
    counts: dict[str, int] = {}
    for sat, chan in zip(table["satellite"].to_pylist(), table["channel"].to_pylist(), strict=True):
        key = f"{sat}/{chan}"
        counts[key] = counts.get(key, 0) + 1
    return table.num_rows, dict(sorted(counts.items()))


def with_bad_frames(profiles: list[Profile], policy: str | None) -> list[Profile]:
    """The profiles, their scientific decoders set to the ``policy`` (None: unchanged)."""
    if policy is None:
        return profiles
    if policy not in BAD_FRAME_POLICIES:
        choices = ", ".join(BAD_FRAME_POLICIES)
        raise UsageError(f"{{bad_frames}} must be one of {choices}", params=["bad_frames"])
    return [
        p
        if p.decoder.kind == "image"
        else replace(p, decoder=replace(p.decoder, bad_frames=policy))
        for p in profiles
    ]


def check_inputs(paths: Sequence[Path | str]) -> None:
    """A UsageError unless there is at least one PATH and every one exists. An empty string
    (an unset ``"$DIR"``) is refused; ``Path("")`` cannot be: it is ``Path(".")`` already (the
    CLI refuses "" before it becomes one)."""
    if any(not str(p).strip() for p in paths):
        raise UsageError("empty PATH (an unset variable?): name a folder, file or zip archive")
    missing = [str(p) for p in paths if not Path(p).exists()]
    if missing:
        raise UsageError(f"path not found: {missing[0]}")
    if not paths:
        raise UsageError("give at least one PATH (a folder, file or zip archive)")


def ingest(
    paths: Sequence[Path],
    workspace: Workspace,
    source: str = "auto",
    profile_dirs: list[Path] | None = None,
    workers: int | None = None,
    commit_every: int = 512,
    progress: bool = True,
    bad_frames: str | None = None,
    engine: Engine | None = None,
    on_start: Callable[[], None] = lambda: None,
) -> IngestReport:
    """Ingest archive files/folders/zips into the workspace; idempotent and resumable.
    ``bad_frames`` (skip, keep, repair) overrides the profiles' policy for frames with
    physically impossible values (``skysearch.ingest.quality``); ``engine``: where files are
    decoded (default: a local process pool of ``workers``); ``on_start`` is called once every
    check passed (the frame store's too) and the ingest lock is held, before any frame is
    written (a refused run has changed nothing but the repair of a run cut off earlier)."""
    started = time.perf_counter()
    check_inputs(paths)
    profiles = with_bad_frames(select_profiles(source, profile_dirs, workspace), bad_frames)
    engine = engine or get_engine()
    workspace.ensure()  # after the arguments are checked: a refused run creates nothing
    candidates, skipped = discover(paths, profiles, workspace.root)
    check_kept(workspace, {c.profile.name: c.profile for c in candidates}.values())  # in use
    found = [c.source.path for c in candidates] + [s["path"] for s in skipped]
    files = {split_step(path)[0] for path in found}  # a NetCDF's frames: one file
    report = IngestReport(files_seen=len(files))
    report.inputs = [str(Path(p).resolve()) for p in paths]
    for root in report.inputs:  # in a scheduled job: a delivery that did not arrive
        if not any(under(path, [root]) for path in found):
            warnings.warn(f"no files in {root}: an empty delivery?", stacklevel=2)
    workers = workers or usable_cpus()

    with StoreWriter(workspace) as writer:
        recover(workspace)
        cols = ["frame_id", "satellite", "channel", "year", "store_row", "profile"]
        cols += ["source_path", "checksum", "source_stamp"]
        committed = read_frames(workspace, columns=cols)
        writer.reconcile(committed)  # a damaged frame store: refused here
        on_start()
        # frame id -> (source path, checksum, stamp) of every committed or newly written frame
        known: dict[str, tuple[str, str, str | None]] = {
            fid: (src, digest, stamp)
            for fid, src, digest, stamp in zip(
                committed["frame_id"].to_pylist(),
                committed["source_path"].to_pylist(),
                committed["checksum"].to_pylist(),
                committed["source_stamp"].to_pylist(),
                strict=True,
            )
        }
        stamps = SourceStamps()  # taken before decoding: a file changed meanwhile is seen next run
        restamped: dict[str, dict[str, object]] = {}  # same frames, their file's stamp changed
        copies = read_copies(workspace)
        copies_before = dict(copies)
        scanned = {c.source.path for c in candidates}
        for gone in [p for p in copies if p not in scanned and under(p, report.inputs)]:
            if not Path(Source.parse(gone).file).exists():  # deleted or moved since
                del copies[gone]
        todo = []
        for cand in candidates:
            seen, stamp = known.get(cand.frame_id), stamps(cand.source)
            if seen and seen[0] == cand.source.path and seen[2] in (None, stamp):
                report.unchanged += 1
            elif seen and copies.get(cand.source.path) == (cand.frame_id, seen[1], stamp):
                report.identical_duplicates += 1
            else:
                copies.pop(cand.source.path, None)
                todo.append(cand)

        steps = {c.source.path: c.frame_id for c in candidates}  # what each step holds now
        rows: list[dict[str, Any]] = []
        committing = False

        def commit() -> None:
            nonlocal committing
            if not rows:
                return
            committing = True
            writer.sync()
            write_frames(workspace, pa.Table.from_pylist(rows, schema=FRAME_SCHEMA))
            report.frames_added += len(rows)
            rows.clear()
            committing = False

        bar = tqdm(
            total=len(todo), desc="ingest", unit="frame", disable=not progress, smoothing=0.1
        )
        stream = engine.decoded_stream([(c.source, c.profile) for c in todo], workers)
        try:
            for cand, result in zip(todo, stream, strict=True):
                bar.update(1)
                if result.frame is None:
                    skipped.append({"path": cand.source.path, "reason": result.reason})
                    continue
                seen = known.get(cand.frame_id)
                if seen is not None:  # before the quality checks: a frame kept stays kept
                    same_file = seen[0] == cand.source.path
                    moved = _moved(cand, seen[0], steps)
                    if seen[1] != result.checksum:
                        changed = same_file or moved
                        reason = _changed(cand) if changed else _clash(cand, seen[0])
                        skipped.append({"path": cand.source.path, "reason": reason})
                    elif same_file:  # touched, copied again, or a many-frame file that grew
                        report.unchanged += 1
                        restamped[cand.frame_id] = {"source_stamp": stamps(cand.source)}
                    elif moved:  # its row names the step it is at now (repair reads it there)
                        report.moved += 1
                        stamp = stamps(cand.source)
                        restamped[cand.frame_id] = {
                            "source_path": cand.source.path,
                            "source_stamp": stamp,
                        }
                        known[cand.frame_id] = (cand.source.path, result.checksum, stamp)
                    else:
                        report.identical_duplicates += 1
                        if (stamp := stamps(cand.source)) is not None:
                            copies[cand.source.path] = (cand.frame_id, result.checksum, stamp)
                    continue
                if quality.unusable(result) or (
                    result.quality and cand.profile.decoder.bad_frames == "skip"
                ):
                    skipped.append({"path": cand.source.path, "reason": quality.reason(result)})
                    continue
                name = cand.name
                row = writer.append(name.satellite, name.channel, name.time.year, result.frame)
                stamp = stamps(cand.source)
                rows.append(_catalog_row(cand, result, row, stamp))
                report.suspect += bool(result.quality)
                known[cand.frame_id] = (cand.source.path, result.checksum, stamp)
                if len(rows) >= commit_every:
                    commit()
            commit()
            by_name = {p.name: p for p in profiles}
            report.repaired = quality.repair_frames(workspace, writer, by_name).repaired
            if restamped:  # so that the next run does not decode them again
                update_frames(workspace, restamped)
            if copies != copies_before:
                write_copies(workspace, copies)
            keep_profiles(workspace, {c.profile.name: c.profile for c in candidates}.values())
        except KeyboardInterrupt:
            if not committing:  # keep what is decoded and written; a re-run does the rest
                commit()
            raise
        finally:
            stream.close()  # the engine's workers end now, not when garbage collected
            bar.close()
        compact_partitions(workspace)
        # frames of a storm whose best track is already loaded get their footprint now
        set_footprints(workspace, sorted({c.name.event for c in todo if c.name.event}))

    report.frames_total, report.by_channel = _catalog_counts(workspace)
    report.skipped = skipped
    report.seconds = round(time.perf_counter() - started, 3)
    report.report_path = str(_save_report(workspace, report))
    return report


#: Ingest reports kept in the workspace (the newest; the folders older ones name are kept for
#: repair); an hourly job over a folder with many files it skips would otherwise add
#: megabytes every run, for ever.
KEPT_REPORTS = 100


def _save_report(workspace: Workspace, report: IngestReport) -> Path:
    folder = workspace.reports_dir
    folder.mkdir(parents=True, exist_ok=True)
    stamp = file_stamp(micro=True)
    path = folder / f"ingest-{stamp}.json"
    payload = report.to_dict() | {"report_path": str(path)}
    atomic_write_bytes(path, (json.dumps(payload, indent=1) + "\n").encode())
    old = sorted(folder.glob("ingest-*.json"))[:-KEPT_REPORTS]  # names sort by time
    if old:
        retire_reports(workspace, old)
    return path
