"""Read, check and preprocess one archive file into a working-resolution grey frame.

Runs in worker processes: pure functions of (file, profile), no workspace state.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from skysearch.ingest.profiles import Profile

ARCHIVE_SEP = "::"  # source_path of a zip member: "/abs/archive.zip::folder/name.png"


@dataclass(frozen=True)
class Source:
    """One input file: a plain file, or a member of a zip archive."""

    file: str
    member: str | None = None

    @property
    def path(self) -> str:
        return f"{self.file}{ARCHIVE_SEP}{self.member}" if self.member else self.file

    @property
    def name(self) -> str:
        return Path(self.member or self.file).name


@dataclass(frozen=True)
class Decoded:
    """A worker's answer for one source: a frame, or the reason it was skipped."""

    checksum: str = ""
    width: int = 0
    height: int = 0
    frame: np.ndarray | None = None
    reason: str = ""


_open_zip: tuple[str, zipfile.ZipFile] | None = None


def read_bytes(source: Source) -> bytes:
    """The raw file bytes (a worker keeps its last zip archive open: chunks share one)."""
    global _open_zip
    if source.member is None:
        return Path(source.file).read_bytes()
    if _open_zip is None or _open_zip[0] != source.file:
        if _open_zip is not None:
            _open_zip[1].close()
        _open_zip = (source.file, zipfile.ZipFile(source.file))
    return _open_zip[1].read(source.member)


def _sniff(raw: bytes) -> str:
    head = raw[:256].lstrip().lower()
    if not raw:
        return "empty file"
    if head.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")):
        return "not an image: an HTML/XML page saved under an image name"
    return ""


def decode_image(raw: bytes) -> Image.Image:
    """Decode fully (so truncation shows now, not later)."""
    image = Image.open(io.BytesIO(raw))
    image.load()
    return image


def to_grey(image: Image.Image, max_value: int = 65535) -> Image.Image:
    """Palette GIFs and RGB(A) -> 8-bit luminance (ITU-R 601, Pillow's ``L``); 16-bit grey
    scales linearly with the profile's fixed ``max_value`` (the same for every frame, so
    brightness stays comparable across the archive)."""
    if image.mode == "L":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        scaled = np.asarray(image, dtype=np.float32) * (255.0 / max_value)
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))
    return image.convert("L")


def _palette_grey_lut(image: Image.Image) -> np.ndarray:
    """Grey value of each palette index, computed by Pillow itself (so identical to
    ``convert("L")``)."""
    swatch = Image.new("P", (256, 1))
    swatch.putpalette(image.getpalette())
    swatch.putdata(range(256))
    return np.asarray(swatch.convert("L"))[0]


def crop_grey(image: Image.Image, box: tuple[int, int, int, int], max_value: int) -> Image.Image:
    """Crop then grey. Palette images (GOES GIFs): the index plane mapped through a 256-entry
    grey lookup (Pillow's ``point``): same pixels as ``to_grey(image.crop(box))``, measured
    0.57 vs 0.94 ms per 720x480 frame."""
    if image.mode != "P":
        return to_grey(image.crop(box), max_value)
    indices = Image.frombytes("L", image.size, image.tobytes()).crop(box)
    return indices.point(_palette_grey_lut(image).tolist())


def resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Area-average to ``size``: Pillow's integer ``reduce`` when the factor is whole (2x
    faster than a box resize, same average up to rounding), else a box resize."""
    width, height = image.size
    if (width, height) == size:
        return image
    factor = width // size[0]
    if factor > 1 and (width, height) == (size[0] * factor, size[1] * factor):
        return image.reduce(factor)
    return image.resize(size, Image.Resampling.BOX)


def preprocess(source: Source, profile: Profile) -> Decoded:
    """Checksum, decode, check the size, crop, grey, resize; never raises for bad input."""
    try:
        raw = read_bytes(source)
    except (OSError, zipfile.BadZipFile, KeyError) as exc:
        return Decoded(reason=f"cannot read file: {exc}")
    checksum = hashlib.sha256(raw).hexdigest()
    bad = _sniff(raw)
    if bad:
        return Decoded(checksum=checksum, reason=bad)
    try:
        image = decode_image(raw)
    except UnidentifiedImageError:
        return Decoded(checksum=checksum, reason="not a readable image (unknown format)")
    except (OSError, ValueError, SyntaxError) as exc:
        return Decoded(checksum=checksum, reason=f"truncated or corrupt image: {exc}")
    width, height = image.size
    frame = working_frame(image, profile)
    if frame is None:
        return Decoded(
            checksum=checksum, width=width, height=height, reason=wrong_size(profile, width, height)
        )
    return Decoded(checksum=checksum, width=width, height=height, frame=frame)


def wrong_size(profile: Profile, width: int, height: int) -> str:
    """Why an image of this size cannot be a frame of ``profile``."""
    return (
        f"wrong dimensions {width}x{height} (profile {profile.name} expects "
        f"{profile.expected_sizes()})"
    )


def working_frame(image: Image.Image, profile: Profile) -> np.ndarray | None:
    """A decoded source image -> the profile's working frame (crop, grey, resize; uint8
    (H, W)), or None when no crop rule fits its size. The one preprocessing of archive
    files, query frame files and uploaded query frames."""
    box = profile.crop_box(*image.size)
    if box is None:
        return None
    grey = crop_grey(image, box, profile.max_value)
    return np.asarray(resize(grey, profile.resolution), dtype=np.uint8)


def preprocess_chunk(items: list[tuple[Source, Profile]]) -> list[Decoded]:
    """Worker entry point: a chunk of sources, answers in the same order."""
    return [preprocess(source, profile) for source, profile in items]
