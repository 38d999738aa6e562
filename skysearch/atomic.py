"""Atomic, durable file replacement: after a crash or a power cut a file holds either its old
content or its new content, never a mix, and a completed write is not lost.

The recipe: write a temporary file beside the target, fsync it, rename it over the target,
fsync the folder (the rename itself is a change of the folder). The temporary name starts
with a dot and ends in ``.tmp``, so dataset readers (pyarrow.dataset, DuckDB, polars) skip
it and ``remove_temporaries`` can clean up after a writer killed half-way.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import io
import json
import os
import struct
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from skysearch.errors import UsageError

TMP_SUFFIX = ".tmp"


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's content (a folder: the names in it) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(handle: IO[bytes]) -> None:
    """Flush an open file's buffer and its content to the disk (appended rows: before the
    metadata that counts them is replaced)."""
    handle.flush()
    os.fsync(handle.fileno())


def _temporary_path(path: Path) -> Path:
    """A unique hidden name beside ``path`` for its next version."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path (in ``path``'s folder, which must exist); write the new file
    there. On normal exit it replaces ``path`` durably; on an exception the temporary file is
    removed and ``path`` is untouched."""
    path = Path(path)
    tmp = _temporary_path(path)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_path(path.parent)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, atomically and durably."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def atomic_write_json(path: Path, value: Any, **dumps: Any) -> None:
    """Replace ``path`` with ``value`` as JSON, atomically and durably."""
    atomic_write_bytes(path, json.dumps(value, **dumps).encode())


#: Listed first in the accepted suffixes; the rest follow alphabetically.
_COMMON_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".gif", ".bmp")
#: Icon formats store shrunk copies (ICO: at most 256 px), not the picture asked for.
_ICON_FORMATS = {"ICO", "ICNS"}
#: Suffixes of a subformat the writer of their format does not write (Pillow writes a PBM or
#: PFM name as a grey or colour pixmap, P5/P6).
_OTHER_SUBFORMAT = {".pbm", ".pfm"}


@functools.cache
def image_suffixes(mode: str) -> dict[str, str]:
    """{suffix: Pillow format} of the formats this Pillow writes an image of ``mode`` in, by
    a 1-pixel trial: Pillow also registers formats it only reads (.psd, .fits), placeholders
    that write nothing without a plugin (.h5, .grib), formats of some modes only (.xbm) and
    deprecated ones (.im)."""
    from PIL import Image  # imported here: the other writers of this module need no PIL

    Image.init()
    writes = set()
    for image_format in set(Image.SAVE) - _ICON_FORMATS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", DeprecationWarning)
                Image.new(mode, (1, 1)).save(io.BytesIO(), format=image_format)
        except Exception:  # any failure means "not this format"
            continue
        writes.add(image_format)
    found = {
        s: f
        for s, f in Image.registered_extensions().items()
        if f in writes and s not in _OTHER_SUBFORMAT
    }
    order = [s for s in _COMMON_SUFFIXES if s in found] + sorted(set(found) - {*_COMMON_SUFFIXES})
    return {suffix: found[suffix] for suffix in order}


def image_format(path: Path, what: str, mode: str = "RGB") -> str:
    """The Pillow format of a file name the user gave for an image of ``mode`` (its suffix, in
    any case), or a ``UsageError`` that lists the suffixes accepted."""
    suffixes = image_suffixes(mode)
    found = suffixes.get(Path(path).suffix.lower())
    if found is None:
        raise UsageError(
            f"cannot write {what} {path}: give a file name ending in {', '.join(suffixes)}"
        )
    return found


def save_image(image: Any, path: Path, what: str) -> None:
    """Write a PIL image to a file the user named (a contact sheet, a prediction strip),
    atomically, its format from the name (:func:`image_format`). A path that cannot be written
    is a ``UsageError`` that names it; a full disk stays an ``OSError`` (the CLI reports those
    once)."""
    path = Path(path)
    image_format_name = image_format(path, what, image.mode)
    try:
        blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:  # mkdir would say "File exists"
            raise UsageError(f"cannot write {what} {path}: {blocker} is a file, not a folder")
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            image.save(tmp, format=image_format_name)
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise
        if exc.errno is not None:  # the path: no permission, a read-only disk...
            raise UsageError(f"cannot write {what} {path}: {exc.strerror or exc}") from None
        raise _too_much_for(image_format_name, what, path, exc) from None  # the encoder's
    except (ValueError, OverflowError, struct.error, RuntimeError) as exc:
        raise _too_much_for(image_format_name, what, path, exc) from None


def _too_much_for(image_format: str, what: str, path: Path, exc: Exception) -> UsageError:
    """What a format cannot hold (a JPEG over 65500 px wide, a GIF or TGA over 65535...)."""
    return UsageError(
        f"cannot write {what} {path} as {image_format}: {exc or type(exc).__name__}; a .png "
        "holds any size"
    )


_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def exchange(first: Path, second: Path) -> None:
    """Swap two existing paths (e.g. two folders) in ONE atomic step: every process sees
    either both old names or both new ones. Linux ``renameat2(RENAME_EXCHANGE)``; an OSError
    with ``errno.ENOSYS``/``EINVAL``/``ENOTSUP`` where the system or the filesystem cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        raise OSError(errno.ENOSYS, "renameat2 is not available on this system")
    a, b = os.fsencode(first), os.fsencode(second)
    if renameat2(_AT_FDCWD, a, _AT_FDCWD, b, _RENAME_EXCHANGE) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code), str(first), None, str(second))


def file_identity(*paths: Path) -> tuple:
    """Inode, size and modification time of each file (None: not there): a file replaced or
    rewritten since (by ``skysearch repair``) has another."""
    found = []
    for path in paths:
        try:
            st = path.stat()
            found.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            found.append(None)
    return tuple(found)


def remove_temporaries(root: Path) -> int:
    """Delete ``*.tmp`` leftovers of writers killed mid-write under ``root``; returns how many."""
    if not root.exists():
        return 0
    leftovers = list(root.rglob(f"*{TMP_SUFFIX}"))
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)
