"""A small typed API for applications: open the store from configuration, search clips, frames
or scenes with filters, get typed results.

    from skysearch.retrieval.store.application import SkyStore
    from skysearch.retrieval.store.filters import SearchFilters

    with SkyStore.open(workspace="ws") as sky:            # or qdrant_url="http://..."
        hits = sky.search_clips(vector, SearchFilters(start=..., channels=("ir",), k=20),
                                model_id="clipenc-v1")
        for h in hits:
            print(h.time, h.satellite, h.channels, h.score)

Applications that prefer raw Qdrant can query the same collections with any Qdrant client; the
schema is in ``skysearch.retrieval.store.schema`` and docs/reference/schemas.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from skysearch.retrieval.store.base import Hit, VectorLike, VectorStore
from skysearch.retrieval.store.factory import open_store
from skysearch.retrieval.store.filters import SearchFilters
from skysearch.retrieval.store.schema import CLIPS, FRAMES, SCENES

from skysearch.config import load_settings
from skysearch.timeutil import parse_time


@dataclass(frozen=True)
class TypedHit:
    """A store hit with its payload's time, satellite and channels typed. ``channels`` is
    always a list (one entry for a frame). Not the façade's ``SearchResult``: that one is a
    whole search (query, shaped results, filters, timing) in the layer above."""

    id: str
    score: float
    time: datetime
    satellite: str
    channels: list[str]
    payload: dict[str, Any]

    @classmethod
    def from_hit(cls, hit: Hit) -> TypedHit:
        p = hit.payload
        channel = p.get("channel", [])
        return cls(
            id=hit.id,
            score=hit.score,
            time=parse_time(p["time"]),
            satellite=str(p.get("satellite", "")),
            channels=list(channel) if isinstance(channel, list) else [str(channel)],
            payload=p,
        )


class SkyStore:
    """Clips / frames / scenes search over any backend, from configuration."""

    def __init__(self, store: VectorStore) -> None:
        self.store = store

    @classmethod
    def open(cls, workspace: str | Path | None = None, qdrant_url: str | None = None) -> SkyStore:
        """Embedded store of the workspace, or the Qdrant server at ``qdrant_url``/QDRANT_URL."""
        return cls(open_store(load_settings(workspace=workspace, qdrant_url=qdrant_url)))

    def __enter__(self) -> SkyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    def _search(
        self,
        collection: str,
        vector: VectorLike,
        filters: SearchFilters | None,
        vector_name: str | None,
    ) -> list[TypedHit]:
        hits = self.store.search(
            collection, vector, filters=filters or SearchFilters(), vector_name=vector_name
        )
        return [TypedHit.from_hit(h) for h in hits]

    def search_clips(
        self, vector: VectorLike, filters: SearchFilters | None = None, model_id: str | None = None
    ) -> list[TypedHit]:
        """Clips closest to a clip embedding (vector name = clip encoder's model id)."""
        return self._search(CLIPS, vector, filters, model_id)

    def search_frames(
        self, vector: VectorLike, filters: SearchFilters | None = None, model_id: str | None = None
    ) -> list[TypedHit]:
        """Frames closest to a frame embedding (vector name = frame encoder's model id)."""
        return self._search(FRAMES, vector, filters, model_id)

    def search_scenes(
        self,
        text_vector: VectorLike,
        filters: SearchFilters | None = None,
        model_id: str | None = None,
    ) -> list[TypedHit]:
        """Scenes matching a text-image model's text embedding."""
        return self._search(SCENES, text_vector, filters, model_id)
