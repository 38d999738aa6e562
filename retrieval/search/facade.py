"""The search façade: ONE door for the CLI (``skysearch search ...``) and the HTTP service.

Four kinds of query, one result schema (:mod:`~skysearch.retrieval.search.results`):

- clip (:meth:`Searcher.search_clip`): a query clip (:class:`~.queries.ClipQuery`: by start
  time, catalog clip id, frame files or preprocessed pixels) is resolved to pixels
  (:mod:`~.queries`), embedded by the clip model that fits its spec (:mod:`~.models`;
  :meth:`Searcher.clip_model_for` picks it before any pixel is read) and ranked by the store,
  optionally re-ranked exactly by the grid metric (``rerank``) or fused with the predicted
  future (``augment``).
- frame (:meth:`Searcher.search_frame`): a query frame (:class:`~.frame_queries.FrameQuery`:
  by time + channel, catalog frame id, an image file or preprocessed pixels) is embedded by the
  single-channel frame model of its satellite and channel and ranked in the ``frames``
  collection, optionally re-ranked exactly by the grid metric on single frames.
- text (:meth:`Searcher.search_text`) and image (:meth:`Searcher.search_image`): the
  text-image model and the ``scenes`` collection (:mod:`~.scenes`).

A :class:`Searcher` loads models and opens the store once and may be shared by threads (models
load under a lock; searches are read-only).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from numbers import Integral
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skysearch.retrieval.search import scenes
from skysearch.retrieval.search.batching import QueryEncoder
from skysearch.retrieval.search.filter_checks import check_matchable
from skysearch.retrieval.search.frame_queries import FrameQuery, resolve_frame
from skysearch.retrieval.search.models import ModelCache, coverage_note, fits
from skysearch.retrieval.search.queries import ClipQuery, QueryClip, QueryResolver
from skysearch.retrieval.search.results import (
    ResultItem,
    SearchResult,
    Timer,
    clip_item,
    frame_item,
    spec_text,
)
from skysearch.retrieval.search.scenes import ImageLike

from skysearch.config import Settings, load_settings
from skysearch.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from skysearch.encoders.models.clip import ClipEmbedder
    from skysearch.encoders.models.text_image import TextImageModel
    from skysearch.encoders.registry import ModelRecord
    from skysearch.ingest.framestore import FrameStore
    from skysearch.ingest.profiles import Profile
    from skysearch.ingest.similarity import SketchStore
    from skysearch.retrieval.search.rerank import Reranked
    from skysearch.retrieval.store.base import VectorStore
    from skysearch.retrieval.store.filters import SearchFilters


@dataclass(frozen=True)
class SearchOptions:
    """How to rank: re-rank the top ``rerank`` candidates by the grid metric (0 = off), fuse
    with the predicted future (``augment``), which models (None: the latest that fits)."""

    rerank: int = 0
    augment: bool = False
    augment_method: str = "rrf"  # measured best in eval augment (docs/design/augmentation.md)
    augment_beta: float = 0.5
    model_id: str | None = None
    predictor_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.rerank, Integral) or isinstance(self.rerank, bool):
            raise UsageError(
                f"{{rerank}} must be a whole number, got {self.rerank!r}", params=["rerank"]
            )
        if not 0 <= self.rerank <= 10_000:
            raise UsageError(
                f"{{rerank}} must be in 0..10000, got {self.rerank}", params=["rerank"]
            )


class Searcher:
    """Loads models and opens the store once; answers clip, text and image searches.

    ``settings``: :func:`skysearch.config.load_settings`'s, or a workspace folder (the
    environment's other settings).

    ``store``: an open :class:`~skysearch.retrieval.store.base.VectorStore` to use (not closed by
    :meth:`close`); by default the settings' store is opened on first use.
    ``batch_window_ms`` > 0: text and image queries of concurrent threads share one forward
    pass, a batch waiting at most that long for the others (:mod:`~.batching`; the service).
    ``trace_text``: text queries through a trace of the text tower (:class:`ModelCache`).
    """

    def __init__(
        self,
        settings: Settings | str | Path,
        store: VectorStore | None = None,
        device: str | None = None,
        batch_window_ms: float = 0.0,
        trace_text: bool = False,
    ) -> None:
        if isinstance(settings, str | Path):  # a workspace folder, as in a notebook
            settings = load_settings(workspace=settings)
        elif not isinstance(settings, Settings):
            raise UsageError(
                "Searcher takes Settings (skysearch.config.load_settings) or a workspace "
                f"folder, not {type(settings).__name__}"
            )
        self.settings = settings
        self.workspace = settings.workspace.existing()  # a mistyped -w: said, not "ingest first"
        self.device = device or settings.device
        self.models = ModelCache(self.workspace, self.device, trace_text)
        self.queries = QueryResolver(self.workspace)
        self.encoder = QueryEncoder(batch_window_ms)
        self._store = store
        self._own_store = store is None
        self._lock = threading.Lock()
        self._sketches: SketchStore | None = None  # opened by the first re-rank
        self._scene_model_ids: dict[str | None, str] = {}

    # ---- resources ---------------------------------------------------------------------
    @property
    def store(self) -> VectorStore:
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
    def frame_store(self) -> FrameStore:
        return self.queries.frame_store

    def clip_model(
        self, model_id: str | None = None, spec: dict[str, Any] | None = None
    ) -> tuple[ClipEmbedder, ModelRecord]:
        """See :meth:`~skysearch.retrieval.search.models.ModelCache.clip_model`."""
        return self.models.clip_model(model_id, spec)

    def clip_model_for(
        self,
        satellite: str | None,
        channels: Sequence[str],
        length: int | None,
        gap_minutes: int | None,
        model_id: str | None = None,
    ) -> tuple[ClipEmbedder, ModelRecord]:
        """(ClipEmbedder, ModelRecord) that will embed a query clip of this spec (unset
        parts: any): ``model_id``, else the latest clip model that fits. An unknown satellite
        or channel is refused first. Reads no query pixel: callers check a query with it
        before decoding anything."""
        self.queries.check_archive(satellite, channels)
        spec = {
            "satellite": satellite,
            "channels": list(channels) or None,
            "length": length,
            "gap_minutes": gap_minutes,
        }
        return self.models.clip_model(model_id, spec)

    def query_profile(self, satellite: str, names: Sequence[str] = ()) -> Profile:
        """See :meth:`~skysearch.retrieval.search.queries.QueryResolver.profile`."""
        return self.queries.profile(satellite, names)

    def text_model(self, model_id: str | None = None) -> TextImageModel:
        return self.models.text_model(model_id)

    def scene_model_id(self, model_id: str | None = None) -> str:
        """The text-image model of scene searches (:func:`~.scenes.scene_model_id`); the choice
        for ``None`` is made once, like the models a :class:`Searcher` keeps."""
        with self._lock:
            chosen = self._scene_model_ids.get(model_id)
        if chosen is None:
            from skysearch.encoders.device import resolve_device

            resolve_device(self.device)  # a bad device setting is said first, as by other searches
            chosen = scenes.scene_model_id(self.store, self.workspace, model_id)
            with self._lock:
                self._scene_model_ids[model_id] = chosen
        return chosen

    def scene_model(self, model_id: str | None = None) -> TextImageModel:
        """The text-image model of scene searches, loaded (see :meth:`scene_model_id`)."""
        return self.models.text_model(self.scene_model_id(model_id))

    # ---- clip search -------------------------------------------------------------------
    def search_clip(
        self,
        query: ClipQuery,
        filters: SearchFilters | None = None,
        options: SearchOptions | None = None,
    ) -> SearchResult:
        """Clips like the query clip, best first (schema: :mod:`~.results`)."""
        from skysearch.retrieval.store.filters import SearchFilters
        from skysearch.retrieval.store.schema import CLIPS

        options = options or SearchOptions()
        filters = filters if filters is not None else SearchFilters()
        timer = Timer()
        with timer("load"):
            if query.clip_id:  # the catalog row says the spec; checked below
                embedder, record = self.clip_model(options.model_id, {})
            else:
                spec = (query.satellite, query.channels, query.length, query.gap_minutes)
                embedder, record = self.clip_model_for(*spec, options.model_id)
            self.queries.check_filters(filters)  # after the query's own: its message is better
            data = record.config["data"]
        with timer("query"):
            qclip = self.queries.resolve(query, data, filters)
        if not fits(record, qclip.spec, any_satellite=options.model_id is not None):
            if options.model_id is not None or not query.clip_id:
                raise UsageError(
                    f"clip model {record.model_id} embeds {spec_text(data)} clips, the query "
                    f"is a {spec_text(qclip.spec)} clip: pick a fitting {{model_id}}",
                    params=["model_id"],
                )
            embedder, record = self.clip_model(None, qclip.spec)
        filters = self._exclude_query_time(filters, qclip.start)
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
                predictor = self.models.predictor(options.predictor_id, record)
                future = future_vector(embedder, predictor, qclip.frames)
                aug = AugmentOptions(method=options.augment_method, beta=options.augment_beta)
                hits = augmented_search(
                    store, vector, future, fetch, filters, aug, CLIPS, vector_name=vname
                )
            ranked_by = "augment"
        else:
            with timer("search"):
                hits = store.search(CLIPS, vector, k=fetch, filters=filters, vector_name=vname)
        if not hits:
            check_matchable(store, CLIPS, filters, vname)
        items = [clip_item(i + 1, h, data, self.queries.clip_rows) for i, h in enumerate(hits)]
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
            **coverage_note(self.workspace, record, qclip.satellite, filters.satellites),
        )
        return SearchResult(described, items, filters.to_dict(), timer.done(), qclip.frames)

    @staticmethod
    def _exclude_query_time(filters: SearchFilters, start: datetime | None) -> SearchFilters:
        """An exclusion window without its own centre is centred on the query's time."""
        if filters.exclude_window <= timedelta(0) or filters.exclude_around is not None:
            return filters
        if start is None:
            raise UsageError(
                "{exclude_window} needs the query's time: the files' names carry none "
                "(query by {at}, or filter by a time range instead)",
                params=["exclude_window", "at"],
            )
        return replace(filters, exclude_around=start)

    @staticmethod
    def _check_indexed(store: VectorStore, collection: str, vector_name: str) -> None:
        if collection not in store.collections():
            raise NotFoundError(
                f"nothing indexed yet in {store.where}: run `skysearch index {collection}`"
            )
        if vector_name not in store.vector_config(collection):
            raise NotFoundError(
                f"the {collection} collection has no vectors of model {vector_name}: run "
                f"`skysearch index {collection} --model {vector_name}`"
            )

    @property
    def sketches(self) -> SketchStore:
        """The workspace's frame sketches (opened by the first re-rank)."""
        from skysearch.ingest.similarity import SketchStore

        with self._lock:
            if self._sketches is None:
                self._sketches = SketchStore(self.workspace)
            return self._sketches

    def _rerank(self, qclip: QueryClip, items: list[ResultItem]) -> list[ResultItem]:
        """The items in grid-metric order, scored by it (the vector score kept aside)."""
        from skysearch.retrieval.search.rerank import rerank

        ranked = rerank(
            self.workspace,
            qclip.clip_id if qclip.clip_id else qclip.frames,
            [item.id for item in items],
            store=self.sketches,
        )
        return _reordered(items, ranked)

    # ---- frame search ------------------------------------------------------------------
    def search_frame(
        self,
        query: FrameQuery,
        filters: SearchFilters | None = None,
        options: SearchOptions | None = None,
    ) -> SearchResult:
        """Archive frames like the query frame, best first (schema: :mod:`~.results`)."""
        import torch
        from skysearch.encoders.factory import frame_channel
        from skysearch.retrieval.search.rerank import rerank_frames
        from skysearch.retrieval.store.filters import SearchFilters
        from skysearch.retrieval.store.schema import FRAMES

        options = options or SearchOptions()
        if options.augment:
            raise UsageError(
                "{augment} predicts the next clip: it applies to clip searches",
                params=["augment"],
            )
        filters = filters if filters is not None else SearchFilters()
        timer = Timer()
        with timer("load"):
            self.queries.check_archive(query.satellite, [query.channel] if query.channel else [])
            self.queries.check_filters(filters)
            encoder, record = self.models.frame_model(
                options.model_id, query.satellite, query.channel
            )
            data = record.config["data"]
            channel = frame_channel(record, "frame search")
        with timer("query"):
            qframe = resolve_frame(self.queries, query, data, channel, filters)
        spec = {"satellite": qframe.satellite, "channels": [qframe.channel]}
        if not fits(record, spec, any_satellite=options.model_id is not None):
            if options.model_id is not None:
                raise UsageError(
                    f"frame model {record.model_id} embeds {data['satellite']} "
                    f"{channel} frames, the query is a {qframe.satellite} "
                    f"{qframe.channel} frame: pick a fitting {{model_id}}",
                    params=["model_id"],
                )
            encoder, record = self.models.frame_model(None, qframe.satellite, qframe.channel)
        filters = self._exclude_query_time(filters, qframe.time)
        store = self.store
        self._check_indexed(store, FRAMES, record.model_id)
        with timer("embed"), torch.no_grad():
            device = next(encoder.parameters()).device
            pixels = torch.tensor(qframe.pixels)[None, None].to(device)
            vector = encoder(pixels)[0].cpu().numpy()
        with timer("search"):
            hits = store.search(
                FRAMES,
                vector,
                k=max(filters.k, options.rerank),
                filters=filters,
                vector_name=record.model_id,
            )
        if not hits:
            check_matchable(store, FRAMES, filters, record.model_id)
        items = [frame_item(i + 1, h) for i, h in enumerate(hits)]
        ranked_by = "vector"
        if options.rerank and items:
            with timer("rerank"):
                ids = [item.id for item in items]
                items = _reordered(
                    items, rerank_frames(self.sketches, qframe.pixels, ids, qframe.channel)
                )
            ranked_by = "rerank"
        items = items[: filters.k]
        for i, item in enumerate(items):
            item.rank = i + 1
        described = qframe.describe()
        described.update(
            model_id=record.model_id,
            ranked_by=ranked_by,
            rerank=options.rerank,
            **coverage_note(self.workspace, record, qframe.satellite, filters.satellites),
        )
        return SearchResult(
            described, items, filters.to_dict(), timer.done(), qframe.pixels[None, None]
        )

    # ---- text / image pass-throughs ------------------------------------------------------
    def search_text(
        self, text: str, filters: SearchFilters | None = None, model_id: str | None = None
    ) -> SearchResult:
        """Scenes matching free text (text-image model + ``scenes`` collection)."""
        text = scenes.query_text(text)
        timer = Timer()
        with timer("load"):
            tim = self.models.text_encoder(self.scene_model_id(model_id))
        with timer("embed"):
            vector, query = scenes.text_query(self.encoder, tim, text)
        return scenes.search_scenes(self.store, vector, tim, query, filters, timer)

    def search_image(
        self,
        image: ImageLike | Iterable[ImageLike],
        filters: SearchFilters | None = None,
        model_id: str | None = None,
        text: str | None = None,
    ) -> SearchResult:
        """Scenes like an image, or like several examples ("more like these"): paths or PIL
        images, optionally with words (:func:`~.scenes.example_query`)."""
        timer = Timer()
        with timer("load"):
            tim = self.scene_model(model_id)
        with timer("embed"):
            vector, query = scenes.example_query(self.encoder, tim, image, text)
        return scenes.search_scenes(self.store, vector, tim, query, filters, timer)


def _reordered(items: list[ResultItem], ranked: list[Reranked]) -> list[ResultItem]:
    """The items in re-ranked order, scored by the grid metric (the vector score kept aside)."""
    by_id = {item.id: item for item in items}
    out = []
    for r in ranked:
        item = by_id[r.clip_id]
        item.rerank_score = item.score = float(r.similarity)
        out.append(item)
    return out


# ---------------------------------------------------------------------------- one-shot doors
def search_clip(
    settings: Settings,
    query: ClipQuery,
    filters: SearchFilters | None = None,
    options: SearchOptions | None = None,
    device: str | None = None,
) -> SearchResult:
    """One clip search (opens and closes the store). Services keep a :class:`Searcher`."""
    with Searcher(settings, device=device) as searcher:
        return searcher.search_clip(query, filters, options)


def search_frame(
    settings: Settings,
    query: FrameQuery,
    filters: SearchFilters | None = None,
    options: SearchOptions | None = None,
    device: str | None = None,
) -> SearchResult:
    """One frame search (opens and closes the store). Services keep a :class:`Searcher`."""
    with Searcher(settings, device=device) as searcher:
        return searcher.search_frame(query, filters, options)


def search_text(
    settings: Settings, text: str, filters: SearchFilters | None = None, model_id: str | None = None
) -> SearchResult:
    """One text search (opens and closes the store)."""
    with Searcher(settings) as searcher:
        return searcher.search_text(text, filters, model_id)


def search_image(
    settings: Settings,
    image: ImageLike | Sequence[ImageLike],
    filters: SearchFilters | None = None,
    model_id: str | None = None,
    text: str | None = None,
) -> SearchResult:
    """One image search (opens and closes the store)."""
    with Searcher(settings) as searcher:
        return searcher.search_image(image, filters, model_id, text)
