"""The predictor on real frames: the bundled GOES-East Irma sample (60 hourly IR frames)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import SAMPLE_DATA
from PIL import Image
from skysearch.encoders.models.predictor import load_predictor
from skysearch.encoders.registry import list_models
from skysearch.encoders.training.predictor_data import load_predictor_data

from skysearch.config import Workspace


def _run(*args: str) -> None:
    from skysearch.cli.app import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        assert not exc.code, f"skysearch {' '.join(map(str, args))} exited {exc.code}"


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Workspace:
    root = tmp_path_factory.mktemp("ws-predictor")
    _run("ingest", SAMPLE_DATA / "goes-irma-2017", "--workers", "1", "-w", root)
    _run("clips", "--length", "3", "--gap", "60", "-w", root)
    return Workspace(root)


def test_pairs_are_a_clip_and_the_l_steps_after_it(ws) -> None:
    data = load_predictor_data(ws, length=3, gap_minutes=60)
    cs = data.clip_set
    assert len(data.rows) > 20 and data.train_mask.any() and data.test_mask.any()
    assert not (data.train_mask & data.test_mask).any()
    for row, nxt in zip(data.rows, data.next_rows, strict=True):
        last_in = cs.step_times[cs.index[row, -1]]
        outs = cs.step_times[cs.index[nxt]]
        offsets = (outs - last_in).astype("timedelta64[m]").astype(int)
        assert offsets.tolist() == [60, 120, 180]
    x, y = data.tensors(data.test_mask)
    assert x.shape == y.shape == (int(data.test_mask.sum()), 3, 1, 64, 96)
    assert x.dtype == torch.uint8


def test_train_resume_predict_strip(ws, cli, tmp_path) -> None:
    def train(epochs: int):
        args = ("--length", "3", "--gap", "60", "--epochs", str(epochs), "--batch-size", "8")
        return cli("train", "predictor", *args, "-w", ws.root, "--json")

    result = train(1)
    assert result.exit_code == 0, result.stderr
    first = json.loads(result.stdout.strip().splitlines()[-1])
    m = first["metrics"]
    assert {"mse", "ssim", "persistence_mse", "persistence_ssim"} <= set(m)
    assert 0 < m["persistence_mse"] < 1 and m["test_pairs"] > 0

    # Same command with more epochs continues the interrupted/finished run.
    result = train(2)
    second = json.loads(result.stdout.strip().splitlines()[-1])
    assert second["resumed_from_epoch"] == 1

    records = list_models(ws, "predictor")
    assert [r.model_id for r in records][-2:] == [first["model_id"], second["model_id"]]
    # The same command again returns its model (each re-run registered a copy, the new latest)
    again = train(2)
    assert json.loads(again.stdout.strip().splitlines()[-1])["model_id"] == second["model_id"]
    assert len(list_models(ws, "predictor")) == len(records)
    # validation pairs that leave none to train on are named (it said "ingest more frames")
    args = ("--length", "3", "--gap", "60", "--epochs", "1", "--validation", "0.9")
    most = cli("train", "predictor", *args, "-w", ws.root)
    assert most.exit_code == 2 and "lower --validation (0: none)" in most.stderr, most.stderr
    # and the first command its own 1-epoch model (it registered the run's 2-epoch weights
    # as a 1-epoch model)
    once = train(1)
    assert json.loads(once.stdout.strip().splitlines()[-1])["model_id"] == first["model_id"]
    model, config = load_predictor(records[-1].directory(ws))
    assert config["length"] == 3 and config["gap_minutes"] == 60 and model.config.length == 3

    out = tmp_path / "strip.png"
    start = "2017-09-07T00:45Z"
    result = cli("predict", start, "--out", out, "-w", ws.root, "--json")
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout.strip().splitlines()[-1])
    assert payload["start"] == "2017-09-07T00:45:00Z"
    assert {"mse", "psnr", "ssim"} <= set(payload["metrics"])
    image = Image.open(out)
    # 4 rows (input, predicted, true, persistence) of 3 frames at 2x the 64x96 working size.
    assert image.size[0] > 3 * 192 and image.size[1] > 4 * 128
    assert np.asarray(image).std() > 10

    no_event = cli("predict", start, "--event", "123", "--out", out, "-w", ws.root)
    assert no_event.exit_code == 2 and "None" not in no_event.stderr  # "(clips of None ...)"
    assert "the clips starting then belong to no event: drop --event" in no_event.stderr

    missing = cli("predict", "2030-01-01T00:00Z", "--out", out, "-w", ws.root)
    assert missing.exit_code == 2 and missing.stderr.startswith("error:")
    assert "no ir 3x60m clip" in missing.stderr

    # A clip id of another spec is named as such (it was "neither a clip id nor a time").
    from skysearch.ingest.clips import read_clips

    _run("clips", "--length", "4", "--gap", "60", "-w", ws.root)
    other = read_clips(ws, length=4, gap_minutes=60, columns=["clip_id"])["clip_id"][0].as_py()
    wrong = cli("predict", other, "--out", out, "-w", ws.root)
    assert wrong.exit_code == 2
    assert f"clip {other} has the spec ir 4x60m of goes-east; this predictor takes ir 3x60m" in (
        wrong.stderr
    )
    assert "--length 4 --gap 60" in wrong.stderr
    unknown = cli("predict", "not-a-clip", "--out", out, "-w", ws.root)
    assert unknown.exit_code == 2 and "neither a clip id nor a time" in unknown.stderr


def test_eval_augment_reports_both_horizons(ws, cli) -> None:
    for args in (
        ("train", "frames", "--length", "3", "--gap", "60", "--epochs", "1", "--device", "cpu"),
        ("train", "clips", "--length", "3", "--gap", "60", "--epochs", "1", "--device", "cpu"),
    ):
        result = cli(*args, "-w", ws.root)
        assert result.exit_code == 0, result.stderr
    if not list_models(ws, "predictor"):
        cli("train", "predictor", "--length", "3", "--gap", "60", "--epochs", "1", "-w", ws.root)
    result = cli("eval", "augment", "--exclude-hours", "6", "-w", ws.root, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    # The protocol depends on the catalog's times only: 5 held-out 3x60m clips with a following
    # clip; candidates = archive clips with a following clip, starting more than 6 h away.
    assert report["queries"] == report["predictor"]["pairs"] == 5
    assert report["candidates_per_query"] == 35
    rows = {(r["future"], r["method"], r["beta"]): r for r in report["options"]}
    assert {("predicted", "rerank", 0.5), ("persistence", "rrf", 0.5), ("oracle", "sum", 0.25)} <= (
        set(rows)
    )
    fusion = report["fusion"]
    chosen = rows[("predicted", fusion["method"], fusion["beta"])]
    for horizon in ("long", "short"):
        values = report[f"{horizon}_term_ndcg_at_10"]
        assert values["augmented"] == pytest.approx(chosen[f"{horizon}_ndcg_at_10"])
        # Both rankings follow the ground truth (measured 0.97-0.98 here; a random order of
        # these candidates scores about 0.5), and the fusion re-orders the plain ranking: equal
        # values would mean the predicted future changed nothing.
        assert min(values.values()) >= 0.9, values
        assert values["augmented"] != values["plain"], values
    # The three futures are different queries: the true following clip (oracle) does not rank
    # the candidates as the predicted one does.
    for method, beta in (("rerank", 0.75), ("sum", 0.75)):
        oracle, predicted = rows[("oracle", method, beta)], rows[("predicted", method, beta)]
        assert oracle["future_only_ndcg_at_10"] != predicted["future_only_ndcg_at_10"]
    # The predictor starts as persistence (residual read-out at zero) and trains on MSE: on the
    # held-out pairs it stays near persistence (measured 0.0048 vs 0.0051), never far worse.
    quality = report["predictor"]
    assert 0 < quality["mse"] < 1.5 * quality["persistence_mse"], quality
    assert quality["ssim"] > 0.5 and quality["persistence_ssim"] > 0.5, quality
