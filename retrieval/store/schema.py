"""Collection schemas: names, vectors, payload fields and the payload index of every filtered field.

One schema for every backend (embedded engine, Qdrant server, ``:memory:``), so an application
can query a SkySearch collection directly with any Qdrant client. docs/reference/schemas.md
lists ``PAYLOAD_FIELDS`` for users (tests/test_docs.py keeps the two alike).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from qdrant_client import models
from skysearch.ingest.footprints import BOUND_COLUMNS

from skysearch.timeutil import parse_time, to_rfc3339

FRAMES = "frames"
CLIPS = "clips"
SCENES = "scenes"
COLLECTIONS: tuple[str, ...] = (FRAMES, CLIPS, SCENES)

#: Vector name used when a caller passes ``vector_name=None``. Every collection uses named
#: vectors, so a second encoder can be added to an existing collection later.
DEFAULT_VECTOR = "default"

#: HNSW graph parameters shared by all backends. Measured on the conformance data
#: (tests/test_store.py, 60 queries, 4 independent index builds): with m=16/ef_construct=128
#: the worst filtered recall@10 was 0.970-0.983 even at hnsw_ef 1024 (unreachable neighbours
#: in large filtered subsets); with m=32/ef_construct=256 and hnsw_ef 256 it was 0.998.
HNSW_M = 32
HNSW_EF_CONSTRUCT = 256
#: ``hnsw_ef`` used at query time (see above; the engine's default, = k, is far lower), filtered
#: or not. Unfiltered queries once used 128, chosen on validation queries over 100k points
#: (recall@10 0.9997); over 1M points (leave-one-out validation queries, bench/RESULTS.md
#: 2026-11-29 "payload indexes") 128 gave 0.988 with queries finding none of their top 10,
#: 256 gave 0.998 with every query >= 0.9, at 0.70 vs 0.52 ms p50. Held-out queries (the
#: bench's generator, seed 1: 500 queries over 1M points; bench/RESULTS.md 2026-11-30, third
#: entry), where the bench's own seed-0 queries had fallen to 0.989: 256 gave 0.9934, 320
#: 0.9954, 384 0.9974, 512 0.9974, p50 within noise of each other (0.95-1.29 ms); so 384.
SEARCH_HNSW_EF = 384
#: Below this many KB of vectors matching a filter, Qdrant scores the filtered subset exactly
#: (via the payload index) instead of walking the graph. Qdrant's default, 10000 KB (~10k
#: 256-d vectors), gave filtered recall@10 0.929 at 1M points with 1-10% time windows
#: (10k-100k points: graph walks with ACORN at hnsw_ef 256; 0.994 at hnsw_ef 1024); 100000 KB
#: (~100k vectors) gave 0.9985 (bench/store.py; docs/design/store-tuning.md).
FULL_SCAN_THRESHOLD_KB = 100_000
#: ACORN filtered search (Qdrant >= 1.16): when a filter is selective, the graph walk also
#: explores neighbours of neighbours, so the filtered subgraph stays connected. Measured:
#: without it a 6% subset just above full_scan_threshold gave recall@10 0.958 (tests) and the
#: bench numbers in bench/RESULTS.md; with it 1.0.
SEARCH_ACORN = True
#: Scalar int8 copies of the vectors kept in RAM for the search; results are rescored with the
#: original float32 vectors from an oversampled candidate list. Measured at 1M points
#: (bench/store.py, same recall@10 1.000 / 0.9985): unfiltered p50 3.72 -> 1.85 ms, 1-10%
#: time-filtered 14.9 -> 5.6 ms, index build 2,552 s (busy machine) -> 304 s. None = float32.
QUANTIZATION: str | None = "int8"
QUANTIZATION_OVERSAMPLING = 2.0
#: How new shards hold their vectors, int8 copies and HNSW graph in RAM. "cached": the originals
#: and the graph read in when the store opens, the int8 copies kept on the heap. "cold":
#: all memory-mapped and read when a search first touches them, so a process holds what its
#: queries use. Measured at 1M (bench/RESULTS.md, 2026-11-30 later): unfiltered p50 0.67-0.72
#: ms cached vs 1.62-1.66 ms cold (p95 1.0-1.2 vs 9.0-9.3 ms, pages already in the page cache),
#: filtered the same; serving RSS 2.85 vs 1.8 GB, at 10M 16.4 vs 6.9 GB (cold maps the id
#: tracker and payload indexes too: 2026-11-30 third entry). So "cached" by default, "cold"
#: where RAM is short (``store_memory`` / SKYSEARCH_STORE_MEMORY for a workspace).
STORAGE_MEMORY = "cached"
#: Time windows holding at most this many points are scanned exactly from a time-sorted int8
#: copy (retrieval/store/window_scan.py) instead of through the engine: exact, and at 1M
#: points (windows of 10k-100k at random places, ~43 ns a 256-d row, memory-bound) as fast
#: as the engine's filtered path at its p50 (bench/RESULTS.md, bench/peers.py 1M entry).
WINDOW_SCAN_MAX_POINTS = 200_000
#: ... and windows holding at most this fraction of a larger collection. The engine's filtered
#: graph walks lose recall in big collections: windows of 1-10% of 10M points (1M-point
#: segments) gave recall@10 0.81, of 2M points (200k-point segments) 0.93, where the scan gave
#: 1.0 (bench/RESULTS.md, 2026-11-30). The scan costs ~28 ns a row on 2 cores, so a quarter of
#: 10M points takes ~70 ms. Wider windows go to the graph walk, as do unfiltered queries
#: (recall@10 0.999 at 10M); its recall on windows of 25-100% is not measured.
WINDOW_SCAN_MAX_FRACTION = 0.25
#: Points per segment of the embedded engine, and per indexing pass during a long load. The
#: engine holds a segment's points in RAM (anonymous memory) until optimize() indexes them into
#: memory-mapped files: at 1M points a load ended with 1.3 GB of it, the optimize process
#: peaked above that, so a 10M load in one segment would not fit in 24 GB. Indexing every
#: SEGMENT_POINTS keeps both bounded and the build time linear in N (bench/RESULTS.md,
#: 2026-11-30). Time windows stay cheap: points arrive in time order, so a window touches few
#: segments.
SEGMENT_POINTS = 1_000_000


@dataclass(frozen=True)
class PayloadField:
    name: str
    kind: models.PayloadSchemaType | None  # the value's type; None: a list of numbers (bbox)
    collections: tuple[str, ...]
    doc: str
    indexed: bool = True  # False (the 5th argument): stored, not filtered


_ALL = COLLECTIONS
_T = models.PayloadSchemaType
PAYLOAD_FIELDS: tuple[PayloadField, ...] = (
    PayloadField("satellite", _T.KEYWORD, _ALL, "goes-east, coms, gk2a"),
    PayloadField(
        "channel",
        _T.KEYWORD,
        _ALL,
        "channel name; a list of channels for a multi-channel clip (match-any)",
    ),
    PayloadField("time", _T.DATETIME, _ALL, "RFC 3339 UTC; frame time or clip start"),
    PayloadField("year", _T.INTEGER, _ALL, "UTC year of `time`", False),
    PayloadField("month", _T.INTEGER, _ALL, "1-12"),
    PayloadField("day_of_year", _T.INTEGER, _ALL, "1-366 (season filters)"),
    PayloadField("hour", _T.INTEGER, _ALL, "0-23 UTC"),
    PayloadField("day", _T.KEYWORD, _ALL, "YYYY-MM-DD UTC (one-hit-per-day groups)"),
    PayloadField("length", _T.INTEGER, (CLIPS,), "frames per clip"),
    PayloadField("gap_minutes", _T.INTEGER, (CLIPS,), "minutes between frames"),
    PayloadField("frame_id", _T.KEYWORD, (FRAMES, SCENES), "UUIDv5 of the frame"),
    PayloadField("clip_id", _T.KEYWORD, (CLIPS,), "UUIDv5 of the clip"),
    PayloadField("model_id", _T.KEYWORD, _ALL, "encoder that made the vector"),
    PayloadField("source_path", _T.KEYWORD, _ALL, "archive file the frame came from", False),
    PayloadField(
        "content",
        None,
        (FRAMES, CLIPS),
        "model id -> digest of the frames its vector was embedded from (ids and frame-store "
        "rows): a frame repaired or a clip given a nearer frame after indexing is embedded again",
        False,
    ),
    PayloadField("dataset", _T.KEYWORD, (SCENES,), "image set or CSV a scene came from"),
    PayloadField("label", _T.KEYWORD, (SCENES,), "class of a scene (its class folder), if known"),
    PayloadField(
        "location",
        _T.GEO,
        _ALL,
        "{lon, lat} in degrees: a scene's (the centre of `bbox` when the source gives a box); "
        "a frame's or clip's storm centre from its best track",
    ),
    *(
        PayloadField(
            name,
            _T.FLOAT,
            (FRAMES, CLIPS),
            f"footprint {name} bound in degrees, where the profile knows the projection "
            "(a clip: the union of its frames'; east > 180 across the antimeridian)",
        )
        for name in BOUND_COLUMNS
    ),
    PayloadField("bbox", None, (SCENES,), "[west, south, east, north] in degrees, if known", False),
    PayloadField("event", _T.KEYWORD, (FRAMES, CLIPS), "event id, e.g. a typhoon (198702)"),
    PayloadField(
        "track_class", _T.INTEGER, (FRAMES, CLIPS), "JMA best-track class 2-6 (a clip: at its end)"
    ),
    PayloadField("pressure_hpa", _T.FLOAT, (FRAMES, CLIPS), "best-track central pressure"),
    PayloadField("wind_kt", _T.FLOAT, (FRAMES, CLIPS), "best-track maximum sustained wind", False),
    PayloadField("lat", _T.FLOAT, (FRAMES, CLIPS), "best-track storm centre latitude", False),
    PayloadField("lon", _T.FLOAT, (FRAMES, CLIPS), "best-track storm centre longitude", False),
)

#: Field -> the collections whose points carry it (a filter on another collection's field
#: is refused: it would match nothing)
FIELD_COLLECTIONS: dict[str, tuple[str, ...]] = {f.name: f.collections for f in PAYLOAD_FIELDS}

#: Fields whose payload index also gets payload-aware HNSW links (``enable_hnsw``): Qdrant
#: builds an extra subgraph per value block of each such field, which multiplies index build
#: time. Other indexed fields still filter (exactly below full_scan_threshold, with ACORN above).
#: Measured (tests/test_store.py, docs/design/store-tuning.md): with ACORN on, filtered
#: recall@10 >= 0.99 without any payload links, and at 100k points the build was faster and
#: the store half the size.
PAYLOAD_GRAPH_FIELDS: tuple[str, ...] = ()

#: Every filtered field and its index type (servers in strict mode refuse unindexed filters;
#: the embedded engine needs them for filtered HNSW).
PAYLOAD_INDEXES: dict[str, models.PayloadSchemaType] = {
    f.name: f.kind for f in PAYLOAD_FIELDS if f.indexed
}

#: What the index of an integer field serves, as Qdrant's (lookup, range) flags: a lookup
#: answers match conditions, a range index range conditions, and each costs memory for every
#: point. The time fields are filtered one way only (months/hours by match, the season by
#: range): at 100k points this cut the engine's anonymous memory after the load from 188 to
#: 111 MB (with ``year`` unindexed), bench/RESULTS.md 2026-11-29 "payload indexes". Fields not
#: listed get both.
INTEGER_INDEX_USES: dict[str, tuple[bool, bool]] = {
    "month": (True, False),
    "hour": (True, False),
    "day_of_year": (False, True),
}


def integer_index_uses(field_name: str) -> dict[str, bool]:
    """``lookup`` and ``range`` flags of the integer field's payload index (as keywords)."""
    lookup, range_ = INTEGER_INDEX_USES.get(field_name, (True, True))
    return {"lookup": lookup, "range": range_}


def time_payload(dt: datetime | str) -> dict[str, Any]:
    """The time fields of a payload: time (RFC 3339 UTC), year, month, day_of_year, hour, day."""
    t = parse_time(dt)
    return {
        "time": to_rfc3339(t),
        "year": t.year,
        "month": t.month,
        "day_of_year": t.timetuple().tm_yday,
        "hour": t.hour,
        "day": t.date().isoformat(),  # 4-digit year, as to_rfc3339
    }


def index_label(f: PayloadField) -> str:
    """How docs/reference/schemas.md names a field's index: ``-``, ``keyword``, ``integer
    (match)`` for a lookup-only integer index, ``integer (range)`` for a range-only one."""
    if not f.indexed:
        return "-"
    if f.kind != _T.INTEGER:
        return f.kind.value
    uses = integer_index_uses(f.name)
    if all(uses.values()):
        return "integer"
    return "integer (match)" if uses["lookup"] else "integer (range)"
