"""The HTTP service: the FastAPI app and its request/response models (``app``), the loaded
workspace it serves (``service``), bounded decoding of uploads (``uploads``)."""
