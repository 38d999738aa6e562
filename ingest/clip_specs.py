"""Clip specs: what ``build_clips`` assembles (``ClipSpec``: length, gap, channels, tolerance),
their text forms (``12x60``, catalog file stems ``ir+wv_12x60m``), and the specs a workspace
was asked for (``catalog/clips/specs.json``), kept so the update job builds them as frames
arrive even while they hold no clip."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from skysearch.atomic import atomic_write_json
from skysearch.config import Workspace
from skysearch.errors import UsageError

#: Most frames a clip may hold (the CLI's --length bound too).
MAX_LENGTH = 1000
#: Minutes a frame may sit from its step's time, unless a spec was built with another.
STEP_TOLERANCE_MINUTES = 15
_SPEC = re.compile(r"^(?:(?P<channels>[^_/]+)_)?(?P<length>\d+)x(?P<gap>\d+)m?$")


def spec_name(channels: Sequence[str], length: int, gap_minutes: int) -> str:
    """File stem of one clip spec: ``ir+wv_12x60m``."""
    return f"{'+'.join(channels)}_{length}x{gap_minutes}m"


_FILE_DIMS = re.compile(r"\d+x\d+m")


def is_clip_file(path: Path) -> bool:
    """``path`` has a name ``build_clips`` writes (``ir+wv_12x60m.parquet``); a copy beside
    it ("ir_6x60m (copy).parquet", "Copy of ir_6x60m.parquet") is not read, or its clips
    would be there twice."""
    from skysearch.ingest.profile_fields import FOLDER_NAME

    channels, _, dims = path.stem.rpartition("_")
    return (
        path.suffix == ".parquet"
        and _FILE_DIMS.fullmatch(dims) is not None
        and all(FOLDER_NAME.fullmatch(c) for c in channels.split("+"))
    )


def clip_files(root: Path, satellite_glob: str = "satellite=*") -> list[Path]:
    """The clip catalog's files under ``root`` (of the satellites ``satellite_glob`` names)."""
    return sorted(p for p in root.glob(f"{satellite_glob}/year=*/*.parquet") if is_clip_file(p))


def spec_label(
    channels: str | Sequence[str], length: object, gap_minutes: object, satellite: str = ""
) -> str:
    """A clip spec in messages: ``goes-east ir+wv 12x60m`` (``ir+wv 12x60m`` without a
    satellite; ``channels`` a list or already joined)."""
    chans = channels if isinstance(channels, str) else "+".join(channels)
    return f"{satellite} {chans} {length}x{gap_minutes}m".lstrip()


@dataclass(frozen=True)
class ClipSpec:
    """What ``build_clips`` assembles: ``length`` frames ``gap_minutes`` apart, of
    ``channels`` (None: single-channel clips of every channel of every satellite)."""

    length: int
    gap_minutes: int
    channels: tuple[str, ...] | None = None
    tolerance_minutes: int = STEP_TOLERANCE_MINUTES

    @property
    def text(self) -> str:
        """``12x60`` (every channel) or ``ir+wv_12x60m``, as :meth:`parse` reads it."""
        if self.channels is None:
            return f"{self.length}x{self.gap_minutes}"
        return spec_name(self.channels, self.length, self.gap_minutes)

    @classmethod
    def parse(cls, text: str, param: str = "clip_spec") -> ClipSpec:
        """``12x60`` / ``12x60m`` (single-channel clips of every channel) or a catalog file
        stem ``ir+wv_12x60m``; a UsageError naming ``param`` otherwise."""
        channels, length, gap = spec_parts(text, param)
        return cls(length, gap, tuple(channels) if len(channels) > 1 else None)

    @classmethod
    def from_user(cls, text: str, param: str = "clip_spec") -> ClipSpec:
        """:meth:`parse` for a spec a user wrote: one channel named is refused (single-channel
        clips are built for every channel, so the name would be ignored), and so is a gap
        within the default tolerance (the frames of two steps would overlap)."""
        channels, length, gap = spec_parts(text, param)
        if len(channels) == 1:
            raise UsageError(
                f"{{{param}}} {text!r}: single-channel clips are built for every channel; "
                f"write {length}x{gap}, or name two or more channels (e.g. ir+wv_{length}x{gap}m)",
                params=[param],
            )
        if gap <= STEP_TOLERANCE_MINUTES:
            raise UsageError(
                f"{{{param}}} {text!r}: the gap must be more than the {STEP_TOLERANCE_MINUTES} "
                "minutes a frame may sit from its step",
                params=[param],
            )
        return cls.parse(text, param)


def spec_parts(text: str, param: str = "clip_spec") -> tuple[list[str], int, int]:
    """``ir+wv_12x60m`` -> (["ir", "wv"], 12, 60); ``12x60`` -> ([], 12, 60); a UsageError
    naming ``param`` for anything else."""
    found = _SPEC.match(text.strip())
    if found is None or not 1 <= int(found["length"]) <= MAX_LENGTH or int(found["gap"]) < 1:
        raise UsageError(
            f"{{{param}}} {text!r} is not a clip spec: write LENGTHxGAP_MINUTES, e.g. 12x60, "
            f"or CHANNELS_LxGm for multi-channel clips, e.g. ir+wv_12x60m (length 1-{MAX_LENGTH})",
            params=[param],
        )
    channels = found["channels"].split("+") if found["channels"] else []
    if len(set(channels)) < len(channels):
        raise UsageError(f"{{{param}}} {text!r} names a channel twice", params=[param])
    return channels, int(found["length"]), int(found["gap"])


def spec_key(spec: ClipSpec) -> tuple:
    """What makes two specs the same spec (the tolerance aside)."""
    return spec.length, spec.gap_minutes, spec.channels


def _specs_file(workspace: Workspace) -> Path:
    return workspace.clips_catalog / "specs.json"


def asked_specs(workspace: Workspace) -> list[ClipSpec]:
    """The specs ``build_clips`` was asked for (read back leniently: a damaged file names
    none, and the specs with clips are found from the catalog anyway)."""
    try:
        entries = json.loads(_specs_file(workspace).read_text())["specs"]
        return [
            replace(ClipSpec.parse(e["spec"]), tolerance_minutes=int(e["tolerance_minutes"]))
            for e in entries
        ]
    except (OSError, ValueError, TypeError, KeyError, UsageError):
        return []


def remember_spec(workspace: Workspace, spec: ClipSpec) -> None:
    """Keep a spec asked for, so the update job builds it as frames arrive even while it holds
    no clip (the catalog's file names are the specs that do)."""
    asked = asked_specs(workspace)
    if spec not in asked:
        kept = [s for s in asked if spec_key(s) != spec_key(spec)] + [spec]
        entries = [{"spec": s.text, "tolerance_minutes": s.tolerance_minutes} for s in kept]
        workspace.clips_catalog.mkdir(parents=True, exist_ok=True)
        atomic_write_json(_specs_file(workspace), {"specs": entries}, indent=1)
