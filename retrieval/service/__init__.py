"""The HTTP service: the wire schema, pydantic only, shared with the typed client (``wire``),
the FastAPI app, its routes, auth and error mapping (``app``), the loaded workspace it serves
(``service``), its catalogs by id with metadata and thumbnails (``catalogs``), bounded
decoding of uploads (``uploads``)."""
