"""Fusion: compose the all-in-focus image from the frames.

Three methods, all streamed one frame at a time:

* :class:`DepthMapFusion` takes each pixel from the frames next to its
  sub-slice depth, with a soft hand-over between neighbouring slices (no hard
  seams, no halos from window-sized blending);
* :class:`WeightedFusion` averages the frames weighted by a steep power of
  their focus scores: the sharpest frame dominates where one stands out, and
  alike frames are averaged (less noise) where none does;
* :class:`PyramidFusion` keeps, at every level of a Laplacian pyramid, the
  coefficient with the most local energy (Burt and Adelson 1983; the
  multi-scale selection of Forster et al. 2004 with a pyramid instead of
  wavelets).

Decisions are made on luminance; every colour channel is carried, so colours
do not shift.

Each method is a :class:`~.base.Fusion` (the interface the pipeline and tiling
use) in a module of its own, registered in :data:`FUSIONS`.
"""

from ..dtypes import to_dtype
from .at_depth import HANDOVER_START, fuse_frames_at_depth, neighbour_weight, slice_pair_weights, weighted_pair
from .base import FrameStep, Fusion
from .depthmap import DepthMapFusion
from .pyramid import MAX_PYRAMID_LEVELS, PyramidFusion, pyramid_levels, pyramid_reach
from .weighted import MAX_SCORE_RATIO, TINY_SCORE, WEIGHTED_LEVELS, WeightedFusion, weighted_reach

#: Every fusion method by name; :data:`~napari_focus_stack.engine.result.METHODS` lists the same names.
FUSIONS = {fusion.method: fusion for fusion in (WeightedFusion, DepthMapFusion, PyramidFusion)}

__all__ = [
    "FUSIONS",
    "HANDOVER_START",
    "MAX_PYRAMID_LEVELS",
    "MAX_SCORE_RATIO",
    "TINY_SCORE",
    "WEIGHTED_LEVELS",
    "DepthMapFusion",
    "FrameStep",
    "Fusion",
    "PyramidFusion",
    "WeightedFusion",
    "fuse_frames_at_depth",
    "neighbour_weight",
    "pyramid_levels",
    "pyramid_reach",
    "slice_pair_weights",
    "to_dtype",
    "weighted_pair",
    "weighted_reach",
]
