"""Configuration and the workspace layout.

Precedence: CLI flags > environment (``SKYSEARCH_*``, ``QDRANT_URL``, ``QDRANT_API_KEY``) >
``skysearch.toml`` in the current directory > defaults, merged by pydantic-settings
(``skysearch.settings_layers`` declares every setting). One workspace folder holds the
catalogs, frame store, models and the embedded vector store.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skysearch.errors import UsageError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_WORKSPACE = "skysearch-workspace"
CONFIG_FILE = "skysearch.toml"


@dataclass(frozen=True)
class Workspace:
    """Where everything lives. All paths derive from ``root`` (a str is taken as a path)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def catalog_dir(self) -> Path:
        return self.root / "catalog"

    @property
    def frames_catalog(self) -> Path:
        """Parquet dataset of frames, partitioned satellite=/year=."""
        return self.catalog_dir / "frames"

    @property
    def clips_catalog(self) -> Path:
        return self.catalog_dir / "clips"

    @property
    def frame_store_dir(self) -> Path:
        """uint8 frame arrays per satellite/channel/year (memory-mapped)."""
        return self.root / "frames"

    @property
    def sketch_dir(self) -> Path:
        """Per-frame similarity sketches, beside the frame store."""
        return self.root / "sketches"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    @property
    def store_dir(self) -> Path:
        """Embedded Qdrant engine: one directory per collection."""
        return self.root / "store"

    @property
    def profiles_dir(self) -> Path:
        """Copies of the user's source profiles its frames were ingested with."""
        return self.root / "profiles"

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def existing(self) -> Workspace:
        """This workspace, or one clear line if its folder is missing (a mistyped -w would
        otherwise be told to ingest, train or index first)."""
        if not self.root.is_dir():
            raise UsageError(
                f"workspace {self.root} does not exist (check {{workspace}})", params=["workspace"]
            )
        return self

    def ensure(self) -> Workspace:
        """Create the root, or fail with one clear line if it cannot be written."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / ".write-test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise UsageError(
                f"workspace {self.root} is not writable ({exc.strerror}); "
                "pass {workspace} DIR or set SKYSEARCH_WORKSPACE",
                params=["workspace"],
            ) from None
        return self


@dataclass(frozen=True)
class Settings:
    workspace: Workspace
    qdrant_url: str | None = None
    qdrant_api_key: str | None = None
    #: where models run: auto (CUDA when available), cpu, cuda or cuda:N; resolved (and
    #: checked) by ``skysearch.encoders.device.resolve_device`` when a model runs
    device: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)


def load_settings(
    workspace: str | Path | None = None,
    qdrant_url: str | None = None,
    device: str | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Resolve settings from flags, environment, ``skysearch.toml`` and defaults."""
    from pydantic import ValidationError  # pydantic-settings takes ~0.2 s to import: only here

    from skysearch.settings_layers import TUNING, Layers, layers_reading

    path = config_file or Path.cwd() / CONFIG_FILE
    if path.is_dir():  # pydantic-settings reads only files: a folder would be passed over
        raise UsageError(f"{path} is a folder: the settings file must be a TOML file")
    flags = {"workspace": workspace, "qdrant_url": qdrant_url, "device": device}
    given = {key: str(value) for key, value in flags.items() if value not in (None, "")}
    try:
        layers = layers_reading(path)(**given)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        bom = _starts_with_bom(path)  # what some Windows editors write first; TOML forbids it
        hint = ": it starts with a byte-order mark; save it as UTF-8 without BOM" if bom else ""
        raise UsageError(f"cannot read {path}: {exc}{hint}") from None
    except ValidationError as exc:  # only a TOML key or value can be wrong
        error = exc.errors()[0]
        names = {f.validation_alias: name for name, f in Layers.model_fields.items()}
        key = names.get(error["loc"][0], error["loc"][0])
        if error["type"] == "extra_forbidden":
            known = ", ".join(Layers.model_fields)
            raise UsageError(f"{path}: unknown setting {key!r} (settings: {known})") from None
        raise UsageError(f"{path}: {key} must be a string, got {error['input']!r}") from None
    if not str(layers.workspace).strip():
        raise UsageError(
            f"the workspace setting is empty (SKYSEARCH_WORKSPACE or workspace in {path}): "
            "name a folder, . for the current one"
        )
    try:
        root = Path(layers.workspace).expanduser().resolve()
        if root.is_symlink():  # left unresolved: a loop (Python 3.13 no longer raises)
            root.stat()
        existing = next(p for p in (root, *root.parents) if p.exists())
    except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before 3.13)
        raise UsageError(f"cannot use workspace {layers.workspace}: {exc}") from None
    if not existing.is_dir():
        where = "it" if existing == root else str(existing)
        raise UsageError(f"workspace {root}: {where} is a file, not a folder")
    return Settings(
        workspace=Workspace(root),
        qdrant_url=layers.qdrant_url,
        qdrant_api_key=layers.qdrant_api_key,
        device=layers.device,
        extra={key: value for key in TUNING if (value := getattr(layers, key)) is not None},
    )


def _starts_with_bom(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(3) == b"\xef\xbb\xbf"
    except OSError:
        return False
