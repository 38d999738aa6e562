"""The grid Kolmogorov-Smirnov similarity metric: public API.

``grid``: the metric's parameters and per-frame sketches (modes, grey, bins, cells);
``scoring``: scores on sketches (frames, clips, one-vs-many, pairwise) over the compiled
``kernel``; ``store``: per-frame sketches stored beside the frame store; ``clips``: catalog
clips by id; ``frames``: catalog frames by id; ``files``: image folders. Import from here.
"""

from skysearch.ingest.similarity.clips import (
    ClipScores,
    ClipSketches,
    find_clip,
    load_clips,
    pairwise_clips,
    score_clips,
    sketch_catalog_clip,
)
from skysearch.ingest.similarity.files import folder_layout, sketch_folder
from skysearch.ingest.similarity.frames import score_frames
from skysearch.ingest.similarity.grid import (
    MODES,
    Geometry,
    GridSpec,
    Mode,
    bin_grey,
    cell_sizes,
    sketch_dtype,
    sketch_frame,
    sketch_frames,
    sketch_geometry,
    to_grey,
)
from skysearch.ingest.similarity.scoring import (
    ClipScore,
    SketchedClip,
    SketchPool,
    cell_similarities,
    clip_similarity,
    clip_similarity_from_sketches,
    compare_clips,
    frame_similarity,
    one_to_many,
    pairwise,
    similarity_block,
)
from skysearch.ingest.similarity.store import SketchReport, SketchStore, sketch_specs

__all__ = [
    "MODES",
    "ClipScore",
    "ClipScores",
    "ClipSketches",
    "SketchReport",
    "SketchStore",
    "sketch_specs",
    "load_clips",
    "pairwise_clips",
    "score_clips",
    "score_frames",
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
