"""Scientific formats (HDF5, NetCDF, zarr): a physical field -> a grey working frame.

The profile's ``decoder`` (``skysearch.ingest.profiles.Decoder``) says which variable to read,
which physical ``range`` maps to grey 1..255 (``invert``: the low end bright) and which values
are physically possible (``valid``). Grey 0 is reserved for "no data": NaN, fill values and
impossible values. Impossible values come in bands of rows (Digital Typhoon's GMS frames carry
calibration strips of -19 K and 336 K), so a row holding any is masked whole; the fraction of
pixels that were not valid is the frame's ``quality`` in the catalog.

Readers are the ecosystem's: h5py for HDF5, xarray (netCDF4 / zarr engines) for NetCDF and
zarr. A NetCDF or zarr file may hold many frames along its ``time`` coordinate; each is its
own source (``Source.index``) with the time the file gives it. Times are decoded here, step by
step where needed (xarray's decoder refuses a whole coordinate for one impossible value).
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np
from PIL import Image
from skysearch.ingest.netcdf_classic import HeaderError, required_size
from skysearch.ingest.profiles import Decoder, Profile

NODATA = 0  # grey value of pixels without a valid measurement
BAND_GAP = 0.125  # rows between two bad rows closer than this share of the height are masked
#: calendars whose dates are real (UTC) times; others (noleap, 360_day...) are model calendars
REAL_CALENDARS = frozenset({"standard", "gregorian", "proleptic_gregorian"})

#: a process's last opened NetCDF/zarr dataset, by path and :func:`file_signature`
_open: tuple[tuple[str, tuple], Any] | None = None


class FieldError(ValueError):
    """A file that cannot give the profile's field (missing variable, wrong shape...)."""


@dataclass(frozen=True)
class Field:
    """One frame's physical values (float64, (H, W)) and their checksum."""

    values: np.ndarray
    checksum: str


def file_signature(path: str) -> tuple:
    """What says a file or zarr store is still the one opened: a file's inode, size and
    modification time; a store's, and those of its metadata files (a store that grew has a
    new shape there; chunks are read afresh on each access)."""
    try:
        st = os.stat(path)
        if not os.path.isdir(path):
            return (st.st_ino, st.st_size, st.st_mtime_ns)
        found = [(path, st.st_ino, st.st_mtime_ns, 0)]
        with os.scandir(path) as entries:
            for entry in entries:
                names = [""] if entry.is_file() else [".zarray", ".zattrs", "zarr.json"]
                for name in names:
                    meta = os.path.join(entry.path, name) if name else entry.path
                    if os.path.isfile(meta):
                        m = os.stat(meta)
                        found.append((meta, m.st_ino, m.st_mtime_ns, m.st_size))
        return tuple(sorted(found))
    except OSError:
        return ()  # gone: the open below says why


def _dataset(path: str, kind: str) -> Any:
    """The xarray dataset of a NetCDF file or zarr store, kept open between calls while it is
    the same file (a process that ingests again after it was replaced or grew opens it again)."""
    global _open
    key = (path, file_signature(path))
    if _open is not None and _open[0] == key:
        return _open[1]
    import xarray as xr

    if _open is not None:
        _open[1].close()
        _open = None
    if kind == "netcdf":
        _check_complete(path)
    raw = {"decode_times": False, "decode_timedelta": False}  # times: ``frame_times``
    try:
        with warnings.catch_warnings():  # zarr stores with or without consolidated metadata
            warnings.simplefilter("ignore", RuntimeWarning)
            if kind == "zarr":
                data = xr.open_zarr(path, **raw)
            else:
                data = xr.open_dataset(path, engine="netcdf4", **raw)
    except Exception as exc:  # noqa: BLE001 - each engine raises its own kinds on bad files
        raise FieldError(f"cannot open as {kind}: {exc}") from None
    _open = (key, data)
    return data


def _check_complete(path: str) -> None:
    """A classic NetCDF file shorter than its header says is refused (the netCDF library
    would read the missing records as values never written); NetCDF-4 (HDF5) files fail to
    open when cut short."""
    try:
        with open(path, "rb") as fh:
            need = required_size(fh)
        have = os.path.getsize(path)
    except HeaderError as exc:
        raise FieldError(f"cannot open as netcdf: {exc}") from None
    except OSError:
        return  # the open after this says why
    if need is not None and have < need:
        raise FieldError(
            f"the file is cut short: {have} bytes, its header declares {need} (an interrupted "
            "copy or download?)"
        )


def _variable(data: Any, decoder: Decoder, path: str) -> Any:
    if decoder.variable not in data.variables:
        have = ", ".join(sorted(map(str, data.data_vars))) or "none"
        groups = _groups(path, decoder.kind)
        inside = (
            f"; the file keeps variables in groups ({', '.join(groups)}), which a profile "
            "cannot name: only the root group is read"
            if groups
            else ""
        )
        raise FieldError(f"no variable {decoder.variable!r} (variables: {have}){inside}")
    return data[decoder.variable]


def _groups(path: str, kind: str) -> list[str]:
    """The groups at the root of a NetCDF-4 file or zarr store (none where it cannot say)."""
    try:
        if kind == "zarr":
            import zarr

            return sorted(zarr.open_group(path, mode="r").group_keys())
        import netCDF4

        with netCDF4.Dataset(path) as handle:
            return sorted(handle.groups)
    except Exception:  # noqa: BLE001 - only a hint for a reason already given
        return []


def _step_dim(data: Any, var: Any, decoder: Decoder) -> str | None:
    """The dimension of ``var`` its frames lie along: the decoder's ``time``, or the one
    dimension of a 1-D coordinate of that name (``time(t)`` along ``tb(t, y, x)``); None for
    one frame timed by a scalar coordinate."""
    name, dims = decoder.time, ", ".join(map(str, var.dims))
    if name in var.dims:
        return name
    coord = data.variables.get(name)
    if coord is None:
        raise FieldError(
            f"variable {decoder.variable!r} ({dims}) has no {name!r} dimension or coordinate"
        )
    if coord.ndim == 0:
        return None
    if coord.ndim == 1 and coord.dims[0] in var.dims:
        return str(coord.dims[0])
    raise FieldError(
        f"coordinate {name!r} lies along ({', '.join(map(str, coord.dims))}), not along a "
        f"dimension of variable {decoder.variable!r} ({dims})"
    )


def frame_times(path: str, decoder: Decoder) -> list[datetime | str]:
    """The UTC times of the frames a NetCDF/zarr file holds (its ``time`` coordinate), one
    per step; a step whose time cannot be used (missing, or no date of years 1-9999) has the
    reason instead. A file with no step, or whose times cannot be read, is a ``FieldError``."""
    data = _dataset(path, decoder.kind)
    var = _variable(data, decoder, path)
    name = decoder.time
    one = _step_dim(data, var, decoder) is None  # a scalar time: the file is one frame
    if name not in data.variables:  # a dimension without a coordinate: steps, no times
        raise FieldError(
            f"variable {decoder.variable!r} lies along a {name!r} dimension, but the file has no "
            f"{name!r} coordinate holding its times"
        )
    coord = data.variables[name].to_base_variable()
    steps = coord.set_dims({"step": 1}) if one else coord
    if steps.size == 0:
        raise FieldError(f"holds no time steps (its {name!r} dimension is empty)")
    calendar = str(coord.attrs.get("calendar", "standard")).lower()
    if calendar not in REAL_CALENDARS:
        raise FieldError(
            f"coordinate {name!r} has calendar {calendar!r}, which is not supported: frames "
            f"need real dates ({', '.join(sorted(REAL_CALENDARS))})"
        )
    units = coord.attrs.get("units")
    try:
        stamps = _decoded(steps, name)
    except FieldError:
        raise
    except ValueError:  # xarray refuses all for one impossible value: each step on its own
        stamps = _each_step(steps, name)
    return [
        at.replace(tzinfo=timezone.utc)
        if isinstance(at, datetime)
        else f"no time for this step ({name!r} is missing there)"
        if at is None
        else f"its time {value!r} ({units}) is no date of years 1-9999"
        for at, value in zip(stamps, steps.values.tolist(), strict=True)
    ]


def _each_step(steps: Any, name: str) -> list[Any]:
    """``_decoded`` one step at a time, -1 (as beyond years 1-9999) where a step cannot be
    decoded; a ``FieldError`` when none can."""
    found: list[Any] = []
    for index in range(steps.size):
        try:
            found += _decoded(steps[index : index + 1], name)
        except ValueError:
            found.append(-1)
    if not any(isinstance(at, datetime) for at in found):
        units = steps.attrs.get("units")
        raise FieldError(f"coordinate {name!r} cannot be read as times (units {units!r})")
    return found


def _decoded(steps: Any, name: str) -> list[Any]:
    """1-D time values decoded as CF says (``units`` "hours since ..."): each a datetime
    (naive UTC), None (missing) or an int (beyond years 1-9999). A ``ValueError`` (xarray's:
    its advice is for Python users) when one cannot be decoded; a ``FieldError`` when the
    values are not times."""
    from xarray.coders import CFDatetimeCoder

    values = CFDatetimeCoder(use_cftime=False, time_unit="us").decode(steps, name).values
    if not np.issubdtype(values.dtype, np.datetime64):
        raise FieldError(
            f"coordinate {name!r} does not hold times: CF times are numbers with units such "
            "as 'hours since 1970-01-01'"
        )
    return values.astype("datetime64[us]").astype(object).tolist()


def read_field(
    path: str,
    raw: bytes | None,
    decoder: Decoder,
    index: int | None,
    refuse: Callable[[int, int], str | None],
) -> Field:
    """The field of one frame: the whole 2-D variable of an HDF5 file (``raw``: its bytes),
    or step ``index`` along the time dimension of a NetCDF/zarr file. Its shape is checked
    from the file's header before any value is read: not one 2-D frame, or a size ``refuse``
    (width, height) names a reason for, is a ``FieldError`` (a chunked dataset of a few KB can
    declare gigabytes of fill values). What a NetCDF/zarr file never wrote is NaN
    (``_own_fill``), unless that value lies inside the decoder's ``range``."""
    if decoder.kind == "hdf5":
        import h5py

        try:
            with h5py.File(io.BytesIO(raw or b""), "r") as handle:
                if decoder.variable not in handle:
                    have = ", ".join(sorted(handle)) or "none"
                    raise FieldError(f"no dataset {decoder.variable!r} (datasets: {have})")
                dataset = handle[decoder.variable]
                if not isinstance(dataset, h5py.Dataset):
                    raise FieldError(f"{decoder.variable!r} is a group, not a dataset")
                _check_numeric(dataset.dtype, decoder)
                _check_shape(dataset.shape or (), decoder, refuse)  # None: an empty dataspace
                values = _cf_decoded(dataset[()], dataset.attrs)
        except OSError as exc:
            raise FieldError(f"not a readable HDF5 file: {exc}") from None
        checksum = hashlib.sha256(raw or b"").hexdigest()
    else:
        data = _dataset(path, decoder.kind)
        var = _variable(data, decoder, path)
        _check_numeric(var.dtype, decoder)
        dim = _step_dim(data, var, decoder) if index is not None else None
        if dim is not None:
            var = var.isel({dim: index})
        _check_shape(var.shape, decoder, refuse)
        values = np.asarray(var.values, dtype=np.float64)
        checksum = hashlib.sha256(np.ascontiguousarray(values).tobytes()).hexdigest()
        fill = _own_fill(var, decoder.kind)  # after the checksum: a property of the file
        low, high = decoder.range
        if fill is not None and not low <= fill <= high:  # inside: maybe a measurement
            values[values == fill] = np.nan
    return Field(np.squeeze(values), checksum)


def _own_fill(var: Any, kind: str) -> float | None:
    """What a variable reads where nothing was written, when it declares no ``_FillValue`` or
    ``missing_value`` (xarray masks those): a zarr array's ``fill_value`` (a chunk not
    stored; xarray masks it for zarr v2 only), the netCDF library's default fill of the
    stored type (a record never written; none for 1-byte types, as netCDF4-python). Decoded
    as xarray decodes the values (``scale_factor``, ``add_offset``)."""
    encoding = var.encoding
    if "_FillValue" in encoding or "missing_value" in encoding:
        return None
    stored = np.dtype(encoding.get("dtype", var.dtype))
    if kind == "zarr":
        raw = encoding.get("fill_value")
    else:
        from netCDF4 import default_fillvals

        raw = default_fillvals.get(stored.str[1:]) if stored.itemsize > 1 else None
    if raw is None or not np.isfinite(raw):
        return None  # none, or NaN: NaN is no data already
    fill = np.array([raw]).astype(var.dtype)  # the steps of xarray's CF decoding
    if "scale_factor" in encoding:
        fill *= encoding["scale_factor"]
    if "add_offset" in encoding:
        fill += encoding["add_offset"]
    return float(fill[0])


def _check_shape(
    shape: tuple[int, ...], decoder: Decoder, refuse: Callable[[int, int], str | None]
) -> None:
    plane = [n for n in shape if n != 1]
    if len(plane) != 2:
        raise FieldError(f"{decoder.variable!r} has shape {tuple(shape)}, not one 2-D frame")
    height, width = plane
    why = refuse(width, height)
    if why:
        raise FieldError(why)


def _cf_decoded(packed: np.ndarray, attrs: Any) -> np.ndarray:
    """Values of an HDF5 dataset as the CF conventions declare them (as xarray decodes NetCDF
    and zarr variables): ``_FillValue`` / ``missing_value`` become NaN, then
    ``scale_factor`` and ``add_offset`` unpack the stored counts."""
    values = np.asarray(packed, dtype=np.float64)
    fills = [_numbers(attrs, name) for name in ("_FillValue", "missing_value") if name in attrs]
    if fills:
        values[np.isin(packed, np.concatenate(fills))] = np.nan
    if "scale_factor" in attrs:
        values *= _numbers(attrs, "scale_factor")[0]
    if "add_offset" in attrs:
        values += _numbers(attrs, "add_offset")[0]
    return values


def _numbers(attrs: Any, name: str) -> np.ndarray:
    try:
        found = np.asarray(attrs[name], dtype=np.float64).ravel()
    except (TypeError, ValueError):
        found = np.empty(0)
    if found.size == 0:
        raise FieldError(f"attribute {name} is {attrs[name]!r}, not a number")
    return found


def _check_numeric(dtype: np.dtype, decoder: Decoder) -> None:
    if not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise FieldError(f"{decoder.variable!r} holds {dtype}, not numbers")


def bad_pixels(values: np.ndarray, decoder: Decoder) -> np.ndarray:
    """Pixels without a valid measurement: NaN/inf, or outside the physically possible range."""
    bad = ~np.isfinite(values)
    if decoder.valid is not None:
        low, high = decoder.valid
        with np.errstate(invalid="ignore"):
            bad |= (values < low) | (values > high)
    return bad


def bad_rows(bad: np.ndarray) -> np.ndarray:
    """Rows to mask whole: those holding any bad pixel, and the rows between two such rows
    at most ``BAND_GAP`` of the frame's height apart (a defect band's plausible-looking parts,
    e.g. the grey step wedge inside GMS calibration strips)."""
    rows = bad.any(axis=1)
    hit = np.flatnonzero(rows)
    gap = max(1, int(BAND_GAP * bad.shape[0]))
    for lo, hi in zip(hit[:-1], hit[1:], strict=True):
        if 1 < hi - lo <= gap:
            rows[lo:hi] = True
    return rows


def to_grey(values: np.ndarray, decoder: Decoder) -> tuple[np.ndarray, float]:
    """Physical values -> grey uint8 (valid pixels 1..255, ``NODATA`` where masked) and the
    fraction of pixels that were not valid. Rows holding any impossible value are masked whole
    (the defects are bands of rows)."""
    bad = bad_pixels(values, decoder)
    fraction = float(bad.mean()) if bad.size else 0.0
    masked = bad | bad_rows(bad)[:, None] if fraction else bad
    low, high = decoder.range
    with np.errstate(invalid="ignore"):
        unit = np.clip((values - low) / (high - low), 0.0, 1.0)
    if decoder.invert:
        unit = 1.0 - unit
    grey = (1.0 + np.rint(np.nan_to_num(unit) * 254.0)).astype(np.uint8)
    grey[masked] = NODATA
    return grey, fraction


def resize_masked(grey: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Area-average to ``size`` (width, height) over valid pixels only: a target pixel is the
    mean of the valid source pixels it covers, ``NODATA`` when it covers none."""
    height, width = grey.shape
    if (width, height) == size:
        return grey
    valid = (grey != NODATA).astype(np.float32)
    total = np.asarray(
        Image.fromarray(grey.astype(np.float32) * valid).resize(size, Image.Resampling.BOX)
    )
    count = np.asarray(Image.fromarray(valid).resize(size, Image.Resampling.BOX))
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(count > 0, total / np.maximum(count, 1e-12), 0.0)
    out = np.clip(np.rint(mean), 0, 255).astype(np.uint8)
    out[(count > 0) & (out == NODATA)] = 1  # a valid average never reads as "no data"
    return out


def working_field(values: np.ndarray, profile: Profile) -> tuple[np.ndarray, float]:
    """A field -> the profile's working frame and its bad-pixel fraction. Its size is one the
    profile crops (``read_field``'s ``refuse`` checked it before reading)."""
    height, width = values.shape
    box = profile.crop_box(width, height)
    if box is None:
        raise ValueError(f"no crop rule of profile {profile.name} fits {width}x{height}")
    left, top, right, bottom = box
    grey, fraction = to_grey(values[top:bottom, left:right], profile.decoder)
    return resize_masked(grey, profile.resolution), fraction
