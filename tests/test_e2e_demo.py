"""End to end: the README path through the CLI on the bundled real sample.

``skysearch demo`` (ingest, clips, train, index, clip search + contact sheet, text-image model,
scenes, text search) with short training, then the search commands a user types next, checked
on their results: a clip's nearest neighbour is itself or a time neighbour, scores are sorted,
filters hold, the contact sheet has the layout's size, a text query finds its class; the
errors a trained workspace can still give; and a second demo run reuses everything.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
from contextlib import redirect_stderr, redirect_stdout
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import SAMPLE_DATA, held
from PIL import Image
from skysearch.retrieval.search.contact_sheet import layout_for

from skysearch.timeutil import parse_time

pytestmark = pytest.mark.slow  # a real demo run (about 3 minutes on 2 loaded cores)

QUICK = ["--frame-epochs", "3", "--clip-epochs", "10", "--text-epochs", "4"]
QUERY_AT = "2017-09-07T00:45Z"
FRAME_SHAPE = (234, 360)  # goes-sector working resolution (H, W)


def run_cli(*args: str) -> tuple[int, str, str]:
    """``skysearch ARGS`` in-process, for module-scoped fixtures (no capsys there)."""
    from skysearch.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict]:
    ws = tmp_path_factory.mktemp("demo")
    code, out, err = run_cli("demo", *QUICK, "-w", ws, "--json")
    assert code == 0, err[-3000:]
    return ws, json.loads(out.strip().splitlines()[-1])


def search(cli, ws: Path, *args: str) -> dict:
    r = cli("search", *args, "-w", ws, "--json")
    assert r.exit_code == 0, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def assert_sorted(results: list[dict]) -> None:
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True), scores
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))


def test_demo_reports_every_step_and_its_outputs(demo):
    ws, report = demo
    names = [s["name"] for s in report["steps"]]
    assert names[0] == "ingest GOES-East sample" and names[-1] == "search text"
    assert "train clip encoder" in names and "search clip + contact sheet" in names
    assert all(s["seconds"] >= 0 for s in report["steps"])
    ingest = report["steps"][0]["detail"]
    assert "60 frames added" in ingest and "HUIR172502115.GIF" in ingest
    for key in ("contact_sheet", "clip_search", "text_search", "summary"):
        assert Path(report["outputs"][key]).is_file(), key
    # the demo's clip search: 5 hits outside +-6 h of the query, re-ranked by the metric
    clip = report["clip_search"]
    assert clip["schema"] == "skysearch.search/1" and clip["query"]["ranked_by"] == "rerank"
    hits = clip["results"]
    assert len(hits) == 5
    assert_sorted(hits)
    query_start = parse_time(clip["query"]["start"])
    for hit in hits:
        assert abs(parse_time(hit["start"]) - query_start) > timedelta(hours=6)
        assert hit["rerank_score"] == hit["score"] and len(hit["frame_ids"][0]) == 6
    with Image.open(report["outputs"]["contact_sheet"]) as sheet:
        assert sheet.size == layout_for(FRAME_SHAPE, 6, 6, 160).size


def test_demo_frame_search_by_a_file(demo):
    """The demo's frame search: a sample file as a frame from outside the archive (its time
    read from its name), 5 hits outside +-6 h of it, re-ranked by the grid metric on single
    frames, and a contact sheet of one column (the query frame, then each hit)."""
    _, report = demo
    frame = report["frame_search"]
    assert frame["query"]["kind"] == "frame" and frame["query"]["mode"] == "file"
    assert frame["query"]["start"] == "2017-09-07T00:45:00Z"
    assert frame["query"]["files"][0].endswith("HUIR172500045.GIF")
    assert frame["query"]["ranked_by"] == "rerank"
    hits = frame["results"]
    assert len(hits) == 5
    assert_sorted(hits)
    for hit in hits:
        assert hit["kind"] == "frame" and hit["frame_ids"] == [hit["id"]]
        assert abs(parse_time(hit["start"]) - parse_time(QUERY_AT)) > timedelta(hours=6)
        assert hit["rerank_score"] == hit["score"] and 0 < hit["score"] < 1
    with Image.open(report["outputs"]["frame_contact_sheet"]) as sheet:
        assert sheet.size == layout_for(FRAME_SHAPE, 6, 1, 160).size


def test_text_search_finds_the_class(demo, cli):
    ws, report = demo
    top = [r["label"] for r in report["text_search"]["results"]]
    assert top[0] == "dRiverLake" and top.count("dRiverLake") >= 3, top
    # The demo left the model's text side for the README's next command, which loads only it.
    model = report["text_search"]["query"]["model_id"]
    assert (ws / "models" / model / "text_query.pt").is_file()
    out = search(cli, ws, "text", "a parking lot with many cars", "--k", "5")
    assert out["query"]["kind"] == "text"
    assert_sorted(out["results"])
    labels = [r["label"] for r in out["results"]]
    assert labels[0] == "gParking" and labels.count("gParking") >= 3, labels
    image = SAMPLE_DATA / "rsscn7-mini" / "eForest" / "e001.jpg"
    out = search(cli, ws, "image", str(image), "--k", "3")
    assert out["results"][0]["source_path"] == str(image.resolve())
    assert out["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_clip_search_by_id_finds_itself_then_neighbours(demo, cli):
    ws, report = demo
    clip_id = report["clip_search"]["query"]["clip_id"]
    out = search(cli, ws, "clip", "--clip-id", clip_id, "--k", "5")
    assert out["query"]["mode"] == "clip_id" and out["query"]["start"] == "2017-09-07T00:45:00Z"
    hits = out["results"]
    assert_sorted(hits)
    assert hits[0]["id"] == clip_id and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
    # the next hits are clips close in time (overlapping frames), not far-away days
    near = [abs(parse_time(h["start"]) - parse_time(QUERY_AT)) for h in hits[1:3]]
    assert all(d <= timedelta(hours=3) for d in near), near


def test_clip_search_by_time_with_filters_and_rerank(demo, cli, tmp_path):
    ws, _ = demo
    sheet = tmp_path / "sheet.png"
    out = search(
        cli,
        ws,
        "clip",
        "--at",
        QUERY_AT,
        "--channel",
        "ir",
        "--rerank",
        "30",
        "--one-per-day",
        "--k",
        "3",
        "--contact-sheet",
        sheet,
    )
    hits = out["results"]
    assert out["query"]["ranked_by"] == "rerank" and out["filters"]["one_per_day"]
    assert_sorted(hits)
    assert len({h["start"][:10] for h in hits}) == len(hits)  # one per day
    assert hits[0]["start"] == "2017-09-07T00:45:00Z"  # itself: grid similarity 1
    assert hits[0]["rerank_score"] == pytest.approx(1.0)
    with Image.open(sheet) as image:
        assert image.size == layout_for(FRAME_SHAPE, 1 + len(hits), 6, 160).size
    assert out["contact_sheet"]["rows"] == 1 + len(hits)
    nowhere = "/proc/skysearch-sheet.png"  # a folder no one can write into
    r = cli("search", "clip", "--at", QUERY_AT, "--contact-sheet", nowhere, "-w", ws)
    _assert_error(r, f"cannot write contact sheet {nowhere}")
    under_a_file = sheet / "x.png"  # was "File exists"
    r = cli("search", "clip", "--at", QUERY_AT, "--contact-sheet", under_a_file, "-w", ws)
    _assert_error(r, f"{sheet} is a file, not a folder")
    # time filters
    out = search(
        cli, ws, "clip", "--at", QUERY_AT, "--between", "2017-09-06T00:00Z..2017-09-06T12:00Z"
    )
    starts = [parse_time(h["start"]) for h in out["results"]]
    assert starts and all(s.day == 6 and s.hour <= 12 for s in starts)
    out = search(cli, ws, "clip", "--at", QUERY_AT, "--hours", "0-5", "--k", "20")
    assert out["results"] and all(parse_time(h["start"]).hour <= 5 for h in out["results"])
    # --exclude-window 12h keeps exactly the clips starting more than 12 h from the query (the
    # 12 of the morning of Sep 6 and the 7 of Sep 7's afternoon; Sep 8 is two-hourly, so no
    # 6x60m clip starts then), ranked as without the window.
    every = search(cli, ws, "clip", "--at", QUERY_AT, "--k", "100")["results"]
    assert len(every) == 44
    far = [
        h for h in every if abs(parse_time(h["start"]) - parse_time(QUERY_AT)) > timedelta(hours=12)
    ]
    assert len(far) == 12 + 7
    out = search(cli, ws, "clip", "--at", QUERY_AT, "--exclude-window", "12h", "--k", "100")
    assert out["results"], "the window left no hit"
    assert [h["id"] for h in out["results"]] == [h["id"] for h in far]
    assert out["filters"]["exclude_window_s"] == 12 * 3600


def test_clip_search_by_frame_files_from_outside_the_archive(demo, cli, tmp_path):
    ws, _ = demo
    folder = tmp_path / "query"
    folder.mkdir()
    src = SAMPLE_DATA / "goes-irma-2017" / "infrared"
    for hour in range(3, 9):  # 2017-09-07 03:45 .. 08:45 (day of year 250)
        shutil.copy(src / f"HUIR17250{hour:02d}45.GIF", folder)
    out = search(cli, ws, "clip", "--frames", folder, "--rerank", "10", "--k", "3")
    assert out["query"]["mode"] == "frames" and len(out["query"]["files"]) == 6
    assert out["query"]["start"] == "2017-09-07T03:45:00Z"  # from the file names
    top = out["results"][0]
    assert top["start"] == "2017-09-07T03:45:00Z"
    assert top["rerank_score"] == pytest.approx(1.0)  # same pixels as the archive's clip


def test_untimed_frame_files_keep_the_order_given(demo, cli, tmp_path):
    """Names without a time were sorted as strings: frame8..frame13 became 10, 11, 12, 13, 8,
    9, a scrambled query clip (the service kept the order sent). Given as files they keep the
    order typed; a folder's are listed with numbers by value."""
    ws, _ = demo
    folder = tmp_path / "query"
    folder.mkdir()
    src = SAMPLE_DATA / "goes-irma-2017" / "infrared"
    for step, hour in enumerate(range(3, 9)):
        shutil.copy(src / f"HUIR17250{hour:02d}45.GIF", folder / f"frame{step + 8}.gif")
    names = [f"frame{n}.gif" for n in range(8, 14)]
    typed = search(cli, ws, "clip", *[a for n in names for a in ("--frames", folder / n)],
                   "--rerank", "10", "--k", "3")  # fmt: skip
    listed = search(cli, ws, "clip", "--frames", folder, "--rerank", "10", "--k", "3")
    for out in (typed, listed):
        assert [Path(f).name for f in out["query"]["files"]] == names
        top = out["results"][0]
        assert top["start"] == "2017-09-07T03:45:00Z"
        assert top["rerank_score"] == pytest.approx(1.0)


def test_clip_query_frames_must_be_the_models_steps_apart(demo, cli, tmp_path):
    """Frames at other spacings, a frame given twice, or timed and untimed names mixed are one
    error line each (they would match meaningless clips)."""
    ws, _ = demo
    src = SAMPLE_DATA / "goes-irma-2017" / "infrared"
    hourly = [src / f"HUIR17250{hour:02d}45.GIF" for hour in range(3, 9)]
    gappy = hourly[:5] + [src / "HUIR172501545.GIF"]
    untimed = tmp_path / "latest.gif"
    shutil.copy(src / "HUIR172500245.GIF", untimed)
    cases = {
        "gappy": (gappy, "HUIR172500745.GIF and HUIR172501545.GIF are 480 min apart"),
        "more than the model's 6": (
            [src / "HUIR172500145.GIF", *gappy],
            "60 min apart (+-15): pass frames 60 min apart (the query is the most recent 6 of "
            "the 7 frames given)",
        ),
        "twice": (hourly[:5] + hourly[4:5], "HUIR172500745.GIF are the same file"),
        "a folder and a file in it": ([hourly[0].parent, hourly[0]], "are the same file"),
        "mixed": (hourly + [untimed], "1 of the ir query frames carry no time"),
        "half-hourly": (
            [
                src / f"HUIR17250{hhmm}.GIF"
                for hhmm in ("1945", "2045", "2115", "2145", "2245", "2345")
            ],
            "are 30 min apart",
        ),
    }
    for files, message in cases.values():
        args = [a for f in files for a in ("--frames", f)]
        r = cli("search", "clip", *args, "-w", ws)
        assert r.exit_code == 2, r.stderr
        assert "Traceback" not in r.stderr and message in r.stderr


def test_augmented_clip_search(demo, cli):
    ws, _ = demo
    # the 60-frame sample needs a larger hold-out to keep held-out clip pairs
    r = cli(
        "train",
        "predictor",
        "--length",
        "6",
        "--gap",
        "60",
        "--epochs",
        "1",
        "--holdout",
        "0.4",
        "-w",
        ws,
    )
    assert r.exit_code == 0, r.stderr[-2000:]
    out = search(cli, ws, "clip", "--at", QUERY_AT, "--augment", "--k", "3")
    assert out["query"]["ranked_by"] == "augment" and out["query"]["augment"]
    assert len(out["results"]) == 3 and "augment" in out["timing_ms"]
    assert_sorted(out["results"])
    assert all(h["vector_score"] is None for h in out["results"])
    r = cli("predict", QUERY_AT, "--out", "/proc/skysearch-strip.png", "-w", ws)
    _assert_error(r, "cannot write prediction strip /proc/skysearch-strip.png")


def _assert_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr[-2000:])
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]


def test_errors_on_a_trained_workspace(demo, cli):
    ws, _ = demo
    r = cli("search", "clip", "--at", "2030-01-01T00:00Z", "--channel", "ir", "-w", ws)
    _assert_error(r, "outside the archive", "2017-09-06T00:45:00Z..2017-09-08T22:45:00Z")
    r = cli("search", "clip", "--at", QUERY_AT, "--length", "12", "-w", ws)
    _assert_error(
        r,
        "no clip model fits --length 12 (trained: goes-east ir 6x60m)",
        "skysearch train frames --length 12",
    )
    r = cli("search", "clip", "--clip-id", "00000000-0000-0000-0000-000000000000", "-w", ws)
    _assert_error(r, "not in the clip catalog", "take a clip id from a search's results")
    # filters no point could match, however wide: said, not answered with no results
    r = cli("search", "frame", "--at", QUERY_AT, "--bbox=-180,-90,180,90", "-w", ws)
    _assert_error(r, "the --bbox filter matches nothing: no frame has a place")
    r = cli("search", "text", "a river", "--between", "1900-01-01..", "-w", ws)
    _assert_error(r, "time filters match nothing: no scene has a time")


def test_store_locked_by_another_process(demo, cli):
    ws, _ = demo
    holder = held("store", ws)
    try:
        r = cli("search", "clip", "--at", QUERY_AT, "-w", ws)
        _assert_error(r, "in use by another process", f"pid {holder.pid}")
        doctor = cli("doctor", "-w", ws)  # nothing is broken: the store is just not checked
        assert doctor.exit_code == 0 and "held by another process" in doctor.stderr
    finally:
        holder.kill()
        holder.wait()


FRAME_TIMES = ("2017-09-06T06:45:00Z", "2017-09-07T00:45:00Z", "2017-09-07T12:45:00Z")


def _frame_answers(ws: Path) -> tuple[int, dict[str, list]]:
    """Points in ``frames``, and the top 5 of a search by each FRAME_TIMES frame's embedding
    (computed here from the frame store's pixels, not read back from the index)."""
    import torch
    from skysearch.encoders.factory import load_frame_encoder
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.framestore import FrameStore
    from skysearch.retrieval.store.application import SkyStore
    from skysearch.retrieval.store.filters import SearchFilters

    from skysearch.config import Workspace
    from skysearch.timeutil import to_rfc3339

    workspace = Workspace(ws)
    encoder, record = load_frame_encoder(workspace)
    rows = read_frames(workspace, columns=["frame_id", "time"]).to_pylist()
    ids = [r["frame_id"] for r in rows if to_rfc3339(r["time"]) in FRAME_TIMES]
    assert len(ids) == len(FRAME_TIMES)
    pixels = torch.from_numpy(FrameStore(workspace).read_many(ids))[:, None]  # (n, C=1, H, W)
    with torch.no_grad():
        vectors = encoder(pixels).numpy()
    with SkyStore.open(workspace=ws) as sky:
        count = sky.store.count("frames")
        hits = {
            fid: sky.search_frames(vector, SearchFilters(k=5), model_id=record.model_id)
            for fid, vector in zip(ids, vectors, strict=True)
        }
    return count, hits


def test_index_frames_then_store_optimize(demo, cli):
    """The demo's `index frames` put each of the 60 IR frames in the frames collection once (a
    re-run writes nothing); a frame's embedding finds that frame, then frames an hour or two
    away; `store optimize` keeps every point and every answer (frames and clips)."""
    ws, report = demo
    step = next(s for s in report["steps"] if s["name"] == "index frames + search frame")
    assert step["detail"].startswith("60 frame vectors written")  # the demo indexed them
    args = ("index", "frames", "--device", "cpu", "--workers", "0", "-w", ws, "--json")
    r = cli(*args)
    assert r.exit_code == 0, r.stderr[-2000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["collection"] == "frames" and report["vector_name"] == report["model_id"]
    assert report["total"] == 60 and report["written"] == 0
    assert report["skipped_existing"] == 60
    checks = {c["name"]: c for c in json.loads(cli("doctor", "-w", ws, "--json").stdout)["checks"]}
    assert checks["frames index"]["status"] == "ok"
    assert checks["frames index"]["detail"] == f"indexed by {report['model_id']}"

    count, before = _frame_answers(ws)
    assert count == 60
    for fid, hits in before.items():
        assert hits[0].id == fid and hits[0].payload["frame_id"] == fid
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert hits[0].channels == ["ir"] and hits[0].payload["model_id"] == report["model_id"]
        assert Path(hits[0].payload["source_path"]).name.startswith("HUIR17")
        near = [abs(h.time - hits[0].time) for h in hits[1:3]]
        assert all(d <= timedelta(hours=2) for d in near), near
    clips = search(cli, ws, "clip", "--at", QUERY_AT, "--k", "10")["results"]

    r = cli("store", "optimize", "-w", ws, "--json")
    assert r.exit_code == 0, r.stderr[-2000:]
    assert set(json.loads(r.stdout.strip().splitlines()[-1])["optimized"]) == {
        "clips",
        "frames",
        "scenes",
    }
    assert all(f"optimized {name} in " in r.stderr for name in ("clips", "frames", "scenes"))
    count, after = _frame_answers(ws)
    assert count == 60
    for fid, hits in before.items():
        assert [h.id for h in after[fid]] == [h.id for h in hits]
        assert [h.score for h in after[fid]] == pytest.approx([h.score for h in hits], abs=1e-5)
    again = search(cli, ws, "clip", "--at", QUERY_AT, "--k", "10")["results"]
    assert [(h["id"], h["rank"]) for h in again] == [(h["id"], h["rank"]) for h in clips]


def test_doctor_names_frames_missing_from_the_store_and_index_puts_them_back(demo, cli):
    """Points an interrupted index run never wrote (or the store lost) are a todo with the
    command that writes them; that command brings back exactly those."""
    from skysearch.retrieval.store.application import SkyStore

    ws, _ = demo
    with SkyStore.open(workspace=ws) as sky:
        gone = [r.id for r in sky.store.scroll("frames")][:5]
        sky.store.delete_ids("frames", gone)
    checks = json.loads(cli("doctor", "-w", ws, "--json").stdout)["checks"]
    (todo,) = [c for c in checks if c["name"] == "frames index" and c["status"] == "todo"]
    assert todo["detail"].startswith("5 of the 60 frames ")
    assert todo["fix"].startswith("skysearch index frames --model ")
    fix = shlex.split(todo["fix"])[1:]
    r = cli(*fix, "--device", "cpu", "--workers", "0", "-w", ws, "--json")
    assert r.exit_code == 0, r.stderr[-2000:]
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["written"] == 5 and report["skipped_existing"] == 55
    checks = json.loads(cli("doctor", "-w", ws, "--json").stdout)["checks"]
    assert [c["status"] for c in checks if c["name"] == "frames index"] == ["ok"]


def test_demo_rerun_reuses_everything(demo):
    ws, first = demo
    code, out, err = run_cli("demo", *QUICK, "-w", ws, "--json")
    assert code == 0, err[-3000:]
    again = json.loads(out.strip().splitlines()[-1])
    details = {s["name"]: s["detail"] for s in again["steps"]}
    assert details["ingest GOES-East sample"].startswith("0 frames added")
    for name in ("train frame encoder", "train clip encoder"):
        assert details[name].startswith("reused"), details[name]
    assert details["index clips"].startswith("0 vectors written, 44 already indexed")
    assert "84 unchanged" in details["index scenes"]
    ids = [h["id"] for h in again["clip_search"]["results"]]
    assert ids == [h["id"] for h in first["clip_search"]["results"]]
    # it ends by saying how to serve the web page for its workspace
    assert err.strip().splitlines()[-1] == (
        f"see it in a browser: skysearch serve -w {ws}, then open http://127.0.0.1:8000/"
    )


def _brute_force(ws: Path, query_id: str, keep) -> list[tuple[str, float, str]]:
    """(id, cosine, time) of every indexed frame that ``keep(payload)`` accepts, by exact
    cosine to the query frame's stored vector, best first."""
    import numpy as np
    from skysearch.encoders.registry import latest
    from skysearch.retrieval.store import open_store

    from skysearch.config import load_settings

    settings = load_settings(workspace=ws)
    model_id = latest(settings.workspace, "frame").model_id
    store = open_store(settings)
    try:
        records = list(store.scroll("frames", with_vectors=True))
    finally:
        store.close()
    vectors = {r.id: np.asarray(r.vectors[model_id], dtype=np.float64) for r in records}
    q = vectors[query_id] / np.linalg.norm(vectors[query_id])
    scored = [
        (r.id, float(vectors[r.id] @ q / np.linalg.norm(vectors[r.id])), r.payload["time"])
        for r in records
        if keep(r.payload)
    ]
    return sorted(scored, key=lambda t: -t[1])


def test_search_frame_filters_match_brute_force(demo, cli):
    """`search frame` by time, with a time range, hours and an exclusion window, returns what
    an exact scan of the stored vectors with the same conditions returns; one per day keeps
    the best hit of each day."""
    ws, _ = demo
    query = search(cli, ws, "frame", "--at", QUERY_AT, "--channel", "ir", "--k", "1")
    assert query["query"]["kind"] == "frame" and query["query"]["start"] == "2017-09-07T00:45:00Z"
    qid = query["query"]["frame_id"]
    assert query["results"][0]["id"] == qid and query["results"][0]["score"] == pytest.approx(
        1, abs=1e-3
    )
    at = parse_time(QUERY_AT)
    args = ["--between", "2017-09-06T00:00Z..2017-09-08T12:00Z", "--hours", "0-11"]
    got = search(cli, ws, "frame", "--at", QUERY_AT, *args, "--exclude-window", "6h", "--k", "8")

    def keep(p):
        t = parse_time(p["time"])
        return (
            parse_time("2017-09-06T00:00Z") <= t <= parse_time("2017-09-08T12:00Z")
            and t.hour <= 11
            and abs(t - at) > timedelta(hours=6)
        )

    want = _brute_force(ws, qid, keep)[:8]
    assert len(got["results"]) == 8
    assert [h["id"] for h in got["results"]] == [i for i, _, _ in want]
    for hit, (_, cosine, _) in zip(got["results"], want, strict=True):
        assert hit["score"] == pytest.approx(cosine, abs=2e-3)
    daily = search(cli, ws, "frame", "--frame-id", qid, "--one-per-day", "--k", "5")
    days = [h["start"][:10] for h in daily["results"]]
    assert len(days) == len(set(days)) == 3  # the sample spans 3 UTC days
    best_by_day: dict[str, str] = {}
    for fid, _, time in _brute_force(ws, qid, lambda p: True):
        best_by_day.setdefault(time[:10], fid)
    assert [h["id"] for h in daily["results"]] == [best_by_day[d] for d in days]
    # a season window (day 250 = 2017-09-07), and a query time 10 minutes off its frame
    late = "2017-09-07T00:55Z"
    season = search(cli, ws, "frame", "--at", late, "--day-of-year", "250-250", "--k", "30")
    want = _brute_force(ws, qid, lambda p: p["time"].startswith("2017-09-07"))
    assert [h["id"] for h in season["results"]] == [i for i, _, _ in want][:30]
    r = cli("search", "frame", "--at", late, "--tolerance", "5", "-w", ws)
    _assert_error(r, "no goes-east ir frame within 5 min of 2017-09-07T00:55:00Z")


def test_training_rates_name_what_a_step_counts(demo):
    """The frame encoder's "items/s" were cell pairs (4096 a step): ~10,000x its frame rate."""
    from skysearch.encoders.registry import list_models
    from skysearch.encoders.training.loop import measure

    from skysearch.config import Workspace

    ws, _ = demo
    (frame,) = list_models(Workspace(ws), "frame")
    (clip,) = list_models(Workspace(ws), "clip")
    assert "cell_pairs_per_s" in frame.config["history"][-1]
    assert "items_per_s" in clip.config["history"][-1]
    assert measure("cell_pairs_per_s", 285615.3) == "2.856e+05 cell pairs/s"
    assert measure("loss", 0.43804) == "loss 0.438"
