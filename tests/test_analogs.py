"""``eval analogs`` on real Digital Typhoon frames: two events made from 198702 (its first 40
frames, and the next 40 renamed to a second typhoon 198799, a week later, with the best track
shifted alike), a small trained clip model, and the other-events numbers checked against a
brute-force computation written here from the files themselves."""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timedelta

import numpy as np
import pytest
from conftest import shared_data
from skysearch.encoders.registry import resolve
from skysearch.ingest.clips import read_clips
from skysearch.ingest.framestore import FrameStore
from skysearch.ingest.tracks import ingest_tracks
from skysearch.retrieval.evaluation.analogs import NO_TRACK, ONE_EVENT, evaluate_analogs
from skysearch.retrieval.evaluation.clips import EvalOptions

from skysearch.config import Workspace
from skysearch.timeutil import parse_time

SHIFT = timedelta(days=7)
FRAMES = 40  # per event
K = 5


def _shifted_track(text: str) -> str:
    lines = []
    for line in text.splitlines():
        cells = line.split("\t")
        t = datetime(*(int(c) for c in cells[:4])) + SHIFT
        cells[:4] = [f"{t.year}", f"{t.month:02d}", f"{t.day:02d}", f"{t.hour:02d}"]
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def two_storms(tmp_path_factory):
    """(workspace, {event: track path}): frames of both events, 6 x 60 min clips, a one-epoch
    clip model; no best track loaded yet."""
    from skysearch.encoders.training.clips import train_clips
    from skysearch.encoders.training.frames import DataSpec, train_frames
    from skysearch.encoders.training.objectives import EncoderTrainConfig
    from skysearch.ingest.clips import build_clips
    from skysearch.ingest.pipeline import ingest

    images = sorted(shared_data("digital-typhoon", "image", "198702").glob("*.h5"))
    track = shared_data("digital-typhoon", "jma", "198702.tsv")
    root = tmp_path_factory.mktemp("analogs")
    for event in ("198702", "198799"):
        (root / "image" / event).mkdir(parents=True)
    for path in images[:FRAMES]:
        shutil.copy(path, root / "image" / "198702" / path.name)
    for path in images[FRAMES : 2 * FRAMES]:
        t = datetime.strptime(path.name[:10], "%Y%m%d%H") + SHIFT
        shutil.copy(path, root / "image" / "198799" / f"{t:%Y%m%d%H}-198799-GMS3-1.h5")
    (root / "tracks").mkdir()
    shutil.copy(track, root / "tracks" / "198702.tsv")
    (root / "tracks" / "198799.tsv").write_text(_shifted_track(track.read_text()))
    ws = Workspace(root / "ws")
    ingest([root / "image"], ws, workers=1, progress=False)
    build_clips(ws, length=6, gap_minutes=60)
    config = EncoderTrainConfig(objective="triplet", epochs=1, batch_size=16, device="cpu")
    train_frames(ws, DataSpec(), config)
    train_clips(ws, config)
    return ws, {e: root / "tracks" / f"{e}.tsv" for e in ("198702", "198799")}


def _options(baselines: bool) -> EvalOptions:
    return EvalOptions(k=K, baselines=baselines, device="cpu")


def brute_force(ws: Workspace, tracks: dict, setting: str) -> dict[str, float]:
    """Raw pixels (64 x 64 block means per frame, clips concatenated), top 5 by Euclidean
    distance, scored by the track rows at each clip's last frame: from the files alone."""
    rows = {}
    for event, path in tracks.items():
        for line in path.read_text().splitlines():
            c = line.split("\t")
            rows[(event, datetime(*(int(x) for x in c[:4])))] = (
                int(c[4]),
                float(c[7]),
                float(c[8]),
            )
    clips = read_clips(ws).to_pylist()
    store = FrameStore(ws)
    vectors = []
    for clip in clips:
        frames = store.read_many(clip["frame_ids"][0]).astype(np.float64) / 255
        blocks = frames.reshape(len(frames), 64, 4, 64, 4).mean(axis=(2, 4))
        vectors.append(blocks.ravel())
    last = {  # a clip's last frame time = its nominal end (the frames sit on the hour)
        i: rows.get((clip["event"], clip["end"].replace(tzinfo=None)))
        for i, clip in enumerate(clips)
    }
    holdout = parse_time(resolve(ws, "clip", None).config["data"]["holdout_start"])
    scores, bounds = [], []
    for q, query in enumerate(clips):
        if query["start"] < holdout or last[q] is None:
            continue
        candidates = [
            i
            for i, clip in enumerate(clips)
            if abs((clip["start"] - query["start"]).total_seconds()) > 12 * 3600
            and last[i] is not None
            and (clip["event"] == query["event"]) == (setting == "same_event")
        ]
        if len(candidates) < K:
            continue
        dist = [np.linalg.norm(vectors[i] - vectors[q]) for i in candidates]
        top = [candidates[j] for j in np.argsort(dist, kind="stable")[:K]]
        scores.append(
            (
                np.mean([abs(last[i][1] - last[q][1]) for i in top]),
                np.mean([last[i][0] == last[q][0] for i in top]),
                np.mean([abs(last[i][2] - last[q][2]) for i in top]),
            )
        )
        same_class = sum(last[i][0] == last[q][0] for i in candidates)
        bounds.append(
            (
                np.mean(sorted(abs(last[i][1] - last[q][1]) for i in candidates)[:K]),
                min(same_class, K) / K,
                np.mean(sorted(abs(last[i][2] - last[q][2]) for i in candidates)[:K]),
            )
        )
    pressure, agree, wind = np.mean(scores, axis=0)
    best = dict(zip(("pressure", "class", "wind"), np.mean(bounds, axis=0), strict=True))
    return {
        "queries": len(scores),
        "pressure": pressure,
        "class": agree,
        "wind": wind,
        **{f"best_{name}": value for name, value in best.items()},
    }


def test_without_any_track_every_number_is_na(two_storms):
    ws, _ = two_storms
    result = evaluate_analogs(ws, None, _options(baselines=False))
    assert result["same_event"] == {"n/a": NO_TRACK}
    assert result["other_events"] == {"n/a": NO_TRACK}
    assert result["protocol"]["clips_with_track"] == 0


def test_one_event_with_a_track_says_other_events_needs_two(two_storms):
    ws, tracks = two_storms
    shutil.rmtree(ws.catalog_dir / "tracks", ignore_errors=True)
    ingest_tracks(ws, tracks["198799"])
    result = evaluate_analogs(ws, None, _options(baselines=False))
    assert result["other_events"] == {"n/a": ONE_EVENT}
    same = result["same_event"]
    assert same["queries"] > 0 and set(same["pressure_mae_hpa"]) == {
        "trained",
        "grid_metric",
        "random",
        "best_possible",
    }
    assert result["protocol"]["events_with_track"] == ["198799"]


def test_other_events_match_a_brute_force_computation(two_storms, cli):
    ws, tracks = two_storms
    for path in tracks.values():
        ingest_tracks(ws, path)
    done = cli("eval", "analogs", "--device", "cpu", "--json", "-w", ws.root)
    assert done.exit_code == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert "other_events:" in done.stderr and "raw_pixels" in done.stderr
    methods = {"trained", "raw_pixels", "imagenet", "grid_metric", "random", "best_possible"}
    for setting in ("same_event", "other_events"):
        scores = result[setting]
        assert set(scores["pressure_mae_hpa"]) == methods
        expected = brute_force(ws, tracks, setting)
        assert scores["queries"] == expected["queries"] > 0
        assert scores["pressure_mae_hpa"]["raw_pixels"] == pytest.approx(expected["pressure"])
        assert scores["class_agreement_at_k"]["raw_pixels"] == pytest.approx(expected["class"])
        assert scores["wind_mae_kt"]["raw_pixels"] == pytest.approx(expected["wind"])
        for metric, name in (("pressure_mae_hpa", "pressure"), ("wind_mae_kt", "wind")):
            assert scores[metric]["best_possible"] == pytest.approx(expected[f"best_{name}"])
            assert scores[metric]["best_possible"] <= min(scores[metric].values()) + 1e-9
        best_class = scores["class_agreement_at_k"]["best_possible"]
        assert best_class == pytest.approx(expected["best_class"])
        assert best_class >= max(scores["class_agreement_at_k"].values()) - 1e-9
        for metric in ("pressure_mae_hpa", "wind_mae_kt"):
            assert all(np.isfinite(v) and v >= 0 for v in scores[metric].values())
    assert result["protocol"]["events_with_track"] == ["198702", "198799"]
    record = resolve(ws, "clip", None)
    assert record.metrics["analogs_other_events_pressure_mae_hpa"] == pytest.approx(
        result["other_events"]["pressure_mae_hpa"]["trained"]
    )


def test_indexed_clips_carry_their_track_and_filter_by_it(two_storms, cli, tmp_path):
    """``index clips`` after ``ingest-track`` (the clips indexed before it are written again):
    each clip's payload holds its event and the track row at its last frame; --event /
    --min-class / --max-pressure / --bbox keep exactly the clips a brute-force pass over those
    rows (and the clips' footprints) keeps."""
    import shutil

    from skysearch.ingest.tracks import track_rows, tracks_dir
    from skysearch.retrieval.store import open_store

    ws = Workspace(tmp_path / "ws")  # the shared one may hold tracks already
    shutil.copytree(two_storms[0].root, ws.root)
    shutil.rmtree(tracks_dir(ws), ignore_errors=True)
    tracks = two_storms[1]
    assert cli("index", "clips", "-w", ws.root).exit_code == 0  # before the tracks
    for path in tracks.values():
        ingest_tracks(ws, path)
    clips = read_clips(ws).to_pylist()
    tracked = cli("index", "clips", "-w", ws.root, "--json")  # the tracks change the payloads
    report = json.loads(tracked.stdout)
    assert report["written"] == report["changed"] == len(clips) and report["skipped_existing"] == 0
    assert f"({len(clips)} again: frames, event, track or footprint changed)" in tracked.stderr
    again = cli("index", "clips", "-w", ws.root, "--json")  # payloads match: nothing rewritten
    assert json.loads(again.stdout)["skipped_existing"] == len(clips)
    frame_times = {}
    for event in ("198702", "198799"):
        for row in read_frames_of(ws, event):
            frame_times[row["frame_id"]] = row["time"]
    expected = {}
    for clip in clips:
        (row,) = track_rows(ws, clip["event"], [frame_times[clip["frame_ids"][0][-1]]])
        expected[clip["clip_id"]] = (clip["event"], row)
    boxes = {c["clip_id"]: [c["west"], c["south"], c["east"], c["north"]] for c in clips}
    with open_store(None, str(ws.store_dir)) as store:
        payloads = {r.payload["clip_id"]: r.payload for r in store.scroll("clips")}
    assert payloads.keys() == expected.keys()
    for clip_id, (event, row) in expected.items():
        p = payloads[clip_id]
        assert p["event"] == event
        assert (p["track_class"], p["pressure_hpa"]) == (row["class"], row["pressure_hpa"])
        assert p["location"] == {"lon": row["lon"], "lat": row["lat"]}
        assert [p[n] for n in ("west", "south", "east", "north")] == boxes[clip_id]
    pressures = sorted({row["pressure_hpa"] for _, row in expected.values()})
    cut = pressures[len(pressures) // 2]
    query = clips[0]["clip_id"]
    found = cli(
        "search", "clip", "--clip-id", query, "--event", "198799", "--max-pressure", cut,
        "--k", "1000", "--json", "-w", ws.root,
    )  # fmt: skip
    assert found.exit_code == 0, found.stderr
    hits = json.loads(found.stdout)["results"]
    want = {c for c, (e, row) in expected.items() if e == "198799" and row["pressure_hpa"] <= cut}
    assert {r["id"] for r in hits} == want and want
    for hit in hits:  # each hit says how strong its storm was at the clip's end
        row = expected[hit["id"]][1]
        assert (hit["track_class"], hit["pressure_hpa"]) == (row["class"], row["pressure_hpa"])
        assert hit["wind_kt"] == row["wind_kt"]
        assert hit["location"] == {"lon": row["lon"], "lat": row["lat"]}
    table = cli("search", "clip", "--clip-id", query, "--event", "198799", "-w", ws.root)
    typo = cli("search", "clip", "--clip-id", query, "--event", "19879", "-w", ws.root)
    assert typo.exit_code == 2 and "filter events: unknown '19879': the archive has events" in (
        typo.stderr
    )
    assert "198799" in typo.stderr  # an event that matches nothing is said, with those it has
    assert table.stdout.splitlines()[0].split()[:8] == [
        "rank", "score", "start", "channel", "satellite", "event", "class", "hPa"
    ]  # fmt: skip
    lats = sorted({row["lat"] for _, row in expected.values()})
    south = lats[0] - 0.01
    north = (lats[len(lats) // 2] + lats[len(lats) // 2 + 1]) / 2  # no point on the edge
    boxed = cli(
        "search", "clip", "--clip-id", query, "--bbox", f"100,{south},180,{north}",
        "--k", "1000", "--json", "-w", ws.root,
    )  # fmt: skip
    got = {r["id"] for r in json.loads(boxed.stdout)["results"]}
    # kept: the storm centre inside, or the clip's footprint (its frames' union box) meeting it
    inside = {c for c, (_, row) in expected.items() if south <= row["lat"] <= north}
    meets = {
        c["clip_id"] for c in clips
        if c["west"] <= 180 and c["east"] >= 100 and c["south"] <= north and c["north"] >= south
    }  # fmt: skip
    assert got == inside | meets and meets - inside


def read_frames_of(ws: Workspace, event: str) -> list[dict]:
    from skysearch.ingest.catalog import read_frames

    table = read_frames(ws, columns=["frame_id", "time", "event"])
    return [r for r in table.to_pylist() if r["event"] == event]
