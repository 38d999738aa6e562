"""Damaged workspaces: every kind of damage is named by doctor, is one ``error:`` line for a
query and for ingest (never a traceback, never a silently wrong answer), and ``repair``
restores the workspace so that the same query gives the undamaged answer again. The vector
store and the models: ``test_store_integrity.py``."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import held
from integrity_env import SAMPLE_IR, ingested_workspace, one_error_line

FRAMES = Path("frames/goes-east/ir/2017")
SKETCHES = Path("sketches/clean-g24-b20/goes-east/ir/2017")
CATALOG = Path("catalog/frames/satellite=goes-east/year=2017")
CLIPS = Path("catalog/clips/satellite=goes-east/year=2017/ir_6x60m.parquet")
FRAME_BYTES = 234 * 360
# A similarity query on two catalog clips: from stored sketches, and (grid 12: a spec with no
# stored sketches) from the frames themselves.
QUERY = ["similarity", "2017-09-07T00:45Z", "2017-09-07T06:45Z", "--length", "6", "--gap", "60"]
FROM_SKETCHES, FROM_FRAMES = QUERY, [*QUERY, "--grid", "12"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return ingested_workspace(tmp_path_factory.mktemp("integrity") / "ws")


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
