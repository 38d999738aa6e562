"""Augmented clip queries: fusion, the store path, and the evaluation's ranking metric."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
from skysearch.ingest.ids import clip_id
from skysearch.retrieval.evaluation.augment import ndcg, pool_rerank
from skysearch.retrieval.search.augment import (
    AugmentOptions,
    augmented_search,
    combine_vectors,
    following_clip_id,
    fuse,
    rank_positions,
)
from skysearch.retrieval.store import Point, open_store
from skysearch.retrieval.store.schema import time_payload

T0 = datetime(2017, 9, 8, 0, 45, tzinfo=timezone.utc)


def clip_payload(start: datetime, length: int = 6, gap: int = 60) -> dict:
    cid = clip_id("goes-east", ["ir"], start, length, gap)
    return {
        "clip_id": cid,
        "satellite": "goes-east",
        "channel": "ir",
        "length": length,
        "gap_minutes": gap,
        **time_payload(start),
    }


def test_following_clip_id_is_the_clip_l_gaps_later() -> None:
    payload = clip_payload(T0)
    assert following_clip_id(payload) == clip_id(
        "goes-east", ["ir"], T0 + timedelta(hours=6), 6, 60
    )
    assert following_clip_id({"clip_id": "x"}) is None


def test_fusion_extremes_and_rrf() -> None:
    present = np.array([0.9, 0.5, 0.1])
    future = np.array([0.1, 0.5, 0.9])
    assert np.argmax(fuse(present, future, AugmentOptions("rerank", beta=0.0))) == 0
    assert np.argmax(fuse(present, future, AugmentOptions("rerank", beta=1.0))) == 2
    assert rank_positions(present).tolist() == [1, 2, 3]
    rrf = fuse(present, future, AugmentOptions(method="rrf"))
    assert rrf[0] == pytest.approx(rrf[2]) and rrf[1] < rrf[0]
    v = combine_vectors(np.array([1.0, 0.0]), np.array([0.0, 3.0]), 0.5)
    assert np.linalg.norm(v) == pytest.approx(1.0) and v[0] == pytest.approx(v[1])


def test_bad_options_are_usage_errors() -> None:
    from skysearch.errors import UsageError

    with pytest.raises(UsageError, match="unknown fusion"):
        AugmentOptions(method="magic").check()
    with pytest.raises(UsageError, match="beta"):
        AugmentOptions(beta=2.0).check()


def test_store_path_promotes_the_candidate_whose_future_matches(tmp_path) -> None:
    # Two candidate clips equally close to the query now; only B's following clip looks like
    # the predicted future, so the augmented search ranks B first and the plain search cannot.
    # The real embedded engine (payload lookups of the following clips included).
    store = open_store(None, location=str(tmp_path / "store"))
    store.ensure_collection("clips", 3)
    a, b = T0, T0 + timedelta(days=1)
    points = [
        Point(clip_payload(a)["clip_id"], [1.0, 0.0, 0.0], clip_payload(a)),
        Point(clip_payload(b)["clip_id"], [1.0, 0.05, 0.0], clip_payload(b)),
        Point(
            clip_payload(a + timedelta(hours=6))["clip_id"],
            [0.0, 1.0, 0.0],
            clip_payload(a + timedelta(hours=6)),
        ),
        Point(
            clip_payload(b + timedelta(hours=6))["clip_id"],
            [0.0, 0.0, 1.0],
            clip_payload(b + timedelta(hours=6)),
        ),
    ]
    store.upsert("clips", points)
    query, future = np.array([1.0, 0.0, 0.0]), np.array([0.0, 0.0, 1.0])
    plain = store.search("clips", query, k=2)
    assert [h.id for h in plain] == [points[0].id, points[1].id]
    hits = augmented_search(store, query, future, k=2, options=AugmentOptions("rerank", beta=0.5))
    assert [h.id for h in hits] == [points[1].id, points[0].id]
    assert hits[0].score > hits[1].score
    # beta = 0 is the plain search; "sum" moves the query vector toward the future: at beta = 1
    # it is the future itself, whose nearest stored clip is B's following clip.
    for method in ("rerank", "sum"):
        same = augmented_search(store, query, future, k=2, options=AugmentOptions(method, 0.0))
        assert [h.id for h in same] == [h.id for h in plain], method
    summed = augmented_search(store, query, future, k=1, options=AugmentOptions("sum", 1.0))
    assert [h.id for h in summed] == [points[3].id]
    store.close()


def test_ndcg_is_one_for_the_ground_truth_order_and_pool_keeps_order() -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((3, 30))
    mask = np.ones_like(truth, dtype=bool)
    mask[:, :2] = False
    assert ndcg(truth, truth, mask, 10) == pytest.approx(1.0)
    assert ndcg(-truth, truth, mask, 10) < 0.5
    # beta = 0 inside a pool re-rank is the plain ranking.
    pooled = pool_rerank(
        truth, rng.random((3, 30)), mask, AugmentOptions("rerank", beta=0.0, pool=12)
    )
    assert ndcg(pooled, truth, mask, 10) == pytest.approx(1.0)
