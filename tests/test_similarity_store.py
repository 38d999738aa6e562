"""Stored sketches, clip scoring by id, re-ranking and ``skysearch similarity`` on real frames."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import SAMPLE_DATA, shared_data
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.clips import build_clips, clip_frames, read_clips
from skysearch.ingest.framestore import FrameStore
from skysearch.ingest.pipeline import ingest
from skysearch.ingest.similarity import (
    GridSpec,
    SketchStore,
    cell_sizes,
    clip_similarity,
    pairwise_clips,
    score_clips,
    sketch_frames,
    sketch_geometry,
)
from skysearch.ingest.similarity.store import IDS_FILE, META_FILE
from skysearch.retrieval.search.rerank import rerank

from skysearch.config import Workspace
from skysearch.errors import NotFoundError

SAMPLE_IR = SAMPLE_DATA / "goes-irma-2017" / "infrared"


@pytest.fixture(scope="module")
def sample_ws(tmp_path_factory):
    """The bundled GOES IR sample ingested (by the CLI, so sketches come with it) + 6x60m clips."""
    from skysearch.cli.app import main

    ws = Workspace(tmp_path_factory.mktemp("sim") / "ws")
    main(["ingest", str(SAMPLE_IR), "-w", str(ws.root), "--workers", "1"])  # returns on success
    build_clips(ws, length=6, gap_minutes=60)
    ids = read_clips(ws, channels="ir")["clip_id"].to_pylist()
    assert len(ids) > 20
    return ws, ids


def test_ingest_stores_a_sketch_for_every_frame(sample_ws):
    ws, _ = sample_ws
    store = SketchStore(ws)
    report = store.update(progress=False)
    assert report.sketched == 0 and report.total == 60  # the ingest command already did it
    frames = FrameStore(ws)
    pixels = frames.array("goes-east", "ir", 2017)
    stored = store.array(("goes-east", "ir", 2017))
    assert stored.dtype == np.uint8 and len(stored) == len(pixels) == 60
    assert np.array_equal(stored, sketch_frames(np.asarray(pixels), GridSpec()))


def test_get_many_in_order_and_on_the_fly_for_other_specs(sample_ws):
    ws, ids = sample_ws
    frame_ids = [fid for fid in read_clips(ws)["frame_ids"][5].as_py()[0]][::-1]
    pixels = FrameStore(ws).read_many(frame_ids)
    for spec in (GridSpec(), GridSpec(8, 10, "reference")):  # the second is not stored
        got, sizes = SketchStore(ws, spec).get_many(frame_ids)
        assert np.array_equal(got, sketch_frames(pixels, spec))
        assert np.array_equal(sizes, cell_sizes(sketch_geometry(pixels.shape[1:], spec)))
    assert not (ws.sketch_dir / "reference-g8-b10").exists()


def test_update_resumes_after_a_crash_and_notices_a_rebuilt_store(sample_ws, tmp_path):
    ws0, _ = sample_ws
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(ws0.root, ws.root)
    store = SketchStore(ws)
    folder = store.root / "goes-east" / "ir" / "2017"
    reference = store.array(("goes-east", "ir", 2017)).copy()
    # A crash after appending rows but before meta.json counted them: garbage tail, rows=20.
    meta = json.loads((folder / META_FILE).read_text())
    meta["rows"] = 20
    (folder / META_FILE).write_text(json.dumps(meta))
    with open(folder / "sketch.bin", "ab") as tail:
        tail.write(b"\xff" * 1000)
    report = store.update(progress=False)
    assert report.sketched == 40
    assert np.array_equal(store.array(("goes-east", "ir", 2017)), reference)
    # A stored id that no longer matches the catalog row: re-sketched from there on.
    ids = bytearray((folder / IDS_FILE).read_bytes())
    ids[36 * 50 : 36 * 51] = b"x" * 36
    (folder / IDS_FILE).write_bytes(bytes(ids))
    assert store.update(progress=False).sketched == 10
    assert store.update(progress=False).sketched == 0


def test_score_clips_matches_clip_similarity_on_frames(sample_ws):
    ws, ids = sample_ws
    query = ids[3]
    scores = score_clips(ws, query, ids)
    assert scores.channels == ["ir"] and scores.similarity.shape == (len(ids),)
    assert scores.similarity[3] == 1.0
    assert np.all((scores.similarity >= 0) & (scores.similarity <= 1))
    q_frames = clip_frames(ws, query)
    for k in (0, 7, len(ids) - 1):
        expected = clip_similarity(q_frames, clip_frames(ws, ids[k]))
        assert scores.similarity[k] == pytest.approx(expected.similarity, abs=1e-12)
        assert scores.score(k).channels["ir"] == pytest.approx(expected.channels["0"], abs=1e-12)
    from_frames = score_clips(ws, q_frames, ids)
    assert np.allclose(from_frames.similarity, scores.similarity, atol=1e-12)


def test_pairwise_and_rerank(sample_ws):
    ws, ids = sample_ws
    subset = ids[:8]
    matrix = pairwise_clips(ws, subset)
    assert np.allclose(matrix, matrix.T) and np.all(np.diag(matrix) == 1.0)
    row = score_clips(ws, subset[2], subset).similarity
    assert np.allclose(matrix[2], row, atol=1e-12)
    candidates = ids[::-1][:15]
    ranked = rerank(ws, ids[0], candidates, top_k=5)
    assert len(ranked) == 5
    sims = [r.similarity for r in ranked]
    assert sims == sorted(sims, reverse=True)
    full = score_clips(ws, ids[0], candidates).similarity
    assert sims[0] == pytest.approx(full.max(), abs=0)
    assert ranked[0].clip_id == candidates[ranked[0].rank_before]
    assert rerank(ws, ids[0], []) == []


# --------------------------------------------------------------------------- CLI


def test_cli_reference_folders_match_golden(cli):
    root = shared_data("coms-golden")
    result = cli("similarity", root / "video_1", root / "video_2", "--mode", "reference", "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert abs(payload["similarity"] - 0.813196) <= 5e-7
    assert abs(payload["channels"]["wv"] - 0.766875601251) <= 1e-9
    assert "overall" in result.stderr and "ir01" in result.stderr


def test_cli_reference_video_layout(cli, tmp_path):
    root = shared_data("coms-golden")
    for video in ("a", "b"):
        for step, src in enumerate(("video_1", "video_2"), start=1):
            shutil.copytree(root / src, tmp_path / video / f"image_{step}")
    shutil.copytree(root / "video_3", tmp_path / "b" / "image_2", dirs_exist_ok=True)
    result = cli("similarity", tmp_path / "a", tmp_path / "b", "--grid", "8", "--bins", "10")
    assert result.exit_code == 0, result.stderr
    result = cli(
        "similarity", tmp_path / "a", tmp_path / "b", "--mode", "reference", "--grid", "8",
        "--bins", "10", "--json",
    )  # fmt: skip
    channels = json.loads(result.stdout)["channels"]
    # frame 1: video_1 vs video_1 (1.0); frame 2: video_2 vs video_3 (the README's 2-3 value)
    assert channels["ir01"] == pytest.approx((1.0 + 0.537852536386) / 2, abs=1e-9)


def test_cli_catalog_clips_by_id_and_time(cli, sample_ws):
    ws, ids = sample_ws
    table = read_clips(ws)
    start = table["start"][4].as_py().strftime("%Y-%m-%dT%H:%MZ")
    by_id = cli("similarity", ids[0], ids[4], "-w", ws.root, "--json")
    assert by_id.exit_code == 0, by_id.stderr
    by_time = cli("similarity", ids[0], start, "--length", "6", "-w", ws.root, "--json")
    assert by_time.exit_code == 0, by_time.stderr
    assert json.loads(by_id.stdout) == json.loads(by_time.stdout)
    expected = score_clips(ws, ids[0], [ids[4]]).similarity[0]
    assert json.loads(by_id.stdout)["similarity"] == pytest.approx(expected, abs=1e-12)


def test_cli_errors_exit_2(cli, tmp_path, sample_ws):
    ws, ids = sample_ws
    root = shared_data("coms-golden")
    missing = cli("similarity", tmp_path / "nope", root / "video_1")
    assert missing.exit_code == 2 and "folder not found" in missing.stderr
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(root / "video_1" / "ir01.png", partial / "ir01.png")
    channels = cli("similarity", partial, root / "video_1")
    assert channels.exit_code == 2 and "channels differ" in channels.stderr
    two = tmp_path / "two"
    for step in (1, 2):
        shutil.copytree(root / "video_1", two / f"image_{step}")
    frames = cli("similarity", two, root / "video_1")
    assert frames.exit_code == 2 and "frame counts differ" in frames.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no {channel}.png" in cli("similarity", empty, empty).stderr
    unknown = cli("similarity", "00000000-0000-0000-0000-000000000000", ids[0], "-w", ws.root)
    assert unknown.exit_code == 2 and "not in the clip catalog" in unknown.stderr
    assert "check the id: clip ids are in a clip search's results" in unknown.stderr
    assert "index clips" not in unknown.stderr  # indexing cannot make a clip id known
    gone = "00000000-0000-0000-0000-000000000001"  # a store point's clip, since rebuilt away
    with pytest.raises(NotFoundError) as caught:
        score_clips(ws, ids[0], [ids[1], gone])
    assert caught.value.hint.endswith("`skysearch index clips` removes such points")
    late = cli("similarity", ids[0], "2030-01-01T00:00Z", "-w", ws.root)
    assert late.exit_code == 2 and "nearest starts" in late.stderr
    bad = cli("similarity", ids[0], ids[1], "--mode", "fast", "-w", ws.root)
    assert bad.exit_code == 2 and "mode" in bad.stderr


def test_a_long_lived_store_sees_frames_ingested_later(tmp_path):
    ws = Workspace(tmp_path / "ws")
    first = sorted(p for p in SAMPLE_IR.iterdir() if p.suffix == ".GIF")
    staged = tmp_path / "in"
    staged.mkdir()
    for path in first[:10]:
        shutil.copy(path, staged / path.name)
    ingest([staged], ws, workers=1, progress=False)
    store = SketchStore(ws)
    old_ids = read_frames_ids(ws)
    assert len(store.get_many(old_ids)[0]) == 10
    for path in first[10:20]:
        shutil.copy(path, staged / path.name)
    ingest([staged], ws, workers=1, progress=False)
    new_ids = read_frames_ids(ws)
    sketches, _ = store.get_many(new_ids)  # cached index reloads; unsketched: on the fly
    pixels = FrameStore(ws).read_many(new_ids)
    assert np.array_equal(sketches, sketch_frames(pixels, GridSpec()))


def read_frames_ids(ws: Workspace) -> list[str]:
    return read_frames(ws, columns=["frame_id"])["frame_id"].to_pylist()
