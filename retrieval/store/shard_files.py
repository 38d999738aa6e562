"""Files of an embedded shard directory that the engine does not account for itself."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def disk_bytes(path: Path) -> int:
    """Bytes allocated on disk (the engine preallocates sparse files: st_size would overstate)."""
    total = 0
    for folder, _, files in os.walk(path):  # files come and go while the engine optimizes
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def remove_stale_builds(path: Path) -> None:
    """Remove what an index build cut short (Ctrl-C, kill) left in ``temp_segments/``: the
    engine never reads it again nor removes it (~80 MB per 100k points). Only call this with
    the shard open in this process, so that no build of it is running."""
    temp = path / "temp_segments"
    if not temp.is_dir():
        return
    for entry in temp.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
