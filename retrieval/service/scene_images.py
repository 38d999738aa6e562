"""A scene's image for the service: the file the ``scenes`` collection indexed, found by the
point's payload (never a path from the request), as a PNG thumbnail."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image
from skysearch.retrieval.service.catalogs import canonical_id, png_bytes

from skysearch.errors import NotFoundError


def scene_png(store: Any, scene_id: str, size: int) -> bytes:
    """Scene ``scene_id``'s image as PNG, longest side <= ``size``; NotFoundError when the
    collection does not hold it or its file cannot be read any more."""
    from qdrant_client import models
    from skysearch.retrieval.store.schema import SCENES

    key = canonical_id(scene_id, "scene")
    record = None
    if SCENES in store.collections():
        found = models.Filter(must=[models.HasIdCondition(has_id=[key])])
        record = next(iter(store.scroll(SCENES, found)), None)
    if record is None:
        raise NotFoundError(f"scene {key} is not in the {SCENES} collection")
    path = record.payload.get("source_path") or record.payload.get("path")
    try:
        with Image.open(path) as image:
            image.draft("RGB", (size, size))  # JPEG: decode at a fraction of full size
            image.thumbnail((size, size), Image.Resampling.BOX)
            pixels = np.asarray(image.convert("RGB"))
    except (OSError, TypeError, ValueError):
        raise NotFoundError(f"the image of scene {key} cannot be read any more") from None
    return png_bytes(pixels)
