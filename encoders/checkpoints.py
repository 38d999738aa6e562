"""Model checkpoints: ``model.safetensors`` + ``config.json`` in one folder. Never pickle.

A checkpoint folder holds exactly what is needed to rebuild a model: the tensors (safetensors,
which cannot execute code on load) and a JSON config (architecture, channels, working
resolution, training data range, metrics...). Writes are atomic and durable
(``skysearch.atomic``: temp file, fsync, rename, fsync the folder), so an interrupted save or
a power cut never leaves a half-written checkpoint that looks valid.

Every way a checkpoint can be unusable (missing, corrupt, wrong architecture) raises
:class:`CheckpointError` with one line saying what is wrong and what to do.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from skysearch.atomic import atomic_path, atomic_write_bytes
from skysearch.errors import CheckpointError

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
#: config key of the weights file's CRC-32 (``doctor --deep`` compares; absent in older ones)
WEIGHTS_CRC = "weights_crc32"
#: Weights up to this size are checked against their CRC-32 on every load (~10 ms for the
#: frame and clip encoders' few MB); larger ones by `skysearch doctor --deep` and repair.
CRC_ON_LOAD_BYTES = 32 * 2**20


def _state_dict_of(model: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = model.state_dict() if isinstance(model, torch.nn.Module) else dict(model)
    # safetensors refuses shared or non-contiguous storage; clone to plain CPU tensors.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def save_checkpoint(
    directory: str | Path,
    model: torch.nn.Module | Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
) -> Path:
    """Write ``model``'s state dict and ``config`` (JSON-serialisable) into ``directory``.

    Returns the directory. Existing files are replaced atomically.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = _state_dict_of(model)
    full_config = {
        **dict(config),
        "format_version": FORMAT_VERSION,
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
    }
    try:  # refused before anything is written
        json.dumps(full_config, default=str)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint config is not JSON-serialisable: {exc}") from None
    with atomic_path(directory / WEIGHTS_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt"})
        full_config[WEIGHTS_CRC] = file_crc32(tmp)
    config_text = json.dumps(full_config, indent=2, sort_keys=True, default=str)
    atomic_write_bytes(directory / CONFIG_FILE, config_text.encode())
    return directory


def file_crc32(path: Path) -> int:
    """CRC-32 of a file's bytes, read in 16 MiB chunks."""
    crc = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(16 * 2**20):
            crc = zlib.crc32(chunk, crc)
    return crc


def checkpoint_problem(directory: str | Path, deep: bool = False) -> str | None:
    """What makes a checkpoint folder unusable, else None: its config unreadable, its weights
    missing or not what their header declares (safetensors' own check, no tensor read);
    ``deep``: also the weights' bytes against the CRC-32 recorded when they were saved
    (checkpoints from before have none)."""
    directory = Path(directory)
    weights = directory / WEIGHTS_FILE
    try:
        config = read_config(directory)
        if not weights.is_file():
            return f"{weights} is missing"
        with safe_open(str(weights), "pt"):  # parses the header, checks it covers the file
            pass
    except CheckpointError as exc:
        return str(exc)
    except (SafetensorError, OSError) as exc:
        return f"{weights} is not whole ({str(exc).splitlines()[0]})"
    want = config.get(WEIGHTS_CRC)
    if deep and isinstance(want, int) and file_crc32(weights) != want:
        return f"{weights} does not match the checksum recorded when it was saved"
    return None


def read_config(directory: str | Path) -> dict[str, Any]:
    """The checkpoint's ``config.json`` (without loading tensors)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {Path(directory)} (missing {CONFIG_FILE}); "
            "train a model first or pass the right {model_id}",
            params=["model_id"],
        )
    try:
        config = json.loads(path.read_text())
    except PermissionError as exc:
        raise CheckpointError(f"cannot read checkpoint config {path}: {exc.strerror}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"checkpoint config {path} is corrupt ({exc}); retrain") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint config {path} is not a JSON object; retrain")
    return config


def load_checkpoint(
    directory: str | Path, device: str | torch.device = "cpu", sections: tuple[str, ...] = ()
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read ``(state_dict, config)`` from a checkpoint folder, checking it is whole.

    ``sections``: config keys that must hold objects (the architecture the caller builds).
    """
    directory = Path(directory)
    config = read_config(directory)
    missing = [key for key in sections if not isinstance(config.get(key), dict)]
    if missing:
        raise CheckpointError(
            f"checkpoint config {directory / CONFIG_FILE} has no {', '.join(missing)} "
            "section; retrain"
        )
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {directory} has no {WEIGHTS_FILE}; retrain")
    if not os.access(weights, os.R_OK):  # safetensors says "No such file" for this
        raise CheckpointError(f"cannot read checkpoint weights {weights}: permission denied")
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(
            f"checkpoint weights {weights} are corrupt ({str(exc).splitlines()[0]}); retrain"
        ) from None
    expected = config.get("tensors")
    if isinstance(expected, dict):
        actual = {k: list(v.shape) for k, v in state.items()}
        if actual != expected:
            raise CheckpointError(
                f"checkpoint {directory}: weights do not match its config.json "
                "(files from different saves?); retrain"
            )
    want = config.get(WEIGHTS_CRC)
    small = weights.stat().st_size <= CRC_ON_LOAD_BYTES
    if small and isinstance(want, int) and file_crc32(weights) != want:
        raise CheckpointError(  # bytes damaged in place load as other weights, without a word
            f"checkpoint weights {weights} do not match the checksum recorded when they were "
            "saved (damaged since, or from another save): `skysearch repair` unregisters the "
            "model; train it again"
        )
    return state, config


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str = "") -> None:
    """Load ``state`` into ``model`` strictly; a mismatch is a clear :class:`CheckpointError`."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong_shape = sorted(
        k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape)
    )
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        if wrong_shape:
            k = wrong_shape[0]
            parts.append(
                f"{len(wrong_shape)} with other shapes (e.g. {k}: "
                f"{list(state[k].shape)} vs {list(own[k].shape)})"
            )
        where = f" {source}" if source else ""
        raise CheckpointError(
            f"checkpoint{where} does not match the model architecture: "
            + ", ".join(parts)
            + "; use a checkpoint made for this model or retrain"
        )
    model.load_state_dict(dict(state), strict=True)
