"""The settings layers, merged by pydantic-settings (``skysearch.config.load_settings``).

Kept apart from ``skysearch.config`` so that importing the workspace layout does not import
pydantic-settings (~0.2 s): only loading settings does.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, StrictStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from skysearch.config import DEFAULT_WORKSPACE


class Layers(BaseSettings):
    """Every setting with its environment variable; ``skysearch.toml`` uses the field names.

    pydantic-settings merges the layers: init arguments (the CLI flags) > environment >
    ``skysearch.toml`` > these defaults. An empty environment variable counts as unset.
    """

    model_config = SettingsConfigDict(
        case_sensitive=True,
        env_ignore_empty=True,
        extra="forbid",  # a misspelt key in skysearch.toml is an error, not silently unused
        validate_by_name=True,  # init arguments and TOML keys by name, the environment by alias
        validate_by_alias=True,
    )

    workspace: StrictStr = Field(DEFAULT_WORKSPACE, validation_alias="SKYSEARCH_WORKSPACE")
    qdrant_url: StrictStr | None = Field(None, validation_alias="QDRANT_URL")
    qdrant_api_key: StrictStr | None = Field(None, validation_alias="QDRANT_API_KEY")
    device: StrictStr = Field("auto", validation_alias="SKYSEARCH_DEVICE")
    # the embedded store's memory tier for collections it creates (EdgeIndexParams.memory)
    store_memory: StrictStr | None = Field(None, validation_alias="SKYSEARCH_STORE_MEMORY")
    # Qdrant cluster tuning, as given (text or TOML values): the server backend parses them.
    qdrant_prefer_grpc: Any = Field(None, validation_alias="QDRANT_PREFER_GRPC")
    qdrant_shard_number: Any = Field(None, validation_alias="QDRANT_SHARD_NUMBER")
    qdrant_replication_factor: Any = Field(None, validation_alias="QDRANT_REPLICATION_FACTOR")
    qdrant_write_consistency_factor: Any = Field(
        None, validation_alias="QDRANT_WRITE_CONSISTENCY_FACTOR"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls)


#: Settings passed on to the store backend in ``Settings.extra`` (lower-case names).
TUNING = (
    "store_memory",
    "qdrant_prefer_grpc",
    "qdrant_shard_number",
    "qdrant_replication_factor",
    "qdrant_write_consistency_factor",
)


@lru_cache(maxsize=16)
def layers_reading(path: Path) -> type[Layers]:
    """``Layers`` with ``path`` as its TOML layer (pydantic-settings fixes the file per class)."""
    config = Layers.model_config | SettingsConfigDict(toml_file=path)
    return type("Layers", (Layers,), {"model_config": config})
