"""The search façade: ONE door for the CLI (``skysearch search ...``) and the HTTP service.

Three kinds of query, one result schema:

- clip (:meth:`Searcher.search_clip`): a query clip given by start time (``at`` + channel +
  length + gap; the catalog's clip, or one assembled from the frame catalog), by a catalog clip
  id, by frame files from outside the archive (preprocessed with the satellite's ingest
  profile to the working resolution), or by such frames already preprocessed (``pixels``: the
  service's uploads, decoded one at a time). The clip model is chosen to fit the clip spec
  (:meth:`Searcher.clip_model_for`, which reads no pixel). Optional
  exact re-rank of the top N by the ground-truth grid metric (``rerank``) and prediction
  augmentation (``augment``).
- text (:meth:`Searcher.search_text`) and image (:meth:`Searcher.search_image`): pass-throughs
  to the text-image model and the ``scenes`` collection.

Every search returns a :class:`SearchResult`; ``SearchResult.to_dict()`` is the JSON the CLI's
``--json`` prints and the service returns (``RESULT_SCHEMA`` names its version)::

    {"schema": "skysearch.search/1",
     "query": {"kind": "clip", "mode": "at"|"clip_id"|"frames", "clip_id", "satellite",
               "channels", "start", "end", "length", "gap_minutes", "model_id",
               "ranked_by": "vector"|"rerank"|"augment", "rerank": N, "augment": bool, ...}
              | {"kind": "text", "text", "model_id", ...} | {"kind": "image", "image", ...},
     "results": [{"rank": 1, "score": 0.97, "id": "<uuid>", "kind": "clip"|"scene",
                  "start": "2017-09-07T00:45:00Z"|null, "end": ...|null, "satellite", "channels",
                  "frame_ids": [[...per channel...]] (clips) | [...] (scenes), "length",
                  "gap_minutes", "source_path", "label", "dataset", "location" (scenes),
                  "vector_score": float|null,
                  "rerank_score": float|null}],
     "filters": {"start", "end", "months", "hours", "day_of_year", "channels", "satellites",
                 "exclude_around", "exclude_window_s", "datasets", "labels", "bbox", "k",
                 "one_per_day"},
     "timing_ms": {"load", "query", "embed", "search", "rerank", "augment", "total"}}

``score`` is the value the results are ordered by: cosine similarity of the vectors, the
grid-metric similarity when re-ranked (then ``vector_score`` keeps the cosine), or the fused
score when augmented (then ``vector_score`` is null). A :class:`Searcher` loads models and
opens the store once and may be shared by threads (models load under a lock; searches are
read-only).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from skysearch.config import Settings
from skysearch.errors import NotFoundError, UsageError
from skysearch.timeutil import parse_time, to_rfc3339

#: Version of the JSON result schema (bump on any incompatible change).
RESULT_SCHEMA = "skysearch.search/1"
#: A query time may sit this far from a frame/clip start and still pick it.
DEFAULT_TOLERANCE_MINUTES = 15
IMAGE_SUFFIXES = {".png", ".gif", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"}


# ---------------------------------------------------------------------------- request types
@dataclass(frozen=True)
class ClipQuery:
    """What the query clip is. Exactly one of ``at``, ``clip_id``, ``frames``, ``pixels``.

    - ``at``: start time (UTC) of the query clip; ``channels``/``satellite``/``length``/
      ``gap_minutes`` give its spec (unset: the clip model's).
    - ``clip_id``: a clip of the clip catalog.
    - ``frames``: frame files, or ONE folder of them, from outside the archive: L files per
      channel, ordered by the time in their names (the satellite's ingest profile) or by name.
    - ``pixels``: frames from outside the archive already at the working resolution (the
      ingest profile's preprocessing, ``skysearch.ingest.decode.working_frame``), uint8
      (C, L, H, W), channels in ``channels`` order, time order; ``start``: the time of the
      first frame, if known (needed by an exclusion window).
    """

    at: datetime | str | None = None
    clip_id: str | None = None
    frames: tuple[Path, ...] = ()
    channels: tuple[str, ...] = ()
    satellite: str | None = None
    length: int | None = None
    gap_minutes: int | None = None
    tolerance_minutes: int = DEFAULT_TOLERANCE_MINUTES
    pixels: np.ndarray | None = field(default=None, repr=False, compare=False)
    start: datetime | str | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if self.at is not None:
            set_(self, "at", parse_time(self.at))
        if self.start is not None:
            set_(self, "start", parse_time(self.start))
        set_(self, "frames", tuple(Path(p) for p in self.frames))
        chans = self.channels
        if isinstance(chans, str):
            chans = tuple(c for c in chans.split(","))
        set_(self, "channels", tuple(c.strip() for c in chans if c and c.strip()))
        if self.pixels is not None:
            self._check_pixels()
        given = sum(
            [self.at is not None, bool(self.clip_id), bool(self.frames), self.pixels is not None]
        )
        if given != 1:
            raise UsageError(
                "give the query clip one way: a start time ({at}), a clip id ({clip_id}) "
                "or frames ({frames})",
                params=["at", "clip_id", "frames"],
            )
        for name in ("length", "gap_minutes"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{name.replace('_minutes', '')} must be at least 1, got {value}")

    def _check_pixels(self) -> None:
        """Pixels are uint8 (C, L, H, W), C = the channels given, L = the length given; the
        length defaults to L."""
        pixels = self.pixels
        if pixels.dtype != np.uint8 or pixels.ndim != 4 or 0 in pixels.shape:
            raise UsageError(
                f"query pixels must be uint8 (channels, frames, height, width), got "
                f"{pixels.dtype} {pixels.shape}"
            )
        channels, length = pixels.shape[:2]
        if self.channels and len(self.channels) != channels:
            raise UsageError(
                f"query pixels hold {channels} channel(s), {len(self.channels)} named: "
                f"{','.join(self.channels)}"
            )
        if self.length is not None and self.length != length:
            raise UsageError(
                f"query pixels hold {length} frames, the length asked is {self.length}"
            )
        object.__setattr__(self, "length", length)


@dataclass(frozen=True)
class SearchOptions:
    """How to rank: re-rank the top ``rerank`` candidates by the grid metric (0 = off), fuse
    with the predicted future (``augment``), which models (None: the latest that fits)."""

    rerank: int = 0
    augment: bool = False
    augment_method: str = "rrf"  # measured best in eval augment (README, augmented queries)
    augment_beta: float = 0.5
    model_id: str | None = None
    predictor_id: str | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.rerank <= 10_000:
            raise UsageError(f"--rerank must be in 0..10000, got {self.rerank}")


# ---------------------------------------------------------------------------- result types
@dataclass
class ResultItem:
    """One hit. Fields that do not apply to a kind are None (clips have start/end/frame_ids;
    scenes have source_path/label, and start/end when the scene is a dated frame)."""

    rank: int
    score: float
    id: str
    kind: str
    start: str | None = None
    end: str | None = None
    satellite: str | None = None
    channels: list[str] = field(default_factory=list)
    frame_ids: list[Any] = field(default_factory=list)
    length: int | None = None
    gap_minutes: int | None = None
    source_path: str | None = None
    label: str | None = None
    dataset: str | None = None
    location: dict[str, float] | None = None
    vector_score: float | None = None
    rerank_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SearchResult:
    query: dict[str, Any]
    results: list[ResultItem]
    filters: dict[str, Any]
    timing_ms: dict[str, float]
    #: Query clip pixels (C, L, H, W) uint8 for a clip search (contact sheets); not in JSON.
    query_frames: np.ndarray | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": RESULT_SCHEMA,
            "query": self.query,
            "results": [r.to_dict() for r in self.results],
            "filters": self.filters,
            "timing_ms": {k: round(v, 2) for k, v in self.timing_ms.items()},
        }


class _Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}
        self._t0 = time.perf_counter()

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t) * 1000

    def done(self) -> dict[str, float]:
        self.ms["total"] = (time.perf_counter() - self._t0) * 1000
        return self.ms


@dataclass
class _QueryClip:
    """A resolved query clip: pixels + what is known about it."""

    frames: np.ndarray  # (C, L, H, W) uint8
    mode: str
    satellite: str
    channels: list[str]
    length: int
    gap_minutes: int
    start: datetime | None = None
    clip_id: str | None = None
    frame_ids: list[list[str]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        end = (
            self.start + timedelta(minutes=self.gap_minutes * (self.length - 1))
            if self.start
            else None
        )
        return {
            "kind": "clip",
            "mode": self.mode,
            "clip_id": self.clip_id,
            "satellite": self.satellite,
            "channels": self.channels,
            "start": to_rfc3339(self.start) if self.start else None,
            "end": to_rfc3339(end) if end else None,
            "length": self.length,
            "gap_minutes": self.gap_minutes,
            "frame_ids": self.frame_ids,
            "files": self.files,
        }


# ---------------------------------------------------------------------------- the façade
class Searcher:
    """Loads models and opens the store once; answers clip, text and image searches.

    ``store``: an open :class:`~skysearch.retrieval.store.base.VectorStore` to use (not closed by
    :meth:`close`); by default the settings' store is opened on first use.
    """

    def __init__(self, settings: Settings, store: Any = None, device: str | None = None) -> None:
        self.settings = settings
        self.workspace = settings.workspace
        self.device = device or settings.device
        self._store = store
        self._own_store = store is None
        self._lock = threading.RLock()
        self._clip_models: dict[str, tuple[Any, Any]] = {}
        self._predictors: dict[str, Any] = {}
        self._text_models: dict[str | None, Any] = {}
        self._frame_store: Any = None
        self._sketches: Any = None
        self._catalog: dict[tuple, tuple[float, dict[str, dict[str, Any]]]] = {}

    # ---- resources ---------------------------------------------------------------------
    @property
    def store(self) -> Any:
        with self._lock:
            if self._store is None:
                from skysearch.retrieval.store import open_store

                self._store = open_store(self.settings)
            return self._store

    def close(self) -> None:
        with self._lock:
            if self._store is not None and self._own_store:
                self._store.close()
            self._store = None

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def frame_store(self) -> Any:
        with self._lock:
            if self._frame_store is None:
                from skysearch.ingest.framestore import FrameStore

                self._frame_store = FrameStore(self.workspace)
            return self._frame_store

    def clip_model(self, model_id: str | None = None, spec: dict[str, Any] | None = None):
        """(ClipEmbedder, ModelRecord): ``model_id``, else the latest clip model whose training
        spec fits ``spec`` (satellite, channels, length, gap_minutes; unset parts match any)."""
        from skysearch.encoders import registry
        from skysearch.encoders.factory import load_clip_embedder

        with self._lock:
            if model_id is None:
                model_id = self._pick_clip_model(registry, spec or {})
            cached = self._clip_models.get(model_id)
            if cached is None:
                cached = load_clip_embedder(self.workspace, model_id, self.device)
                self._clip_models[model_id] = cached
            return cached

    def clip_model_for(
        self,
        satellite: str | None,
        channels: Sequence[str],
        length: int | None,
        gap_minutes: int | None,
        model_id: str | None = None,
    ) -> tuple[Any, Any]:
        """(ClipEmbedder, ModelRecord) that will embed a query clip of this spec (unset
        parts: any): ``model_id``, else the latest clip model that fits. An unknown satellite
        or channel is refused first. Reads no query pixel: callers check a query with it
        before decoding anything."""
        self._check_archive(satellite, channels)
        spec = {
            "satellite": satellite,
            "channels": list(channels) or None,
            "length": length,
            "gap_minutes": gap_minutes,
        }
        return self.clip_model(model_id, spec)

    def _pick_clip_model(self, registry: Any, spec: dict[str, Any]) -> str:
        records = registry.list_models(self.workspace, "clip")
        if not records:
            raise NotFoundError(
                f"no clip model trained yet in workspace {self.workspace.root}: run "
                "`skysearch train frames` then `skysearch train clips` and "
                "`skysearch index clips` (or `skysearch demo`)"
            )

        def fits(record: Any) -> bool:
            data = record.config.get("data", {})
            return all(
                value in (None, [], ()) or data.get(key) == value for key, value in spec.items()
            )

        fitting = [r for r in records if fits(r)]
        if not fitting:
            have = ", ".join(sorted({spec_text(r.config.get("data", {})) for r in records}))
            want = " ".join(
                f"--{key.replace('_minutes', '')} {','.join(v) if isinstance(v, list) else v}"
                for key, v in spec.items()
                if v not in (None, [], ())
            )
            raise NotFoundError(
                f"no clip model fits {want} (trained: {have}): build those clips and train one "
                f"(skysearch clips {want}; skysearch train frames {want}; skysearch train clips)"
                ", or query a trained spec"
            )
        return fitting[-1].model_id

    def _predictor(self, predictor_id: str | None, record: Any) -> Any:
        from skysearch.encoders.models.predictor import load_predictor
        from skysearch.encoders.registry import list_models, resolve

        with self._lock:
            if predictor_id is None:
                data = record.config["data"]
                fitting = [
                    r
                    for r in list_models(self.workspace, "predictor")
                    if r.config.get("satellite") == data["satellite"]
                    and list(r.config.get("channels", [])) == list(data["channels"])
                    and r.config.get("length") == data["length"]
                    and r.config.get("gap_minutes") == data["gap_minutes"]
                ]
                if not fitting:
                    raise NotFoundError(
                        f"--augment needs a predictor for {spec_text(data)} clips: train one "
                        f"with `skysearch train predictor --length {data['length']} --gap "
                        f"{data['gap_minutes']}`"
                    )
                predictor_id = fitting[-1].model_id
            if predictor_id not in self._predictors:
                rec = resolve(self.workspace, "predictor", predictor_id)
                self._predictors[predictor_id] = load_predictor(
                    rec.directory(self.workspace), self.device
                )[0]
            return self._predictors[predictor_id]

    def _clip_rows(
        self, satellite: str, channels: Sequence[str], length: int, gap: int
    ) -> dict[str, dict[str, Any]]:
        """clip_id -> catalog row of one clip spec (cached until the catalog changes)."""
        from skysearch.ingest.clips import read_clips

        key = (satellite, tuple(channels), length, gap)
        root = self.workspace.clips_catalog
        stamp = max((p.stat().st_mtime for p in root.glob("*/*/*.parquet")), default=0.0)
        with self._lock:
            cached = self._catalog.get(key)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        table = read_clips(self.workspace, satellite, list(channels), length, gap)
        rows = {r["clip_id"]: r for r in table.to_pylist()}
        with self._lock:
            self._catalog[key] = (stamp, rows)
        return rows

    # ---- clip search -------------------------------------------------------------------
    def search_clip(
        self, query: ClipQuery, filters: Any = None, options: SearchOptions | None = None
    ) -> SearchResult:
        """Clips like the query clip, best first (see the module docstring for the schema)."""
        from skysearch.retrieval.store.filters import SearchFilters
        from skysearch.retrieval.store.schema import CLIPS

        options = options or SearchOptions()
        filters = filters if filters is not None else SearchFilters()
        timer = _Timer()
        with timer("load"):
            if query.clip_id:  # the catalog row says the spec; checked below
                embedder, record = self.clip_model(options.model_id, {})
            else:
                spec = (query.satellite, query.channels, query.length, query.gap_minutes)
                embedder, record = self.clip_model_for(*spec, options.model_id)
            data = record.config["data"]
        with timer("query"):
            qclip = self._resolve_query(query, data)
        if (qclip.satellite, qclip.channels, qclip.length, qclip.gap_minutes) != (
            data["satellite"],
            list(data["channels"]),
            data["length"],
            data["gap_minutes"],
        ):
            if options.model_id is not None or not query.clip_id:
                raise UsageError(
                    f"clip model {record.model_id} embeds {spec_text(data)} clips, the query "
                    f"is a {spec_text(asdict(qclip))} clip: pick a fitting --model"
                )
            embedder, record = self.clip_model(
                None,
                {
                    "satellite": qclip.satellite,
                    "channels": qclip.channels,
                    "length": qclip.length,
                    "gap_minutes": qclip.gap_minutes,
                },
            )
        if filters.exclude_window > timedelta(0) and filters.exclude_around is None:
            if qclip.start is None:
                raise UsageError(
                    "--exclude-window needs the query's time: the frame files' names carry "
                    "none (query by --at or --clip-id, or filter with --between)"
                )
            from dataclasses import replace

            filters = replace(filters, exclude_around=qclip.start)
        store = self.store
        vname = record.model_id
        self._check_indexed(store, CLIPS, vname)
        with timer("embed"):
            vector = embedder.embed_clip(qclip.frames)
        fetch = max(filters.k, options.rerank)
        ranked_by = "vector"
        if options.augment:
            from skysearch.retrieval.search.augment import (
                AugmentOptions,
                augmented_search,
                future_vector,
            )

            with timer("augment"):
                predictor = self._predictor(options.predictor_id, record)
                future = future_vector(embedder, predictor, qclip.frames)
                aug = AugmentOptions(method=options.augment_method, beta=options.augment_beta)
                hits = augmented_search(
                    store, vector, future, fetch, filters, aug, CLIPS, vector_name=vname
                )
            ranked_by = "augment"
        else:
            with timer("search"):
                hits = store.search(CLIPS, vector, k=fetch, filters=filters, vector_name=vname)
        items = [self._clip_item(i + 1, h, data) for i, h in enumerate(hits)]
        if options.augment:  # hit scores are fused scores, not cosines
            for item in items:
                item.vector_score = None
        if options.rerank and items:
            with timer("rerank"):
                items = self._rerank(qclip, items)
            ranked_by = "rerank"
        items = items[: filters.k]
        for i, item in enumerate(items):
            item.rank = i + 1
        described = qclip.describe()
        described.update(
            model_id=record.model_id,
            ranked_by=ranked_by,
            rerank=options.rerank,
            augment=options.augment,
        )
        return SearchResult(described, items, filters.to_dict(), timer.done(), qclip.frames)

    def _check_indexed(self, store: Any, collection: str, vector_name: str) -> None:
        if collection not in store.collections():
            raise NotFoundError(
                f"nothing indexed yet in {store.where}: run `skysearch index {collection}`"
            )
        if vector_name not in store.vector_config(collection):
            raise NotFoundError(
                f"the {collection} collection has no vectors of model {vector_name}: run "
                f"`skysearch index {collection} --model {vector_name}`"
            )

    def _clip_item(self, rank: int, hit: Any, data: dict[str, Any]) -> ResultItem:
        p = hit.payload
        chans = p.get("channel", [])
        chans = [chans] if isinstance(chans, str) else list(chans)
        length = int(p.get("length", data["length"]))
        gap = int(p.get("gap_minutes", data["gap_minutes"]))
        start = parse_time(p["time"]) if p.get("time") else None
        row = self._clip_rows(p.get("satellite", data["satellite"]), chans, length, gap).get(
            p.get("clip_id", hit.id), {}
        )
        end = row.get("end") or (start + timedelta(minutes=gap * (length - 1)) if start else None)
        return ResultItem(
            rank=rank,
            score=float(hit.score),
            id=p.get("clip_id", hit.id),
            kind="clip",
            start=to_rfc3339(start) if start else None,
            end=to_rfc3339(end) if end else None,
            satellite=p.get("satellite"),
            channels=chans,
            frame_ids=row.get("frame_ids", []),
            length=length,
            gap_minutes=gap,
            source_path=p.get("source_path"),
            vector_score=float(hit.score),
        )

    def _rerank(self, qclip: _QueryClip, items: list[ResultItem]) -> list[ResultItem]:
        from skysearch.ingest.similarity import SketchStore
        from skysearch.retrieval.search.rerank import rerank

        with self._lock:
            if self._sketches is None:
                self._sketches = SketchStore(self.workspace)
        by_id = {item.id: item for item in items}
        ranked = rerank(
            self.workspace,
            qclip.clip_id if qclip.clip_id else qclip.frames,
            [item.id for item in items],
            store=self._sketches,
        )
        out = []
        for r in ranked:
            item = by_id[r.clip_id]
            item.rerank_score = float(r.similarity)
            item.score = float(r.similarity)
            out.append(item)
        return out

    # ---- query resolution --------------------------------------------------------------
    def _check_archive(self, satellite: str | None, channels: Sequence[str]) -> None:
        """NotFoundError naming what the archive has when a satellite or channel is unknown."""
        from skysearch.ingest.catalog import read_frames

        if not satellite and not channels:
            return
        table = read_frames(self.workspace, columns=["satellite", "channel"])
        have: dict[str, set[str]] = {}
        for sat, chan in zip(
            table["satellite"].to_pylist(), table["channel"].to_pylist(), strict=True
        ):
            have.setdefault(sat, set()).add(chan)
        if not have:
            raise NotFoundError(
                f"no frames in the catalog of {self.workspace.root}: "
                "run `skysearch ingest PATH` first"
            )
        listing = "; ".join(f"{s}: {','.join(sorted(c))}" for s, c in sorted(have.items()))
        if satellite and satellite not in have:
            raise NotFoundError(f"unknown satellite {satellite!r}: the archive has {listing}")
        known = set().union(*(have[s] for s in ([satellite] if satellite else have)))
        unknown = [c for c in channels if c not in known]
        if unknown:
            raise NotFoundError(
                f"unknown channel {','.join(unknown)}: the archive has {listing} "
                "(pass e.g. --channel " + sorted(known)[0] + ")"
            )

    def _resolve_query(self, query: ClipQuery, data: dict[str, Any]) -> _QueryClip:
        if query.clip_id:
            return self._query_by_id(query.clip_id)
        satellite = query.satellite or data["satellite"]
        channels = list(query.channels) or list(data["channels"])
        length = query.length or int(data["length"])
        gap = query.gap_minutes or int(data["gap_minutes"])
        if query.pixels is not None:
            return self._query_from_pixels(query.pixels, satellite, channels, gap, query.start)
        if query.frames:
            return self._query_from_files(query.frames, satellite, channels, length, gap)
        assert isinstance(query.at, datetime)
        return self._query_at(query.at, satellite, channels, length, gap, query.tolerance_minutes)

    def _query_by_id(self, clip_id: str) -> _QueryClip:
        import pyarrow.compute as pc
        from skysearch.ingest.clips import read_clips

        table = read_clips(self.workspace)
        found = table.filter(pc.equal(table["clip_id"], clip_id))
        if found.num_rows == 0:
            raise NotFoundError(
                f"clip {clip_id} is not in the clip catalog of {self.workspace.root}: "
                "list clips with `skysearch clips --json`, or query by --at TIME"
            )
        row = found.slice(0, 1).to_pylist()[0]
        return self._from_row(row, "clip_id")

    def _from_row(self, row: dict[str, Any], mode: str) -> _QueryClip:
        from skysearch.ingest.clips import clip_frames

        return _QueryClip(
            frames=clip_frames(self.workspace, row, self.frame_store),
            mode=mode,
            satellite=row["satellite"],
            channels=list(row["channels"]),
            length=int(row["length"]),
            gap_minutes=int(row["gap_minutes"]),
            start=parse_time(row["start"]),
            clip_id=row["clip_id"] if row.get("clip_id") else None,
            frame_ids=[list(ids) for ids in row["frame_ids"]],
        )

    def _query_at(
        self,
        at: datetime,
        satellite: str,
        channels: list[str],
        length: int,
        gap: int,
        tolerance: int,
    ) -> _QueryClip:
        import pyarrow as pa
        import pyarrow.compute as pc
        from skysearch.ingest.catalog import read_frames
        from skysearch.ingest.clips import assemble

        cols = ["frame_id", "satellite", "channel", "time"]
        frames = read_frames(self.workspace, satellite=satellite, columns=cols)
        if frames.num_rows == 0:
            raise NotFoundError(
                f"no {satellite} frames in the catalog of {self.workspace.root}: "
                "run `skysearch ingest PATH` first"
            )
        # The catalog's clip at that start, if the clip catalog has this spec.
        rows = self._clip_rows(satellite, channels, length, gap)
        tol = timedelta(minutes=tolerance)
        near = [r for r in rows.values() if abs(parse_time(r["start"]) - at) <= tol]
        if near:
            best = min(near, key=lambda r: abs(parse_time(r["start"]) - at))
            return self._from_row(best, "at")
        # Else assemble it from the frame catalog (any spec, no clip catalog needed).
        times = frames.filter(pc.equal(frames["channel"], channels[0]))["time"].to_pylist()
        first, last = min(times), max(times)
        span = timedelta(minutes=gap * (length - 1))
        if at < first - tol or at + span > last + tol:
            raise NotFoundError(
                f"{to_rfc3339(at)} is outside the archive: {satellite} {channels[0]} frames "
                f"cover {to_rfc3339(first)}..{to_rfc3339(last)}, and a {length}x{gap}m clip "
                f"must start by {to_rfc3339(last - span)}"
            )
        window = frames.filter(
            pc.and_(
                pc.greater_equal(frames["time"], pa.scalar(at - tol, frames["time"].type)),
                pc.less_equal(frames["time"], pa.scalar(at + span + tol, frames["time"].type)),
            )
        )
        clips, _ = assemble(window, satellite, channels, length, gap, tolerance)
        starts = [parse_time(s) for s in clips["start"].to_pylist()]
        candidates = [i for i, s in enumerate(starts) if abs(s - at) <= tol]
        if not candidates:
            raise NotFoundError(
                f"no complete {'+'.join(channels)} {length}x{gap}m clip starts at "
                f"{to_rfc3339(at)} (a frame is missing within +-{tolerance} min of a step): "
                "try another --at, or a larger --gap"
            )
        best = min(candidates, key=lambda i: abs(starts[i] - at))
        row = clips.slice(best, 1).to_pylist()[0]
        return self._from_row(row, "at")

    def query_profile(self, satellite: str, names: Sequence[str] = ()) -> Any:
        """The ingest profile that preprocesses query frames of ``satellite``: the first whose
        file-name pattern matches one of ``names``, else the satellite's first."""
        from skysearch.ingest.profiles import load_profiles

        profiles = [p for p in load_profiles().values() if p.satellite == satellite]
        if not profiles:
            raise UsageError(f"no ingest profile for satellite {satellite!r}")
        return next((p for p in profiles if any(p.match(n) for n in names)), profiles[0])

    def _query_from_files(
        self, paths: Sequence[Path], satellite: str, channels: list[str], length: int, gap: int
    ) -> _QueryClip:
        from skysearch.ingest.decode import Source, preprocess

        files = _expand_files(paths)
        profile = self.query_profile(satellite, [f.name for f in files])
        named: list[tuple[Any, str, Path]] = []  # (time or None, channel, path)
        for path in files:
            match = profile.match(path.name)
            named.append(
                (match.time if match else None, match.channel if match else channels[0], path)
            )
        per_channel: list[list[Path]] = []
        start = None
        for chan in channels:
            mine = [n for n in named if n[1] == chan]
            if all(n[0] is not None for n in mine):
                mine.sort(key=lambda n: n[0])
            else:
                mine.sort(key=lambda n: n[2].name)
            if len(mine) < length:
                raise UsageError(
                    f"the query needs {length} {chan} frames ({length}x{gap}m clips), got "
                    f"{len(mine)} file(s): pass {length} files or a folder holding them"
                )
            mine = mine[-length:]  # the most recent L frames
            if chan == channels[0] and mine[0][0] is not None:
                start = mine[0][0]
            per_channel.append([n[2] for n in mine])
        stack = []
        for chan_files in per_channel:
            decoded = []
            for path in chan_files:
                result = preprocess(Source(str(path)), profile)
                if result.frame is None:
                    raise UsageError(f"cannot use query frame {path}: {result.reason}")
                decoded.append(result.frame)
            stack.append(np.stack(decoded))
        qclip = self._query_from_pixels(np.stack(stack), satellite, channels, gap, start)
        qclip.files = [str(p) for chan_files in per_channel for p in chan_files]
        return qclip

    def _query_from_pixels(
        self,
        pixels: np.ndarray,
        satellite: str,
        channels: list[str],
        gap: int,
        start: datetime | None,
    ) -> _QueryClip:
        """A query clip of preprocessed frames (C, L, H, W), checked against the working
        resolution of the satellite's ingest profile."""
        width, height = self.query_profile(satellite).resolution
        want = (len(channels), pixels.shape[1], height, width)
        if pixels.shape != want:
            raise UsageError(
                f"query pixels are {pixels.shape}; a {satellite} {'+'.join(channels)} query "
                f"clip is (channels, frames, height, width) = {want}"
            )
        return _QueryClip(
            frames=pixels,
            mode="frames",
            satellite=satellite,
            channels=channels,
            length=pixels.shape[1],
            gap_minutes=gap,
            start=start,
        )

    # ---- text / image pass-throughs ------------------------------------------------------
    def text_model(self, model_id: str | None = None) -> Any:
        from skysearch.encoders.models.text_image import load_workspace_model

        with self._lock:
            if model_id not in self._text_models:
                self._text_models[model_id] = load_workspace_model(
                    self.workspace, model_id, self.device
                )
            return self._text_models[model_id]

    def search_text(
        self, text: str, filters: Any = None, model_id: str | None = None
    ) -> SearchResult:
        """Scenes matching free text (text-image model + ``scenes`` collection)."""
        if not text or not text.strip():
            raise UsageError("the text query is empty: e.g. skysearch search text 'a river'")
        timer = _Timer()
        with timer("load"):
            tim = self.text_model(model_id)
        with timer("embed"):
            vector = tim.encode_texts([text.strip()])[0]
        query = {"kind": "text", "text": text.strip(), "model_id": tim.model_id}
        return self._scene_search(vector, tim, query, filters, timer)

    def search_image(
        self,
        image: str | Path | Any | Sequence[Any],
        filters: Any = None,
        model_id: str | None = None,
        text: str | None = None,
    ) -> SearchResult:
        """Scenes like an image, or like several examples ("more like these"): paths or PIL
        images. The query is the mean of the examples' unit embeddings; with ``text``, the
        words' embedding is added with the same weight (examples and words in one query)."""
        single = isinstance(image, str | Path) or not isinstance(image, Iterable)
        timer = _Timer()
        with timer("load"):
            tim = self.text_model(model_id)
        names, vectors = [], []
        with timer("embed"):  # one example at a time: an iterator of uploads is never held
            for example in [image] if single else image:
                vectors.append(tim.encode_images([example])[0])
                names.append(str(example) if isinstance(example, str | Path) else "<upload>")
            if not vectors:
                raise UsageError("give at least one example image")
            vector = _unit(np.mean(vectors, axis=0))
            if text and text.strip():
                vector = _unit(vector + tim.encode_texts([text.strip()])[0])
        query = {"kind": "image", "image": names[0], "images": names, "model_id": tim.model_id}
        if text and text.strip():
            query["text"] = text.strip()
        return self._scene_search(vector, tim, query, filters, timer)

    def _scene_search(
        self, vector: np.ndarray, tim: Any, query: dict[str, Any], filters: Any, timer: _Timer
    ) -> SearchResult:
        from skysearch.retrieval.store.filters import SearchFilters
        from skysearch.retrieval.store.schema import SCENES

        filters = filters if filters is not None else SearchFilters()
        store = self.store
        if SCENES not in store.collections():
            raise NotFoundError(
                f"no scenes indexed yet in {store.where}: run `skysearch index scenes DIR`"
            )
        vname = tim.model_id or "untuned"  # as skysearch.retrieval.indexing.scenes names vectors
        if vname not in store.vector_config(SCENES):
            raise NotFoundError(
                f"the scenes collection has no vectors of text-image model {vname}: "
                "run `skysearch index scenes DIR` with that model"
            )
        with timer("search"):
            hits = store.search(SCENES, vector, filters=filters, vector_name=vname)
        items = [_scene_item(i + 1, h) for i, h in enumerate(hits)]
        return SearchResult(query, items, filters.to_dict(), timer.done())


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)


def _scene_item(rank: int, hit: Any) -> ResultItem:
    p = hit.payload
    chans = p.get("channel", [])
    chans = [chans] if isinstance(chans, str) else list(chans or [])
    frame_id = p.get("frame_id")
    return ResultItem(
        rank=rank,
        score=float(hit.score),
        id=hit.id,
        kind="scene",
        start=p.get("time"),
        end=p.get("time"),
        satellite=p.get("satellite"),
        channels=chans,
        frame_ids=[frame_id] if frame_id else [],
        source_path=p.get("source_path") or p.get("path"),
        label=p.get("label") or p.get("class") or p.get("caption"),
        dataset=p.get("dataset"),
        location=p.get("location"),
        vector_score=float(hit.score),
    )


def spec_text(spec: dict[str, Any]) -> str:
    """A clip spec in words: ``goes-east ir 6x60m``."""
    chans = spec.get("channels") or ["any channel"]
    chans = [chans] if isinstance(chans, str) else chans
    sat = spec.get("satellite") or "any satellite"
    length = spec.get("length") or "L"
    gap = spec.get("gap_minutes") or "G"
    return f"{sat} {'+'.join(chans)} {length}x{gap}m"


def _expand_files(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            out.append(path)
        else:
            raise UsageError(f"query frame {path} does not exist")
    if not out:
        raise UsageError(f"no image files in {', '.join(str(p) for p in paths)}")
    return out


# ---------------------------------------------------------------------------- one-shot doors
def search_clip(
    settings: Settings,
    query: ClipQuery,
    filters: Any = None,
    options: SearchOptions | None = None,
    device: str | None = None,
) -> SearchResult:
    """One clip search (opens and closes the store). Services keep a :class:`Searcher`."""
    with Searcher(settings, device=device) as searcher:
        return searcher.search_clip(query, filters, options)


def search_text(
    settings: Settings, text: str, filters: Any = None, model_id: str | None = None
) -> SearchResult:
    with Searcher(settings) as searcher:
        return searcher.search_text(text, filters, model_id)


def search_image(
    settings: Settings,
    image: str | Path | Sequence[str | Path],
    filters: Any = None,
    model_id: str | None = None,
    text: str | None = None,
) -> SearchResult:
    with Searcher(settings) as searcher:
        return searcher.search_image(image, filters, model_id, text)
