"""Pyramid fusion: at every level of a Laplacian pyramid, the coefficient with the most
local energy (Burt and Adelson 1983; the multi-scale selection of Forster et al. 2004
with a pyramid instead of wavelets)."""

import math

from ..dtypes import to_dtype
from .base import Fusion

#: Pyramid depth: the coarsest level is 1/32 of the image, at least 8 px.
#: Capping the depth bounds how far a pixel's result reaches (see
#: :func:`pyramid_reach`), which is what lets large images be fused in tiles.
MAX_PYRAMID_LEVELS = 5


def pyramid_reach(levels):
    """Pixels beyond which an input change cannot alter a fused pixel.

    Edge effects travel about 2 px per level on the way down and up (the
    5-tap kernel, ``2 * 2**l`` full-resolution px at level ``l``) plus the
    5x5 energy window at the coarsest band level: under ``5 * 2**levels``.
    """
    return 5 * 2**levels + 16


def pyramid_levels(shape):
    """Number of band-pass levels for an image of ``shape``."""
    return max(1, min(MAX_PYRAMID_LEVELS, int(math.log2(min(shape[:2]) / 8))))


class PyramidFusion(Fusion):
    """Laplacian-pyramid fusion: per level, the coefficient with the most local energy.

    The coarsest level is the mean of all frames (it carries brightness, not
    detail). Memory: one pyramid of accumulated coefficients and one of their
    energies, about 1.33 frames each.
    """

    method = "pyramid"
    needs_selection = False  # the scores alone decide: the fused image does not depend on the depth

    def __init__(self, be, levels):
        super().__init__(be)
        self.levels = levels
        self.coeffs = self.energy = None
        self.base = None
        self.count = 0

    @classmethod
    def for_image(cls, be, out_shape):
        return cls(be, pyramid_levels(out_shape))

    @classmethod
    def reach(cls, out_shape, selection, focus):
        return max(selection, pyramid_reach(pyramid_levels(out_shape)))

    @classmethod
    def bytes_per_pixel(cls, channels, itemsize):
        return 2 * 1.34 * (channels + 1) * 4 + channels * 4  # kept + current pyramids, float frame

    @classmethod
    def tile_multiple(cls, out_shape):
        return 2 ** pyramid_levels(out_shape)

    def laplacian_pyramid(self, image):
        """Band-pass levels (finest first) and the low-pass residual."""
        be = self.be
        bands = []
        current = image
        for _ in range(self.levels):
            smaller = be.pyramid_down(current)
            bands.append(current - be.pyramid_up(smaller, current.shape))
            current = smaller
        return bands, current

    def update(self, step):
        self.update_frame(step.frame)

    def update_frame(self, frame):
        be, xp = self.be, self.be.xp
        bands, residual = self.laplacian_pyramid(frame.astype(xp.float32, copy=False))
        energies = [be.box_mean(be.luminance(b) ** 2, 2) for b in bands]
        if self.coeffs is None:
            self.coeffs, self.energy, self.base = bands, energies, residual
        else:
            for band, energy, acc, acc_energy in zip(bands, energies, self.coeffs, self.energy):
                wins = energy > acc_energy
                be.copy_where(acc_energy, energy, wins)
                be.copy_where(acc, band, wins)
            self.base += residual
        self.count += 1

    def collapse(self):
        """The fused float32 image: the pyramid collapsed."""
        be = self.be
        image = self.base / be.xp.float32(self.count)
        for band in reversed(self.coeffs):
            image = band + be.pyramid_up(image, band.shape)
        return image

    def finish(self, dtype):
        return to_dtype(self.collapse(), dtype, self.be)
