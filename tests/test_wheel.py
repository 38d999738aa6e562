"""The wheel is what users install: it must hold every package and its data files.

Builds the wheel, installs it (no dependencies) into a fresh virtual environment outside the
repository whose dependencies come from this environment's site-packages (a ``.pth`` line:
the repository's own editable install is not visible there), then runs ``skysearch --help`` and
an ingest that needs a shipped profile, from a folder outside the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample" / "goes-irma-2017"


def source_copy(dest: Path) -> Path:
    """What the build reads, copied (setuptools builds in the source tree's ``build/``)."""
    dirs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in set(dirs["package-dir"].values()):
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    return dest


def test_wheel_installs_and_runs_outside_the_repository(tmp_path):
    source = source_copy(tmp_path / "src")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path / "dist"), str(source)],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    assert "would be ignored" not in build.stdout + build.stderr  # setuptools' packaging warning
    (wheel,) = (tmp_path / "dist").glob("skysearch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for shipped in (
        "skysearch/ingest/profiles/goes-sector.json",
        "skysearch/encoders/model_configs/SkySearch-Lite0-MiniLM.json",
        "skysearch/workflows/demo.py",
        "skysearch/retrieval/store/embedded.py",
        "skysearch/retrieval/service/static/index.html",
        "skysearch/retrieval/service/static/app.js",
        "skysearch/retrieval/service/static/style.css",
    ):
        assert shipped in names, shipped

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    deps = [p for p in sys.path if p.endswith("site-packages")]  # .pth lines: never scanned
    Path(site, "deps.pth").write_text("\n".join(deps) + "\n")
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert install.returncode == 0, install.stderr[-3000:]

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYSEARCH_", "PYTHON"))}
    where = subprocess.run(
        [python, "-c", "import skysearch.ingest, sys; print(skysearch.ingest.__file__)"],
        capture_output=True, text=True, check=True, cwd=outside, env=env,
    ).stdout  # fmt: skip
    assert where.startswith(str(env_dir)), where
    skysearch = env_dir / "bin" / "skysearch"
    helped = subprocess.run([skysearch, "--help"], capture_output=True, text=True, cwd=outside)
    assert helped.returncode == 0 and "ingest" in helped.stdout, helped.stderr
    ingested = subprocess.run(
        [skysearch, "ingest", str(SAMPLE / "infrared"), "--source", "goes-sector",
         "-w", str(tmp_path / "ws"), "--json"],
        capture_output=True, text=True, cwd=outside, env=env, check=False,
    )  # fmt: skip
    assert ingested.returncode == 0, ingested.stderr[-3000:]
    report = json.loads(ingested.stdout.strip().splitlines()[-1])
    assert report["frames_added"] > 0, report
