"""A small model registry: ``<workspace>/models/registry.json`` lists every trained model.

Each entry: ``model_id``, ``kind`` (``frame``, ``clip``, ``predictor``, ``text-image``...),
``created`` (RFC 3339 UTC), ``path`` (checkpoint folder, relative to the models folder),
``config`` (copy of the checkpoint's config without the tensor list) and ``metrics``.

Read-modify-write cycles hold an exclusive ``fcntl`` lock and write atomically, so two
training runs finishing together cannot lose each other's entry.
"""

from __future__ import annotations

import fcntl
import itertools
import json
import logging
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from skysearch.atomic import atomic_write_json
from skysearch.config import Workspace
from skysearch.errors import DamagedError, NotFoundError, UsageError
from skysearch.timeutil import FILE_STAMP, file_stamp, to_rfc3339

REGISTRY_FILE = "registry.json"

log = logging.getLogger(__name__)


@dataclass
class ModelRecord:
    model_id: str
    kind: str
    created: str
    path: str
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def directory(self, workspace: Workspace) -> Path:
        """Absolute checkpoint folder."""
        path = Path(self.path)
        return path if path.is_absolute() else workspace.models_dir / path

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_satellites(data: Mapping[str, Any]) -> list[str]:
    """The satellites a model's training ``data`` section covers: its ``satellites`` list (a
    cross-satellite model), else its one ``satellite`` (every model before the list)."""
    if data.get("satellites"):
        return list(data["satellites"])
    return [data["satellite"]] if data.get("satellite") else []


def _registry_path(workspace: Workspace) -> Path:
    return workspace.models_dir / REGISTRY_FILE


def _read(workspace: Workspace) -> list[dict[str, Any]]:
    path = _registry_path(workspace)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:  # not UTF-8, not JSON
        raise DamagedError(path, f"the model registry is unreadable ({exc})") from None
    except OSError as exc:  # not damage: permissions, a folder in its place...
        raise UsageError(f"cannot read the model registry {path}: {exc.strerror}") from None
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, list):
        raise DamagedError(path, "the model registry has no 'models' list")
    for number, entry in enumerate(models, 1):
        if not _is_record(entry):
            raise DamagedError(path, f"the model registry's entry {number} is not a model record")
    return models


def _is_record(entry: Any) -> bool:
    """A registry entry ``ModelRecord(**entry)`` can hold: its fields, of the right types."""
    if not isinstance(entry, dict) or not set(entry) <= {f.name for f in fields(ModelRecord)}:
        return False
    text = ("model_id", "kind", "created", "path")
    return all(isinstance(entry.get(k), str) for k in text) and all(
        isinstance(entry.get(k, {}), dict) for k in ("config", "metrics")
    )


def _write(workspace: Workspace, models: list[dict[str, Any]]) -> None:
    atomic_write_json(_registry_path(workspace), {"models": models}, indent=2, default=str)


@contextmanager
def _locked(workspace: Workspace) -> Iterator[None]:
    workspace.models_dir.mkdir(parents=True, exist_ok=True)
    path = workspace.models_dir / (REGISTRY_FILE + ".lock")
    try:
        lock = open(path, "w")  # noqa: SIM115 - closed below, after the lock is released
    except OSError as exc:
        raise UsageError(f"cannot open the model registry's lock {path}: {exc}") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def check_writable(workspace: Workspace) -> None:
    """Raise now if a model could not be registered at the end of a training run (a damaged
    registry: ``DamagedError``; a lock that cannot be taken: ``UsageError``), not after it."""
    if not workspace.models_dir.is_dir():
        return  # nothing registered yet: the first registration creates it
    with _locked(workspace):
        _read(workspace)


def new_model_id(kind: str, when: datetime | None = None) -> str:
    """``<kind>-YYYYmmddTHHMMSSZ-<6 hex>``: sortable by creation, unique across runs."""
    return f"{kind}-{file_stamp(when)}-{uuid.uuid4().hex[:6]}"


def model_dir(workspace: Workspace, model_id: str) -> Path:
    """Where a model's checkpoint folder lives (not created)."""
    return workspace.models_dir / model_id


def register_model(
    workspace: Workspace,
    model_id: str,
    kind: str,
    config: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    path: str | Path | None = None,
) -> ModelRecord:
    """Add (or replace) ``model_id`` in the registry. ``path`` defaults to ``models/<model_id>``."""
    rel = Path(path) if path is not None else Path(model_id)
    try:
        rel = rel.relative_to(workspace.models_dir)
    except ValueError:
        pass
    clean_config = {k: v for k, v in dict(config or {}).items() if k != "tensors"}
    record = ModelRecord(
        model_id=model_id,
        kind=kind,
        created=to_rfc3339(datetime.now(timezone.utc)),
        path=str(rel),
        config=clean_config,
        metrics=dict(metrics or {}),
    )
    with _locked(workspace):
        models = [m for m in _read(workspace) if m.get("model_id") != model_id]
        models.append(record.to_dict())
        _write(workspace, models)
    return record


def unregister(workspace: Workspace, model_id: str) -> None:
    """Remove ``model_id`` from the registry (its folder is left as it is)."""
    with _locked(workspace):
        _write(workspace, [m for m in _read(workspace) if m.get("model_id") != model_id])


def update_metrics(workspace: Workspace, model_id: str, metrics: Mapping[str, Any]) -> ModelRecord:
    """Merge ``metrics`` into a registered model's metrics (e.g. after an evaluation)."""
    with _locked(workspace):
        models = _read(workspace)
        for entry in models:
            if entry.get("model_id") == model_id:
                entry.setdefault("metrics", {}).update(dict(metrics))
                _write(workspace, models)
                return ModelRecord(**entry)
    raise NotFoundError(f"no model {model_id!r} in {_registry_path(workspace)}")


#: Checkpoint config keys that are not part of a registry record's ``config``.
CHECKPOINT_ONLY = frozenset(
    {"tensors", "format_version", "weights_crc32", "kind", "model_id"}
    | {"epochs_done", "summary", "class_phrases"}  # text-image run state
)


def record_from_checkpoint(folder: Path, config: Mapping[str, Any]) -> ModelRecord:
    """The registry record of checkpoint ``folder`` (named by its model id), rebuilt from its
    ``config`` when the registry was lost: created at the id's time (else when the config was
    written); metrics as training registered them, not the ones evaluations added later."""
    stamp = re.search(r"-(\d{8}T\d{6}Z)-", folder.name)
    try:
        text = stamp.group(1) if stamp else ""
        when = datetime.strptime(text, FILE_STAMP).replace(tzinfo=timezone.utc)
    except ValueError:  # no time in the id, or digits that are none (month 13)
        when = datetime.fromtimestamp((folder / "config.json").stat().st_mtime, timezone.utc)
    return ModelRecord(
        model_id=folder.name,
        kind=str(config["kind"]),
        created=to_rfc3339(when),
        path=folder.name,
        config={k: v for k, v in config.items() if k not in CHECKPOINT_ONLY},
        metrics=_metrics_of(config),
    )


def _metrics_of(config: Mapping[str, Any]) -> dict[str, Any]:
    """The metrics training registered, from what its checkpoint keeps: a predictor's own,
    else the last epoch's validation scores (text-image) or loss (frame, clip)."""
    if isinstance(config.get("metrics"), dict):
        return dict(config["metrics"])
    history = (config.get("summary") or {}).get("history") or config.get("history") or []
    last = history[-1] if history and isinstance(history[-1], dict) else {}
    scores = {k: v for k, v in last.items() if k.startswith("val_")}
    return scores or ({"final_loss": last["loss"]} if "loss" in last else {})


def model_folders(workspace: Workspace) -> dict[Path, dict[str, Any]]:
    """The model checkpoint folders under ``models/`` and their configs: folders named
    ``<kind>-...`` after the kind their config names (training runs' own ``.run-*`` folders
    are not models)."""
    found = {}
    folders = sorted(workspace.models_dir.iterdir()) if workspace.models_dir.is_dir() else []
    for folder in folders:
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        kind = config.get("kind") if isinstance(config, dict) else None
        if isinstance(kind, str) and folder.name.startswith(f"{kind}-"):
            found[folder] = config
    return found


def records_from_folders(workspace: Workspace) -> tuple[list[ModelRecord], dict[Path, str]]:
    """Registry records of the whole checkpoints among :func:`model_folders`, and the damaged
    ones with their problem."""
    from skysearch.encoders.checkpoints import checkpoint_problem

    records, damaged = [], {}
    for folder, config in model_folders(workspace).items():
        if problem := checkpoint_problem(folder, deep=True):
            damaged[folder] = problem
        else:
            records.append(record_from_checkpoint(folder, config))
    return records, damaged


def restore(workspace: Workspace, records: list[ModelRecord]) -> Path | None:
    """Write ``records`` as the registry in place of a damaged or missing one; a damaged file
    is kept beside it as ``registry.json.damaged`` (``.damaged.1``... when an earlier one is
    there; returned; None when there was none)."""
    with _locked(workspace):
        path = _registry_path(workspace)
        aside = None
        try:  # a training run may have registered a model meanwhile: its entry is kept
            kept = _read(workspace)
        except DamagedError:
            kept = []
            aside = path.with_name(path.name + ".damaged")
            for n in itertools.count(1):  # never over an earlier damaged registry
                if not aside.exists():
                    break
                aside = path.with_name(f"{path.name}.damaged.{n}")
            path.replace(aside)
        known = {entry["model_id"] for entry in kept}
        added = [r.to_dict() for r in records if r.model_id not in known]
        _write(workspace, sorted(kept + added, key=lambda entry: entry["created"]))
    return aside


def list_models(workspace: Workspace, kind: str | None = None) -> list[ModelRecord]:
    """Registered models, oldest first (ties: registration order), optionally one ``kind``."""
    records = [ModelRecord(**m) for m in _read(workspace)]
    records = [r for r in records if kind is None or r.kind == kind]
    return sorted(records, key=lambda r: r.created)


def get_model(workspace: Workspace, model_id: str, kind: str | None = None) -> ModelRecord:
    """One model by id, or :class:`NotFoundError` naming the recent ids (of ``kind``, when
    the caller wants one kind)."""
    for record in list_models(workspace):
        if record.model_id == model_id:
            return record
    known = ", ".join(r.model_id for r in list_models(workspace, kind)[-5:]) or "none"
    what = f"{kind} model" if kind else "model"
    raise NotFoundError(f"no {what} {model_id!r} in the registry (recent: {known})")


#: the `skysearch train` command of each model kind
TRAIN_COMMAND = {"frame": "frames", "clip": "clips", "text-image": "text-image"}


def trained_run(workspace: Workspace, kind: str, run: str, epochs: int) -> ModelRecord | None:
    """The whole registered ``kind`` model that a finished run of this setup (``run``, its
    fingerprint) and epoch count made, else None: re-running the same training command
    returns it instead of training and registering a copy. Its epochs: ``epochs_trained``
    where the record keeps no history (predictors)."""
    from skysearch.encoders.checkpoints import checkpoint_problem

    for record in reversed(list_models(workspace, kind)):
        config = record.config
        trained = config.get("epochs_trained", len(config.get("history") or []))
        same = config.get("run") == run and trained == epochs
        if same and not checkpoint_problem(record.directory(workspace), deep=False):
            log.warning(
                "%s was trained by this same run (data, options, epochs): reused", record.model_id
            )
            return record
    return None


def latest(workspace: Workspace, kind: str, hint: str | None = None) -> ModelRecord:
    """The most recently created model of ``kind``; ``hint`` says how to make one."""
    records = list_models(workspace, kind)
    if not records:
        workspace.existing()  # a mistyped -w: not "train one first"
        how = hint or f"train one first (skysearch train {TRAIN_COMMAND.get(kind, kind)})"
        raise NotFoundError(f"no {kind} model in workspace {workspace.root}: {how}")
    return records[-1]


def resolve(workspace: Workspace, kind: str, model_id: str | None = None) -> ModelRecord:
    """``model_id`` if given (checking its kind), else the latest of ``kind``. A model of
    another kind is not found (404 over HTTP, as an unknown id): there is no such ``kind``
    model."""
    if model_id is None:
        return latest(workspace, kind)
    record = get_model(workspace, model_id, kind)
    if record.kind != kind:
        raise NotFoundError(f"model {model_id} is a {record.kind} model, not a {kind} model")
    return record


def embedding_plan(
    workspace: Workspace, kind: str, model_id: str | None, satellite: str | None
) -> tuple[ModelRecord, list[str]]:
    """The model that indexes a catalog and the satellites whose frames or clips it embeds.

    No ``satellite``: ``model_id`` (else the latest ``kind`` model) and every satellite it was
    trained on. A ``satellite``: the latest model trained on it, or ``model_id`` — which may be
    a model of other satellites (same channels): embedding a satellite with a model that never
    saw it is allowed only by naming the model."""
    if satellite is None:
        record = resolve(workspace, kind, model_id)
        return record, model_satellites(record.config.get("data", {}))
    if model_id is not None:
        return resolve(workspace, kind, model_id), [satellite]
    records = list_models(workspace, kind)
    covering = [r for r in records if satellite in model_satellites(r.config.get("data", {}))]
    if not covering:
        trained = sorted({",".join(model_satellites(r.config.get("data", {}))) for r in records})
        raise NotFoundError(
            f"no {kind} model was trained on {{satellite}} {satellite} (trained on: "
            f"{'; '.join(trained) or 'none'}): train one on it (alone or with others), or name "
            f"a model of another satellite with {{model_id}} to embed {satellite} with it "
            "(same channels; vectors of a model that never saw the satellite)",
            params=["satellite", "model_id"],
        )
    return covering[-1], [satellite]
