"""Search: one façade over query resolution, models and ranking; callers import from here.

- ``facade``: :class:`Searcher` (query -> model -> store -> results) and the one-shot
  :func:`search_clip` / :func:`search_frame` / :func:`search_text` / :func:`search_image`;
  :class:`SearchOptions`.
- ``queries``: :class:`ClipQuery` and its resolution to pixels (catalogs, files, archive checks);
  ``frame_queries``: :class:`FrameQuery`, the same for one frame; ``query_files``: query
  frames given as files (CLI ``--frames``, uploads): their order and spacing.
- ``models``: which clip model, frame model, predictor, text-image model; each loaded once.
- ``scenes``: text and image search over the ``scenes`` collection.
- ``results``: the result schema (:class:`SearchResult`, :class:`ResultItem`) and hit shaping.
- ``filter_checks``: filters that would match nothing, said instead of an empty answer.
- ``batching``: concurrent queries' embeddings in one forward pass (the service).
- ``rerank`` (exact re-rank by the grid metric), ``augment`` (prediction-augmented queries),
  ``contact_sheet`` (a PNG of a clip or frame search).
"""

from skysearch.retrieval.search.facade import (
    Searcher,
    SearchOptions,
    search_clip,
    search_frame,
    search_image,
    search_text,
)
from skysearch.retrieval.search.frame_queries import FrameQuery
from skysearch.retrieval.search.queries import ClipQuery
from skysearch.retrieval.search.results import RESULT_SCHEMA, ResultItem, SearchResult, spec_text

__all__ = [
    "RESULT_SCHEMA",
    "ClipQuery",
    "FrameQuery",
    "ResultItem",
    "SearchOptions",
    "SearchResult",
    "Searcher",
    "search_clip",
    "search_frame",
    "search_image",
    "search_text",
    "spec_text",
]
