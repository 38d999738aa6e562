"""Search: the façade (``facade.Searcher``: query -> model -> store -> results), exact re-rank by
the grid metric (``rerank``), prediction-augmented queries (``augment``), contact sheets."""
