"""Filters that would match nothing, said instead of an answer with no results: names no
point has; time, place or best-track filters on points that carry none; scenes kept by the
filters that only another text-image model indexed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from skysearch.errors import NotFoundError, some_of
from skysearch.filter_ranges import JMA_CLASSES, MONTHS

if TYPE_CHECKING:
    from skysearch.retrieval.store.base import VectorStore
    from skysearch.retrieval.store.filters import SearchFilters

_REINDEX = "then index them again: skysearch index frames|clips, or skysearch update"
#: Where the points of each collection get a place from (for the messages).
_ARCHIVE_PLACE = "a footprint from their product's profile, or a storm centre from a best track"
_PLACE = {
    "scenes": "the lon/lat or bbox columns of their CSV",
    "frames": f"{_ARCHIVE_PLACE}: load one with skysearch ingest-track, {_REINDEX}",
    "clips": f"{_ARCHIVE_PLACE}: load one with skysearch ingest-track, {_REINDEX}",
}
_TIME_FILTERS = ("start", "end", "months", "hours", "day_of_year")


def check_matchable(
    store: VectorStore, collection: str, filters: SearchFilters, vector_name: str | None = None
) -> None:
    """After a search found nothing: NotFoundError when no point of a catalog ``collection``
    holds a vector of the model searched (an index run stopped early), for a bbox filter when no
    point has a place, a time filter when none has a time, or a best-track filter when none
    has a track, since such a filter matches nothing however wide (a count each)."""
    from skysearch.retrieval.store.filters import SearchFilters, holding_vector

    if vector_name and not store.count(collection, holding_vector(vector_name)):
        raise NotFoundError(
            f"the {collection} collection holds no vector of model {vector_name} yet (an index "
            f"run stopped early?): run `skysearch index {collection} --model {vector_name}`"
        )

    what = collection.removesuffix("s")
    tracked = [name for name in ("min_class", "max_pressure") if getattr(filters, name)]
    if tracked and not store.count(collection, SearchFilters(min_class=JMA_CLASSES[0])):
        raise NotFoundError(
            f"the {{{tracked[0]}}} filter matches nothing: no {what} has a best track (load "
            f"its storms' tracks with skysearch ingest-track, {_REINDEX})",
            params=[tracked[0]],
        )
    if filters.bbox is not None and not store.count(
        collection, SearchFilters(bbox=(-180, -90, 180, 90))
    ):
        raise NotFoundError(
            f"the {{bbox}} filter matches nothing: no {what} has a place ({collection} get one "
            f"from {_PLACE.get(collection, 'their payload')})",
            params=["bbox"],
        )
    if any(getattr(filters, name) for name in _TIME_FILTERS) and not store.count(
        collection, SearchFilters(months=tuple(range(MONTHS[0], MONTHS[1] + 1)))
    ):  # only scenes can lack a time
        raise NotFoundError(
            f"time filters match nothing: no {what} has a time ({collection} get one from the "
            "time column of their CSV)"
        )


def check_vectors(store: VectorStore, vector_name: str, filters: SearchFilters) -> None:
    """After a scene search found nothing: NotFoundError when scenes pass the filters but
    none has a vector of the model searched (another text-image model indexed them), naming
    the models that did."""
    from skysearch.retrieval.store.filters import holding_vector
    from skysearch.retrieval.store.schema import SCENES

    base = filters.to_qdrant()
    kept = store.count(SCENES, base)
    if not kept:
        return
    names = sorted(store.vector_config(SCENES))
    holders = [m for m in names if store.count(SCENES, holding_vector(m, base))]
    if not holders or vector_name in holders:
        return  # nothing indexed there, or the searched model's hits were filtered out
    raise NotFoundError(
        f"the {kept} scenes these filters keep have no vector of text-image model "
        f"{vector_name}, the one searched (indexed by {', '.join(holders)}): search with "
        f"{{model_id}} {holders[-1]}, or index their folders with {vector_name} (skysearch "
        f"index scenes DIR --model-id {vector_name})",
        params=["model_id"],
    )


#: Scenes read to list the datasets and labels a filter could have meant (ids are hashes, so
#: the first points are a sample of the whole collection).
NAMES_SAMPLE = 20_000


def check_names(store: VectorStore, filters: SearchFilters) -> None:
    """NotFoundError for a dataset, label, satellite or channel filter that no scene has (in
    another case, say), naming those the scenes have: it would match nothing, silently (one
    count per name)."""
    from itertools import islice

    from skysearch.retrieval.store.filters import SearchFilters
    from skysearch.retrieval.store.schema import SCENES

    for field, key, values in (
        ("datasets", "dataset", filters.datasets),
        ("labels", "label", filters.labels),
        ("satellites", "satellite", filters.satellites),
        ("channels", "channel", filters.channels),
    ):
        unknown = [v for v in values if not store.count(SCENES, SearchFilters(**{field: (v,)}))]
        if not unknown:
            continue
        have = sorted(
            {str(r.payload[key]) for r in islice(store.scroll(SCENES), NAMES_SAMPLE)
             if r.payload.get(key)}
        )  # fmt: skip
        folded = {h.casefold(): h for h in have}
        meant = [folded[v.casefold()] for v in unknown if v.casefold() in folded]
        hint = f" (did you mean {', '.join(map(repr, meant))}? names are case-sensitive)"
        raise NotFoundError(
            f"filter {field}: no scene has {key} {', '.join(map(repr, unknown))}"
            f"{hint if meant else ''}; the scenes have {some_of(list(map(repr, have))) or 'none'}",
            params=[field],
        )
