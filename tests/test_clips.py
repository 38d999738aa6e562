"""Clip assembly on the bundled real sample (hourly :45 frames with real archive gaps)."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from conftest import SAMPLE_DATA
from skysearch.ingest import ids
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.clips import build_clips, clip_frames, read_clips
from skysearch.ingest.framestore import FrameStore
from skysearch.ingest.pipeline import ingest

from skysearch.config import Workspace
from skysearch.errors import UsageError

SAMPLE_IR = SAMPLE_DATA / "goes-irma-2017" / "infrared"


@pytest.fixture(scope="module")
def sample_ws(tmp_path_factory):
    ws = Workspace(tmp_path_factory.mktemp("clips") / "ws")
    ingest([SAMPLE_IR], ws, progress=False)
    return ws


def _reference(frames, length: int, gap: int, tol: int) -> dict[str, list[str]]:
    """Plain-Python clip assembly: start -> frame ids, for complete clips only."""
    times = frames["time"].to_pylist()
    fids = frames["frame_id"].to_pylist()
    out = {}
    for start in times:
        picked = []
        for k in range(length):
            target = start + timedelta(minutes=k * gap)
            dist, idx = min((abs(t - target), i) for i, t in enumerate(times))
            if dist > timedelta(minutes=tol) or (picked and picked[-1] == fids[idx]):
                break
            picked.append(fids[idx])
        if len(picked) == length:
            out[start.isoformat()] = picked
    return out


@pytest.mark.parametrize(("length", "gap", "tol"), [(3, 60, 15), (4, 120, 0), (6, 90, 30)])
def test_clips_match_a_plain_reference(sample_ws, length, gap, tol):
    report = build_clips(sample_ws, length=length, gap_minutes=gap, tolerance_minutes=tol)
    frames = read_frames(sample_ws)
    expected = _reference(frames, length, gap, tol)
    clips = read_clips(sample_ws, length=length, gap_minutes=gap)
    got = {row["start"].isoformat(): row["frame_ids"][0] for row in clips.to_pylist()}
    assert got == expected and len(got) > 0
    assert report.clips_total == len(expected)
    assert report.incomplete == frames.num_rows - len(expected)
    row = clips.slice(0, 1).to_pylist()[0]
    assert row["clip_id"] == ids.clip_id("goes-east", ["ir"], row["start"], length, gap)
    assert row["end"] - row["start"] == timedelta(minutes=gap * (length - 1))


def test_gaps_and_tolerance(sample_ws):
    # day 251 has a frame every 2 h only: hourly clips cannot reach into it, 2-hourly can
    hourly = build_clips(sample_ws, length=12, gap_minutes=60, tolerance_minutes=15)
    assert hourly.incomplete > 0
    last_hourly = read_clips(sample_ws, length=12, gap_minutes=60)["end"][-1].as_py()
    assert last_hourly == datetime(2017, 9, 8, 0, 45, tzinfo=timezone.utc)
    build_clips(sample_ws, length=4, gap_minutes=120, tolerance_minutes=15)
    last_2h = read_clips(sample_ws, length=4, gap_minutes=120)["end"][-1].as_py()
    assert last_2h == datetime(2017, 9, 8, 22, 45, tzinfo=timezone.utc)
    # frames sit at :45; a 90-minute gap lands steps on :15, 30 minutes from any frame
    assert build_clips(sample_ws, length=4, gap_minutes=90, tolerance_minutes=15).clips_total == 0
    assert build_clips(sample_ws, length=4, gap_minutes=90, tolerance_minutes=29).clips_total == 0
    assert build_clips(sample_ws, length=4, gap_minutes=90, tolerance_minutes=30).clips_total > 0


def test_rerun_is_idempotent(sample_ws):
    build_clips(sample_ws, length=5, gap_minutes=60)
    files = sorted(sample_ws.clips_catalog.rglob("ir_5x60m.parquet"))
    stamps = [f.stat().st_mtime_ns for f in files]
    before = read_clips(sample_ws, length=5, gap_minutes=60)
    again = build_clips(sample_ws, length=5, gap_minutes=60)
    assert again.clips_added == 0 and again.clips_total == before.num_rows
    assert read_clips(sample_ws, length=5, gap_minutes=60).equals(before)
    assert [f.stat().st_mtime_ns for f in files] == stamps  # nothing rewritten


def test_a_copy_of_a_clip_file_is_not_read_twice(tmp_path):
    """As for frame parts: a file manager's or sync tool's copy beside a clip file tripled
    every clip read (training, indexing, the predictor's pairs); doctor names it."""
    from skysearch.workflows.doctor import diagnose

    from skysearch.config import Settings

    ws = Workspace(tmp_path / "ws")
    ingest([SAMPLE_IR], ws, progress=False)
    build_clips(ws, length=5, gap_minutes=60)
    before = read_clips(ws)
    (path,) = ws.clips_catalog.rglob("ir_5x60m.parquet")
    for name in ("ir_5x60m (copy).parquet", "Copy of ir_5x60m.parquet", "ir_5x60m.1.parquet"):
        shutil.copy(path, path.with_name(name))
    assert read_clips(ws).equals(before) and before.num_rows > 0
    again = build_clips(ws, length=5, gap_minutes=60)
    assert (again.clips_added, again.clips_total) == (0, before.num_rows)
    (check,) = [c for c in diagnose(Settings(workspace=ws)) if c.name == "catalog files"]
    assert check.status == "todo" and "Copy of ir_5x60m.parquet" in check.detail


def test_clip_frames_pixels(sample_ws):
    build_clips(sample_ws, length=4, gap_minutes=60)
    row = read_clips(sample_ws, length=4, gap_minutes=60).slice(2, 1).to_pylist()[0]
    pixels = clip_frames(sample_ws, row)
    assert pixels.shape == (1, 4, 234, 360) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[0], FrameStore(sample_ws).read_many(row["frame_ids"][0]))
    np.testing.assert_array_equal(clip_frames(sample_ws, row["clip_id"]), pixels)


def test_multichannel_clips_need_every_channel(tmp_path, cli):
    # a second channel made of real pixels: the IR files renamed as WV, one time missing
    src = tmp_path / "src"
    shutil.copytree(SAMPLE_IR, src / "ir")
    (src / "wv").mkdir()
    for path in sorted(SAMPLE_IR.glob("HUIR17249*45.GIF")):
        if path.name != "HUIR172491245.GIF":
            shutil.copy(path, src / "wv" / path.name.replace("HUIR", "HUWV"))
    ws = tmp_path / "ws"
    assert cli("ingest", src, "-w", ws).exit_code == 0
    result = cli("clips", "--length", "3", "--gap", "60", "--channels", "wv,ir", "-w", ws, "--json")
    assert result.exit_code == 0, result.stderr
    summary = json.loads(result.stdout)
    clips = read_clips(Workspace(ws), channels="wv,ir").to_pylist()
    # day 249 (24 WV times) minus the 12:45 hole: starts 00:45..21:45 give 22 runs of 3, the
    # hole removes 3 of them -> 19
    assert summary["by_spec"] == {"goes-east/wv+ir_3x60m": 19} and len(clips) == 19
    assert all(c["channels"] == ["wv", "ir"] for c in clips)
    assert all(c["start"].hour not in (10, 11, 12) for c in clips)
    wv_ids = set(read_frames(Workspace(ws), channel="wv")["frame_id"].to_pylist())
    assert all(set(c["frame_ids"][0]) <= wv_ids for c in clips)
    assert clip_frames(Workspace(ws), clips[0]).shape == (2, 3, 234, 360)


def test_cli_clip_errors(tmp_path, cli, sample_ws):
    empty = cli("clips", "-w", tmp_path / "empty")
    assert empty.exit_code == 2 and empty.stderr.startswith("error: no frames in the catalog")
    missing = cli("clips", "--channels", "ir,vis", "-w", sample_ws.root)
    assert missing.exit_code == 2 and "no satellite has all channels ir,vis" in missing.stderr
    with pytest.raises(UsageError):
        build_clips(sample_ws, gap_minutes=30, tolerance_minutes=30)
