"""What one ``skysearch update`` run did, per stage: the summary line and ``--json``."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from skysearch.workflows.steps import Step


@dataclass
class UpdateReport:
    """What one run did, per stage (``--json`` prints ``to_dict()``)."""

    inputs: list[str] = field(default_factory=list)
    #: seen, frames_added, unchanged, identical_duplicates, moved (to another step of their
    #: many-frame file), skipped, suspect (added with physically impossible values), repaired
    files: dict[str, int] = field(default_factory=dict)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"path", "reason"}
    sketches: dict[str, int] = field(default_factory=dict)  # sketched, total
    #: clip spec -> added, removed, total, incomplete, by_spec (satellite/spec file -> clips)
    clips: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: collection -> model id -> points written (new, or embedded again: frames, event, track
    #: or footprint changed)
    points: dict[str, dict[str, int]] = field(default_factory=dict)
    #: collection -> model id -> those of ``points`` that were in the store already, written
    #: again (a corrected best track, a nearer frame); the rest of ``points`` are new
    points_rewritten: dict[str, dict[str, int]] = field(default_factory=dict)
    #: collection -> model id -> points deleted: their frame or clip left the catalog
    points_removed: dict[str, dict[str, int]] = field(default_factory=dict)
    models_skipped: list[dict[str, str]] = field(default_factory=list)  # {"model_id", "reason"}
    #: catalog data no registered model embeds (so not searchable yet), with what to do
    not_indexed: list[str] = field(default_factory=list)
    #: models that failed (a damaged checkpoint...): {"model_id", "error"}; the others ran
    models_failed: list[dict[str, str]] = field(default_factory=list)
    #: collection -> built, points, new_points (since the last build)
    index: dict[str, dict[str, Any]] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)
    seconds: float = 0.0
    ingest_report: str = ""

    @property
    def nothing_new(self) -> bool:
        return not (
            self.files.get("frames_added")
            or self.sketches.get("sketched")
            or any(c["added"] or c.get("removed") for c in self.clips.values())
            or _total(self.points)
            or _total(self.points_removed)
            or any(i["built"] for i in self.index.values())
        )

    @property
    def exit_code(self) -> int:
        """0: everything found was loaded; 1: some files were skipped or a model failed
        (listed)."""
        return 1 if self.skipped or self.models_failed else 0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["stages"] = {s.name: s.seconds for s in self.steps}
        del out["steps"]
        return out | {"nothing_new": self.nothing_new, "exit_code": self.exit_code}

    def summary_line(self) -> str:
        skipped = f", {len(self.skipped)} files skipped" if self.skipped else ""
        if self.models_failed:
            skipped += f", {len(self.models_failed)} models failed"
        if self.nothing_new:
            seen = self.files.get("seen", 0)
            return f"update: nothing new ({seen} files seen{skipped}, {self.seconds:.1f} s)"
        clips = sum(c["added"] for c in self.clips.values())
        rewritten = _total(self.points_rewritten)
        points = _total(self.points) - rewritten
        clips_gone = sum(c.get("removed", 0) for c in self.clips.values())
        points_gone = _total(self.points_removed)
        removed = (
            f", {clips_gone} clips and {points_gone} points removed"
            if clips_gone or points_gone
            else ""
        )
        built = [name for name, i in self.index.items() if i["built"]]
        again = f", {rewritten} points rewritten" if rewritten else ""
        return (
            f"update: {self.files.get('frames_added', 0)} frames, {clips} clips, {points} points "
            f"added{again}{removed}{skipped}; index built for "
            f"{', '.join(built) or 'no collection'} ({self.seconds:.1f} s)"
        )


def _total(per_collection: dict[str, dict[str, int]]) -> int:
    """Points over every collection and model."""
    return sum(n for per_model in per_collection.values() for n in per_model.values())
