"""The copies a workspace keeps of the user profiles its frames were made with
(``WORKSPACE/profiles/``): repair, search and serve read them without ``--profiles``, and a
profile given again is checked against its copy before it may add frames beside the old."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from skysearch.ingest.profiles import PACKAGED, Profile

from skysearch.atomic import atomic_write_bytes
from skysearch.config import Workspace
from skysearch.errors import UsageError


def _pixel_mapping(profile: Profile) -> dict[str, Any]:
    """What turns a profile's files into frames: change one, and the same file gives other
    pixels (a grey level that means another temperature)."""
    d = profile.decoder
    return {
        "resolution": list(profile.resolution),
        "crops": list(profile.crops),
        "max_value": profile.max_value,
        "decoder kind": d.kind,
        "decoder variable": d.variable,
        "decoder range": list(d.range),
        "decoder invert": d.invert,
        "decoder valid": None if d.valid is None else list(d.valid),
    }


def check_kept(workspace: Workspace, profiles: Iterable[Profile]) -> None:
    """Refuse a profile given again (``--profiles``) that makes other frames from the same
    files than its copy here did: the workspace's frames of it would mix two mappings (its
    files already ingested are unchanged, so they are never decoded again)."""
    for profile in profiles:
        path = workspace.profiles_dir / f"{profile.name}.json"
        try:
            kept = Profile.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
        except (OSError, ValueError, UsageError):
            continue  # none kept (or unreadable: the new one is kept after the ingest)
        old, new = _pixel_mapping(kept), _pixel_mapping(profile)
        changed = "; ".join(f"{k} {old[k]} -> {new[k]}" for k in new if new[k] != old[k])
        if changed:
            raise UsageError(
                f"source profile {profile.name} ({profile.origin}) makes other frames than the "
                f"copy this workspace's frames of it were made with ({path}): {changed}. "
                "Ingest it into a new workspace, or give the profile its old values (or "
                "another name)"
            )


def keep_profiles(workspace: Workspace, profiles: Iterable[Profile]) -> None:
    """Copy the user profiles (not the packaged ones) into the workspace, so that repair,
    search and serve know the products its frames came from without ``--profiles``."""
    for profile in profiles:
        if not profile.origin or profile.origin.startswith(PACKAGED):
            continue
        kept = workspace.profiles_dir / f"{profile.name}.json"
        if not kept.is_file() or kept.read_text(encoding="utf-8") != profile.text:
            kept.parent.mkdir(exist_ok=True)
            atomic_write_bytes(kept, profile.text.encode("utf-8"))
