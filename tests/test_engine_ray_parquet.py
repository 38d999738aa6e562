"""``index frames|clips --engine ray --to-parquet DIR``, then ``store import --format parquet
DIR``: the points loaded this way are those ``index ... --engine local`` writes (ids, payloads,
vectors within 1e-5), on the bundled GOES sample; the driver never opens the store; a re-run
skips the parts written, rewrites a missing one and deletes parts it would not write; a task
whose worker dies is run again and writes its part once.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip(
    "ray", reason="Ray is not installed (pip install -e '.[ray]'; the dev extra has it)"
)

import test_engine_ray  # noqa: E402
from skysearch.ingest.engines.ray import RayEngine  # noqa: E402
from skysearch.retrieval.store.embedded import EmbeddedStore  # noqa: E402
from skysearch.retrieval.store.factory import open_store  # noqa: E402

from skysearch.config import load_settings  # noqa: E402

local_ray, local_run = test_engine_ray.local_ray, test_engine_ray.local_run  # the same fixtures


def points_of(store, collection: str, model_id: str) -> dict[str, tuple[dict, np.ndarray]]:
    return {
        r.id: (r.payload, np.asarray(r.vectors[model_id]))
        for r in store.scroll(collection, with_vectors=True)
    }


def assert_same_points(got: dict, expected: dict) -> None:
    assert sorted(got) == sorted(expected)  # the same point ids
    for pid, (payload, vector) in expected.items():
        assert got[pid][0] == payload
        np.testing.assert_allclose(got[pid][1], vector, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def indexed(local_run, tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, dict]]:
    """A copy of the sample workspace with seeded models, and the points the local engine
    writes: collection -> id -> (payload, vector)."""
    from skysearch.retrieval.indexing.catalogs import index_clips, index_frames

    root = tmp_path_factory.mktemp("parquet") / "ws"
    shutil.copytree(local_run, root)
    models = test_engine_ray._seeded_models(root)
    settings = load_settings(workspace=root, device="cpu")
    expected = {}
    for collection, index, kind in [
        ("frames", index_frames, "frame"),
        ("clips", index_clips, "clip"),
    ]:
        store = open_store(settings, ":memory:")
        assert index(settings, models[kind], workers=0, store=store, progress=False).written
        expected[collection] = points_of(store, collection, models[kind])
    return root, models, expected


def test_parts_written_on_ray_load_as_the_points_a_local_run_writes(
    local_ray, indexed, cli, tmp_path
):
    root, models, expected = indexed
    parts = tmp_path / "parts"
    for collection in ("frames", "clips"):
        args = ("index", collection, "--engine", "ray", "--device", "cpu", "--to-parquet", parts)
        done = cli(*args, "-w", root, "--json")
        assert done.exit_code == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["written"], report["parquet"]) == (len(expected[collection]), str(parts))
    assert not (root / "store").exists()  # the driver never opened the store
    names = sorted(p.relative_to(parts).parent.as_posix() for p in parts.rglob("part-*.parquet"))
    assert names == [f"clips/{models['clip']}", f"frames/{models['frame']}"]
    here = tmp_path / "here"  # --engine local: the same parts, written by this process
    done = cli("index", "frames", "--device", "cpu", "--to-parquet", here, "-w", root, "--json")
    assert json.loads(done.stdout)["written"] == len(expected["frames"])
    assert [p.relative_to(here) for p in here.rglob("*.parquet")] == [
        p.relative_to(parts) for p in (parts / "frames").rglob("*.parquet")
    ]

    loaded = tmp_path / "loaded"
    done = cli("store", "import", parts, "--format", "parquet", "-w", loaded, "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["points"] == {c: len(p) for c, p in expected.items()}
    with EmbeddedStore(loaded / "store") as store:
        for collection, kind in [("frames", "frame"), ("clips", "clip")]:
            assert_same_points(points_of(store, collection, models[kind]), expected[collection])


def test_a_rerun_skips_written_parts_rewrites_missing_ones_and_drops_stale_ones(
    local_ray, indexed, cli, tmp_path
):
    root, models, expected = indexed
    parts = tmp_path / "parts"
    args = ("index", "frames", "--engine", "ray", "--device", "cpu", "--to-parquet", parts)
    assert cli(*args, "-w", root).exit_code == 0
    (part,) = parts.rglob("part-*.parquet")
    written = part.stat().st_mtime_ns
    stale = part.with_name("part-00007-0123456789abcdef.parquet")  # an earlier run's part
    shutil.copy(part, stale)
    again = json.loads(cli(*args, "-w", root, "--json").stdout)
    assert (again["written"], again["skipped_existing"]) == (0, 60)
    assert part.stat().st_mtime_ns == written and not stale.exists()
    part.unlink()  # as if the run had been killed before this part was written
    again = json.loads(cli(*args, "-w", root, "--json").stdout)
    assert (again["written"], again["skipped_existing"]) == (60, 0)
    assert [p.name for p in parts.rglob("*.parquet")] == [part.name]


def test_a_part_whose_worker_dies_is_written_once_by_the_retried_task(local_ray, indexed, tmp_path):
    from skysearch.retrieval.indexing.parquet_parts import index_to_parquet, part_jobs
    from skysearch.retrieval.indexing.pipeline import Item, Listing
    from skysearch.retrieval.indexing.steps import frames_task

    root, models, expected = indexed
    model_id, frames = models["frame"], expected["frames"]
    items = [Item(pid, payload, (payload["frame_id"],)) for pid, (payload, _) in frames.items()]
    listing = Listing("frames", items)
    dim = len(next(iter(frames.values()))[1])
    task = functools.partial(frames_task, str(root), model_id, "cpu")
    marker = str(tmp_path / "died")

    def flaky(sources):
        """Embed, then the worker dies before writing its part (once: the marker). A closure:
        Ray ships it by value (the workers cannot import this test module)."""
        result = task(sources)
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return result
        os._exit(1)

    parts = tmp_path / "parts"
    report = index_to_parquet(listing, flaky, RayEngine(), parts, model_id, dim, 2, False)
    assert Path(marker).exists()  # the worker did die
    assert report.written == 60
    (job,) = part_jobs(listing, parts / "frames" / model_id, model_id, dim)
    assert [p for p in parts.rglob("*") if p.is_file()] == [Path(job.path)]
