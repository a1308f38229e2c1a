"""Depth-map fusion: each pixel from the frames next to its sub-slice depth, with a soft
hand-over between neighbouring slices (no hard seams, no halos from window-sized blending)."""

from .at_depth import slice_pair_weights, weighted_pair
from .base import Fusion


class DepthMapFusion(Fusion):
    """Keeps the pixels of each pixel's best frame and of the frames beside it."""

    method = "depthmap"
    regularises_depth = False  # it follows its depth: retouching re-fuses along it exactly

    def __init__(self, be):
        super().__init__(be)
        self.best = self.below = self.above = self.previous = None

    @classmethod
    def bytes_per_pixel(cls, channels, itemsize):
        return 5 * channels * itemsize  # best, below, above, previous and current frame

    def update(self, step):
        """Take the next frame, with the masks from :meth:`SliceSelector.update`."""
        self.update_frame(step.frame, step.took_best, step.took_above)

    def update_frame(self, frame, took_best, took_above):
        be = self.be
        if self.best is None:
            self.best = frame.copy()
            self.below = be.xp.zeros_like(frame)
            self.above = be.xp.zeros_like(frame)
        else:
            be.copy_where(self.above, frame, took_above)
            be.copy_where(self.best, frame, took_best)
            be.copy_where(self.below, self.previous, took_best)
        self.previous = frame

    def release_frames(self):
        self.previous = None

    def band_finisher(self, selector):
        def fuse_rows(rows, depth):
            return self.finish_rows(depth, selector.index[rows], selector.count, rows)

        return fuse_rows

    def finish_rows(self, depth, best_index, n_frames, rows=slice(None)):
        """Fused float32 image for the final ``depth`` of a band of ``rows``."""
        be = self.be
        lower, w_lower, w_upper = slice_pair_weights(depth, n_frames, be)
        on_best = lower == best_index
        lower_pixels = self.below[rows].copy()
        be.copy_where(lower_pixels, self.best[rows], on_best)
        upper_pixels = self.best[rows].copy()
        be.copy_where(upper_pixels, self.above[rows], on_best)
        return weighted_pair(w_lower, lower_pixels, w_upper, upper_pixels, be)
