"""The search service's logic, under the HTTP layer (``skysearch.retrieval.service.app``).

One :class:`SearchService` per process. :meth:`SearchService.start` opens the store, indexes
the frame and clip catalogs by id and loads the models ONCE, in a background thread, so the
HTTP server answers ``/health`` at once and ``/ready`` says when loading is done; requests
never load anything (the states, and recovery after a repair: ``lifecycle``). Searches go
through the façade (:class:`skysearch.retrieval.search.Searcher`), so results are exactly the
CLI's ``--json`` schema.

Concurrency: the embedded store (qdrant-edge) is locked to ONE process, so the service runs one
process and answers requests from a thread pool; searches run in parallel (the façade is
shared by threads; open_clip's Hugging Face tokenizer sends the same truncation/padding settings
on every call, so concurrent calls do not mutate it: 4,000 calls from 8 threads, no error;
tests compare concurrent answers with sequential ones). Concurrent text and image queries
share one forward pass (``search.batching``; ``batch_window_ms`` caps the wait), through a
trace of the text tower (``trace_text``: no Python per module, the GIL free meanwhile). Torch runs
ONE intra-op thread per inference by default, so concurrent batches use the cores side by side
and OpenMP threads do not spin against each other on a busy machine (2 threads: ~10x the CPU).
For several processes or hosts, point every instance at a Qdrant server (``QDRANT_URL``)
instead of the embedded store.

Nothing from a request becomes a filesystem path: frame and clip ids must be UUIDs and are
looked up in the frame and clip catalogs; pixels come from the workspace's frame store. The
catalogs (and the frame store's index) are read at start-up and read again when their files
change (``catalog_stamp``: one stat per catalog file a request), so frames and clips that
``skysearch ingest``, ``clips`` or ``update`` add while the service runs are served without a
restart.

Uploaded query frames are never written to a file by the service (the query API takes
decoded pixels) and cost nothing before they can be served: the clip model (so the spec and
the satellite's ingest profile) is resolved first; then every upload's header is checked
(bytes, format, the profile's frame sizes, a per-request pixel budget); only then is each
frame decoded, preprocessed to the working resolution and dropped, one at a time, so a
request holds at most one full-size image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skysearch.retrieval.service.animation import (
    ANIMATION_MAX,
    CACHE_BYTES,
    BytesCache,
    animated_webp,
)
from skysearch.retrieval.service.catalogs import Catalogs
from skysearch.retrieval.service.lifecycle import Lifecycle, Readiness
from skysearch.retrieval.service.scene_images import scene_png
from skysearch.retrieval.service.uploads import (
    Upload,
    UploadLimits,
    check_each_once,
    in_time_order,
    open_image,
    validate_image,
    working_frames,
)
from skysearch.retrieval.service.warmup import warm_up
from skysearch.retrieval.service.wire import (
    MAX_EXAMPLE_IMAGES,
    MAX_FRAMES,
    MAX_K,
    MAX_RERANK,
    THUMB_DEFAULT,
)
from skysearch.retrieval.store.filters import SearchFilters

from skysearch.config import Settings
from skysearch.errors import SkySearchError, StoreError, UsageError

BATCH_WINDOW_MS = 10.0  # longest a query waits for others to share its forward pass


@dataclass(frozen=True)
class ServiceLimits:
    """Request limits. ``max_request_bytes`` caps a whole request body (all uploads);
    ``max_request_pixels`` the pixels of all uploaded query frames (as their headers state,
    checked before any is decoded; 48 COMS frames of 1500x1300 are 94 M)."""

    max_k: int = MAX_K
    max_rerank: int = MAX_RERANK
    max_frames: int = MAX_FRAMES
    max_request_bytes: int = 64 * 1024 * 1024
    max_request_pixels: int = 100_000_000
    upload: UploadLimits = field(default_factory=UploadLimits)
    animation_cache_bytes: int = CACHE_BYTES


class SearchService:
    """Store, catalogs and models of one workspace, loaded once; everything the API serves."""

    def __init__(
        self,
        settings: Settings,
        limits: ServiceLimits | None = None,
        device: str | None = None,
        torch_threads: int | None = 1,
        batch_window_ms: float = BATCH_WINDOW_MS,
        trace_text: bool = True,
    ) -> None:
        self.settings = settings
        self.batch_window_ms = batch_window_ms
        self.trace_text = trace_text
        self.limits = limits or ServiceLimits()
        self.device = device
        self.torch_threads = torch_threads
        self.life = Lifecycle(self._load_all, self._check_intact, _check_damage)
        self._searcher: Any = None
        self.catalogs = Catalogs(settings.workspace, lambda: self._searcher.frame_store)
        self.animations = BytesCache(self.limits.animation_cache_bytes)

    # ---- lifecycle (the state machine: lifecycle.Lifecycle) -------------------------------
    def start(self, background: bool = True) -> None:
        """Load everything; in a daemon thread when ``background`` (readiness tells when)."""
        self.life.start(background)

    def wait_ready(self, timeout: float | None = None) -> Readiness:
        """Block until loading has ended (tests, the bench); returns the readiness."""
        self.life.wait(timeout)
        return self.readiness()

    def _load_all(self) -> dict[str, str]:
        workspace = self.settings.workspace.existing()
        if self.torch_threads:
            import torch

            torch.set_num_threads(self.torch_threads)
        self.open_store()
        self.catalogs.get("frame")
        self.catalogs.get("clip")
        searches = warm_up(self._searcher, self.catalogs, workspace.root)
        return searches | {"image": searches["text"]}

    def open_store(self) -> Any:
        """Open the store and every collection in it, now; the façade over them. The embedded
        engine locks each collection to one process: a workspace another process serves (or
        indexes into) is a StoreError here, before anything else loads, so the service never
        reports ready with nothing searchable. ``skysearch serve`` calls it before listening
        (one ``error:`` line, exit 2); start-up calls it otherwise (``/ready``: failed)."""
        from skysearch.retrieval.search import Searcher

        if self._searcher is not None:
            return self._searcher
        searcher = Searcher(
            self.settings,
            device=self.device,
            batch_window_ms=self.batch_window_ms,
            trace_text=self.trace_text,
        )
        try:
            for name in searcher.store.collections():
                searcher.store.info(name)
        except BaseException:
            searcher.close()
            raise
        self._searcher = searcher
        return searcher

    def close(self) -> None:
        self.life.close()  # after loading has ended
        if self._searcher is not None:
            self._searcher.close()
            self._searcher = None

    # ---- readiness ------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.life.ready

    def note_damage(self, exc: SkySearchError) -> None:
        """A request met a damaged workspace file (``DamagedError``): ``/ready`` answers not
        ready until the start-up checks pass again (after ``skysearch repair``)."""
        self.life.note_damage(exc)

    def _check_intact(self) -> None:
        """The cheap checks of the workspace's files, and the model registry (every search
        reads it): a ``StoreError`` naming a damaged one."""
        from skysearch.encoders.registry import list_models
        from skysearch.ingest.integrity import ensure_intact

        ensure_intact(self.settings.workspace)
        list_models(self.settings.workspace)

    def readiness(self) -> Readiness:
        """What ``/ready`` reports; never raises: a store that stopped answering after
        start-up (a Qdrant server gone), or a workspace file a request found damaged, is
        reported as failed, with the reason."""
        life = self.life
        life.load_when_repaired()
        out = Readiness(
            ready=life.ready,
            state=life.state,
            detail=life.detail,
            load_seconds=life.load_seconds,
            searches=dict(life.searches),
        )
        if self.ready:
            out.store = self._searcher.store.where
            try:
                out.collections = {c.name: c.points for c in self.collections()}
            except SkySearchError as exc:
                out.ready, out.state, out.detail = False, "failed", f"store unavailable: {exc}"
            damage = life.damage_remains()
            if damage is not None:
                out.ready, out.state, out.detail = False, "failed", damage
        return out

    def require_ready(self) -> None:
        """StoreError (-> 503) until start-up loading is done."""
        self.life.load_when_repaired()
        if not self.ready:
            raise StoreError(f"service not ready ({self.life.state}): {self.life.detail}")

    # ---- collections and metadata ---------------------------------------------------------
    def collections(self) -> list[Any]:
        """CollectionInfo of every collection in the store, by name."""
        self.require_ready()
        store = self._searcher.store
        return [store.info(name) for name in sorted(store.collections())]

    def frame(self, frame_id: str) -> dict[str, Any]:
        """A frame's catalog metadata."""
        self.require_ready()
        return self.catalogs.frame(frame_id)

    def clip(self, clip_id: str) -> dict[str, Any]:
        """A clip's catalog metadata, with its frames' ids per channel."""
        self.require_ready()
        return self.catalogs.clip(clip_id)

    def frame_thumbnail(self, frame_id: str, size: int = THUMB_DEFAULT) -> bytes:
        """The frame at working resolution as a grey PNG, longest side <= ``size``."""
        self.require_ready()
        return self.catalogs.frame_thumbnail(frame_id, size)

    def clip_thumbnail(self, clip_id: str, size: int = THUMB_DEFAULT) -> bytes:
        """The clip's frames (first channel, time left to right) as one PNG strip."""
        self.require_ready()
        return self.catalogs.clip_thumbnail(clip_id, size)

    def scene_thumbnail(self, scene_id: str, size: int = THUMB_DEFAULT) -> bytes:
        """A scene's image (the file the ``scenes`` collection indexed) as PNG, longest side
        <= ``size``. The path comes from the store's payload, never from the request."""
        self.require_ready()
        return scene_png(self._searcher.store, scene_id, size)

    def clip_animation(self, clip_id: str, size: int = THUMB_DEFAULT) -> bytes:
        """The clip's frames (first channel) as a looping animated WebP, longest side <=
        ``size``; cached (:attr:`animations`, bounded in bytes) while the frame catalog is
        unchanged."""
        self.require_ready()
        if size > ANIMATION_MAX:
            raise UsageError(f"animation size must be at most {ANIMATION_MAX}, got {size}")
        cid = self.catalogs.clip(clip_id)["clip_id"]  # 400/404 before the cache is touched
        key = (cid, size, self.catalogs.stamp("frame"))  # frames ingested again: drawn again
        return self.animations.get(
            key, lambda: animated_webp(self.catalogs.clip_frames(cid, size)[1])
        )

    def archive(self) -> dict[str, Any]:
        """What the workspace's catalogs hold (counts, time range, satellites, clip specs) and
        its registered models."""
        from skysearch.encoders.registry import list_models

        self.require_ready()
        models = [
            {"model_id": m.model_id, "kind": m.kind, "created": m.created}
            for m in list_models(self.settings.workspace)
        ]
        return {**self.catalogs.archive(), "models": models}

    # ---- searches (the façade; results are SearchResult.to_dict(), the CLI's --json) -------
    def _check(self, filters: SearchFilters, rerank: int = 0, frames: bool = True) -> None:
        """Limits; with ``frames``, the frame catalog read again if it changed (a clip or
        frame query may read frames ingested since the last request; scenes need none)."""
        self.require_ready()
        if frames:
            self.catalogs.get("frame")
        if filters.k > self.limits.max_k:
            raise UsageError(f"k must be at most {self.limits.max_k}, got {filters.k}")
        if rerank > self.limits.max_rerank:
            raise UsageError(f"rerank must be at most {self.limits.max_rerank}, got {rerank}")

    def search_text(
        self, text: str, filters: SearchFilters, model_id: str | None = None
    ) -> dict[str, Any]:
        """Scenes matching free text."""
        self._check(filters, frames=False)
        return self._searcher.search_text(text, filters, model_id).to_dict()

    def search_image(
        self,
        upload: Upload | list[Upload],
        filters: SearchFilters,
        model_id: str | None = None,
        text: str | None = None,
    ) -> dict[str, Any]:
        """Scenes like one or several uploaded images (each validated before decoding),
        optionally combined with words."""
        self._check(filters, frames=False)
        uploads = upload if isinstance(upload, list) else [upload]
        if not uploads or len(uploads) > MAX_EXAMPLE_IMAGES:
            raise UsageError(f"give 1 to {MAX_EXAMPLE_IMAGES} example images, got {len(uploads)}")
        for u in uploads:  # every header checked before any pixel is decoded
            open_image(u.data, f"upload {u.name!r}", self.limits.upload).close()
        # decoded one at a time and dropped once embedded: memory does not grow with examples
        images = (validate_image(u.data, u.name, self.limits.upload).image for u in uploads)
        result = self._searcher.search_image(images, filters, model_id, text).to_dict()
        result["query"]["image"] = uploads[0].name
        result["query"]["images"] = [u.name for u in uploads]
        return result

    def search_clip(
        self, query: Any, filters: SearchFilters, options: Any = None
    ) -> dict[str, Any]:
        """Clips like a query clip given by time or clip id (``search.ClipQuery``)."""
        self._check(filters, options.rerank if options else 0)
        if query.frames:
            raise UsageError("query frames must be uploaded (POST /search/clip/frames)")
        return self._searcher.search_clip(query, filters, options).to_dict()

    def search_clip_frames(
        self,
        uploads: Sequence[Upload],
        satellite: str | None,
        channel: str | None,
        gap_minutes: int | None,
        filters: SearchFilters,
        options: Any = None,
    ) -> dict[str, Any]:
        """Clips like a clip made of uploaded frames (one channel, in time order)."""
        from skysearch.retrieval.search import ClipQuery, SearchOptions, spec_text

        options = options or SearchOptions()
        self._check(filters, options.rerank)
        if not uploads:
            raise UsageError("upload the query clip's frames (one file per time step)")
        if len(uploads) > self.limits.max_frames:
            raise UsageError(
                f"{len(uploads)} frames uploaded; the limit is {self.limits.max_frames}"
            )
        check_each_once(uploads, self.limits.upload)
        channels = [channel] if channel else []
        _, record = self._searcher.clip_model_for(
            satellite, channels, len(uploads), gap_minutes, options.model_id
        )
        data = record.config["data"]
        if len(data["channels"]) != 1 or data["length"] != len(uploads):
            raise UsageError(
                f"clip model {record.model_id} embeds {spec_text(data)} clips; "
                f"{len(uploads)} frames of one channel were uploaded"
            )
        query_satellite = satellite or data["satellite"]  # a cross-satellite model: any of its
        profile = self._searcher.query_profile(query_satellite, [u.name for u in uploads])
        uploads, start = in_time_order(uploads, profile, data)
        query = ClipQuery(
            pixels=working_frames(
                uploads, profile, self.limits.upload, self.limits.max_request_pixels
            )[None],
            satellite=query_satellite,
            channels=tuple(data["channels"]),
            gap_minutes=data["gap_minutes"],
            start=start,
        )
        result = self._searcher.search_clip(query, filters, options).to_dict()
        result["query"]["files"] = [u.name for u in uploads]
        return result

    def search_frame(
        self, query: Any, filters: SearchFilters, options: Any = None
    ) -> dict[str, Any]:
        """Frames like a query frame given by time or frame id (``search.FrameQuery``)."""
        self._check(filters, options.rerank if options else 0)
        if query.file is not None:
            raise UsageError("a query frame file must be uploaded (POST /search/frame/upload)")
        return self._searcher.search_frame(query, filters, options).to_dict()

    def search_frame_upload(
        self,
        upload: Upload,
        satellite: str | None,
        channel: str | None,
        filters: SearchFilters,
        options: Any = None,
    ) -> dict[str, Any]:
        """Frames like one uploaded frame: the frame model (so the satellite's ingest profile)
        is resolved before the upload is looked at, as for uploaded clips."""
        from skysearch.retrieval.search import FrameQuery, SearchOptions

        options = options or SearchOptions()
        self._check(filters, options.rerank)
        self._searcher.queries.check_archive(satellite, [channel] if channel else [])
        _, record = self._searcher.models.frame_model(options.model_id, satellite, channel)
        data = record.config["data"]
        query_satellite = satellite or data["satellite"]  # a cross-satellite model: any of its
        profile = self._searcher.query_profile(query_satellite, [upload.name])
        match = profile.match(upload.name)
        limits = self.limits
        pixels = working_frames([upload], profile, limits.upload, limits.max_request_pixels)[0]
        query = FrameQuery(
            pixels=pixels,
            satellite=query_satellite,
            channel=channel or (match.channel if match else data["channels"][0]),
            start=match.time if match else None,
        )
        result = self._searcher.search_frame(query, filters, options).to_dict()
        result["query"]["files"] = [upload.name]
        return result


def _check_damage(exc: SkySearchError) -> None:
    """A frame row a search found damaged, read again (the start-up checks do not read it)."""
    from skysearch.ingest.framestore import check_row

    if getattr(exc, "row", None) is not None:
        check_row(Path(exc.path), exc.row)  # type: ignore[attr-defined]
