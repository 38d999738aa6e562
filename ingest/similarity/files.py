"""Clips given as image folders, sketched as they are decoded (no clip is held in memory).

Two layouts: the reference implementation's video folder (``image_1/``, ``image_2/``, ...,
each holding ``{channel}.png``), or a single frame: one folder of ``{channel}.png`` files.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from skysearch.ingest.decode import IMAGE_SUFFIXES, SIXTEEN_BIT_GREY, open_image, to_grey
from skysearch.ingest.similarity.grid import Geometry, GridSpec, cell_sizes, sketch_frame
from skysearch.ingest.similarity.scoring import SketchedClip

from skysearch.errors import UsageError

_FRAME_DIR = re.compile(r"^image_(\d+)$")


def folder_layout(path: Path) -> tuple[list[str], list[dict[str, Path]]]:
    """Channel names and, per time step, channel -> image file. Raises UsageError if malformed."""
    if not path.is_dir():
        raise UsageError(f"folder not found: {path}")
    steps = sorted(
        (int(m.group(1)), p)
        for p in path.iterdir()
        if p.is_dir() and (m := _FRAME_DIR.match(p.name))
    )
    numbers = [n for n, _ in steps]
    if numbers and numbers != list(range(1, len(numbers) + 1)):
        missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
        raise UsageError(  # image_3 would be compared as the second time step
            f"{path} has no image_{missing[0]}/ folder: time steps are image_1/, image_2/, ... "
            "without gaps"
            if missing
            else f"{path} numbers a time step twice"
        )
    if steps:
        stray = sorted(p.name for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if stray:
            raise UsageError(
                f"{path} holds image_N/ folders and images beside them ({', '.join(stray)}): "
                "put each time step's images in its image_N/ folder"
            )
    folders = [p for _, p in steps] or [path]
    frames = []
    for folder in folders:
        images = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
        if not images:
            raise UsageError(
                f"no {{channel}}.png images in {folder} (expected image_1/, image_2/, ... "
                "folders or one frame's {channel}.png files)"
            )
        frames.append(images)
    channels = sorted(frames[0])
    for folder, images in zip(folders, frames, strict=True):
        if sorted(images) != channels:
            raise UsageError(
                f"{folder} has channels {','.join(sorted(images))}, expected {','.join(channels)}"
            )
    return channels, frames


def _decode(path: Path) -> np.ndarray:
    try:
        with open_image(path) as image:  # refuses decompression bombs before decoding
            if image.mode in SIXTEEN_BIT_GREY:  # convert("RGB") clips 16 bits at 255: white
                image = to_grey(image)
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise UsageError(f"cannot decode {path}: {exc}") from None


def sketch_folder(path: Path, spec: GridSpec, workers: int = 2) -> SketchedClip:
    """Decode and sketch every image of a clip folder (frames decode on ``workers`` threads)."""
    channels, frames = folder_layout(Path(path))
    files = [frame[c] for c in channels for frame in frames]  # channel-major

    def work(file: Path) -> tuple[tuple[int, int], np.ndarray]:
        pixels = _decode(file)
        return pixels.shape[:2], sketch_frame(pixels, spec)

    with ThreadPoolExecutor(max(1, workers)) as pool:
        results = list(pool.map(work, files))
    shapes = {shape for shape, _ in results}
    if len(shapes) > 1:
        raise UsageError(f"images in {path} differ in size: {sorted(shapes)}")
    height, width = shapes.pop()
    sketches = np.stack([s for _, s in results]).reshape(
        len(channels), len(frames), spec.bins, spec.cells
    )
    return SketchedClip(channels, sketches, cell_sizes(Geometry(height, width, spec)), str(path))
