"""The HTTP service: the wire schema, pydantic only, shared with the typed client (``wire``),
the FastAPI app, its routes, auth and error mapping (``app``), the loaded workspace it serves
(``service``), its catalogs by id with metadata and thumbnails (``catalogs``), bounded
decoding of uploads (``uploads``), the response bodies (``responses``), the request size limit
(``body_limit``), HEAD and OPTIONS (``methods``), start-up's warm-up searches (``warmup``), the
web page (``page``, ``static/``) and clip animations (``animation``)."""
