"""The grid Kolmogorov-Smirnov similarity metric (the project's ground truth): spec and sketches.

A frame is split into an N x N grid; the grey values of each cell are binned into B bins; two
cells compare by the two-sample Kolmogorov-Smirnov statistic D of their bin samples (cell
similarity 1 - D); a frame pair scores the mean over cells, a clip pair the mean over frames
(frame i against frame i) and channels.

Everything here works from a per-frame *sketch*: the cumulative bin counts of every cell,
stored bins-major as ``(B, cells)`` (bin B is left out: its cumulative count is the cell size,
a property of the frame geometry kept in ``sizes``). KS D of two cells is then
``max_k |C_a(k)/n_a - C_b(k)/n_b|``, computed exactly in integers when the two cells have the
same size (then ``D = max_k |C_a(k) - C_b(k)| / n``).

Two modes:

- ``reference``: bit-for-bit the binning of the published C++ implementation
  (geon0325/weather_similarity ``ground_truth/``): grey = 0.2989 R + 0.5870 G + 0.1140 B in
  double stored as float32, bin = int(grey / 255 * B) in float32, cells of ceil(H/N) x ceil(W/N)
  pixels read from the row-major buffer (a column index >= W reads the start of the next row,
  rows >= H read the zero padding).
- ``clean`` (default, for working-resolution grey frames): the same statistic on an exact
  partition of the image (``np.array_split`` cell edges), bin = floor(v * B / 255) on uint8 grey.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from skysearch.errors import UsageError

Mode = Literal["clean", "reference"]
MODES: tuple[str, ...] = ("clean", "reference")

# Pixels sketched per bincount call (bounds the int64 key array to ~32 MB).
_PIXELS_PER_STEP = 1 << 22


#: N x N cells of 4 pixels a side on the largest frames ingest accepts (4096 px)
MAX_GRID = 1024


@dataclass(frozen=True)
class GridSpec:
    """Metric parameters: grid size N, bin count B, mode."""

    grid: int = 24
    bins: int = 20
    mode: Mode = "clean"

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UsageError(
                f"unknown similarity mode {self.mode!r}; use one of {', '.join(MODES)}"
            )
        if self.grid < 1 or self.bins < 1:
            raise UsageError("{grid} and {bins} must be positive integers", params=["grid", "bins"])
        if self.bins > 254:
            raise UsageError("{bins} must be at most 254", params=["bins"])
        if self.grid > MAX_GRID:  # the reference mode allocates per cell before any size check
            raise UsageError(f"{{grid}} must be at most {MAX_GRID}", params=["grid"])

    @property
    def cells(self) -> int:
        return self.grid * self.grid

    @property
    def tag(self) -> str:
        """Stable name for stored sketches of this spec, e.g. ``clean-g24-b20``."""
        return f"{self.mode}-g{self.grid}-b{self.bins}"

    @classmethod
    def from_tag(cls, tag: str) -> GridSpec | None:
        """The spec a ``tag`` names, or None when it names none."""
        mode, _, rest = tag.partition("-g")
        grid, _, bins = rest.partition("-b")
        if mode not in MODES or not grid.isdigit() or not bins.isdigit():
            return None
        try:
            return cls(int(grid), int(bins), mode)  # type: ignore[arg-type]
        except UsageError:
            return None


@dataclass(frozen=True)
class Geometry:
    """How a frame of ``height x width`` pixels splits into cells under a spec."""

    height: int
    width: int
    spec: GridSpec

    @property
    def key(self) -> str:
        return f"{self.height}x{self.width}"


# --------------------------------------------------------------------------- grey and bins


def to_grey(image: np.ndarray, mode: Mode) -> np.ndarray:
    """Grey image in the mode's representation.

    ``reference``: float32, computed from RGB exactly as the C++ does (grey input counts as
    R = G = B). ``clean``: uint8 (RGB input: the same luma, rounded).
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim not in (2, 3):
        raise UsageError(
            f"expected a uint8 grey (H, W) or RGB (H, W, 3) image, got {image.dtype} {image.shape}"
        )
    if image.ndim == 2:
        if mode == "clean":
            return image
        r = g = b = image
    else:
        if image.shape[2] < 3:
            image = image[..., :1]
            r = g = b = image[..., 0]
        else:
            r, g, b = image[..., 0], image[..., 1], image[..., 2]
    # Same expression and evaluation order as the C++ (double), then stored as float32.
    grey = 0.2989 * r.astype(np.float64) + 0.5870 * g + 0.1140 * b
    if mode == "reference":
        return grey.astype(np.float32)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


@lru_cache(maxsize=64)
def _clean_bin_lut(bins: int) -> np.ndarray:
    return (np.arange(256, dtype=np.int64) * bins // 255).astype(np.uint8)


def bin_grey(grey: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Bin index per pixel (uint8, 0..B; only the top grey value reaches the extra bin B)."""
    if spec.mode == "reference":
        scaled = grey.astype(np.float32, copy=False) / np.float32(255)
        scaled *= np.float32(spec.bins)  # float32, divide then multiply: the C++ order
        return scaled.astype(np.uint8)  # truncation toward zero, as the C++ (int) cast
    if grey.dtype != np.uint8:
        raise UsageError("clean mode needs uint8 grey frames")
    return _clean_bin_lut(spec.bins)[grey]


# --------------------------------------------------------------------------- cell geometry


def _clean_edges(length: int, grid: int) -> np.ndarray:
    """Cell index of each pixel along one axis: np.array_split sizes (first ones one larger)."""
    if length < grid:
        raise UsageError(f"clean mode needs frames of at least {grid} x {grid} pixels")
    base, extra = divmod(length, grid)
    sizes = np.full(grid, base, dtype=np.int64)
    sizes[:extra] += 1
    return np.repeat(np.arange(grid, dtype=np.int64), sizes)


@lru_cache(maxsize=32)
def _cell_map(geometry: Geometry) -> np.ndarray:
    """Cell number (row-major) of every pixel of the (possibly padded) binned view, int64."""
    spec = geometry.spec
    n = spec.grid
    if spec.mode == "reference":
        h = math.ceil(geometry.height / n)
        w = math.ceil(geometry.width / n)
        rows = np.arange(h * n) // h
        cols = np.arange(w * n) // w
    else:
        rows = _clean_edges(geometry.height, n)
        cols = _clean_edges(geometry.width, n)
    cell_map = rows[:, None] * n + cols[None, :]
    cell_map.setflags(write=False)
    return cell_map


@lru_cache(maxsize=32)
def cell_sizes(geometry: Geometry) -> np.ndarray:
    """Pixels per cell (int64, row-major cells); the reference counts the padding too."""
    sizes = np.bincount(_cell_map(geometry).ravel(), minlength=geometry.spec.cells)
    sizes.setflags(write=False)
    return sizes


def sketch_dtype(geometry: Geometry) -> np.dtype:
    """Smallest unsigned dtype holding every cumulative count exactly."""
    largest = int(cell_sizes(geometry).max())
    for dtype in (np.uint8, np.uint16, np.uint32):
        if largest <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    return np.dtype(np.uint64)


def _cell_view(binned: np.ndarray, geometry: Geometry) -> np.ndarray:
    """The pixels each cell reads, shaped like ``_cell_map``: a view for clean mode.

    Reference mode reproduces the C++ indexing ``buffer[i * W + j]`` for i < h*N, j < w*N over
    the zero-padded row-major buffer: columns past W wrap into the next row.
    """
    if geometry.spec.mode == "clean":
        return binned
    n_frames, height, width = binned.shape
    rows, cols = _cell_map(geometry).shape
    need = (rows - 1) * width + cols
    flat = np.zeros((n_frames, max(need, height * width)), dtype=binned.dtype)
    flat[:, : height * width] = binned.reshape(n_frames, -1)
    return np.lib.stride_tricks.as_strided(
        flat,
        shape=(n_frames, rows, cols),
        strides=(flat.strides[0], width * flat.itemsize, flat.itemsize),
        writeable=False,
    )


# --------------------------------------------------------------------------- sketches


def sketch_frames(frames: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Sketches of a stack of frames: uint cumulative counts, shape (n, B, cells).

    ``frames``: uint8 (n, H, W) grey or (n, H, W, 3) RGB. The dtype is ``sketch_dtype`` of the
    frames' geometry.
    """
    frames = np.asarray(frames)
    if frames.ndim not in (3, 4) or frames.shape[0] == 0:
        raise UsageError(f"expected a stack of frames (n, H, W[, 3]), got shape {frames.shape}")
    geometry = Geometry(int(frames.shape[1]), int(frames.shape[2]), spec)
    bins1 = spec.bins + 1
    cell_key = _cell_map(geometry) * bins1
    dtype = sketch_dtype(geometry)
    per_frame = cell_key.size
    step = max(1, _PIXELS_PER_STEP // per_frame)
    out = np.empty((frames.shape[0], spec.bins, spec.cells), dtype=dtype)
    for start in range(0, frames.shape[0], step):
        chunk = frames[start : start + step]
        binned = np.stack([bin_grey(to_grey(f, spec.mode), spec) for f in chunk])
        view = _cell_view(binned, geometry)
        offsets = np.arange(len(chunk), dtype=np.int64)[:, None, None] * (spec.cells * bins1)
        keys = (cell_key[None] + offsets) + view
        counts = np.bincount(keys.ravel(), minlength=len(chunk) * spec.cells * bins1)
        counts = counts.reshape(len(chunk), spec.cells, bins1)
        cumulative = np.cumsum(counts[:, :, : spec.bins], axis=2, dtype=np.int64)
        out[start : start + len(chunk)] = cumulative.transpose(0, 2, 1)
    return out


def sketch_frame(frame: np.ndarray, spec: GridSpec) -> np.ndarray:
    """Sketch (B, cells) of one uint8 frame (H, W) grey or (H, W, 3) RGB."""
    return sketch_frames(np.asarray(frame)[None], spec)[0]


def sketch_geometry(frame_shape: tuple[int, ...], spec: GridSpec) -> Geometry:
    """Geometry of frames of the given shape ((H, W) or (H, W, 3))."""
    return Geometry(int(frame_shape[0]), int(frame_shape[1]), spec)
