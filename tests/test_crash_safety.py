"""Crash safety as documented: atomic writes are fsynced before and after their rename, and a
catalog compaction killed at any step leaves a folder every Parquet reader reads correctly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.dataset as ds
import pytest
import torch
from conftest import SAMPLE_DATA, first_ir_frames
from skysearch.encoders.checkpoints import save_checkpoint
from skysearch.encoders.datasets.captions import CaptionRow, read_caption_rows, write_csv
from skysearch.encoders.models.text_image import DEFAULT_MODEL, create_text_image_model
from skysearch.encoders.training.text_image_data import cached_image_features
from skysearch.ingest.catalog import compact_partitions, read_frames, recover
from skysearch.ingest.pipeline import ingest
from skysearch.ingest.similarity import SketchStore

from skysearch.config import Workspace

SAMPLE_IR = SAMPLE_DATA / "goes-irma-2017" / "infrared"


@pytest.fixture
def disk_log(monkeypatch) -> list[tuple[str, ...]]:
    """Every fsync (with the path of its file or folder) and rename, in order."""
    events: list[tuple[str, ...]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst, **kwargs) -> None:
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst, **kwargs)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


def assert_durable(events: list[tuple[str, ...]], name: str, under: str = "/") -> int:
    """Each rename onto a file called ``name`` (under a folder called ``under``): the new file
    fsynced before, the folder after. Returns how many."""
    renames = [
        (i, e)
        for i, e in enumerate(events)
        if e[0] == "replace" and e[2].endswith(name) and under in e[2]
    ]
    for i, (_, src, dst) in renames:
        assert ("fsync", src) in events[:i], f"{src} renamed onto {dst} before its fsync"
        assert ("fsync", str(Path(dst).parent)) in events[i + 1 :], f"folder of {dst} not fsynced"
    return len(renames)


def test_checkpoint_files_are_fsynced_around_their_rename(tmp_path, disk_log):
    save_checkpoint(tmp_path / "ckpt", {"w": torch.arange(6.0)}, {"note": "x"})
    assert assert_durable(disk_log, "/model.safetensors") == 1
    assert assert_durable(disk_log, "/config.json") == 1


def test_sketch_and_frame_meta_are_fsynced_around_their_rename(tmp_path, disk_log):
    ws = Workspace(tmp_path / "ws")
    ingest([first_ir_frames(tmp_path / "src", 3)], ws, workers=1, progress=False)
    SketchStore(ws).update(progress=False)
    assert assert_durable(disk_log, "/meta.json", under="/sketches/") >= 2  # rows=0, rows=3
    assert assert_durable(disk_log, "/meta.json", under="/frames/") == 1
    assert assert_durable(disk_log, ".parquet", under="/catalog/frames/") == 1


def test_caption_csv_is_replaced_durably_and_a_failed_write_keeps_the_old_one(tmp_path, disk_log):
    rows = [CaptionRow(str(tmp_path / f"{i}.png"), f"a photo of {i}", "", "forest") for i in "ab"]
    path = write_csv(rows, tmp_path / "captions" / "train.csv")
    assert assert_durable(disk_log, "/train.csv") == 1
    before = path.read_bytes()
    with pytest.raises(AttributeError):
        write_csv([*rows, object()], path)  # fails half-way through the rows
    assert path.read_bytes() == before
    assert [r.title for r in read_caption_rows(path)] == ["a photo of a", "a photo of b"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.csv"]  # no leftover


def test_trunk_feature_cache_is_replaced_durably(tmp_path, disk_log):
    images = sorted((SAMPLE_DATA / "rsscn7-mini").rglob("*.jpg"))[:2]
    tim = create_text_image_model(DEFAULT_MODEL)
    cache = tmp_path / "cache" / "features.npz"
    first = cached_image_features(tim, [str(p) for p in images], cache, progress=False)
    assert assert_durable(disk_log, "/features.npz") == 1
    assert sorted(p.name for p in cache.parent.iterdir()) == ["features.npz"]
    again = cached_image_features(
        tim, [str(p) for p in images], cache, progress=False
    )  # from the cache
    assert torch.equal(first, again)
    assert assert_durable(disk_log, "/features.npz") == 1  # nothing new: not written again
    for damage in (b"", b"PK\x03\x04" + b"\x00" * 50, cache.read_bytes()[:300]):
        cache.write_bytes(damage)  # a damaged cache is a miss, computed and written again
        assert torch.equal(cached_image_features(tim, [str(p) for p in images], cache), first)
        assert cache.read_bytes() != damage


KILLER = """
import errno, os, shutil, signal, sys
from pathlib import Path
from skysearch.config import Workspace
from skysearch.ingest import catalog

target, calls = int(sys.argv[2]), 0

def counted(real):
    def op(*args, **kwargs):
        global calls
        calls += 1
        if calls == target:  # killed just before this file operation
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return op

def cannot_exchange(*args):
    raise OSError(errno.EINVAL, "no RENAME_EXCHANGE on this filesystem")

for name in ("replace", "rename", "unlink", "link", "rmdir"):
    setattr(os, name, counted(getattr(os, name)))
catalog.exchange = counted(cannot_exchange if sys.argv[3] == "fallback" else catalog.exchange)
catalog.compact_partitions(Workspace(Path(sys.argv[1])), min_parts=2)
"""


def _outside_read(ws: Path) -> list[str]:
    """Frame ids as an outside reader sees the catalog folder (pyarrow.dataset defaults)."""
    dataset = ds.dataset(ws / "catalog" / "frames", format="parquet")
    if not dataset.files:  # the two-rename fallback, between its renames
        return []
    return dataset.to_table(columns=["frame_id"])["frame_id"].to_pylist()


@pytest.mark.parametrize("mode", ["exchange", "fallback"])
def test_a_compaction_killed_at_any_step_leaves_a_whole_catalog(tmp_path, mode):
    """Killed before each file operation of a compaction: with the atomic exchange an outside
    reader sees every row exactly once at every step; with the two-rename fallback never a row
    twice (and the partition may be absent); after ``recover`` both are whole and tidy."""
    base = Workspace(tmp_path / "base")
    ingest([SAMPLE_IR], base, commit_every=15, workers=1, progress=False)  # 4 parts
    expected = read_frames(base)
    ids = sorted(expected["frame_id"].to_pylist())
    assert sorted(_outside_read(base.root)) == ids and len(ids) == 60
    killed = 0
    for step in range(1, 40):
        ws = Workspace(tmp_path / f"kill-{step}")
        shutil.copytree(base.root, ws.root)
        args = [sys.executable, "-c", KILLER, str(ws.root), str(step), mode]
        done = subprocess.run(args, timeout=120)
        seen = _outside_read(ws.root)
        if mode == "exchange":
            assert sorted(seen) == ids, f"killed before step {step}: not every row exactly once"
            assert read_frames(ws).equals(expected), f"our reader after a kill before step {step}"
        else:
            assert len(seen) == len(set(seen)), f"killed before step {step}: rows counted twice"
            assert set(seen) <= set(ids)
        recover(ws)  # what the next ingest (or repair) does first
        assert sorted(_outside_read(ws.root)) == ids
        assert read_frames(ws).equals(expected)
        assert not list((ws.catalog_dir / ".staging").glob("*/*"))
        if done.returncode == 0:
            break
        assert done.returncode == -9
        killed += 1
    folder = ws.frames_catalog / "satellite=goes-east" / "year=2017"
    assert len(list(folder.glob("*.parquet"))) == 1  # the uninterrupted run compacted
    assert killed >= 6  # link..., write (rename), exchange or renames, delete the old parts


def test_our_reader_lists_again_when_a_part_vanishes(tmp_path, monkeypatch):
    """A compaction finishing between our listing and our read: the reader lists again."""
    from skysearch.ingest import catalog

    ws = Workspace(tmp_path / "ws")
    ingest([SAMPLE_IR], ws, commit_every=15, workers=1, progress=False)
    expected = read_frames(ws)
    real_parts = catalog.frame_parts
    calls = []

    def racing(*args, **kwargs):
        parts = real_parts(*args, **kwargs)
        if not calls:
            compact_partitions(ws, min_parts=2)  # the listed parts are gone now
        calls.append(1)
        return parts if len(calls) == 1 else real_parts(*args, **kwargs)

    monkeypatch.setattr(catalog, "frame_parts", racing)
    assert read_frames(ws).equals(expected)
    assert len(calls) == 2
    assert pc.count_distinct(read_frames(ws)["frame_id"]).as_py() == 60


def test_doctor_names_an_interrupted_compaction_and_repair_cleans_it_up(tmp_path, cli):
    ws = Workspace(tmp_path / "ws")
    ingest([SAMPLE_IR], ws, commit_every=15, workers=1, progress=False)
    expected = read_frames(ws)
    # killed after the merged file was written into the staging folder, before the exchange
    args = [sys.executable, "-c", KILLER, str(ws.root), "2", "exchange"]
    assert subprocess.run(args, timeout=120).returncode == -9
    (staging,) = list((ws.catalog_dir / ".staging").glob("*/*"))
    doctor = json.loads(cli("doctor", "-w", ws.root, "--json").stdout)
    (pending,) = [c for c in doctor["checks"] if c["name"] == "integrity: pending"]
    assert pending["status"] == "todo" and str(staging) in pending["detail"]
    report = json.loads(cli("repair", "-w", ws.root, "--json").stdout)
    assert report["ok"] and report["actions"][0]["done"] == "deleted the leftover"
    assert not staging.exists()
    assert sorted(_outside_read(ws.root)) == sorted(expected["frame_id"].to_pylist())
    assert read_frames(ws).equals(expected)
