"""Archive ingest: source profiles, decoding, preprocessing, frame store, Parquet catalogs,
clips, and the grid similarity metric."""
