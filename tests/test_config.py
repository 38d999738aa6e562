"""Settings.device: one precedence (flag > SKYSEARCH_DEVICE > skysearch.toml > auto), one
resolution, honoured by every command that runs a model."""

from __future__ import annotations

import pytest
import torch
from conftest import SAMPLE_DATA
from skysearch.encoders.device import resolve_device

from skysearch.config import load_settings
from skysearch.errors import UsageError

SCENES = SAMPLE_DATA / "rsscn7-mini"
AN_IMAGE = next(p for p in sorted(SCENES.rglob("*")) if p.suffix == ".jpg")

#: Commands that run a model, each able to start on an empty workspace (no catalog, no model):
#: the device is resolved before anything else needs one.
MODEL_COMMANDS = [
    ("search", "text", "a river"),
    ("search", "image", "--file", AN_IMAGE),
    ("index", "frames"),
    ("index", "clips"),
    ("index", "scenes", SCENES),
    ("eval", "clips"),
    ("eval", "text-image", "--images", SCENES),
    ("serve", "--port", "1"),
]

BAD_DEVICE = "error: --device is 'tpu', not one of auto, cpu, cuda, cuda:N"


@pytest.fixture
def here(tmp_path, monkeypatch):
    """A clean current folder (skysearch.toml is read from it) and no device in the env."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SKYSEARCH_DEVICE", raising=False)
    return tmp_path


def test_device_precedence_flag_env_file_auto(here, monkeypatch):
    assert load_settings().device == "auto"
    (here / "skysearch.toml").write_text('device = "cuda:1"\n')
    assert load_settings().device == "cuda:1"
    monkeypatch.setenv("SKYSEARCH_DEVICE", "cpu")
    assert load_settings().device == "cpu"
    assert load_settings(device="cuda").device == "cuda"


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == resolve_device("auto").type == expected
    assert resolve_device(" CPU ") == torch.device("cpu")
    with pytest.raises(UsageError, match="not one of auto, cpu") as bad:
        resolve_device("tpu")
    assert bad.value.params == ("device",)
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="no CUDA GPU"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("args", MODEL_COMMANDS, ids=lambda a: " ".join(map(str, a[:2])))
def test_env_device_reaches_every_model_command(here, monkeypatch, cli, args):
    """SKYSEARCH_DEVICE=tpu: one clear error line, exit 2, on each command (it was read by
    `train predictor` only: search and indexing ignored it)."""
    ws = here / "ws"
    monkeypatch.setenv("SKYSEARCH_DEVICE", "tpu")
    result = cli(*args, "-w", ws)
    assert result.exit_code == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(BAD_DEVICE), result.stderr
    assert "SKYSEARCH_DEVICE" in lines[0]


@pytest.mark.parametrize("kind", ["frame", "clip"])
def test_flag_beats_env_and_env_beats_file(here, monkeypatch, cli, kind):
    """A good device gets past the device check to the next one (no model trained yet)."""
    args = ("index", f"{kind}s", "-w", here / "ws")
    no_model = f"error: no {kind} model"
    monkeypatch.setenv("SKYSEARCH_DEVICE", "tpu")
    flagged = cli(*args, "--device", "cpu")
    assert flagged.exit_code == 2 and flagged.stderr.startswith(no_model), flagged.stderr
    (here / "skysearch.toml").write_text('device = "tpu"\n')
    monkeypatch.setenv("SKYSEARCH_DEVICE", "cpu")
    assert cli(*args).stderr.startswith(no_model)
    monkeypatch.delenv("SKYSEARCH_DEVICE")
    assert cli(*args).stderr.startswith(BAD_DEVICE)
