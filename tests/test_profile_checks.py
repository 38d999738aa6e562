"""A user's source profile: a value that would be read as something else is refused when the
profile is read, and a profile edited between two ingests into one workspace is refused when it
would make other frames from the same files than the frames already there."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA, shared_data
from skysearch.ingest.pipeline import ingest
from skysearch.ingest.profiles import has_control_character, load_profiles

from skysearch.config import Workspace
from skysearch.errors import UsageError

PROFILE_FILE = Path(__file__).resolve().parent.parent / "ingest/profiles/digital-typhoon.json"
GOES_PROFILE = Path(__file__).resolve().parent.parent / "ingest/profiles/goes-sector.json"
SAMPLE_IR = SAMPLE_DATA / "goes-irma-2017" / "infrared"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"range": [170, None]}, "decoder range must be [low, high] of two finite numbers"),
        ({"range": ["abc", 310]}, "decoder range must be [low, high] of two finite numbers"),
        ({"range": [0, float("inf")]}, "decoder range must be [low, high] of two finite"),
        ({"valid": [True, 300]}, "valid must be [low, high] of two finite numbers"),
        ({"dataset": None}, "dataset must be a string, got None"),  # was the name 'None'
        ({"variable": 5}, "variable must be a string, got 5"),
        ({"time": "time"}, "decoder time names the time coordinate of a file of many frames"),
    ],
)
def test_a_decoder_value_read_as_something_else_is_refused(change, message, tmp_path):
    """Each was accepted: a null or a number became the name 'None' or '5' (every file then
    skipped), an infinite range made every frame one grey, an hdf5 decoder's time key
    skipped every frame as 'not one 2-D frame'."""
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    data = json.loads(PROFILE_FILE.read_text())
    data["decoder"] |= change
    (profiles / "digital-typhoon.json").write_text(json.dumps(data))
    with pytest.raises(UsageError, match="is invalid") as caught:
        load_profiles([profiles])
    assert message in str(caught.value)


def _user_profile(folder: Path, **decoder) -> Path:
    """The GOES sector profile as a user's own (name 'my-goes'), its decoder changed."""
    data = json.loads(GOES_PROFILE.read_text()) | {"name": "my-goes"}
    data["decoder"] = data.get("decoder", {"kind": "image"}) | decoder
    folder.mkdir(exist_ok=True)
    (folder / "my-goes.json").write_text(json.dumps(data))
    return folder


def test_an_edited_profile_that_maps_pixels_otherwise_is_refused(tmp_path):
    """Its files already ingested are 'unchanged' (never decoded again) while new ones took
    the new mapping, and the workspace's copy of the profile was replaced: one catalog held
    two grey mappings without a word."""
    files = sorted(SAMPLE_IR.glob("HUIR17*.GIF"))[:6]
    first, later = tmp_path / "first", tmp_path / "later"
    for folder, chosen in ((first, files[:4]), (later, files[4:])):
        folder.mkdir()
        for path in chosen:
            shutil.copy(path, folder / path.name)
    ws = Workspace(tmp_path / "ws")
    profiles = _user_profile(tmp_path / "profiles")
    done = ingest([first], ws, source="my-goes", profile_dirs=[profiles], progress=False)
    assert done.frames_added == 4
    kept = (ws.profiles_dir / "my-goes.json").read_text()
    _user_profile(profiles, invert=True)
    with pytest.raises(UsageError) as caught:
        ingest([first, later], ws, source="my-goes", profile_dirs=[profiles], progress=False)
    assert "makes other frames than the copy this workspace's frames of it" in caught.value.message
    assert "decoder invert False -> True" in caught.value.message
    assert (ws.profiles_dir / "my-goes.json").read_text() == kept  # nothing written
    # files of another product load meanwhile: the edited profile makes none of their frames
    coms = tmp_path / "coms"
    coms.mkdir()
    for path in sorted(shared_data("coms-2011-03-03").glob("*/coms_mi_le1b_ir01_*.png"))[:2]:
        shutil.copy(path, coms / path.name)
    other = ingest([coms], ws, profile_dirs=[profiles], progress=False)  # --source auto
    assert other.frames_added == 2 and not other.skipped
    # a change that does not touch pixels (its description) is taken, and kept
    data = json.loads((profiles / "my-goes.json").read_text())
    data["decoder"]["invert"] = False
    (profiles / "my-goes.json").write_text(json.dumps(data | {"description": "mine"}))
    more = ingest([first, later], ws, source="my-goes", profile_dirs=[profiles], progress=False)
    assert (more.frames_added, more.unchanged) == (2, 4)
    assert json.loads((ws.profiles_dir / "my-goes.json").read_text())["description"] == "mine"


def test_a_file_name_ending_in_a_line_break_is_skipped_with_its_reason(tmp_path):
    """'$' matches before a final line break: the file was ingested with it in its path."""
    folder = tmp_path / "in"
    folder.mkdir()
    source = sorted(SAMPLE_IR.glob("HUIR17*.GIF"))[0]
    shutil.copy(source, folder / f"{source.name}\n")
    report = ingest([folder], Workspace(tmp_path / "ws"), progress=False)
    assert report.frames_added == 0
    ((path, reason),) = [(s["path"], s["reason"]) for s in report.skipped]
    assert path.endswith("\n") and "holds a control character" in reason
    # a space that is not printable (a no-break one, macOS's narrow one) is no control character
    assert not has_control_character("scan\u00a0of 7 Sep 2017 at 3.15\u202fPM.png")
    assert has_control_character("a\tb.png") and has_control_character("a\x7fb.png")
