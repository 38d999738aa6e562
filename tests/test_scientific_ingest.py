"""Scientific source formats on real data: Digital Typhoon's HDF5 frames (typhoon 198702, GMS-3),
the same frames written to a zarr store and a NetCDF file, physically impossible values flagged
and repaired, events that keep storms apart."""

from __future__ import annotations

import io
import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import shared_data
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.clips import build_clips, read_clips
from skysearch.ingest.framestore import FrameStore
from skysearch.ingest.pipeline import ingest
from skysearch.ingest.profiles import load_profiles
from skysearch.ingest.readers import NODATA

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError

UTC = timezone.utc
COUNT = 30  # frames of 198702 used: 1987-04-09 19 UTC on, 12 of them with defect bands
PROFILE = load_profiles()["digital-typhoon"]
ANY_SIZE = lambda width, height: None  # noqa: E731  read_field refusing no size
PROFILE_FILE = Path(__file__).resolve().parent.parent / "ingest/profiles/digital-typhoon.json"


@pytest.fixture(scope="module")
def h5_files() -> list[Path]:
    folder = shared_data("digital-typhoon", "image", "198702")
    return sorted(folder.glob("*.h5"))[:COUNT]


def _copy(files: list[Path], folder: Path, event: str = "198702") -> Path:
    folder.mkdir(parents=True)
    for path in files:
        shutil.copy(path, folder / path.name.replace("-198702-", f"-{event}-"))
    return folder


def _field(path: Path) -> np.ndarray:
    with h5py.File(path) as handle:
        return handle["infrared"][()]


def _time(path: Path) -> datetime:
    return datetime.strptime(path.name[:10], "%Y%m%d%H").replace(tzinfo=UTC)


def _impossible(values: np.ndarray) -> np.ndarray:
    low, high = PROFILE.decoder.valid
    return ~np.isfinite(values) | (values < low) | (values > high)


@pytest.fixture(scope="module")
def typhoon(tmp_path_factory, h5_files) -> Workspace:
    root = tmp_path_factory.mktemp("typhoon")
    workspace = Workspace(root / "ws")
    report = ingest([_copy(h5_files, root / "image" / "198702")], workspace, progress=False)
    assert report.frames_added == COUNT and not report.skipped
    return workspace


def test_frames_carry_satellite_event_time_and_quality(typhoon, h5_files):
    frames = read_frames(typhoon).to_pylist()
    assert [f["time"] for f in frames] == [_time(p) for p in h5_files]
    assert {(f["satellite"], f["channel"], f["event"]) for f in frames} == {
        ("gms3", "ir", "198702")
    }
    expected = [float(_impossible(_field(p)).mean()) for p in h5_files]
    assert sum(e > 0 for e in expected) >= 10  # the real defects are there
    assert [f["quality"] for f in frames] == pytest.approx(expected, abs=1e-6)
    for frame, bad in zip(frames, expected, strict=True):
        assert frame["status"] == ("repaired" if bad else "ok")


def test_clean_frames_map_brightness_temperature_to_grey(typhoon, h5_files):
    """Cold cloud tops bright: 170 K -> 255, 310 K -> 1, 2x2 area average to 256x256."""
    frame = next(f for f in read_frames(typhoon).to_pylist() if f["status"] == "ok")
    values = _field(next(p for p in h5_files if _time(p) == frame["time"]))
    unit = 1.0 - np.clip((values - 170.0) / 140.0, 0, 1)
    grey = 1.0 + np.rint(unit * 254.0)
    expected = grey.reshape(256, 2, 256, 2).mean(axis=(1, 3))
    stored = FrameStore(typhoon).read(frame["frame_id"]).astype(float)
    assert np.abs(stored - expected).max() <= 1.0


def test_repaired_frames_have_no_holes_and_keep_their_clean_rows(typhoon, h5_files):
    store = FrameStore(typhoon)
    repaired = [f for f in read_frames(typhoon).to_pylist() if f["status"] == "repaired"]
    assert repaired
    for frame in repaired:
        pixels = store.read(frame["frame_id"])
        assert (pixels != NODATA).all()
        values = _field(next(p for p in h5_files if _time(p) == frame["time"]))
        first_bad = int(np.flatnonzero(_impossible(values).any(axis=1))[0]) // 2
        assert first_bad > 128  # the defect is a band at the bottom, most rows are measured
        clean_rows = np.arange(256) < first_bad
        unit = 1.0 - np.clip((values - 170.0) / 140.0, 0, 1)
        own = (1.0 + np.rint(unit * 254.0)).reshape(256, 2, 256, 2).mean(axis=(1, 3))
        assert np.abs(pixels[clean_rows] - own[clean_rows]).max() <= 1.0


def test_reingest_is_a_no_op_and_a_second_event_adds_only_its_frames(typhoon, h5_files, tmp_path):
    again = ingest([Path(read_frames(typhoon)["source_path"][0].as_py()).parent], typhoon)
    assert (again.frames_added, again.unchanged, again.repaired) == (0, COUNT, 0)
    # the same hours seen as another storm: other frames (ids carry the event), own clips
    other = ingest([_copy(h5_files[:14], tmp_path / "198799", "198799")], typhoon, progress=False)
    assert other.frames_added == 14 and other.frames_total == COUNT + 14
    build_clips(typhoon, length=6, gap_minutes=60)
    clips = read_clips(typhoon).to_pylist()
    frames = {f["frame_id"]: f["event"] for f in read_frames(typhoon).to_pylist()}
    assert {c["event"] for c in clips} == {"198702", "198799"}
    for clip in clips:
        assert {frames[fid] for fid in clip["frame_ids"][0]} == {clip["event"]}


@pytest.mark.parametrize("policy", ["skip", "keep"])
def test_bad_frame_policies(policy, h5_files, tmp_path):
    """``skip`` set in a profile, ``keep`` given to the ingest (``--bad-frames``)."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    data = json.loads(PROFILE_FILE.read_text())
    data["decoder"]["bad_frames"] = "skip" if policy == "skip" else "repair"
    (profiles / "digital-typhoon.json").write_text(json.dumps(data))
    workspace = Workspace(tmp_path / "ws")
    given = None if policy == "skip" else policy
    report = ingest(
        h5_files[:6], workspace, profile_dirs=[profiles], progress=False, bad_frames=given
    )
    bad = [p for p in h5_files[:6] if _impossible(_field(p)).any()]
    assert bad
    if policy == "skip":
        assert report.frames_added == 6 - len(bad)
        assert sorted(Path(s["path"]) for s in report.skipped) == sorted(bad)
        assert all("physically impossible" in s["reason"] for s in report.skipped)
    else:
        frames = read_frames(workspace).to_pylist()
        suspect = [f for f in frames if f["status"] == "suspect"]
        assert (report.frames_added, report.repaired, len(suspect)) == (6, 0, len(bad))
        pixels = FrameStore(workspace).read(suspect[0]["frame_id"])
        assert (pixels == NODATA).all(axis=1).sum() > 10  # the masked band is left black


def _time_profile(kind: str, pattern: str) -> dict:
    """A profile for a many-frame file of ``kind``: times from its time coordinate."""
    data = json.loads(PROFILE_FILE.read_text())
    data |= {"name": f"typhoon-{kind}", "satellite": "gms3", "pattern": pattern}
    data["decoder"] |= {"kind": kind, "variable": "tb", "time": "time"}
    data["decoder"].pop("dataset")
    return data


@pytest.mark.parametrize("kind", ["zarr", "netcdf"])
def test_a_json_profile_reads_zarr_and_netcdf_copies_of_the_same_frames(
    kind, typhoon, h5_files, tmp_path
):
    files = h5_files[:14]
    name = "typhoon-198702.zarr" if kind == "zarr" else "typhoon-198702.nc"
    target = tmp_path / "archive" / name
    target.parent.mkdir()
    _write_many_frames(files, target, kind)
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    pattern = r"^typhoon-(?P<event>\d{6})\.(?:zarr|nc)$"
    (profiles / f"{kind}.json").write_text(json.dumps(_time_profile(kind, pattern)))

    workspace = Workspace(tmp_path / "ws")
    report = ingest([target.parent], workspace, profile_dirs=[profiles], progress=False)
    assert (report.frames_added, report.skipped, report.files_seen) == (14, [], 1)
    frames = read_frames(workspace).to_pylist()
    assert [f["time"] for f in frames] == [_time(p) for p in files]
    assert frames[3]["source_path"] == f"{target}#frame=3"
    # the same pixels, flags and repairs as ingesting the HDF5 files themselves
    twins = read_frames(typhoon, end=_time(files[-1])).to_pylist()
    h5_rows = {f["time"]: f for f in twins if f["event"] == "198702"}
    ours, theirs = FrameStore(workspace), FrameStore(typhoon)
    for frame in frames:
        twin = h5_rows[frame["time"]]
        assert (frame["status"], frame["event"]) == (twin["status"], "198702")
        assert frame["quality"] == pytest.approx(twin["quality"], abs=1e-6)
        if frame["status"] == "ok":
            assert np.array_equal(ours.read(frame["frame_id"]), theirs.read(twin["frame_id"]))
    assert build_clips(workspace, length=6, gap_minutes=60).clips_total > 0
    again = ingest([target.parent], workspace, profile_dirs=[profiles], progress=False)
    assert (again.frames_added, again.unchanged) == (0, 14)

    # the file grows by 4 frames: they are added; the 14 are decoded once more (the file's size
    # and time changed), kept, and take its new stamp, so the next run reads none of them
    grown = target.with_name(f"new-{target.name}")  # delivered beside it, then renamed over it
    _write_many_frames(h5_files[:18], grown, kind)
    if kind == "zarr":
        shutil.rmtree(target)
    grown.rename(target)
    grew = ingest([target.parent], workspace, profile_dirs=[profiles], progress=False)
    assert (grew.frames_added, grew.unchanged, grew.skipped) == (4, 14, []), grew.skipped[:2]
    assert len(set(read_frames(workspace)["source_stamp"].to_pylist())) == 1


def _write_many_frames(files: list[Path], target: Path, kind: str) -> None:
    """The HDF5 frames' fields as one zarr store or NetCDF file with a time coordinate."""
    import xarray as xr

    data = xr.Dataset(
        {"tb": (("time", "y", "x"), np.stack([_field(p) for p in files]))},
        coords={"time": np.array([_time(p).replace(tzinfo=None) for p in files], "M8[ns]")},
    )
    if kind == "zarr":
        data.to_zarr(target, consolidated=False)
    else:
        data.to_netcdf(target, engine="netcdf4")


def test_missing_variable_is_skipped_with_a_reason(h5_files, tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    data = json.loads(PROFILE_FILE.read_text())
    data["decoder"]["dataset"] = "visible"
    (profiles / "digital-typhoon.json").write_text(json.dumps(data))
    report = ingest(h5_files[:2], Workspace(tmp_path / "ws"), profile_dirs=[profiles])
    assert report.frames_added == 0
    reason = "no dataset 'visible' (datasets: infrared)"
    assert [s["reason"] for s in report.skipped] == [reason] * 2


def _rewrite_h5(source: Path, target: Path, write) -> None:
    """A copy of ``source`` whose ``infrared`` entry ``write(handle, field)`` made instead."""
    field = _field(source)
    with h5py.File(target, "w") as handle:
        write(handle, field)


@pytest.mark.parametrize(
    ("write", "reason"),
    [
        (lambda h, f: h.create_group("infrared"), "'infrared' is a group, not a dataset"),
        (lambda h, f: h.create_dataset("infrared", data=np.array([b"x"] * 4)), "not numbers"),
        (
            lambda h, f: h.create_dataset(
                "infrared", data=np.zeros(3, dtype=[("a", "f8"), ("b", "i4")])
            ),
            "not numbers",
        ),
        (lambda h, f: h.create_dataset("infrared", data=np.full_like(f, np.nan)), "100.0% of"),
        (lambda h, f: h.create_dataset("infrared", data=f - 273.15), "too few valid pixels"),
        (  # a few KB declaring 74.5 GiB: refused from the header (it was read, MemoryError)
            lambda h, f: h.create_dataset(
                "infrared", shape=(100_000, 100_000), dtype="f8", chunks=(512, 512), fillvalue=250.0
            ),
            "field of 100000x100000 values too large to be a frame, not read",
        ),
        (
            lambda h, f: h.create_dataset("infrared", data=f[:300, :400]),
            "wrong dimensions 400x300 (profile digital-typhoon expects",
        ),
        (
            lambda h, f: h.create_dataset("infrared", data=np.stack([f, f])),
            "'infrared' has shape (2, 512, 512), not one 2-D frame",
        ),
    ],
    ids=["group", "text", "records", "all-nan", "celsius", "huge", "wrong-size", "3-d"],
)
def test_a_damaged_field_is_skipped_and_the_rest_of_the_run_kept(write, reason, h5_files, tmp_path):
    """One file whose field is no usable frame is skipped with its reason (never repaired from
    its neighbours); the good files of the same run are stored."""
    folder = _copy(h5_files[:4], tmp_path / "in")
    bad = folder / h5_files[2].name
    _rewrite_h5(h5_files[2], bad, write)
    report = ingest([folder], Workspace(tmp_path / "ws"), progress=False)
    assert report.frames_added == 3
    assert [s["path"] for s in report.skipped] == [str(bad)]
    assert reason in report.skipped[0]["reason"]


def test_hdf5_fill_values_and_packed_counts_decode_as_netcdf_ones_do(h5_files, tmp_path):
    """The CF attributes xarray applies to NetCDF and zarr apply to HDF5 too: ``_FillValue``
    rows are no data (they were stored as the coldest cloud), and int16 counts with
    ``scale_factor``/``add_offset`` are unpacked (the frame was all one grey)."""
    from skysearch.ingest.readers import FieldError, read_field

    field = _field(h5_files[0]).astype(np.float64)
    filled = field.copy()
    filled[:64] = -999.0
    counts = np.round((field - 150.0) / 0.01).astype(np.int16)

    def h5(write) -> bytes:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.h5"
        with h5py.File(path, "w") as handle:
            write(handle)
        return path.read_bytes()

    def fill(handle):
        handle.create_dataset("infrared", data=filled).attrs["_FillValue"] = -999.0

    def packed(handle):
        dataset = handle.create_dataset("infrared", data=counts)
        dataset.attrs["scale_factor"], dataset.attrs["add_offset"] = 0.01, 150.0

    def broken(handle):
        handle.create_dataset("infrared", data=counts).attrs["scale_factor"] = "ten"

    decoded = read_field("f.h5", h5(fill), PROFILE.decoder, None, ANY_SIZE).values
    assert np.isnan(decoded[:64]).all() and np.array_equal(decoded[64:], field[64:])
    unpacked = read_field("p.h5", h5(packed), PROFILE.decoder, None, ANY_SIZE).values
    assert np.abs(unpacked - field).max() <= 0.005 + 1e-9
    with pytest.raises(FieldError, match="attribute scale_factor is 'ten', not a number"):
        read_field("b.h5", h5(broken), PROFILE.decoder, None, ANY_SIZE)


def test_damaged_netcdf_and_zarr_are_skipped_with_reasons(h5_files, tmp_path):
    """A missing time (NaT) skips that step only; a zarr chunk cut short skips its frame."""
    import xarray as xr

    files = h5_files[:3]
    times = np.array([_time(p).replace(tzinfo=None) for p in files], "M8[ns]")
    times[1] = np.datetime64("NaT")
    data = xr.Dataset(
        {"tb": (("time", "y", "x"), np.stack([_field(p) for p in files]))},
        coords={"time": times},
    )
    archive = tmp_path / "archive"
    archive.mkdir()
    data.to_netcdf(archive / "typhoon-198702.nc", engine="netcdf4")
    data.assign_coords(time=[_time(p).replace(tzinfo=None) for p in files]).to_zarr(
        archive / "typhoon-198703.zarr", consolidated=False
    )
    chunk = next(
        c
        for c in sorted((archive / "typhoon-198703.zarr" / "tb").rglob("*"))
        if c.is_file() and c.name[0].isdigit()
    )
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])
    classic = archive / "typhoon-198704.nc"  # NetCDF-3, cut short: read without an error
    data.to_netcdf(classic, format="NETCDF3_64BIT", engine="netcdf4")
    classic.write_bytes(classic.read_bytes()[: classic.stat().st_size * 2 // 3])
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    for kind, suffix in (("netcdf", "nc"), ("zarr", "zarr")):
        pattern = rf"^typhoon-(?P<event>\d{{6}})\.{suffix}$"
        (profiles / f"{kind}.json").write_text(json.dumps(_time_profile(kind, pattern)))
    report = ingest([archive], Workspace(tmp_path / "ws"), profile_dirs=[profiles], progress=False)
    reasons = {s["path"]: s["reason"] for s in report.skipped}
    assert reasons[f"{archive / 'typhoon-198702.nc'}#frame=1"].startswith("no time for this step")
    zarr_skips = [r for p, r in reasons.items() if "198703" in p]
    assert zarr_skips and all(r.startswith("cannot decode zarr") for r in zarr_skips)
    assert reasons[str(classic)].startswith("the file is cut short")
    assert report.frames_added == 2 + 3 - len(zarr_skips)


@pytest.mark.parametrize("fmt", ["NETCDF3_CLASSIC", "NETCDF3_64BIT_OFFSET", "NETCDF3_64BIT_DATA"])
@pytest.mark.parametrize("records", [0, 1, 4])
@pytest.mark.parametrize("layout", ["several record variables", "one of bytes"])
def test_a_classic_netcdf_file_is_whole_exactly_when_its_header_says_so(
    fmt, records, layout, tmp_path
):
    import netCDF4
    from skysearch.ingest.netcdf_classic import HeaderError, required_size

    path = tmp_path / "f.nc"
    with netCDF4.Dataset(path, "w", format=fmt) as nc:
        nc.title, nc.levels = "typhoon", np.arange(3, dtype="i2")
        nc.createDimension("time", None), nc.createDimension("y", 5), nc.createDimension("x", 3)
        nc.createVariable("lat", "f8", ("y",))[:] = np.arange(5)
        if layout == "one of bytes":  # records of 15 bytes, not padded to 4
            nc.createVariable("tb", "i1", ("time", "y", "x"))[:records] = 7
        else:
            nc.createVariable("time", "f8", ("time",))[:records] = np.arange(records)
            tb = nc.createVariable("tb", "f4", ("time", "y", "x"))
            tb.units = "K"
            tb[:records] = 250.0
            nc.createVariable("flag", "i1", ("time",))[:records] = 1
    whole = path.read_bytes()
    need = required_size(io.BytesIO(whole))  # the last record may lack its padding
    assert len(whole) - 4 < need <= len(whole)
    assert required_size(io.BytesIO(whole[:-4])) > len(whole) - 4  # the header is the same
    with pytest.raises(HeaderError, match="cut short"):
        required_size(io.BytesIO(whole[:40]))
    netCDF4.Dataset(tmp_path / "hdf5.nc", "w", format="NETCDF4").close()
    with open(tmp_path / "hdf5.nc", "rb") as fh:
        assert required_size(fh) is None  # not classic: the HDF5 library checks those


def test_a_damaged_classic_netcdf_header_is_a_reason_not_a_crash():
    """A header may claim any length: nothing is read or allocated by it (a name of 2**62
    bytes once asked Python for that much memory)."""
    import struct

    from skysearch.ingest.netcdf_classic import HeaderError, required_size

    cdf5 = b"CDF\x05" + struct.pack(">QIQQ", 0, 10, 1, 2**62)  # 1 dimension, its name's length
    cdf1 = b"CDF\x01" + struct.pack(">III", 0, 10, 2**31)  # 2**31 dimensions
    for header in (cdf5, cdf1):
        with pytest.raises(HeaderError):
            required_size(io.BytesIO(header))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kind": "grib"}, "decoder kind 'grib' is not one of image, hdf5, netcdf, zarr"),
        ({"bad_frames": "drop"}, "bad_frames 'drop' is not one of skip, keep, repair"),
        ({"range": [310, 170]}, "decoder range [310.0, 170.0] is empty"),
        ({"invert": "false"}, "invert must be true or false, got 'false'"),  # inverted all
        (
            {"valid": [150]},
            "valid must be [low, high] of two finite numbers, got [150]",
        ),  # was a traceback
        ({"valid": [340, 150]}, "valid [340.0, 150.0] is empty"),  # every pixel impossible
        ({"fill": 0}, "unknown decoder key 'fill'"),
        ("hdf5", "decoder must be an object of kind,"),  # was "unknown decoder key '5'"
    ],
)
def test_bad_decoder_in_a_profile_is_one_clear_error(change, message, tmp_path):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    data = json.loads(PROFILE_FILE.read_text())
    data["decoder"] = data["decoder"] | change if isinstance(change, dict) else change
    (profiles / "digital-typhoon.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match="is invalid") as caught:
        load_profiles([profiles])
    assert message in str(caught.value)


def test_frames_as_an_xarray_dataarray_with_a_time_coordinate(typhoon, h5_files):
    from skysearch.ingest.arrays import frames_dataarray

    start, end = _time(h5_files[2]), _time(h5_files[9])
    array = frames_dataarray(typhoon, "gms3", "ir", start, end, event="198702")
    times = [_time(p) for p in h5_files[2:10]]
    assert array.dims == ("time", "y", "x") and array.shape == (8, 256, 256)
    assert list(array["time"].values) == [np.datetime64(t.replace(tzinfo=None)) for t in times]
    assert array.attrs["satellite"] == "gms3" and set(array["event"].values) == {"198702"}
    store = FrameStore(typhoon)
    assert np.array_equal(array.isel(time=3).values, store.read(str(array["frame_id"].values[3])))
    one = array.sel(time=times[5].replace(tzinfo=None))
    assert one["quality"] == pytest.approx(float(_impossible(_field(h5_files[7])).mean()), abs=1e-6)
    # one series per array: a channel list or no satellite would mix series on one time axis
    with pytest.raises(UsageError, match=r"channel is one name \(a string\), got \['ir'\]"):
        frames_dataarray(typhoon, "gms3", ["ir"])
    with pytest.raises(UsageError, match="satellite is one name"):
        frames_dataarray(typhoon, None, "ir")
    with pytest.raises(UsageError, match="event is one name"):
        frames_dataarray(typhoon, "gms3", "ir", event=198702)  # was an Arrow kernel error
    with pytest.raises(NotFoundError, match="the catalog holds: gms3: ir"):
        frames_dataarray(typhoon, "gms3", "wv")


def test_stac_export_is_valid_and_names_every_frame(typhoon, tmp_path, cli):
    import pystac

    out = tmp_path / "stac"
    result = cli("catalog", "export", "--stac", out, "-w", typhoon.root, "--json")
    assert result.exit_code == 0, result.stderr
    frames = read_frames(typhoon).to_pylist()
    assert json.loads(result.stdout) == {"folder": str(out), "collections": {"gms3": len(frames)}}
    catalog = pystac.Catalog.from_file(str(out / "catalog.json"))
    assert catalog.validate_all() == len(frames)  # STAC 1.1 schemas, shipped with pystac
    items = {item.id: item for item in catalog.get_items(recursive=True)}
    for frame in frames:
        item = items[frame["frame_id"]]
        assert item.datetime == frame["time"] and item.properties["platform"] == "gms3"
        assert item.properties["skysearch:event"] == frame["event"]
        asset = item.assets["source"]
        assert asset.href == Path(frame["source_path"]).as_uri()
        assert (asset.media_type, asset.extra_fields["bands"]) == (
            "application/x-hdf5",
            [{"name": "ir"}],
        )
    again = cli("catalog", "export", "--stac", out, "-w", typhoon.root)
    assert again.exit_code == 2 and "exists and is not an empty folder" in again.stderr
    nowhere = cli("catalog", "export", "--stac", "/proc/skysearch-stac", "-w", typhoon.root)
    assert nowhere.exit_code == 2 and "cannot write --stac /proc/skysearch-stac" in nowhere.stderr
    assert "Traceback" not in nowhere.stderr


def test_workspace_repair_repairs_again_a_repaired_frame_it_decodes_from_its_source(
    h5_files, tmp_path, cli
):
    """A damaged frame-store row of a repaired frame comes back from its source with its
    masked rows: the workspace repair fills them again, to the same pixels as before."""
    from skysearch.ingest.framestore import DATA_FILE, store_path

    workspace = Workspace(tmp_path / "ws")
    ingest(h5_files[:8], workspace, progress=False)
    store = FrameStore(workspace)
    before = {f["frame_id"]: store.read(f["frame_id"]) for f in read_frames(workspace).to_pylist()}
    victim = next(f for f in read_frames(workspace).to_pylist() if f["status"] == "repaired")
    data = store_path(workspace, "gms3", "ir", 1987) / DATA_FILE
    with open(data, "r+b") as handle:  # flip bytes in the victim's row
        handle.seek(victim["store_row"] * 256 * 256 + 1000)
        handle.write(b"\xff" * 64)
    result = cli("repair", "-w", workspace.root, "--json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["remaining"] == [] and report["lost_frames"] == []
    frames = {f["frame_id"]: f for f in read_frames(workspace).to_pylist()}
    assert frames[victim["frame_id"]]["status"] == "repaired"
    store = FrameStore(workspace)
    for frame_id, pixels in before.items():
        assert np.array_equal(store.read(frame_id), pixels), frames[frame_id]["status"]


@pytest.mark.parametrize("damage", ["latin-1", "dangling link"])
def test_an_unreadable_profile_file_is_one_clear_error(damage, tmp_path):
    folder = tmp_path / "profiles"
    folder.mkdir()
    target = folder / "mine.json"
    if damage == "latin-1":
        target.write_bytes('{"name": "caf\xe9"}'.encode("latin-1"))
    else:
        target.symlink_to(tmp_path / "gone.json")
    with pytest.raises(UsageError, match=f"cannot read source profile {target}"):
        load_profiles([folder])


def test_an_empty_hdf5_file_and_a_path_given_twice(h5_files, tmp_path):
    """An empty HDF5 file says so; a file named twice (a path repeated, or a folder and a file
    in it) is read once, not counted as its own duplicate."""
    folder = _copy(h5_files[:2], tmp_path / "in")
    empty = folder / h5_files[2].name
    empty.write_bytes(b"")
    report = ingest([folder, folder, folder / h5_files[0].name], Workspace(tmp_path / "ws"))
    assert (report.frames_added, report.identical_duplicates) == (2, 0)
    assert report.skipped == [{"path": str(empty), "reason": "empty file"}]


def test_similarity_by_time_picks_between_two_storms_by_event(h5_files, tmp_path, cli):
    """Two storms at the same hours: the error described both clips alike and suggested
    options that could not tell them apart."""
    ws = tmp_path / "ws"
    for event in ("198702", "198703"):
        folder = _copy(h5_files[:4], tmp_path / event, event)
        assert cli("ingest", folder, "-w", ws).exit_code == 0
    assert cli("clips", "--length", "3", "--gap", "60", "-w", ws).exit_code == 0
    start, later = _time(h5_files[0]), _time(h5_files[1])
    times = [f"{t:%Y-%m-%dT%H:%MZ}" for t in (start, later)]
    both = cli("similarity", *times, "-w", ws)
    assert both.exit_code == 2 and "gms3 ir 3x60m event 198702; gms3 ir 3x60m event 198703" in (
        both.stderr
    )
    assert "--event" in both.stderr
    one = cli("similarity", *times, "--event", "198703", "-w", ws, "--json")
    assert one.exit_code == 0, one.stderr
    assert 0 < json.loads(one.stdout.strip().splitlines()[-1])["similarity"] < 1
    from skysearch.ingest.arrays import frames_dataarray

    with pytest.raises(UsageError, match=r"several events share times \(198702, 198703\)"):
        frames_dataarray(Workspace(ws), "gms3", "ir")  # one time axis for two storms
    assert frames_dataarray(Workspace(ws), "gms3", "ir", event="198703").shape[0] == 4
