"""``index scenes --engine ray`` (Ray in local mode, 2 CPUs) against ``--engine local`` on real
scene images (two classes of the bundled rsscn7-mini, one of them unreadable): the same point
ids, payloads and skipped files, vectors within 1e-5; a re-run embeds nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_DATA

ray = pytest.importorskip(
    "ray", reason="Ray is not installed (pip install -e '.[ray]'; the dev extra has it)"
)

from skysearch.ingest.engines.ray import start_local  # noqa: E402
from skysearch.retrieval.store.embedded import EmbeddedStore  # noqa: E402
from skysearch.retrieval.store.factory import open_store  # noqa: E402

from skysearch.config import Workspace, load_settings  # noqa: E402


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> tuple[Path, Path, str]:
    """A workspace with a registered (untrained, seeded) default text-image model, and a
    folder of 24 real scene images plus one file that is not an image."""
    from skysearch.encoders import registry
    from skysearch.encoders.models.text_image import (
        KIND,
        create_text_image_model,
        save_text_image_model,
    )

    base = tmp_path_factory.mktemp("scenes")
    images = base / "images"
    for label in ("aGrass", "dRiverLake"):
        shutil.copytree(SAMPLE_DATA / "rsscn7-mini" / label, images / label)
    (images / "aGrass" / "broken.jpg").write_bytes(b"not an image")
    ws = Workspace(base / "ws")
    model_id = registry.new_model_id(KIND)
    tim = create_text_image_model(load_tower_weights=False, seed=0)
    save_text_image_model(tim, registry.model_dir(ws, model_id))
    registry.register_model(ws, model_id, KIND)
    return ws.root, images, model_id


def test_ray_engine_indexes_the_scenes_the_local_engine_indexes(scenes, cli):
    from skysearch.retrieval.indexing.scenes import index_scenes

    root, images, model_id = scenes
    settings = load_settings(workspace=root, device="cpu")
    store = open_store(settings, ":memory:")
    local = index_scenes(settings, images, store=store, progress=False)
    assert local.written == 24
    expected = {r.id: r for r in store.scroll("scenes", with_vectors=True)}

    start_local(2)
    try:
        args = ("index", "scenes", images, "--engine", "ray", "--device", "cpu", "-w", root)
        done = cli(*args, "--json")
        assert done.exit_code == 0, done.stderr
        report = json.loads(done.stdout)
        assert report["written"] == 24
        assert report["skipped"] == local.skipped  # the broken file, with the same reason
        assert "broken.jpg" in report["skipped"][0]["path"]
        again = json.loads(cli(*args, "--json").stdout)
        assert (again["written"], again["skipped_existing"]) == (0, 24)
    finally:
        ray.shutdown()
    with EmbeddedStore(root / "store") as ray_store:
        got = {r.id: r for r in ray_store.scroll("scenes", with_vectors=True)}
    assert sorted(got) == sorted(expected)
    for pid, record in expected.items():
        assert got[pid].payload == record.payload
        np.testing.assert_allclose(
            got[pid].vectors[model_id], record.vectors[model_id], rtol=0, atol=1e-5
        )
