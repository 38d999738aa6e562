"""Settings.device: one precedence (flag > SKYSEARCH_DEVICE > skysearch.toml > auto), one
resolution, honoured by every command that runs a model."""

from __future__ import annotations

import numpy as np
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
    ws.mkdir()  # a workspace that is not there is said first
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
    (here / "ws").mkdir()  # a workspace that is not there is said first
    no_model = f"error: no {kind} model"
    monkeypatch.setenv("SKYSEARCH_DEVICE", "tpu")
    flagged = cli(*args, "--device", "cpu")
    assert flagged.exit_code == 2 and flagged.stderr.startswith(no_model), flagged.stderr
    (here / "skysearch.toml").write_text('device = "tpu"\n')
    monkeypatch.setenv("SKYSEARCH_DEVICE", "cpu")
    assert cli(*args).stderr.startswith(no_model)
    monkeypatch.delenv("SKYSEARCH_DEVICE")
    assert cli(*args).stderr.startswith(BAD_DEVICE)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_trainers_and_models_run_on_cuda(tmp_path):
    """Every trainer and model door on ``cuda``: inputs follow the model, results come back
    on the CPU (numpy), saved models load anywhere."""
    from skysearch.encoders.factory import load_text_image
    from skysearch.encoders.models.frame import FrameEncoderConfig, build_frame_encoder
    from skysearch.encoders.models.predictor import PredictorConfig, predict
    from skysearch.encoders.training.objectives import EncoderTrainConfig, train_on_arrays
    from skysearch.encoders.training.predictor import (
        PredictorTrainConfig,
        build_predictor,
        fit,
    )
    from skysearch.encoders.training.text_image import train_text_image
    from skysearch.encoders.training.text_image_data import prepare_folder
    from skysearch.encoders.training.text_image_recipe import TextImageTrainConfig

    from skysearch.config import Workspace

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 255, (16, 1, 32, 32), dtype=np.uint8)
    times = np.arange(16) * 3600.0
    sim = np.clip(1 - np.abs(times[:, None] - times[None]) / 6e4, 0.2, 1)
    encoder = build_frame_encoder(FrameEncoderConfig(height=32, width=32, grid=4))
    config = EncoderTrainConfig(epochs=1, batch_size=8, device="cuda")
    history = train_on_arrays(encoder, frames, times, sim, config, tmp_path / "f", "fp", "f")
    assert next(encoder.parameters()).is_cuda and np.isfinite(history[0]["loss"])

    small = PredictorConfig(length=2, channels=1, height=16, width=16, hid_s=8, hid_t=16)
    predictor = build_predictor(small, 0).cuda()
    pairs = torch.rand(8, 2, 1, 16, 16)
    cfg = PredictorTrainConfig(epochs=1, batch_size=4, adversarial=True, device="cuda")
    fit(predictor, pairs, pairs, cfg, tmp_path / "p", (pairs, pairs), progress=False)
    assert predict(predictor, torch.rand(1, 2, 32, 32)).device.type == "cpu"

    ws = Workspace(tmp_path / "ws")
    csvs = prepare_folder(SCENES, ws)
    cfg = TextImageTrainConfig(
        train_csv=str(csvs["train"]),
        val_csv=str(csvs["val"]),
        epochs=1,
        batch_size=16,
        max_steps_per_epoch=2,
        device="cuda",
    )
    assert train_text_image(cfg, ws, progress=False)["history"][0]["val_loss"] > 0
    tim = load_text_image(ws, device="cuda")
    assert tim.device.type == "cuda"
    assert tim.encode_texts(["a river"]).shape == (1, tim.embed_dim)
    assert tim.encode_images([AN_IMAGE]).shape == (1, tim.embed_dim)
