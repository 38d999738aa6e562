"""Text and image search over the ``scenes`` collection: the query vector from the text-image
model's towers (free text, example images, or both), then one store search."""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from skysearch.retrieval.search.filter_checks import check_matchable, check_names, check_vectors
from skysearch.retrieval.search.results import SearchResult, Timer, scene_item

from skysearch.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from PIL import Image
    from skysearch.encoders.models.text_image import TextImageModel
    from skysearch.encoders.models.text_query import TextQuery
    from skysearch.retrieval.search.batching import QueryEncoder
    from skysearch.retrieval.store.base import VectorStore
    from skysearch.retrieval.store.filters import SearchFilters

    from skysearch.config import Workspace

#: An example image of an image search: a file, or a decoded image (an upload).
ImageLike: TypeAlias = "str | Path | bytes | Image.Image"  # bytes: an encoded file

log = logging.getLogger(__name__)


#: Longest text query: far more than the text tower reads (it cuts its tokens short).
MAX_TEXT_CHARS = 500


def query_text(text: str | None) -> str:
    """The query words, stripped; a query without a letter, digit, symbol or punctuation mark
    (empty, spaces, zero-width characters), longer than :data:`MAX_TEXT_CHARS`, or with bytes
    that are not UTF-8 (a terminal in another encoding: Python keeps them as lone surrogates)
    is a usage error."""
    if text is not None and not isinstance(text, str):
        raise UsageError(f"the text query must be a string, got {type(text).__name__}")
    words = (text or "").strip()
    if len(words) > MAX_TEXT_CHARS:
        raise UsageError(f"the text query is {len(words)} characters; at most {MAX_TEXT_CHARS}")
    if any("\udc80" <= c <= "\udcff" for c in words):
        raise UsageError("the text query is not UTF-8 text: check the terminal's encoding")
    if not any(unicodedata.category(c)[0] in "LNSP" for c in words):
        raise UsageError("the text query is empty: give words, e.g. 'a river'")
    return words


def text_query(
    encoder: QueryEncoder, tim: TextImageModel | TextQuery, text: str
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
    from PIL import Image

    single = isinstance(image, str | Path | bytes | Image.Image) or not isinstance(image, Iterable)
    names, vectors = [], []
    for example in [image] if single else image:  # one at a time: uploads are never all held
        if not isinstance(example, str | Path | bytes | Image.Image):
            raise UsageError(
                "an example image is a file path, a PIL image or an encoded file's bytes, "
                f"not {type(example).__name__}"
            )
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
    tim: TextImageModel | TextQuery,
    query: dict[str, Any],
    filters: SearchFilters | None,
    timer: Timer,
) -> SearchResult:
    """Rank the ``scenes`` collection by the vector of text-image model ``tim``."""
    from skysearch.retrieval.store.filters import SearchFilters
    from skysearch.retrieval.store.schema import SCENES

    filters = filters if filters is not None else SearchFilters()
    vname = tim.model_id or "untuned"  # as skysearch.retrieval.indexing.scenes names vectors
    if vname not in scene_vectors(store):
        raise NotFoundError(
            f"the scenes collection has no vectors of text-image model {vname}: "
            "run `skysearch index scenes DIR` with that model"
        )
    with timer("search"):
        check_names(store, filters)
        hits = store.search(SCENES, vector, filters=filters, vector_name=vname)
        if not hits:
            check_matchable(store, SCENES, filters)
            check_vectors(store, vname, filters)
    items = [scene_item(i + 1, h) for i, h in enumerate(hits)]
    return SearchResult(query, items, filters.to_dict(), timer.done())


def scene_vectors(store: VectorStore) -> set[str]:
    """The text-image models (vector names) the ``scenes`` collection holds vectors of."""
    from skysearch.retrieval.store.schema import SCENES

    try:
        return set(store.vector_config(SCENES))  # cached by the open store: no listing a query
    except NotFoundError:
        raise NotFoundError(
            f"no scenes indexed yet in {store.where}: run `skysearch index scenes DIR`"
        ) from None


def scene_model_id(store: VectorStore, workspace: Workspace, model_id: str | None) -> str:
    """The text-image model a scene search uses: ``model_id``, else the registered model that
    holds vectors of the most scenes, the latest of those (a newer model that has indexed fewer
    or none is passed over, with a note; so are scenes no chosen model holds). Checked before
    any model loads, so a wrong choice fails at once."""
    from skysearch.encoders.registry import list_models, resolve

    if model_id is not None:
        resolve(workspace, "text-image", model_id)  # an unknown id, or another kind's, named
        indexed = scene_vectors(store)
        if model_id not in indexed:
            raise NotFoundError(
                f"the scenes collection has no vectors of text-image model {model_id}: run "
                f"`skysearch index scenes DIR` with that model (indexed: "
                f"{', '.join(sorted(indexed)) or 'none'})"
            )
        _, held, total = scene_coverage(store, [model_id])
        if held[model_id] < total:  # as for the model chosen by default
            log.warning(
                "text-image model %s holds %d of the %d scenes: the others are not searched "
                "(run `skysearch index scenes DIR --model-id %s` on their folders)",
                model_id, held[model_id], total, model_id,
            )  # fmt: skip
        return model_id
    registered = [r.model_id for r in list_models(workspace, "text-image")]
    if not registered:
        raise NotFoundError(
            "no text-image model yet: train one first (skysearch train text-image --images DIR), "
            "then `skysearch index scenes DIR`"
        )
    indexed = scene_vectors(store)
    usable = [m for m in registered if m in indexed]
    if not usable:
        raise NotFoundError(
            "no registered text-image model has indexed the scenes: run `skysearch index "
            f"scenes DIR` (the latest model is {registered[-1]})"
        )
    chosen, held, total = scene_coverage(store, usable)
    if chosen != registered[-1]:
        newer = registered[-1]
        log.warning(
            "searching with text-image model %s (vectors of %d scenes): the newer model %s has "
            "indexed %d (run `skysearch index scenes DIR` on every folder to use it)",
            chosen, held[chosen], newer, held.get(newer, 0),
        )  # fmt: skip
    if held[chosen] < total:
        log.warning(
            "text-image model %s holds %d of the %d scenes, and no model holds them all: the "
            "others are not searched (run `skysearch index scenes DIR --model-id %s` on their "
            "folders)",
            chosen, held[chosen], total, chosen,
        )  # fmt: skip
    return chosen


def scene_coverage(store: VectorStore, usable: list[str]) -> tuple[str, dict[str, int], int]:
    """Among the text-image models ``usable`` (oldest first, each with scene vectors): the one
    holding vectors of the most scenes (then the newest), how many each holds, and how many
    scenes there are. Scene searches use that model; doctor names the scenes it lacks."""
    from skysearch.retrieval.store.filters import holding_vector
    from skysearch.retrieval.store.schema import SCENES

    held = {m: store.count(SCENES, holding_vector(m)) for m in usable}
    chosen = max(usable, key=lambda m: (held[m], usable.index(m)))
    return chosen, held, store.count(SCENES)


def _unit(vector: np.ndarray) -> np.ndarray:
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
