"""Training data read from a workspace: clip sets and time splits (``clips``), temporal
triplets (``triplets``), image-caption pairs in SkyScript's CSV format (``captions``)."""
