"""Search CLI without trained models: option parsing, the result schema, and the errors a user
meets before anything is trained (one line, exit code 2, no traceback)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_DATA
from skysearch.cli.search import build_filters, parse_int_list
from skysearch.retrieval.search import (
    RESULT_SCHEMA,
    ClipQuery,
    ResultItem,
    Searcher,
    SearchOptions,
    SearchResult,
)

from skysearch.errors import SkySearchError, UsageError
from skysearch.timeutil import parse_between

GOES = SAMPLE_DATA / "goes-irma-2017"


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_int_lists_and_ranges():
    assert parse_int_list("6-9,12", "months") == (6, 7, 8, 9, 12)
    # ranges across midnight or the new year wrap around (they were silently empty: no filter)
    assert parse_int_list("22-2,5", "hours") == (22, 23, 0, 1, 2, 5)
    assert parse_int_list("11-2", "months") == (11, 12, 1, 2)
    for text, name in (("25-2", "hours"), ("13-2", "months"), ("2--1", "hours")):
        with pytest.raises(UsageError, match="values must be in"):
            parse_int_list(text, name)
    assert parse_int_list(None, "hours") == ()
    with pytest.raises(UsageError, match="--hours names nothing"):  # --hours "$UNSET"
        parse_int_list(" ,", "hours")
    with pytest.raises(UsageError, match="--hours"):
        parse_int_list("6-x", "hours")


def test_an_end_date_alone_takes_in_the_whole_day():
    day = datetime(2017, 9, 7, tzinfo=timezone.utc)
    assert parse_between("2017-09-07..2017-09-07") == (
        day,
        day + timedelta(days=1, microseconds=-1),
    )
    assert parse_between("..2017-09-07T06:00Z")[1] == day + timedelta(hours=6)  # a time: as given


def test_cli_filters_become_search_filters():
    f = build_filters(
        between="2017-09-05..",
        months="9",
        hours="0-3",
        channels="ir, wv",
        satellite=" goes-east",
        exclude_window="24h",
        k=7,
        one_per_day=True,
        day_of_year="335-59",
    )
    assert f.start == datetime(2017, 9, 5, tzinfo=timezone.utc) and f.end is None
    assert f.months == (9,) and f.hours == (0, 1, 2, 3)
    assert f.channels == ("ir", "wv") and f.satellites == ("goes-east",)
    assert f.day_of_year == (335, 59)
    assert f.exclude_window == timedelta(hours=24) and f.k == 7 and f.one_per_day
    assert build_filters(between="..2017-09-08").start is None


def test_clip_query_needs_exactly_one_way():
    with pytest.raises(UsageError, match="one way"):
        ClipQuery()
    with pytest.raises(UsageError, match="one way"):
        ClipQuery(at="2017-09-07T00:45Z", clip_id="x")
    q = ClipQuery(at="2017-09-07 00:45", channels="ir,wv")
    assert q.at == datetime(2017, 9, 7, 0, 45, tzinfo=timezone.utc)
    assert q.channels == ("ir", "wv")
    with pytest.raises(UsageError, match="rerank"):
        SearchOptions(rerank=-1)


def test_result_schema_is_stable():
    item = ResultItem(rank=1, score=0.5, id="i", kind="clip", channels=["ir"])
    out = SearchResult({"kind": "clip"}, [item], {"k": 1}, {"search": 1.234}).to_dict()
    assert list(out) == ["schema", "query", "results", "filters", "timing_ms"]
    assert out["schema"] == RESULT_SCHEMA
    assert list(out["results"][0]) == [
        "rank",
        "score",
        "id",
        "kind",
        "start",
        "end",
        "satellite",
        "channels",
        "frame_ids",
        "length",
        "gap_minutes",
        "source_path",
        "label",
        "dataset",
        "location",
        "event",  # added in schema 1 (additive: readers ignore fields they do not know)
        "track_class",  # the same (best track)
        "pressure_hpa",
        "wind_kt",
        "vector_score",
        "rerank_score",
    ]
    assert out["timing_ms"] == {"search": 1.23}


def test_search_package_imports_without_torch():
    """The façade's names load without torch (the typed HTTP client imports them; models load
    on first use)."""
    import subprocess
    import sys

    code = "import sys, skysearch.retrieval.search; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_cli_help_loads_neither_torch_nor_the_store_client():
    """`skysearch --help` (and every command's startup) stays light: torch and qdrant-client load
    when a command needs them."""
    import subprocess
    import sys

    code = (
        "import sys; from skysearch.cli.app import main\n"
        "try: main(['--help'])\n"
        "except SystemExit: pass\n"
        "print(sorted({'torch', 'qdrant_client'} & set(sys.modules)), file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stderr.strip().splitlines()[-1] == "[]"


def test_version_is_the_installed_package_s(cli):
    """One version, written in skysearch/__init__.py: the package metadata (pyproject reads it
    from there), --version and the service's /health all say it."""
    from importlib.metadata import version

    from skysearch import __version__

    result = cli("--version")
    assert result.exit_code == 0 and result.stdout.strip() == f"skysearch {__version__}"
    assert version("skysearch") == __version__


@pytest.fixture(scope="module")
def ingested(tmp_path_factory) -> Path:
    """A workspace holding the sample's frames and clips, but no model."""
    from skysearch.ingest.clips import build_clips
    from skysearch.ingest.pipeline import ingest

    from skysearch.config import Workspace

    ws = Workspace(tmp_path_factory.mktemp("ingested"))
    ingest([GOES], ws, progress=False)
    build_clips(ws, length=6, gap_minutes=60)
    return ws.root


def test_no_model_trained_yet(cli, ingested):
    r = cli("search", "clip", "--at", "2017-09-07T00:45Z", "-w", ingested)
    assert_one_line_error(r, "no clip model trained yet", "skysearch train frames")
    r = cli("search", "text", "a river", "-w", ingested)
    assert_one_line_error(r, "no text-image model", "train")


def test_unknown_channel_and_satellite(cli, ingested):
    r = cli("search", "clip", "--at", "2017-09-07T00:45Z", "--channel", "vis", "-w", ingested)
    assert_one_line_error(r, "unknown channel vis", "goes-east: ir", "--channel ir")
    r = cli("search", "clip", "--at", "2017-09-07T00:45Z", "--satellite", "coms", "-w", ingested)
    assert_one_line_error(r, "unknown satellite 'coms'", "goes-east: ir")


def test_bad_options_are_one_line(cli, ingested):
    r = cli("search", "clip", "-w", ingested)
    assert_one_line_error(r, "--at", "--clip-id", "--frames")
    r = cli("search", "clip", "--at", "yesterday", "-w", ingested)
    assert_one_line_error(r, "cannot read time 'yesterday'")
    r = cli(
        "search", "clip", "--at", "2017-09-07T00:45Z", "--between", "2017-09-09", "-w", ingested
    )
    assert_one_line_error(r, "START..END")
    r = cli(
        "search", "clip", "--at", "2017-09-07T00:45Z", "--exclude-window", "a day", "-w", ingested
    )
    assert_one_line_error(r, "duration", "24h")
    r = cli("search", "clip", "--at", "2017-09-07T00:45Z", "--months", "13", "-w", ingested)
    assert_one_line_error(r, "months must be in 1..12")


@pytest.fixture
def untrained(ingested, tmp_path) -> Path:
    """A copy of ``ingested`` with one untrained goes-east ir 6x60m clip model registered
    (searches that stop before embedding need a loadable model, not a good one)."""
    import shutil

    from skysearch.encoders.factory import save_model
    from skysearch.encoders.models.clip import build_clip_embedder, clip_config_for
    from skysearch.encoders.models.frame import FrameEncoderConfig

    from skysearch.config import Workspace

    ws = Workspace(shutil.copytree(ingested, tmp_path / "ws"))
    frame = FrameEncoderConfig(channels=["ir"])
    clip = clip_config_for(frame, 6)
    embedder = build_clip_embedder(frame.to_dict(), clip.to_dict())
    data = {"satellite": "goes-east", "channels": ["ir"], "length": 6, "gap_minutes": 60}
    save_model(
        ws, "clip", embedder, {"frame": frame.to_dict(), "clip": clip.to_dict(), "data": data}
    )
    return ws.root


def test_a_clip_id_with_another_spec_is_refused(cli, untrained):
    """--length/--gap given with --clip-id were dropped: 6-frame hits for a 3-frame query."""
    from skysearch.ingest.clips import read_clips

    from skysearch.config import Workspace

    clip_id = read_clips(Workspace(untrained))["clip_id"][0].as_py()
    r = cli("search", "clip", "--clip-id", clip_id, "--length", "3", "-w", untrained)
    assert_one_line_error(r, f"clip {clip_id} has length 6, not the 3 asked (--length)")
    r = cli("search", "clip", "--clip-id", clip_id, "--gap", "30", "-w", untrained)
    assert_one_line_error(r, "has gap minutes 60, not the 30 asked (--gap)")
    same = cli("search", "clip", "--clip-id", clip_id, "--length", "6", "-w", untrained)
    assert "nothing indexed yet" in same.stderr  # its own spec: on to the search


def _refused(call, error=UsageError) -> SkySearchError:
    with pytest.raises(error) as caught:
        call()
    return caught.value


def test_library_errors_name_parameters_the_cli_renders_as_flags(untrained):
    """The search library speaks no front end's language: its messages name parameters
    (``str()``: the plain names, as HTTP shows them) and the CLI renders its flags."""
    from skysearch.cli.app import flag
    from skysearch.encoders.registry import list_models
    from skysearch.retrieval.search.augment import AugmentOptions
    from skysearch.retrieval.store.filters import SearchFilters

    from skysearch.config import load_settings
    from skysearch.errors import NotFoundError

    at = "2017-09-07T00:45Z"
    with Searcher(load_settings(workspace=untrained)) as searcher:
        (model,) = list_models(searcher.workspace, "clip")
        width, height = searcher.query_profile("goes-east").resolution
        pixels = np.zeros((1, 6, height, width), np.uint8)
        cases = [  # (error, plain message part, as the CLI renders it)
            (
                _refused(lambda: SearchOptions(rerank=-5)),
                "rerank must be in 0..10000, got -5",
                "--rerank must be in",
            ),
            (_refused(AugmentOptions(beta=2).check), "beta must be between", "--beta must"),
            (
                _refused(
                    lambda: searcher.clip_model_for("goes-east", ["vis"], None, None), NotFoundError
                ),
                "(pass e.g. channel ir)",
                "(pass e.g. --channel ir)",
            ),
            (
                _refused(
                    lambda: searcher.search_clip(ClipQuery(at=at, channels="ir", length=12)),
                    NotFoundError,
                ),
                "no clip model fits channel ir length 12 (trained: goes-east ir 6x60m)",
                "no clip model fits --channel ir --length 12 (trained",
            ),
            (
                _refused(
                    lambda: searcher.search_clip(
                        ClipQuery(at=at, length=3), options=SearchOptions(model_id=model.model_id)
                    )
                ),
                "pick a fitting model_id",
                "pick a fitting --model",
            ),
            (
                _refused(
                    lambda: searcher.search_clip(
                        ClipQuery(pixels=pixels), SearchFilters(exclude_window=timedelta(hours=1))
                    )
                ),
                "exclude_window needs the query's time",
                "--exclude-window needs the query's time",
            ),
            (
                _refused(
                    lambda: searcher.search_clip(ClipQuery(clip_id="no-such-clip")), NotFoundError
                ),
                "query by a start time (at), or take",
                "query by a start time (--at), or take",
            ),
            (
                _refused(lambda: ClipQuery(at=at, gap_minutes=0)),
                "gap_minutes must be",
                "--gap must",
            ),
            (_refused(lambda: SearchFilters(k=0)), "k must be in 1..10000", "--k must be"),
        ]
    for error, plain, rendered in cases:
        assert error.params and error.render(flag) != str(error), str(error)
        assert plain in str(error), str(error)
        assert rendered in error.render(flag), error.render(flag)


def test_doctor_says_what_is_missing(cli, ingested, tmp_path, monkeypatch):
    r = cli("doctor", "--json", "-w", ingested)
    assert r.exit_code == 0, r.stderr
    import json

    checks = {c["name"]: c for c in json.loads(r.stdout)["checks"]}
    assert checks["frames"]["status"] == "ok" and "60 frames" in checks["frames"]["detail"]
    assert checks["clips"]["status"] == "ok" and "6x60m: 44" in checks["clips"]["detail"]
    assert checks["clip model"]["status"] == "todo"
    assert "skysearch train clips" in checks["clip model"]["fix"]
    fresh = cli("doctor", "-w", tmp_path / "nothing-here")
    assert fresh.exit_code == 0
    assert "does not exist yet" in fresh.stderr and "skysearch demo" in fresh.stderr
    from skysearch.workflows import doctor

    sample = doctor.REPO_SAMPLE / "rsscn7-mini"
    assert checks["text-image model"]["fix"] == f"skysearch train text-image --images {sample}"
    # an installed package has no bundled sample: the fix named a path that is not there
    monkeypatch.setattr(doctor, "REPO_SAMPLE", tmp_path / "site-packages" / "data" / "sample")
    installed = cli("doctor", "--json", "-w", ingested)
    checks = {c["name"]: c for c in json.loads(installed.stdout)["checks"]}
    assert checks["text-image model"]["fix"] == "skysearch train text-image --images IMAGES"


def test_every_command_has_help_with_an_example(cli):
    """`--help` of every command (all modules) shows an example."""
    import typer
    from skysearch.cli import commands  # noqa: F401  (registers every command)
    from skysearch.cli.app import app

    root = typer.main.get_command(app)
    missing = []

    def walk(group, prefix: list[str]) -> None:
        for name, command in group.commands.items():
            if hasattr(command, "commands"):
                walk(command, [*prefix, name])
                continue
            path = [*prefix, name]
            r = cli(*path, "--help")
            example = r.stdout.partition("Example:")[2]
            if r.exit_code != 0 or "skysearch " + " ".join(path) not in example.replace("\n", " "):
                missing.append(" ".join(path))

    walk(root, [])
    assert not missing, f"commands without an example in --help: {missing}"
