"""Text and image search over the ``scenes`` collection: the query vector from the text-image
model's towers (free text, example images, or both), then one store search."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from skysearch.retrieval.search.results import SearchResult, Timer, scene_item

from skysearch.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from PIL import Image
    from skysearch.encoders.models.text_image import TextImageModel
    from skysearch.retrieval.search.batching import QueryEncoder
    from skysearch.retrieval.store.base import VectorStore
    from skysearch.retrieval.store.filters import SearchFilters

#: An example image of an image search: a file, or a decoded image (an upload).
ImageLike: TypeAlias = "str | Path | Image.Image"


def query_text(text: str | None) -> str:
    """The query words, stripped; empty words are a usage error."""
    if not text or not text.strip():
        raise UsageError("the text query is empty: e.g. skysearch search text 'a river'")
    return text.strip()


def text_query(
    encoder: QueryEncoder, tim: TextImageModel, text: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """The vector and the echoed query of a free-text search."""
    text = query_text(text)
    query = {"kind": "text", "text": text, "model_id": tim.model_id}
    return encoder.text(tim, text), query


def example_query(
    encoder: QueryEncoder,
    tim: TextImageModel,
    image: ImageLike | Iterable[ImageLike],
    text: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """The vector and echoed query of "more like these": the mean of the examples' unit
    embeddings; with ``text``, the words' embedding is added with the same weight."""
    single = isinstance(image, str | Path) or not isinstance(image, Iterable)
    names, vectors = [], []
    for example in [image] if single else image:  # one at a time: uploads are never all held
        vectors.append(encoder.image(tim, example))
        names.append(str(example) if isinstance(example, str | Path) else "<upload>")
    if not vectors:
        raise UsageError("give at least one example image")
    vector = _unit(np.mean(vectors, axis=0))
    query: dict[str, Any] = {
        "kind": "image",
        "image": names[0],
        "images": names,
        "model_id": tim.model_id,
    }
    if text and text.strip():
        query["text"] = text.strip()
        vector = _unit(vector + encoder.text(tim, query["text"]))
    return vector, query


def search_scenes(
    store: VectorStore,
    vector: np.ndarray,
    tim: TextImageModel,
    query: dict[str, Any],
    filters: SearchFilters | None,
    timer: Timer,
) -> SearchResult:
    """Rank the ``scenes`` collection by the vector of text-image model ``tim``."""
    from skysearch.retrieval.store.filters import SearchFilters
    from skysearch.retrieval.store.schema import SCENES

    filters = filters if filters is not None else SearchFilters()
    try:
        vectors = store.vector_config(SCENES)  # cached by the open store: no listing a query
    except NotFoundError:
        raise NotFoundError(
            f"no scenes indexed yet in {store.where}: run `skysearch index scenes DIR`"
        ) from None
    vname = tim.model_id or "untuned"  # as skysearch.retrieval.indexing.scenes names vectors
    if vname not in vectors:
        raise NotFoundError(
            f"the scenes collection has no vectors of text-image model {vname}: "
            "run `skysearch index scenes DIR` with that model"
        )
    with timer("search"):
        hits = store.search(SCENES, vector, filters=filters, vector_name=vname)
    items = [scene_item(i + 1, h) for i, h in enumerate(hits)]
    return SearchResult(query, items, filters.to_dict(), timer.done())


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
