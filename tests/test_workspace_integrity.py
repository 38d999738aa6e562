"""Damaged workspaces: every kind of damage is named by doctor, is one ``error:`` line for a
query and for ingest (never a traceback, never a silently wrong answer), and ``repair``
restores the workspace so that the same query gives the undamaged answer again."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA, held

SAMPLE_IR = SAMPLE_DATA / "goes-irma-2017" / "infrared"
FRAMES = Path("frames/goes-east/ir/2017")
SKETCHES = Path("sketches/clean-g24-b20/goes-east/ir/2017")
CATALOG = Path("catalog/frames/satellite=goes-east/year=2017")
CLIPS = Path("catalog/clips/satellite=goes-east/year=2017/ir_6x60m.parquet")
FRAME_BYTES = 234 * 360
# A similarity query on two catalog clips: from stored sketches, and (grid 12: a spec with no
# stored sketches) from the frames themselves.
QUERY = ["similarity", "2017-09-07T00:45Z", "2017-09-07T06:45Z", "--length", "6", "--gap", "60"]
FROM_SKETCHES, FROM_FRAMES = QUERY, [*QUERY, "--grid", "12"]


def one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    from skysearch.cli.app import main

    root = tmp_path_factory.mktemp("integrity") / "ws"
    main(["ingest", str(SAMPLE_IR), "-w", str(root), "--workers", "1"])
    main(["clips", "--length", "6", "--gap", "60", "-w", str(root)])
    return root


@pytest.fixture(scope="module")
def answers(base) -> dict[str, str]:
    from skysearch.cli.app import main

    out = {}
    for name, query in (("sketches", FROM_SKETCHES), ("frames", FROM_FRAMES)):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            main([*query, "-w", str(base), "--json"])
        out[name] = buffer.getvalue().strip().splitlines()[-1]
    assert out["sketches"] != out["frames"]
    return out


def _part(ws: Path) -> Path:
    return sorted((ws / CATALOG).glob("*.parquet"))[0]


def _truncate(path: Path, size: int) -> None:
    os.truncate(path, size)


def _folder_for(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _drop_column(path: Path, column: str) -> None:
    import pyarrow.parquet as pq

    pq.write_table(pq.read_table(path).drop([column]), path)


DAMAGE: dict[str, tuple[Callable[[Path], None], str, list[str]]] = {
    # name: (damage, the file doctor must name, the query that must fail)
    "frames truncated by 1 byte": (
        lambda ws: _truncate(ws / FRAMES / "frames.u8", 60 * FRAME_BYTES - 1),
        str(FRAMES / "frames.u8"),
        FROM_FRAMES,
    ),
    "frames truncated by half": (
        lambda ws: _truncate(ws / FRAMES / "frames.u8", 30 * FRAME_BYTES),
        str(FRAMES / "frames.u8"),
        FROM_FRAMES,
    ),
    "frames zeroed": (
        lambda ws: (ws / FRAMES / "frames.u8").write_bytes(bytes(60 * FRAME_BYTES)),
        str(FRAMES / "frames.u8"),
        FROM_FRAMES,
    ),
    "frames.u8 deleted": (
        lambda ws: (ws / FRAMES / "frames.u8").unlink(),
        str(FRAMES / "frames.u8"),
        FROM_FRAMES,
    ),
    "frames.u8 a folder": (
        lambda ws: _folder_for(ws / FRAMES / "frames.u8"),
        str(FRAMES / "frames.u8"),
        FROM_FRAMES,
    ),
    "meta.json with wrong dimensions": (
        lambda ws: (ws / FRAMES / "meta.json").write_text('{"height": 360, "width": 234}'),
        str(FRAMES / "meta.json"),
        FROM_FRAMES,
    ),
    "sketch.bin truncated": (
        lambda ws: _truncate(ws / SKETCHES / "sketch.bin", 1000),
        str(SKETCHES / "sketch.bin"),
        FROM_SKETCHES,
    ),
    "sketch meta.json garbage": (
        lambda ws: (ws / SKETCHES / "meta.json").write_text("{rows"),
        str(SKETCHES / "meta.json"),
        FROM_SKETCHES,
    ),
    "catalog part truncated": (
        lambda ws: _truncate(_part(ws), _part(ws).stat().st_size // 2),
        str(CATALOG / "part-"),
        FROM_SKETCHES,
    ),
    "catalog part garbage": (
        lambda ws: _part(ws).write_bytes(os.urandom(_part(ws).stat().st_size)),
        str(CATALOG / "part-"),
        FROM_FRAMES,
    ),
    "catalog part a folder": (
        lambda ws: _folder_for(_part(ws)),
        str(CATALOG / "part-"),
        FROM_FRAMES,
    ),
    "catalog part without its store_row column": (
        lambda ws: _drop_column(_part(ws), "store_row"),
        str(CATALOG / "part-"),
        FROM_FRAMES,
    ),
    "clip catalog without its frame_ids column": (
        lambda ws: _drop_column(ws / CLIPS, "frame_ids"),
        str(CLIPS),
        FROM_SKETCHES,
    ),
    "clip catalog truncated": (
        lambda ws: _truncate(ws / CLIPS, 100),
        str(CLIPS),
        FROM_SKETCHES,
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damage_is_named_refused_and_repaired(damage, base, answers, tmp_path, cli):
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    hurt, named, query = DAMAGE[damage]
    hurt(ws)

    doctor = cli("doctor", "-w", ws, "--json")
    assert doctor.exit_code == 1
    failed = [c for c in json.loads(doctor.stdout)["checks"] if c["status"] == "fail"]
    assert any(str(ws / named) in c["detail"] for c in failed), failed
    assert all("Traceback" not in c["detail"] for c in failed)

    error = one_error_line(cli(*query, "-w", ws, "--json"))
    assert str(ws / named) in error and "skysearch repair" in error

    ingest = cli("ingest", SAMPLE_IR, "-w", ws, "--workers", "1")
    if damage.startswith(("frames", "meta", "catalog part")):  # ingest would write from it
        assert str(ws / named) in one_error_line(ingest)
    else:  # sketches are re-made from the (checked) frames; clips are not ingest's
        assert ingest.exit_code == 0, ingest.stderr

    repaired = cli("repair", "-w", ws, "--json")
    assert repaired.exit_code == 0, repaired.stderr
    report = json.loads(repaired.stdout)
    assert report["ok"] and not report["remaining"] and not report["lost_frames"]
    assert cli("doctor", "-w", ws, "--deep").exit_code == 0
    for name, again in (("sketches", FROM_SKETCHES), ("frames", FROM_FRAMES)):
        result = cli(*again, "-w", ws, "--json")
        assert result.exit_code == 0, result.stderr
        assert result.stdout.strip().splitlines()[-1] == answers[name]


def test_a_clip_file_is_rebuilt_with_the_tolerance_its_spec_was_asked_with(base, tmp_path, cli):
    """The only year file of a spec built with --tolerance 45, damaged: repair rebuilt it with
    the default tolerance (0 clips), wrote that into specs.json and deleted the damaged file."""
    from skysearch.ingest.clips import read_clips

    from skysearch.config import Workspace

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    built = cli("clips", "--length", "4", "--gap", "90", "--tolerance", "45", "-w", ws)
    assert built.exit_code == 0, built.stderr
    part = ws / CLIPS.with_name("ir_4x90m.parquet")
    before = read_clips(Workspace(ws), length=4, gap_minutes=90)
    assert before.num_rows > 0
    part.write_bytes(b"junk")
    repaired = cli("repair", "-w", ws, "--json")
    assert repaired.exit_code == 0, repaired.stderr
    after = read_clips(Workspace(ws), length=4, gap_minutes=90)
    assert after.sort_by("clip_id").equals(before.sort_by("clip_id"))
    assert '"tolerance_minutes": 45' in (ws / "catalog/clips/specs.json").read_text()

    part.write_bytes(b"junk")  # and a spec the frames cannot give again: the file is kept
    specs = ws / "catalog/clips/specs.json"
    specs.write_text(specs.read_text().replace('"tolerance_minutes": 45', '"tolerance_minutes": 0'))
    repaired = cli("repair", "-w", ws, "--json")
    assert repaired.exit_code == 1, repaired.stderr
    (action,) = [a for a in json.loads(repaired.stdout)["actions"] if "4x90" in a["path"]]
    assert "not rebuilt: no ir 4x90m clip can be assembled" in action["done"], action
    assert list(part.parent.glob(".ir_4x90m.parquet.damaged*")), list(part.parent.iterdir())


def test_frames_whose_sketches_were_deleted_are_said_and_sketched_by_repair(
    base, answers, tmp_path, cli
):
    """Sketches are a cache of the frames, but every ingest makes them and re-ranking reads
    them: deleted ones are work for repair (doctor: to do), not silence."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    shutil.rmtree(ws / SKETCHES)
    doctor = cli("doctor", "-w", ws, "--json")
    assert doctor.exit_code == 0, doctor.stdout  # nothing damaged
    checks = json.loads(doctor.stdout)["checks"]
    todo = [c for c in checks if c["status"] == "todo" and c["name"].startswith("integrity")]
    assert [(c["name"], c["detail"]) for c in todo] == [
        ("integrity: unsketched", f"{ws / SKETCHES}: 60 of 60 frames have no sketch")
    ]
    assert todo[0]["fix"] == f"skysearch repair -w {ws} (sketch them from the frames)"
    report = json.loads(cli("repair", "-w", ws, "--json").stdout)
    assert report["ok"] and [a["done"] for a in report["actions"]] == ["re-sketched (60 frames)"]
    deep = json.loads(cli("doctor", "-w", ws, "--deep", "--json").stdout)
    integrity = [c for c in deep["checks"] if c["name"].startswith("integrity")]
    assert [(c["name"], c["status"]) for c in integrity] == [("integrity", "ok")]
    result = cli(*FROM_SKETCHES, "-w", ws, "--json")
    assert result.stdout.strip().splitlines()[-1] == answers["sketches"]


def test_a_damaged_row_the_samples_miss_is_found_by_deep_checks(base, answers, tmp_path, cli):
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    with open(ws / FRAMES / "frames.u8", "r+b") as handle:  # row 10: not a sampled row
        handle.seek(10 * FRAME_BYTES + 1234)
        handle.write(b"\x01\x02\x03")
    assert cli("doctor", "-w", ws).exit_code == 0  # the cheap checks sample three rows
    deep = cli("doctor", "-w", ws, "--deep", "--json")
    assert deep.exit_code == 1
    details = [c["detail"] for c in json.loads(deep.stdout)["checks"] if c["status"] == "fail"]
    assert details == [f"{ws / FRAMES / 'frames.u8'}: 1 frame rows do not match their checksums "
                       "(first: row 10)"]  # fmt: skip
    report = json.loads(cli("repair", "-w", ws, "--json").stdout)
    assert report["ok"]
    assert report["actions"][0]["done"] == "kept 59 frames, decoded 1 again from their sources"
    result = cli(*FROM_FRAMES, "-w", ws, "--json")
    assert result.stdout.strip().splitlines()[-1] == answers["frames"]


@pytest.mark.parametrize("store", ["free", "held by the service"])
def test_frames_whose_source_is_gone_are_dropped_and_listed(store, base, tmp_path, cli):
    src = tmp_path / "src"
    shutil.copytree(SAMPLE_IR, src)
    ws = tmp_path / "ws"
    assert cli("ingest", src, "-w", ws, "--workers", "1").exit_code == 0
    assert cli("clips", "--length", "6", "--gap", "60", "-w", ws).exit_code == 0
    ids = _index_catalog_ids(ws)  # points of every frame and clip, as index would write
    (ws / FRAMES / "frames.u8").write_bytes(bytes(60 * FRAME_BYTES))
    gone = sorted(src.glob("HUIR17250*.GIF"))[:2]
    for path in gone:
        path.unlink()
    changed = sorted(src.glob("HUIR17249*.GIF"))[0]
    changed.write_bytes(sorted(src.glob("HUIR17249*.GIF"))[1].read_bytes())
    if store == "held by the service":  # the files are repaired, the store left for later
        holder = held("store", ws)
        try:
            result = cli("repair", "-w", ws, "--json")
        finally:
            holder.kill()
            holder.wait()
        assert result.exit_code == 1 and len(json.loads(result.stdout)["lost_frames"]) == 3
        problems = [a["problem"] for a in json.loads(result.stdout)["actions"] if not a["ok"]]
        assert "not checked (in use)" in problems, problems
        assert _stored_ids(ws) == ids  # the dropped frames' points: deleted by the next repair
        assert (ws / ".repair-stale-points").exists()
        doctor = json.loads(cli("doctor", "-w", ws, "--json").stdout)["checks"]
        assert [c["status"] for c in doctor if c["name"] == "store points"] == ["todo"]
        result = cli("repair", "-w", ws, "--json")
        assert result.exit_code == 0, result.stdout
        assert not (ws / ".repair-stale-points").exists()
        after = _index_catalog_ids(ws, write=False)
        assert len(after["frames"]) == 57 and _stored_ids(ws) == after
        return
    result = cli("repair", "-w", ws, "--json")
    assert result.exit_code == 1  # not everything could be rebuilt
    report = json.loads(result.stdout)
    lost = {Path(f["source_path"]).name: f["reason"] for f in report["lost_frames"]}
    assert set(lost) == {p.name for p in gone} | {changed.name}
    assert "changed since it was ingested" in lost[changed.name]
    assert "No such file" in lost[gone[0].name]
    assert not report["remaining"]  # the workspace is whole again, with 57 frames
    doctor = json.loads(cli("doctor", "-w", ws, "--deep", "--json").stdout)
    frames = [c for c in doctor["checks"] if c["name"] == "frames"][0]
    assert frames["detail"].startswith("goes-east/ir: 57 frames")
    # the store no longer holds the dropped frames, nor the clips built from them
    after = _index_catalog_ids(ws, write=False)
    assert len(after["frames"]) == 57 and len(after["clips"]) < len(ids["clips"])
    assert _stored_ids(ws) == after


def _index_catalog_ids(ws: Path, write: bool = True) -> dict[str, set[str]]:
    """The catalogs' frame and clip ids; ``write``: as points of the store (random vectors)."""
    import numpy as np
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.clips import read_clips
    from skysearch.retrieval.store import Point, open_store

    from skysearch.config import Workspace, load_settings

    workspace = Workspace(ws)
    ids = {
        "frames": set(read_frames(workspace, columns=["frame_id"])["frame_id"].to_pylist()),
        "clips": set(read_clips(workspace, columns=["clip_id"])["clip_id"].to_pylist()),
    }
    if write:
        rng = np.random.default_rng(0)
        with open_store(load_settings(workspace=ws)) as store:
            for name, known in ids.items():
                store.ensure_collection(name, 8, "m1")
                points = [Point(i, rng.normal(size=8)) for i in sorted(known)]
                store.upsert(name, points, vector_name="m1")
    return ids


def _stored_ids(ws: Path) -> dict[str, set[str]]:
    from skysearch.retrieval.store import open_store

    from skysearch.config import load_settings

    with open_store(load_settings(workspace=ws)) as store:
        return {name: {r.id for r in store.scroll(name)} for name in ("frames", "clips")}


def test_old_workspace_without_checksums_gets_them(base, tmp_path, cli):
    """A workspace from before checksums opens; doctor says what repair (or ingest) adds."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    (ws / FRAMES / "frames.crc").unlink()
    (ws / SKETCHES / "sketch.crc").unlink()
    doctor = json.loads(cli("doctor", "-w", ws, "--json").stdout)
    todo = [c for c in doctor["checks"] if c["name"].startswith("integrity")]
    assert {c["status"] for c in todo} == {"todo"} and len(todo) == 2
    assert doctor["ok"]
    sim = cli(*FROM_FRAMES, "-w", ws)
    assert sim.exit_code == 0, sim.stderr
    report = json.loads(cli("repair", "-w", ws, "--json").stdout)
    assert report["ok"]
    assert (ws / FRAMES / "frames.crc").stat().st_size == 60 * 4
    assert (ws / SKETCHES / "sketch.crc").stat().st_size == 60 * 4
    assert cli("doctor", "-w", ws, "--deep").exit_code == 0


STORE_CONFIG_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": lambda path: path.write_text("{"),
    "deleted": lambda path: path.unlink(),  # the folder still holds the shard's segments
}


@pytest.mark.parametrize("config", list(STORE_CONFIG_DAMAGE))
def test_damaged_store_collection_is_set_aside_and_said(config, base, tmp_path, cli):
    import uuid

    import numpy as np
    from skysearch.retrieval.store import Point, open_store

    from skysearch.config import load_settings

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    settings = load_settings(workspace=ws)
    with open_store(settings) as store:
        store.ensure_collection("clips", 8, "m1")
        points = [Point(str(uuid.uuid4()), np.ones(8, np.float32)) for _ in range(3)]
        store.upsert("clips", points, vector_name="m1")
    STORE_CONFIG_DAMAGE[config](ws / "store" / "clips" / "edge_config.json")
    doctor = cli("doctor", "-w", ws, "--json")
    assert doctor.exit_code == 1
    store_check = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "store"][0]
    assert store_check["status"] == "fail" and "skysearch repair" in store_check["fix"]
    assert str(ws / "store" / "clips") in store_check["detail"]
    info = one_error_line(cli("store", "info", "-w", ws))  # never silently left out
    assert str(ws / "store" / "clips") in info
    if config == "deleted":  # not "path already contains segment data" from the engine
        assert "skysearch repair" in info
    result = cli("repair", "-w", ws, "--json")
    assert result.exit_code == 1
    (action,) = json.loads(result.stdout)["actions"]
    assert action["path"] == str(ws / "store" / "clips") and not action["ok"]
    assert "not re-indexed: no clip model registered (kept " in action["done"]
    again = cli("repair", "-w", ws, "--json")  # said again until a model re-indexes it ...
    assert again.exit_code == 1 and "did not finish re-indexing" in again.stdout
    for aside in (ws / ".damaged-store").glob("clips-*[0-9]Z"):
        shutil.rmtree(aside)  # ... or the loss is accepted
    accepted = cli("repair", "-w", ws, "--json")
    assert accepted.exit_code == 0 and json.loads(accepted.stdout)["actions"] == []
    doctor = json.loads(cli("doctor", "-w", ws, "--json").stdout)
    assert [c for c in doctor["checks"] if c["name"] == "store"][0]["status"] == "ok"


def test_ingest_never_appends_to_a_store_file_that_lost_its_rows(base, tmp_path):
    """New frames must not land at row 0 of a recreated frames.u8 while the catalog says rows
    0..59 are elsewhere: the ingest stops before writing."""
    from skysearch.ingest.pipeline import ingest

    from skysearch.config import Workspace
    from skysearch.errors import DamagedError

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    (ws / FRAMES / "frames.u8").unlink()
    new = tmp_path / "new"
    new.mkdir()
    shutil.copy(sorted(SAMPLE_IR.glob("*.GIF"))[0], new / "HUIR172481200.GIF")
    with pytest.raises(DamagedError, match="frames.u8 is damaged"):
        ingest([new], Workspace(ws), workers=1, progress=False)
    assert not (ws / FRAMES / "frames.u8").exists()


def test_a_failed_repair_keeps_saying_what_was_lost(tmp_path, cli):
    """A catalog part whose frames cannot be re-ingested stays set aside, and doctor and every
    later repair say so, until the sources are back (repair then restores the frames) or the
    file is deleted (the loss accepted)."""
    src = tmp_path / "src"
    shutil.copytree(SAMPLE_IR, src)
    ws = tmp_path / "ws"
    assert cli("ingest", src, "-w", ws, "--workers", "1").exit_code == 0
    _part(ws).write_bytes(b"")
    src.rename(tmp_path / "away")  # the sources are not where the workspace was ingested from

    first = cli("repair", "-w", ws, "--json")
    assert first.exit_code == 1
    (action,) = json.loads(first.stdout)["actions"]
    assert not action["ok"] and "delete the file to accept the loss" in action["done"]
    (aside,) = (ws / CATALOG).glob(".part-*.parquet.damaged")
    for _ in range(2):  # doctor, and a repair run again, keep saying so
        doctor = cli("doctor", "-w", ws, "--json")
        assert doctor.exit_code == 1
        (failed,) = [c for c in json.loads(doctor.stdout)["checks"] if c["status"] == "fail"]
        assert str(aside) in failed["detail"] and "the 60 frames it held" in failed["detail"]
        assert "skysearch repair" in failed["fix"] and "delete the file" in failed["fix"]
        again = cli("repair", "-w", ws, "--json")
        assert again.exit_code == 1
        report = json.loads(again.stdout)
        assert [p["path"] for p in report["remaining"]] == [str(aside)]
        assert len(report["lost_frames"]) == 60

    kept = tmp_path / "kept"
    shutil.copytree(ws, kept)
    (kept / CATALOG / aside.name).unlink()  # the loss accepted
    assert cli("doctor", "-w", kept).exit_code == 0

    (tmp_path / "away").rename(src)  # the sources are back: the repair restores the frames
    restored = cli("repair", "-w", ws, "--json")
    assert restored.exit_code == 0, restored.stdout
    assert not aside.exists()
    assert cli("doctor", "-w", ws, "--deep").exit_code == 0
    doctor = json.loads(cli("doctor", "-w", ws, "--json").stdout)
    frames = [c for c in doctor["checks"] if c["name"] == "frames"][0]
    assert frames["detail"].startswith("goes-east/ir: 60 frames")


WRONG_REPORTS = {
    "inputs a string": ({"inputs": "/", "skipped": []}, '"inputs" is a str, not a list'),
    "inputs not paths": ({"inputs": [1, "/x"]}, "\"inputs\" holds '1', not an absolute path"),
    "inputs relative": ({"inputs": ["."]}, "not an absolute path"),
    "skipped a dict": ({"inputs": [], "skipped": {"path": "/x"}}, '"skipped" is a dict'),
    "skipped without path": ({"skipped": [{"reason": "x"}]}, 'not an object with a "path"'),
    "a list": ([{"inputs": ["/"]}], "not a JSON object but list"),
    "not JSON": ("{", "unusable: "),
}


@pytest.mark.parametrize("case", list(WRONG_REPORTS))
def test_ingest_report_of_wrong_types_is_unusable_never_walked(case, tmp_path):
    from skysearch.ingest.rebuild import source_roots

    from skysearch.config import Workspace

    workspace = Workspace(tmp_path / "ws")
    workspace.reports_dir.mkdir(parents=True)
    saved, said = WRONG_REPORTS[case]
    text = saved if isinstance(saved, str) else json.dumps(saved)
    (workspace.reports_dir / "ingest-1.json").write_text(text)
    roots, unusable = source_roots(workspace)
    assert roots == []
    (line,) = unusable
    assert line.startswith(f"ingest report {workspace.reports_dir / 'ingest-1.json'} unusable")
    assert said in line


def test_a_filesystem_root_is_never_a_source_root(tmp_path):
    from skysearch.ingest.rebuild import source_roots

    from skysearch.config import Workspace

    workspace = Workspace(tmp_path / "ws")
    workspace.reports_dir.mkdir(parents=True)
    report = {"inputs": ["/", str(tmp_path)], "skipped": [{"path": "/x.gif", "reason": "x"}]}
    (workspace.reports_dir / "ingest-1.json").write_text(json.dumps(report))
    assert source_roots(workspace) == ([tmp_path], ["not walking / (a filesystem root)"])


def test_repair_with_an_unusable_ingest_report_says_why_it_has_no_sources(base, tmp_path, cli):
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    (report_path,) = (ws / "reports").glob("ingest-*.json")
    report = json.loads(report_path.read_text())
    report["inputs"] = report["inputs"][0]  # a string: each character was a folder, "/" too
    report["skipped"] = {"path": report["skipped"][0]["path"]}
    report_path.write_text(json.dumps(report))
    _part(ws).write_bytes(b"")  # the catalog names no source file either
    result = cli("repair", "-w", ws, "--json")
    assert result.exit_code == 1
    (action,) = json.loads(result.stdout)["actions"]
    assert "nothing ingested again: no source folder known" in action["done"]
    assert f'ingest report {report_path} unusable: "inputs" is a str' in action["done"]


def test_a_frame_row_that_fails_its_checksum_is_never_read_as_good(base, tmp_path):
    """Bit rot in a frame the spot checks do not look at is caught when the frame is read."""
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.framestore import FrameStore

    from skysearch.config import Workspace
    from skysearch.errors import DamagedError

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    rows = {r["store_row"]: r["frame_id"] for r in read_frames(Workspace(ws)).to_pylist()}
    data = ws / FRAMES / "frames.u8"
    size = data.stat().st_size // len(rows)
    with open(data, "r+b") as fh:  # row 24: not the first, middle or last
        fh.seek(24 * size + 100)
        fh.write(bytes([255 - fh.read(1)[0]]))
    store = FrameStore(Workspace(ws))
    assert store.read(rows[23]).shape  # its neighbours read fine
    with pytest.raises(DamagedError, match="frame row 24 does not match its checksum"):
        store.read_many([rows[23], rows[24]])


def test_a_damaged_model_is_found_and_unregistered(tmp_path, cli):
    """Model weights carry the CRC-32 they were saved with: doctor names a missing or cut
    checkpoint, --deep also bit rot of the same size; repair unregisters the model (weights
    cannot be rebuilt) so searches use the latest whole one."""
    import torch
    from skysearch.encoders import registry
    from skysearch.encoders.factory import save_model

    from skysearch.config import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.ensure()
    old = save_model(ws, "frame", torch.nn.Linear(4, 4), {"dim": 4}).model_id
    new = save_model(ws, "frame", torch.nn.Linear(4, 4), {"dim": 4}).model_id
    weights = ws.models_dir / new / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the last tensor: same size, same header
    weights.write_bytes(bytes(data))

    def rows(*flags: str) -> list[dict]:
        report = json.loads(cli("doctor", "-w", ws.root, "--json", *flags).stdout)
        return [c for c in report["checks"] if c["name"] == "frame model"]

    def failed(*flags: str) -> list[dict]:
        return [c for c in rows(*flags) if c["status"] == "fail"]

    assert failed() == []  # the cheap checks cannot see it
    check, whole = rows("--deep")  # the summary counted the damaged one as the latest
    assert check["detail"] == (
        f"{new}: {weights} does not match the checksum recorded when it was saved"
    )
    assert (whole["status"], whole["detail"]) == ("ok", f"1 trained, latest {old}")
    repaired = cli("repair", "-w", ws.root, "--json")
    assert repaired.exit_code == 1, repaired.stderr  # weights are not rebuilt: said, exit 1
    assert "fixed 0 of 1 problems found (1 need you: see above)" in repaired.stderr
    assert "0 problems remain" in repaired.stderr
    (action,) = json.loads(repaired.stdout)["actions"]
    assert action["done"] == f"unregistered frame model {new}: train it again"
    assert not action["ok"]
    assert registry.latest(ws, "frame").model_id == old
    assert failed("--deep") == []

    # a garbled or deleted registry is rebuilt from the whole checkpoints (not the damaged one)
    entries = json.loads((ws.models_dir / "registry.json").read_text())["models"]
    for damage in (b"\xff{", None, b"\xff{2"):  # garbled, deleted, garbled again
        path = ws.models_dir / "registry.json"
        path.write_bytes(damage) if damage else path.unlink()
        doctor = cli("doctor", "-w", ws.root)
        assert doctor.exit_code == 1 and f"skysearch repair -w {ws.root}" in doctor.stderr
        rebuilt = cli("repair", "-w", ws.root, "--json")
        assert rebuilt.exit_code == 1, rebuilt.stderr  # the damaged model: not registered, said
        action, damaged = json.loads(rebuilt.stdout)["actions"]
        assert action["done"].startswith("rebuilt from 1 checkpoint folders (frame)")
        assert (damaged["path"], damaged["ok"]) == (str(ws.models_dir / new), False)
        assert damaged["done"] == "not registered: train it again"
        got = json.loads(path.read_text())["models"]  # as registered, but for the time
        assert [{**e, "created": None} for e in got] == [{**e, "created": None} for e in entries]
    assert (ws.models_dir / "registry.json.damaged").read_bytes() == b"\xff{"
    assert (ws.models_dir / "registry.json.damaged.1").read_bytes() == b"\xff{2"  # both kept

    weights = ws.models_dir / old / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # cut short: the cheap checks see it
    (check,) = failed()
    assert check["detail"] == (
        f"{old}: {weights} is not whole (Error while deserializing header: incomplete metadata, "
        "file not fully covered)"
    )


def _overwrite_start(folder: Path, pattern: str, size: int) -> None:
    (path,) = [p for p in folder.rglob(pattern) if p.is_file()]
    with open(path, "r+b") as fh:
        fh.write(os.urandom(size))


@pytest.mark.parametrize("part", ["vectors", "payloads"])
def test_damaged_points_of_the_engine_are_found_deeply_and_re_indexed(part, base, tmp_path, cli):
    """Garbled vector or payload pages of the engine: a search is one error line (payloads) and
    never an impossible score, doctor --deep reads every point back and names the collection,
    repair sets it aside and re-indexes it."""
    import uuid

    import numpy as np
    from skysearch.retrieval.store import Point, open_store

    from skysearch.config import load_settings
    from skysearch.errors import StoreError

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    rng = np.random.default_rng(0)
    with open_store(load_settings(workspace=ws)) as store:
        store.ensure_collection("clips", 8, "m1")
        points = [
            Point(str(uuid.uuid4()), rng.normal(size=8), {"label": f"point {i}" * 20})
            for i in range(40)
        ]
        store.upsert("clips", points, vector_name="m1")
    folder = ws / "store" / "clips"
    if part == "vectors":
        _overwrite_start(folder, "vector_storage-m1/vectors/chunk_0.mmap", 8 * 4 * 40)
    else:
        _overwrite_start(folder, "payload_storage/page_0.dat", 4096)
        with open_store(load_settings(workspace=ws)) as store, pytest.raises(StoreError) as err:
            store.search("clips", rng.normal(size=8), k=40, vector_name="m1")
        assert str(err.value).startswith(f"store collection {folder} cannot be read (")
    deep = cli("doctor", "--deep", "-w", ws, "--json")
    assert deep.exit_code == 1
    (check,) = [c for c in json.loads(deep.stdout)["checks"] if c["name"] == "store"]
    assert check["status"] == "fail" and "clips" in check["detail"]
    assert "skysearch repair" in check["detail"]
    result = cli("repair", "-w", ws, "--json")
    (action,) = json.loads(result.stdout)["actions"]
    assert action["path"] == str(folder) and action["done"].startswith("set aside as")
    assert (ws / ".damaged-store").is_dir()


def test_a_vector_file_cut_short_is_seen_by_the_quick_doctor(base, tmp_path, cli):
    """Searches said "run skysearch repair" while plain doctor said "store ok" (only --deep
    read vectors): the quick check reads the vectors of the first points by id."""
    import uuid

    import numpy as np
    from skysearch.retrieval.store import Point, open_store

    from skysearch.config import load_settings

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    rng = np.random.default_rng(0)
    with open_store(load_settings(workspace=ws)) as store:
        store.ensure_collection("clips", 8, "m1")
        store.upsert("clips", [Point(str(uuid.uuid4()), rng.normal(size=8), {}) for _ in range(40)],
                     vector_name="m1")  # fmt: skip
    (chunk,) = (ws / "store" / "clips").rglob("vector_storage-m1/vectors/chunk_0.mmap")
    os.truncate(chunk, 8 * 4 * 4)  # four vectors of 40 left
    doctor = cli("doctor", "-w", ws, "--json")
    (check,) = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "store"]
    assert doctor.exit_code == 1 and check["status"] == "fail", check
    assert f"store collection {ws / 'store' / 'clips'} cannot be read" in check["detail"]


def test_repair_says_it_leaves_a_qdrant_servers_store_alone(base, tmp_path, cli, monkeypatch):
    """With QDRANT_URL set (a server no one reaches here) repair said "fixed 0 of 0 problems
    found" and nothing of the store, while doctor failed it."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:1")
    repaired = cli("repair", "-w", ws)
    assert repaired.exit_code == 0, repaired.stderr  # the workspace's own files are whole
    assert "(the store is on a Qdrant server: left to the server)" in repaired.stderr


def test_a_file_in_place_of_the_store_folder_is_said(base, tmp_path, cli):
    """It read as an empty store: doctor said "store ok", searches "run skysearch index"."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    shutil.rmtree(ws / "store", ignore_errors=True)
    (ws / "store").write_text("hi")
    doctor = cli("doctor", "-w", ws, "--json")
    (check,) = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "store"]
    assert check["status"] == "fail" and "is not a folder: move that file away" in check["detail"]
    error = one_error_line(cli("store", "info", "-w", ws))
    assert f"the embedded store {ws / 'store'} is not a folder" in error
    repaired = cli("repair", "-w", ws, "--json")  # the files are checked; the store is said
    assert repaired.exit_code == 1 and "Traceback" not in repaired.stderr, repaired.stderr
    (action,) = json.loads(repaired.stdout)["actions"]
    assert action["path"] == str(ws / "store") and "is not a folder" in action["problem"]


def _frame_model(ws: Path) -> str:
    """A seeded, untrained GOES IR frame model, registered; its id."""
    import torch
    from skysearch.encoders.factory import save_model
    from skysearch.encoders.models.frame import FrameEncoderConfig, build_frame_encoder

    from skysearch.config import Workspace

    frame = FrameEncoderConfig(channels=["ir"], height=234, width=360)
    torch.manual_seed(0)
    encoder = build_frame_encoder(frame.to_dict(), pretrained=False)
    data = {"satellite": "goes-east", "channels": ["ir"]}
    config = {"frame": frame.to_dict(), "data": data}
    return save_model(Workspace(ws), "frame", encoder, config).model_id


def test_a_search_of_a_collection_without_the_models_points_says_so(base, tmp_path, cli):
    """A collection created by an index run killed before it wrote (or emptied): search
    answered "no results (loosen the filters?)" with exit 0."""
    from skysearch.retrieval.store import open_store

    from skysearch.config import load_settings

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    model_id = _frame_model(ws)
    assert cli("index", "frames", "-w", ws).exit_code == 0
    with open_store(load_settings(workspace=ws)) as store:
        store.delete_ids("frames", [r.id for r in store.scroll("frames")])
    error = one_error_line(cli("search", "frame", "--at", "2017-09-07T00:45Z", "-w", ws))
    assert error == (
        f"error: the frames collection holds no vector of model {model_id} yet (an index run "
        f"stopped early?): run `skysearch index frames --model {model_id}`"
    )


def test_models_a_registry_no_longer_lists_are_said_and_registered_again(base, tmp_path, cli):
    """A registry emptied by hand: doctor said "none trained" and every search "train one"
    while the checkpoints sat in models/; repair found nothing to do."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    model_id = _frame_model(ws)
    (ws / "models" / "registry.json").write_text('{"models": []}')
    doctor = cli("doctor", "-w", ws, "--json")
    (check,) = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "models"]
    assert check["status"] == "fail" and check["detail"].endswith(f"does not list: {model_id}")
    assert "frame model" not in [c["name"] for c in json.loads(doctor.stdout)["checks"]]
    result = cli("repair", "-w", ws, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    (action,) = json.loads(result.stdout)["actions"]
    assert action["done"] == f"registered {model_id}" and action["ok"], action
    doctor = json.loads(cli("doctor", "-w", ws, "--json").stdout)
    (check,) = [c for c in doctor["checks"] if c["name"] == "frame model"]
    assert check["status"] == "ok" and model_id in check["detail"]


def test_a_repair_killed_before_re_indexing_a_set_aside_collection_is_finished_by_the_next(
    base, tmp_path, cli
):
    """Killed between setting a collection aside and re-indexing it, a repair left an empty
    (or no) collection that the next repair called whole ("0 remain") while searches found
    nothing. The marker beside the set-aside copy makes the next repair re-index."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    _frame_model(ws)
    assert cli("index", "frames", "-w", ws).exit_code == 0
    aside = ws / ".damaged-store" / "frames-20261202T000000Z"
    aside.parent.mkdir()
    (ws / "store" / "frames").replace(aside)  # where the killed repair stopped
    aside.with_name(aside.name + ".reindexing").touch()
    doctor = json.loads(cli("doctor", "-w", ws, "--json").stdout)
    (check,) = [c for c in doctor["checks"] if c["name"] == "store re-index"]
    assert check["status"] == "todo" and check["detail"].endswith(aside.name), check

    result = cli("repair", "-w", ws, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    (action,) = json.loads(result.stdout)["actions"]
    assert "by a repair that did not finish re-indexing it" in action["problem"], action
    assert action["ok"] and action["done"].endswith(f"deleted {aside}"), action
    assert not list(aside.parent.iterdir())  # copy and marker gone
    info = cli("store", "info", "-w", ws, "--json")
    frames = [c for c in json.loads(info.stdout)["collections"] if c["name"] == "frames"]
    assert frames[0]["points"] == len(list(SAMPLE_IR.glob("*.GIF"))) - 1, frames  # 1 HTML page
    again = cli("repair", "-w", ws, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["actions"] == []


def test_a_frame_file_cut_short_while_mapped_is_an_error_not_a_crash(base, tmp_path):
    """A running reader (the service) maps frames.u8 once; the file cut short afterwards must
    be a DamagedError, not SIGBUS killing the process."""
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.framestore import FrameStore

    from skysearch.config import Workspace
    from skysearch.errors import DamagedError

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    rows = {r["store_row"]: r["frame_id"] for r in read_frames(Workspace(ws)).to_pylist()}
    store = FrameStore(Workspace(ws))
    assert store.read(rows[59]).shape  # mapped, whole
    os.truncate(ws / FRAMES / "frames.u8", 23 * FRAME_BYTES)
    assert store.read(rows[10]).shape  # rows still on disk read fine
    with pytest.raises(DamagedError, match="hold 23 whole frames, row 59 is wanted"):
        store.read(rows[59])
