"""Files of the embedded store's folders that the engine does not account for itself."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from skysearch.errors import some_of

ENGINE_ENTRIES = ("edge_config.json", "segments", "wal")  # what a shard folder holds


def holds_engine_files(path: Path) -> bool:
    """The folder holds something the engine writes: a collection, perhaps damaged."""
    return any((path / entry).exists() for entry in ENGINE_ENTRIES)


def foreign_folders(root: Path) -> list[Path]:
    """Non-empty folders in the store that hold none of the engine's files (a user's notes,
    a backup unpacked there): not collections, so left out of the store's collections."""
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.iterdir()
        if p.is_dir()
        and not p.name.startswith(".")
        and any(p.iterdir())
        and not holds_engine_files(p)
    )


def not_a_collection(path: Path) -> str:
    """Why a folder of a user's files cannot be (nor become) a collection."""
    entries = some_of(sorted(e.name for e in path.iterdir()), shown=3)
    return (
        f"{path} holds files that are not a store collection ({entries}): "
        f"move them out of {path.parent}"
    )


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
