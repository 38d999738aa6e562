"""``--engine ray`` (Ray in local mode, 2 CPUs) against ``--engine local`` on the bundled
GOES sample: the same frame catalog, frame store bytes, sketches and clips; a Ray worker that
dies mid-task is retried without duplicates; a re-run is a no-op.

One Ray for the whole module (starting one costs seconds); the engine uses a Ray that is
already up and leaves it up.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA

ray = pytest.importorskip(
    "ray", reason="Ray is not installed (pip install -e '.[ray]'; the dev extra has it)"
)

from skysearch.ingest.decode import preprocess_chunk  # noqa: E402
from skysearch.ingest.engines.ray import RayEngine, start_local  # noqa: E402
from skysearch.ingest.pipeline import ingest  # noqa: E402

from skysearch.config import Workspace  # noqa: E402

GOES = SAMPLE_DATA / "goes-irma-2017"
KEPT = ("catalog", "frames", "sketches")  # what a run writes (reports and locks aside)


@pytest.fixture(scope="module")
def local_ray():
    start_local(2)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> Path:
    """The sample ingested, sketched and clipped with the local engine (the reference)."""
    from skysearch.ingest.clips import build_clips
    from skysearch.ingest.similarity import SketchStore

    root = tmp_path_factory.mktemp("local") / "ws"
    ws = Workspace(root)
    ingest([GOES], ws, workers=2, progress=False)
    SketchStore(ws).update(progress=False)
    build_clips(ws, length=6, gap_minutes=60)
    return root


def written(root: Path) -> dict[str, list[str]]:
    """Digest of every file a run writes, by path; catalog part files (randomly named) by
    their folder, as a sorted list."""
    found: dict[str, list[str]] = {}
    for top in KEPT:
        for path in sorted((root / top).rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            rel = path.relative_to(root)
            key = str(rel.parent / "part-*") if path.name.startswith("part-") else str(rel)
            found.setdefault(key, []).append(hashlib.sha256(path.read_bytes()).hexdigest())
    return {key: sorted(digests) for key, digests in found.items()}


def frames_of(root: Path) -> dict[str, list[str]]:
    """``written`` for the frame catalog and frame store only."""
    return {k: v for k, v in written(root).items() if k.startswith(("catalog/frames", "frames"))}


def catalog_rows(root: Path) -> list[dict]:
    from skysearch.ingest.catalog import read_frames

    return read_frames(Workspace(root)).sort_by("frame_id").to_pylist()


def test_ray_engine_writes_what_the_local_engine_writes(local_ray, local_run, tmp_path, cli):
    root = tmp_path / "ws"
    done = cli("ingest", GOES, "--engine", "ray", "--workers", "2", "-w", root, "--json")
    assert done.exit_code == 0, done.stderr
    assert json.loads(done.stdout)["frames_added"] == 60  # stdout: the one JSON object
    assert cli("clips", "--length", "6", "--gap", "60", "-w", root).exit_code == 0
    reference = written(local_run)
    assert any(key.endswith("frames.u8") for key in reference)
    assert any(key.startswith("sketches") for key in reference)
    assert any(key.startswith("catalog/clips") for key in reference)
    assert written(root) == reference
    assert ray.is_initialized()  # the caller's Ray is left up

    again = cli("ingest", GOES, "--engine", "ray", "-w", root, "--json")
    assert again.exit_code == 0, again.stderr
    report = json.loads(again.stdout)
    assert (report["frames_added"], report["unchanged"]) == (0, 60)
    assert written(root) == reference


def test_a_ray_worker_that_dies_mid_task_is_retried_without_duplicates(
    local_ray, local_run, tmp_path
):
    marker = str(tmp_path / "died")
    victim = sorted((GOES / "infrared").glob("*.GIF"))[20].name  # in the second chunk

    def dies_once(items):
        """Decode half the chunk, then the worker process dies (once: the marker)."""
        if any(source.name == victim for source, _ in items):
            try:
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                preprocess_chunk(items[: len(items) // 2])
                os._exit(1)
        return preprocess_chunk(items)

    root = tmp_path / "ws"
    report = ingest(
        [GOES], Workspace(root), workers=2, progress=False, engine=RayEngine(None, dies_once)
    )
    assert Path(marker).exists()  # the worker did die
    assert report.frames_added == 60 and report.frames_total == 60
    assert frames_of(root) == frames_of(local_run)


def test_a_driver_killed_with_kill_9_then_rerun_gives_the_local_result(
    local_ray, local_run, tmp_path, cli
):
    """The driver (the one writer) dies mid-run with its own local Ray; the re-run finishes."""
    root = tmp_path / "ws"
    cmd = [sys.executable, "-m", "skysearch", "ingest", str(GOES), "--engine", "ray",
           "--workers", "2", "--commit-every", "4", "-w", str(root)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    parts = root / "catalog" / "frames"
    deadline = time.monotonic() + 90
    while not any(parts.rglob("*.parquet")) and proc.poll() is None:
        assert time.monotonic() < deadline, "no commit within 90 s"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    os.killpg(proc.pid, signal.SIGKILL)  # Ray's agents would end on their own within a minute
    assert proc.returncode == -signal.SIGKILL  # killed mid-run, not finished

    again = cli("ingest", GOES, "--engine", "ray", "-w", root, "--json")
    assert again.exit_code == 0, again.stderr
    assert '"unchanged": 0' not in again.stdout  # the killed run had committed frames
    store = {k: v for k, v in written(root).items() if k.startswith("frames/")}
    assert store == {k: v for k, v in written(local_run).items() if k.startswith("frames/")}
    # the catalog's rows (its part files are laid out by the run's commits, not its content)
    assert catalog_rows(root) == catalog_rows(local_run)


def test_unreachable_ray_cluster_is_one_error_line(cli, tmp_path):
    done = cli("ingest", GOES, "--engine", "ray", "--address", "ray://127.0.0.1:1", "-w", tmp_path)
    assert done.exit_code == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(
        "error: cannot reach the Ray cluster at --address ray://127.0.0.1:1"
    )
    assert not list(Path(tmp_path).iterdir())  # refused before the workspace was touched


def test_update_with_the_ray_engine_loads_what_ingest_loads(local_ray, local_run, tmp_path, cli):
    root = tmp_path / "ws"
    done = cli("update", GOES, "--engine", "ray", "--clip-spec", "6x60", "-w", root, "--json")
    assert done.exit_code == 1, done.stderr  # the sample's one bad file is listed
    assert '"frames_added": 60' in done.stdout
    assert written(root) == written(local_run)


def _seeded_models(root: Path) -> dict[str, str]:
    """An untrained, seeded GOES IR frame model and 6x60m clip model: kind -> model id."""
    import torch
    from skysearch.encoders.factory import save_model
    from skysearch.encoders.models.clip import build_clip_embedder, clip_config_for
    from skysearch.encoders.models.frame import FrameEncoderConfig, build_frame_encoder
    from skysearch.ingest.profiles import load_profiles

    profile = load_profiles()["goes-sector"]
    width, height = profile.resolution
    frame = FrameEncoderConfig(channels=["ir"], height=height, width=width)
    data = {"satellite": profile.satellite, "channels": ["ir"], "length": 6, "gap_minutes": 60}
    clip = clip_config_for(frame, 6)
    torch.manual_seed(0)
    encoder = build_frame_encoder(frame.to_dict(), pretrained=False)
    embedder = build_clip_embedder(frame.to_dict(), clip.to_dict(), pretrained=False)
    ws = Workspace(root)
    config = {"frame": frame.to_dict(), "data": data}
    ids = {"frame": save_model(ws, "frame", encoder, config).model_id}
    config = {**config, "clip": clip.to_dict()}
    ids["clip"] = save_model(ws, "clip", embedder, config).model_id
    return ids


def test_embedding_on_ray_gives_the_local_vectors_and_point_ids(local_ray, local_run, tmp_path):
    import numpy as np
    from skysearch.retrieval.indexing.catalogs import index_clips, index_frames
    from skysearch.retrieval.store.factory import open_store

    from skysearch.config import load_settings

    root = tmp_path / "ws"
    shutil.copytree(local_run, root)
    models = _seeded_models(root)
    settings = load_settings(workspace=root, device="cpu")
    for collection, index, model_id in [
        ("frames", index_frames, models["frame"]),
        ("clips", index_clips, models["clip"]),
    ]:
        vectors = {}
        for name, engine in [("local", None), ("ray", RayEngine())]:
            store = open_store(settings, ":memory:")
            done = index(settings, model_id, workers=0, store=store, progress=False, engine=engine)
            assert done.written > 0
            points = store.scroll(collection, with_vectors=True)
            vectors[name] = {p.id: np.asarray(p.vectors[model_id]) for p in points}
        assert sorted(vectors["ray"]) == sorted(vectors["local"])  # the same point ids
        assert len(vectors["ray"]) == (60 if collection == "frames" else done.written)
        for pid, local in vectors["local"].items():
            np.testing.assert_allclose(vectors["ray"][pid], local, rtol=0, atol=1e-5)


def test_index_frames_command_on_ray_writes_each_point_once(local_ray, local_run, tmp_path, cli):
    root = tmp_path / "ws"
    shutil.copytree(local_run, root)
    _seeded_models(root)
    args = ("index", "frames", "--engine", "ray", "--device", "cpu", "-w", root, "--json")
    first = cli(*args)
    assert first.exit_code == 0, first.stderr
    assert json.loads(first.stdout)["written"] == 60
    again = json.loads(cli(*args).stdout)  # a re-run embeds nothing
    assert (again["written"], again["skipped_existing"]) == (0, 60)


def test_a_command_starts_its_own_ray_and_leaves_no_process_behind(local_run, tmp_path):
    """``index frames --engine ray --workers 0`` in its own process: a local Ray of one CPU
    (not zero: its tasks would wait forever), shut down when the command ends."""
    root = tmp_path / "ws"
    shutil.copytree(local_run, root)
    _seeded_models(root)
    cmd = [sys.executable, "-m", "skysearch", "index", "frames", "--engine", "ray",
           "--workers", "0", "--device", "cpu", "-w", str(root), "--json"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True, text=True
    )
    try:
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0
    assert json.loads(out)["written"] == 60
    deadline = time.monotonic() + 20  # Ray's processes share the command's process group
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "Ray processes left behind"
        time.sleep(0.2)
