"""JMA best tracks (``skysearch ingest-track``) on the real 198702 track and frames: strict
validation (one line per bad row, the file rejected whole), unknown events, idempotent
re-loads, the nearest-hour lookup and the vector-store payload fields."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from conftest import shared_data
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.footprints import BOUND_COLUMNS
from skysearch.ingest.framestore import StoreWriter
from skysearch.ingest.tracks import (
    PAYLOAD_KEYS,
    ingest_tracks,
    track_path,
    track_payloads,
    track_rows,
)

from skysearch.config import Workspace, load_settings
from skysearch.errors import NotFoundError, StoreError, UsageError

UTC = timezone.utc
FIRST = datetime(1987, 4, 9, 18, tzinfo=UTC)  # the track's first row (a real observation)
LAST = datetime(1987, 4, 16, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def typhoon(tmp_path_factory) -> tuple[Workspace, Path]:
    """A workspace holding 6 real frames of 198702, and the real best track's path."""
    from skysearch.ingest.pipeline import ingest

    images = shared_data("digital-typhoon", "image", "198702")
    track = shared_data("digital-typhoon", "jma", "198702.tsv")
    root = tmp_path_factory.mktemp("tracks")
    folder = root / "image" / "198702"
    folder.mkdir(parents=True)
    for path in sorted(images.glob("*.h5"))[:6]:
        shutil.copy(path, folder / path.name)
    ws = Workspace(root / "ws")
    ingest([root / "image"], ws, workers=1, progress=False)
    return ws, track


def _lines(track: Path) -> list[str]:
    return track.read_text().splitlines()


def test_real_track_loads_once_then_is_unchanged(typhoon):
    ws, track = typhoon
    first = ingest_tracks(ws, track)
    assert (first.loaded, first.rows, first.rejected) == (["198702"], 163, [])
    stored = track_path(ws, "198702")
    before = stored.stat()
    again = ingest_tracks(ws, track)
    assert (again.loaded, again.unchanged, again.rejected) == ([], ["198702"], [])
    after = stored.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    (row,) = track_rows(ws, "198702", [FIRST])
    assert row == {
        "time": FIRST,
        "class": 2,
        "pressure_hpa": 1006.0,
        "wind_kt": 0.0,
        "lat": 7.1,
        "lon": 144.9,
        "interpolated": False,
    }


def _edit(lines: list[str], number: int, column: int, value: str) -> list[str]:
    cells = lines[number - 1].split("\t")
    cells[column] = value
    return [*lines[: number - 1], "\t".join(cells), *lines[number:]]


BAD_ROWS = {
    "columns": (lambda ls: [*ls[:4], ls[4].rsplit("\t", 1)[0], *ls[5:]], 5, "19 tab-separated"),
    "text": (lambda ls: _edit(ls, 7, 7, "n/a"), 7, "pressure 'n/a' is not a number"),
    "nan": (lambda ls: _edit(ls, 7, 8, "nan"), 7, "wind 'nan' is not a finite number"),
    "class": (lambda ls: _edit(ls, 9, 4, "7"), 9, "class '7' is outside 2..6"),
    "latitude": (lambda ls: _edit(ls, 9, 5, "95.0"), 9, "latitude '95.0' is outside -90..90"),
    "pressure": (lambda ls: _edit(ls, 9, 7, "300.0"), 9, "pressure '300.0' is outside 850..1090"),
    "whole": (lambda ls: _edit(ls, 9, 3, "3.5"), 9, "hour '3.5' is not a whole number"),
    "date": (lambda ls: _edit(ls, 9, 2, "31"), 9, "no such time (day is out of range"),
    "gap": (lambda ls: [*ls[:9], *ls[10:]], 10, "is 2 h after the previous row (hourly rows)"),
    "duplicate": (
        lambda ls: [*ls[:9], ls[8], *ls[9:]],
        10,
        "duplicate time 1987-04-10 02h (line 9)",
    ),
    "empty": (lambda ls: [*ls[:3], "", *ls[3:]], 4, "empty line"),
}


@pytest.mark.parametrize("kind", sorted(BAD_ROWS))
def test_a_bad_row_rejects_the_file_naming_file_and_line(typhoon, tmp_path, kind):
    ws, track = typhoon
    ingest_tracks(ws, track)
    stored = track_path(ws, "198702").read_bytes()
    edit, line, reason = BAD_ROWS[kind]
    bad = tmp_path / "198702.tsv"
    bad.write_text("\n".join(edit(_lines(track))) + "\n")
    report = ingest_tracks(ws, bad)
    assert report.loaded == [] and report.unchanged == []
    assert len(report.rejected) == 1, report.rejected  # one line, no cascade
    assert report.rejected[0]["path"] == str(bad) and report.rejected[0]["line"] == line
    assert reason in report.rejected[0]["reason"]
    assert track_path(ws, "198702").read_bytes() == stored  # nothing half-loaded


def test_every_bad_row_of_a_file_is_listed(typhoon, tmp_path):
    ws, track = typhoon
    lines = _edit(_edit(_lines(track), 3, 4, "1"), 50, 6, "east")
    lines[8], lines[9] = lines[9], lines[8]  # two rows swapped: a gap, then a step back
    bad = tmp_path / "198702.tsv"
    bad.write_text("\n".join(lines))
    report = ingest_tracks(ws, bad)
    assert [(r["line"], r["reason"]) for r in report.rejected] == [
        (3, "class '1' is outside 2..6"),
        (9, "time 1987-04-10 03h is 2 h after the previous row (hourly rows)"),
        (10, "time 1987-04-10 02h is before the previous row's"),
        (50, "longitude 'east' is not a number"),
    ]
    bad.write_bytes(b"\xff\xfe1987")
    (problem,) = ingest_tracks(ws, bad).rejected
    assert problem["line"] is None and problem["reason"] == "not UTF-8 text (byte 0)"
    bad.write_bytes(b"\xef\xbb\xbf" + track.read_bytes())  # a BOM is not part of the year
    assert ingest_tracks(ws, bad).rejected == []


def test_unknown_event_is_an_error_alone_and_skipped_in_a_folder(typhoon, tmp_path):
    ws, track = typhoon
    stray = tmp_path / "199901.tsv"
    stray.write_text(track.read_text())
    with pytest.raises(NotFoundError, match="unknown event '199901' .199901.tsv.: no frames"):
        ingest_tracks(ws, stray)
    # a folder holding that one file skips it as a folder of many does (it was the error)
    assert ingest_tracks(ws, tmp_path).unknown_events == ["199901"]
    with pytest.raises(UsageError, match="does not exist .check"):  # not "unknown event"
        ingest_tracks(Workspace(tmp_path / "mistyped"), stray)
    shutil.copy(track, tmp_path / "198702.tsv")
    report = ingest_tracks(ws, tmp_path)
    assert report.unknown_events == ["199901"] and report.rejected == []
    assert report.loaded + report.unchanged == ["198702"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no best-track files"):
        ingest_tracks(ws, tmp_path / "empty")
    with pytest.raises(UsageError, match="best-track path not found"):
        ingest_tracks(ws, tmp_path / "missing.tsv")


def test_a_changed_track_replaces_the_stored_one(typhoon, tmp_path):
    ws, track = typhoon
    ingest_tracks(ws, track)
    changed = tmp_path / "198702.tsv"
    changed.write_text("\n".join(_edit(_lines(track), 1, 7, "1004.0")) + "\n")
    assert ingest_tracks(ws, changed).loaded == ["198702"]
    assert track_rows(ws, "198702", [FIRST])[0]["pressure_hpa"] == 1004.0  # cache sees it
    assert ingest_tracks(ws, track).loaded == ["198702"]
    assert track_rows(ws, "198702", [FIRST])[0]["pressure_hpa"] == 1006.0


def test_a_track_of_another_year_is_loaded_with_a_warning(typhoon, tmp_path):
    """A track none of whose rows is near any of its event's frames (the right storm id, the
    wrong year) is reported, so a mix-up does not pass as a load."""
    ws, track = typhoon
    assert ingest_tracks(ws, track).unmatched == []
    shifted = tmp_path / "198702.tsv"
    shifted.write_text(track.read_text().replace("1987\t", "1990\t"))
    report = ingest_tracks(ws, shifted)
    assert report.loaded == ["198702"] and report.unmatched == ["198702"]
    assert "warning: the tracks of 198702 match none of their frames' times" in (
        report.summary_line()
    )
    assert ingest_tracks(ws, track).unmatched == []


def test_lookup_takes_the_nearest_row_within_30_minutes(typhoon):
    ws, track = typhoon
    ingest_tracks(ws, track)
    minutes = [0, 29, 30, 31, -30, -31]
    rows = track_rows(ws, "198702", [FIRST + timedelta(minutes=m) for m in minutes])
    times = [row and row["time"] for row in rows]
    hour = timedelta(hours=1)
    assert times == [FIRST, FIRST, FIRST, FIRST + hour, FIRST, None]  # a tie takes the earlier
    assert track_rows(ws, "198702", [LAST + timedelta(minutes=31)]) == [None]
    as_numpy = np.array([np.datetime64("1987-04-16T11:10")])
    assert track_rows(ws, "198702", as_numpy)[0]["time"] == LAST - hour
    assert track_rows(ws, "199901", [FIRST]) == [None]
    assert track_rows(ws, "198702", ["1987-04-16T11:10Z"])[0]["time"] == LAST - hour
    for times, said in (([1987], "a time is a datetime or an ISO 8601 string, not 1987"),
                        (["noon"], "cannot read time 'noon'"),
                        (FIRST, "times is a list, one per item")):  # fmt: skip
        with pytest.raises(UsageError, match=said):
            track_rows(ws, "198702", times)
    with pytest.raises(UsageError, match="events is a list, one per item, not '198702'"):
        track_payloads(ws, "198702", [FIRST])


def test_payloads_have_exactly_the_store_keys(typhoon):
    ws, track = typhoon
    ingest_tracks(ws, track)
    payloads = track_payloads(
        ws, ["198702", None, "199901", "198702"], [FIRST, FIRST, FIRST, FIRST - timedelta(hours=1)]
    )
    assert payloads == [
        {"track_class": 2, "pressure_hpa": 1006.0, "wind_kt": 0.0, "lat": 7.1, "lon": 144.9},
        {},
        {},
        {},
    ]
    assert tuple(payloads[0]) == PAYLOAD_KEYS
    assert type(payloads[0]["track_class"]) is int
    assert all(type(payloads[0][k]) is float for k in PAYLOAD_KEYS[1:])


def test_cli_lists_each_bad_row_and_exits_1(typhoon, tmp_path, cli):
    ws, track = typhoon
    bad = tmp_path / "198702.tsv"
    bad.write_text("\n".join(_edit(_lines(track), 3, 4, "9")) + "\n")
    done = cli("ingest-track", bad, "-w", ws.root, "--json")
    assert done.exit_code == 1
    assert f"rejected {bad}:3: class '9' is outside 2..6" in done.stderr.splitlines()
    assert json.loads(done.stdout.splitlines()[-1])["rejected"][0]["line"] == 3
    done = cli("ingest-track", track, "-w", ws.root)
    assert done.exit_code == 0 and "0 files rejected" in done.stderr


def test_a_damaged_track_is_named_and_a_reload_mends_it(typhoon):
    ws, track = typhoon
    ingest_tracks(ws, track)
    stored = track_path(ws, "198702")
    stored.write_bytes(stored.read_bytes()[:100])  # truncated
    with pytest.raises(StoreError, match="is damaged .* load the best track again"):
        track_rows(ws, "198702", [FIRST])
    from skysearch.workflows.doctor import diagnose  # doctor --deep said "integrity ok"

    checks = diagnose(load_settings(workspace=ws.root))
    (check,) = [c for c in checks if c.name == "integrity: track"]
    assert check.status == "fail" and str(stored) in check.detail
    assert check.fix.startswith("skysearch ingest-track FILE")
    from skysearch.workflows.repair import repair_workspace  # it said only "still wrong"

    actions = repair_workspace(load_settings(workspace=ws.root), progress=False).actions
    (action,) = [a for a in actions if a.path == str(stored)]
    assert not action.ok and "ingest-track FILE" in action.done
    assert ingest_tracks(ws, track).loaded == ["198702"]
    assert track_rows(ws, "198702", [FIRST])[0]["pressure_hpa"] == 1006.0


def test_a_load_refused_by_a_running_ingest_changes_nothing(typhoon, tmp_path):
    """The ingest lock is taken before any track is written: a refused load leaves the stored
    track and the frames' footprints as they were (not a new track with the old boxes)."""
    ws, track = typhoon
    ingest_tracks(ws, track)
    stored = track_path(ws, "198702").read_bytes()
    boxes = read_frames(ws).select(["frame_id", *BOUND_COLUMNS])
    moved = tmp_path / "198702.tsv"  # the storm 35 degrees further east
    lines = _lines(track)
    for number, line in enumerate(_lines(track), start=1):
        lines = _edit(lines, number, 6, f"{float(line.split(chr(9))[6]) + 35:.1f}")
    moved.write_text("\n".join(lines) + "\n")
    cmd = [sys.executable, "-m", "skysearch", "ingest-track", str(moved), "-w", str(ws.root)]
    with StoreWriter(ws):  # this process holds the workspace's ingest lock
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: another ingest is writing to")
    assert track_path(ws, "198702").read_bytes() == stored
    assert read_frames(ws).select(["frame_id", *BOUND_COLUMNS]).equals(boxes)
    assert ingest_tracks(ws, moved).loaded == ["198702"]  # once the ingest is done
    assert not read_frames(ws).select(["frame_id", *BOUND_COLUMNS]).equals(boxes)
    ingest_tracks(ws, track)
