"""Checkpoints round-trip exactly; corrupt or mismatched ones fail with a clear error; registry."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone

import pytest
import torch
from skysearch.encoders import registry
from skysearch.encoders.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_into,
    read_config,
    save_checkpoint,
)

from skysearch.config import Workspace
from skysearch.errors import DamagedError, NotFoundError, SkySearchError, UsageError
from skysearch.timeutil import file_stamp


def _model(width: int = 8) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.BatchNorm1d(width))


def test_roundtrip_is_exact(tmp_path):
    model = _model()
    save_checkpoint(tmp_path / "ck", model, {"arch": "toy", "channels": ["ir"]})
    state, config = load_checkpoint(tmp_path / "ck")
    assert config["arch"] == "toy" and config["channels"] == ["ir"]
    for key, value in model.state_dict().items():
        assert torch.equal(state[key], value), key
    fresh = _model()
    torch.nn.init.zeros_(fresh[0].weight)
    load_into(fresh, state)
    assert torch.equal(fresh[0].weight, model[0].weight)


def test_corrupt_weights_give_clear_error(tmp_path):
    save_checkpoint(tmp_path, _model(), {"arch": "toy"})
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path)


def test_weights_damaged_in_place_are_refused_on_load(tmp_path):
    """Bytes overwritten inside the tensors (the header whole) loaded as other weights: the
    search answered with them, or said a query vector 'contains NaN or inf'."""
    save_checkpoint(tmp_path, _model(), {"arch": "toy"})
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-8:] = b"\x7f" * 8
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum recorded when they were saved .damaged"):
        load_checkpoint(tmp_path)


def test_corrupt_config_and_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing")
    save_checkpoint(tmp_path, _model(), {"arch": "toy"})
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_config(tmp_path)


def test_mismatched_architecture(tmp_path):
    save_checkpoint(tmp_path, _model(8), {"arch": "toy"})
    state, _ = load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not match") as info:
        load_into(_model(16), state)
    assert isinstance(info.value, SkySearchError)


def test_weights_from_another_save(tmp_path):
    save_checkpoint(tmp_path / "a", _model(8), {})
    save_checkpoint(tmp_path / "b", _model(16), {})
    (tmp_path / "a" / "model.safetensors").write_bytes(
        (tmp_path / "b" / "model.safetensors").read_bytes()
    )
    with pytest.raises(CheckpointError, match="do not match its config"):
        load_checkpoint(tmp_path / "a")


def test_registry_list_get_latest(tmp_path):
    ws = Workspace(tmp_path)
    with pytest.raises(NotFoundError, match=r"no clip model .*\(skysearch train clips\)"):
        registry.latest(ws, "clip")
    with pytest.raises(NotFoundError, match=r"\(skysearch train predictor\)"):
        registry.latest(ws, "predictor")
    first = registry.register_model(ws, "clip-a", "clip", {"tensors": {}, "dim": 256}, {"x": 1})
    registry.register_model(ws, "frame-a", "frame", {}, {})
    second = registry.register_model(ws, "clip-b", "clip", {}, {})
    assert [r.model_id for r in registry.list_models(ws, "clip")] == ["clip-a", "clip-b"]
    assert registry.latest(ws, "clip").model_id == second.model_id != first.model_id
    assert registry.get_model(ws, "clip-a").config == {"dim": 256}
    registry.update_metrics(ws, "clip-a", {"ndcg": 0.5})
    assert registry.get_model(ws, "clip-a").metrics == {"x": 1, "ndcg": 0.5}
    data = json.loads((ws.models_dir / "registry.json").read_text())
    assert {m["model_id"] for m in data["models"]} == {"clip-a", "clip-b", "frame-a"}
    with pytest.raises(NotFoundError):
        registry.get_model(ws, "nope")


def test_a_model_id_carries_its_utc_time_and_the_registry_reads_it_back(tmp_path):
    when = datetime(2017, 9, 7, 9, 45, 30, tzinfo=timezone(timedelta(hours=9)))  # KST
    model_id = registry.new_model_id("clip", when)
    assert re.fullmatch(r"clip-20170907T004530Z-[0-9a-f]{6}", model_id), model_id
    assert file_stamp(when, micro=True) == "20170907T004530000000Z"
    folder = tmp_path / model_id
    folder.mkdir()
    record = registry.record_from_checkpoint(folder, {"kind": "clip"})
    assert record.created == "2017-09-07T00:45:30Z"


def test_a_registry_that_cannot_take_a_model_is_found_before_training(tmp_path):
    ws = Workspace(tmp_path)
    registry.check_writable(ws)  # nothing yet: fine, and nothing created
    assert not ws.models_dir.exists()
    registry.register_model(ws, "clip-a", "clip", {}, {})
    registry.check_writable(ws)
    (ws.models_dir / "registry.json.lock").unlink()
    (ws.models_dir / "registry.json.lock").mkdir()
    with pytest.raises(UsageError, match="cannot open the model registry's lock"):
        registry.check_writable(ws)
    (ws.models_dir / "registry.json.lock").rmdir()
    (ws.models_dir / "registry.json").write_text("{")
    with pytest.raises(DamagedError, match="the model registry is unreadable"):
        registry.check_writable(ws)


@pytest.mark.parametrize("damage", ["weights cut short", "history shorter than its epochs"])
def test_a_damaged_resume_state_starts_over_and_says_so(damage, tmp_path, caplog):
    """A damaged resume state is never resumed from as if whole: the run starts over, with a
    warning naming the folder."""
    from skysearch.encoders.training.loop import RunState, TrainConfig, fit

    model = _model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = RunState({"model": model}, {"opt": optimizer})

    def run_epoch(epoch: int, meter) -> dict:
        optimizer.zero_grad()
        model(torch.ones(2, 4)).sum().backward()
        optimizer.step()
        return {"loss": float(epoch)}

    run_dir = tmp_path / "run"
    cfg = TrainConfig(epochs=2)
    assert fit(cfg, run_epoch, state, run_dir, "fp", progress=False).resumed_from_epoch == 0
    assert fit(cfg, run_epoch, state, run_dir, "fp", progress=False).resumed_from_epoch == 2
    if damage == "weights cut short":
        weights = run_dir / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[:100])
    else:
        config = json.loads((run_dir / "config.json").read_text())
        config["history"] = config["history"][:1]
        (run_dir / "config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING"):
        again = fit(cfg, run_epoch, state, run_dir, "fp", progress=False)
    assert again.resumed_from_epoch == 0 and [h["epoch"] for h in again.history] == [1, 2]
    assert f"resume state in {run_dir} is damaged" in caplog.text
    assert "training starts over" in caplog.text
