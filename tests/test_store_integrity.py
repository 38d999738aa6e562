"""Damaged vector store and models: doctor names them, a search is one ``error:`` line, and
``repair`` sets a damaged collection aside and re-indexes it with the registered models (a
repair killed meanwhile is finished by the next)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from integrity_env import SAMPLE_IR, ingested_workspace, one_error_line


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return ingested_workspace(tmp_path_factory.mktemp("integrity") / "ws")


STORE_CONFIG_DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": lambda path: path.write_text("{"),
    "deleted": lambda path: path.unlink(),  # the folder still holds the shard's segments
}


@pytest.mark.parametrize("config", list(STORE_CONFIG_DAMAGE))
def test_damaged_store_collection_is_set_aside_and_said(config, base, tmp_path, cli):
    import uuid

    import numpy as np
    from skysearch.retrieval.store import Point, open_store

    from skysearch.config import load_settings

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    settings = load_settings(workspace=ws)
    with open_store(settings) as store:
        store.ensure_collection("clips", 8, "m1")
        points = [Point(str(uuid.uuid4()), np.ones(8, np.float32)) for _ in range(3)]
        store.upsert("clips", points, vector_name="m1")
    STORE_CONFIG_DAMAGE[config](ws / "store" / "clips" / "edge_config.json")
    doctor = cli("doctor", "-w", ws, "--json")
    assert doctor.exit_code == 1
    store_check = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "store"][0]
    assert store_check["status"] == "fail" and "skysearch repair" in store_check["fix"]
    assert str(ws / "store" / "clips") in store_check["detail"]
    info = one_error_line(cli("store", "info", "-w", ws))  # never silently left out
    assert str(ws / "store" / "clips") in info
    if config == "deleted":  # not "path already contains segment data" from the engine
        assert "skysearch repair" in info
    result = cli("repair", "-w", ws, "--json")
    assert result.exit_code == 1
    (action,) = json.loads(result.stdout)["actions"]
    assert action["path"] == str(ws / "store" / "clips") and not action["ok"]
    assert "not re-indexed: no clip model registered (kept " in action["done"]
    again = cli("repair", "-w", ws, "--json")  # said again until a model re-indexes it ...
    assert again.exit_code == 1 and "did not finish re-indexing" in again.stdout
    for aside in (ws / ".damaged-store").glob("clips-*[0-9]Z"):
        shutil.rmtree(aside)  # ... or the loss is accepted
    accepted = cli("repair", "-w", ws, "--json")
    assert accepted.exit_code == 0 and json.loads(accepted.stdout)["actions"] == []
    doctor = json.loads(cli("doctor", "-w", ws, "--json").stdout)
    assert [c for c in doctor["checks"] if c["name"] == "store"][0]["status"] == "ok"


def test_a_damaged_model_is_found_and_unregistered(tmp_path, cli):
    """Model weights carry the CRC-32 they were saved with: doctor names a missing or cut
    checkpoint, --deep also bit rot of the same size; repair unregisters the model (weights
    cannot be rebuilt) so searches use the latest whole one."""
    import torch
    from skysearch.encoders import registry
    from skysearch.encoders.factory import save_model

    from skysearch.config import Workspace

    ws = Workspace(tmp_path / "ws")
    ws.ensure()
    old = save_model(ws, "frame", torch.nn.Linear(4, 4), {"dim": 4}).model_id
    new = save_model(ws, "frame", torch.nn.Linear(4, 4), {"dim": 4}).model_id
    weights = ws.models_dir / new / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the last tensor: same size, same header
    weights.write_bytes(bytes(data))

    def rows(*flags: str) -> list[dict]:
        report = json.loads(cli("doctor", "-w", ws.root, "--json", *flags).stdout)
        return [c for c in report["checks"] if c["name"] == "frame model"]

    def failed(*flags: str) -> list[dict]:
        return [c for c in rows(*flags) if c["status"] == "fail"]

    assert failed() == []  # the cheap checks cannot see it
    check, whole = rows("--deep")  # the summary counted the damaged one as the latest
    assert check["detail"] == (
        f"{new}: {weights} does not match the checksum recorded when it was saved"
    )
    assert (whole["status"], whole["detail"]) == ("ok", f"1 trained, latest {old}")
    repaired = cli("repair", "-w", ws.root, "--json")
    assert repaired.exit_code == 1, repaired.stderr  # weights are not rebuilt: said, exit 1
    assert "fixed 0 of 1 problems found (1 need you: see above)" in repaired.stderr
    assert "0 problems remain" in repaired.stderr
    (action,) = json.loads(repaired.stdout)["actions"]
    assert action["done"] == f"unregistered frame model {new}: train it again"
    assert not action["ok"]
    assert registry.latest(ws, "frame").model_id == old
    assert failed("--deep") == []

    # a garbled or deleted registry is rebuilt from the whole checkpoints (not the damaged one)
    entries = json.loads((ws.models_dir / "registry.json").read_text())["models"]
    for damage in (b"\xff{", None, b"\xff{2"):  # garbled, deleted, garbled again
        path = ws.models_dir / "registry.json"
        path.write_bytes(damage) if damage else path.unlink()
        doctor = cli("doctor", "-w", ws.root)
        assert doctor.exit_code == 1 and f"skysearch repair -w {ws.root}" in doctor.stderr
        rebuilt = cli("repair", "-w", ws.root, "--json")
        assert rebuilt.exit_code == 1, rebuilt.stderr  # the damaged model: not registered, said
        action, damaged = json.loads(rebuilt.stdout)["actions"]
        assert action["done"].startswith("rebuilt from 1 checkpoint folders (frame)")
        assert (damaged["path"], damaged["ok"]) == (str(ws.models_dir / new), False)
        assert damaged["done"] == "not registered: train it again"
        got = json.loads(path.read_text())["models"]  # as registered, but for the time
        assert [{**e, "created": None} for e in got] == [{**e, "created": None} for e in entries]
    assert (ws.models_dir / "registry.json.damaged").read_bytes() == b"\xff{"
    assert (ws.models_dir / "registry.json.damaged.1").read_bytes() == b"\xff{2"  # both kept

    weights = ws.models_dir / old / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # cut short: the cheap checks see it
    (check,) = failed()
    assert check["detail"] == (
        f"{old}: {weights} is not whole (Error while deserializing header: incomplete metadata, "
        "file not fully covered)"
    )


def _overwrite_start(folder: Path, pattern: str, size: int) -> None:
    (path,) = [p for p in folder.rglob(pattern) if p.is_file()]
    with open(path, "r+b") as fh:
        fh.write(os.urandom(size))


@pytest.mark.parametrize("part", ["vectors", "payloads"])
def test_damaged_points_of_the_engine_are_found_deeply_and_re_indexed(part, base, tmp_path, cli):
    """Garbled vector or payload pages of the engine: a search is one error line (payloads) and
    never an impossible score, doctor --deep reads every point back and names the collection,
    repair sets it aside and re-indexes it."""
    import uuid

    import numpy as np
    from skysearch.retrieval.store import Point, open_store

    from skysearch.config import load_settings
    from skysearch.errors import StoreError

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    rng = np.random.default_rng(0)
    with open_store(load_settings(workspace=ws)) as store:
        store.ensure_collection("clips", 8, "m1")
        points = [
            Point(str(uuid.uuid4()), rng.normal(size=8), {"label": f"point {i}" * 20})
            for i in range(40)
        ]
        store.upsert("clips", points, vector_name="m1")
    folder = ws / "store" / "clips"
    if part == "vectors":
        _overwrite_start(folder, "vector_storage-m1/vectors/chunk_0.mmap", 8 * 4 * 40)
    else:
        _overwrite_start(folder, "payload_storage/page_0.dat", 4096)
        with open_store(load_settings(workspace=ws)) as store, pytest.raises(StoreError) as err:
            store.search("clips", rng.normal(size=8), k=40, vector_name="m1")
        assert str(err.value).startswith(f"store collection {folder} cannot be read (")
    deep = cli("doctor", "--deep", "-w", ws, "--json")
    assert deep.exit_code == 1
    (check,) = [c for c in json.loads(deep.stdout)["checks"] if c["name"] == "store"]
    assert check["status"] == "fail" and "clips" in check["detail"]
    assert "skysearch repair" in check["detail"]
    result = cli("repair", "-w", ws, "--json")
    (action,) = json.loads(result.stdout)["actions"]
    assert action["path"] == str(folder) and action["done"].startswith("set aside as")
    assert (ws / ".damaged-store").is_dir()


def test_a_vector_file_cut_short_is_seen_by_the_quick_doctor(base, tmp_path, cli):
    """Searches said "run skysearch repair" while plain doctor said "store ok" (only --deep
    read vectors): the quick check reads the vectors of the first points by id."""
    import uuid

    import numpy as np
    from skysearch.retrieval.store import Point, open_store

    from skysearch.config import load_settings

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    rng = np.random.default_rng(0)
    with open_store(load_settings(workspace=ws)) as store:
        store.ensure_collection("clips", 8, "m1")
        store.upsert("clips", [Point(str(uuid.uuid4()), rng.normal(size=8), {}) for _ in range(40)],
                     vector_name="m1")  # fmt: skip
    (chunk,) = (ws / "store" / "clips").rglob("vector_storage-m1/vectors/chunk_0.mmap")
    os.truncate(chunk, 8 * 4 * 4)  # four vectors of 40 left
    doctor = cli("doctor", "-w", ws, "--json")
    (check,) = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "store"]
    assert doctor.exit_code == 1 and check["status"] == "fail", check
    assert f"store collection {ws / 'store' / 'clips'} cannot be read" in check["detail"]


def test_repair_says_it_leaves_a_qdrant_servers_store_alone(base, tmp_path, cli, monkeypatch):
    """With QDRANT_URL set (a server no one reaches here) repair said "fixed 0 of 0 problems
    found" and nothing of the store, while doctor failed it."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    monkeypatch.setenv("QDRANT_URL", "http://127.0.0.1:1")
    repaired = cli("repair", "-w", ws)
    assert repaired.exit_code == 0, repaired.stderr  # the workspace's own files are whole
    assert "(the store is on a Qdrant server: left to the server)" in repaired.stderr


def test_a_file_in_place_of_the_store_folder_is_said(base, tmp_path, cli):
    """It read as an empty store: doctor said "store ok", searches "run skysearch index"."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    shutil.rmtree(ws / "store", ignore_errors=True)
    (ws / "store").write_text("hi")
    doctor = cli("doctor", "-w", ws, "--json")
    (check,) = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "store"]
    assert check["status"] == "fail" and "is not a folder: move that file away" in check["detail"]
    error = one_error_line(cli("store", "info", "-w", ws))
    assert f"the embedded store {ws / 'store'} is not a folder" in error
    repaired = cli("repair", "-w", ws, "--json")  # the files are checked; the store is said
    assert repaired.exit_code == 1 and "Traceback" not in repaired.stderr, repaired.stderr
    (action,) = json.loads(repaired.stdout)["actions"]
    assert action["path"] == str(ws / "store") and "is not a folder" in action["problem"]


def test_a_users_folder_in_the_store_is_left_out_and_named(base, tmp_path, cli):
    """It was taken for a damaged collection: store info/optimize stopped, doctor failed,
    repair set it aside and exited 1 on every run."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    (ws / "store" / "old").mkdir(parents=True)
    (ws / "store" / "old" / "notes.txt").write_text("my notes")
    info = cli("store", "info", "-w", ws, "--json")
    assert info.exit_code == 0, info.stderr
    assert f"warning: {ws / 'store' / 'old'} is not a collection" in info.stderr
    assert "old" not in [c["collection"] for c in json.loads(info.stdout)["collections"]]
    doctor = json.loads(cli("doctor", "-w", ws, "--json").stdout)["checks"]
    (store,) = [c for c in doctor if c["name"] == "store"]
    (folders,) = [c for c in doctor if c["name"] == "store folders"]
    assert store["status"] == "ok" and folders["status"] == "todo"
    assert str(ws / "store" / "old") in folders["detail"]
    repaired = cli("repair", "-w", ws, "--json")
    assert repaired.exit_code == 0 and json.loads(repaired.stdout)["actions"] == []
    assert (ws / "store" / "old" / "notes.txt").read_text() == "my notes"  # never moved
    shutil.rmtree(ws / "store" / "frames", ignore_errors=True)  # a user's folder by that name:
    (ws / "store" / "frames").mkdir()  # the engine cannot make the collection there
    (ws / "store" / "frames" / "a.txt").write_text("x")
    _frame_model(ws)
    error = one_error_line(cli("index", "frames", "-w", ws))
    assert f"{ws / 'store' / 'frames'} holds files that are not a store collection (a.txt)" in error


def _frame_model(ws: Path) -> str:
    """A seeded, untrained GOES IR frame model, registered; its id."""
    import torch
    from skysearch.encoders.factory import save_model
    from skysearch.encoders.models.frame import FrameEncoderConfig, build_frame_encoder

    from skysearch.config import Workspace

    frame = FrameEncoderConfig(channels=["ir"], height=234, width=360)
    torch.manual_seed(0)
    encoder = build_frame_encoder(frame.to_dict(), pretrained=False)
    data = {"satellite": "goes-east", "channels": ["ir"]}
    config = {"frame": frame.to_dict(), "data": data}
    return save_model(Workspace(ws), "frame", encoder, config).model_id


def test_a_search_of_a_collection_without_the_models_points_says_so(base, tmp_path, cli):
    """A collection created by an index run killed before it wrote (or emptied): search
    answered "no results (loosen the filters?)" with exit 0."""
    from skysearch.retrieval.store import open_store

    from skysearch.config import load_settings

    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    model_id = _frame_model(ws)
    assert cli("index", "frames", "-w", ws).exit_code == 0
    with open_store(load_settings(workspace=ws)) as store:
        store.delete_ids("frames", [r.id for r in store.scroll("frames")])
    error = one_error_line(cli("search", "frame", "--at", "2017-09-07T00:45Z", "-w", ws))
    assert error == (
        f"error: the frames collection holds no vector of model {model_id} yet (an index run "
        f"stopped early?): run `skysearch index frames --model {model_id}`"
    )


def test_models_a_registry_no_longer_lists_are_said_and_registered_again(base, tmp_path, cli):
    """A registry emptied by hand: doctor said "none trained" and every search "train one"
    while the checkpoints sat in models/; repair found nothing to do."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    model_id = _frame_model(ws)
    (ws / "models" / "registry.json").write_text('{"models": []}')
    doctor = cli("doctor", "-w", ws, "--json")
    (check,) = [c for c in json.loads(doctor.stdout)["checks"] if c["name"] == "models"]
    assert check["status"] == "fail" and check["detail"].endswith(f"does not list: {model_id}")
    assert "frame model" not in [c["name"] for c in json.loads(doctor.stdout)["checks"]]
    result = cli("repair", "-w", ws, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    (action,) = json.loads(result.stdout)["actions"]
    assert action["done"] == f"registered {model_id}" and action["ok"], action
    doctor = json.loads(cli("doctor", "-w", ws, "--json").stdout)
    (check,) = [c for c in doctor["checks"] if c["name"] == "frame model"]
    assert check["status"] == "ok" and model_id in check["detail"]


def test_a_repair_killed_before_re_indexing_a_set_aside_collection_is_finished_by_the_next(
    base, tmp_path, cli
):
    """Killed between setting a collection aside and re-indexing it, a repair left an empty
    (or no) collection that the next repair called whole ("0 remain") while searches found
    nothing. The marker beside the set-aside copy makes the next repair re-index."""
    ws = tmp_path / "ws"
    shutil.copytree(base, ws)
    _frame_model(ws)
    assert cli("index", "frames", "-w", ws).exit_code == 0
    aside = ws / ".damaged-store" / "frames-20261202T000000Z"
    aside.parent.mkdir()
    (ws / "store" / "frames").replace(aside)  # where the killed repair stopped
    aside.with_name(aside.name + ".reindexing").touch()
    doctor = json.loads(cli("doctor", "-w", ws, "--json").stdout)
    (check,) = [c for c in doctor["checks"] if c["name"] == "store re-index"]
    assert check["status"] == "todo" and check["detail"].endswith(aside.name), check

    result = cli("repair", "-w", ws, "--json")
    assert result.exit_code == 0, result.stdout + result.stderr
    (action,) = json.loads(result.stdout)["actions"]
    assert "by a repair that did not finish re-indexing it" in action["problem"], action
    assert action["ok"] and action["done"].endswith(f"deleted {aside}"), action
    assert not list(aside.parent.iterdir())  # copy and marker gone
    info = cli("store", "info", "-w", ws, "--json")
    frames = [c for c in json.loads(info.stdout)["collections"] if c["name"] == "frames"]
    assert frames[0]["points"] == len(list(SAMPLE_IR.glob("*.GIF"))) - 1, frames  # 1 HTML page
    again = cli("repair", "-w", ws, "--json")
    assert again.exit_code == 0 and json.loads(again.stdout)["actions"] == []
