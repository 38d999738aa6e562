"""Imports every command module so each registers itself on the app. One line per module."""

from skysearch.cli import (
    catalog,  # noqa: F401
    demo,  # noqa: F401
    doctor,  # noqa: F401
    encoders,  # noqa: F401
    groups,  # noqa: F401
    index,  # noqa: F401
    ingest,  # noqa: F401
    predictor,  # noqa: F401
    repair,  # noqa: F401
    search,  # noqa: F401
    serve,  # noqa: F401
    similarity,  # noqa: F401
    store,  # noqa: F401
    text_image,  # noqa: F401
    update,  # noqa: F401
)
