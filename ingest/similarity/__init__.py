"""The grid Kolmogorov-Smirnov similarity metric: public API.

Array functions live in ``core`` (sketches, modes, one-vs-many, pairwise) over the compiled
``kernel``; stored per-frame sketches and clip-id lookups in ``sketches``; image folders in
``files``. Import from here.
"""

from skysearch.ingest.similarity.core import (
    MODES,
    ClipScore,
    Geometry,
    GridSpec,
    Mode,
    SketchedClip,
    SketchPool,
    bin_grey,
    cell_similarities,
    cell_sizes,
    clip_similarity,
    clip_similarity_from_sketches,
    compare_clips,
    frame_similarity,
    one_to_many,
    pairwise,
    similarity_block,
    sketch_dtype,
    sketch_frame,
    sketch_frames,
    sketch_geometry,
    to_grey,
)
from skysearch.ingest.similarity.files import folder_layout, sketch_folder
from skysearch.ingest.similarity.sketches import (
    ClipScores,
    ClipSet,
    SketchReport,
    SketchStore,
    find_clip,
    load_clips,
    pairwise_clips,
    score_clips,
    sketch_catalog_clip,
)

__all__ = [
    "MODES",
    "ClipScore",
    "ClipScores",
    "ClipSet",
    "SketchReport",
    "SketchStore",
    "load_clips",
    "pairwise_clips",
    "score_clips",
    "Geometry",
    "GridSpec",
    "Mode",
    "SketchPool",
    "bin_grey",
    "cell_similarities",
    "cell_sizes",
    "clip_similarity",
    "clip_similarity_from_sketches",
    "compare_clips",
    "find_clip",
    "folder_layout",
    "sketch_catalog_clip",
    "sketch_folder",
    "SketchedClip",
    "frame_similarity",
    "one_to_many",
    "pairwise",
    "similarity_block",
    "sketch_dtype",
    "sketch_frame",
    "sketch_frames",
    "sketch_geometry",
    "to_grey",
]
