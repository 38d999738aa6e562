"""kill -9 during ingest, at many moments, then re-run: exactly the uninterrupted catalog."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from conftest import SAMPLE_DATA
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.framestore import FrameStore
from skysearch.ingest.pipeline import ingest

from skysearch.config import Workspace

SAMPLE_IR = SAMPLE_DATA / "goes-irma-2017" / "infrared"
CONTENT = ["frame_id", "satellite", "channel", "time", "year", "source_path", "checksum",
           "width", "height", "status", "store_row"]  # fmt: skip


def _start(ws: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "skysearch", "ingest", str(SAMPLE_IR), "-w", str(ws),
           "--workers", "2", "--commit-every", "4"]  # fmt: skip
    return subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def _parts(ws: Path) -> int:
    return len(list((ws / "catalog" / "frames").rglob("*.parquet")))


def _group_ends(pgid: int, within: float = 20.0) -> bool:
    """True once no process of the killed run's session is left (orphans would linger)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    os.killpg(pgid, signal.SIGKILL)
    return False


def test_kill_minus_9_then_rerun_gives_the_uninterrupted_catalog(tmp_path):
    clean = Workspace(tmp_path / "clean")
    ingest([SAMPLE_IR], clean, workers=2, commit_every=4, progress=False)
    expected = read_frames(clean).select(CONTENT)

    ws = tmp_path / "killed"
    kills = 0
    for delay in [0.0, 0.02, 0.005, 0.05]:  # kill four runs at different moments
        proc = _start(ws)
        seen = _parts(ws)
        deadline = time.monotonic() + 60
        while proc.poll() is None and _parts(ws) <= seen and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(delay)
        if proc.poll() is not None:
            assert proc.returncode == 0
            break
        os.kill(proc.pid, signal.SIGKILL)  # the writer only, as `kill -9 PID` does
        proc.wait()
        kills += 1
        assert _group_ends(proc.pid), "decode workers outlived the killed writer"
    assert kills >= 2, "the runs finished before they could be interrupted"
    report = ingest([SAMPLE_IR], Workspace(ws), progress=False)
    got = read_frames(Workspace(ws)).select(CONTENT)
    assert got.equals(expected)
    assert report.frames_total == 60 and len(report.skipped) == 1
    assert not list(ws.rglob("*.tmp"))
    for year_dir in (ws / "frames" / "goes-east" / "ir").iterdir():
        assert (year_dir / "frames.u8").stat().st_size == 60 * 234 * 360
    fids = expected["frame_id"].to_pylist()
    np.testing.assert_array_equal(
        FrameStore(Workspace(ws)).read_many(fids), FrameStore(clean).read_many(fids)
    )


def test_second_ingest_on_a_busy_workspace_is_refused(tmp_path):
    from skysearch.ingest.framestore import StoreWriter

    ws = Workspace(tmp_path / "ws")
    with StoreWriter(ws):  # this process holds the workspace's ingest lock
        cmd = [sys.executable, "-m", "skysearch", "ingest", str(SAMPLE_IR), "-w", str(ws.root)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: another ingest is writing to {ws.root}; wait for it " \
        "to finish or use another --workspace"  # fmt: skip
    assert read_frames(ws).num_rows == 0
