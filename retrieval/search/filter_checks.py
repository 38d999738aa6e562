"""Filters that would match nothing, said before a search answers with no results: names no
point has, and time or place filters on points that carry no time or place."""

from __future__ import annotations

from typing import TYPE_CHECKING

from skysearch.errors import NotFoundError, some_of

if TYPE_CHECKING:
    from skysearch.retrieval.store.base import VectorStore
    from skysearch.retrieval.store.filters import SearchFilters

#: Where points get a place and a time from, per collection (for the messages).
_ARCHIVE_PLACE = (
    "get one from a footprint their product's profile gives, or from a storm's best track "
    "(skysearch ingest-track)"
)
_PLACE = {
    "scenes": "get one from the lon/lat or bbox columns of their CSV",
    "frames": _ARCHIVE_PLACE,
    "clips": _ARCHIVE_PLACE,
}
_TIME_FILTERS = ("start", "end", "months", "hours", "day_of_year")


def check_matchable(store: VectorStore, collection: str, filters: SearchFilters) -> None:
    """NotFoundError for a bbox filter when no point of ``collection`` has a place, a time
    filter when none has a time, or a best-track filter when none has a track: it would
    match nothing, however wide (one count each)."""
    from skysearch.retrieval.store.filters import SearchFilters

    what = collection.removesuffix("s")
    tracked = [name for name in ("min_class", "max_pressure") if getattr(filters, name)]
    if tracked and not store.count(collection, SearchFilters(min_class=2)):
        raise NotFoundError(
            f"the {{{tracked[0]}}} filter matches nothing: no {what} has a best track (load "
            "the tracks of its storms: skysearch ingest-track)",
            params=[tracked[0]],
        )
    if filters.bbox is not None and not store.count(
        collection, SearchFilters(bbox=(-180, -90, 180, 90))
    ):
        raise NotFoundError(
            f"the {{bbox}} filter matches nothing: no {what} has a place ({collection} "
            f"{_PLACE.get(collection, 'get one from their payload')})",
            params=["bbox"],
        )
    if any(getattr(filters, name) for name in _TIME_FILTERS) and not store.count(
        collection, SearchFilters(months=tuple(range(1, 13)))
    ):
        raise NotFoundError(
            f"time filters match nothing: no {what} has a time ({collection} get one from the "
            "time column of their CSV)"
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
            f"{hint if meant else ''}; the scenes have {some_of(have) or 'none'}",
            params=[field],
        )
