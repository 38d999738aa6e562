"""The vector store conformance suite's data and filter cases (``test_store.py``): 3,000
clustered 32-d points over ~2 years with every payload field the filters read, round-number
places on box edges, the antimeridian and the poles, and each case's numpy predicate."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np
from qdrant_client import models
from skysearch.retrieval.store import Point, VectorStore
from skysearch.retrieval.store.filters import SearchFilters
from skysearch.retrieval.store.schema import time_payload

N = 3000
DIM = 32
K = 10
NQ = 60  # 600 true neighbours per case: recall@10 is estimated, not decided by 1-2 misses
# qdrant-client's pure-Python ``:memory:`` mode must be exact (any miss fails): 5 queries (50
# true neighbours) decide that in a twelfth of the time (it takes ~0.2 s a query)
NQ_MEMORY = 5
T0 = datetime(2015, 1, 1, tzinfo=timezone.utc)
CHANNELS = ["ir", "wv", "vis"]
SATELLITES = ["goes-east", "coms"]
COLL = "skysearch_test_clips"


EDGE_PLACES = [
    (-30, -20), (40, 30), (100, 10), (130, 25), (115, 25), (180, 0), (-180, 0), (180, 45),
    (-180, -45), (170, 5), (-170, -5), (0, 90), (0, -90), (10, 70), (-120, -60), (120, 60),
    (50, 90), (150, -90),  # the poles written with a longitude outside the pole boxes' spans
]  # fmt: skip


@dataclass
class Data:
    vectors: np.ndarray  # normalised, (N, DIM)
    ids: list[str]
    payloads: list[dict]
    queries: np.ndarray
    minutes: np.ndarray  # minutes since T0
    channel_sets: list[set[str]]
    sat: np.ndarray
    month: np.ndarray
    hour: np.ndarray
    doy: np.ndarray
    year: np.ndarray
    dataset: np.ndarray
    label: np.ndarray
    lon: np.ndarray
    lat: np.ndarray


def _make_data() -> Data:
    rng = np.random.default_rng(7)
    centres = rng.normal(size=(30, DIM))
    labels = np.repeat(rng.integers(0, 30, size=N // 50 + 1), 50)[:N]  # regimes persist in time
    x = centres[labels] + rng.normal(scale=0.7, size=(N, DIM))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    # ~6-hour cadence with jitter over ~2 years, so months/years/season wrap all occur
    minutes = np.cumsum(rng.integers(300, 420, size=N)).astype(np.int64)
    payloads, channel_sets = [], []
    lons = rng.uniform(-180, 180, size=N)
    lats = rng.uniform(-80, 80, size=N)
    # round numbers: on the edges of the bbox cases, the antimeridian and the poles (a closed
    # box holds them; Qdrant's geo box alone does not); the last point has no location
    lons[: len(EDGE_PLACES)], lats[: len(EDGE_PLACES)] = np.array(EDGE_PLACES).T
    lons[-1] = lats[-1] = np.nan
    for i in range(N):
        t = T0 + timedelta(minutes=int(minutes[i]))
        chans = [CHANNELS[i % 3]] if i % 5 else [CHANNELS[i % 3], CHANNELS[(i + 1) % 3]]
        channel_sets.append(set(chans))
        payloads.append(
            {
                "satellite": SATELLITES[(i // 7) % 2],
                "channel": chans if len(chans) > 1 else chans[0],
                "model_id": "enc-a" if i % 4 else "enc-b",
                "dataset": ["aid", "rsscn7", "skyscript"][i % 3],
                "label": f"class{(i * 7) % 11}",
                **(
                    {"location": {"lon": float(lons[i]), "lat": float(lats[i])}}
                    if i < N - 1
                    else {}
                ),
                **time_payload(t),
                **({"event": f"1987{i % 4:02d}"} if i % 3 == 0 else {}),
                **(
                    {"track_class": 2 + i % 5, "pressure_hpa": 900.0 + (i * 7) % 110}
                    if i % 2 == 0
                    else {}
                ),
            }
        )
    queries = x[rng.integers(0, N, size=NQ)] + rng.normal(scale=0.3, size=(NQ, DIM))
    ns = uuid.UUID(int=7)
    return Data(
        vectors=x,
        ids=[str(uuid.uuid5(ns, f"p{i}")) for i in range(N)],
        payloads=payloads,
        queries=queries.astype(np.float32),
        minutes=minutes,
        channel_sets=channel_sets,
        sat=np.array([p["satellite"] for p in payloads]),
        month=np.array([p["month"] for p in payloads]),
        hour=np.array([p["hour"] for p in payloads]),
        doy=np.array([p["day_of_year"] for p in payloads]),
        year=np.array([p["year"] for p in payloads]),
        dataset=np.array([p["dataset"] for p in payloads]),
        label=np.array([p["label"] for p in payloads]),
        lon=lons,
        lat=lats,
    )


DATA = _make_data()


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _minute(day: int) -> int:
    return int(DATA.minutes[0] + day * 1440)


MID = int(DATA.minutes[N // 2])


def in_box(d: Data, west: float, south: float, east: float, north: float) -> np.ndarray:
    """The closed box (west > east: across the antimeridian, where -180 and 180 meet)."""
    lon = d.lon
    if west > east:
        across = (lon >= west) | (lon <= east)
    else:
        across = ((lon >= west) & (lon <= east)) | (west == -180) & (lon == 180)
        across |= (east == 180) & (lon == -180)
    poles = ((d.lat == 90) & (north == 90)) | ((d.lat == -90) & (south == -90))  # any longitude
    return (across & (d.lat >= south) & (d.lat <= north)) | poles


# (name, filters, numpy predicate over DATA). Subsets range from ~1% to ~60% of the points.
CASES: list[tuple[str, SearchFilters | models.Filter, Callable[[Data], np.ndarray]]] = [
    (
        "time-closed-5pct",
        SearchFilters(start=at(MID), end=at(MID + 37 * 1440)),
        lambda d: (d.minutes >= MID) & (d.minutes <= MID + 37 * 1440),
    ),
    (
        "time-closed-1pct",
        SearchFilters(start=at(MID), end=at(MID + 7 * 1440)),
        lambda d: (d.minutes >= MID) & (d.minutes <= MID + 7 * 1440),
    ),
    ("time-open-start", SearchFilters(start=at(MID)), lambda d: d.minutes >= MID),
    ("time-open-end", SearchFilters(end=at(_minute(20))), lambda d: d.minutes <= _minute(20)),
    (
        "channels-any",
        SearchFilters(channels=("ir", "vis")),
        lambda d: np.array([bool(c & {"ir", "vis"}) for c in d.channel_sets]),
    ),
    ("satellite", SearchFilters(satellites=("coms",)), lambda d: d.sat == "coms"),
    ("months", SearchFilters(months=(6, 7, 8)), lambda d: np.isin(d.month, [6, 7, 8])),
    ("hours", SearchFilters(hours=(0, 1, 2)), lambda d: np.isin(d.hour, [0, 1, 2])),
    (
        "season-wraps-year-end",
        SearchFilters(day_of_year=(350, 15)),
        lambda d: (d.doy >= 350) | (d.doy <= 15),
    ),
    (
        "season-window",
        SearchFilters(day_of_year=(100, 110)),
        lambda d: (d.doy >= 100) & (d.doy <= 110),
    ),
    (
        "must-not-window",
        SearchFilters(exclude_around=at(MID), exclude_window=timedelta(days=100)),
        lambda d: np.abs(d.minutes - MID) > 100 * 1440,
    ),
    (
        "model-id",
        SearchFilters(model_id="enc-b"),
        lambda d: np.array([p["model_id"] == "enc-b" for p in d.payloads]),
    ),
    ("dataset", SearchFilters(datasets=("rsscn7",)), lambda d: d.dataset == "rsscn7"),
    (
        "labels-any",
        SearchFilters(labels=("class3", "class5")),
        lambda d: np.isin(d.label, ["class3", "class5"]),
    ),
    (
        "bbox-10pct",
        SearchFilters(bbox=(-30.0, -20.0, 40.0, 30.0)),
        lambda d: (d.lon >= -30) & (d.lon <= 40) & (d.lat >= -20) & (d.lat <= 30),
    ),
    (
        "bbox-1pct",
        SearchFilters(bbox=(100.0, 10.0, 130.0, 25.0)),
        lambda d: (d.lon >= 100) & (d.lon <= 130) & (d.lat >= 10) & (d.lat <= 25),
    ),
    ("bbox-whole-world", SearchFilters(bbox=(-180, -90, 180, 90)), lambda d: ~np.isnan(d.lon)),
    (
        "bbox-antimeridian",
        SearchFilters(bbox=(170, -45, -170, 45)),
        lambda d: in_box(d, 170, -45, -170, 45),
    ),
    ("bbox-to-180", SearchFilters(bbox=(100, 0, 180, 45)), lambda d: in_box(d, 100, 0, 180, 45)),
    (
        "bbox-from-minus-180",
        SearchFilters(bbox=(-180, -45, -150, 0)),
        lambda d: in_box(d, -180, -45, -150, 0),
    ),
    (
        "bbox-north-pole",
        SearchFilters(bbox=(-10, 70, 10, 90)),
        lambda d: in_box(d, -10, 70, 10, 90),
    ),
    (
        "bbox-south-pole",
        SearchFilters(bbox=(-40, -90, 0, -60)),
        lambda d: in_box(d, -40, -90, 0, -60),
    ),
    (
        "scene-combination",
        SearchFilters(
            start=at(MID), datasets=("aid", "skyscript"), bbox=(-120.0, -60.0, 120.0, 60.0)
        ),
        lambda d: (
            (d.minutes >= MID)
            & np.isin(d.dataset, ["aid", "skyscript"])
            & (np.abs(d.lon) <= 120)
            & (np.abs(d.lat) <= 60)
        ),
    ),
    (
        "events-any",
        SearchFilters(events=("198701", "198703")),
        lambda d: np.array([p.get("event") in ("198701", "198703") for p in d.payloads]),
    ),
    (
        "track-class-and-pressure",
        SearchFilters(min_class=4, max_pressure=960.0),
        lambda d: np.array(
            [p.get("track_class", 0) >= 4 and p.get("pressure_hpa", 2e3) <= 960 for p in d.payloads]
        ),
    ),
    (
        "integer-range-raw",
        models.Filter(must=[models.FieldCondition(key="year", range=models.Range(gte=2016))]),
        lambda d: d.year >= 2016,
    ),
    (
        "combination",
        SearchFilters(
            start=at(_minute(60)),
            end=at(_minute(600)),
            channels=("wv",),
            satellites=("goes-east",),
            hours=tuple(range(0, 12)),
            exclude_around=at(_minute(300)),
            exclude_window=timedelta(days=30),
        ),
        lambda d: (
            (d.minutes >= _minute(60))
            & (d.minutes <= _minute(600))
            & np.array(["wv" in c for c in d.channel_sets])
            & (d.sat == "goes-east")
            & (d.hour < 12)
            & (np.abs(d.minutes - _minute(300)) > 30 * 1440)
        ),
    ),
]


def brute_force(q: np.ndarray, mask: np.ndarray, k: int) -> list[str]:
    scores = np.where(mask, DATA.vectors @ (q / np.linalg.norm(q)), -np.inf)
    order = np.argsort(-scores)[:k]
    return [DATA.ids[i] for i in order if np.isfinite(scores[i])]


def load(store: VectorStore) -> None:
    store.drop_collection(COLL)
    store.ensure_collection(COLL, DIM)
    points = (Point(DATA.ids[i], DATA.vectors[i], DATA.payloads[i]) for i in range(N))
    assert store.upsert(COLL, points, batch_size=500) == N
