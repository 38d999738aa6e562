"""Validation of uploaded images BEFORE any decoding (the service's only way in for pixels).

Order of checks, cheapest first, so a hostile upload costs almost nothing:

1. byte size (``max_bytes``);
2. magic bytes: PNG, JPEG or GIF only (an HTML page or a script renamed ``.png`` stops here);
3. dimensions read from the format's own header by this module (PNG ``IHDR``, GIF logical
   screen, JPEG ``SOFn`` marker), checked against ``max_side`` and ``max_pixels``;
4. only then Pillow, restricted to the sniffed format, with its decompression-bomb guard
   turned into an error; the decoded size must equal the header's.

Every failure is a :class:`UsageError` with one line saying what was wrong.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

from PIL import Image

from skysearch.errors import UsageError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GIF_MAGICS = (b"GIF87a", b"GIF89a")
JPEG_MAGIC = b"\xff\xd8\xff"
#: JPEG start-of-frame markers that carry the image size (not DHT 0xC4, JPG 0xC8, DAC 0xCC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
ALLOWED_FORMATS = ("PNG", "JPEG", "GIF")


@dataclass(frozen=True)
class UploadLimits:
    """What one uploaded image may be."""

    max_bytes: int = 8 * 1024 * 1024
    max_side: int = 4096
    max_pixels: int = 4096 * 4096


@dataclass(frozen=True)
class UploadedImage:
    """A validated, decoded upload."""

    name: str
    format: str
    width: int
    height: int
    image: Image.Image


def sniff_format(data: bytes) -> str | None:
    """``PNG``, ``JPEG``, ``GIF`` from the magic bytes, or None."""
    if data.startswith(PNG_MAGIC):
        return "PNG"
    if data.startswith(GIF_MAGICS):
        return "GIF"
    if data.startswith(JPEG_MAGIC):
        return "JPEG"
    return None


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the first SOF marker, walking the marker segments."""
    pos = 2
    end = len(data)
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers: no length
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            return None
        if marker in _JPEG_SOF:
            if pos + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def header_size(data: bytes, fmt: str) -> tuple[int, int] | None:
    """(width, height) as the file's header states it, without decoding; None if unreadable."""
    if fmt == "PNG":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        return struct.unpack(">II", data[16:24])
    if fmt == "GIF":
        if len(data) < 10:
            return None
        return struct.unpack("<HH", data[6:10])
    if fmt == "JPEG":
        return _jpeg_size(data)
    return None


def validate_image(data: bytes, name: str, limits: UploadLimits) -> UploadedImage:
    """Check an upload (size, type, header dimensions), then decode it; UsageError if bad."""
    label = f"upload {name!r}"
    if not data:
        raise UsageError(f"{label} is empty")
    if len(data) > limits.max_bytes:
        raise UsageError(f"{label} is {len(data)} bytes; the limit is {limits.max_bytes} bytes")
    fmt = sniff_format(data)
    if fmt is None:
        raise UsageError(f"{label} is not a PNG, JPEG or GIF image (its first bytes say otherwise)")
    size = header_size(data, fmt)
    if size is None:
        raise UsageError(f"{label}: cannot read the {fmt} header (truncated or corrupt file)")
    width, height = size
    if width < 1 or height < 1:
        raise UsageError(f"{label}: {fmt} header says {width}x{height} pixels")
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise UsageError(
            f"{label} is {width}x{height} pixels; the limit is {limits.max_side} pixels a side "
            f"and {limits.max_pixels} pixels in all"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=[fmt])
            if image.size != (width, height):
                raise UsageError(
                    f"{label}: the {fmt} header says {width}x{height} but the image is "
                    f"{image.size[0]}x{image.size[1]}"
                )
            image.load()
    except UsageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UsageError(f"{label} looks like a decompression bomb: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault
        raise UsageError(f"{label}: cannot decode the {fmt} image ({exc})") from None
    return UploadedImage(name=name, format=fmt, width=width, height=height, image=image)
