"""One read -> embed -> write pipeline (``pipeline``) fed by the catalog readers (frames, clips:
``catalogs``) and the scene reader (``scenes``)."""
