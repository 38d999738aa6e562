"""NetCDF and zarr layouts real deliveries have (probe 52), on real frames: Digital Typhoon's
198702 infrared fields written by xarray, netCDF4 and zarr-python. Values a file never wrote
are no data; time coordinates are read step by step, with a reason for what cannot be; an
empty PATH is refused; a file rewritten with its steps reordered keeps its frames."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import shared_data
from skysearch.ingest.catalog import read_frames
from skysearch.ingest.decode import Source, preprocess
from skysearch.ingest.pipeline import ingest
from skysearch.ingest.profiles import Decoder, load_profiles
from skysearch.ingest.readers import read_field

from skysearch.config import Workspace
from skysearch.errors import UsageError

STEPS = 4
START = datetime(1987, 4, 10, tzinfo=timezone.utc)
UNITS = "hours since 1987-04-10 00:00:00"
ANY_SIZE = lambda width, height: None  # noqa: E731  read_field refusing no size


@pytest.fixture(scope="module")
def fields() -> np.ndarray:
    """Clean fields (every value a possible brightness temperature), (STEPS, 512, 512) K."""
    found = []
    for path in sorted(shared_data("digital-typhoon", "image", "198702").glob("*.h5")):
        with h5py.File(path) as handle:
            values = handle["infrared"][()].astype(np.float32)
        if values.min() > 150 and values.max() < 340:
            found.append(values)
        if len(found) == STEPS:
            return np.stack(found)
    pytest.skip("too few clean Digital Typhoon frames")


def _profiles(tmp_path: Path, kind: str = "netcdf", **decoder: object) -> Path:
    """A user profile for ``storm-*.nc`` (or ``.zarr``) files of many frames, without ``valid``
    unless given: values a file never wrote must be no data all the same."""
    suffix = "zarr" if kind == "zarr" else "nc"
    folder = tmp_path / "profiles"
    folder.mkdir(exist_ok=True)
    profile = {
        "name": f"storm-{kind}",
        "satellite": "gms3",
        "pattern": rf"^storm-.*\.{suffix}$",
        "channel": "ir",
        "crops": [{"width": 512, "height": 512, "box": ["0", "0", "W", "H"]}],
        "resolution": [128, 128],
        "cadence_minutes": 60,
        "decoder": {"kind": kind, "variable": "tb", "time": "time", "range": [170, 310]}
        | {"invert": True}
        | decoder,
    }
    (folder / f"storm-{kind}.json").write_text(json.dumps(profile))
    return folder


def _netcdf(path: Path, fields: np.ndarray, hours, time_dim: str = "time", **kw) -> Path:
    """``fields`` as ``tb(time_dim, y, x)`` with a CF ``time`` coordinate of ``hours``."""
    import xarray as xr

    attrs = {"units": UNITS} | kw.pop("time_attrs", {})
    data = xr.Dataset(
        {"tb": ((time_dim, "y", "x"), fields)},
        coords={"time": (time_dim, np.asarray(hours, dtype=np.float64), attrs)},
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    data.to_netcdf(path, engine="netcdf4", **kw)
    return path


def _ingest(tmp_path: Path, folder: Path, kind: str = "netcdf", **decoder: object):
    profiles = _profiles(tmp_path, kind, **decoder)
    workspace = Workspace(tmp_path / "ws")
    report = ingest([folder], workspace, profile_dirs=[profiles], progress=False, workers=1)
    return report, workspace


def test_a_lost_zarr_chunk_is_no_data_when_the_fill_value_is_a_number(fields, tmp_path):
    """zarr-python's default fill_value of a float array is 0.0: a chunk not stored read as
    0 K, clipped to the range and stored as a quarter of solid white, status ok."""
    import zarr

    store = tmp_path / "in" / "storm-zero.zarr"
    group = zarr.open_group(store, mode="w")
    tb = group.create_array(
        "tb",
        shape=fields.shape,
        chunks=(1, 256, 256),
        dtype="f4",
        dimension_names=["time", "y", "x"],
    )
    tb[:] = fields
    time = group.create_array("time", shape=(STEPS,), dtype="i8", dimension_names=["time"])
    time[:] = np.arange(STEPS)
    time.attrs["units"] = UNITS
    assert tb.fill_value == 0.0
    (store / "tb" / "c" / "1" / "0" / "0").unlink()  # the top-left quarter of step 1

    report, workspace = _ingest(tmp_path, store.parent, "zarr")
    frames = {f["source_path"]: f for f in read_frames(workspace).to_pylist()}
    lost = frames[f"{store}#frame=1"]
    assert (lost["status"], lost["quality"]) == ("repaired", 0.25)
    assert report.frames_added == STEPS and report.repaired == 1
    # inside the range, the fill value may be a measurement (a reflectance of 0): kept
    decoder = Decoder(kind="zarr", variable="tb", time="time", range=(0.0, 310.0))
    kept = read_field(str(store), None, decoder, 1, ANY_SIZE).values
    assert (kept[:256, :256] == 0).all() and np.isfinite(kept).all()


def test_a_netcdf_record_never_written_is_no_data(fields, tmp_path):
    """Without a _FillValue, the netCDF library's default fill (9.97e36) of a record never
    written was a black frame, status ok."""
    import netCDF4

    path = tmp_path / "in" / "storm-short.nc"
    path.parent.mkdir()
    with netCDF4.Dataset(path, "w") as handle:
        handle.createDimension("time", None)
        handle.createDimension("y", 512)
        handle.createDimension("x", 512)
        time = handle.createVariable("time", "f8", ("time",))
        time.units = UNITS
        time[:] = np.arange(3.0)
        handle.createVariable("tb", "f4", ("time", "y", "x"))[:2] = fields[:2]
    report, _ = _ingest(tmp_path, path.parent)
    assert report.frames_added == 2
    assert [s["path"] for s in report.skipped] == [f"{path}#frame=2"]
    assert report.skipped[0]["reason"].startswith("100.0% of the pixels")


@pytest.mark.parametrize("given", ["", "   "])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(given, tmp_path, monkeypatch, cli):
    """An unset ``"$ARCHIVE"`` ingested the whole current folder."""
    from skysearch.workflows.update import run_update

    from skysearch.config import load_settings

    monkeypatch.chdir(tmp_path)
    workspace = Workspace(tmp_path / "ws")
    with pytest.raises(UsageError, match="empty PATH"):
        ingest([given], workspace, progress=False)
    with pytest.raises(UsageError, match="empty PATH"):
        run_update(load_settings(workspace=workspace.root), [given], progress=False)
    assert not workspace.root.exists()
    for args in (["ingest", given], ["update", given], ["ingest", tmp_path, "--profiles", given]):
        result = cli(*args, "-w", workspace.root)  # typer made "" the Path "."
        assert result.exit_code == 2 and "Traceback" not in result.stderr
        assert "an empty name" in result.stderr, result.stderr
    assert not workspace.root.exists()


def test_a_file_without_time_steps_is_skipped_and_counted(fields, tmp_path):
    path = _netcdf(tmp_path / "in" / "storm-empty.nc", fields[:0], [])
    report, _ = _ingest(tmp_path, path.parent)
    assert report.skipped == [
        {"path": str(path), "reason": "holds no time steps (its 'time' dimension is empty)"}
    ]
    assert report.files_seen == 1


def test_a_step_without_a_time_counts_its_file_once(fields, tmp_path):
    path = _netcdf(tmp_path / "in" / "storm-nat.nc", fields, [0, 1, np.nan, 3])
    report, _ = _ingest(tmp_path, path.parent)
    assert report.frames_added == STEPS - 1
    assert [s["path"] for s in report.skipped] == [f"{path}#frame=2"]
    assert report.files_seen == 1


def test_one_impossible_time_skips_its_step_with_our_own_reason(fields, tmp_path):
    """xarray refuses the whole coordinate for one value beyond its dates, with advice for
    Python users ("decode_times=False", "cftime")."""
    path = _netcdf(tmp_path / "in" / "storm-huge.nc", fields[:2], [0, 1e12])
    report, workspace = _ingest(tmp_path, path.parent)
    assert [f["time"] for f in read_frames(workspace).to_pylist()] == [START]
    ((skip),) = report.skipped
    assert skip["path"] == f"{path}#frame=1"
    assert "no date of years 1-9999" in skip["reason"]
    assert "decode_times" not in skip["reason"] and "cftime" not in skip["reason"]


@pytest.mark.parametrize("calendar", ["noleap", "360_day"])
def test_a_model_calendar_is_named_as_not_supported(calendar, fields, tmp_path):
    path = _netcdf(
        tmp_path / "in" / "storm-cal.nc", fields, range(STEPS), time_attrs={"calendar": calendar}
    )
    report, _ = _ingest(tmp_path, path.parent)
    ((skip),) = report.skipped
    assert f"calendar {calendar!r}, which is not supported" in skip["reason"]


def test_a_time_coordinate_along_a_dimension_of_another_name_is_read(fields, tmp_path):
    """``tb(t, y, x)`` with ``time(t)``: 'has no time dimension' before, no way to read it."""
    path = _netcdf(tmp_path / "in" / "storm-t.nc", fields, [3, 2, 1, 0], time_dim="t")
    report, workspace = _ingest(tmp_path, path.parent)
    assert (report.frames_added, report.skipped) == (STEPS, [])
    frames = read_frames(workspace).to_pylist()
    hours = {f["source_path"]: (f["time"] - START) // timedelta(hours=1) for f in frames}
    assert hours == {f"{path}#frame={step}": 3 - step for step in range(STEPS)}


def test_a_variable_in_a_group_names_the_groups(fields, tmp_path):
    path = _netcdf(tmp_path / "in" / "storm-group.nc", fields, range(STEPS), group="data")
    report, _ = _ingest(tmp_path, path.parent)
    ((skip),) = report.skipped
    assert skip["reason"].startswith("no variable 'tb' (variables: none)")
    assert "groups (data)" in skip["reason"]


def test_a_time_dimension_without_a_coordinate_is_skipped_with_a_reason(fields, tmp_path):
    """``tb(time, y, x)`` and no ``time`` variable: a KeyError stopped the whole run."""
    import xarray as xr

    path = tmp_path / "in" / "storm-untimed.nc"
    path.parent.mkdir(parents=True)
    xr.Dataset({"tb": (("time", "y", "x"), fields)}).to_netcdf(path, engine="netcdf4")
    _netcdf(tmp_path / "in" / "storm-timed.nc", fields, range(STEPS))
    report, _ = _ingest(tmp_path, path.parent)
    assert report.frames_added == STEPS
    ((skip),) = report.skipped
    assert skip["reason"].endswith("has no 'time' coordinate holding its times"), skip


def test_a_file_rewritten_with_its_steps_reordered_keeps_its_frames(fields, tmp_path):
    """The steps moved within one file: not '4 identical copies of other files', and each
    catalog row names the step that holds its frame now (repair decodes it from there)."""
    folder = tmp_path / "in"
    path = _netcdf(folder / "storm-ro.nc", fields[[3, 0, 1, 2]], [3, 0, 1, 2])
    first, workspace = _ingest(tmp_path, folder)
    assert first.frames_added == STEPS
    sorted_file = _netcdf(tmp_path / "sorted" / "storm-ro.nc", fields, range(STEPS))
    shutil.copyfile(sorted_file, path)  # rewritten in place
    again, _ = _ingest(tmp_path, folder)
    assert (again.frames_added, again.moved, again.identical_duplicates) == (0, STEPS, 0)
    assert "4 moved to another step of their file" in again.summary_line()
    profile = load_profiles([_profiles(tmp_path)])["storm-netcdf"]
    for row in read_frames(workspace).to_pylist():
        hour = (row["time"] - START) // timedelta(hours=1)
        assert row["source_path"] == f"{path}#frame={hour}"
        assert preprocess(Source.parse(row["source_path"]), profile).checksum == row["checksum"]
    third, _ = _ingest(tmp_path, folder)
    assert (third.unchanged, third.moved) == (STEPS, 0)


def test_a_time_twice_in_one_file_with_the_same_content_is_still_a_copy(fields, tmp_path):
    """Not a move: the step that holds the frame is still there."""
    path = _netcdf(tmp_path / "in" / "storm-dup.nc", fields[[0, 1, 1, 2]], [0, 1, 1, 2])
    report, workspace = _ingest(tmp_path, path.parent)
    assert (report.frames_added, report.identical_duplicates, report.moved) == (3, 1, 0)
    paths = sorted(read_frames(workspace)["source_path"].to_pylist())
    assert paths == [f"{path}#frame={step}" for step in (0, 1, 3)]


def test_a_query_frame_file_of_many_frames_is_picked_by_its_step(fields, tmp_path):
    """``search frame --file x.nc`` said "not one 2-D frame", with no way to pick a step;
    ``x.nc#frame=N`` (the form a catalog's source_path has) picks one."""
    from skysearch.ingest.framestore import FrameStore
    from skysearch.retrieval.search.frame_queries import FrameQuery, resolve_frame
    from skysearch.retrieval.search.queries import QueryResolver

    path = _netcdf(tmp_path / "in" / "storm-q.nc", fields, range(STEPS))
    _, workspace = _ingest(tmp_path, path.parent)
    resolver = QueryResolver(workspace)

    def resolve(file: str):
        return resolve_frame(resolver, FrameQuery(file=file), {"satellite": "gms3"}, "ir")

    row = next(r for r in read_frames(workspace).to_pylist() if r["source_path"].endswith("=2"))
    frame = resolve(row["source_path"])
    assert np.array_equal(frame.pixels, FrameStore(workspace).read(row["frame_id"]))
    assert frame.time == START + timedelta(hours=2)
    for given in (str(path), f"{path}#frame={STEPS}"):
        with pytest.raises(UsageError, match=f"holds {STEPS} frames: pick one as .*#frame=N"):
            resolve(given)

    from skysearch.cli.search import _check_exist  # the CLI's check before torch loads

    _check_exist([Path(row["source_path"])], "--file", steps=True)
    with pytest.raises(UsageError, match="no such file"):
        _check_exist([tmp_path / "gone.nc#frame=2"], "--file", steps=True)
    with pytest.raises(UsageError, match="in search frame --file only"):  # --frames: files
        _check_exist([Path(row["source_path"])], "--frames")
    with pytest.raises(UsageError, match="no such file"):  # a digit int() does not read
        _check_exist([Path(f"{path}#frame=\u00b2")], "--file", steps=True)
