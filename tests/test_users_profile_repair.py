"""A product ingested with a user's own source profile: the workspace keeps a copy of the
profile, and repair never drops frames it cannot decode again for want of one."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from integrity_env import SAMPLE_IR

PROFILE = {
    "name": "my-goes",
    "satellite": "my-sat",
    "pattern": r"^MY(?P<channel>IR)(?P<yy>\d{2})(?P<doy>\d{3})"
    r"(?P<hour>\d{2})(?P<minute>\d{2})\.GIF$",
    "channels": {"IR": "ir"},
    "crops": [{"width": 720, "height": 480, "box": ["0", "0", "W", "H-12"]}],
    "resolution": [360, 234],
    "cadence_minutes": 30,
}
MY_FRAMES = Path("frames/my-sat/ir/2017/frames.u8")


def _users_product(root: Path) -> tuple[Path, Path]:
    """A profile folder holding PROFILE, and two sample GIFs renamed to its pattern."""
    profiles, src = root / "profiles", root / "src"
    profiles.mkdir()
    src.mkdir()
    (profiles / "mine.json").write_text(json.dumps(PROFILE))
    for name in ("HUIR172490045.GIF", "HUIR172490145.GIF"):
        shutil.copy(SAMPLE_IR / name, src / name.replace("HU", "MY"))
    return profiles, src


def _damage_row_0(ws: Path) -> None:
    with open(ws / MY_FRAMES, "r+b") as data:
        data.seek(1000)
        data.write(b"\xff" * 500)


def test_a_users_profile_is_kept_in_the_workspace_and_repair_without_one_drops_nothing(
    tmp_path, cli
):
    """Frames of a user's profile: the workspace keeps a copy of the profile, so repair (and
    search) know the product without --profiles. A repair that does not know the profile (a
    workspace ingested before copies were kept) cannot decode them again: it touches nothing
    and says to pass the profiles (it dropped every frame of the array, intact ones too)."""
    from skysearch.ingest.catalog import read_frames
    from skysearch.retrieval.search.queries import QueryResolver

    from skysearch.config import Workspace

    profiles, src = _users_product(tmp_path)
    ws = tmp_path / "ws"
    assert cli("ingest", src, "--profiles", profiles, "-w", ws).exit_code == 0
    kept = ws / "profiles" / "my-goes.json"
    assert kept.read_text() == (profiles / "mine.json").read_text()
    assert QueryResolver(Workspace(ws)).profile("my-sat").name == "my-goes"  # query files
    later = kept.parent / "later.json"  # kept by an ingest while a service runs: seen
    later.write_text(json.dumps(PROFILE | {"name": "later", "satellite": "later-sat"}))
    assert QueryResolver(Workspace(ws)).profile("later-sat").name == "later"
    later.unlink()
    # a profile changed under the frames it made: the ingest is refused, the copy kept
    (profiles / "mine.json").write_text(json.dumps(PROFILE | {"resolution": [180, 117]}))
    changed = cli("ingest", src, "--profiles", profiles, "-w", ws)
    assert changed.exit_code == 2 and "resolution [360, 234] -> [180, 117]" in changed.stderr
    (profiles / "mine.json").write_text(kept.read_text())
    assert json.loads(kept.read_text())["resolution"] == [360, 234]

    _damage_row_0(ws)
    r = cli("repair", "-w", ws, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["lost_frames"] == [], r.stderr
    shutil.rmtree(kept.parent)  # as a workspace ingested before copies were kept
    _damage_row_0(ws)
    r = cli("repair", "-w", ws, "--json")
    assert r.exit_code == 1 and json.loads(r.stdout)["lost_frames"] == [], r.stderr
    assert "source profile my-goes, not known here: pass the folder" in r.stderr
    assert read_frames(Workspace(ws)).num_rows == 2
    r = cli("repair", "--profiles", profiles, "-w", ws, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["lost_frames"] == [], r.stderr
    assert cli("doctor", "--deep", "-w", ws).exit_code == 0


def test_a_repair_that_cannot_ingest_again_past_an_array_it_left_says_so(tmp_path, cli):
    """A damaged catalog part is set aside and its frames ingested again; an array of a product
    whose profile repair does not know is left as it is, and stops that ingest (nothing is
    appended to a damaged array): the report says so and keeps the part, and a repair given
    the profiles then mends both."""
    from skysearch.ingest.catalog import read_frames

    from skysearch.config import Workspace

    profiles, src = _users_product(tmp_path)
    goes = tmp_path / "goes"
    goes.mkdir()
    for name in ("HUIR172500045.GIF", "HUIR172500145.GIF", "HUIR172500245.GIF"):
        shutil.copy(SAMPLE_IR / name, goes / name)
    ws = tmp_path / "ws"
    assert cli("ingest", src, "--profiles", profiles, "-w", ws).exit_code == 0
    assert cli("ingest", goes, "-w", ws).exit_code == 0
    shutil.rmtree(ws / "profiles")  # as a workspace ingested before copies were kept
    _damage_row_0(ws)
    (part,) = (ws / "catalog/frames/satellite=goes-east/year=2017").glob("*.parquet")
    part.write_bytes(b"garbage")
    r = cli("repair", "-w", ws, "--json")
    assert r.exit_code == 1 and "Traceback" not in r.stderr, r.stderr
    actions = json.loads(r.stdout)["actions"]
    said = [a["done"] for a in actions if not a["ok"]]
    assert any("nothing ingested again:" in d and str(MY_FRAMES) in d for d in said), actions
    kept = [a["done"] for a in actions if part.name in a["path"]]
    assert kept and "kept: run repair again with --profiles DIR" in kept[0], actions
    r = cli("repair", "--profiles", profiles, "-w", ws, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["lost_frames"] == [], r.stderr
    assert read_frames(Workspace(ws)).num_rows == 5
    assert cli("doctor", "--deep", "-w", ws).exit_code == 0
