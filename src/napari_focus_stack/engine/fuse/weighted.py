"""Weighted fusion: the frames averaged by a steep power of their focus scores, scale by
scale on a small Laplacian pyramid: the sharpest frame dominates where one stands out,
and alike frames are averaged (less noise) where none does."""

from ..dtypes import to_dtype
from .base import Fusion

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


class WeightedFusion(Fusion):
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

    method = "weighted"
    needs_selection = False  # the scores alone decide: the fused image does not depend on the depth

    def __init__(self, be, levels=WEIGHTED_LEVELS):
        super().__init__(be)
        self.levels = levels
        self.sums = self.weights = self.scale = None  # per channel and level; per level
        self._scratch = None

    def _buffers(self, shape):
        """Per level: the band, a scratch (blur, then zero-filled expansion), the expansion and the weights.

        Made once and reused for every frame: fresh frame-sized arrays cost
        their page faults. The finest level's are set by :meth:`update_frame`
        (lent by the caller where it can).
        """
        if self._scratch is None:
            xp, shapes = self.be.xp, [tuple(shape)]
            for _ in range(self.levels):
                shapes.append(((shapes[-1][0] + 1) // 2, (shapes[-1][1] + 1) // 2))
            # the finest level's weights are the scores themselves
            self._scratch = [{}] + [
                {name: xp.empty(size, dtype=xp.float32) for name in ("band", "weight")} for size in shapes[1:]
            ]
        return self._scratch

    def _finest(self, finest, shape, borrowed):
        """The finest level's band, scratch and expansion: ``borrowed`` ones where they fit, else kept ones.

        Where the backend's pyramid steps need no scratch (OpenCV's), the two
        borrowed arrays serve as band and expansion, and the fusion keeps no
        frame-sized buffer of its own (46 MiB at 12 MP); elsewhere they serve
        as scratch and expansion.
        """
        xp = self.be.xp
        if borrowed is not None and all(b.shape == tuple(shape) and b.dtype == xp.float32 for b in borrowed):
            if self.be.pyramid_needs_scratch:
                finest["scratch"], finest["up"] = borrowed
            else:
                finest["band"], finest["up"] = borrowed
                finest["scratch"] = None
        for name in ("band", "scratch", "up"):
            if name not in finest:
                finest[name] = xp.empty(shape, dtype=xp.float32)

    @classmethod
    def reach(cls, out_shape, selection, focus):
        return max(selection, focus + weighted_reach())  # the scores, blended on a small pyramid

    @classmethod
    def bytes_per_pixel(cls, channels, itemsize):
        # accumulated pyramids of each channel and of the weights, this frame's
        # weight pyramid, a float plane and its bands, the float frame
        return 1.34 * (channels + 2) * 4 + 4 * 4 + channels * 4 + channels * itemsize

    @classmethod
    def tile_multiple(cls, out_shape):
        return 2**WEIGHTED_LEVELS

    def update(self, step):
        self.update_frame(step.frame, step.score, step.floor, step.uncovered, step.reference, step.borrowed)

    def update_frame(self, frame, score, floor=0.0, uncovered=None, reference=1.0, borrowed=None):
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
        self._finest(levels[0], weight.shape, borrowed)
        for level in levels[1:]:  # coarser levels work after the finest is done: in its memory
            for name in ("scratch", "up"):
                size, whole = level["band"].size, levels[0][name]
                level[name] = None if whole is None else whole.reshape(-1)[:size].reshape(level["band"].shape)
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
                    up = be.pyramid_up(smaller, band.shape, out=level["up"], scratch=level["scratch"])
                    be.accumulate_product(sums[i], band, weights[i], minus=up)
                    band = smaller
                else:
                    be.accumulate_product(sums[i], band, weights[i])

    def release_frames(self):
        # the per-frame buffers, with the grey image and focus scratch they
        # borrowed: 3.4 planes that the outputs would otherwise be made beside
        self._scratch = None

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
