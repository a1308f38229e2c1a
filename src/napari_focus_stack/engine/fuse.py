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
"""

import math

from .dtypes import to_dtype

#: Depth-map hand-over: up to this distance from a slice only that slice is
#: used (sharpest pixels, best PSNR); beyond it the neighbour fades in so that
#: both slices weigh 0.5 where the depth is half-way between them.
HANDOVER_START = 0.25


def neighbour_weight(t, be):
    """Weight in [0, 0.5] of the farther of two slices at distance ``t`` in [0, 0.5]."""
    xp = be.xp
    s = xp.clip((t - HANDOVER_START) / (0.5 - HANDOVER_START), 0, 1)
    return (0.5 * s * s * (3 - 2 * s)).astype(xp.float32)


def slice_pair_weights(depth, n_frames, be):
    """Split each pixel's depth between the slices below and above it.

    Returns ``lower`` (int16 slice index), ``w_lower`` and ``w_upper`` (float32,
    summing to 1) for frames ``lower`` and ``lower + 1``. Both fusion paths
    (streaming and :func:`fuse_from_depth`) use this one function, so they
    give identical pixels for the same depth map.
    """
    xp = be.xp
    depth = xp.clip(depth, 0, n_frames - 1)
    lower = xp.floor(depth)
    t = (depth - lower).astype(xp.float32)
    near_lower = t <= 0.5
    w_upper = xp.where(near_lower, neighbour_weight(t, be), 1 - neighbour_weight(1 - t, be))
    w_upper = w_upper.astype(xp.float32)
    return lower.astype(xp.int16), 1 - w_upper, w_upper


def weighted_pair(w_lower, lower_pixels, w_upper, upper_pixels, be):
    """``w_lower * lower + w_upper * upper`` in float32, channels broadcast."""
    if lower_pixels.ndim == 3:
        w_lower, w_upper = w_lower[..., None], w_upper[..., None]
    xp = be.xp
    a = w_lower * lower_pixels.astype(xp.float32, copy=False)
    b = w_upper * upper_pixels.astype(xp.float32, copy=False)
    return a + b


class DepthMapFusion:
    """Keeps the pixels of each pixel's best frame and of the frames beside it."""

    def __init__(self, be):
        self.be = be
        self.best = self.below = self.above = self.previous = None

    def update(self, frame, took_best, took_above):
        """Take the next frame, with the masks from :meth:`SliceSelector.update`."""
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

    def finish(self, depth, best_index, n_frames, rows=slice(None)):
        """Fused float32 image for the final ``depth`` of a band of ``rows``."""
        be = self.be
        lower, w_lower, w_upper = slice_pair_weights(depth, n_frames, be)
        on_best = lower == best_index
        lower_pixels = self.below[rows].copy()
        be.copy_where(lower_pixels, self.best[rows], on_best)
        upper_pixels = self.best[rows].copy()
        be.copy_where(upper_pixels, self.above[rows], on_best)
        return weighted_pair(w_lower, lower_pixels, w_upper, upper_pixels, be)


#: Added to every weighted-fusion score, as a share of the stack's reference
#: energy: where no frame has any detail (a constant image, no noise), all
#: weights are then equal and the frames are averaged, instead of 0/0. Far
#: below any real focus energy.
TINY_SCORE = 1e-6

#: Scores above this many reference energies weigh as much as this: keeps
#: the fourth power within float32 for any data range.
MAX_SCORE_RATIO = 1e9

#: Levels of the weighted fusion's Laplacian pyramid (see :class:`WeightedFusion`).
WEIGHTED_LEVELS = 2


def weighted_reach(levels=WEIGHTED_LEVELS):
    """Pixels beyond which a change of a frame or a score cannot alter a weighted-fused pixel.

    Each level's 5-tap reduction and expansion reach 2 px at that level's
    scale: under ``4 * (2**levels - 1)`` in all (10 px measured for 2
    levels, tests/engine/test_fuse.py), plus a margin of 2.
    """
    return 4 * (2**levels - 1) + 2


class WeightedFusion:
    """Focus-weighted blend, scale by scale: frame ``k`` weighs ``s_k ** 4`` at each pixel.

    Where one frame is clearly sharpest, it dominates (a frame with half the
    best score weighs 1/16); where several frames are alike (flat or smooth
    areas, noise only, a surface between two slices) they are averaged,
    which lowers the noise instead of copying one noisy frame. ``s_k`` is the
    focus score plus the frame's noise floor (:mod:`.noise`).

    The blend is made on a Laplacian pyramid of :data:`WEIGHTED_LEVELS`
    levels (Burt and Adelson 1983's multiresolution spline): the finest band
    is blended with the weights themselves, each coarser band and the
    low-pass residual with the weights reduced to its scale, and each level
    is normalised by its own sum of weights. Fine detail therefore comes
    from the frames that are sharp right there, while the broad brightness
    of a region is averaged over a wider neighbourhood of weights, which
    softens the hand-over between frames at object edges (the halo of a
    defocused foreground over its background) and on steep surfaces. Two
    levels scored best on the quality suite (1 to 6 tried; docs/ALGORITHMS.md).

    Streamed one frame at a time, without a second pass: weights are not
    normalised per pixel but by each level's running sum, so they are kept
    relative to one fixed reference energy, ``reference`` (the stack's
    first frame's variance, the same for every tile), to stay within float32.
    Memory: the accumulated pyramid of every channel and of the weights,
    about 1.3 frames each.
    """

    def __init__(self, be, levels=WEIGHTED_LEVELS):
        self.be = be
        self.levels = levels
        self.sums = self.weights = self.scale = None  # per channel and level; per level
        self._scratch = None

    def _buffers(self, shape):
        """Per level: the band, a scratch (blur, then zero-filled expansion), the expansion and the weights.

        Made once and reused for every frame: fresh frame-sized arrays cost
        their page faults.
        """
        if self._scratch is None:
            xp, shapes = self.be.xp, [tuple(shape)]
            for _ in range(self.levels):
                shapes.append(((shapes[-1][0] + 1) // 2, (shapes[-1][1] + 1) // 2))
            # the finest level's weights are the scores themselves; its scratch
            # and expansion may be lent by the caller (borrowed)
            self._scratch = [
                {name: xp.empty(size, dtype=xp.float32) for name in (("band", "weight") if i else ("band",))}
                for i, size in enumerate(shapes)
            ]
        return self._scratch

    def update(self, frame, score, floor=0.0, uncovered=None, reference=1.0, borrowed=None):
        """Add ``frame`` with its focus ``score`` plus ``floor``; ``score`` is overwritten (by the weights).

        ``floor`` is the focus energy of the frame's noise. Pixels of
        ``uncovered`` (aligned frames: no real pixels) get no weight.
        ``reference`` is taken from the first frame and kept. ``borrowed``:
        two float32 arrays of the frame's size that the caller does not need
        during this call (its grey image and focus scratch), used as the
        finest level's scratch; fresh ones are kept otherwise.
        """
        be, xp = self.be, self.be.xp
        if self.scale is None:
            self.scale = 1.0 / float(reference) if reference > 0 else 1.0
        weight = score
        weight *= xp.float32(self.scale)
        weight += xp.float32(floor * self.scale + TINY_SCORE)
        xp.minimum(weight, xp.float32(MAX_SCORE_RATIO), out=weight)
        xp.multiply(weight, weight, out=weight)
        xp.multiply(weight, weight, out=weight)
        if uncovered is not None:  # no real pixels: no weight
            xp.copyto(weight, xp.float32(0), where=uncovered)
        levels = self._buffers(weight.shape)
        if borrowed is not None and all(b.shape == weight.shape and b.dtype == xp.float32 for b in borrowed):
            levels[0]["scratch"], levels[0]["up"] = borrowed
        elif "up" not in levels[0]:
            levels[0]["scratch"], levels[0]["up"] = xp.empty_like(weight), xp.empty_like(weight)
        for level in levels[1:]:  # coarser levels work after the finest is done: in its memory
            for name in ("scratch", "up"):
                size = level["band"].size
                level[name] = levels[0][name].reshape(-1)[:size].reshape(level["band"].shape)
        if self.sums is None:
            channels = 1 if frame.ndim == 2 else frame.shape[2]
            self.sums = [[xp.zeros_like(level["band"]) for level in levels] for _ in range(channels)]
            self.weights = [xp.zeros_like(level["band"]) for level in levels]
        weights = [weight]
        for above, level in zip(levels, levels[1:]):
            weights.append(be.pyramid_reduce(weights[-1], out=level["weight"], scratch=above["scratch"]))
        for total, w in zip(self.weights, weights):
            total += w
        for c, sums in enumerate(self.sums):
            band = levels[0]["band"]
            xp.copyto(band, frame if frame.ndim == 2 else frame[..., c], casting="unsafe")
            for i, level in enumerate(levels):
                if i < self.levels:  # band-pass: this level less the next one expanded
                    smaller = be.pyramid_reduce(band, out=levels[i + 1]["band"], scratch=level["scratch"])
                    band -= be.pyramid_up(smaller, band.shape, out=level["up"], scratch=level["scratch"])
                band *= weights[i]
                sums[i] += band
                if i < self.levels:
                    band = smaller

    def finish(self, dtype):
        """The fused image in ``dtype``, channel by channel; the accumulated pyramids are freed as they are used."""
        be, xp = self.be, self.be.xp
        self._scratch = None
        planes = []
        while self.sums:
            sums = self.sums.pop(0)
            image = None
            for level in reversed(range(len(sums))):
                total = sums.pop()
                total /= xp.maximum(self.weights[level], xp.float32(1e-30))
                if image is not None:
                    total += be.pyramid_up(image, total.shape)
                image = total
            planes.append(to_dtype(image, dtype, be))
            del image
        self.weights = None
        return planes[0] if len(planes) == 1 else xp.stack(planes, axis=-1)


def fuse_frames_at_depth(frames, n_frames, depth, be):
    """Fuse an iterable of ``n_frames`` prepared frames along a given depth map.

    Generator: yields after each frame (for progress and cancellation) and
    returns the fused float32 image. Used to re-fuse after the depth map was
    edited by hand, without measuring focus again.
    """
    xp = be.xp
    lower, w_lower, w_upper = slice_pair_weights(depth, n_frames, be)
    lower_acc = upper_acc = None
    for k, frame in enumerate(frames):
        if lower_acc is None:
            lower_acc = xp.zeros(frame.shape, dtype=frame.dtype)
            upper_acc = xp.zeros(frame.shape, dtype=frame.dtype)
        be.copy_where(lower_acc, frame, lower == k)
        be.copy_where(upper_acc, frame, lower == k - 1)
        yield k
    return weighted_pair(w_lower, lower_acc, w_upper, upper_acc, be)


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


class PyramidFusion:
    """Laplacian-pyramid fusion: per level, the coefficient with the most local energy.

    The coarsest level is the mean of all frames (it carries brightness, not
    detail). Memory: one pyramid of accumulated coefficients and one of their
    energies, about 1.33 frames each.
    """

    def __init__(self, be, levels):
        self.be = be
        self.levels = levels
        self.coeffs = self.energy = None
        self.base = None
        self.count = 0

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

    def update(self, frame):
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

    def finish(self):
        be = self.be
        image = self.base / be.xp.float32(self.count)
        for band in reversed(self.coeffs):
            image = band + be.pyramid_up(image, band.shape)
        return image
