"""Vector store conformance: ONE suite, every backend, filtered top-k vs numpy brute force.

Backends: the embedded engine before optimize (plain segments: exact), the embedded engine
after optimize with small HNSW thresholds (graph search: filtered subsets sit on both sides of
full_scan_threshold, the regime where filtered recall used to collapse), qdrant-client
``:memory:``, and a Qdrant server when ``QDRANT_URL`` is set.
"""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta

import numpy as np
import pytest
from qdrant_client import models
from skysearch.retrieval.store import Point, VectorStore, open_store
from skysearch.retrieval.store.embedded import EdgeIndexParams, EmbeddedStore
from skysearch.retrieval.store.filters import SearchFilters
from skysearch.retrieval.store.schema import time_payload
from store_cases import (
    CASES,
    COLL,
    DATA,
    DIM,
    MID,
    NQ,
    NQ_MEMORY,
    T0,
    K,
    N,
    at,
    brute_force,
    load,
)

from skysearch.errors import NotFoundError, UsageError


def _server_store() -> VectorStore:
    from skysearch.retrieval.store.server import ServerStore

    return ServerStore.connect(os.environ["QDRANT_URL"])


BACKENDS = [
    "embedded-exact",
    "embedded-hnsw",
    "embedded-hnsw-float32",
    "embedded-window-scan",
    "memory",
    "server",
]
GRAPH = ("embedded-hnsw", "embedded-hnsw-float32")  # approximate: recall >= 0.99, not 1.0
OPTIMIZED = (*GRAPH, "embedded-window-scan", "server")


@pytest.fixture(scope="module", params=BACKENDS)
def store(request, tmp_path_factory):
    kind = request.param
    if kind == "server" and not os.environ.get("QDRANT_URL"):
        pytest.skip("no Qdrant server: set QDRANT_URL to run the conformance suite against one")
    if kind == "memory":
        s = open_store(None, ":memory:")
    elif kind == "server":
        s = _server_store()
    else:
        # hnsw: index every segment, and put full_scan_threshold (8 KB = 64 points of 32-d)
        # inside the range of filtered subset sizes, so both exact and graph paths are hit.
        # float32: the same without the default int8 quantization. The graph backends keep
        # every query on the engine; window-scan (default parameters, optimized: the copy
        # built) answers filters from its exact scan, which covers this small collection.
        quantization = None if kind.endswith("float32") else "int8"
        graph = EdgeIndexParams(
            full_scan_threshold_kb=8,
            indexing_threshold_kb=1,
            quantization=quantization,
            window_scan_max_points=0,
        )
        s = EmbeddedStore(tmp_path_factory.mktemp(kind), graph if kind in GRAPH else None)
    load(s)
    if kind in OPTIMIZED:
        s.optimize(COLL)
    s.kind = kind  # type: ignore[attr-defined]
    yield s
    if kind == "server":
        s.drop_collection(COLL)
    s.close()


def test_server_bulk_load_pauses_index_building_and_optimize_resumes_it(monkeypatch):
    """A Qdrant server only (QDRANT_URL): collections get the configured write consistency;
    ``bulk_load`` sets the indexing threshold to 0 and restores it; ``optimize`` resumes index
    building a killed bulk load left paused."""
    if not os.environ.get("QDRANT_URL"):
        pytest.skip("no Qdrant server: set QDRANT_URL to run the server cases")
    from skysearch.retrieval.store.server import DEFAULT_INDEXING_KB, _threshold

    monkeypatch.setenv("QDRANT_WRITE_CONSISTENCY_FACTOR", "1")
    s = _server_store()
    name = "skysearch-bulk-load-test"
    s.drop_collection(name)
    s.ensure_collection(name, 8)
    config = lambda: s.client.get_collection(name).config  # noqa: E731
    try:
        assert config().params.write_consistency_factor == 1
        before = config().optimizer_config.indexing_threshold
        with s.bulk_load(name):
            assert config().optimizer_config.indexing_threshold == 0
        assert config().optimizer_config.indexing_threshold == before
        s.client.update_collection(name, optimizers_config=_threshold(0))  # a killed load
        s.optimize(name)
        assert config().optimizer_config.indexing_threshold == DEFAULT_INDEXING_KB
    finally:
        s.drop_collection(name)
        s.close()


def _recall(store: VectorStore, filters, mask: np.ndarray, **kw) -> float:
    found = 0
    total = 0
    for q in DATA.queries[: NQ_MEMORY if store.kind == "memory" else NQ]:
        truth = brute_force(q, mask, K)
        hits = store.search(COLL, q, k=K, filters=filters, **kw)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        found += len(set(truth) & {h.id for h in hits})
        total += len(truth)
    return found / total


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_filtered_topk_matches_brute_force(store, case):
    _, filters, predicate = case
    mask = predicate(DATA)
    assert 0 < mask.sum() < N or filters is None
    recall = _recall(store, filters, mask)
    if store.kind in GRAPH:
        assert recall >= 0.99, f"HNSW filtered recall@10 {recall:.3f} (subset {mask.sum()})"
    else:
        assert recall == 1.0
    # every hit satisfies the filter
    for h in store.search(COLL, DATA.queries[0], k=K, filters=filters):
        assert mask[DATA.ids.index(h.id)]


def test_exact_flag_is_exact_on_hnsw(store):
    mask = CASES[0][2](DATA)
    assert _recall(store, CASES[0][1], mask, exact=True) == 1.0


def test_unfiltered_recall(store):
    recall = _recall(store, None, np.ones(N, dtype=bool))
    assert recall >= (0.99 if store.kind in GRAPH else 1.0)


def test_count_matches_predicate(store):
    for _, filters, predicate in CASES:
        assert store.count(COLL, filters) == int(predicate(DATA).sum())
    assert store.count(COLL) == N


def test_one_hit_per_day_equals_brute_force(store):
    filters = SearchFilters(start=at(MID), end=at(MID + 60 * 1440), k=8, one_per_day=True)
    mask = (DATA.minutes >= MID) & (DATA.minutes <= MID + 60 * 1440)
    days = np.array([p["day"] for p in DATA.payloads])
    for q in DATA.queries[:4]:
        scores = np.where(mask, DATA.vectors @ (q / np.linalg.norm(q)), -np.inf)
        best: dict[str, str] = {}
        for i in np.argsort(-scores):
            if np.isfinite(scores[i]):
                best.setdefault(days[i], DATA.ids[i])
        expected = list(best.values())[:8]
        hits = store.search(COLL, q, filters=filters, exact=True)
        assert [h.id for h in hits] == expected
        assert len({h.payload["day"] for h in hits}) == len(hits)


@pytest.mark.parametrize("backend", ["embedded", "memory"])
def test_one_hit_per_day_keeps_each_undated_point(backend, tmp_path):
    """Scenes without a time are not one day: each is a hit of its own beside the best hit
    of each day (the embedded store kept one undated scene; Qdrant's groups drop them all)."""
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(12, 4))
    dated = [time_payload(T0 + timedelta(hours=3 * i)) for i in range(6)]  # 2 days of 3
    payloads = [*dated, *({"label": "x"} for _ in range(6))]
    ids = [str(uuid.UUID(int=i + 1)) for i in range(12)]
    q = rng.normal(size=4)
    scores = vectors @ q / np.linalg.norm(vectors, axis=1) / np.linalg.norm(q)
    best: dict[str, str] = {}
    for i in np.argsort(-scores):
        best.setdefault(payloads[i].get("day") or ids[i], ids[i])
    expected = list(best.values())[:5]
    with open_store(None, ":memory:" if backend == "memory" else str(tmp_path)) as s:
        s.ensure_collection("scenes", 4)
        s.upsert("scenes", [Point(i, v, p) for i, v, p in zip(ids, vectors, payloads, strict=True)])
        hits = s.search("scenes", q, filters=SearchFilters(k=5, one_per_day=True), exact=True)
    assert [h.id for h in hits] == expected
    assert sum(1 for h in hits if "day" not in h.payload) >= 3  # 2 days, the rest undated


def test_scroll_returns_every_point_with_vectors(store):
    records = list(store.scroll(COLL, with_vectors=True, batch_size=700))
    assert len(records) == N
    assert {r.id for r in records} == set(DATA.ids)
    first = next(r for r in records if r.id == DATA.ids[0])
    assert np.allclose(first.vectors["default"], DATA.vectors[0], atol=1e-5)
    assert first.payload["time"] == DATA.payloads[0]["time"]
    subset = list(store.scroll(COLL, SearchFilters(satellites=("coms",))))
    assert len(subset) == int((DATA.sat == "coms").sum())


def test_payload_indexes_follow_the_points(tmp_path, monkeypatch):
    """The schema's index of a field is created when the first point carrying it is written:
    none for fields no point carries, and a collection made before a field existed (e.g.
    ``event``) gets its index once such points arrive. Filters on an unindexed field still
    work (the engine reads the payloads)."""
    from skysearch.retrieval.store import base

    older = {k: v for k, v in base.PAYLOAD_INDEXES.items() if k not in ("event", "track_class")}
    payload = {**time_payload(T0), "satellite": "gms3", "channel": "ir"}
    with open_store(None, str(tmp_path / "store")) as s:
        s.ensure_collection("frames", 4)
        assert s.info("frames").payload_indexes == {}
        monkeypatch.setattr(base, "PAYLOAD_INDEXES", older)
        s.upsert("frames", [Point(DATA.ids[0], [1, 0, 0, 0], {**payload, "event": "198702"})])
        assert set(s.info("frames").payload_indexes) == {
            "time", "month", "day_of_year", "hour", "day", "satellite", "channel"
        }  # fmt: skip
        event = models.Filter(
            must=[models.FieldCondition(key="event", match=models.MatchValue(value="198702"))]
        )
        assert [h.id for h in s.search("frames", [1, 0, 0, 0], filters=event)] == [DATA.ids[0]]
        monkeypatch.undo()
        s.upsert("frames", [Point(DATA.ids[1], [0, 1, 0, 0], {**payload, "event": "198702"})])
        assert "event" in s.info("frames").payload_indexes
        assert "track_class" not in s.info("frames").payload_indexes
        assert len(s.search("frames", [1, 0, 0, 0], filters=event)) == 2
        tracked = SearchFilters(min_class=3)  # a frame field no point carries here
        assert s.search("frames", [1, 0, 0, 0], filters=tracked) == []
        # points without their indexes (a collection whose segments were lost comes back from
        # its write-ahead log so): the next index run's ensure_collection makes them again
        s.ensure_collection("bare", 4)
        s._upsert("bare", [(DATA.ids[2], {"default": [1.0, 0, 0, 0]}, {**payload, "event": "1"})])
        assert s.info("bare").payload_indexes == {}
        s.ensure_collection("bare", 4)
        assert {"time", "satellite", "event"} <= set(s.info("bare").payload_indexes)


def test_filters_of_another_collection_are_refused():
    """A filter on a field the collection's points never carry (labels are scene fields) would
    match nothing, silently: it is refused, naming where it applies. Other names (an
    application's own collections) are not checked."""
    with open_store(None, ":memory:") as s:
        for name in ("frames", "scenes", "mine"):
            s.ensure_collection(name, 4)
            s.upsert(name, [Point(DATA.ids[0], [1, 0, 0, 0], time_payload(T0))])
        with pytest.raises(UsageError) as frames:
            s.search("frames", [1, 0, 0, 0], filters=SearchFilters(labels=("Airport",)))
        assert str(frames.value) == "labels filters scenes only: not a filter of a frames search"
        assert frames.value.params == ("labels",)
        with pytest.raises(UsageError, match="min_class filters frames and clips only"):
            s.search("scenes", [1, 0, 0, 0], filters=SearchFilters(min_class=3, months=(1,)))
        assert len(s.search("scenes", [1, 0, 0, 0], filters=SearchFilters(months=(1,)))) == 1
        assert s.search("mine", [1, 0, 0, 0], filters=SearchFilters(labels=("Airport",))) == []


def test_scroll_by_point_id(store):
    """A point looked up by its id (the service's scene thumbnails): the embedded adapter once
    passed the ids to qdrant-edge as a list, which it refuses (it takes a set)."""
    wanted = [DATA.ids[3], DATA.ids[7]]
    found = models.Filter(must=[models.HasIdCondition(has_id=wanted)])
    assert sorted(r.id for r in store.scroll(COLL, found)) == sorted(wanted)


def test_info_reports_points_and_indexes(store):
    info = store.info(COLL)
    assert info.points == N
    assert info.vectors == {"default": DIM}
    if store.kind != "memory":  # local mode has no payload indexes
        assert {"time", "satellite", "channel", "month", "hour", "day_of_year", "day"} <= set(
            info.payload_indexes
        )
    if store.kind in GRAPH:
        assert info.indexed_vectors == N


def test_bad_input(store):
    with pytest.raises(UsageError, match="dimension 5, expected 32"):
        store.search(COLL, [0.1] * 5)
    with pytest.raises(UsageError, match="dimension"):
        store.upsert(COLL, [Point(DATA.ids[0], [0.1] * 5, {})])
    with pytest.raises(UsageError, match="not a UUID"):
        store.upsert(COLL, [Point("frame-1", DATA.vectors[0], {})])
    with pytest.raises(NotFoundError, match="no_such_collection"):
        store.search("no_such_collection", DATA.queries[0])
    with pytest.raises(NotFoundError):
        store.count("no_such_collection")
    with pytest.raises(UsageError, match="has no vector 'other'"):
        store.search(COLL, DATA.queries[0], vector_name="other")
    with pytest.raises(UsageError, match="needs a filter"):
        store.delete(COLL, None)
    with pytest.raises(UsageError, match="dimension 32, not 16"):
        store.ensure_collection(COLL, 16)


def test_upsert_delete_roundtrip_is_idempotent(store):
    """Separate collection: delete by filter (re-index a year), re-upsert, add a named vector."""
    name = COLL + "_rw"
    store.drop_collection(name)
    store.ensure_collection(name, DIM)
    pts = [Point(DATA.ids[i], DATA.vectors[i], DATA.payloads[i]) for i in range(400)]
    store.upsert(name, pts)
    store.upsert(name, pts)  # same ids: idempotent
    assert store.count(name) == 400
    in_2015 = SearchFilters(start=datetime(2015, 1, 1), end=datetime(2015, 12, 31, 23, 59))
    n2015 = store.count(name, in_2015)
    assert 0 < n2015 <= 400
    assert store.delete(name, in_2015) == n2015
    assert store.count(name) == 400 - n2015
    store.upsert(name, pts)
    assert store.count(name) == 400
    store.ensure_collection(name, 8, vector_name="enc-small")
    store.ensure_collection(name, 8, vector_name="enc-small")  # idempotent
    assert store.vector_config(name) == {"default": DIM, "enc-small": 8}
    # a second encoder's vectors are added without erasing the first encoder's
    small = np.random.default_rng(1).normal(size=(400, 8))
    store.upsert(
        name,
        [Point(DATA.ids[i], small[i], DATA.payloads[i]) for i in range(400)],
        vector_name="enc-small",
    )
    hits = store.search(name, DATA.vectors[5], k=1, exact=True)
    assert hits[0].id == DATA.ids[5]
    hits = store.search(name, small[7], k=1, vector_name="enc-small", exact=True)
    assert hits[0].id == DATA.ids[7]
    store.drop_collection(name)
    assert name not in store.collections()


def test_unknown_quantization_is_a_clear_error():
    with pytest.raises(UsageError, match="unknown quantization 'pq'"):
        EdgeIndexParams(quantization="pq")


def test_both_backends_can_create_every_payload_index():
    """The server adapter once lacked the float and geo index types (footprint, location), which
    only a run against a Qdrant server would have hit: both adapters translate every index the
    schema asks for, integer ones with the schema's lookup/range uses."""
    from skysearch.retrieval.store import embedded, schema, server

    for field_name, kind in schema.PAYLOAD_INDEXES.items():
        assert kind in embedded._INDEX_CLASSES and kind in server._INDEX_PARAMS, field_name
        params = server._INDEX_PARAMS[kind](False, field_name)
        if kind == models.PayloadSchemaType.INTEGER:
            uses = schema.integer_index_uses(field_name)
            assert (params.lookup, params.range) == (uses["lookup"], uses["range"])
    assert schema.integer_index_uses("hour") == {"lookup": True, "range": False}
    assert "year" not in schema.PAYLOAD_INDEXES
