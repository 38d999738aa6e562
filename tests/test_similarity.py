"""Grid KS similarity: golden values of the reference C++, properties, and a plain-KS oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import SAMPLE_DATA, shared_data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from skysearch.cli.app import flag
from skysearch.ingest.similarity import (
    GridSpec,
    SketchPool,
    bin_grey,
    cell_similarities,
    cell_sizes,
    clip_similarity,
    frame_similarity,
    one_to_many,
    pairwise,
    sketch_frame,
    sketch_frames,
    sketch_geometry,
    to_grey,
)

from skysearch.errors import UsageError

CHANNELS = ["ir01", "ir02", "swir", "wv"]
# The reference C++ output for the coms-golden frames (../shared/data/README.md):
# (pair, channel) -> (N=24 B=20, N=8 B=10).
GOLDEN = {
    ("1-2", "ir01"): (0.824582130832, 0.933628932254),
    ("1-2", "ir02"): (0.819424402758, 0.933260793304),
    ("1-2", "swir"): (0.841902156485, 0.939455929383),
    ("1-2", "wv"): (0.766875601251, 0.907692982313),
    ("1-3", "ir01"): (0.364764710598, 0.536839899328),
    ("1-3", "ir02"): (0.355015432099, 0.528912674586),
    ("1-3", "swir"): (0.407871873497, 0.558044600901),
    ("1-3", "wv"): (0.322788900914, 0.536152060762),
    ("2-3", "ir01"): (0.369640351932, 0.537852536386),
    ("2-3", "ir02"): (0.363027597403, 0.531882260801),
    ("2-3", "swir"): (0.407046156004, 0.554414710057),
    ("2-3", "wv"): (0.31115470178, 0.527991307434),
}
GOLDEN_MEANS = {"1-2": 0.813196, "1-3": 0.36261, "2-3": 0.362717}  # N=24, B=20, 6 decimals
SPECS = [(24, 20), (8, 10)]


# --------------------------------------------------------------------------- the oracle


def plain_ks(sample_a: list[int], sample_b: list[int]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic, straight from the definition."""
    values = sorted(set(sample_a) | set(sample_b))
    return max(
        abs(
            sum(1 for x in sample_a if x <= v) / len(sample_a)
            - sum(1 for x in sample_b if x <= v) / len(sample_b)
        )
        for v in values
    )


def plain_cells(image: np.ndarray, spec: GridSpec) -> list[list[int]]:
    """Bin samples of every cell, pixel by pixel, as the C++ loops (reference) or a partition."""
    grey = to_grey(image, spec.mode)
    height, width = grey.shape
    n, b = spec.grid, spec.bins

    def bin_of(value: float) -> int:
        if spec.mode == "reference":
            return int(np.float32(np.float32(value) / np.float32(255)) * np.float32(b))
        return int(value) * b // 255

    cells = []
    if spec.mode == "reference":
        h, w = math.ceil(height / n), math.ceil(width / n)
        flat = list(grey.ravel())
        for r in range(n):
            for c in range(n):
                sample = []
                for i in range(r * h, (r + 1) * h):
                    for j in range(c * w, (c + 1) * w):
                        k = i * width + j
                        sample.append(bin_of(flat[k]) if k < len(flat) else 0)
                cells.append(sample)
        return cells
    row_parts = np.array_split(np.arange(height), n)
    col_parts = np.array_split(np.arange(width), n)
    for rows in row_parts:
        for cols in col_parts:
            cells.append([bin_of(grey[i, j]) for i in rows for j in cols])
    return cells


def plain_similarity(image_a: np.ndarray, image_b: np.ndarray, spec: GridSpec) -> float:
    cells_a, cells_b = plain_cells(image_a, spec), plain_cells(image_b, spec)
    return sum(1 - plain_ks(a, b) for a, b in zip(cells_a, cells_b, strict=True)) / len(cells_a)


def similarity(image_a: np.ndarray, image_b: np.ndarray, spec: GridSpec) -> float:
    sizes = cell_sizes(sketch_geometry(image_a.shape, spec))
    return frame_similarity(sketch_frame(image_a, spec), sketch_frame(image_b, spec), sizes)


# --------------------------------------------------------------------------- golden values


@pytest.fixture(scope="module")
def golden():
    root = shared_data("coms-golden")
    return {
        (v, ch): np.asarray(Image.open(root / f"video_{v}" / f"{ch}.png").convert("RGB"))
        for v in (1, 2, 3)
        for ch in CHANNELS
    }


@pytest.mark.parametrize("grid,bins", SPECS)
def test_reference_mode_reproduces_every_golden_value(golden, grid, bins):
    spec = GridSpec(grid, bins, "reference")
    column = SPECS.index((grid, bins))
    for (pair, ch), expected in GOLDEN.items():
        a, b = (int(x) for x in pair.split("-"))
        got = similarity(golden[a, ch], golden[b, ch], spec)
        assert abs(got - expected[column]) <= 1e-9, (pair, ch, got, expected[column])


def test_reference_four_channel_means(golden):
    spec = GridSpec(24, 20, "reference")
    for pair, expected in GOLDEN_MEANS.items():
        a, b = (int(x) for x in pair.split("-"))
        clip_a = np.stack([golden[a, ch] for ch in CHANNELS])[:, None]  # (C, L=1, H, W, 3)
        clip_b = np.stack([golden[b, ch] for ch in CHANNELS])[:, None]
        score = clip_similarity(clip_a, clip_b, spec, CHANNELS)
        assert abs(score.similarity - expected) <= 5e-7  # published with 6 decimals
        for ch in CHANNELS:
            assert abs(score.channels[ch] - GOLDEN[pair, ch][0]) <= 1e-9


def test_clean_mode_close_to_reference(golden):
    """Clean mode (exact partition, no wrap, no padding) on the same frames.

    Measured gap: up to 0.017 on the dissimilar pairs, and entirely in the border cells the
    reference pads or wraps: its last cell row is 20/55 zero rows that both frames share
    (which dilutes D there) and its last cell column reads 12 pixels of the next row. Away
    from those border cells both modes agree within 0.005. So: interior within 0.005, whole
    frame within 0.02 (the issue asked 0.01: see README, similarity section).
    """
    for (pair, ch), expected in GOLDEN.items():
        a, b = (int(x) for x in pair.split("-"))
        for column, (grid, bins) in enumerate(SPECS):
            got = similarity(golden[a, ch], golden[b, ch], GridSpec(grid, bins, "clean"))
            assert abs(got - expected[column]) <= 0.02, (pair, ch, grid, got)
        cells = {}
        for mode in ("reference", "clean"):
            spec = GridSpec(24, 20, mode)
            sizes = cell_sizes(sketch_geometry(golden[a, ch].shape, spec))
            per_cell = cell_similarities(
                sketch_frame(golden[a, ch], spec), sketch_frame(golden[b, ch], spec), sizes
            )
            cells[mode] = per_cell.reshape(24, 24)[:-1, :-1]
        assert abs(cells["reference"].mean() - cells["clean"].mean()) <= 0.005


def test_reference_border_quirks_alone_exceed_0_01(golden):
    """Why clean mode cannot come within 0.01 at N=24: the reference's own binning and cell
    boundaries, with only its zero padding and row wrap dropped (border cells cut at the image
    edge), are already more than 0.01 off the published value of pair 2-3, wv."""
    spec = GridSpec(24, 20, "reference")
    a, b = (bin_grey(to_grey(golden[v, "wv"], "reference"), spec) for v in (2, 3))
    h, w = (math.ceil(n / 24) for n in a.shape)
    total = 0.0
    for i in range(24):
        for j in range(24):
            cdfs = [
                np.cumsum(
                    np.bincount(x[i * h : (i + 1) * h, j * w : (j + 1) * w].ravel(), minlength=21)
                )
                for x in (a, b)
            ]
            total += 1 - np.abs(cdfs[0] / cdfs[0][-1] - cdfs[1] / cdfs[1][-1]).max()
    published = GOLDEN["2-3", "wv"][0]
    assert abs(total / 576 - published) > 0.01
    assert abs(similarity(golden[2, "wv"], golden[3, "wv"], spec) - published) <= 1e-9


# --------------------------------------------------------------------------- properties

MODES = st.sampled_from(["clean", "reference"])


@st.composite
def image_pairs(draw):
    mode = draw(MODES)
    grid = draw(st.integers(1, 5))
    bins = draw(st.integers(1, 12))
    height = draw(st.integers(grid, 23))
    width = draw(st.integers(grid, 23))
    rgb = draw(st.booleans())
    shape = (2, height, width, 3) if rgb else (2, height, width)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    # Mostly few distinct levels (ties, empty bins), sometimes the full range.
    levels = draw(st.sampled_from([2, 4, 256]))
    pixels = (rng.integers(0, levels, shape) * (255 // max(1, levels - 1))).astype(np.uint8)
    if levels == 256:
        pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    return GridSpec(grid, bins, mode), pixels[0], pixels[1]


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(image_pairs())
def test_vectorised_equals_plain_per_cell_ks(case):
    spec, a, b = case
    assert similarity(a, b, spec) == pytest.approx(plain_similarity(a, b, spec), abs=1e-12)


@FAST
@given(image_pairs())
def test_self_one_symmetric_bounded(case):
    spec, a, b = case
    assert similarity(a, a, spec) == 1.0
    ab, ba = similarity(a, b, spec), similarity(b, a, spec)
    assert ab == pytest.approx(ba, abs=1e-15)
    assert 0.0 <= ab <= 1.0


@FAST
@given(image_pairs())
def test_different_geometry_uses_normalised_cdfs(case):
    spec, a, b = case
    if spec.mode != "clean" or min(b.shape[:2]) < 2 * spec.grid:
        return
    half = b[::2, ::2]  # another size: cell sizes differ, KS on normalised CDFs
    sizes_a = cell_sizes(sketch_geometry(a.shape, spec))
    sizes_h = cell_sizes(sketch_geometry(half.shape, spec))
    got = frame_similarity(sketch_frame(a, spec), sketch_frame(half, spec), sizes_a, sizes_h)
    cells = zip(plain_cells(a, spec), plain_cells(half, spec), strict=True)
    expected = sum(1 - plain_ks(x, y) for x, y in cells) / spec.cells
    assert got == pytest.approx(expected, abs=1e-12)


# --------------------------------------------------------------------------- batched API


def _random_frames(n: int, seed: int, shape=(36, 40)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, shape, dtype=np.uint8)
    noise = rng.integers(-40, 40, (n, *shape))
    return np.clip(base.astype(int) + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("dense", [True, False])
def test_one_to_many_matches_pair_by_pair(dense):
    spec = GridSpec(6, 8)
    frames = _random_frames(30, 1)
    pool = sketch_frames(frames, spec)
    sizes = cell_sizes(sketch_geometry(frames.shape[1:], spec))
    channels, length = 2, 4
    rng = np.random.default_rng(2)
    if dense:  # sliding windows: every frame at every position
        starts = np.arange(0, 30 - 2 * length)
        index = np.stack([[s + np.arange(length), s + length + np.arange(length)] for s in starts])
    else:
        index = rng.integers(0, 30, (5, channels, length))
    query_frames = _random_frames(channels * length, 3).reshape(channels, length, 36, 40)
    query = sketch_frames(query_frames.reshape(-1, 36, 40), spec).reshape(
        channels, length, spec.bins, spec.cells
    )
    got = one_to_many(query, SketchPool([pool[:10], pool[10:]]), index, sizes)
    for k, clip in enumerate(index):
        expected = clip_similarity(query_frames, frames[clip], spec)
        assert got[k].mean() == pytest.approx(expected.similarity, abs=1e-12)


def test_pairwise_matrix():
    spec = GridSpec(4, 5)
    frames = _random_frames(12, 4, (20, 24))
    pool = sketch_frames(frames, spec)
    sizes = cell_sizes(sketch_geometry(frames.shape[1:], spec))
    index = np.arange(12).reshape(3, 2, 2)
    matrix = pairwise(pool, index, sizes)
    assert np.allclose(matrix, matrix.T) and np.all(np.diag(matrix) == 1.0)
    expected = clip_similarity(frames[index[0]], frames[index[2]], spec).similarity
    assert matrix[0, 2] == pytest.approx(expected, abs=1e-12)


def test_bad_inputs_are_usage_errors():
    with pytest.raises(UsageError, match="mode"):
        GridSpec(mode="fast")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="at least"):
        sketch_frame(np.zeros((10, 10), np.uint8), GridSpec(24, 20))
    with pytest.raises(UsageError, match="uint8"):
        sketch_frame(np.zeros((30, 30), np.float32), GridSpec(4, 4))
    a = np.zeros((2, 3, 30, 30), np.uint8)
    with pytest.raises(UsageError, match="differ"):
        clip_similarity(a, a[:, :2], GridSpec(4, 4))


@pytest.mark.parametrize("max_step", [0, 8192])
def test_pairwise_step_matrix_and_per_clip_paths_agree(max_step):
    spec = GridSpec(5, 6)
    frames = _random_frames(16, 5, (25, 30))
    pool = sketch_frames(frames, spec)
    sizes = cell_sizes(sketch_geometry(frames.shape[1:], spec))
    starts = np.arange(10)
    index = np.stack([[s + np.arange(4), 16 - 1 - s - np.arange(4)] for s in starts])
    matrix = pairwise(pool, index, sizes, max_step=max_step)
    assert np.all(np.diag(matrix) == 1.0) and np.allclose(matrix, matrix.T, atol=1e-15)
    for a, b in [(0, 9), (3, 4), (7, 2)]:
        expected = clip_similarity(frames[index[a]], frames[index[b]], spec).similarity
        assert matrix[a, b] == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    "spec, plain, on_the_cli",
    [
        ({"grid": 0}, "grid and bins must be positive integers", "--grid and --bins must"),
        ({"bins": 300}, "bins must be at most 254", "--bins must be at most 254"),
        # the reference mode tried to allocate 74.5 GiB at N = 100000 (a MemoryError, exit 3)
        ({"grid": 100_000, "mode": "reference"}, "grid must be at most 1024", "--grid must be"),
    ],
)
def test_spec_errors_name_parameters_the_cli_renders_as_flags(spec, plain, on_the_cli):
    with pytest.raises(UsageError) as caught:
        GridSpec(**spec)
    assert str(caught.value) == plain  # the library's words (the HTTP service's too)
    assert caught.value.render(flag).startswith(on_the_cli)


def test_a_clip_folder_with_a_missing_step_or_stray_images_is_refused(tmp_path):
    """image_1/ + image_3/ was a two-frame clip (step 3 compared as step 2), and an image beside
    the image_N/ folders was ignored without a word."""
    from skysearch.ingest.similarity.files import folder_layout

    def clip(name: str, steps: list[str], stray: bool = False):
        for step in steps:
            (tmp_path / name / step).mkdir(parents=True)
            Image.new("L", (8, 8)).save(tmp_path / name / step / "ir.png")
        if stray:
            Image.new("L", (8, 8)).save(tmp_path / name / "wv.png")
        return tmp_path / name

    assert len(folder_layout(clip("whole", ["image_1", "image_2"]))[1]) == 2
    with pytest.raises(UsageError, match="has no image_2/ folder"):
        folder_layout(clip("gap", ["image_1", "image_3"]))
    with pytest.raises(UsageError, match="numbers a time step twice"):
        folder_layout(clip("twice", ["image_1", "image_01"]))
    with pytest.raises(UsageError, match=r"images beside them \(wv.png\)"):
        folder_layout(clip("stray", ["image_1"], stray=True))


def test_a_16_bit_image_scores_as_its_8_bit_twin_and_never_above_one(tmp_path):
    """convert("RGB") clipped 16-bit grey at 255: the same picture at 16 bits scored 0.018
    against its 8-bit twin; the mean over frames of identical clips read 1.0000000000000002."""
    from skysearch.ingest.similarity.files import sketch_folder
    from skysearch.ingest.similarity.scoring import compare_clips

    frames = sorted((SAMPLE_DATA / "goes-irma-2017" / "infrared").glob("HUIR17249*.GIF"))[:3]
    for step, frame in enumerate(frames, 1):
        grey = np.asarray(Image.open(frame).convert("L"), dtype=np.uint16)
        for name, image in (("eight", Image.fromarray(grey.astype(np.uint8))),
                            ("sixteen", Image.fromarray(grey * 257))):  # I;16  # fmt: skip
            (tmp_path / name / f"image_{step}").mkdir(parents=True)
            image.save(tmp_path / name / f"image_{step}" / "ir.png")
    spec = GridSpec()
    eight, sixteen = (sketch_folder(tmp_path / n, spec) for n in ("eight", "sixteen"))
    assert compare_clips(eight, sixteen).similarity > 0.999
    for clip in (eight, sixteen):
        score = compare_clips(clip, clip)
        assert score.similarity <= 1.0 and all(v <= 1.0 for v in score.channels.values())
