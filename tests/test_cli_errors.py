"""Every CLI command with broken arguments and a broken environment: one ``error:`` line (or
click's usage error), exit code 2 (1 where a command documents it), never a traceback.

The matrix walks the typer app's command tree: a new command fails
``test_every_command_has_broken_cases`` until it gets its cases in ``cli_error_cases.py``.
Each case names the text its error must contain, so a case that falls through to some other
error fails too.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from cli_error_cases import (
    BASE,
    CASES,
    ENV_KEYS,
    GOES,
    SCENES,
    USAGE,
    Case,
    all_cases,
    command_paths,
    shared_cases,
)


def test_every_command_has_broken_cases():
    commands = set(command_paths())
    assert commands == set(CASES), (
        f"commands without broken cases here: {sorted(commands - set(CASES))}; "
        f"cases for commands that are gone: {sorted(set(CASES) - commands)}"
    )
    assert set(BASE) == commands


# ---------------------------------------------------------------------------- the world
def _register_broken_models(root: Path, config: bytes) -> None:
    from skysearch.encoders.registry import register_model

    from skysearch.config import Workspace

    ws = Workspace(root)
    for kind in ("frame", "clip"):
        register_model(ws, f"{kind}-broken", kind, {}, {})
        folder = ws.models_dir / f"{kind}-broken"
        folder.mkdir()
        (folder / "config.json").write_bytes(config)


def _exports(folder: Path) -> dict[str, Path]:
    """Files that are not `store export` files, each in its own way."""
    import gzip
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq
    from skysearch.retrieval.store.parquet_format import write_points
    from skysearch.retrieval.store.transfer import FORMAT, encode_vector

    header = json.dumps({"format": FORMAT, "collection": "c", "vectors": {"v": 4}, "points": 1})
    point = {"id": str(uuid.uuid4()), "vectors": {"v": encode_vector([1, 0, 0, 0])}, "payload": {}}
    good = f"{header}\n{json.dumps(point)}\n"
    texts = {
        "export_list": "[1, 2]\n",
        "export_no_collection": json.dumps({"format": FORMAT}) + "\n",
        "export_bad_base64": f"{header}\n{json.dumps({**point, 'vectors': {'v': '!!'}})}\n",
        "export_no_id": f"{header}\n{json.dumps({'vectors': point['vectors']})}\n",
        "export_list_payload": f"{header}\n{json.dumps({**point, 'payload': [1]})}\n",
        "empty": "",
    }
    paths = {name: folder / f"{name}.jsonl" for name in texts}
    for name, text in texts.items():
        paths[name].write_text(text)
    paths["bin_gz"] = folder / "binary.jsonl.gz"
    paths["bin_gz"].write_bytes(b"\x1f\x8b" + bytes(range(200)))
    paths["truncated_gz"] = folder / "truncated.jsonl.gz"
    paths["truncated_gz"].write_bytes(gzip.compress(good.encode() * 50)[:60])
    paths["plain_named_gz"] = folder / "plain.jsonl.gz"
    paths["plain_named_gz"].write_text(good)
    paths["plain_parquet"] = folder / "plain.parquet"
    pq.write_table(pa.table({"id": ["a"], "vector": [[1.0, 0.0]]}), paths["plain_parquet"])
    paths["points_c4"] = folder / "c-v-4.parquet"
    write_points(paths["points_c4"], "frames", "v", 4, [(point["id"], [1, 0, 0, 0], {})])
    return paths


def _register_damaged_clip_model(root: Path, config: bytes) -> None:
    """A clip model of the sample's spec whose checkpoint config is damaged."""
    from skysearch.encoders.registry import register_model

    from skysearch.config import Workspace

    ws = Workspace(root)
    data = {"satellite": "goes-east", "channels": ["ir"], "length": 6, "gap_minutes": 60}
    register_model(ws, "clip-damaged", "clip", {"data": data}, {})
    (ws.models_dir / "clip-damaged").mkdir()
    (ws.models_dir / "clip-damaged" / "config.json").write_bytes(config)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Iterator[dict[str, str]]:
    """An ingested sample workspace (no model), broken copies of it, broken files."""
    from skysearch.ingest.clips import build_clips
    from skysearch.ingest.pipeline import ingest
    from skysearch.ingest.similarity import SketchStore
    from skysearch.retrieval.store.embedded import EmbeddedStore

    from skysearch.config import Workspace

    root = tmp_path_factory.mktemp("cli-errors")
    ws = Workspace(root / "ws")
    ingest([GOES], ws, progress=False)
    build_clips(ws, length=6, gap_minutes=60)
    SketchStore(ws).update()

    def broken(name: str, relative: str | None = None, content: bytes = b"") -> str:
        copy = root / name
        shutil.copytree(ws.root, copy)
        if relative is not None:
            targets = sorted(copy.glob(relative))
            assert targets, relative
            for target in targets:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
        return str(copy)

    binary = bytes(reversed(range(256))) * 4  # not UTF-8 from the first byte
    places = {
        "ws": str(ws.root),
        "goes": str(GOES),
        "scenes": str(SCENES),
        "ws_meta_binary": broken("meta", "frames/*/*/*/meta.json", binary),
        "ws_sketch_binary": broken("sketch", "sketches/*/*/*/*/meta.json", binary),
        "ws_sketch_rebuilt": broken("sketch-rebuilt", "sketches/*/*/*/*/meta.json", binary),
        "ws_registry_binary": broken("registry"),
        "ws_registry_entry": broken("entry"),
        "ws_config_binary": broken("config-binary"),
        "ws_config_empty": broken("config-empty"),
        "ws_demo_state": broken("demo-state"),
        "ws_model_damaged": broken("model-damaged"),
        "ws_store_c8": broken("store-c8"),
    }
    models = Path(places["ws_registry_binary"]) / "models"
    models.mkdir()
    (models / "registry.json").write_bytes(binary)
    models = Path(places["ws_registry_entry"]) / "models"
    models.mkdir()
    (models / "registry.json").write_text(json.dumps({"models": [{"model_id": "clip-x"}]}))
    _register_broken_models(Path(places["ws_config_binary"]), binary)
    _register_broken_models(Path(places["ws_config_empty"]), b"{}")
    _register_damaged_clip_model(Path(places["ws_model_damaged"]), binary)
    with EmbeddedStore(Path(places["ws_store_c8"]) / "store") as store:
        store.ensure_collection("frames", 8, "v")  # {points_c4} holds 4-dimensional "v"
    (Path(places["ws_demo_state"]) / "demo").mkdir()
    (Path(places["ws_demo_state"]) / "demo" / "state.json").write_text("{{{")

    files = root / "files"
    files.mkdir()
    (files / "a-file").write_text("hello\n")
    (files / "binary.jsonl").write_bytes(binary)
    # a valid best-track row of an event the sample (GOES, no events) does not have
    row = ["1987", "04", "09", "18", "2", "7.1", "144.9", "1006", *["0"] * 12]
    (files / "198702.tsv").write_text("\t".join(row) + "\n")
    places["file"], places["bin"] = str(files / "a-file"), str(files / "binary.jsonl")
    places["track"] = str(files / "198702.tsv")
    (files / "loop-a").symlink_to(files / "loop-b")
    (files / "loop-b").symlink_to(files / "loop-a")
    places["loop"] = str(files / "loop-a")
    places.update({name: str(path) for name, path in _exports(files).items()})
    for name, text in [("toml_binary", None), ("toml_wrong_type", "workspace = 5\n")]:
        folder = root / name
        folder.mkdir()
        toml = folder / "skysearch.toml"
        toml.write_text(text) if text else toml.write_bytes(binary)
        places[name] = str(folder)
    with socket.socket() as busy:  # a port something else listens on
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        places["busy_port"] = str(busy.getsockname()[1])
        yield places


@pytest.fixture
def places(world, tmp_path, monkeypatch) -> dict[str, str]:
    """The world plus this case's own scratch folders; a clean environment and cwd."""
    for key in ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    (tmp_path / "clean").mkdir()
    return {
        **world,
        "tmp": str(tmp_path),
        "missing": str(tmp_path / "missing"),
        "clean": str(tmp_path / "clean"),
    }


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    """A broken case must fail fast: one that starts real work (training, serving) is stopped."""

    def stop(*_: object) -> None:
        raise TimeoutError(f"still running after {seconds} s: the broken input was not caught")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def assert_clean_error(code: int, stdout: str, stderr: str, case: Case) -> None:
    assert "Traceback" not in stderr, stderr
    assert code == case.code, (code, stderr)
    last = stderr.strip().splitlines()[-1] if stderr.strip() else ""
    if case.code == 2:  # click's usage errors too: one line naming where --help is
        assert last.startswith("error: "), stderr
        assert [ln for ln in stderr.splitlines() if ln.startswith("error: ")] == [last], stderr
    assert case.expect in stderr, stderr
    if case.expect == USAGE:
        assert last.endswith(" --help)") and "Usage:" not in stderr, stderr
    for line in stdout.splitlines():  # stdout: nothing, or JSON (--json owns stdout)
        json.loads(line)


@pytest.mark.parametrize("case", all_cases())
def test_broken_input_is_one_error_line(case, places, cli, monkeypatch):
    args = [arg.format(**places) for arg in case.args]
    for key, value in case.env.items():
        monkeypatch.setenv(key, value.format(**places))
    monkeypatch.chdir(case.cwd.format(**places))
    with time_limit(60):
        result = cli(*args)
    assert_clean_error(result.exit_code, result.stdout, result.stderr, case)


# A few through a real interpreter: output written at exit, the console entry point itself.
SUBPROCESS_CASES = [
    CASES["store import"][1],
    CASES["search clip"][0],
    shared_cases("store export")[1],
]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=lambda case: " ".join(case.args[:3]))
def test_broken_input_in_a_real_process(case, places):
    env = {k: v for k, v in os.environ.items() if k not in ENV_KEYS}
    env.update({k: v.format(**places) for k, v in case.env.items()})
    done = subprocess.run(
        [sys.executable, "-m", "skysearch", *(a.format(**places) for a in case.args)],
        cwd=case.cwd.format(**places),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_clean_error(done.returncode, done.stdout, done.stderr, case)


# ---------------------------------------------------------------------------- disk full
def _catalog(root: Path) -> tuple[list[dict], object]:
    """Frame catalog rows sorted by id, and the frames' pixels in that order."""
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.framestore import FrameStore

    from skysearch.config import Workspace

    ws = Workspace(root)
    rows = read_frames(ws).sort_by("frame_id").to_pylist()
    return rows, FrameStore(ws).read_many([r["frame_id"] for r in rows])


def assert_same_catalog(root: Path, reference: Path) -> None:
    import numpy as np

    rows, pixels = _catalog(root)
    ref_rows, ref_pixels = _catalog(reference)
    assert rows == ref_rows
    assert np.array_equal(pixels, ref_pixels)


@pytest.mark.parametrize("command", [("ingest", GOES), ("update", GOES), ("index", "frames")])
def test_ray_engine_without_ray_installed_says_how_to_install_it(
    command, cli, monkeypatch, tmp_path
):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    done = cli(*command, "--engine", "ray", "-w", tmp_path / "ws")
    case = Case(
        (), "--engine ray needs Ray, which is not installed: pip install -e '.[ray]' in the"
    )
    assert_clean_error(done.exit_code, done.stdout, done.stderr, case)
    assert not (tmp_path / "ws").exists()  # refused before anything was written


def test_disk_full_during_ingest_is_one_line_and_a_rerun_recovers(
    cli, world, tmp_path, monkeypatch
):
    """ENOSPC at the 21st frame written: one line, exit 2; what was committed is intact; a
    re-run after "freeing space" ends with exactly the catalog of an uninterrupted run."""
    from skysearch.ingest import framestore

    append = framestore.StoreWriter.append
    written = []

    def append_until_full(self, *args, **kwargs):
        if len(written) == 20:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written.append(1)
        return append(self, *args, **kwargs)

    ws = tmp_path / "ws"
    monkeypatch.setattr(framestore.StoreWriter, "append", append_until_full)
    full = cli("ingest", GOES, "--commit-every", "16", "-w", ws)
    assert "Traceback" not in full.stderr
    assert full.exit_code == 2, full.stderr
    assert full.stderr.strip().splitlines()[-1] == (
        "error: no space left on device: free space and re-run"
    )
    rows, pixels = _catalog(ws)  # what was committed before the disk filled is whole
    ref_rows, ref_pixels = _catalog(Path(world["ws"]))
    by_id = {r["frame_id"]: i for i, r in enumerate(ref_rows)}
    assert 0 < len(rows) < len(ref_rows)
    for row, frame in zip(rows, pixels, strict=True):
        assert (ref_pixels[by_id[row["frame_id"]]] == frame).all()

    monkeypatch.setattr(framestore.StoreWriter, "append", append)  # space freed
    again = cli("ingest", GOES, "-w", ws)
    assert again.exit_code == 0, again.stderr
    assert_same_catalog(ws, Path(world["ws"]))


def test_a_file_where_the_workspace_keeps_a_folder_is_one_line(cli, tmp_path):
    """`reports` replaced by a file: the run ended in a traceback after it had ingested."""
    src = tmp_path / "src"
    src.mkdir()
    for path in sorted((GOES / "infrared").glob("*.GIF"))[:2]:
        shutil.copy(path, src / path.name)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "reports").write_text("not a folder")
    done = cli("ingest", src, "-w", ws)
    assert "Traceback" not in done.stderr and done.exit_code == 2, done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: File exists ({ws / 'reports'}): a file where a folder belongs, or the reverse; "
        "`skysearch doctor` checks the workspace; then re-run"
    )


def test_only_os_errors_the_disk_explains_are_taken_for_the_users_files(tmp_path):
    """A file where a folder belongs, seen on disk, is the user's to fix; the same errno from
    a two-path call (os.link racing a compaction) or with nothing wrong on disk is a bug, and
    keeps its traceback."""
    from skysearch.cli.app import _caused_by_files

    a_file, a_folder = tmp_path / "reports", tmp_path / "folder"
    a_file.write_text("x")
    a_folder.mkdir()
    assert _caused_by_files(OSError(errno.EEXIST, "File exists", str(a_file)))
    assert not _caused_by_files(OSError(errno.EEXIST, "File exists", str(a_folder)))
    assert not _caused_by_files(OSError(errno.EEXIST, "File exists", str(a_file), None, "b"))
    assert _caused_by_files(OSError(errno.ENOTDIR, "Not a directory", str(a_file / "x")))
    assert not _caused_by_files(OSError(errno.ENOTDIR, "Not a directory", str(a_folder / "x")))
    assert _caused_by_files(OSError(errno.EACCES, "Permission denied", str(a_file)))
    assert not _caused_by_files(OSError(errno.EIO, "Input/output error", str(a_file)))


def _mount_tmpfs(folder: Path, size: str) -> None:
    options = f"size={size}" if not os.path.ismount(folder) else f"remount,size={size}"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], check=True)


def test_disk_full_on_a_real_small_filesystem(world, tmp_path):
    """The same on a real 3 MB tmpfs (the sample's frames need ~5 MB), through the console."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root and mount(8) to make a small tmpfs")
    folder = tmp_path / "small"
    folder.mkdir()
    try:
        _mount_tmpfs(folder, "3m")
    except (subprocess.CalledProcessError, OSError) as exc:
        pytest.skip(f"cannot mount a tmpfs here: {exc}")
    try:
        command = [sys.executable, "-m", "skysearch", "ingest", str(GOES), "-w", str(folder / "ws")]
        full = subprocess.run([*command, "--commit-every", "16"], capture_output=True, text=True)
        assert "Traceback" not in full.stderr
        assert full.returncode == 2, full.stderr
        last = full.stderr.strip().splitlines()[-1]
        assert last.startswith("error: no space left on device") and "free space and re-run" in last
        _mount_tmpfs(folder, "64m")  # free space
        again = subprocess.run(command, capture_output=True, text=True)
        assert again.returncode == 0, again.stderr
        assert_same_catalog(folder / "ws", Path(world["ws"]))
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


# ---------------------------------------------------------------------------- units
def test_durations_are_bounded():
    from datetime import timedelta

    from skysearch.errors import UsageError
    from skysearch.timeutil import MAX_DURATION, parse_duration

    assert parse_duration("36525d") == MAX_DURATION
    for text in ("36526d", "99999999d", "9" * 400 + "s"):
        with pytest.raises(UsageError, match="too long"):
            parse_duration(text)
    assert parse_duration("90min") == timedelta(minutes=90)


def test_search_filters_refuse_a_window_datetime_cannot_hold():
    from datetime import datetime, timedelta, timezone

    from skysearch.retrieval.store.filters import SearchFilters

    from skysearch.errors import UsageError

    with pytest.raises(UsageError, match="exclude_window"):
        SearchFilters(
            exclude_around=datetime(2017, 9, 7, tzinfo=timezone.utc),
            exclude_window=timedelta(days=99_999_999),
        )


def test_a_failed_export_leaves_no_partial_file(tmp_path, monkeypatch):
    from skysearch.retrieval.store import Point, open_store
    from skysearch.retrieval.store.transfer import export_store

    store = open_store(None, ":memory:")
    store.ensure_collection("c", 4)
    store.upsert("c", [Point("6f1c2e0a-0000-4000-8000-000000000001", [1.0, 0, 0, 0])])

    def disk_full(*_: object, **__: object):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        yield

    monkeypatch.setattr(store, "scroll", disk_full)
    with pytest.raises(OSError):
        export_store(store, tmp_path / "store.jsonl.gz", progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_bug_is_exit_code_3_with_its_traceback(cli, tmp_path, monkeypatch):
    """An unexpected exception is not a user's mistake (2) nor a job's "some inputs skipped"
    (1): its traceback, one line saying what it is, exit code 3."""
    from skysearch.ingest import pipeline

    for error in (RuntimeError, EOFError):  # click reads an EOFError as Ctrl-D: not here

        def broken(*args, error=error, **kwargs):
            raise error("something unforeseen")

        monkeypatch.setattr(pipeline, "discover", broken)
        result = cli("ingest", GOES, "-w", tmp_path / "ws")
        assert result.exit_code == 3
        assert f"{error.__name__}: something unforeseen" in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: unexpected failure")


def test_a_share_that_may_be_zero_says_so():
    """`--validation 1` said "between 0 and 1 (both excluded)", though 0 is allowed."""
    import typer
    from skysearch.cli.options import share_or_none

    assert share_or_none(0) == 0 and share_or_none(0.5) == 0.5
    for value in (1, -0.1):
        with pytest.raises(typer.BadParameter, match=f"at least 0 and below 1, got {value}"):
            share_or_none(value)
