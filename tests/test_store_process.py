"""Store across processes: a held store directory, kill -9 mid-load, unreachable server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from skysearch.retrieval.store import Point, open_store
from skysearch.retrieval.store.embedded import EmbeddedStore

from skysearch.config import Settings, Workspace
from skysearch.errors import StoreError, UsageError

BATCH = 200
BATCHES = 40
DIM = 64

# Writes BATCHES batches (skipping none: upserts are idempotent), printing "ACK b" only after
# the batch's upsert has returned.
LOADER = textwrap.dedent(
    f"""
    import sys, uuid, numpy as np
    from skysearch.retrieval.store import Point
    from skysearch.retrieval.store.embedded import EmbeddedStore
    store = EmbeddedStore(sys.argv[1])
    store.ensure_collection("clips", {DIM})
    rng = np.random.default_rng(0)
    for b in range({BATCHES}):
        pts = [Point(uuid.uuid5(uuid.NAMESPACE_URL, f"{{b}}/{{i}}"), rng.normal(size={DIM}),
                     {{"batch": b}}) for i in range({BATCH})]
        store.upsert("clips", pts)
        print(f"ACK {{b}}", flush=True)
    store.close()
    print("DONE", flush=True)
    """
)

HOLDER = textwrap.dedent(
    """
    import sys, time
    from skysearch.retrieval.store.embedded import EmbeddedStore
    store = EmbeddedStore(sys.argv[1])
    store.ensure_collection("frames", 8)
    print("READY", flush=True)
    time.sleep(60)
    """
)


def _spawn(script: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ids(batch: int) -> set[str]:
    return {str(uuid.uuid5(uuid.NAMESPACE_URL, f"{batch}/{i}")) for i in range(BATCH)}


def test_store_directory_held_by_another_process_is_named(tmp_path: Path):
    holder = _spawn(HOLDER, str(tmp_path))
    try:
        assert holder.stdout.readline().strip() == "READY", holder.stderr.read()
        store = EmbeddedStore(tmp_path)
        with pytest.raises(StoreError) as err:
            store.count("frames")
        message = str(err.value)
        assert str(tmp_path / "frames") in message
        assert f"pid {holder.pid}" in message
        assert "\n" not in message
    finally:
        holder.kill()
        holder.wait()
    store = EmbeddedStore(tmp_path)  # released when the holder dies
    assert store.count("frames") == 0
    store.close()


def test_an_engine_error_that_only_contains_block_is_not_a_store_in_use(tmp_path: Path):
    """ "in use" (doctor: ok, repair: later) is for the engine's lock only: a damaged file
    whose error says "block" stays an error."""
    from skysearch.errors import StoreInUse

    store = EmbeddedStore(tmp_path)
    path = tmp_path / "frames"
    held = "Service runtime error: failed to open WAL x/wal: Can't init WAL: Kind(WouldBlock)"
    others = ("bad block 7 in /srv/locks/a", "failed to open /srv/lock/x: Kind(NotFound)")
    for text, in_use in ((held, True), *((t, False) for t in others)):
        error = store._open_error(path, Exception(text))
        assert isinstance(error, StoreInUse) == in_use, text
        assert isinstance(error, StoreError)
    store.close()


def test_an_engine_error_naming_a_read_only_or_forbidden_file_is_not_damage(tmp_path: Path):
    """The engine maps its files read-write even to search: EROFS / EACCES say so (doctor:
    not a repair), other errors stay plain store errors."""
    from skysearch.errors import StoreNotWritable

    store = EmbeddedStore(tmp_path)
    engine = "Service runtime error: failed to load segment x: Failed to open mmap payload storage"
    cases = {
        f"{engine}: Read-only file system (os error 30)": "the file system is read-only",
        f"{engine}: Permission denied (os error 13)": "no permission to open its files",
        f"{engine}: Operation not permitted (os error 1)": "is not permitted",
        f"{engine}: No such file or directory (os error 2)": None,
    }
    for text, reason in cases.items():
        error = store._open_error(tmp_path / "scenes", Exception(text))
        assert isinstance(error, StoreNotWritable) == (reason is not None), text
        assert reason is None or reason in str(error) and "skysearch serve" in str(error)
    store.close()


def _read_only(root: Path) -> list[str]:
    """An argv prefix running a command with ``root`` mounted read-only in a private mount
    namespace (a real read-only file system; root ignores file modes), or skip."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    prefix = ["unshare", "-m", "sh", "-c", script, str(root)]
    try:
        works = subprocess.run([*prefix, "true"], capture_output=True).returncode == 0
    except FileNotFoundError:
        works = False
    if not works:
        pytest.skip("needs unshare and mount rights for a read-only bind mount")
    return prefix


def test_a_store_on_a_read_only_file_system_is_said_so_not_called_damaged(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    store = EmbeddedStore(ws.store_dir)
    store.ensure_collection("scenes", DIM)
    store.upsert("scenes", [Point(uuid.uuid4(), [1.0] * DIM, {"label": "x"})])
    store.close()
    skysearch = [*_read_only(ws.root), sys.executable, "-m", "skysearch"]
    info = subprocess.run([*skysearch, "store", "info", "-w", ws.root], capture_output=True)
    err = info.stderr.decode()
    assert info.returncode == 2 and "Traceback" not in err, err
    assert "the file system is read-only" in err and "skysearch serve" in err, err
    doctor = subprocess.run([*skysearch, "doctor", "-w", ws.root], capture_output=True)
    table = doctor.stderr.decode()  # doctor's table goes to stderr (stdout: --json)
    lines = [x for x in table.splitlines() if x.startswith("store ")]
    assert len(lines) == 1 and " fail " in lines[0], table
    assert "read-only, not opened" in lines[0] and "repair" not in lines[0], lines[0]
    with EmbeddedStore(ws.store_dir) as again:  # untouched: the point is still there
        assert again.count("scenes") == 1


def test_kill_9_during_bulk_upsert_loses_no_acknowledged_point(tmp_path: Path):
    loader = _spawn(LOADER, str(tmp_path))
    acked: list[int] = []
    deadline = time.monotonic() + 60
    while len(acked) < 8 and time.monotonic() < deadline:
        line = loader.stdout.readline()
        if not line:
            break
        if line.startswith("ACK"):
            acked.append(int(line.split()[1]))
    os.kill(loader.pid, signal.SIGKILL)
    loader.wait()
    assert len(acked) >= 8, loader.stderr.read()

    store = EmbeddedStore(tmp_path)
    present = {r.id for r in store.scroll("clips")}
    for b in acked:
        assert _ids(b) <= present, f"batch {b} was acknowledged but is missing after kill -9"
    store.close()

    rerun = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert rerun.returncode == 0, rerun.stderr
    assert rerun.stdout.strip().endswith("DONE")
    store = EmbeddedStore(tmp_path)
    assert store.count("clips") == BATCH * BATCHES
    store.close()


def test_unreachable_server_fails_with_one_line(tmp_path: Path):
    settings = Settings(workspace=Workspace(tmp_path), qdrant_url="http://127.0.0.1:1")
    with pytest.raises(StoreError) as err:
        open_store(settings)
    message = str(err.value)
    assert "cannot reach Qdrant at http://127.0.0.1:1 after 3 attempts" in message
    assert "\n" not in message


def test_a_server_that_is_not_qdrant_is_said_at_once(tmp_path: Path):
    """Another HTTP service on the port answered 404: "cannot reach Qdrant ... (HTTP 404)"
    after three attempts, as if no server were there."""
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    other = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{other.server_address[1]}"
    said = []
    try:
        # no such path (404); an HTML page; JSON that is not Qdrant's (both were "cannot reach
        # Qdrant ... after 3 attempts" though the server answered)
        for body in (None, "<html>hello</html>", '{"hello": "world"}'):
            if body is not None:
                (served / "collections").write_text(body)
            with pytest.raises(StoreError) as err:
                open_store(Settings(workspace=Workspace(tmp_path), qdrant_url=url))
            said.append(str(err.value))
    finally:
        other.shutdown()
    assert said[0] == (
        f"{url} answered HTTP 404 for its collections list: no Qdrant API at that URL (wrong "
        "port or path?); check QDRANT_URL"
    )
    for message in said[1:]:
        assert message.startswith(f"{url} answered, but not as Qdrant (its collections list: ")
        assert message.endswith("no Qdrant API at that URL (wrong port or path?); check QDRANT_URL")


def test_unreachable_server_over_grpc_says_why_in_one_line(tmp_path: Path, monkeypatch):
    from skysearch.retrieval.store import server

    monkeypatch.setattr(server, "CONNECT_BACKOFF_S", 0.0)
    monkeypatch.setenv("QDRANT_PREFER_GRPC", "1")
    settings = Settings(workspace=Workspace(tmp_path), qdrant_url="http://127.0.0.1:1")
    with pytest.raises(StoreError) as err:
        open_store(settings)
    message = str(err.value)  # was "(<_InactiveRpcError of RPC that terminated with:)"
    assert "after 3 attempts (gRPC UNAVAILABLE: " in message and "\n" not in message


def test_a_server_that_goes_away_is_one_store_error_line(tmp_path: Path):
    """A server answering when connected, then gone (stopped, network down): every later call
    is one StoreError line, not the client's traceback."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from skysearch.retrieval.store.server import ServerStore

    failing = threading.Event()

    class Qdrant(BaseHTTPRequestHandler):  # only what connecting asks: the collection list
        def do_GET(self):
            answer = {"result": {"collections": []}, "status": "ok", "time": 0.0}
            if failing.is_set():
                answer = {"status": {"error": "No space left on device"}, "time": 0.0}
            body = json.dumps(answer)
            self.send_response(500 if failing.is_set() else 200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Qdrant)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_port}"
    store = ServerStore.connect(url)
    assert store.collections() == []
    failing.set()  # a server failing: its own words
    with pytest.raises(StoreError, match=r"failed \(HTTP 500: No space left on device\)"):
        store.collections()
    httpd.shutdown()
    httpd.server_close()
    with pytest.raises(StoreError) as err:
        store.collections()
    message = str(err.value)
    assert message.startswith(f"a request to the Qdrant server {url} failed (")
    assert "\n" not in message
    store.close()


def test_an_owner_note_that_cannot_be_written_does_not_stop_the_store(tmp_path: Path):
    """The owner file only names the holder in an "in use" message: a directory in its place
    (or a read-only store root) must not fail opening, searching or dropping."""
    from skysearch.retrieval.store import Point

    store = EmbeddedStore(tmp_path / "store")
    store.ensure_collection("c", 4)
    store.upsert("c", [Point(str(uuid.uuid4()), [1.0, 0.0, 0.0, 0.0])])
    store.close()
    owner = tmp_path / "store" / ".c.skysearch-owner"
    owner.unlink(missing_ok=True)
    owner.mkdir()
    again = EmbeddedStore(tmp_path / "store")
    assert len(again.search("c", [1.0, 0.0, 0.0, 0.0], k=1)) == 1
    again.drop_collection("c")
    assert again.collections() == []
    again.close()


def test_a_qdrant_url_without_its_scheme_is_refused_not_made_a_folder(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = Settings(workspace=Workspace(tmp_path / "ws"), qdrant_url="localhost:6333")
    with pytest.raises(UsageError, match="'localhost:6333' .* needs http:// or https://"):
        open_store(settings)
    assert not (tmp_path / "localhost:6333").exists()


@pytest.mark.parametrize(
    "env, message",
    [  # each was a traceback from the client (exit 3)
        ({"QDRANT_URL": "ftp://x"}, "is not an http:// or https:// URL with a host"),
        ({"QDRANT_URL": "http://127.0.0.1:99999"}, "Port out of range"),
        ({"QDRANT_URL": "http://[::1"}, "Invalid IPv6 URL"),
        ({"QDRANT_URL": "http://127.0.0.1:1 "}, "Port could not be cast"),
        ({"QDRANT_SHARD_NUMBER": "abc"}, "QDRANT_SHARD_NUMBER must be a whole number"),
        ({"QDRANT_REPLICATION_FACTOR": "2.5"}, "QDRANT_REPLICATION_FACTOR must be a whole"),
        ({"QDRANT_API_KEY": "ключ"}, "QDRANT_API_KEY must be ASCII"),
    ],
)
def test_bad_qdrant_settings_are_one_error_line(env, message, tmp_path: Path, monkeypatch, cli):
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:1")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    r = cli("store", "info", "-w", tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], r.stderr


def test_a_password_in_the_qdrant_url_is_not_echoed(tmp_path: Path, monkeypatch, cli):
    monkeypatch.setenv("QDRANT_URL", "http://user:s3cret@127.0.0.1:1")
    r = cli("store", "info", "-w", tmp_path)
    assert r.exit_code == 2 and "cannot reach Qdrant at http://127.0.0.1:1" in r.stderr
    assert "s3cret" not in r.stderr


def test_an_api_key_over_plain_http_is_one_warning_line(tmp_path: Path, monkeypatch, cli):
    """qdrant-client's own UserWarning printed a file, a line and its source code."""
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("QDRANT_API_KEY", "k3y")
    r = cli("store", "info", "-w", tmp_path)
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 2, r.stderr
    assert lines[0] == (
        "warning: the Qdrant API key goes unencrypted to http://127.0.0.1:1: use https:// "
        "unless the network between is private"
    )
    assert lines[1].startswith("error: cannot reach Qdrant at http://127.0.0.1:1")
    monkeypatch.setenv("QDRANT_URL", "https://127.0.0.1:1")
    r = cli("store", "info", "-w", tmp_path)
    assert "warning" not in r.stderr.lower() and r.stderr.startswith("error: cannot reach")


def test_an_index_build_cut_short_leaves_no_files_behind(tmp_path: Path):
    """Ctrl-C or kill during `store optimize` killed the build child, whose half-built segment
    stayed in temp_segments/ for good (~80 MB per 100k points). The next open removes it; the
    points are all there and a new build completes."""
    import numpy as np
    from skysearch.retrieval.store import Point
    from skysearch.retrieval.store.embedded import _CHILD, EdgeIndexParams

    rng = np.random.default_rng(0)
    store = EmbeddedStore(tmp_path, EdgeIndexParams(segment_points=0))
    store.ensure_collection("clips", 128)
    n = 20_000
    store.upsert(
        "clips",
        (Point(uuid.UUID(int=i + 1), v, {}) for i, v in enumerate(rng.normal(size=(n, 128)))),
        batch_size=5000,
    )
    store.close()
    temp = tmp_path / "clips" / "temp_segments"
    child = subprocess.Popen([sys.executable, "-c", _CHILD, str(tmp_path / "clips"), "1", "0"])
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if temp.is_dir() and any(temp.iterdir()):
            break
        time.sleep(0.02)
    assert child.poll() is None, "the build ended before it could be cut short"
    child.kill()
    child.wait()
    assert any(temp.iterdir())  # what the killed build left
    with EmbeddedStore(tmp_path) as reopened:
        assert reopened.count("clips") == n
        assert not any(temp.iterdir())
        reopened.optimize("clips")
        assert reopened.info("clips").indexed_vectors == n
