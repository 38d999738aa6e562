"""Scene search's errors before any vector is compared: nothing indexed, another model's
vectors; which model a search uses."""

import json
import uuid
from types import SimpleNamespace

import numpy as np
import pytest
from skysearch.encoders.registry import register_model
from skysearch.retrieval.search.results import Timer
from skysearch.retrieval.search.scenes import scene_model_id, search_scenes
from skysearch.retrieval.store.base import Point
from skysearch.retrieval.store.embedded import EmbeddedStore
from skysearch.retrieval.store.filters import SearchFilters
from skysearch.retrieval.store.schema import SCENES

from skysearch.config import Workspace
from skysearch.errors import NotFoundError, UsageError


def _search(store: EmbeddedStore, model_id: str, filters: SearchFilters | None = None):
    tim = SimpleNamespace(model_id=model_id)  # only its id names the vectors to search
    vector = np.ones(4, dtype=np.float32) / 2
    return search_scenes(store, vector, tim, {"kind": "text"}, filters, Timer())


def test_no_scenes_collection_says_how_to_index(tmp_path):
    store = EmbeddedStore(tmp_path / "store")
    with pytest.raises(NotFoundError, match="no scenes indexed yet.*skysearch index scenes"):
        _search(store, "text-image-a")
    store.close()


def test_scenes_of_another_model_are_named_and_own_vectors_found(tmp_path):
    store = EmbeddedStore(tmp_path / "store")
    store.ensure_collection(SCENES, 4, vector_name="text-image-a")
    vector = np.array([1, 0, 0, 0], dtype=np.float32)
    scene = str(uuid.uuid4())
    store.upsert(SCENES, [Point(scene, {"text-image-a": vector}, {"label": "x"})])
    with pytest.raises(NotFoundError, match="no vectors of text-image model text-image-b"):
        _search(store, "text-image-b")
    result = _search(store, "text-image-a")
    assert [(item.id, item.label) for item in result.results] == [(scene, "x")]
    store.close()


def test_the_model_is_chosen_among_the_indexed_ones_before_any_loads(tmp_path, caplog):
    """Default: the latest registered model with scene vectors (a newer, unindexed one is
    named in a warning); an unindexed id, or no indexed model at all, fails with what to do."""
    ws = Workspace(tmp_path / "ws")
    store = EmbeddedStore(tmp_path / "store")
    with pytest.raises(NotFoundError, match="train one first.*then `skysearch index scenes"):
        scene_model_id(store, ws, None)
    for name in ("text-image-a", "text-image-b", "text-image-c", "text-image-d"):
        register_model(ws, name, "text-image")
    with pytest.raises(NotFoundError, match="no scenes indexed yet"):
        scene_model_id(store, ws, None)
    store.ensure_collection(SCENES, 4, vector_name="text-image-c")
    assert scene_model_id(store, ws, None) == "text-image-c"
    assert "the newer model text-image-d has indexed 0" in caplog.text
    assert scene_model_id(store, ws, "text-image-c") == "text-image-c"
    with pytest.raises(NotFoundError, match=r"model text-image-b: .*\(indexed: text-image-c\)"):
        scene_model_id(store, ws, "text-image-b")
    with pytest.raises(NotFoundError, match="text-image-z"):
        scene_model_id(store, ws, "text-image-z")
    store.close()
    store = EmbeddedStore(tmp_path / "other")
    store.ensure_collection(SCENES, 4, vector_name="text-image-x")
    with pytest.raises(NotFoundError, match="latest model is text-image-d"):
        scene_model_id(store, ws, None)
    store.close()


def test_the_model_holding_the_most_scenes_is_chosen_and_scenes_left_out_are_said(
    tmp_path, caplog, cli
):
    """A newer model that indexed one new folder was chosen, and every scene only the older
    model held silently dropped out of the searches (doctor said all was well)."""
    ws = Workspace(tmp_path / "ws")
    for name in ("text-image-a", "text-image-b"):
        register_model(ws, name, "text-image")
    store = EmbeddedStore(ws.store_dir)
    store.ensure_collection(SCENES, 4, vector_name="text-image-a")
    store.ensure_collection(SCENES, 4, vector_name="text-image-b")
    vector = np.array([1, 0, 0, 0], dtype=np.float32)

    def add(n, models):
        points = [Point(str(uuid.uuid4()), dict.fromkeys(models, vector), {}) for _ in range(n)]
        store.upsert(SCENES, points)

    add(3, ["text-image-a"])  # the first folder, by the older model only
    add(2, ["text-image-b"])  # a new folder, by the newer model only
    store.close()
    checks = json.loads(cli("doctor", "-w", ws.root, "--json").stdout)["checks"]
    (todo,) = [c for c in checks if c["name"] == "scenes index" and c["status"] == "todo"]
    assert todo["detail"] == "3 of the 5 scenes have no vector of text-image-b"
    assert todo["fix"].startswith("skysearch index scenes DIR --model-id text-image-b")
    store = EmbeddedStore(ws.store_dir)
    assert scene_model_id(store, ws, None) == "text-image-a"
    said = "model text-image-a (vectors of 3 scenes): the newer model text-image-b has indexed 2"
    assert said in caplog.text
    assert "text-image-a holds 3 of the 5 scenes, and no model holds them all" in caplog.text
    caplog.clear()  # a model named: the same word (it was silent)
    assert scene_model_id(store, ws, "text-image-b") == "text-image-b"
    assert "text-image-b holds 2 of the 5 scenes: the others are not searched" in caplog.text
    # a filter keeping only scenes the chosen model lacks: said, with the model that has them
    late = Point(str(uuid.uuid4()), {"text-image-b": vector}, {"dataset": "late"})
    store.upsert(SCENES, [late])
    only_late = SearchFilters(datasets=("late",))
    said = r"the 1 scenes .* text-image-a, the one searched \(indexed by text-image-b\): search "
    with pytest.raises(NotFoundError, match=said + "with model_id text-image-b"):
        _search(store, "text-image-a", only_late)
    assert [r.id for r in _search(store, "text-image-b", only_late).results] == [late.id]
    store.delete_ids(SCENES, [late.id])
    caplog.clear()
    add(5, ["text-image-a", "text-image-b"])  # both hold these
    assert scene_model_id(store, ws, None) == "text-image-a"  # 8 of 10 against 7
    store.upsert(SCENES, [Point(r.id, {"text-image-b": vector}, {}) for r in store.scroll(SCENES)])
    caplog.clear()
    assert scene_model_id(store, ws, None) == "text-image-b"  # all 10: the newest that has all
    assert caplog.text == ""
    store.close()


def test_model_and_model_id_name_the_same_option(tmp_path, cli):
    """Error messages say `--model` (as every other search does): the text-image searches
    take it beside their `--model-id`."""
    (tmp_path / "ws").mkdir()  # a workspace without that model
    runs = [
        cli("search", "text", "a river", flag, "text-image-z", "-w", tmp_path / "ws")
        for flag in ("--model", "--model-id")
    ]
    assert runs[0].exit_code == runs[1].exit_code == 2
    assert runs[0].stderr == runs[1].stderr and "text-image-z" in runs[0].stderr


def test_a_text_query_without_words_or_not_utf8_is_refused():
    """Zero-width characters and bytes a terminal sent in another encoding were searched."""
    from skysearch.retrieval.search.scenes import query_text

    assert query_text("  a river\n") == "a river" and query_text("?") == "?"
    assert query_text("Flughafen München") == "Flughafen München"
    for text in ("", "   ", "\u200b\u200d\ufeff", None):
        with pytest.raises(UsageError, match="the text query is empty"):
            query_text(text)
    undecodable = b"a r\xe9ver".decode("utf-8", "surrogateescape")  # what argv holds then
    with pytest.raises(UsageError, match="not UTF-8 text"):
        query_text(undecodable)
