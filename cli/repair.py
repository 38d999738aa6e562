"""``skysearch repair``: rebuild the damaged files of a workspace from its sources."""

from __future__ import annotations

from skysearch.cli.app import app
from skysearch.cli.options import JsonOption, ProfilesOption, WorkspaceOption
from skysearch.cli.output import emit_json, info

from skysearch.config import load_settings


@app.command()
def repair(
    profiles: ProfilesOption = None,
    workspace: WorkspaceOption = None,
    json_out: JsonOption = False,
) -> None:
    """Check every file of the workspace (as doctor --deep) and rebuild what is damaged.

    Frames are decoded again from their source files, sketches from the frames, catalog files
    from the other files and the source folders, store collections re-indexed with the
    registered models, a lost model registry from the model folders. Says what could not be
    rebuilt (a damaged model's weights: it is unregistered, to train again; the embedded store
    while another process such as skysearch serve holds it). Exit code 0 when everything is
    whole again, 1 when something could not be rebuilt.

    Example: skysearch repair -w ws
    """
    from skysearch.workflows.repair import IN_USE, repair_workspace

    settings = load_settings(workspace=workspace)
    report = repair_workspace(settings, profile_dirs=profiles)
    for action in report.actions:
        said = "repaired" if action.ok else "NOT repaired"
        info(f"{'not checked' if action.problem == IN_USE else said} {action.path}: {action.done}")
    for frame in report.lost_frames[:20]:
        info(f"lost frame {frame['frame_id']}: {frame['reason']}")
    for problem in report.remaining[:20]:
        info(f"still wrong: {problem['path']}: {problem['what']}")
    info(report.summary_line())
    if json_out:
        emit_json(report.to_dict())
    if not report.ok:
        raise SystemExit(1)
