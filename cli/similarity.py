"""``skysearch similarity``: the ground-truth grid KS similarity of two clips."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from skysearch.cli.app import app
from skysearch.cli.options import ClipEventOption, JsonOption, WorkspaceOption, names, one_name
from skysearch.cli.output import emit_json, info, table

from skysearch.config import Workspace, load_settings
from skysearch.errors import UsageError

if TYPE_CHECKING:
    from skysearch.ingest.similarity import GridSpec, SketchedClip

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)


@app.command()
def similarity(
    clip_a: Annotated[str, typer.Argument(help="Clip: folder, catalog clip id, or ISO time.")],
    clip_b: Annotated[str, typer.Argument(help="Clip: folder, catalog clip id, or ISO time.")],
    mode: Annotated[
        str,
        typer.Option(
            help="clean (exact grid partition) or reference (bit-exact with the published C++)."
        ),
    ] = "clean",
    grid: Annotated[int, typer.Option(help="Grid size N (N x N cells).")] = 24,
    bins: Annotated[int, typer.Option(help="Grey-level bins B per cell.")] = 20,
    channel: Annotated[
        str | None,
        typer.Option(help="For a clip given by time: its channels, comma-separated (ir,wv)."),
    ] = None,
    length: Annotated[
        int | None, typer.Option(help="For a clip given by time: frames.", min=1, max=1000)
    ] = None,
    gap: Annotated[
        int | None, typer.Option(help="For a clip given by time: minutes.", min=1)
    ] = None,
    satellite: Annotated[str | None, typer.Option(help="For a clip given by time.")] = None,
    event: ClipEventOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Grid Kolmogorov-Smirnov similarity of two clips (1 = identical grey-level layout).

    A clip is a folder (image_1/, image_2/, ... each holding {channel}.png, as the reference
    implementation's videos; or one frame: a folder of {channel}.png), a catalog clip id, or
    a start time (then --channel/--length/--gap/--satellite/--event pick the catalog clip).

    Example: skysearch similarity ../shared/data/coms-golden/video_1
    ../shared/data/coms-golden/video_2 --mode reference --json
    """
    from skysearch.ingest.similarity import GridSpec, compare_clips

    spec = GridSpec(grid, bins, mode)  # type: ignore[arg-type]
    settings = load_settings(workspace=workspace)
    chans, sat = names(channel, "channel") or None, one_name(satellite, "satellite")
    clips = [
        _resolve(text, spec, settings.workspace, chans, length, gap, sat, one_name(event, "event"))
        for text in (clip_a, clip_b)
    ]
    score = compare_clips(*clips)
    rows = [{"channel": c, "similarity": f"{v:.6f}"} for c, v in score.channels.items()]
    rows.append({"channel": "overall", "similarity": f"{score.similarity:.6f}"})
    info(f"{clips[0].source} vs {clips[1].source}  ({spec.mode}, N={grid}, B={bins})")
    info(table(rows, ["channel", "similarity"]))
    if json_out:
        emit_json(score.as_dict())


def _resolve(
    text: str,
    spec: GridSpec,
    workspace: Workspace,
    channels: tuple[str, ...] | None,
    length: int | None,
    gap: int | None,
    satellite: str | None,
    event: str | None,
) -> SketchedClip:
    """A CLIP argument -> SketchedClip: a folder, a clip id, or a time."""
    from skysearch.ingest.similarity import (
        SketchStore,
        find_clip,
        sketch_catalog_clip,
        sketch_folder,
    )

    path = Path(text)
    if path.is_dir():
        return sketch_folder(path, spec)
    store = SketchStore(workspace, spec)
    if _UUID.match(text):
        return sketch_catalog_clip(store, text)
    if path.exists():
        raise UsageError(f"{text} is a file: a clip folder holds image_1/, image_2/, ... folders")
    if "/" in text or "\\" in text:
        raise UsageError(f"folder not found: {text}")
    if not text[:4].isdigit():
        raise UsageError(f"{text!r}: no such folder, and not a clip id or an ISO time")
    clip_id = find_clip(workspace, text, channels, length, gap, satellite, event)
    return sketch_catalog_clip(store, clip_id)
