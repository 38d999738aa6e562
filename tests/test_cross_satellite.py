"""One model across satellite generations (issue 18) on real frames: a few hourly GOES-East IR
GIFs (360x234 working size) and Digital Typhoon GMS-3 IR HDF5 frames (256x256), both channel
``ir``: ``train frames --satellites``, selection, indexing and search across satellites, a
model applied to a satellite it never saw, and old single-satellite registry entries."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import first_ir_frames, shared_data
from skysearch.encoders.registry import list_models
from skysearch.encoders.training.cells import pair_partners
from skysearch.retrieval.search.models import pick_clip_model, pick_frame_model

from skysearch.config import Workspace

SATS = "goes-east,gms3"


@pytest.fixture(scope="module")
def world(tmp_path_factory, cli_module):
    """Workspace with 24 GOES and 24 GMS-3 frames, 4x60m ir clips, and a cross-satellite
    frame + clip model (1 epoch each) indexed."""
    typhoon = shared_data("digital-typhoon", "image", "198702")
    root = tmp_path_factory.mktemp("xsat")
    goes = first_ir_frames(root / "goes", 24)
    gms = root / "gms3"
    gms.mkdir()
    for path in sorted(typhoon.glob("*.h5"))[:24]:
        shutil.copy(path, gms / path.name)
    ws = root / "ws"
    for args in (
        ("ingest", goes),
        ("ingest", gms),
        ("clips", "--length", "4", "--gap", "60"),
        ("train", "frames", "--satellites", SATS, "--channels", "ir", "--epochs", "1"),
        ("train", "clips", "--epochs", "1"),
        ("index", "clips"),
    ):
        result = cli_module(*args, "-w", ws)
        assert result.exit_code == 0, (args, result.stderr)
    return Workspace(ws)


@pytest.fixture(scope="module")
def cli_module():
    """The in-process CLI runner of conftest, for module-scoped fixtures (no capsys)."""
    import contextlib
    import io

    from conftest import CliResult
    from skysearch.cli.app import main

    def run(*args) -> CliResult:
        out, err, code = io.StringIO(), io.StringIO(), 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in args])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        return CliResult(code, out.getvalue(), err.getvalue())

    return run


def test_train_satellites_records_both_and_splits_each(world):
    frame, clip = list_models(world, "frame")[-1], list_models(world, "clip")[-1]
    for record in (frame, clip):
        data = record.config["data"]
        assert data["satellites"] == ["goes-east", "gms3"] and data["satellite"] == "goes-east"
        splits = data["splits"]
        # each satellite is split on its own time range (1987 and 2017): both train and hold out
        assert splits["gms3"]["holdout_start"].startswith("1987-")
        assert splits["goes-east"]["holdout_start"].startswith("2017-")
        assert all(s["train_clips"] > 0 and s["heldout_clips"] > 0 for s in splits.values())
        assert data["train_clips"] == sum(s["train_clips"] for s in splits.values())


def test_selection_picks_the_cross_satellite_model_for_either_satellite(world):
    clip = list_models(world, "clip")[-1].model_id
    frame = list_models(world, "frame")[-1].model_id
    for sat in ("goes-east", "gms3"):
        assert pick_clip_model(world, {"satellite": sat, "channels": ["ir"], "length": 4}) == clip
        assert pick_frame_model(world, sat, "ir") == frame


def _gms3_clip(ws: Workspace) -> str:
    from skysearch.ingest.clips import read_clips

    return read_clips(ws, "gms3", columns=["clip_id"])["clip_id"][0].as_py()


def test_search_without_satellite_spans_both_labelled(world, cli_module, tmp_path):
    sheet = tmp_path / "sheet.png"
    args = ("search", "clip", "--clip-id", _gms3_clip(world), "-k", "40", "-w", world.root)
    result = cli_module(*args, "--json", "--contact-sheet", sheet)
    assert result.exit_code == 0, result.stderr
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert {r["satellite"] for r in found["results"]} == {"goes-east", "gms3"}
    assert found["query"]["model_satellites"] == ["goes-east", "gms3"]
    assert "note" not in found["query"]  # one model's vectors cover every satellite
    assert sheet.stat().st_size > 0  # hits of both working sizes on one sheet
    table = cli_module(*args).stdout
    rows = [line.split() for line in table.splitlines()[2:]]
    assert {"goes-east", "gms3"} <= {word for row in rows for word in row}
    only = cli_module(*args, "--satellite", "gms3", "--json").stdout.strip().splitlines()[-1]
    assert {r["satellite"] for r in json.loads(only)["results"]} == {"gms3"}


def test_one_satellite_model_needs_naming_to_embed_another(world, cli_module, tmp_path):
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(world.root, ws.root)
    trained = cli_module(
        "train", "frames", "--satellite", "goes-east", "--epochs", "1", "-w", ws.root
    )
    assert trained.exit_code == 0, trained.stderr
    goes_only = list_models(ws, "frame")[-1]
    assert goes_only.config["data"]["satellites"] == ["goes-east"]
    # gms3 is still served by the cross-satellite model (the latest that covers it)
    assert pick_frame_model(ws, "gms3", "ir") != goes_only.model_id
    covered = cli_module("index", "frames", "--satellite", "gms3", "-w", ws.root)
    assert covered.exit_code == 0, covered.stderr  # by the cross-satellite model
    named = cli_module(
        "index",
        "frames",
        "--satellite",
        "gms3",
        "--model",
        goes_only.model_id,
        "-w",
        ws.root,
        "--json",
    )
    assert named.exit_code == 0, named.stderr
    report = json.loads(named.stdout.strip().splitlines()[-1])
    assert report["model_id"] == goes_only.model_id and report["written"] == 24
    searched = cli_module(
        "search", "frame", "--at", "1987-04-10T06:00Z", "--satellite", "gms3", "--model",
        goes_only.model_id, "-w", ws.root, "--json",
    )  # fmt: skip
    assert searched.exit_code == 0, searched.stderr
    found = json.loads(searched.stdout.strip().splitlines()[-1])
    assert "not on the query's satellite gms3" in found["query"]["note"]
    assert {r["satellite"] for r in found["results"]} == {"gms3"}


def test_unknown_satellite_without_a_covering_model_is_one_line(world, cli_module, tmp_path):
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(world.root, ws.root)
    registry = ws.models_dir / "registry.json"
    entries = json.loads(registry.read_text())
    entries["models"] = [m for m in entries["models"] if m["kind"] != "frame"]
    entries["models"].append(_old_entry(list_models(world, "frame")[-1], "goes-east"))
    registry.write_text(json.dumps(entries))
    result = cli_module("index", "frames", "--satellite", "gms3", "-w", ws.root)
    assert result.exit_code == 2
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: no frame model was trained on --satellite gms3")
    assert "--model" in line


def _old_entry(record, satellite: str) -> dict:
    """A registry entry as written before cross-satellite models: one ``satellite``, no list
    and no per-satellite splits."""
    entry = record.to_dict()
    data = entry["config"]["data"]
    for key in ("satellites", "splits", "holdout_fraction", "validation_fraction"):
        data.pop(key)
    assert data["satellite"] == satellite  # its split fields are this satellite's
    return entry


def test_old_single_satellite_model_still_selects_and_evaluates(world, cli_module, tmp_path):
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(world.root, ws.root)
    registry = ws.models_dir / "registry.json"
    entries = json.loads(registry.read_text())
    old = _old_entry(list_models(world, "clip")[-1], "goes-east")
    entries["models"] = [m for m in entries["models"] if m["kind"] != "clip"] + [old]
    registry.write_text(json.dumps(entries))
    assert pick_clip_model(ws, {"satellite": "goes-east"}) == old["model_id"]
    with pytest.raises(Exception, match="no clip model fits"):
        pick_clip_model(ws, {"satellite": "gms3"})
    result = cli_module(
        "eval", "clips", "--no-baselines", "--exclude-hours", "1", "-w", ws.root, "--json"
    )
    assert result.exit_code == 0, result.stderr
    protocol = json.loads(result.stdout.strip().splitlines()[-1])["protocol"]
    assert protocol["satellite"] == "goes-east" and protocol["trained_on"] == ["goes-east"]
    assert protocol["holdout_start"] == old["config"]["data"]["holdout_start"]
    cross = cli_module(
        "eval",
        "clips",
        "--satellite",
        "gms3",
        "--no-baselines",
        "--exclude-hours",
        "1",
        "-w",
        ws.root,
        "--json",
    )
    assert cross.exit_code == 0, cross.stderr
    protocol = json.loads(cross.stdout.strip().splitlines()[-1])["protocol"]
    # never trained on gms3: its own range, held out by the default fraction
    assert protocol["satellite"] == "gms3" and protocol["holdout_start"].startswith("1987-")


def test_cell_pairs_of_a_cross_satellite_model_stay_within_a_satellite():
    """Pairing GOES cells with GMS-3 cells taught the one-value-per-cell network how the two
    archives' grey levels differ and cost it each one's ranking (bench/RESULTS.md)."""
    groups = np.array([0] * 5 + [1] * 7 + [0] * 3)
    first = np.random.default_rng(0).integers(0, 15, 2000)
    partners = pair_partners(first, groups, np.random.default_rng(1))
    assert np.array_equal(groups[partners], groups[first])
    assert set(partners[groups[first] == 1]) == set(np.flatnonzero(groups == 1))
    assert set(partners[groups[first] == 0]) == set(np.flatnonzero(groups == 0))
    # one satellite: exactly the draws of the models trained before satellites were grouped
    one = pair_partners(first, np.zeros(15, np.int64), np.random.default_rng(1))
    assert np.array_equal(one, np.random.default_rng(1).integers(0, 15, 2000))


def test_frames_of_two_working_sizes_embed_in_one_batch(world):
    """GOES (234x360) and GMS-3 (256x256) frames interleaved in one DataLoader batch (an index
    chunk of a cross-satellite model): the same vectors as each satellite embedded alone."""
    import torch
    from skysearch.encoders.factory import load_frame_encoder
    from skysearch.ingest.catalog import read_frames
    from skysearch.retrieval.indexing.steps import embed_steps

    encoder, _ = load_frame_encoder(world)
    cpu = torch.device("cpu")
    ids = {
        sat: read_frames(world, satellite=sat, columns=["frame_id"])["frame_id"].to_pylist()[:3]
        for sat in ("goes-east", "gms3")
    }
    mixed = [(fid,) for pair in zip(ids["goes-east"], ids["gms3"], strict=True) for fid in pair]
    together = embed_steps(encoder, world, mixed, cpu, workers=0)
    for start, sat in enumerate(("goes-east", "gms3")):
        alone = embed_steps(encoder, world, [(fid,) for fid in ids[sat]], cpu, workers=0)
        assert torch.allclose(together[start::2], alone, atol=1e-6)


def _json(result) -> dict:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _heldout_frames(ws: Workspace, satellite: str, holdout_start: str) -> int:
    from skysearch.ingest.catalog import read_frames

    from skysearch.timeutil import parse_time

    times = read_frames(ws, satellite=satellite, channel="ir", columns=["time"])["time"]
    return sum(t >= parse_time(holdout_start) for t in times.to_pylist())


EVAL = ("--exclude-hours", "1", "--json")


def test_eval_frames_scores_the_named_satellites_holdout(world, cli_module):
    frame = list_models(world, "frame")[-1]
    default = _json(cli_module("eval", "frames", "--no-baselines", *EVAL, "-w", world.root))
    named = _json(
        cli_module(
            "eval", "frames", "--satellite", "goes-east", "--no-baselines", *EVAL, "-w", world.root
        )
    )
    assert named == default  # the default is the model's first satellite, as before
    assert default["protocol"]["satellite"] == "goes-east"
    assert default["protocol"]["holdout_start"] == frame.config["data"]["holdout_start"]
    gms3 = _json(cli_module("eval", "frames", "--satellite", "gms3", *EVAL, "-w", world.root))
    proto = gms3["protocol"]
    split = frame.config["data"]["splits"]["gms3"]
    assert proto["satellite"] == "gms3" and proto["trained_on"] == ["goes-east", "gms3"]
    assert proto["holdout_start"] == split["holdout_start"] and proto["frames"] == 24
    # only gms3's held-out frames are queries (each has candidates outside +-1 h)
    held = _heldout_frames(world, "gms3", split["holdout_start"])
    assert proto["queries"] == proto["heldout_frames"] == held
    assert 0 < held < 24
    assert set(gms3["ndcg_at_10"]) == {"trained", "raw_pixels", "imagenet", "random"}
    metrics = list_models(world, "frame")[-1].metrics
    assert metrics["gms3_ndcg_at_10"] == gms3["ndcg_at_10"]["trained"]
    assert metrics["ndcg_at_10"] == default["ndcg_at_10"]["trained"]


def _frame_model_of_goes_only(world: Workspace, tmp_path, channel: str = "ir") -> Workspace:
    """A copy of ``world`` whose frame model reads as trained on goes-east alone (an entry of
    before cross-satellite models), of ``channel``."""
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(world.root, ws.root)
    registry = ws.models_dir / "registry.json"
    entries = json.loads(registry.read_text())
    old = _old_entry(list_models(world, "frame")[-1], "goes-east")
    old["config"]["frame"]["channels"] = old["config"]["data"]["channels"] = [channel]
    entries["models"] = [m for m in entries["models"] if m["kind"] != "frame"] + [old]
    registry.write_text(json.dumps(entries))
    return ws


def test_eval_frames_on_a_satellite_the_model_never_saw(world, cli_module, tmp_path):
    from skysearch.encoders.datasets.triplets import holdout_start

    from skysearch.timeutil import parse_time, to_rfc3339

    ws = _frame_model_of_goes_only(world, tmp_path)
    args = ("eval", "frames", "--satellite", "gms3", "--no-baselines", *EVAL, "-w", ws.root)
    proto = _json(cli_module(*args))["protocol"]
    assert proto["satellite"] == "gms3" and proto["trained_on"] == ["goes-east"]
    # its own time range (1987), held out by the default fraction 0.2
    start = holdout_start(parse_time(proto["first"]), parse_time(proto["last"]), 0.2)
    assert proto["holdout_start"] == to_rfc3339(start)
    assert proto["queries"] == _heldout_frames(ws, "gms3", proto["holdout_start"]) > 0


def test_eval_frames_satellite_errors_are_one_line(world, cli_module, tmp_path):
    unknown = cli_module("eval", "frames", "--satellite", "nope", "-w", world.root)
    assert unknown.exit_code == 2
    assert unknown.stderr.strip().splitlines()[-1] == (
        "error: no frames of --satellite nope in the catalog (satellites: gms3, goes-east)"
    )
    ws = _frame_model_of_goes_only(world, tmp_path, channel="wv")
    other = cli_module("eval", "frames", "--satellite", "gms3", "-w", ws.root)
    assert other.exit_code == 2
    line = other.stderr.strip().splitlines()[-1]
    assert line == "error: no wv frames (the frame model's channel) of --satellite gms3"


def test_eval_analogs_satellite_restricts_queries_and_candidates(world, cli_module, tmp_path):
    from skysearch.ingest.clips import read_clips

    ws = Workspace(tmp_path / "ws")
    shutil.copytree(world.root, ws.root)
    track = shared_data("digital-typhoon", "jma", "198702.tsv")
    assert cli_module("ingest-track", track, "-w", ws.root).exit_code == 0
    args = ("eval", "analogs", "--no-baselines", "--k", "2", *EVAL, "-w", ws.root)
    default = _json(cli_module(*args))  # goes-east, the model's first: no best track
    assert default["protocol"]["satellite"] == "goes-east"
    assert "n/a" in default["same_event"]
    gms3 = _json(cli_module(*args, "--satellite", "gms3"))
    clip = list_models(ws, "clip")[-1].config["data"]["splits"]["gms3"]
    assert gms3["protocol"]["satellite"] == "gms3"
    assert gms3["protocol"]["clips_with_track"] == len(read_clips(ws, "gms3", columns=["clip_id"]))
    # every held-out gms3 clip is a query (an hourly track); candidates are gms3 clips only
    assert gms3["same_event"]["queries"] == clip["heldout_clips"] > 0
    assert gms3["same_event"]["mean_candidates"] < gms3["protocol"]["clips_with_track"]
    for name, expect in (
        ("goes-east", "error: no clip of --satellite goes-east has a best track"),
        ("nope", "error: no clips of nope"),
    ):
        result = cli_module(*args, "--satellite", name)
        assert result.exit_code == 2, result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith(expect)
