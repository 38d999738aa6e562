"""Two typhoons seen at the same hours (Digital Typhoon's events overlap in time): a query given
by a time is one storm's clip or frame, never a mix of both, and never one taken silently; the
predictor pairs a clip with the next clip of the same storm. Built from real 198702 frames and
the same frames mirrored as a second storm, 198799, at the same times."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import first_ir_frames, shared_data
from skysearch.encoders.registry import resolve
from skysearch.ingest.catalog import read_frames
from skysearch.retrieval.search.queries import ClipQuery, QueryResolver
from skysearch.retrieval.store.filters import SearchFilters

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError

FRAMES = 40  # per storm, about one an hour
AT = "1987-04-10T00:00Z"  # both storms have a 6 x 60 min clip starting then


def _mirrored(src: Path, dst: Path) -> None:
    """``src`` with its infrared field mirrored left-right: another storm's frame."""
    with h5py.File(src) as f, h5py.File(dst, "w") as g:
        data = g.create_dataset("infrared", data=np.fliplr(f["infrared"][()]))
        for key, value in f["infrared"].attrs.items():
            data.attrs[key] = value


@pytest.fixture(scope="module")
def storms(tmp_path_factory) -> Workspace:
    """Both storms' frames (and 8 GOES-East IR frames), 6 x 60 min clips, a one-epoch frame
    and clip model on the typhoon clips, both indexed."""
    from skysearch.cli.app import main

    images = sorted(shared_data("digital-typhoon", "image", "198702").glob("*.h5"))
    root = tmp_path_factory.mktemp("storms")
    first = images[:FRAMES]  # 1987-04-09T19Z on
    for event in ("198702", "198799"):
        (root / "image" / event).mkdir(parents=True)
    for path in first:
        shutil.copy(path, root / "image" / "198702" / path.name)
        _mirrored(path, root / "image" / "198799" / path.name.replace("198702", "198799"))
    goes = first_ir_frames(root / "goes", 8)
    ws = root / "ws"
    for args in (
        ["ingest", str(root / "image"), str(goes), "--workers", "1"],
        ["clips", "--length", "6", "--gap", "60"],
        ["train", "frames", "--satellite", "gms3", "--epochs", "1", "--threads", "1"],
        ["train", "clips", "--epochs", "1", "--threads", "1"],
        ["index", "clips"],
        ["index", "frames"],
    ):
        try:
            main([*args, "-w", str(ws)])
        except SystemExit as exc:
            assert not exc.code, args
    return Workspace(ws)


def _events_of(ws: Workspace, frame_ids: list[list[str]]) -> set[str]:
    table = read_frames(ws, columns=["frame_id", "event"]).to_pylist()
    event = {row["frame_id"]: row["event"] for row in table}
    return {event[f] for ids in frame_ids for f in ids}


def test_a_time_two_storms_share_is_refused_naming_both_and_event_picks_one(storms, cli):
    for kind in ("clip", "frame"):
        refused = cli("search", kind, "--at", AT, "--channel", "ir", "-w", storms.root)
        assert refused.exit_code == 2, refused.stderr
        assert f"2 {kind}s fit 1987-04-10T00:00:00Z" in refused.stderr
        assert "event 198702" in refused.stderr and "event 198799" in refused.stderr
        assert f"Pick one with --event, or pass its --{kind}-id" in refused.stderr
        for event in ("198702", "198799"):
            r = cli("search", kind, "--at", AT, "--event", event, "--json", "-w", storms.root)
            assert r.exit_code == 0, r.stderr
            result = json.loads(r.stdout)
            assert result["query"]["event"] == event
            ids = result["query"]["frame_ids"]
            assert _events_of(storms, [ids] if kind == "frame" else ids) == {event}
            assert result["results"][0]["event"] == event


def test_over_http_the_refusal_names_the_requests_own_fields(storms):
    """It said "Pick one with event": the request's field is filters.events."""
    from fastapi.testclient import TestClient
    from skysearch.retrieval.service.app import create_app
    from skysearch.retrieval.service.service import SearchService

    from skysearch.config import Settings

    service = SearchService(Settings(workspace=storms))
    with TestClient(create_app(service)) as client:
        service.wait_ready(60)
        refused = client.post("/search/clip", json={"at": AT, "channels": ["ir"]})
        picked = client.post(
            "/search/clip", json={"at": AT, "channels": ["ir"], "filters": {"events": ["198799"]}}
        )
    assert refused.status_code == 400
    assert "Pick one with filters.events, or pass its clip_id" in refused.json()["detail"]
    assert picked.status_code == 200 and picked.json()["query"]["event"] == "198799"


def test_a_clip_assembled_from_frames_is_one_storms(storms):
    """No 4 x 60 min clips in the catalog: the query is assembled from the frame catalog, of
    one storm's frames (it took some of each)."""
    resolver = QueryResolver(storms)
    data = resolve(storms, "clip").config["data"]
    query = ClipQuery(at=AT, satellite="gms3", channels=("ir",), length=4, gap_minutes=60)
    with pytest.raises(UsageError, match="2 clips fit"):
        resolver.resolve(query, data)
    for event in ("198702", "198799"):
        clip = resolver.resolve(query, data, SearchFilters(events=(event,)))
        assert clip.event == event and _events_of(storms, clip.frame_ids) == {event}


def test_a_storm_the_clip_catalog_lacks_is_assembled_beside_the_others(storms, tmp_path):
    """Storm 198799 ingested after the clips were built: --event 198799 searched with
    198702's catalog clip (and no --event took 198702's silently)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    ws = Workspace(shutil.copytree(storms.root, tmp_path / "ws"))
    (path,) = (ws.clips_catalog / "satellite=gms3").rglob("ir_6x60m.parquet")
    clips = pq.read_table(path)
    pq.write_table(clips.filter(pc.equal(clips["event"], "198702")), path)
    resolver = QueryResolver(ws)
    data = resolve(ws, "clip").config["data"]
    query = ClipQuery(at=AT, satellite="gms3", channels=("ir",), length=6, gap_minutes=60)
    with pytest.raises(UsageError, match="2 clips fit"):
        resolver.resolve(query, data)
    for event in ("198702", "198799"):
        clip = resolver.resolve(query, data, SearchFilters(events=(event,)))
        assert clip.event == event and _events_of(ws, clip.frame_ids) == {event}


def test_a_time_on_the_models_other_satellite_is_found_there(storms):
    """A model of two satellites: a time only one of them covers is that satellite's clip."""
    resolver = QueryResolver(storms)
    data = {
        "satellite": "goes-east",
        "satellites": ["goes-east", "gms3"],
        "channels": ["ir"],
        "length": 6,
        "gap_minutes": 60,
    }
    clip = resolver.resolve(ClipQuery(at=AT), data, SearchFilters(events=("198799",)))
    assert (clip.satellite, clip.event) == ("gms3", "198799")
    goes = resolver.resolve(ClipQuery(at="2017-09-06T00:45Z"), data)
    assert goes.satellite == "goes-east" and goes.event is None


def test_query_files_of_two_storms_are_refused(storms, tmp_path, cli):
    root = Path(storms.root).parent / "image"
    files = [
        *sorted((root / "198702").glob("*.h5"))[:3],
        *sorted((root / "198799").glob("*.h5"))[3:6],
    ]
    args = [a for f in files for a in ("--frames", f)]
    r = cli("search", "clip", *args, "--satellite", "gms3", "-w", storms.root)
    assert r.exit_code == 2 and "the query frames are of 2 events (198702, 198799)" in r.stderr


def test_the_predictor_pairs_a_clip_with_the_next_clip_of_its_own_storm(storms):
    from skysearch.encoders.datasets.clips import load_clip_set
    from skysearch.encoders.predict import _clip_of_spec
    from skysearch.encoders.training.predictor_data import following_rows

    clip_set = load_clip_set(storms, "gms3", ["ir"], 6, 60, what="predictor")
    nxt = following_rows(clip_set)
    events = clip_set.clips["event"].to_pylist()
    pairs = [(i, int(j)) for i, j in enumerate(nxt) if j >= 0]
    assert all(events[i] == events[j] for i, j in pairs), pairs
    per_event = [sum(events[i] == e for i, _ in pairs) for e in ("198702", "198799")]
    assert per_event[0] == per_event[1] > 0, per_event  # the same hours: as many pairs
    with pytest.raises(UsageError, match="Pick one with event, or give its clip id"):
        _clip_of_spec(storms, AT, "gms3", ["ir"], 6, 60, None)
    with pytest.raises(NotFoundError, match="no clip of event 199901 starts near .* 198799"):
        _clip_of_spec(storms, AT, "gms3", ["ir"], 6, 60, "199901")
    assert _clip_of_spec(storms, AT, "gms3", ["ir"], 6, 60, "198799")["event"] == "198799"


def test_the_encoders_triplets_see_each_storm_as_its_own_series(storms):
    """Each step of the clip set is in the series of its storm (what the triplet objective
    keeps positives within)."""
    from skysearch.encoders.datasets.clips import load_clip_set

    clip_set = load_clip_set(storms, "gms3", ["ir"], 6, 60, what="train frames")
    event_of = {r["frame_id"]: r["event"] for r in read_frames(storms).to_pylist()}
    series = clip_set.step_series()
    used = clip_set.used_steps()
    pairs = {(int(series[s]), event_of[clip_set.steps[s][0]]) for s in used}
    assert len(pairs) == 2 and len({s for s, _ in pairs}) == 2, pairs
