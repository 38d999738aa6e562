"""Validation of uploaded images BEFORE any decoding (the service's only way in for pixels).

Order of checks, cheapest first, so a hostile upload costs almost nothing:

1. byte size (``max_bytes``);
2. magic bytes: PNG, JPEG or GIF only (an HTML page or a script renamed ``.png`` stops here);
3. the size the header states, read by Pillow's lazy ``Image.open`` restricted to the sniffed
   format (``ingest.decode.open_image``: it parses the header chunks and markers, checking PNG
   CRCs, and decodes no pixel), checked against ``max_side`` and ``max_pixels``; Pillow's own
   decompression-bomb guard (far above these limits) is an error too. Callers then check the
   size against what they accept (the service: the ingest profile's frame sizes and a
   per-request pixel budget);
4. only then decoding (:func:`decode`).

Every failure is a :class:`UsageError` with one line saying what was wrong. An opened image
may hold its header's metadata (Pillow caps PNG text chunks at 64 MiB): callers open, check
and drop one image at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from hashlib import sha256
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from skysearch.ingest.decode import ImageTooLarge
from skysearch.ingest.decode import open_image as lazy_open

from skysearch.errors import UsageError

if TYPE_CHECKING:
    from skysearch.ingest.profiles import Profile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
GIF_MAGICS = (b"GIF87a", b"GIF89a")
JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass(frozen=True)
class Upload:
    """One uploaded file as received: the client's name (echoed, never used as a path)."""

    name: str
    data: bytes


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


def open_image(data: bytes, label: str, limits: UploadLimits) -> Image.Image:
    """Checks 1-3 (bytes, magic, header size); the image opened lazily, NOT decoded.
    ``label`` names the upload in messages, e.g. ``upload 'a.png'``."""
    if not data:
        raise UsageError(f"{label} is empty")
    if len(data) > limits.max_bytes:
        # only the limit and one byte more are read: the size past it is not known here
        raise UsageError(f"{label} is larger than the limit of {limits.max_bytes} bytes")
    fmt = sniff_format(data)
    if fmt is None:
        raise UsageError(f"{label} is not a PNG, JPEG or GIF image (its first bytes say otherwise)")
    bound = f"the limit is {limits.max_side} pixels a side and {limits.max_pixels} pixels in all"
    try:
        image = lazy_open(data, formats=[fmt])
    except ImageTooLarge as exc:
        raise UsageError(f"{label} is a decompression bomb ({exc}); {bound}") from None
    except Exception:  # noqa: BLE001 - any header parse failure is the upload's fault
        raise UsageError(
            f"{label}: cannot read the {fmt} header (truncated or corrupt file)"
        ) from None
    width, height = image.size
    if max(width, height) > limits.max_side or width * height > limits.max_pixels:
        raise UsageError(f"{label} is {width}x{height} pixels; {bound}")
    return image


def decode(image: Image.Image, label: str) -> Image.Image:
    """Check 4: decode the pixels of an :func:`open_image` result (truncation shows now)."""
    try:
        image.load()
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the upload's fault
        raise UsageError(f"{label}: cannot decode the {image.format} image ({exc})") from None
    return image


def validate_image(data: bytes, name: str, limits: UploadLimits) -> UploadedImage:
    """Check an upload (bytes, type, header size), then decode it; UsageError if bad."""
    label = f"upload {name!r}"
    image = decode(open_image(data, label, limits), label)
    width, height = image.size
    return UploadedImage(name=name, format=image.format, width=width, height=height, image=image)


def working_frames(
    uploads: Sequence[Upload], profile: Profile, limits: UploadLimits, max_request_pixels: int
) -> np.ndarray:
    """Uploaded frames -> (L, H, W) uint8 at the profile's working resolution. Every header
    first (checks 1-3, the profile's frame sizes, the request's pixel budget), then one frame
    at a time: decode, preprocess, drop."""
    from skysearch.ingest.decode import working_frame, wrong_size

    labels = numbered(uploads)
    pixels = 0
    for upload, label in zip(uploads, labels, strict=True):
        image = open_image(upload.data, label, limits)
        width, height = image.size
        image.close()
        if profile.crop_box(width, height) is None:
            raise UsageError(f"{label}: {wrong_size(profile, width, height)}")
        pixels += width * height
    if pixels > max_request_pixels:
        raise UsageError(
            f"the uploaded frames hold {pixels} pixels; the limit is "
            f"{max_request_pixels} pixels a request"
        )
    frames = []
    for upload, label in zip(uploads, labels, strict=True):
        image = open_image(upload.data, label, limits)
        try:
            frames.append(working_frame(decode(image, label), profile))
        finally:
            image.close()  # frees the full-size pixels now
    return np.stack(frames)


def check_each_once(uploads: Sequence[Upload], limits: UploadLimits) -> None:
    """Refuse a query frame uploaded twice (the same name and bytes: two frames of a dark
    night may well be byte-identical), before a clip model is chosen by the number of frames.
    An empty or oversized upload is left to its own, clearer refusal."""
    from skysearch.retrieval.search.query_files import check_once

    whole = range(1, limits.max_bytes + 1)
    keys = [
        (u.name, sha256(u.data).digest()) if len(u.data) in whole else i
        for i, u in enumerate(uploads)
    ]
    check_once(keys, numbered(uploads))


def numbered(uploads: Sequence[Upload]) -> list[str]:
    """How messages name each of several uploads: ``upload 2 ('b.png')``."""
    return [f"upload {i + 1} ({u.name!r})" for i, u in enumerate(uploads)]


def in_time_order(
    uploads: Sequence[Upload], profile: Profile, data: dict
) -> tuple[list[Upload], datetime | None]:
    """Uploaded frames of a clip in time order, as the CLI orders query files: by the times
    their names carry for ``profile`` (checked to be the clip model's ``gap_minutes`` apart),
    else in the order sent; and the first frame's time (None when the names carry none)."""
    from skysearch.retrieval.search.queries import DEFAULT_TOLERANCE_MINUTES
    from skysearch.retrieval.search.query_files import check_spacing, frame_order

    matches = [profile.match(u.name) for u in uploads]
    times = [m.time if m else None for m in matches]
    if all(t is None for t in times):
        return list(uploads), None
    order = frame_order(times, [u.name for u in uploads], data["channels"][0])
    ordered = [uploads[i] for i in order]
    when = [times[i] for i in order]
    check_spacing(when, [u.name for u in ordered], data["gap_minutes"], DEFAULT_TOLERANCE_MINUTES)
    return ordered, when[0]
