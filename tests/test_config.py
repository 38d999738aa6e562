"""Settings: CLI flags > environment > ``skysearch.toml`` (current folder) > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from skysearch.retrieval.store import open_store

from skysearch.config import DEFAULT_WORKSPACE, load_settings
from skysearch.errors import UsageError

ENV = {
    "workspace": "SKYSEARCH_WORKSPACE",
    "qdrant_url": "QDRANT_URL",
    "device": "SKYSEARCH_DEVICE",
    "qdrant_api_key": "QDRANT_API_KEY",
}
TUNING_ENV = [
    "SKYSEARCH_STORE_MEMORY",
    "QDRANT_PREFER_GRPC",
    "QDRANT_SHARD_NUMBER",
    "QDRANT_REPLICATION_FACTOR",
    "QDRANT_WRITE_CONSISTENCY_FACTOR",
]


@pytest.fixture
def here(tmp_path, monkeypatch) -> Path:
    """A clean current folder and an environment without any setting."""
    for name in [*ENV.values(), *TUNING_ENV]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def value(settings, key: str) -> str | None:
    return str(settings.workspace.root) if key == "workspace" else getattr(settings, key)


@pytest.mark.parametrize("key", ["workspace", "qdrant_url", "device"])
def test_flag_beats_environment_beats_toml_beats_default(here, monkeypatch, key):
    expect = {k: str(here / k) if key == "workspace" else k for k in ("flag", "env", "toml")}
    default = {"workspace": str(here / DEFAULT_WORKSPACE), "qdrant_url": None, "device": "auto"}
    assert value(load_settings(), key) == default[key]
    (here / "skysearch.toml").write_text(f'{key} = "{expect["toml"]}"\n')
    assert value(load_settings(), key) == expect["toml"]
    monkeypatch.setenv(ENV[key], expect["env"])
    assert value(load_settings(), key) == expect["env"]
    assert value(load_settings(**{key: expect["flag"]}), key) == expect["flag"]


def test_empty_flags_and_environment_count_as_unset(here, monkeypatch):
    (here / "skysearch.toml").write_text('workspace = "from-toml"\nqdrant_api_key = "k"\n')
    monkeypatch.setenv("SKYSEARCH_WORKSPACE", "")
    monkeypatch.setenv("QDRANT_API_KEY", "")
    settings = load_settings(workspace="", qdrant_url="")
    assert settings.workspace.root == here / "from-toml"
    assert (settings.qdrant_url, settings.qdrant_api_key) == (None, "k")


def test_cluster_tuning_reaches_the_store_settings_environment_first(here, monkeypatch):
    (here / "skysearch.toml").write_text("qdrant_prefer_grpc = true\nqdrant_shard_number = 6\n")
    assert load_settings().extra == {"qdrant_prefer_grpc": True, "qdrant_shard_number": 6}
    monkeypatch.setenv("QDRANT_SHARD_NUMBER", "3")
    monkeypatch.setenv("QDRANT_REPLICATION_FACTOR", "2")
    monkeypatch.setenv("QDRANT_WRITE_CONSISTENCY_FACTOR", "1")
    assert load_settings().extra == {
        "qdrant_prefer_grpc": True,
        "qdrant_shard_number": "3",
        "qdrant_replication_factor": "2",
        "qdrant_write_consistency_factor": "1",
    }


def test_the_store_memory_tier_reaches_the_embedded_store(here, monkeypatch):
    (here / "skysearch.toml").write_text('store_memory = "cold"\n')
    settings = load_settings(workspace=str(here / "ws"))
    assert settings.extra == {"store_memory": "cold"}
    with open_store(settings) as store:
        assert store.params.memory == "cold"
    monkeypatch.setenv("SKYSEARCH_STORE_MEMORY", "warm")
    with pytest.raises(UsageError, match="SKYSEARCH_STORE_MEMORY.*'warm'; use cold or cached"):
        open_store(load_settings(workspace=str(here / "ws")))


@pytest.mark.parametrize(
    "content, message",
    [
        (b"\xff\xfe", "cannot read {path}: 'utf-8' codec can't decode byte 0xff"),
        (b"workspace = \n", "cannot read {path}: Invalid value (at line 1, column 13)"),
        (  # a Windows editor's byte-order mark
            b'\xef\xbb\xbfworkspace = "ws"\n',
            "cannot read {path}: Invalid statement (at line 1, column 1): it starts with a "
            "byte-order mark; save it as UTF-8 without BOM",
        ),
        (b"workspace = 5\n", "{path}: workspace must be a string, got 5"),
        (b'qdrant_url = ["a"]\n', "{path}: qdrant_url must be a string, got ['a']"),
        (b'qdrant-url = "http://q:6333"\n', "{path}: unknown setting 'qdrant-url' (settings: "),
        (b'[store]\nmemory = "cold"\n', "{path}: unknown setting 'store' (settings: workspace, "),
        # it was the current folder: a workspace spread into wherever the job ran
        (b'workspace = ""\n', "the workspace setting is empty (SKYSEARCH_WORKSPACE or workspace"),
    ],
)
def test_a_bad_toml_is_one_clear_usage_error(here, content, message):
    path = here / "skysearch.toml"
    path.write_bytes(content)
    with pytest.raises(UsageError) as caught:
        load_settings()
    assert str(caught.value).startswith(message.format(path=path))


def test_a_config_file_elsewhere_and_a_workspace_that_is_a_file(here, tmp_path_factory):
    config = tmp_path_factory.mktemp("etc") / "site.toml"
    config.write_text('device = "cuda"\n')
    assert load_settings(config_file=config).device == "cuda"
    (here / "a-file").write_text("x")
    with pytest.raises(UsageError, match="is a file, not a folder"):
        load_settings(workspace="a-file")
    (here / "skysearch.toml").mkdir()  # read as no settings before
    with pytest.raises(UsageError, match="skysearch.toml is a folder: the settings file must be"):
        load_settings()


def test_an_empty_workspace_flag_is_refused_not_the_current_folder(here, cli):
    """``-w "$WS"`` with WS unset named the current folder, and update wrote a workspace there."""
    r = cli("doctor", "-w", "")
    assert r.exit_code == 2 and "an empty name; name a folder" in r.stderr
    assert list(here.iterdir()) == []
