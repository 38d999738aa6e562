"""Catalog rows -> embeddings -> points in the store: frames and clips (``catalogs``), scene
images (``scenes``)."""
