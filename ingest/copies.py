"""Files found to be identical copies of catalogued frames, remembered with their stamp in
``catalog/frame-copies.json`` so that a later run counts them without decoding them again (a
job over a mirrored archive decoded every copy on every run). A copy whose file, or whose
frame, changed since is decoded again; a damaged file counts as empty."""

from __future__ import annotations

import json
import os

from skysearch.ingest.decode import ARCHIVE_SEP, FRAME_SEP

from skysearch.atomic import atomic_write_json
from skysearch.config import Workspace

COPIES_FILE = "frame-copies.json"

#: source path -> (frame id, checksum of the frame's pixels, the file's stamp)
Copies = dict[str, tuple[str, str, str]]


def read_copies(workspace: Workspace) -> Copies:
    """The copies a run found; what is damaged counts as absent (they are decoded again)."""
    try:
        data = json.loads((workspace.catalog_dir / COPIES_FILE).read_text(encoding="utf-8"))
        return {
            str(path): (str(fid), str(digest), str(stamp))
            for path, (fid, digest, stamp) in data.items()
        }
    except (OSError, ValueError, TypeError, AttributeError):
        return {}


def write_copies(workspace: Workspace, copies: Copies) -> None:
    atomic_write_json(workspace.catalog_dir / COPIES_FILE, {p: list(c) for p, c in copies.items()})


def under(path: str, roots: list[str]) -> bool:
    """Whether a source ``path`` (a file, a zip member, a frame of a many-frame file) is one
    of ``roots`` (resolved inputs) or lies in one of them."""
    return any(
        path == root
        or path.startswith((root.rstrip(os.sep) + os.sep, root + ARCHIVE_SEP, root + FRAME_SEP))
        for root in roots
    )
