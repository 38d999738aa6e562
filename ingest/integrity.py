"""Workspace integrity: find damaged files, cheaply (every start) or deeply (every checksum).

``check_workspace`` is shared by ``skysearch doctor``, ``skysearch repair`` and the service's
start-up. Cheap checks: every catalog file read whole (Parquet page checksums verified: the
catalogs are small), every frame-store array against the catalog (meta.json, size, three
CRCs), every sketch array (meta.json, sizes, three CRCs). Deep checks add every frame and
sketch CRC, and that each sketch row belongs to the frame the catalog puts in that store row.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from skysearch.ingest import framestore
from skysearch.ingest.catalog import (
    DAMAGED_SUFFIX,
    FRAME_SCHEMA,
    live_parts,
    read_part,
    staging_folders,
)
from skysearch.ingest.checksums import mismatches, read_crcs, stored_rows
from skysearch.ingest.clip_specs import clip_files
from skysearch.ingest.clips import CLIP_SCHEMA
from skysearch.ingest.similarity.grid import GridSpec
from skysearch.ingest.similarity.store import CRC_FILE as SKETCH_CRC
from skysearch.ingest.similarity.store import DATA_FILE as SKETCH_DATA
from skysearch.ingest.similarity.store import ID_BYTES, IDS_FILE, Key, SketchStore

from skysearch.config import Workspace
from skysearch.errors import DamagedError, StoreError

# Problem kinds; the repair has one remedy per kind.
FRAMES, SKETCHES, CATALOG, CLIPS = "frames", "sketches", "catalog", "clips"
#: not damage: work a repair (or ingest) finishes
PENDING, CHECKSUMS, UNSKETCHED = "pending", "checksums", "unsketched"
#: a catalog file a repair set aside and could not rebuild: data lost until its sources are back
ASIDE = "set aside"
#: a best-track file: repair cannot rebuild it (its source file is the user's)
TRACKS = "track"
REMEDIES = {
    ASIDE: "restore its source folders and repair again, or delete the file to accept the loss",
    FRAMES: "re-decode the frames from their source files",
    SKETCHES: "re-sketch from the frames",
    CATALOG: "set the file aside, re-ingest its frames from the source folders",
    CLIPS: "set the file aside, rebuild it from the frame catalog",
    PENDING: "delete the leftover of an interrupted catalog compaction",
    CHECKSUMS: "add checksums computed from the stored rows",
    UNSKETCHED: "sketch them from the frames",
    TRACKS: "not rebuilt: load the event's best track again with `skysearch ingest-track FILE` "
    "(repair cannot: the file is yours)",
}


@dataclass(frozen=True)
class Problem:
    """One damaged (or unfinished) file: ``path``, what is wrong, and the repair's remedy."""

    kind: str
    path: str
    what: str
    key: tuple[str, str, int] | None = None  # satellite, channel, year of a store array
    rows: tuple[int, ...] = ()  # rows whose checksum failed (deep check)

    @property
    def damaged(self) -> bool:
        return self.kind not in (PENDING, CHECKSUMS, UNSKETCHED)

    @property
    def remedy(self) -> str:
        return REMEDIES[self.kind]

    def line(self) -> str:
        return f"{self.path}: {self.what}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self) | {"damaged": self.damaged, "remedy": self.remedy}
        out["rows"] = list(self.rows[:20])
        return out


def _frame_catalog(workspace: Workspace) -> tuple[pa.Table, list[Problem]]:
    """The rows of every readable catalog part (read whole, page checksums verified: the
    catalog is small beside the frames), and the problems of the others."""
    problems: list[Problem] = []
    tables = []
    for staging in staging_folders(workspace):
        what = "leftover of an interrupted catalog compaction"
        problems.append(Problem(PENDING, str(staging), what))
    for folder in sorted(workspace.frames_catalog.glob("satellite=*/year=*")):
        try:
            parts = live_parts(folder)
        except DamagedError as exc:
            problems.append(Problem(CATALOG, exc.path, exc.what))
            continue
        for part in parts:
            try:
                tables.append(read_part(part))
            except DamagedError as exc:
                problems.append(Problem(CATALOG, exc.path, exc.what))
    catalog = pa.concat_tables(tables) if tables else FRAME_SCHEMA.empty_table()
    return catalog, problems


def _clip_catalog(workspace: Workspace) -> list[Problem]:
    problems = []
    for path in clip_files(workspace.clips_catalog):
        try:
            read_part(path, CLIP_SCHEMA)
        except DamagedError as exc:
            problems.append(Problem(CLIPS, exc.path, exc.what))
    return problems


def _tracks(workspace: Workspace) -> list[Problem]:
    """Best-track files that cannot be read (indexing and footprints read them)."""
    from skysearch.ingest.tracks import TRACK_SCHEMA, tracks_dir

    problems = []
    for path in sorted(tracks_dir(workspace).glob("event=*.parquet")):
        try:
            read_part(path, TRACK_SCHEMA)
        except DamagedError as exc:
            problems.append(Problem(TRACKS, exc.path, exc.what))
    return problems


def _set_aside(workspace: Workspace) -> list[Problem]:
    """Catalog files a repair set aside and could not rebuild (it deletes those it could):
    until they are rebuilt or deleted, what they held is missing."""
    problems = []
    frame_parts = sorted(workspace.frames_catalog.glob(f"satellite=*/year=*/.*{DAMAGED_SUFFIX}"))
    if frame_parts:
        try:
            missing = len(unreferenced_frames(workspace))
        except (DamagedError, OSError):  # another catalog part is damaged: said on its own
            missing = 0
        held = (
            f"the {missing} frames it held (as the sketches tell) are missing from the catalog"
            if missing
            else "what it held is not known (no sketch names a missing frame)"
        )
        for path in frame_parts:
            what = f"catalog part set aside by skysearch repair: {held}"
            problems.append(Problem(ASIDE, str(path), what))
    for path in sorted(workspace.clips_catalog.glob(f"satellite=*/year=*/.*{DAMAGED_SUFFIX}")):
        what = "clip file set aside by skysearch repair: its clips were not rebuilt"
        problems.append(Problem(ASIDE, str(path), what))
    return problems


def unreferenced_frames(workspace: Workspace) -> set[str]:
    """Frame ids the stored sketches name at frame-store rows that no catalog row references
    (and that no catalog row holds elsewhere): the frames of catalog parts set aside."""
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.rebuild import unreferenced_ids

    root = SketchStore(workspace, GridSpec()).root
    ids = {key: root / key[0] / key[1] / str(key[2]) / IDS_FILE for key in array_keys(root)}
    lost = unreferenced_ids(workspace, {k: v for k, v in ids.items() if v.exists()})
    return lost - set(read_frames(workspace, columns=["frame_id"])["frame_id"].to_pylist())


def array_keys(root: Path) -> list[tuple[str, str, int]]:
    """(satellite, channel, year) of every array folder under ``root`` (frames or a spec)."""
    keys = []
    for folder in sorted(root.glob("*/*/*")):
        if folder.is_dir() and folder.name.isdigit():
            keys.append((folder.parent.parent.name, folder.parent.name, int(folder.name)))
    return keys


def _frame_store(
    workspace: Workspace, expected: dict[Key, framestore.Expected], deep: bool
) -> list[Problem]:
    problems = []
    for key, want in sorted(expected.items()):
        folder = framestore.store_path(workspace, *key)
        try:
            height, width = framestore.check_array(folder, want)
        except DamagedError as exc:
            problems.append(Problem(FRAMES, exc.path, exc.what, key))
            continue
        crc_path = folder / framestore.CRC_FILE
        have = min(stored_rows(crc_path), want.rows)
        if have < want.rows:
            what = f"no checksums for {want.rows - have} of {want.rows} frames"
            problems.append(Problem(CHECKSUMS, str(crc_path), what, key))
        if deep and want.rows:
            data = folder / framestore.DATA_FILE
            rows = np.memmap(data, np.uint8, "r", shape=(want.rows, height * width))
            bad = mismatches(rows, read_crcs(crc_path, want.rows))
            if bad:
                what = f"{len(bad)} frame rows do not match their checksums (first: row {bad[0]})"
                problems.append(Problem(FRAMES, str(data), what, key, tuple(bad)))
    return problems


def _sketches(workspace: Workspace, catalog: pa.Table, deep: bool) -> list[Problem]:
    problems = []
    row_ids = framestore.frame_rows(catalog) if deep else {}
    for spec_dir in sorted(p for p in workspace.sketch_dir.glob("*") if p.is_dir()):
        spec = GridSpec.from_tag(spec_dir.name)
        if spec is None:
            continue
        store = SketchStore(workspace, spec)
        for key in array_keys(spec_dir):
            folder = store.folder(key)
            try:
                meta = store.check(key)
            except DamagedError as exc:
                problems.append(Problem(SKETCHES, exc.path, exc.what, key))
                continue
            if meta is None:
                continue
            rows = int(meta["rows"])
            if stored_rows(folder / SKETCH_CRC) < rows:
                what = f"no checksums for some of {rows} sketches"
                problems.append(Problem(CHECKSUMS, str(folder / SKETCH_CRC), what, key))
            if deep and rows:
                bad = mismatches(store.array(key).reshape(rows, -1).view(np.uint8),
                                 read_crcs(folder / SKETCH_CRC, rows))  # fmt: skip
                bad += _stale_rows(folder / IDS_FILE, rows, row_ids.get(key, {}))
                if bad:
                    bad = sorted(set(bad))
                    what = f"{len(bad)} sketch rows damaged or stale (first: row {bad[0]})"
                    problems.append(Problem(SKETCHES, str(folder / SKETCH_DATA), what, key,
                                            tuple(bad)))  # fmt: skip
    return problems


def _unsketched(workspace: Workspace, expected: dict[Key, framestore.Expected]) -> list[Problem]:
    """Frames without a sketch of the default spec (every ingest sketches them): an ingest
    stopped before it sketched, or sketch files deleted. Re-ranking needs them."""
    store = SketchStore(workspace, GridSpec())
    problems = []
    for key, want in sorted(expected.items()):
        try:
            meta = store.check(key, spot=False)
        except DamagedError:
            continue  # reported by _sketches
        have = int(meta["rows"]) if meta else 0
        if have < want.rows:
            what = f"{want.rows - have} of {want.rows} frames have no sketch"
            folder = store.folder(key)
            problems.append(Problem(UNSKETCHED, str(folder), what, key))
    return problems


def _stale_rows(ids_path: Path, rows: int, catalog_ids: dict[int, str]) -> list[int]:
    """Sketch rows whose stored frame id is not the catalog's frame at that store row."""
    stored = np.frombuffer(ids_path.read_bytes()[: rows * ID_BYTES], dtype=f"S{ID_BYTES}")
    want = np.array(
        [catalog_ids.get(r, "").encode().ljust(ID_BYTES) for r in range(len(stored))],
        dtype=f"S{ID_BYTES}",
    )
    return np.nonzero((stored != want) & (want != b" " * ID_BYTES))[0].tolist()


def check_workspace(workspace: Workspace, deep: bool = False) -> list[Problem]:
    """Every damaged or unfinished file of the workspace (empty: all checks pass)."""
    if not workspace.root.is_dir():
        return []
    catalog, problems = _frame_catalog(workspace)
    problems += _clip_catalog(workspace)
    problems += _tracks(workspace)
    expected = framestore.expected_arrays(catalog, workspace)
    problems += _frame_store(workspace, expected, deep)
    problems += _sketches(workspace, catalog, deep)
    problems += _unsketched(workspace, expected)
    problems += _set_aside(workspace)
    return problems


def ensure_intact(workspace: Workspace) -> None:
    """Raise ``StoreError`` naming every damaged file when the cheap checks fail."""
    # a file set aside is lost data, not a damaged file: what the workspace holds is whole;
    # searches read no best track (their payloads hold what they need)
    damaged = [p for p in check_workspace(workspace) if p.damaged and p.kind not in (ASIDE, TRACKS)]
    if damaged:
        listed = "; ".join(p.line() for p in damaged[:5])
        more = f" (and {len(damaged) - 5} more)" if len(damaged) > 5 else ""
        raise StoreError(
            f"workspace {workspace.root} is damaged: {listed}{more}; "
            "run `skysearch repair` to rebuild what can be rebuilt"
        )
