"""``skysearch update`` on real data: GOES-East IR, then water vapour, then COMS arrive as three
new deliveries into one workspace; each is searchable right after; re-runs add nothing; runs
killed (SIGKILL) at several moments and re-run end exactly as an uninterrupted run; a damaged
file gives exit code 1; a workspace or store in use gives exit code 2; a running service
serves frames and clips loaded after it started.

Models: seeded, untrained encoders registered before the data arrives (indexing and search
need loadable models, not good ones; training is tested elsewhere).
"""

from __future__ import annotations

import errno
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import first_ir_frames, held, shared_data
from skysearch.retrieval.store import window_scan

from skysearch.locks import job_lock

IR_TIMES = [f"{h:02d}{m}" for h in range(6) for m in ("15", "45")]  # 12 frames, 30 min apart
SPEC = "3x30"  # COMS: 6 frames 15 min apart hold 3-frame clips 30 min apart
DAMAGED = "HUIR172502115.GIF"  # a real HTML error page saved with a .GIF name


def _copy(files: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for path in files:
        shutil.copy(path, folder / path.name)
    return folder


@pytest.fixture(scope="module")
def deliveries(tmp_path_factory) -> dict[str, Path]:
    """Three deliveries of 12 real files each: GOES-East IR and WV of 2017-09-07 00:15-05:45,
    COMS ir01 and wv of 2011-03-03 06:45-08:00."""
    goes, coms = shared_data("goes-irma-2017"), shared_data("coms-2011-03-03")
    root = tmp_path_factory.mktemp("deliveries")
    return {
        "ir": _copy([goes / "infrared" / f"HUIR17250{t}.GIF" for t in IR_TIMES], root / "ir"),
        "wv": _copy([goes / "water-vapor" / f"HUWV17250{t}.GIF" for t in IR_TIMES], root / "wv"),
        "coms": _copy(
            sorted(coms.glob("*/coms_mi_le1b_ir01_*.png")) + sorted(coms.glob("*/*_wv_*.png")),
            root / "coms",
        ),
    }


def register_models(root: Path) -> dict[str, str]:
    """Seeded, untrained models: a GOES IR frame model; GOES IR, GOES WV and COMS ir01 clip
    models (3x30m). Returns name -> model id."""
    import torch
    from skysearch.encoders.factory import save_model
    from skysearch.encoders.models.clip import build_clip_embedder, clip_config_for
    from skysearch.encoders.models.frame import FrameEncoderConfig, build_frame_encoder
    from skysearch.ingest.profiles import load_profiles

    from skysearch.config import Workspace

    ws = Workspace(root)
    ids = {}
    products = {"goes-ir": ("goes-sector", "ir"), "goes-wv": ("goes-sector", "wv")}
    products["coms-ir01"] = ("coms", "ir01")
    for name, (profile_name, channel) in products.items():
        profile = load_profiles()[profile_name]
        width, height = profile.resolution
        frame = FrameEncoderConfig(channels=[channel], height=height, width=width)
        data = {"satellite": profile.satellite, "channels": [channel], "length": 3}
        data["gap_minutes"] = 30
        torch.manual_seed(0)
        if name == "goes-ir":
            encoder = build_frame_encoder(frame.to_dict(), pretrained=False)
            config = {"frame": frame.to_dict(), "data": data}
            ids["frame"] = save_model(ws, "frame", encoder, config).model_id
        clip = clip_config_for(frame, 3)
        embedder = build_clip_embedder(frame.to_dict(), clip.to_dict(), pretrained=False)
        config = {"frame": frame.to_dict(), "clip": clip.to_dict(), "data": data}
        ids[name] = save_model(ws, "clip", embedder, config).model_id
    return ids


def update(cli, ws: Path, *args) -> tuple[int, dict, str]:
    r = cli("update", *args, "-w", ws, "--workers", "1", "--json")
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    return r.exit_code, json.loads(r.stdout.strip().splitlines()[-1]), r.stderr


def search_clip(cli, ws: Path, clip_id: str) -> list[dict]:
    r = cli("search", "clip", "--clip-id", clip_id, "--k", "3", "-w", ws, "--json")
    assert r.exit_code == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])["results"]


def clip_ids(ws: Path, satellite: str, channel: str) -> list[str]:
    from skysearch.ingest.clips import read_clips

    from skysearch.config import Workspace

    table = read_clips(Workspace(ws), satellite, [channel], columns=["clip_id"])
    return table["clip_id"].to_pylist()


def test_three_deliveries_each_searchable_and_reruns_add_nothing(cli, deliveries, tmp_path):
    ws = tmp_path / "ws"
    models = register_models(ws)

    code, report, err = update(cli, ws, deliveries["ir"], "--clip-spec", SPEC)
    assert code == 0, err[-3000:]
    assert report["files"] == {
        "seen": 12,
        "frames_added": 12,
        "unchanged": 0,
        "identical_duplicates": 0,
        "moved": 0,
        "skipped": 0,
        "suspect": 0,
        "repaired": 0,
    }
    assert report["sketches"] == {"sketched": 12, "total": 12}
    assert report["clips"][SPEC]["added"] == report["clips"][SPEC]["total"] == 10
    assert report["points"] == {"clips": {models["goes-ir"]: 10}, "frames": {models["frame"]: 12}}
    assert {m["model_id"] for m in report["models_skipped"]} == {
        models["goes-wv"],
        models["coms-ir01"],
    }  # no WV or COMS data yet: listed, not an error
    assert report["not_indexed"] == []  # every IR frame and clip has a model
    for stage in ("ingest", "sketches", "clips", "index", "store index"):
        assert f"[update] {stage} ..." in err and f"[update] {stage}: " in err
    assert not report["index"]["clips"]["built"]  # 10 new points: under --index-after 1000
    # ... but the store's exact scan of time windows was rebuilt (retrieval/store/window_scan)
    assert (window_scan.folder_of(ws / "store" / "clips") / "meta.json").is_file()
    ir_clips = clip_ids(ws, "goes-east", "ir")
    hits = search_clip(cli, ws, ir_clips[3])
    assert hits and hits[0]["id"] == ir_clips[3]

    code, again, err = update(cli, ws, deliveries["ir"])
    assert code == 0 and again["nothing_new"], again
    assert again["files"]["unchanged"] == 12 and again["files"]["frames_added"] == 0
    assert again["points"]["clips"] == {models["goes-ir"]: 0}
    assert "update: nothing new" in err

    # The next deliveries: the workspace's clip spec and models are found, nothing is named.
    code, report, err = update(cli, ws, deliveries["wv"], "--index-after", "15")
    assert code == 0, err[-3000:]
    assert report["files"]["frames_added"] == 12
    assert report["clips"][SPEC]["added"] == 10  # WV clips; the IR ones exist already
    assert report["points"]["clips"] == {models["goes-ir"]: 0, models["goes-wv"]: 10}
    assert report["index"]["clips"] == {"built": True, "points": 20, "new_points": 20}
    assert report["index"]["frames"]["built"] is False  # no new frame points (IR model)
    assert len(report["not_indexed"]) == 1  # said, with the command that makes a model
    assert report["not_indexed"][0].startswith("goes-east wv frames have no single-channel")
    assert "not searchable yet: goes-east wv frames" in err
    wv_clips = clip_ids(ws, "goes-east", "wv")
    hits = search_clip(cli, ws, wv_clips[0])
    assert hits[0]["id"] == wv_clips[0]
    assert {h["id"] for h in hits} <= set(wv_clips)  # the WV model's points: WV clips

    code, report, err = update(cli, ws, deliveries["coms"])
    assert code == 0, err[-3000:]
    assert report["files"]["frames_added"] == 12
    assert report["clips"][SPEC]["by_spec"]["coms/ir01_3x30m"] == 3
    assert report["points"]["clips"][models["coms-ir01"]] == 3
    coms_clips = clip_ids(ws, "coms", "ir01")
    assert search_clip(cli, ws, coms_clips[0])[0]["id"] == coms_clips[0]

    code, again, err = update(cli, ws, *deliveries.values(), "--index-after", "15")
    assert code == 0 and again["nothing_new"], again
    assert again["files"]["unchanged"] == 36
    assert not any(i["built"] for i in again["index"].values())


def test_two_models_of_one_collection_each_index_once(cli, deliveries, tmp_path):
    """A point keeps the vectors of every model that indexed it, and its payload names the
    last one: "already indexed" must mean "holds this model's vector", or each model would
    embed everything again after the other wrote."""
    ws = tmp_path / "ws"
    first = register_models(ws)["goes-ir"]
    second = register_models(ws)["goes-ir"]  # a retrained model of the same spec, say
    code, report, _ = update(cli, ws, deliveries["ir"], "--clip-spec", SPEC)
    assert code == 0 and report["points"]["clips"] == {first: 10, second: 10}
    code, again, _ = update(cli, ws, deliveries["ir"])
    assert again["points"]["clips"] == {first: 0, second: 0} and again["nothing_new"]


def test_points_follow_their_frames_and_leave_with_their_clips(cli, deliveries, tmp_path):
    """A clip whose step gets a nearer frame later is embedded again (it kept the vector of the
    frame it had, while re-ranking read the new one); clips a rebuild drops leave the store at
    the next index run (vector search returned them and every re-ranked search meeting one
    failed); a frame whose pixels moved (a repair writes them to a new row) is embedded again."""
    from skysearch.ingest.catalog import read_frames, update_frames

    from skysearch.config import Workspace

    ws = tmp_path / "ws"
    models = register_models(ws)
    ir = sorted(deliveries["ir"].glob("*.GIF"))  # 00:15, 00:45, ... 30 min apart
    first = _copy([ir[0], ir[1], ir[3]], tmp_path / "first")
    shutil.copy(ir[2], first / "HUIR172500125.GIF")  # the 01:15 frame, 10 min late
    code, report, err = update(cli, ws, first, "--clip-spec", SPEC)
    assert code == 0, err[-3000:]
    assert report["points"]["clips"] == {models["goes-ir"]: 2}  # from 00:15 and 00:45

    second = _copy([ir[2]], tmp_path / "second")  # the 01:15 frame on time: nearer
    shutil.copy(ir[4], second / "HUIR172500225.GIF")  # 02:15, 10 min late
    code, report, err = update(cli, ws, second)
    assert code == 0, err[-3000:]
    assert report["clips"][SPEC]["added"] == 2  # from 01:15 and 01:25
    assert report["points"]["clips"] == {models["goes-ir"]: 4}  # 2 new, 2 embedded again
    assert report["points_rewritten"]["clips"] == {models["goes-ir"]: 2}
    assert "(2 embedded again: frames, event, track or footprint changed)" in err
    assert "2 frames, 2 clips, 4 points added, 2 points rewritten;" in err  # 2 frame points

    rebuilt = cli("clips", "--length", "3", "--gap", "30", "--tolerance", "5", "-w", ws)
    assert rebuilt.exit_code == 0 and "2 removed (their points leave the store" in rebuilt.stderr
    kept = clip_ids(ws, "goes-east", "ir")
    doctor = cli("doctor", "-w", ws)
    assert "2 of its points are clips the catalog no longer holds" in doctor.stdout + (
        doctor.stderr
    )
    r = cli("index", "clips", "--model", models["goes-ir"], "-w", ws, "--json")
    assert r.exit_code == 0, r.stderr[-2000:]
    indexed = json.loads(r.stdout.strip().splitlines()[-1])
    assert indexed["removed"] == 2 and indexed["written"] == 0, indexed
    r = cli("search", "clip", "--clip-id", kept[0], "--k", "10", "--rerank", "10", "-w", ws,
            "--json")  # fmt: skip
    assert r.exit_code == 0, r.stderr[-2000:]
    assert {h["id"] for h in json.loads(r.stdout.strip().splitlines()[-1])["results"]} == set(kept)

    second = register_models(ws)["frame"]  # a second model's vectors share each point
    r = cli("index", "frames", "--model", second, "-w", ws, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout.strip().splitlines()[-1])["changed"] == 0
    frames = read_frames(Workspace(ws), columns=["frame_id", "store_row"])
    moved = frames["frame_id"][0].as_py()
    update_frames(Workspace(ws), {moved: {"store_row": frames["store_row"][1].as_py()}})
    for model in (models["frame"], second):  # each model's vector is embedded again once
        r = cli("index", "frames", "--model", model, "-w", ws, "--json")
        assert r.exit_code == 0, r.stderr[-2000:]
        again = json.loads(r.stdout.strip().splitlines()[-1])
        assert again["written"] == again["changed"] == 1, (model, again)
    r = cli("index", "frames", "--model", models["frame"], "-w", ws, "--json")
    assert json.loads(r.stdout.strip().splitlines()[-1])["written"] == 0  # no ping-pong


def test_a_per_model_fingerprint_field_is_compared_and_merged_per_model():
    """Models' vectors of a point share its payload: one model's digest must not make another
    model's stale vector look up to date, and a point indexed before the field existed is not
    embedded again for it alone."""
    from skysearch.retrieval.indexing.pipeline import Item, _payload, _up_to_date

    item = Item("p", {"content": {"a": "new"}, "event": None}, None)
    fields = ("content", "event")
    assert _up_to_date(item, {"content": {"a": "new", "b": "old"}}, fields)
    assert not _up_to_date(item, {"content": {"a": "old", "b": "new"}}, fields)
    assert not _up_to_date(item, {"content": {"b": "new"}}, fields)  # a never wrote it
    assert _up_to_date(item, {"event": None}, fields)  # indexed before digests existed
    assert not _up_to_date(item, None, fields)
    merged = _payload(item, {"content": {"a": "old", "b": "old"}}, fields)
    assert merged["content"] == {"a": "new", "b": "old"}  # b keeps its own, to be re-checked


def test_the_workspace_inside_an_archive_folder_is_not_input(cli, deliveries, tmp_path):
    """`update .` in an archive folder holding the default ./skysearch-workspace walked into
    it: the workspace's own files were skipped input, one more each run, and every run
    exited 1."""
    archive = _copy(sorted(deliveries["ir"].glob("*.GIF"))[:3], tmp_path / "archive")
    for run in range(2):
        code, report, err = update(cli, archive / "skysearch-workspace", archive)
        assert code == 0 and report["files"]["skipped"] == 0, err[-2000:]
        assert report["files"]["seen"] == 3 and report["nothing_new"] == (run == 1)


def test_a_spec_asked_for_before_it_holds_a_clip_is_built_as_frames_arrive(
    cli, deliveries, tmp_path
):
    """A spec whose first `clips` run found no complete clip lived nowhere (the catalog's file
    names are the specs): `update` never built it."""
    ws = tmp_path / "ws"
    files = sorted(deliveries["ir"].glob("*.GIF"))
    assert cli("ingest", files[0], "-w", ws).exit_code == 0
    first = cli("clips", "--length", "3", "--gap", "30", "--tolerance", "5", "-w", ws)
    assert first.exit_code == 0 and "clips: 0 added, 0 in catalog" in first.stderr
    code, report, err = update(cli, ws, deliveries["ir"])
    assert code == 0, err[-2000:]
    assert report["clips"][SPEC]["added"] == 10, report["clips"]
    assert cli("doctor", "-w", ws).exit_code == 0
    from skysearch.ingest.clips import catalog_specs

    from skysearch.config import Workspace

    (spec,) = catalog_specs(Workspace(ws))
    assert (spec.text, spec.tolerance_minutes) == (SPEC, 5)  # as asked, not the default


def test_skipped_files_exit_1_and_are_listed(cli, deliveries, tmp_path):
    goes = shared_data("goes-irma-2017", "infrared")
    folder = _copy([*sorted(deliveries["ir"].glob("*.GIF"))[:3], goes / DAMAGED], tmp_path / "d")
    for _ in range(2):  # a re-run skips it again: still listed, still 1
        code, report, err = update(cli, tmp_path / "ws", folder)
        assert code == 1
        assert report["exit_code"] == 1 and report["files"]["skipped"] == 1
        (skipped,) = report["skipped"]
        assert skipped["path"].endswith(DAMAGED) and skipped["reason"]
        line = next(ln for ln in err.splitlines() if f"skipped {folder / DAMAGED}" in ln)
        assert line.startswith("  skipped ") and line.endswith(skipped["reason"])  # its own line
    assert report["nothing_new"] and report["files"]["unchanged"] == 3


def test_a_spec_whose_channels_no_satellite_has_yet_is_skipped_not_an_error(
    cli, deliveries, tmp_path
):
    """IR only so far, and a multi-channel spec asked for: the other spec is built, this one is
    reported as not assembled with the reason (exit 0: nothing found was left unloaded), and it
    is built once the WV delivery is in."""
    ws, both = tmp_path / "ws", "ir+wv_3x30m"
    code, report, err = update(cli, ws, deliveries["ir"], "--clip-spec", SPEC, "--clip-spec", both)
    assert code == 0, err[-3000:]
    assert report["clips"][SPEC]["added"] == 10
    assert report["clips"][both]["added"] == 0
    assert "no satellite has all channels ir,wv (goes-east: ir)" in report["clips"][both]["skipped"]
    assert f"{both}: none assembled: no satellite has all channels ir,wv" in err
    code, report, err = update(cli, ws, deliveries["wv"], "--clip-spec", both)
    assert code == 0, err[-3000:]
    assert report["clips"][both]["added"] == 10 and "skipped" not in report["clips"][both]


def test_update_loads_hdf5_typhoon_frames_and_their_clips(cli, tmp_path):
    """The job reads the scientific formats too: Digital Typhoon HDF5 frames, bad rows
    repaired, clips of the requested spec per event; a second delivery adds only its own."""
    files = sorted(shared_data("digital-typhoon", "image", "198702").glob("*.h5"))[:16]
    first = _copy(files[:10], tmp_path / "d1")
    code, report, _ = update(cli, tmp_path / "ws", first, "--clip-spec", "4x60")
    bad = sum(1 for p in files[:10] if _has_impossible_values(p))
    assert code == 0 and report["files"]["frames_added"] == 10
    assert report["files"]["suspect"] == report["files"]["repaired"] == bad > 0
    code, report, _ = update(cli, tmp_path / "ws", first, _copy(files[10:], tmp_path / "d2"))
    assert code == 0 and (report["files"]["frames_added"], report["files"]["unchanged"]) == (6, 10)
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.clips import read_clips

    from skysearch.config import Workspace

    ws = Workspace(tmp_path / "ws")
    frames = read_frames(ws).to_pylist()
    assert {f["event"] for f in frames} == {"198702"} and len(frames) == 16
    assert {f["status"] for f in frames} == {"ok", "repaired"}
    clips = read_clips(ws).to_pylist()
    assert clips and {c["event"] for c in clips} == {"198702"}


def _has_impossible_values(path: Path) -> bool:
    import h5py

    with h5py.File(path) as handle:
        values = handle["infrared"][()]
    return bool(((values < 150) | (values > 340)).any())


def _one_line_error(r, *parts: str) -> None:
    assert r.exit_code == 2, (r.exit_code, r.stderr)
    assert "Traceback" not in r.stderr and r.stdout == ""
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, r.stderr
    for part in parts:
        assert part in lines[0], lines[0]


def test_an_empty_delivery_is_said_not_taken_for_a_quiet_day(cli, tmp_path):
    (tmp_path / "2024-06-01").mkdir()
    r = cli("update", tmp_path / "2024-06-01", "-w", tmp_path / "ws", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["files"]["seen"] == 0, r.stderr
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert warned == [f"warning: no files in {tmp_path / '2024-06-01'}: an empty delivery?"]
    day = first_ir_frames(tmp_path / "2024-06-02", 1)  # one path of two empty: that one said
    r = cli("ingest", day, tmp_path / "2024-06-01", "-w", tmp_path / "ws")
    warned = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert r.exit_code == 0 and warned == [
        f"warning: no files in {tmp_path / '2024-06-01'}: an empty delivery?"
    ], r.stderr


def test_usage_errors_exit_2(cli, deliveries, tmp_path):
    ws = tmp_path / "ws"
    _one_line_error(cli("update", tmp_path / "nowhere", "-w", ws), "path not found")
    r = cli("update", deliveries["ir"], "--clip-spec", "12", "-w", ws)
    _one_line_error(r, "--clip-spec '12' is not a clip spec", "12x60")
    r = cli("update", deliveries["ir"], "--model", "clip-nope", "-w", ws)
    _one_line_error(r, "no model 'clip-nope'")
    # a single channel named was ignored (clips of every channel built), a repeated one kept
    r = cli("update", deliveries["ir"], "--clip-spec", "ir_3x30m", "-w", ws)
    _one_line_error(r, "single-channel clips are built for every channel", "write 3x30")
    r = cli("update", deliveries["ir"], "--clip-spec", "ir+ir_3x30m", "-w", ws)
    _one_line_error(r, "names a channel twice")
    r = cli("update", deliveries["ir"], "--clip-spec", "2x1", "-w", ws)  # named --tolerance
    _one_line_error(r, "the gap must be more than the 15 minutes")
    r = cli("update", deliveries["ir"], "--clip-spec", "100000x60", "-w", ws)  # clips: <= 1000
    _one_line_error(r, "is not a clip spec", "(length 1-1000)")
    assert not ws.exists()  # refused before anything was written


def test_workspace_or_store_in_use_exit_2(cli, deliveries, tmp_path):
    ws = tmp_path / "ws"
    register_models(ws)
    code, _, err = update(cli, ws, deliveries["ir"], "--clip-spec", SPEC)
    assert code == 0, err[-3000:]
    record = (ws / "update.json").read_bytes()  # the last run's: kept by refused runs
    refusals = [("job", "another update is running"), ("store", "in use by another")]
    refusals.append(("ingest", "another ingest is writing"))
    for what, said in refusals:
        holder = held(what, ws)  # another update; `skysearch serve` on the embedded store
        try:
            _one_line_error(cli("update", deliveries["wv"], "-w", ws), said)
            refused = cli("update", deliveries["wv"], "-w", ws, "--json")  # the scheduler's log
            assert refused.exit_code == 2 and said in refused.stderr, refused.stderr
            (line,) = [json.loads(x) for x in refused.stdout.splitlines()]
            assert line["exit_code"] == 2 and said in line["error"], line
            assert line["inputs"] == [str(deliveries["wv"].resolve())]
            assert (ws / "update.json").read_bytes() == record  # was finished: null
            if what == "store":  # doctor and repair leave a held store alone, and say so
                doctor = cli("doctor", "-w", ws, "--json")
                checks = json.loads(doctor.stdout)["checks"]
                (store,) = [c for c in checks if c["name"] == "store"]
                assert doctor.exit_code == 0 and store["status"] == "ok", doctor.stderr
                assert "held by another process" in store["detail"]
                repair = cli("repair", "-w", ws, "--json")
                assert repair.exit_code == 1, repair.stderr
                (action,) = json.loads(repair.stdout)["actions"]
                assert action["problem"] == "not checked (in use)" and not action["ok"]
                assert "repair: fixed 0 of 0 problems found" in repair.stderr  # none damaged
                assert "(the store is in use: not checked)" in repair.stderr
                assert f"not checked {ws / 'store'}" in repair.stderr  # not "NOT repaired"
        finally:
            holder.kill()
            holder.wait()
    from skysearch.config import Workspace

    (data,) = Workspace(ws).frame_store_dir.glob("*/*/*/frames.u8")  # damaged: refused too
    kept = data.read_bytes()
    data.write_bytes(bytes(255 - b for b in kept[:64]) + kept[64:])
    code, report, err = update(cli, ws, deliveries["wv"])
    assert code != 0 and "does not match its checksum" in err, err[-2000:]
    assert (ws / "update.json").read_bytes() == record
    data.write_bytes(kept)
    code, report, _ = update(cli, ws, deliveries["wv"])
    assert code == 0 and report["files"]["frames_added"] == 12  # the refused runs wrote nothing


# ---- kill -9 at several moments, re-run: the end state of an uninterrupted run ---------------
KILL_AT = [  # (text on stderr, then seconds before SIGKILL)
    ("ingest:", 0.05),  # decoding: frames appended to the store, maybe not yet committed
    ("[update] sketches ...", 0.0),  # ingested, not sketched (doctor: frames without sketches)
    ("[update] clips ...", 0.0),  # sketched, no clip catalog yet
    ("index frames:", 0.0),  # the clip models' points written, the frame model's not
    ("optimize clips", 0.1),  # building the vector index (its child process dies too)
]


@pytest.mark.parametrize(
    "raised, code, said",
    [
        (KeyboardInterrupt(), 130, "interrupted: re-run the same command to resume"),
        (OSError(errno.ENOSPC, "No space left on device", "x.npy"), 2, "no space left"),
        (RuntimeError("boom"), 3, "unexpected failure: RuntimeError: boom"),
    ],
)
def test_a_failed_run_still_reports_json(cli, monkeypatch, tmp_path, raised, code, said):
    """A scheduler reading --json gets one line for every end of a run, with the exit code."""
    import skysearch.workflows.update as workflow

    def fail(*args, **kwargs):
        raise raised

    monkeypatch.setattr(workflow, "run_update", fail)
    (tmp_path / "in").mkdir()
    r = cli("update", tmp_path / "in", "-w", tmp_path / "ws", "--json")
    (line,) = [json.loads(x) for x in r.stdout.splitlines()]
    assert r.exit_code == code == line["exit_code"] and said in line["error"], (r, line)
    assert line["inputs"] == [str((tmp_path / "in").resolve())]


def _job(ws: Path, paths: list[Path]) -> list[str]:
    args = ["update", *map(str, paths), "-w", str(ws), "--workers", "1", "--index-after", "1"]
    return [sys.executable, "-m", "skysearch", *args, "--json"]


def _run_until(command: list[str], text: str, delay: float) -> bool:
    """Start the job, SIGKILL it ``delay`` s after ``text`` shows on its stderr; False when it
    ended first."""
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    seen = b""
    while True:
        chunk = os.read(proc.stderr.fileno(), 4096)
        if not chunk:
            proc.wait()
            return False
        seen += chunk
        if text.encode() in seen:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True


def _state(ws: Path) -> dict:
    """Frame ids, clip ids, and every point of the store: collection -> id -> (payload,
    vectors)."""
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.clips import read_clips
    from skysearch.retrieval.store import open_store

    from skysearch.config import load_settings

    settings = load_settings(workspace=ws)
    frames = read_frames(settings.workspace, columns=["frame_id"])["frame_id"].to_pylist()
    clips = read_clips(settings.workspace, columns=["clip_id"])["clip_id"].to_pylist()
    with open_store(settings) as store:
        points = {
            name: {r.id: (r.payload, r.vectors) for r in store.scroll(name, with_vectors=True)}
            for name in store.collections()
        }
    return {"frame_ids": sorted(frames), "clip_ids": sorted(clips), "points": points}


def test_a_lock_taken_for_an_instant_makes_a_job_wait_not_fail(tmp_path):
    """doctor takes the update lock for an instant to see whether a job holds it: a job
    starting then waits for it instead of saying another one runs."""
    import fcntl
    import threading

    path = tmp_path / ".update.lock"
    path.touch()
    with open(path, "rb") as doctor:
        fcntl.flock(doctor.fileno(), fcntl.LOCK_EX)
        threading.Timer(0.3, fcntl.flock, (doctor.fileno(), fcntl.LOCK_UN)).start()
        started = time.monotonic()
        with job_lock(path, "busy"):
            assert 0.25 < time.monotonic() - started < 1.0


def _last_update(ws: Path):
    from skysearch.workflows.doctor import _update

    from skysearch.config import load_settings

    (check,) = _update(load_settings(workspace=ws))
    return check


def test_killed_runs_end_as_an_uninterrupted_run(deliveries, tmp_path):
    paths = [deliveries["ir"], deliveries["wv"]]
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    register_models(whole)
    shutil.copytree(whole / "models", killed / "models")  # the same models in both
    job = ["--clip-spec", SPEC]
    done = subprocess.run(_job(whole, paths) + job, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    kills = sum(_run_until(_job(killed, paths) + job, text, delay) for text, delay in KILL_AT)
    assert kills == len(KILL_AT)
    # doctor says the last run stopped midway, and gives the command that finishes it
    stopped = _last_update(killed)
    assert stopped.status == "todo" and "stopped before it finished" in stopped.detail
    again = shlex.split(stopped.fix.removesuffix(" (finishes what is left)"))
    inputs = [str(p.resolve()) for p in paths]
    options = ["--clip-spec", SPEC, "--workers", "1", "--index-after", "1"]  # as given
    assert again == ["skysearch", "update", *inputs, *options, "-w", str(killed)]
    with job_lock(killed / ".update.lock", "busy"):
        running = _last_update(killed)
    assert running.status == "ok" and running.detail.startswith("running since")
    done = subprocess.run(_job(killed, paths) + job, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _last_update(killed).status == "ok" and "finished" in _last_update(killed).detail
    final = json.loads(done.stdout.strip().splitlines()[-1])
    assert final["files"]["unchanged"] + final["files"]["frames_added"] == 24
    assert final["index"]["clips"]["built"]  # the killed build is done again

    expected, got = _state(whole), _state(killed)
    assert got["frame_ids"] == expected["frame_ids"] and len(expected["frame_ids"]) == 24
    assert got["clip_ids"] == expected["clip_ids"] and len(expected["clip_ids"]) == 20
    want = expected["points"]
    assert {name: len(points) for name, points in want.items()} == {"clips": 20, "frames": 12}
    assert got["points"].keys() == want.keys()
    for name, points in want.items():
        assert got["points"][name].keys() == points.keys(), name
        for pid, (payload, vectors) in points.items():
            got_payload, got_vectors = got["points"][name][pid]
            assert got_payload == payload
            assert got_vectors.keys() == vectors.keys()
            for vname, vector in vectors.items():
                np.testing.assert_allclose(got_vectors[vname], vector, atol=1e-5)


# ---- a running service serves what update loads ----------------------------------------------
def test_running_service_serves_frames_and_clips_loaded_after_start(deliveries, tmp_path):
    from service_env import serve
    from skysearch.ingest.catalog import read_frames
    from skysearch.retrieval.service.app import create_app
    from skysearch.retrieval.service.service import SearchService
    from skysearch.workflows.update import run_update

    from skysearch.config import load_settings

    settings = load_settings(workspace=tmp_path / "ws")
    first = _copy(sorted(deliveries["ir"].glob("*.GIF"))[:6], tmp_path / "first")
    quiet = {"say": lambda _: None, "progress": False, "workers": 1}
    run_update(settings, [first], clip_specs=[SPEC], **quiet)
    before = set(clip_ids(settings.workspace.root, "goes-east", "ir"))
    service = SearchService(settings, torch_threads=None)
    service.start(background=False)
    try:
        url = serve(create_app(service))
        assert httpx.get(f"{url}/clips/{sorted(before)[0]}").status_code == 200
        run_update(settings, [deliveries["ir"]], **quiet)  # 6 more frames, their clips
        now = clip_ids(settings.workspace.root, "goes-east", "ir")  # by start time
        new_clips = [c for c in now if c not in before]
        frames = read_frames(settings.workspace, columns=["frame_id"])["frame_id"].to_pylist()
        assert len(new_clips) == 6 and len(frames) == 12
        meta = httpx.get(f"{url}/clips/{new_clips[-1]}")
        assert meta.status_code == 200, meta.text
        assert meta.json()["frame_ids"][0][-1] == frames[-1]  # the newest frame
        strip = httpx.get(f"{url}/clips/{new_clips[-1]}/thumbnail.png")
        assert strip.status_code == 200 and strip.content.startswith(b"\x89PNG")
        assert httpx.get(f"{url}/frames/{frames[-1]}").status_code == 200
    finally:
        service.close()


@pytest.mark.parametrize(
    "text",
    ["", "[1]", '{"built_at_points": []}', '{"built_at_points": {"s": {"frames": "x"}}}'],
)
def test_a_damaged_job_state_counts_as_none(text, tmp_path):
    """The job's state only saves index builds: a damaged one costs a build, never a crash."""
    from skysearch.workflows.update_state import read_state

    path = tmp_path / "update.json"
    path.write_text(text)
    assert read_state(path) == {}
    path.write_text('{"built_at_points": {"s": {"frames": 12}}}')
    assert read_state(path) == {"built_at_points": {"s": {"frames": 12}}}
    path.write_text('{"built_at_points": {"s": {"frames": 12}}, "last_run": {"started": 1}}')
    assert read_state(path) == {"built_at_points": {"s": {"frames": 12}}}


def test_a_damaged_demo_state_entry_is_made_again(tmp_path):
    from skysearch.workflows.demo import _State

    path = tmp_path / "state.json"
    path.write_text(json.dumps({"frame": "a string", "clip": {"key": {}, "model_id": 3}}))
    state = _State(path)
    assert state.model("frame", {}) is None and state.model("clip", {}) is None


def test_a_run_that_only_removed_says_what_it_removed():
    """The summary line of a run whose only change was removals names them (it said
    "0 frames, 0 clips, 0 points added" though the JSON had the removals)."""
    from skysearch.workflows.update_report import UpdateReport

    report = UpdateReport(
        clips={"3x30": {"added": 0, "removed": 2, "total": 8}},
        points={"clips": {"m": 0}},
        points_removed={"clips": {"m": 2}},
    )
    assert not report.nothing_new
    assert "0 points added, 2 clips and 2 points removed;" in report.summary_line()


def test_points_written_again_are_counted_as_rewritten_not_added():
    """After a corrected best track a run writes points already in the store: the summary
    says rewritten (it said "270 points added"); ``points`` keeps every point written."""
    from skysearch.workflows.update_report import UpdateReport

    report = UpdateReport(
        points={"clips": {"c": 114}, "frames": {"f": 156}},
        points_rewritten={"clips": {"c": 114}, "frames": {"f": 150}},
    )
    assert not report.nothing_new
    assert "0 frames, 0 clips, 6 points added, 264 points rewritten;" in report.summary_line()
