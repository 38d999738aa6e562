"""Shared fixtures: real data locations and an in-process CLI runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from skysearch.cli.app import _register

# Register every CLI command now, in the order the console entry point does: a test module
# importing one command module first (e.g. skysearch.cli.serve) would otherwise register it
# first and change the order of `--help` and of the generated CLI reference.
_register()

REPO = Path(__file__).resolve().parent.parent
#: Test worker processes at most (each holds its own models, workspaces and services).
MAX_WORKERS = 4


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: a worker per CPU this run may use (its affinity and cgroup quota, as the
    product sizes its own pools), at most ``MAX_WORKERS``."""
    from skysearch.cpus import usable_cpus

    return min(MAX_WORKERS, usable_cpus())


SHARED_DATA = Path(os.environ.get("SKYSEARCH_SHARED_DATA", REPO.parent / "shared" / "data"))
SAMPLE_DATA = REPO / "data" / "sample"


def shared_data(*parts: str) -> Path:
    """A path under ../shared/data, or skip the test with a clear reason when absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} (a developer machine or CI has it)")
    return path


def first_ir_frames(folder: Path, count: int) -> Path:
    """A new ``folder`` holding copies of the bundled sample's first ``count`` IR frames (one
    an hour from 2017-09-06 00:45 UTC): a small real archive to ingest."""
    folder.mkdir()
    infrared = SAMPLE_DATA / "goes-irma-2017" / "infrared"
    for path in sorted(infrared.glob("HUIR17249*.GIF"))[:count]:
        shutil.copy(path, folder / path.name)
    return folder


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


@pytest.fixture
def cli(capsys):
    """Run ``skysearch ARGS...`` in-process exactly as the console script does."""
    from skysearch.cli.app import main

    def run(*args: str) -> CliResult:
        code = 0
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return CliResult(code, out.out, out.err)

    return run


HOLD = """
import sys, time
from pathlib import Path
if sys.argv[1] == "job":
    from skysearch.locks import job_lock
    lock = job_lock(Path(sys.argv[2]) / ".update.lock", "busy")
    lock.__enter__()
elif sys.argv[1] == "ingest":
    from skysearch.config import Workspace
    from skysearch.ingest.framestore import StoreWriter
    writer = StoreWriter(Workspace(Path(sys.argv[2])))
    writer.__enter__()
else:
    from skysearch.config import load_settings
    from skysearch.retrieval.store import open_store
    store = open_store(load_settings(workspace=Path(sys.argv[2])))
    for name in store.collections():
        store.count(name)
print("holding", flush=True)
time.sleep(60)
"""


def held(what: str, ws: Path) -> subprocess.Popen:
    """Another process holding the workspace's update lock (``job``), its ingest lock
    (``ingest``, as ``skysearch ingest`` or ``repair`` do) or its embedded store (``store``, as
    ``skysearch serve`` does) until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, what, str(ws)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "holding"
    return proc


# ------------------------------------------------------- the service tests' shared service
@pytest.fixture(scope="module")
def served_ws(tmp_path_factory):
    """The session's small real service workspace (``service_env.shared_workspace``)."""
    from service_env import shared_workspace

    return shared_workspace(tmp_path_factory)


@pytest.fixture(scope="module")
def served_url(served_ws) -> str:
    """That workspace served over loopback (uvicorn in this process); its URL."""
    from service_env import server

    return server(served_ws.root)


@pytest.fixture
def sky(served_url):
    """A typed client of the shared service, with its API key."""
    from service_env import API_KEY

    from skysearch.client import SkySearchClient

    with SkySearchClient(served_url, api_key=API_KEY) as client:
        yield client


@pytest.fixture(scope="module")
def served_catalogs(served_ws):
    """The shared workspace's frame and clip catalogs (as row dicts) and its Workspace."""
    from skysearch.ingest.catalog import read_frames
    from skysearch.ingest.clips import read_clips

    from skysearch.config import load_settings

    workspace = load_settings(workspace=served_ws.root).workspace
    return read_frames(workspace).to_pylist(), read_clips(workspace).to_pylist(), workspace
