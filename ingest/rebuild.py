"""Rebuilding damaged ingest files from what is still good and from the source files.

Used by the workspace repair (``skysearch.workflows.repair``), under the ingest lock. Every function
leaves the workspace consistent if it is killed half-way (files are replaced atomically).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from skysearch.ingest.catalog import DAMAGED_SUFFIX, hidden, read_frames, rewrite_partitions
from skysearch.ingest.checksums import crc_bytes, read_crcs, row_crcs
from skysearch.ingest.decode import Source, preprocess
from skysearch.ingest.framestore import CRC_FILE, DATA_FILE, META_FILE, frame_rows, store_path
from skysearch.ingest.profiles import Profile

from skysearch.atomic import atomic_path, atomic_write_json, fsync_path
from skysearch.config import Workspace
from skysearch.timeutil import file_stamp

Key = tuple[str, str, int]


@dataclass
class ArrayRebuild:
    """What rebuilding one frame-store array did."""

    kept: int = 0  # rows whose checksum matched
    redecoded: int = 0  # rows decoded again from their source file
    #: repaired frames decoded again: their masked rows are back (``quality.mark_suspect``)
    unrepaired: list[str] = field(default_factory=list)
    lost: list[dict[str, str]] = field(default_factory=list)  # frame_id, source_path, reason


def set_aside(path: Path) -> Path:
    """Rename a damaged file to a hidden name beside it (kept until what it held is rebuilt:
    ``skysearch doctor`` names it meanwhile); returns it."""
    target = hidden(path, DAMAGED_SUFFIX)
    path.replace(target)
    fsync_path(path.parent)
    return target


def _redecode(row: dict, profile: Profile, frame_bytes: int) -> tuple[np.ndarray | None, str]:
    """The frame decoded again from its source, if the source is the one ingested."""
    result = preprocess(Source.parse(row["source_path"]), profile)
    if result.frame is None:
        return None, f"source {row['source_path']}: {result.reason}"
    if result.checksum != row["checksum"]:
        return None, f"source {row['source_path']} changed since it was ingested"
    if result.frame.size != frame_bytes:
        return None, f"profile {profile.name} now makes frames of another size"
    return result.frame.reshape(-1), ""


def rebuild_array(workspace: Workspace, key: Key, rows: pa.Table, profile: Profile) -> ArrayRebuild:
    """Rewrite one array (``frames.u8``, ``frames.crc``, ``meta.json``): rows whose CRC still
    matches are kept, the others decoded again from their source files. ``rows``: the
    catalog rows of this array. Frames that cannot be decoded again are listed in ``lost``
    (their rows are zeros: drop them from the catalog)."""
    folder = store_path(workspace, *key)
    report = ArrayRebuild()
    width, height = profile.resolution
    frame_bytes = width * height
    by_row = {r["store_row"]: r for r in rows.to_pylist()}
    needed = max(by_row) + 1
    data = folder / DATA_FILE
    for path in (data, folder / CRC_FILE, folder / META_FILE):
        if path.is_dir():  # a folder where the file should be: kept aside, never written into
            stamp = file_stamp(micro=True)
            path.replace(hidden(path, f".damaged-folder-{stamp}"))
    old_rows = min(needed, data.stat().st_size // frame_bytes if data.exists() else 0)
    old = np.memmap(data, np.uint8, "r", shape=(old_rows, frame_bytes)) if old_rows else None
    crcs = read_crcs(folder / CRC_FILE, old_rows)
    intact = np.zeros(needed, bool)
    if old is not None and len(crcs):
        intact[: len(crcs)] = row_crcs(old[: len(crcs)]) == crcs
    blank = np.zeros(frame_bytes, np.uint8)
    with atomic_path(data) as tmp_data, atomic_path(folder / CRC_FILE) as tmp_crc:
        with open(tmp_data, "wb") as out, open(tmp_crc, "wb") as out_crc:
            for r in range(needed):
                pixels = blank
                if intact[r]:
                    pixels = np.asarray(old[r])  # type: ignore[index]
                    report.kept += 1
                elif r in by_row:
                    decoded, reason = _redecode(by_row[r], profile, frame_bytes)
                    if decoded is None:
                        row = by_row[r]
                        report.lost.append(
                            {
                                "frame_id": row["frame_id"],
                                "source_path": row["source_path"],
                                "reason": reason,
                            }  # fmt: skip
                        )
                    else:
                        pixels = decoded
                        report.redecoded += 1
                        if by_row[r].get("status") == "repaired":
                            report.unrepaired.append(by_row[r]["frame_id"])
                out.write(pixels.tobytes())
                out_crc.write(crc_bytes(pixels))
    meta = {"height": height, "width": width, "dtype": "uint8"}
    try:
        current = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        current = None
    if current != meta:
        atomic_write_json(folder / META_FILE, meta)
    return report


def drop_frames(workspace: Workspace, frame_ids: Iterable[str]) -> int:
    """Remove these frames from the catalog (rewriting the partitions holding them)."""
    wanted = pa.array(sorted(set(frame_ids)), pa.string())
    dropped = 0
    if not len(wanted):
        return 0

    def drop(table: pa.Table) -> pa.Table | None:
        nonlocal dropped
        kept = table.filter(pc.invert(pc.is_in(table["frame_id"], value_set=wanted)))
        dropped += table.num_rows - kept.num_rows
        return kept if kept.num_rows < table.num_rows else None

    rewrite_partitions(workspace, drop)
    return dropped


def unreferenced_ids(workspace: Workspace, sketch_ids: dict[Key, Path]) -> set[str]:
    """Frame ids that stored sketches name at frame-store rows the catalog no longer
    references: the frames of a catalog part set aside. ``sketch_ids``: ids.txt per array."""
    columns = ["satellite", "channel", "year", "store_row", "frame_id"]
    referenced = frame_rows(read_frames(workspace, columns=columns))
    lost: set[str] = set()
    for key, path in sketch_ids.items():
        stored = np.frombuffer(path.read_bytes(), dtype="S36")
        for row, fid in enumerate(stored.tolist()):
            if fid.strip() and row not in referenced.get(key, {}):
                lost.add(fid.decode().strip())
    return lost


def _report_roots(saved: object) -> set[Path]:
    """The folders one ingest report names: its "inputs" and the folders of the files it
    skipped. ``ValueError`` saying which field has the wrong type (never a string taken as a
    list of one-character paths such as "/")."""
    if not isinstance(saved, dict):
        raise ValueError(f"not a JSON object but {type(saved).__name__}")
    inputs = saved.get("inputs", [])  # absent from a report from before "inputs"
    skipped = saved.get("skipped", [])
    for name, value, item in (
        ("inputs", inputs, lambda p: isinstance(p, str) and Path(p).is_absolute()),
        ("skipped", skipped, lambda s: isinstance(s, dict) and isinstance(s.get("path"), str)),
    ):
        if not isinstance(value, list):
            raise ValueError(f'"{name}" is a {type(value).__name__}, not a list')
        bad = [v for v in value if not item(v)]
        if bad:
            want = "an absolute path" if name == "inputs" else 'an object with a "path" string'
            raise ValueError(f'"{name}" holds {str(bad[0])[:80]!r}, not {want}')
    roots = {Path(p) for p in inputs}
    for entry in skipped:
        source = Source.parse(entry["path"])
        if Path(source.file).is_absolute():  # a relative path names no known folder
            roots.add(Path(source.file) if source.member else Path(source.file).parent)
    return roots


#: The folders of the ingest reports no longer kept (``retire_reports``), in ``reports/``.
RETIRED_ROOTS = "retired-report-roots.json"


def _retired_roots(workspace: Workspace) -> set[Path]:
    """The folders retired reports named (none before any retired); ``ValueError`` if the
    file is not a list of paths."""
    kept = workspace.reports_dir / RETIRED_ROOTS
    if not kept.exists():
        return set()
    listed = json.loads(kept.read_text())
    if not isinstance(listed, list) or not all(isinstance(p, str) for p in listed):
        raise ValueError("not a list of paths")
    return {Path(p) for p in listed}


def retire_reports(workspace: Workspace, reports: list[Path]) -> None:
    """Delete old ingest reports, keeping the folders they name (``source_roots`` reads them:
    repair re-ingests from there)."""
    try:
        roots = {str(p) for p in _retired_roots(workspace)}
    except (OSError, ValueError):
        roots = set()  # unreadable: what the reports now retired name is kept from here on
    for report in reports:
        try:
            roots |= {str(p) for p in _report_roots(json.loads(report.read_text()))}
        except (OSError, ValueError):
            pass  # an unusable report names nothing (source_roots would say so)
    atomic_write_json(workspace.reports_dir / RETIRED_ROOTS, sorted(roots), indent=1)
    for report in reports:
        report.unlink(missing_ok=True)


def source_roots(workspace: Workspace) -> tuple[list[Path], list[str]]:
    """The folders and archives the workspace's frames were ingested from: the inputs named
    by its ingest reports, the folders of files they skipped, and the folders of the
    catalog's source files (those that exist, none inside another); and why ingest reports
    (or a folder) were not used. A filesystem root is never one: repair would walk the disk."""
    roots: set[Path] = set()
    unusable: list[str] = []
    for report in sorted(workspace.reports_dir.glob("ingest-*.json")):
        try:
            roots |= _report_roots(json.loads(report.read_text()))
        except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
            unusable.append(f"ingest report {report} unusable: {exc}")
    try:
        roots |= _retired_roots(workspace)
    except (OSError, ValueError) as exc:  # JSONDecodeError is a ValueError
        unusable.append(f"{workspace.reports_dir / RETIRED_ROOTS} unusable: {exc}")
    for path in set(read_frames(workspace, columns=["source_path"])["source_path"].to_pylist()):
        source = Source.parse(path)
        roots.add(Path(source.file) if source.member else Path(source.file).parent)
    for root in sorted(r for r in roots if r.anchor and r == Path(r.anchor)):
        roots.discard(root)
        unusable.append(f"not walking {root} (a filesystem root)")
    existing = sorted(p for p in roots if p.is_absolute() and p.exists())
    nested = [p for p in existing if not any(o != p and o in p.parents for o in existing)]
    return nested, unusable
