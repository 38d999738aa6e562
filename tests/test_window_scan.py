"""The embedded store's exact scan of narrow time windows (retrieval/store/window_scan.py):
every window size and edge, empty windows, filters beside the window, and the copy's life
cycle (built by optimize, dropped before any write, never used when stale or damaged)."""

from __future__ import annotations

import json
import logging
import shutil
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from qdrant_client import models
from skysearch.retrieval.store import Point, window_kernels, window_scan
from skysearch.retrieval.store.embedded import EdgeIndexParams, EmbeddedStore
from skysearch.retrieval.store.filters import SearchFilters
from skysearch.retrieval.store.schema import time_payload

N, DIM, K = 2400, 48, 10
T0 = datetime(2020, 1, 1, tzinfo=timezone.utc)
COLL = "frames"
rng = np.random.default_rng(7)
VECTORS = rng.normal(size=(N, DIM)).astype(np.float32)
VECTORS /= np.linalg.norm(VECTORS, axis=1, keepdims=True)
# shuffled insertion order (the copy sorts by time); every 50th point has no time
ORDER = rng.permutation(N)
MINUTES = np.arange(N) * 10
HAS_TIME = np.arange(N) % 50 != 7
SATS = np.where(np.arange(N) % 3 == 0, "coms", "goes-east")
CHANNELS = [["ir", "wv"] if i % 5 == 0 else ["ir"] for i in range(N)]
IDS = [str(uuid.UUID(int=i + 1)) for i in range(N)]
QUERIES = rng.normal(size=(12, DIM)).astype(np.float32)
QUERIES /= np.linalg.norm(QUERIES, axis=1, keepdims=True)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=int(minute))


def payload(i: int) -> dict:
    p = time_payload(at(MINUTES[i])) if HAS_TIME[i] else {}
    return {**p, "satellite": str(SATS[i]), "channel": CHANNELS[i], "pressure_hpa": 900.0 + i % 100}


def brute_force(q: np.ndarray, mask: np.ndarray, k: int = K) -> list[str]:
    scores = np.where(mask, VECTORS @ q, -np.inf)
    return [IDS[i] for i in np.argsort(-scores)[:k] if np.isfinite(scores[i])]


def window_mask(lo: int, hi: int) -> np.ndarray:
    return HAS_TIME & (MINUTES >= lo) & (MINUTES <= hi)


def load(store: EmbeddedStore) -> None:
    store.ensure_collection(COLL, DIM)
    points = (Point(IDS[i], VECTORS[i], payload(i)) for i in ORDER)
    store.upsert(COLL, points, batch_size=500)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """The points, optimized (the copy built); ``exact=True`` queries bypass the scan and
    score every point in the engine: the reference beside brute force."""
    store = EmbeddedStore(tmp_path_factory.mktemp("scan"), EdgeIndexParams())
    load(store)
    store.optimize(COLL)
    yield store
    store.close()


@pytest.fixture
def scanned(monkeypatch):
    """Records whether each query was answered by the scan (candidates not None)."""
    calls: list[bool] = []
    original = window_scan.WindowIndex.candidates

    def spy(self, *args, **kwargs):
        out = original(self, *args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(window_scan.WindowIndex, "candidates", spy)
    return calls


WINDOWS = [
    ("one point", 5000, 5000),
    ("edges on point times", 5000, 5990),
    ("edges between points", 5005, 5995),
    ("1%", 12000, 12000 + N * 10 // 100),
    ("10%", 3000, 3000 + N),
    ("60%", 2000, 2000 + N * 6),
    ("whole range", 0, MINUTES[-1]),
    ("empty: between two points", 5001, 5009),
    ("empty: after the last point", MINUTES[-1] + 10, MINUTES[-1] + 1000),
    ("starts before the first point", -500, 300),
]


@pytest.mark.parametrize("window", WINDOWS, ids=[w[0] for w in WINDOWS])
def test_every_window_equals_brute_force_and_the_engine(store, scanned, window):
    _, lo, hi = window
    scan = store
    filters = SearchFilters(start=at(lo), end=at(hi))
    for q in QUERIES:
        truth = brute_force(q, window_mask(lo, hi))
        hits = scan.search(COLL, q, k=K, filters=filters)
        assert [h.id for h in hits] == truth
        assert [h.id for h in scan.search(COLL, q, k=K, filters=filters, exact=True)] == truth
        for h in hits:  # the engine's own float32 scores and payloads
            assert h.score == pytest.approx(float(VECTORS[IDS.index(h.id)] @ q), abs=1e-5)
            assert h.payload["satellite"] in ("coms", "goes-east")
    assert calls_all(scanned)


@pytest.fixture
def three_scan_threads(monkeypatch):
    """Windows of 64 rows or more scored by three threads (whatever this machine has)."""
    monkeypatch.setenv("NUMBA_NUM_THREADS", "3")
    monkeypatch.setattr(window_kernels, "PARALLEL_ROWS", 64)
    monkeypatch.setattr(window_kernels, "_pool", None)
    yield
    monkeypatch.setattr(window_kernels, "_pool", None)  # the next test sizes its own


@pytest.mark.parametrize("rows", [0, 1, 63, 64, 65, 100, 1001])
def test_the_scores_of_a_window_split_across_threads_equal_one_pass(three_scan_threads, rows):
    x = np.random.default_rng(rows).integers(-127, 128, size=(1200, DIM), dtype=np.int8)
    q = x[3]
    for lo in (0, 7, 1200 - rows):
        want = x[lo : lo + rows].astype(np.int64) @ q.astype(np.int64)
        np.testing.assert_array_equal(window_kernels.scores(x, q, lo, lo + rows), want)
    assert window_kernels.scan_threads()[0] == 3


@pytest.mark.parametrize("window", WINDOWS[3:6], ids=[w[0] for w in WINDOWS[3:6]])
def test_windows_scored_by_several_threads_equal_brute_force(
    store, scanned, three_scan_threads, window
):
    _, lo, hi = window
    filters = SearchFilters(start=at(lo), end=at(hi))
    for q in QUERIES:
        assert [h.id for h in store.search(COLL, q, k=K, filters=filters)] == brute_force(
            q, window_mask(lo, hi)
        )
    assert calls_all(scanned)


def calls_all(calls: list[bool]) -> bool:
    return bool(calls) and all(calls)


FILTERS = [
    (
        "open start",
        SearchFilters(start=at(20000)),
        lambda: HAS_TIME & (MINUTES >= 20000),
    ),
    (
        "window + satellite + multi-valued channel",
        SearchFilters(start=at(4000), end=at(16000), satellites=("coms",), channels=("wv",)),
        lambda: (
            window_mask(4000, 16000) & (SATS == "coms") & np.array(["wv" in c for c in CHANNELS])
        ),
    ),
    (
        "window minus an excluded stretch",
        SearchFilters(
            start=at(4000),
            end=at(16000),
            exclude_around=at(9000),
            exclude_window=timedelta(minutes=1000),
        ),
        lambda: window_mask(4000, 16000) & ~(np.abs(MINUTES - 9000) <= 1000),
    ),
    (
        "hours and pressure",
        SearchFilters(start=at(0), end=at(20000), hours=(1, 2), max_pressure=950.0),
        lambda: (
            window_mask(0, 20000)
            & np.isin((MINUTES // 60) % 24, [1, 2])
            & (900.0 + np.arange(N) % 100 <= 950)
        ),
    ),
    (
        "raw filter: gt/lt bounds and a should clause",
        models.Filter(
            must=[
                models.FieldCondition(
                    key="time", range=models.DatetimeRange(gt=at(1000), lt=at(9000))
                ),
                models.Filter(
                    should=[
                        models.FieldCondition(
                            key="satellite", match=models.MatchValue(value="coms")
                        ),
                        models.FieldCondition(key="hour", match=models.MatchAny(any=[3])),
                    ]
                ),
            ]
        ),
        lambda: (
            HAS_TIME
            & (MINUTES > 1000)
            & (MINUTES < 9000)
            & ((SATS == "coms") | ((MINUTES // 60) % 24 == 3))
        ),
    ),
    (
        "a value no point has",
        SearchFilters(start=at(0), end=at(9000), satellites=("gk2a",)),
        lambda: np.zeros(N, dtype=bool),
    ),
]


@pytest.mark.parametrize("case", FILTERS, ids=[f[0] for f in FILTERS])
def test_filters_beside_the_window_equal_brute_force(store, scanned, case):
    _, filters, predicate = case
    scan = store
    mask = predicate()
    for q in QUERIES:
        assert [h.id for h in scan.search(COLL, q, k=K, filters=filters)] == brute_force(q, mask)
    assert calls_all(scanned)


def test_one_hit_per_day_uses_the_scan(store, scanned):
    scan = store
    filters = SearchFilters(start=at(2000), end=at(22000), k=5, one_per_day=True)
    for q in QUERIES[:4]:
        got = [h.id for h in scan.search(COLL, q, filters=filters)]
        assert got == [h.id for h in scan.search(COLL, q, filters=filters, exact=True)]
    assert calls_all(scanned)


def test_what_it_cannot_evaluate_goes_to_the_engine(store, scanned):
    scan = store
    q = QUERIES[0]
    by_id = models.Filter(must=[models.HasIdCondition(has_id=IDS[:30])])
    assert {h.id for h in scan.search(COLL, q, k=K, filters=by_id)} <= set(IDS[:30])
    assert scanned == [False]  # asked, declined
    assert len(scan.search(COLL, q, k=K)) == K  # unfiltered: the graph, not the scan
    assert scanned == [False]


def test_wider_windows_than_the_limit_go_to_the_engine(store, scanned, monkeypatch):
    scan = store
    monkeypatch.setattr(
        scan, "params", replace(scan.params, window_scan_max_points=100, window_scan_max_fraction=0)
    )
    filters = SearchFilters(start=at(0), end=at(5000))  # ~500 points
    q = QUERIES[1]
    assert [h.id for h in scan.search(COLL, q, k=K, filters=filters, exact=True)] == brute_force(
        q, window_mask(0, 5000)
    )
    scan.search(COLL, q, k=K, filters=filters)
    assert scanned == [False]


def test_windows_within_the_fraction_of_the_collection_are_scanned(store, scanned, monkeypatch):
    """Above ``window_scan_max_points``, a window holding at most ``window_scan_max_fraction``
    of the collection (here 600 of 2,400 points) is still scanned; a wider one is not."""
    scan = store
    params = replace(scan.params, window_scan_max_points=100, window_scan_max_fraction=0.25)
    monkeypatch.setattr(scan, "params", params)
    q = QUERIES[2]
    inside = SearchFilters(start=at(1000), end=at(6000))  # ~490 points
    assert [h.id for h in scan.search(COLL, q, k=K, filters=inside)] == brute_force(
        q, window_mask(1000, 6000)
    )
    wider = SearchFilters(start=at(1000), end=at(9000))  # ~785 points
    hits = scan.search(COLL, q, k=K, filters=wider)
    assert scanned == [True, False]
    assert {h.id for h in hits} <= {IDS[i] for i in np.flatnonzero(window_mask(1000, 9000))}


def test_the_heap_picks_the_best_masked_rows():
    """``best`` (one pass, a min-heap) returns the same scores as sorting everything."""
    for trial in range(200):
        r = np.random.default_rng(trial)
        m, want = int(r.integers(1, 2000)), int(r.integers(1, 100))
        dots = r.integers(-40, 40, m).astype(np.int32)  # many ties
        scale = r.random(m).astype(np.float32)
        mask = r.random(m) < r.random()
        got = window_kernels.best(dots, scale, mask, want)
        scores = np.where(mask, dots.astype(np.float32) * scale, -np.inf)
        best = np.sort(scores)[::-1][: min(want, int(mask.sum()))]
        assert len(set(got.tolist())) == len(got) and mask[got].all()
        assert np.array_equal(np.sort(scores[got])[::-1], best), trial


def test_the_copy_is_dropped_before_a_write_and_rebuilt_by_optimize(tmp_path):
    store = EmbeddedStore(tmp_path, EdgeIndexParams())
    load(store)
    folder = window_scan.folder_of(tmp_path / COLL)
    assert not folder.exists()  # built by optimize only
    store.optimize(COLL)
    assert (folder / "meta.json").is_file()
    filters = SearchFilters(start=at(0), end=at(30000))
    q = QUERIES[2]
    moved = Point(IDS[0], -VECTORS[0], payload(0))  # a changed vector
    store.upsert(COLL, [moved])
    assert not folder.exists()
    expected_vectors = VECTORS.copy()
    expected_vectors[0] = -VECTORS[0]
    truth = np.argsort(-np.where(window_mask(0, 30000), expected_vectors @ q, -np.inf))[:K]
    assert [h.id for h in store.search(COLL, q, k=K, filters=filters)] == [IDS[i] for i in truth]
    store.optimize(COLL)
    assert folder.is_dir()
    assert [h.id for h in store.search(COLL, q, k=K, filters=filters)] == [IDS[i] for i in truth]
    store.delete(COLL, SearchFilters(satellites=("coms",)))
    assert not folder.exists()
    store.close()


def test_a_copy_of_another_state_is_never_used(tmp_path, scanned):
    store = EmbeddedStore(tmp_path, EdgeIndexParams())
    load(store)
    store.optimize(COLL)
    folder = window_scan.folder_of(tmp_path / COLL)
    kept = tmp_path / "kept"
    folder.rename(kept)
    store.upsert(COLL, [Point(str(uuid.UUID(int=10**6)), VECTORS[3], payload(3))])
    kept.rename(folder)  # a copy written before the last write (points differ): ignored
    store.close()
    store = EmbeddedStore(tmp_path, EdgeIndexParams())
    filters = SearchFilters(start=at(0), end=at(30000))
    hits = store.search(COLL, VECTORS[3], k=2, filters=filters)
    assert {h.id for h in hits} == {IDS[3], str(uuid.UUID(int=10**6))}
    assert scanned == []  # no copy loaded: the engine answered
    store.close()


def test_a_collection_without_times_gets_no_copy(tmp_path):
    store = EmbeddedStore(tmp_path, EdgeIndexParams())
    store.ensure_collection("scenes", DIM)
    store.upsert("scenes", [Point(IDS[i], VECTORS[i], {"label": "a"}) for i in range(50)])
    store.optimize("scenes")
    assert not window_scan.folder_of(tmp_path / "scenes").exists()
    hits = store.search("scenes", QUERIES[0], k=3, filters=SearchFilters(labels=("a",)))
    assert [h.id for h in hits] == brute_force(QUERIES[0], np.arange(N) < 50, 3)
    store.close()


def test_a_long_load_is_indexed_in_segments_as_it_goes(tmp_path):
    """Every ``segment_points`` upserted, the points are indexed (bounded RAM during a load),
    without the copy (built once, by the final optimize); results equal brute force."""
    params = EdgeIndexParams(segment_points=1000, indexing_threshold_kb=100)
    store = EmbeddedStore(tmp_path, params)
    load(store)  # 2400 points: indexed after 1000 and 2000
    info = store.info(COLL)
    assert info.indexed_vectors >= 2000 and info.segments >= 3
    assert not window_scan.folder_of(tmp_path / COLL).exists()
    store.optimize(COLL)
    assert window_scan.folder_of(tmp_path / COLL).is_dir()
    for _, lo, hi in WINDOWS:
        filters = SearchFilters(start=at(lo), end=at(hi))
        for q in QUERIES[:4]:
            truth = brute_force(q, window_mask(lo, hi))
            assert [h.id for h in store.search(COLL, q, k=K, filters=filters)] == truth
            exact = store.search(COLL, q, k=K, filters=filters, exact=True)
            assert [h.id for h in exact] == truth
    unfiltered = store.search(COLL, QUERIES[0], k=K)
    assert [h.id for h in unfiltered] == brute_force(QUERIES[0], np.ones(N, dtype=bool))
    store.close()


def test_fields_carried_by_some_batches_only_keep_their_values(tmp_path):
    """Columns of fields that a whole batch lacks are filled without looking at its points:
    the values of the batches that carry them stay in place (time order), the rest missing."""
    kinds = models.PayloadSchemaType
    ids = [str(uuid.UUID(int=i + 1)) for i in range(4)]
    batches = [
        [
            (ids[0], {"v": [1.0, 0.0]}, {"time": at(30).isoformat(), "satellite": "coms"}),
            (ids[1], {"v": [0.0, 1.0]}, {"time": at(0).isoformat()}),
        ],
        [
            (ids[2], {"v": [1.0, 1.0]}, {"time": at(20).isoformat(), "hour": 5}),
            (ids[3], {"v": [0.5, 1.0]}, {"time": at(10).isoformat()}),
        ],
    ]
    fields = {"satellite": kinds.KEYWORD, "channel": kinds.KEYWORD, "hour": kinds.INTEGER}
    assert window_scan.build(tmp_path / "c", iter(batches), 4, {"v": 2}, fields)
    index = window_scan.load(tmp_path / "c", 4)
    by_time = [1, 3, 2, 0]  # the copy's rows in time order
    assert [str(uuid.UUID(bytes=index.ids[r].tobytes())) for r in range(4)] == [
        ids[i] for i in by_time
    ]
    satellite = index.columns["satellite"]
    assert satellite.vocabulary == {"coms": 0}
    assert satellite.values[:, 0].tolist() == [-1, -1, -1, 0]
    assert (index.columns["channel"].values == -1).all()
    assert np.array_equal(index.columns["hour"].values, [np.nan, np.nan, 5, np.nan], equal_nan=True)


def test_ids_that_are_not_canonical_uuid_strings_are_converted_one_by_one():
    canonical = [str(uuid.UUID(int=i)) for i in (1, 2**100)]
    other = ["{" + canonical[0] + "}", uuid.UUID(int=2**100).hex]
    want = np.frombuffer(b"".join(uuid.UUID(i).bytes for i in canonical), np.uint8)
    for given in (canonical, other):
        assert np.array_equal(window_scan._uuid_bytes(given).reshape(-1), want)


def test_the_copy_pauses_the_collector_and_restores_it(monkeypatch, tmp_path):
    """build_from_shard runs without the cyclic collector, and leaves it as it found it."""
    import gc

    seen = []
    monkeypatch.setattr(window_scan, "build", lambda *a: seen.append(gc.isenabled()) or True)

    class Shard:
        def info(self):
            return type("Info", (), {"points_count": 1})()

    (tmp_path / "edge_config.json").write_text('{"vectors": {}}')
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            assert window_scan.build_from_shard(Shard(), tmp_path)
            assert gc.isenabled() == enabled
        finally:
            gc.enable()
    assert seen == [False, False]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """A closed store directory with its copy, copied by each test that damages one."""
    root = tmp_path_factory.mktemp("pristine")
    store = EmbeddedStore(root, EdgeIndexParams())
    load(store)
    store.optimize(COLL)
    store.close()
    return root


def cut_in_half(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def edit_meta(folder, edit):
    meta = json.loads((folder / "meta.json").read_text())
    edit(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


DAMAGES = [
    ("vec file cut in half", lambda f: cut_in_half(f / "vec.default.npy")),
    ("ids.npy cut in half", lambda f: cut_in_half(f / "ids.npy")),
    ("ids.npy deleted", lambda f: (f / "ids.npy").unlink()),
    ("time.npy of zero bytes", lambda f: (f / "time.npy").write_bytes(b"")),
    ("scale file of garbage", lambda f: (f / "scale.default.npy").write_bytes(b"\x93NUMPY" * 9)),
    ("meta vectors a string", lambda f: edit_meta(f, lambda m: m.update(vectors="default"))),
    ("meta columns a list", lambda f: edit_meta(f, lambda m: m.update(columns=["hour"]))),
    (
        "meta vocabulary a list",
        lambda f: edit_meta(f, lambda m: m["columns"]["satellite"].update(vocabulary=["coms"])),
    ),
    ("meta.json a list", lambda f: (f / "meta.json").write_text("[2400]")),
    ("meta.json cut in half", lambda f: cut_in_half(f / "meta.json")),
    ("meta.json deleted", lambda f: (f / "meta.json").unlink()),
    (
        "keyword column one row short",
        lambda f: np.save(f / "col.satellite.npy", np.load(f / "col.satellite.npy")[:-1]),
    ),
    (
        "number column of another dtype",
        lambda f: np.save(f / "col.hour.npy", np.load(f / "col.hour.npy").astype(np.float32)),
    ),
    (
        "vectors of another width",
        lambda f: np.save(f / "vec.default.npy", np.load(f / "vec.default.npy")[:, :-1]),
    ),
]


@pytest.mark.parametrize("damage", DAMAGES, ids=[d[0] for d in DAMAGES])
def test_a_damaged_copy_is_never_used(pristine, tmp_path, scanned, caplog, damage):
    """The engine answers (the same ids as the undamaged store), nothing raises, one warning
    names the copy and the command that rebuilds it, and the copy is deleted."""
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True)
    folder = window_scan.folder_of(tmp_path / COLL)
    damage[1](folder)
    store = EmbeddedStore(tmp_path, EdgeIndexParams())
    caplog.set_level(logging.WARNING, logger=window_scan.log.name)
    for lo, hi in ((5000, 5990), (12000, 12240), (3000, 5400)):
        filters = SearchFilters(start=at(lo), end=at(hi), satellites=("coms", "goes-east"))
        for q in QUERIES[:3]:
            truth = brute_force(q, window_mask(lo, hi))
            assert [h.id for h in store.search(COLL, q, k=K, filters=filters)] == truth
            exact = store.search(COLL, q, k=K, filters=filters, exact=True)
            assert [h.id for h in exact] == truth
    assert scanned == []  # no copy loaded
    warnings = [r for r in caplog.records if r.name == window_scan.log.name]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert str(folder) in warnings[0].getMessage()
    assert "skysearch store optimize" in warnings[0].getMessage()
    assert not folder.exists()  # deleted: the next process neither loads nor warns again
    store.close()


def test_a_copy_deleted_for_damage_is_rebuilt_whole_by_optimize(pristine, tmp_path, scanned):
    shutil.copytree(pristine, tmp_path, dirs_exist_ok=True)
    folder = window_scan.folder_of(tmp_path / COLL)
    cut_in_half(folder / "ids.npy")
    store = EmbeddedStore(tmp_path, EdgeIndexParams())
    filters = SearchFilters(start=at(5000), end=at(5990))
    truth = brute_force(QUERIES[0], window_mask(5000, 5990))
    assert [h.id for h in store.search(COLL, QUERIES[0], k=K, filters=filters)] == truth
    assert scanned == [] and not folder.exists()
    store.optimize(COLL)
    assert [h.id for h in store.search(COLL, QUERIES[0], k=K, filters=filters)] == truth
    assert scanned == [True]  # the rebuilt copy answered
    store.close()


def test_an_undamaged_copy_loads_whole_without_a_warning(pristine, caplog):
    """The normal path: every array mapped with the copy's shapes, nothing logged (a bug in
    the checks would otherwise pass for damage, the engine hiding it)."""
    caplog.set_level(logging.DEBUG, logger=window_scan.log.name)
    index = window_scan.load(pristine / COLL, N)
    assert index is not None and index.points == N
    assert index.times.shape == (N,) and index.ids.shape == (N, 16)
    assert index.vectors["default"][0].shape == (N, DIM)
    assert index.columns["satellite"].kind == "keyword"
    assert index.columns["hour"].values.shape == (N,)
    assert window_scan.load(pristine / COLL, N + 1) is None  # another state: ignored, kept
    assert window_scan.load(pristine / "absent", N) is None
    assert [r for r in caplog.records if r.name == window_scan.log.name] == []
    assert window_scan.folder_of(pristine / COLL).is_dir()


def test_a_query_of_another_width_goes_to_the_engine(store, scanned):
    index = store._window_index(COLL)
    flt = models.Filter(
        must=[models.FieldCondition(key="time", range=models.DatetimeRange(gte=at(0)))]
    )
    assert index.candidates("default", [0.1] * (DIM + 1), K, flt, N) is None
