"""Ingest on real frames: shared GOES/COMS data, the bundled sample, synthetic GK2A names."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from conftest import SAMPLE_DATA, first_ir_frames, shared_data
from PIL import Image
from skysearch.cli.app import flag
from skysearch.ingest import ids
from skysearch.ingest.catalog import (
    REPLACES_KEY,
    atomic_write_table,
    read_frames,
)
from skysearch.ingest.clips import build_clips, read_clips
from skysearch.ingest.framestore import FrameStore
from skysearch.ingest.pipeline import ingest
from skysearch.ingest.profiles import select_profiles

from skysearch.config import Workspace
from skysearch.errors import DamagedError, NotFoundError, UsageError

SAMPLE_IR = SAMPLE_DATA / "goes-irma-2017" / "infrared"
UTC = timezone.utc


def _ws(path: Path) -> Workspace:
    return Workspace(path)


@pytest.fixture(scope="module")
def goes_ws(tmp_path_factory):
    """The whole shared GOES Irma folder ingested once (both channels, worker pool)."""
    src = shared_data("goes-irma-2017")
    ws = _ws(tmp_path_factory.mktemp("goes") / "ws")
    report = ingest([src], ws, source="auto", workers=2, progress=False)
    return ws, report, src


def test_goes_counts_times_and_html_skips(goes_ws):
    ws, report, _ = goes_ws
    assert report.by_channel == {"goes-east/ir": 309, "goes-east/wv": 240}
    assert report.frames_added == report.frames_total == 549
    reasons = {Path(s["path"]).name: s["reason"] for s in report.skipped}
    assert set(reasons) == {"HUIR172502115.GIF", "HUWV172502115.GIF"}
    assert all("HTML" in r for r in reasons.values())
    ir = read_frames(ws, satellite="goes-east", channel="ir")
    assert ir["time"][0].as_py() == datetime(2017, 9, 4, 23, 45, tzinfo=UTC)
    assert ir["time"][-1].as_py() == datetime(2017, 9, 11, 23, 45, tzinfo=UTC)
    wv = read_frames(ws, channel="wv")
    assert wv["time"][0].as_py() == datetime(2017, 9, 6, 23, 45, tzinfo=UTC)
    # HUIR172472345 = 2017, day 247, 23:45 UTC = 2017-09-04T23:45Z; its id is the contract's
    first = ir.slice(0, 1).to_pylist()[0]
    assert first["frame_id"] == ids.frame_id("goes-east", "ir", first["time"])
    assert Path(first["source_path"]).name == "HUIR172472345.GIF"
    assert (first["width"], first["height"], first["status"]) == (720, 480, "ok")
    saved = json.loads(Path(report.report_path).read_text())
    assert saved["frames_total"] == 549 and len(saved["skipped"]) == 2


def test_goes_frames_are_cropped_grey_halved(goes_ws):
    ws, _, src = goes_ws
    ir = read_frames(ws, channel="ir", start="2017-09-06T12:45Z", end="2017-09-06T12:45Z")
    assert ir.num_rows == 1
    frame = FrameStore(ws).read(ir["frame_id"][0].as_py())
    assert frame.shape == (234, 360) and frame.dtype == np.uint8
    image = Image.open(src / "infrared" / "HUIR172491245.GIF").convert("L")
    expected = np.asarray(image.crop((0, 0, 720, 468)).reduce(2))  # 2x2 area average
    np.testing.assert_array_equal(frame, expected)


def test_goes_rerun_changes_nothing(goes_ws):
    ws, _, src = goes_ws
    before = read_frames(ws)
    again = ingest([src], ws, progress=False)
    assert again.frames_added == 0 and again.unchanged == 549
    assert len(again.skipped) == 2
    assert read_frames(ws).equals(before)


def test_coms_folders_and_zip_archive(tmp_path):
    src = shared_data("coms-2011-03-03")
    ws = _ws(tmp_path / "ws")
    report = ingest([src], ws, source="coms", progress=False)
    assert report.frames_added == 24 and not report.skipped
    assert report.by_channel == {f"coms/{c}": 6 for c in ("ir01", "ir02", "swir", "wv")}
    frames = read_frames(ws)
    assert len(set(frames["time"].to_pylist())) == 6
    assert frames["time"][0].as_py() == datetime(2011, 3, 3, 6, 45, tzinfo=UTC)
    assert FrameStore(ws).read_many(frames["frame_id"].to_pylist()[:3]).shape == (3, 300, 375)

    # the SkySearch COMS dataset ships per-year zip archives of the same folders
    archive = tmp_path / "coms-2011.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for png in sorted(src.rglob("*.png")):
            zf.write(png, f"2011/{png.parent.name}/{png.name}")
    ws_zip = _ws(tmp_path / "ws-zip")
    zipped = ingest([archive], ws_zip, source="auto", workers=2, progress=False)
    assert zipped.frames_added == 24 and not zipped.skipped
    from_zip = read_frames(ws_zip)
    assert all("::2011/" in p for p in from_zip["source_path"].to_pylist())
    assert from_zip["checksum"].equals(frames["checksum"])
    np.testing.assert_array_equal(
        FrameStore(ws_zip).read_many(from_zip["frame_id"].to_pylist()),
        FrameStore(ws).read_many(frames["frame_id"].to_pylist()),
    )
    assert ingest([archive], ws_zip, progress=False).unchanged == 24


def _gk2a_png(path: Path, width: int, height: int, box: tuple[int, int, int, int]) -> None:
    """Body (inside the crop box) grey 100, header/borders white 255."""
    pixels = np.full((height, width, 3), 255, np.uint8)
    left, top, right, bottom = box
    pixels[top:bottom, left:right] = 100
    Image.fromarray(pixels).save(path)


def test_gk2a_crop_depends_on_height(tmp_path):
    src = tmp_path / "gk2a"
    src.mkdir()
    name = "gk2a_ami_le1b_{}_ea020lc_{}.png"
    _gk2a_png(src / name.format("ir105", "202001010000"), 1500, 1300, (18, 62, 1495, 1300))
    _gk2a_png(src / name.format("ir105", "202001010010"), 1500, 1332, (0, 80, 1500, 1322))
    _gk2a_png(src / name.format("wv069", "202001010000"), 1500, 1200, (0, 0, 1500, 1200))
    counts = np.full((1300, 1500), 65535, np.uint16)  # 16-bit grey: 25700 -> 100 of 255
    counts[62:1300, 18:1495] = 25700
    Image.fromarray(counts).save(src / name.format("ir105", "202001010020"))
    ws = _ws(tmp_path / "ws")
    report = ingest([src], ws, source="gk2a", progress=False)
    assert report.by_channel == {"gk2a/ir105": 3}
    assert len(report.skipped) == 1 and "wrong dimensions 1500x1200" in report.skipped[0]["reason"]
    frames = FrameStore(ws).read_many(read_frames(ws)["frame_id"].to_pylist())
    assert frames.shape == (3, 300, 375)
    assert (frames == 100).all()  # header rows and borders cropped away exactly


def test_profile_from_a_json_file(tmp_path, cli, monkeypatch):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    profile = {
        "name": "goes-test",
        "satellite": "test-sat",
        "pattern": r"^T(?P<channel>IR)(?P<yy>\d{2})(?P<doy>\d{3})"
        r"(?P<hour>\d{2})(?P<minute>\d{2})\.gif$",
        "channels": {"IR": "thermal"},
        "crops": [{"width": 720, "height": 480, "box": ["10", "0", "W-10", "H-12"]}],
        "resolution": [175, 117],
        "cadence_minutes": 60,
    }
    (profiles / "goes-test.json").write_text(json.dumps(profile))
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(SAMPLE_IR / "HUIR172490045.GIF", src / "TIR172490045.gif")
    ws = tmp_path / "ws"
    result = cli("ingest", src, "--profiles", profiles, "-w", ws, "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1])["by_channel"] == {
        "test-sat/thermal": 1
    }
    frame = FrameStore(_ws(ws)).read(
        ids.frame_id("test-sat", "thermal", datetime(2017, 9, 6, 0, 45, tzinfo=UTC))
    )
    assert frame.shape == (117, 175)
    # the same folder through the environment variable, with --source naming the profile
    monkeypatch.setenv("SKYSEARCH_PROFILES", str(profiles))
    again = cli("ingest", src, "--source", "goes-test", "-w", tmp_path / "ws2", "--json")
    assert json.loads(again.stdout)["frames_added"] == 1


def test_bad_inputs_are_skipped_with_reasons(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    names = ["HUIR172490045.GIF", "HUIR172490145.GIF", "HUIR172490245.GIF"]
    for name in names:
        shutil.copy(SAMPLE_IR / name, src / "a" / name)
    shutil.copy(SAMPLE_IR / "HUIR172502115.GIF", src / "a")  # real HTML page named .GIF
    raw = (SAMPLE_IR / "HUIR172490345.GIF").read_bytes()
    (src / "a" / "HUIR172490345.GIF").write_bytes(raw[: len(raw) // 3])  # truncated
    (src / "a" / "notes.txt").write_text("not a frame")
    (src / "a" / "HUIR17249.GIF").write_bytes(raw)  # name without a time
    (src / "a" / "huir172490545.gif").write_bytes(raw)  # lower case: patterns are not
    shutil.copy(SAMPLE_IR / names[0], src / "b" / names[0])  # same time, same content
    shutil.copy(SAMPLE_IR / "HUIR172490445.GIF", src / "b" / names[1])  # same time, other pixels
    ws = _ws(tmp_path / "ws")
    report = ingest([src], ws, progress=False)
    assert report.frames_added == 3 and report.identical_duplicates == 1
    assert ", 1 identical copies of other files" in report.summary_line()  # the line adds up
    reasons = {Path(s["path"]).name: s["reason"] for s in report.skipped}
    assert "HTML" in reasons["HUIR172502115.GIF"]
    assert "truncated" in reasons["HUIR172490345.GIF"]
    assert "matches no source profile" in reasons["notes.txt"]
    assert "matches no source profile" in reasons["HUIR17249.GIF"]
    assert "only with its letters in another case" in reasons["huir172490545.gif"]
    assert "duplicate timestamp 2017-09-06T01:45Z" in reasons["HUIR172490145.GIF"]
    assert len(report.skipped) == 6
    rerun = ingest([src], ws, progress=False)  # same verdicts, nothing new
    assert rerun.frames_added == 0 and len(rerun.skipped) == 6


def test_identical_copies_are_remembered_not_decoded_again(tmp_path):
    """A mirror of the archive (the same frames under a second path) is counted as identical
    copies without being decoded on every run; a copy that changes is looked at again."""
    from skysearch.ingest.engines import get_engine

    class Recording:
        def __init__(self) -> None:
            self.decoded: list[str] = []

        def decoded_stream(self, items, workers):
            self.decoded += [Path(source.path).parent.name for source, _ in items]
            return get_engine().decoded_stream(items, workers)

    names = ["HUIR172490045.GIF", "HUIR172490145.GIF"]
    for folder in ("archive", "mirror"):
        (tmp_path / folder).mkdir()
        for name in names:
            shutil.copy(SAMPLE_IR / name, tmp_path / folder / name)
    ws, inputs = _ws(tmp_path / "ws"), [tmp_path / "archive", tmp_path / "mirror"]
    first = ingest(inputs, ws, progress=False)
    assert (first.frames_added, first.identical_duplicates) == (2, 2)

    engine = Recording()
    again = ingest(inputs, ws, progress=False, engine=engine)
    assert (again.unchanged, again.identical_duplicates, engine.decoded) == (2, 2, [])

    other = tmp_path / "mirror" / names[1]
    other.write_bytes((SAMPLE_IR / "HUIR172490245.GIF").read_bytes())  # other pixels now
    engine = Recording()
    changed = ingest(inputs, ws, progress=False, engine=engine)
    assert engine.decoded == ["mirror"] and changed.identical_duplicates == 1
    assert "with different content" in changed.skipped[0]["reason"]
    shutil.copy(SAMPLE_IR / names[1], other)  # a copy again
    engine = Recording()
    back = ingest(inputs, ws, progress=False, engine=engine)
    assert engine.decoded == ["mirror"] and back.identical_duplicates == 2 and not back.skipped
    (ws.catalog_dir / "frame-copies.json").write_text("{damaged")  # counts as empty
    engine = Recording()
    assert ingest(inputs, ws, progress=False, engine=engine).identical_duplicates == 2
    assert engine.decoded == ["mirror", "mirror"]
    copies = json.loads((ws.catalog_dir / "frame-copies.json").read_text())
    assert sorted(Path(p).name for p in copies) == names
    other.unlink()  # a copy deleted: forgotten by the next run over its folder, not before
    ingest([tmp_path / "archive"], ws, progress=False)
    assert len(json.loads((ws.catalog_dir / "frame-copies.json").read_text())) == 2
    ingest(inputs, ws, progress=False)
    copies = json.loads((ws.catalog_dir / "frame-copies.json").read_text())
    assert [Path(p).name for p in copies] == names[:1]


def test_a_source_path_is_under_the_input_it_came_from_only():
    from skysearch.ingest.copies import under

    roots = ["/a/2017", "/a/x.zip", "/a/y.nc"]
    inside = [
        "/a/2017/f.gif",
        "/a/2017/sub/f.gif",
        "/a/x.zip::m/f.gif",
        "/a/y.nc#frame=3",
        "/a/y.nc",
    ]
    outside = ["/a/2017b/f.gif", "/a/x.zip2", "/a/f.gif", "/a/y.ncx#frame=1", "/b/2017/f.gif"]
    assert all(under(path, roots) for path in inside)
    assert not any(under(path, roots) for path in outside)
    assert under("/a/2017/f.gif", ["/a/2017/"])  # a root written with its separator


def test_incremental_new_year(tmp_path):
    y17, y18 = tmp_path / "2017", tmp_path / "2018"
    y17.mkdir()
    y18.mkdir()
    for path in sorted(SAMPLE_IR.glob("HUIR17249*.GIF"))[:8]:
        shutil.copy(path, y17 / path.name)
        shutil.copy(path, y18 / path.name.replace("HUIR17", "HUIR18"))
    ws = _ws(tmp_path / "ws")
    assert ingest([y17], ws, progress=False).frames_added == 8
    year17 = read_frames(ws)
    report = ingest([y17, y18], ws, progress=False)
    assert (report.frames_added, report.unchanged, report.frames_total) == (8, 8, 16)
    assert read_frames(ws, end="2017-12-31T23:59Z").equals(year17)
    assert read_frames(ws, start="2018-01-01")["year"].to_pylist() == [2018] * 8
    assert (ws.frames_catalog / "satellite=goes-east" / "year=2018").is_dir()
    assert ingest([y17, y18], ws, progress=False).frames_added == 0


def test_a_file_changed_in_place_is_read_again_and_other_pixels_are_reported(tmp_path):
    """Same path, same size and time: not read. Touched: read again, unchanged. Other pixels
    at the same path (a plain file or a zip member): skipped with the reason; the first kept."""
    src = tmp_path / "in"
    src.mkdir()
    gifs = sorted(SAMPLE_IR.glob("HUIR17249*.GIF"))[:4]
    for path in gifs[:3]:
        shutil.copy(path, src / path.name)
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(gifs[3], gifs[3].name)
    ws = _ws(tmp_path / "ws")
    assert ingest([src, archive], ws, progress=False).frames_added == 4
    before = read_frames(ws)

    touched = src / gifs[0].name
    os.utime(touched, ns=(1, 1))
    report = ingest([src, archive], ws, progress=False)
    assert (report.frames_added, report.unchanged, report.skipped) == (0, 4, [])
    rows = read_frames(ws, columns=["source_path", "source_stamp"]).to_pylist()
    stamp_of = {row["source_path"]: row["source_stamp"] for row in rows}
    assert stamp_of[str(touched.resolve())] == f"file {touched.stat().st_size} 1"
    restamped = read_frames(ws)  # the touched file's new stamp: not decoded on the next run
    assert restamped.drop_columns(["source_stamp"]).equals(before.drop_columns(["source_stamp"]))

    shutil.copy(gifs[1], touched)  # the first file's name, the second file's pixels
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(gifs[2], gifs[3].name)
    report = ingest([src, archive], ws, progress=False)
    assert (report.frames_added, report.unchanged) == (0, 2)
    changed = {Path(s["path"]).name: s["reason"] for s in report.skipped}
    assert changed.keys() == {gifs[0].name, f"more.zip::{gifs[3].name}"}
    assert all(r.startswith("changed since its frame 2017-09-0") for r in changed.values()), changed
    assert read_frames(ws).equals(restamped)  # nothing replaced, nothing lost

    # rows written before stamps existed keep the old rule: same path, not read again
    for part in ws.frames_catalog.rglob("*.parquet"):
        pq.write_table(pq.read_table(part).drop_columns(["source_stamp"]), part)
    report = ingest([src, archive], ws, progress=False)
    assert (report.frames_added, report.unchanged, report.skipped) == (0, 4, [])


def test_a_copy_of_a_catalog_part_is_not_read_twice(tmp_path):
    """A file manager's or a sync tool's copy of a part beside it doubled every row (and the
    clips built from them); only the names SkySearch writes are parts."""
    import shutil

    ws = _ws(tmp_path / "ws")
    ingest([SAMPLE_IR], ws, progress=False)
    before = read_frames(ws)
    (part,) = (ws.frames_catalog / "satellite=goes-east" / "year=2017").glob("part-*.parquet")
    for name in (f"{part.stem} (copy).parquet", "part-copy.parquet", "Copy of part.parquet"):
        shutil.copy(part, part.with_name(name))
    assert read_frames(ws).equals(before)
    from skysearch.workflows.doctor import diagnose

    from skysearch.config import Settings

    (check,) = [c for c in diagnose(Settings(workspace=ws)) if c.name == "catalog files"]
    assert check.status == "todo" and f"{part.stem} (copy).parquet" in check.detail


def test_read_frames_filters_and_framestore_order(tmp_path):
    ws = _ws(tmp_path / "ws")
    ingest([SAMPLE_IR], ws, progress=False)
    day = read_frames(ws, start="2017-09-07T00:00Z", end="2017-09-07T23:59Z", channel="ir")
    assert day.num_rows == 24 and pc.all(pc.equal(day["year"], 2017)).as_py()
    # an end given as a date alone takes in that whole day, as the CLI's --between does
    assert read_frames(ws, start="2017-09-07", end="2017-09-07", channel="ir").equals(day)
    assert read_frames(ws, satellite="coms").num_rows == 0
    store = FrameStore(ws)
    picked = day["frame_id"].to_pylist()[::-1][:4]
    many = store.read_many(picked)
    for i, fid in enumerate(picked):
        np.testing.assert_array_equal(many[i], store.read(fid))
    with pytest.raises(NotFoundError):
        store.read("00000000-0000-0000-0000-000000000000")


def test_an_unknown_source_names_the_parameter_the_cli_renders_as_a_flag():
    with pytest.raises(UsageError) as caught:
        select_profiles("meteosat")
    assert str(caught.value).startswith("unknown source 'meteosat': use auto or one of ")
    assert caught.value.render(flag).startswith("unknown --source 'meteosat'")


def _flip_last_byte(path: Path, row_group: int, column: str) -> None:
    """Damage one column chunk of a Parquet file (the end of its last page's payload)."""
    group = pq.ParquetFile(path).metadata.row_group(row_group)
    names = [group.column(i).path_in_schema for i in range(group.num_columns)]
    chunk = group.column(names.index(column))
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(path.read_bytes())
    data[start + chunk.total_compressed_size - 1] ^= 0xFF
    path.write_bytes(bytes(data))


def _twelve_frames(tmp_path: Path) -> Workspace:
    ws = _ws(tmp_path / "ws")
    ingest([first_ir_frames(tmp_path / "src", 12)], ws, workers=1, progress=False)
    return ws


def test_read_frames_decodes_only_the_columns_and_row_groups_it_needs(tmp_path):
    """Columns and filters are pushed down to the Parquet reader: a damaged column the query
    does not ask for, or a damaged row group its time window rules out, is never decoded
    (a full read still refuses the file, naming it)."""
    ws = _twelve_frames(tmp_path)
    full = read_frames(ws)
    (part,) = ws.frames_catalog.rglob("*.parquet")
    pq.write_table(full, part, row_group_size=4, write_page_checksum=True)  # 3 row groups
    start = full["time"][4].as_py()  # the second row group's first frame
    wanted = full.filter(pc.greater_equal(full["time"], full["time"][4])).select(
        ["frame_id", "time"]
    )
    _flip_last_byte(part, 0, "frame_id")  # a row group the window rules out
    _flip_last_byte(part, 1, "source_path")  # a column the query does not ask for
    assert read_frames(ws, start=start, columns=["frame_id", "time"]).equals(wanted)
    with pytest.raises(DamagedError, match=str(part)):
        read_frames(ws)
    with pytest.raises(DamagedError, match=str(part)):
        read_frames(ws, columns=["source_path"])


def test_read_clips_decodes_only_the_columns_it_needs(tmp_path):
    """The frame id grids, the bulk of the clip catalog, are read only when asked for."""
    ws = _twelve_frames(tmp_path)
    build_clips(ws, length=4, gap_minutes=60)
    full = read_clips(ws)
    assert full.num_rows > 1
    (path,) = ws.clips_catalog.rglob("*.parquet")
    _flip_last_byte(path, 0, "frame_ids.list.element.list.element")
    cols = ["clip_id", "start", "channels"]
    assert read_clips(ws, length=4, columns=cols).equals(full.select(cols))
    with pytest.raises(DamagedError, match=str(path)):
        read_clips(ws)


def test_cli_errors_are_one_line_exit_2(tmp_path, cli):
    missing = cli("ingest", tmp_path / "nope", "-w", tmp_path / "ws")
    assert missing.exit_code == 2
    assert missing.stderr.strip().startswith("error: path not found")
    assert len(missing.stderr.strip().splitlines()) == 1
    blocker = tmp_path / "file"
    blocker.write_text("x")
    unwritable = cli("ingest", SAMPLE_IR, "-w", blocker / "ws")
    assert unwritable.exit_code == 2 and unwritable.stderr.startswith("error: workspace")
    unknown = cli("ingest", SAMPLE_IR, "--source", "meteosat", "-w", tmp_path / "ws")
    assert unknown.exit_code == 2 and "unknown --source" in unknown.stderr
    policy = cli("ingest", SAMPLE_IR, "--bad-frames", "drop", "-w", tmp_path / "ws")
    assert policy.exit_code == 2 and "--bad-frames must be one of" in policy.stderr
    update = cli("update", SAMPLE_IR, "--source", "meteosat", "-w", tmp_path / "ws")
    assert update.exit_code == 2 and "unknown --source" in update.stderr
    assert not (tmp_path / "ws").exists()  # a refused run leaves no workspace behind


def test_cli_json_summary_on_sample(tmp_path, cli):
    result = cli("ingest", SAMPLE_IR, "-w", tmp_path / "ws", "--json")
    assert result.exit_code == 0
    summary = json.loads(result.stdout)
    assert summary["frames_added"] == summary["frames_total"] == 60
    assert summary["by_channel"] == {"goes-east/ir": 60}
    assert [Path(s["path"]).name for s in summary["skipped"]] == ["HUIR172502115.GIF"]
    assert "60 frames added" in result.stderr


def test_catalog_compaction_and_an_older_versions_leftovers(tmp_path):
    """Compaction merges the parts into one; a workspace an older version left mid-compaction
    (merged ``compact-*`` file live beside the parts it replaces) is read without double
    counting, and the next ingest deletes the leftovers. Kills at every step of today's
    compaction: tests/test_crash_safety.py."""
    ws = _ws(tmp_path / "ws")
    ingest([SAMPLE_IR], ws, commit_every=4, progress=False)  # 15 small parts
    before = read_frames(ws)
    folder = ws.frames_catalog / "satellite=goes-east" / "year=2017"
    parts = sorted(folder.glob("*.parquet"))
    assert len(parts) == 15
    old_merged = folder / "compact-0123456789ab.parquet"  # as an older version wrote it
    names = json.dumps([p.name for p in parts]).encode()
    atomic_write_table(before.replace_schema_metadata({REPLACES_KEY: names}), old_merged)
    assert read_frames(ws).equals(before)  # replaced parts are ignored, not double-counted
    assert ingest([SAMPLE_IR], ws, progress=False).frames_total == 60
    assert sorted(folder.glob("*.parquet")) == [old_merged]  # leftovers deleted
    assert read_frames(ws).equals(before)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pattern": None}, "the key 'pattern' is missing (required: name, satellite, pattern,"),
        ({"pattern": "(?P<year>"}, "pattern is not a regular expression (missing ), unterm"),
        ({"resolution": "375x300"}, "resolution must be [width, height], got '375x300'"),
        ({"resolution": [375, 30.5]}, "resolution must be a whole number, got 30.5"),
        ({"cadence_minutes": "often"}, "cadence_minutes must be a whole number, got 'often'"),
        ({"cadence_minutes": 0}, "cadence_minutes must be at least 1, got 0"),  # no repair
        ({"resolution": [0, 0]}, "resolution must be at least 1, got 0"),
        ({"max_value": 0}, "max_value must be at least 1, got 0"),
        ({"crops": []}, "crops must be a non-empty list"),
        ({"crops": [{"box": ["0", "0", "W"]}]}, "a crop box is [left, top, right, bottom]"),
        ({"crops": [{"box": ["0", "0", "X", "H"]}]}, "crop term 'X' not understood"),
        (
            {"crops": [{"width": 1500, "height": 1300, "box": ["0", "0", "W+10", "H"]}]},
            "crop box ['0', '0', 'W+10', 'H'] is not inside a 1500x1300 image",
        ),
        ({"cadence": 15}, "unknown profile key 'cadence' (known: cadence_minutes, channel,"),
        # names become workspace folders: one escaping it wrote frames outside the workspace
        ({"satellite": "../../evil"}, "satellite '../../evil' must be 1-64 letters, digits,"),
        ({"satellite": None, "name": "a b"}, "the key 'satellite' is missing"),
        ({"name": "coms/x"}, "name 'coms/x' must be 1-64 letters"),
        ({"channels": {"ir01": "ir=1"}}, "channel 'ir=1' must be 1-64 letters"),
        ({"channel": 5}, "channel 5 must be 1-64 letters"),
        ({"resolution": [100000, 100000]}, "is larger than 4096 on a side"),  # out of memory
        ({"name": "auto"}, "name 'auto' is reserved"),  # --source auto: every profile
        ({"footprint": {"bounds": [1, 2]}}, "footprint bounds must be four numbers [west, sou"),
        ({"pattern": 5}, "pattern must be a string, got 5"),
        ({"channels": ["IR"]}, "channels must be an object of name code -> name"),
        ({"crops": [{"widht": 1500, "box": ["0", "0", "W", "H"]}]}, "unknown crop rule key 'wid"),
        ({"crops": [{"width": "x", "box": ["0", "0", "W", "H"]}]}, "crop width must be a whole"),
    ],
)
def test_a_bad_profile_key_is_one_error_naming_it(change, message, tmp_path):
    """They read as Python reprs (KeyError('pattern'), invalid literal for int()), or, with
    impossible values, every file was blamed later (a crop box outside the image said "wrong
    dimensions 1500x1300 (expects 1500x1300)"); a misspelt key was ignored."""
    from skysearch.ingest.profiles import load_profiles

    packaged = Path(ids.__file__).parent / "profiles" / "coms.json"
    data = json.loads(packaged.read_text())
    data |= change
    data = {key: value for key, value in data.items() if value is not None}
    (tmp_path / "coms.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match="is invalid") as caught:
        load_profiles([tmp_path])
    assert message in str(caught.value)
    (tmp_path / "coms.json").write_text("[1]")
    with pytest.raises(UsageError, match="a JSON object is needed, not list"):
        load_profiles([tmp_path])


def test_pipes_devices_and_broken_links_are_skipped_unopened(tmp_path):
    """A named pipe named like a frame hung ingest and update for ever (opening it waits for a
    writer); a device was read up to the size limit; a broken link said "No such file"."""
    from skysearch.ingest.pipeline import discover

    folder = first_ir_frames(tmp_path / "in", 1)
    (good,) = folder.iterdir()
    os.mkfifo(folder / "HUIR172492145.GIF")
    (folder / "HUIR172492245.GIF").symlink_to("/dev/zero")
    (folder / "HUIR172492345.GIF").symlink_to(tmp_path / "gone.GIF")
    os.mkfifo(folder / "delivery.zip")  # read as a zip archive first
    candidates, skipped = discover([folder], select_profiles("auto"))
    assert [c.source.name for c in candidates] == [good.name]
    reasons = {Path(s["path"]).name: s["reason"] for s in skipped}
    assert reasons == {
        "HUIR172492145.GIF": "not a regular file (a pipe or a device)",
        "HUIR172492245.GIF": "not a regular file (a pipe or a device)",
        "HUIR172492345.GIF": "a broken link",
        "delivery.zip": "not a regular file (a pipe or a device)",
    }


def test_a_frame_dated_in_the_future_is_skipped_as_a_misnamed_file(tmp_path):
    """``HUIR69001...``: a two-digit year read as 2069 went into the catalog, and would have been
    the archive's most recent data (the hold-out of every model trained after)."""
    folder = first_ir_frames(tmp_path / "in", 1)
    (good,) = folder.iterdir()
    shutil.copy(good, folder / "HUIR690010045.GIF")
    report = ingest([folder], _ws(tmp_path / "ws"), progress=False)
    assert report.frames_added == 1
    assert [s["reason"] for s in report.skipped] == [
        "time 2069-01-01T00:45Z is in the future: a misnamed file?"
    ]


def test_why_a_name_is_not_recognised(tmp_path):
    """A channel code the profile does not map, and a zip inside a zip, said only "matches no
    source profile"."""
    from skysearch.ingest.profiles import Profile, unmatched_reason

    product = Profile.from_dict(
        {
            "name": "ir-only",
            "satellite": "sat",
            "pattern": r"^(?P<channel>[A-Z]+)_(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})\.png$",
            "channels": {"IR": "ir"},
            "crops": [{"box": ["0", "0", "W", "H"]}],
            "resolution": [64, 64],
            "cadence_minutes": 60,
        }
    )
    assert unmatched_reason("WV_20170907.png", [product]) == (
        "file name has the pattern of source profile ir-only but channel code WV, which its "
        "channels do not map (IR)"
    )
    assert unmatched_reason("inner.zip", [product]).startswith("a zip archive inside a zip")


def test_only_the_newest_reports_are_kept(tmp_path, monkeypatch):
    """An hourly job over a folder it skips files of wrote a report (megabytes with 20k skips)
    every run, for ever."""
    from skysearch.ingest import pipeline

    monkeypatch.setattr(pipeline, "KEPT_REPORTS", 3)
    folder = first_ir_frames(tmp_path / "in", 1)
    ws = _ws(tmp_path / "ws")
    paths = [ingest([folder], ws, progress=False).report_path for _ in range(5)]
    assert sorted(ws.reports_dir.glob("ingest-*.json")) == sorted(map(Path, paths[-3:]))
    # the folders the retired reports named still reach repair
    from skysearch.ingest.rebuild import source_roots

    other = tmp_path / "other"  # nothing of it in the catalog: only its report names it
    other.mkdir()
    (other / "HUIR172490045.GIF").write_text("<html>not a frame</html>")
    ingest([other], ws, progress=False)
    for _ in range(3):  # the report naming the other folder retires
        ingest([folder], ws, progress=False)
    assert not any(str(other) in p.read_text() for p in ws.reports_dir.glob("ingest-*.json"))
    assert other.resolve() in source_roots(ws)[0]


def test_a_users_profile_is_tried_before_a_packaged_one_that_also_matches(tmp_path):
    """With --source auto the packaged goes-sector recognised the user's own product's files
    first, and the user's profile was never used, without a word."""
    packaged = Path(ids.__file__).parent / "profiles" / "goes-sector.json"
    data = json.loads(packaged.read_text()) | {"name": "my-goes", "satellite": "goes-x"}
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles" / "my-goes.json").write_text(json.dumps(data))
    folder = first_ir_frames(tmp_path / "in", 1)
    ws = _ws(tmp_path / "ws")
    ingest([folder], ws, profile_dirs=[tmp_path / "profiles"], progress=False)
    assert read_frames(ws, columns=["satellite"])["satellite"].to_pylist() == ["goes-x"]


def test_the_catalog_api_refuses_arguments_it_cannot_honour(tmp_path):
    """A column the catalog lacks was a bare KeyError; one frame id as a string was read as
    one id per character."""
    folder = first_ir_frames(tmp_path / "in", 1)
    ws = _ws(tmp_path / "ws")
    ingest([folder], ws, progress=False)
    with pytest.raises(UsageError, match="no column 'nosuch' in the catalog: columns is a list"):
        read_frames(ws, columns=["frame_id", "nosuch"])
    with pytest.raises(UsageError, match="no column 'tim' in the catalog"):
        read_clips(ws, columns=["tim"])
    with pytest.raises(UsageError, match="columns is a list of names, got 'frame_id'"):
        read_frames(ws, columns="frame_id")
    (frame_id,) = read_frames(ws, columns=["frame_id"])["frame_id"].to_pylist()
    with pytest.raises(UsageError, match="frame_ids is a list of frame ids"):
        FrameStore(ws).read_many(frame_id)
    assert FrameStore(ws).read_many([frame_id]).shape[0] == 1


def test_profiles_that_would_skip_every_file_or_collide_are_refused(tmp_path):
    from skysearch.ingest.profiles import load_profiles

    packaged = json.loads((Path(ids.__file__).parent / "profiles" / "coms.json").read_text())
    for change, said in (
        ({"pattern": r"^x_(?P<channel>\w+)_(?P<year>\d{4})(?P<hour>\d{2})\.png$"}, "no date"),
        ({"channels": {}}, 'no "channels" maps its codes'),
    ):
        (tmp_path / "coms.json").write_text(json.dumps(packaged | change))
        with pytest.raises(UsageError, match=said):
            load_profiles([tmp_path])
    (tmp_path / "coms.json").write_text(json.dumps(packaged | {"name": "mine"}))
    (tmp_path / "other.json").write_text(
        json.dumps(packaged | {"name": "mine", "cadence_minutes": 5})
    )
    with pytest.raises(UsageError, match="coms.json and .*other.json are both named 'mine'"):
        load_profiles([tmp_path])  # which one won was the order of the file names
    copy = tmp_path / "copy"  # the same profile in two folders (a shell-wide variable): fine
    copy.mkdir()
    (tmp_path / "other.json").unlink()
    (copy / "coms.json").write_text((tmp_path / "coms.json").read_text())
    assert load_profiles([tmp_path, copy])["mine"].cadence_minutes == packaged["cadence_minutes"]
    # a NetCDF/zarr product dates its frames from the file's time coordinate, not the name
    netcdf = packaged | {
        "name": "sst",
        "decoder": {"kind": "netcdf", "variable": "sst", "time": "time"},
    }
    netcdf["pattern"] = r"^sst_(?P<channel>ir01)_(?P<year>\d{4})\.nc$"
    (copy / "coms.json").write_text(json.dumps(netcdf))
    assert "sst" in load_profiles([copy])


def test_a_satellite_read_from_a_file_name_must_be_able_to_name_a_folder():
    from skysearch.ingest.profiles import Profile, unmatched_reason

    profile = Profile.from_dict(
        {
            "name": "multi",
            "satellite": "any",
            "pattern": r"^(?P<satellite>[^_]+)_(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})\.png$",
            "channel": "ir",
            "crops": [{"box": ["0", "0", "W", "H"]}],
            "resolution": [64, 64],
            "cadence_minutes": 60,
        }
    )
    assert profile.match("GMS5_20000101.png").satellite == "gms5"
    assert profile.match(".._20000101.png") is None  # would name a folder above the archive's
    assert "satellite '..', which cannot name a folder" in unmatched_reason(
        ".._20000101.png", [profile]
    )
