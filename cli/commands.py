"""Imports every command module so each registers itself on the app. One line per module."""

from skysearch.cli import (
    groups,  # noqa: F401
    ingest,  # noqa: F401
    similarity,  # noqa: F401
)
