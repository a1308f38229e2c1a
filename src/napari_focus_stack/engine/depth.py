"""Per-pixel best slice, sub-slice interpolation and confidence, one frame at a time.

Only what the selection needs is kept: the best score and its slice, the
scores of the slices just below and above it and the previous frame's score
(as fixed-point ratios to the best), a running sum and the width of the
focus curve. Memory therefore does not grow with the number of frames.
"""

import numpy as np

#: Score marking "no neighbour seen (yet)"; real focus scores are >= 0.
MISSING = -1.0
#: Least best score the ratios are taken to (a stack with no detail at all scores 0).
TINY_BEST = 1e-30
#: Ratios to the best score, in [0, 1], are kept as uint16 fixed point:
#: ``round(ratio * RATIO_ONE)``, to within 7.7e-6 (:func:`fixed_point`).
RATIO_ONE = 65534
#: The fixed-point code of a missing neighbour (:data:`MISSING`).
RATIO_MISSING = 65535
#: The focus curve's width, ``W = sum_k (s_k / best)^4``: about the number
#: of slices scoring near the peak (1 for one sharp slice).
#: Curves wider than this many slices hold their depth less firmly in the
#: regularisation: their weight is capped at ``(WIDTH_REFERENCE / W)^2``
#: (:meth:`SliceSelector.regularisation_weights`). Confocal sections of
#: overlapping nuclei score high over many slices; their peak is a guess
#: among them (cells3d speckle 10.3 % -> 2.7 % with the cap, mito 0.8 % ->
#: 0.2 %, the suite's depth RMSE unchanged at two decimals; exponent 3 cost
#: a family 0.02 slices: benchmarks/width_confidence.py, RESULTS.md).
WIDTH_REFERENCE = 2.0


class SliceSelector:
    """Running argmax of focus scores over frames, with the peak's neighbours.

    Call :meth:`update` with each frame's score map in slice order, then
    :meth:`finish`.

    Per pixel it keeps the best score and its slice (float32, int16), the
    running sum of the scores and the curve's width (float32) and, as uint16
    fixed point (:data:`RATIO_ONE`), the scores of the slices below and
    above the best and of the previous frame, each divided by the best (all
    in [0, 1]). The sub-slice fit needs only those ratios (the logarithm of
    the peak cancels out); kept to 1.6e-5 (the one below is rounded twice),
    they move a sub-slice depth by about 1e-5 slices
    (tests/engine/test_depth.py). At 12 MP that is 69 MiB less than float32
    copies of the three (benchmarks/RESULTS.md).
    """

    def __init__(self, be):
        self.be = be
        self.count = 0
        self.best = self.index = self.below = self.above = self.width = None
        self.previous = self.total = self.took_best = self.took_above = None

    def update(self, score):
        """Take the next frame's focus scores (float32; read, not kept).

        Returns
        -------
        took_best : bool array
            Pixels where this frame is now the sharpest.
        took_above : bool array
            Pixels whose sharpest frame so far is the one just before this one.

        Both are buffers reused by the next call.
        """
        xp = self.be.xp
        k = self.count
        if k == 0:
            self.best = score.copy()
            self.index = xp.zeros(score.shape, dtype=xp.int16)
            self.below = xp.full(score.shape, RATIO_MISSING, dtype=xp.uint16)
            self.above = self.below.copy()
            self.previous = xp.full(score.shape, RATIO_ONE, dtype=xp.uint16)  # the first frame is its own best
            self.total = score.copy()
            self.width = xp.ones(score.shape, dtype=xp.float32)
            self.took_best = xp.ones(score.shape, dtype=bool)
            self.took_above = xp.zeros(score.shape, dtype=bool)
        else:
            # bands are independent: they run on all cores on the CPU
            self.be.for_each_band(lambda rows: self._update_rows(rows, score, k), score.shape[0], width=score.shape[1])
        self.count = k + 1
        return self.took_best, self.took_above

    def _update_rows(self, rows, score, k):
        be, xp = self.be, self.be.xp
        score = score[rows]
        took_above, took_best = self.took_above[rows], self.took_best[rows]
        best, index, below, above = self.best[rows], self.index[rows], self.below[rows], self.above[rows]
        previous, width = self.previous[rows], self.width[rows]
        # Masked copies go through be.copy_where, and the rest is written
        # without masks: NumPy's masked operations branch on every pixel and
        # cost ten times more where the best frame changes from pixel to pixel.
        # Two float32 temporaries of the band serve every step.
        xp.greater(score, best, out=took_best)
        xp.equal(index, k - 1, out=took_above)
        # the smaller of (score, best) over the larger: this frame's ratio to the
        # best where it is not the best, the old best's ratio to it where it is
        ratio = xp.minimum(score, best)
        work = xp.maximum(score, best)
        xp.maximum(work, xp.float32(TINY_BEST), out=work)
        ratio /= work
        # the previous frame's score over this frame's, where this frame takes
        # the best: (previous / old best) * (old best / score), in fixed point
        xp.multiply(previous, ratio, out=work)
        be.copy_where(below, fixed_point(work, xp), took_best)
        # this frame's ratio to the best, kept for the next frame; a new best is 1
        xp.multiply(ratio, xp.float32(RATIO_ONE), out=work)
        fixed = fixed_point(work, xp)
        be.copy_where(above, fixed, took_above)  # the frame just above the best
        # where this frame takes the best: no frame above it yet, and its own
        # ratio is 1 (codes below them elsewhere: maxima set them without a mask)
        flags = took_best.view(xp.uint8)
        xp.maximum(above, flags * xp.uint16(RATIO_MISSING), out=above)
        xp.maximum(fixed, flags * xp.uint16(RATIO_ONE), out=previous)
        del fixed
        # width: sum of (s / best)^p, rescaled by (old best / new best)^p where the best changes
        ratio *= ratio  # (s / best)^4 as two squarings: plain IEEE products, the same on every
        ratio *= ratio  # backend and in every vector lane (pow() need not be)
        xp.multiply(width, ratio, out=work)
        work += xp.float32(1)
        width += ratio
        be.copy_where(width, work, took_best)
        # the index is below k everywhere, so a maximum sets the new best's
        xp.maximum(index, flags * xp.int16(k), out=index)
        xp.fmax(best, score, out=best)  # the larger: where this frame took the best
        self.total[rows] += score

    def finish(self, rows=slice(None), floor=0.0):
        """Sub-slice depth (float32, slice units) and confidence in [0, 1].

        ``rows`` selects a band of rows: every step here is per pixel, so the
        caller can finish a large image band by band with small temporaries.
        """
        if self.count < 2:
            raise ValueError("focus stacking needs at least 2 frames")
        xp = self.be.xp
        best = self.best[rows]
        below, above = (fixed_to_ratios(a[rows], xp) for a in (self.below, self.above))
        # the peak as ratio 1: an array, since CuPy's ufuncs take no all-scalar arguments
        offset = subslice_offset(below, xp.ones_like(below), above, self.be)
        depth = self.index[rows].astype(xp.float32) + offset
        mean = self.total[rows] * xp.float32(1.0 / self.count)
        return depth, peak_confidence(best, mean, self.be, floor)

    def regularisation_weights(self, confidence, rows=slice(None)):
        """``confidence`` capped by the focus curve's width, for :func:`regularise_depth` only.

        ``min(confidence, (WIDTH_REFERENCE / W)^2)``: a pixel that scores
        high over many slices keeps its own depth less firmly and takes more
        of its neighbours'. The confidence reported stays as it is.
        """
        xp = self.be.xp
        cap = xp.float32(WIDTH_REFERENCE) / self.width[rows]
        cap *= cap
        return xp.minimum(confidence, cap).astype(xp.float32, copy=False)


def fixed_point(scaled, xp):
    """``scaled`` (float32, ratios times :data:`RATIO_ONE`) rounded to uint16; ``scaled`` is overwritten."""
    xp.rint(scaled, out=scaled)
    return scaled.astype(xp.uint16)


def fixed_to_ratios(fixed, xp):
    """Fixed-point ratios (:func:`fixed_point`) back to float32; :data:`RATIO_MISSING` becomes :data:`MISSING`."""
    ratio = fixed.astype(xp.float32)
    ratio *= xp.float32(1.0 / RATIO_ONE)
    xp.copyto(ratio, xp.float32(MISSING), where=fixed == RATIO_MISSING)
    return ratio


def subslice_offset(below, peak, above, be):
    """Offset in [-0.5, 0.5] of a Gaussian through three neighbouring scores.

    A Gaussian is fitted through the logarithms of the scores at slices
    ``k - 1, k, k + 1`` (the closed form of Nayar and Nakagawa's Gaussian
    interpolation); where a neighbour is missing (first and last slice,
    marked by a negative score) the offset is 0. Only the ratios of the
    scores matter: ``below`` and ``above`` may be given divided by the peak,
    with ``peak`` 1.
    """
    xp = be.xp
    tiny = xp.float32(1e-12)
    ln_b = xp.log(xp.maximum(below, tiny))
    ln_p = xp.log(xp.maximum(peak, tiny))
    ln_a = xp.log(xp.maximum(above, tiny))
    curvature = ln_b - 2 * ln_p + ln_a
    valid = (below >= 0) & (above >= 0) & (curvature < 0)
    offset = 0.5 * (ln_b - ln_a) / xp.where(valid, curvature, xp.float32(-1))
    offset = xp.where(valid, offset, xp.float32(0))
    return xp.clip(offset, -0.5, 0.5).astype(xp.float32)


#: Focus energy (grey levels scaled to [0, 1]) below which a pixel counts as
#: having no detail at all; far below the noise of any real camera.
ENERGY_FLOOR = 1e-9


def peak_confidence(best, mean, be, floor=0.0):
    """How far the best score stands above the mean score: 0 (flat) to 1 (one clear peak).

    ``(best - mean) / (best + floor + ENERGY_FLOOR)``, ``floor`` being the
    stack's noise energy (:mod:`.noise`): a peak made of noise alone gets
    little confidence. It depends on each pixel's own
    focus curve only (no image-wide statistic), so it is the same whether the
    image is processed whole or in tiles, and the same for dim and bright data.
    """
    floor = be.xp.float32(ENERGY_FLOOR + floor)
    return be.xp.clip((best - mean) / (best + floor), 0, 1).astype(be.xp.float32)


#: Sigma (px) of :func:`regularise_depth`'s neighbourhood: speckle on
#: pcb_aimonen 1.34 % -> 0.17 %, mito_lightsheet 48.8 % -> 1.3 %, and the
#: suite's depth RMSE 1.62 -> 1.52 slices; 4 and 6 px left more speckle on the
#: fluorescence stacks, 16 px smoothed their depth too much (benchmarks/RESULTS.md).
#: Fixed, not scaled by ``smoothing``: its reach bounds the tiles' overlap.
REGULARISE_SIGMA = 8.0


def regularise_depth(depth, confidence, be, sigma):
    """Fill uncertain depth from confident neighbours (normalised convolution, weights confidence squared).

    Each pixel keeps its own depth in proportion to its confidence and takes
    the rest from the confidence-weighted mean depth of a Gaussian
    neighbourhood of ``sigma``: confident pixels stay as they are, isolated
    guesses in flat areas take the depth of the textured surface around them.
    """
    xp = be.xp
    weight = confidence * confidence
    spread = be.gaussian(weight, sigma)
    weight *= depth
    mean = be.gaussian(weight, sigma)
    del weight
    empty = spread <= xp.float32(1e-6)  # no confidence anywhere near: keep the pixel's own depth
    xp.maximum(spread, xp.float32(1e-12), out=spread)
    mean /= spread
    del spread
    xp.copyto(mean, depth, where=empty)
    # confidence * depth + (1 - confidence) * mean, with one temporary
    out = depth - mean
    out *= confidence
    out += mean
    return out.astype(xp.float32, copy=False)


#: Least confidence-squared, averaged over the regularisation's neighbourhood,
#: for a pixel to count as having a usable focus signal (about a confidence
#: of 0.1 around it). Textured scenes keep every pixel; on the sparse
#: light-sheet stack (mito_lightsheet_16bit) the dark background goes.
UNFOCUSED_SUPPORT = 0.01
#: The same threshold as a confidence (the root of the mean confidence squared
#: around a pixel): what the widget's control and ``mark_unfocused`` take.
MIN_CONFIDENCE = UNFOCUSED_SUPPORT**0.5


#: Support (confidence squared, averaged as in :func:`unfocused_mask`) below
#: which :func:`fill_unsupported_depth` hands a pixel over to its far
#: confident neighbours, fully at 0: twice :data:`UNFOCUSED_SUPPORT`. Speckle on
#: mito_lightsheet_16bit 1.30 % -> 0.82 %; 0.015 left 0.91 %, 0.03 raised the
#: depth RMSE of fluorescence-blobs by 0.06 slices (docs/ALGORITHMS.md).
FILL_SUPPORT = 0.02
#: Pyramid level (1 = half resolution) whose mean confidence squared is held
#: to :data:`FILL_SUPPORT` as it is; each coarser level covers four times the
#: area, so its mean counts four times as much. Level 3 filled more from far
#: away (fluorescence-blobs +0.02 slices), level 1 left more speckle.
FILL_LEVEL = 2
#: Sides (px) below which the fill's pyramid stops.
_FILL_COARSEST = 16


def _smoothstep(x):
    """``3x² − 2x³`` of ``x`` clipped to [0, 1], in place (1 exactly at 1)."""
    np.clip(x, 0, 1, out=x)
    square = x * x
    x *= -2
    x += 3
    x *= square
    return x


def _support_from_quarter(quarter, shape, sigma):
    """The Gaussian (``sigma``) mean of a plane, from its pyramid level 2 and back up to ``shape``.

    Two ``pyrDown`` and two ``pyrUp`` add a variance of 10 px² together, so the
    quarter-scale Gaussian makes up the rest: a 16th of the work of a
    full-resolution one, and no output pixel falls below the quarter's minimum.
    """
    import cv2

    rest = max(sigma * sigma - 10.0, 1.0) ** 0.5 / 4
    support = cv2.GaussianBlur(quarter, (0, 0), rest, borderType=cv2.BORDER_REFLECT)
    half = (shape[0] + 1) // 2, (shape[1] + 1) // 2
    return support, lambda: cv2.pyrUp(cv2.pyrUp(support, dstsize=half[::-1]), dstsize=shape[::-1])


def fill_unsupported_depth(depth, confidence, least=FILL_SUPPORT, sigma=REGULARISE_SIGMA):
    """Depth where the focus signal is too weak, taken from the nearest confident surface, however far.

    Where the confidence squared averaged over a Gaussian of ``sigma`` (the
    support that :func:`unfocused_mask` thresholds; here computed at quarter
    resolution) is below ``least``, :func:`regularise_depth` divided tiny
    sums and left a guess. Such pixels take a smooth depth from a pyramid of
    normalised convolutions (push-pull): ``c²·d`` and ``c²`` are halved
    down to a few pixels, the coarsest estimate is carried back up, and each
    level blends its own estimate in by its support, so an empty area gets
    the depth of the confident surface around it, at the scale where there
    is one. The finest hand-over is a smoothstep of ``support / least``:
    pixels with support ``>= least`` are returned exactly as given.

    Host float32 arrays ``(Y, X)``; ``depth`` is filled in place and
    returned. Run on the assembled map, it is the same for any tiling and
    device. Extra memory: about 2.5 planes of the image.

    Examples
    --------
    >>> confidence = np.zeros((64, 64), np.float32); confidence[:, :8] = 0.9
    >>> depth = np.full((64, 64), 9.0, np.float32); depth[:, :8] = 3.0
    >>> filled = fill_unsupported_depth(depth.copy(), confidence)
    >>> float(filled[:, :6].max()), round(float(filled[:, 60].mean()), 2)
    (3.0, 3.0)
    """
    import cv2

    border = cv2.BORDER_REFLECT
    weight = np.multiply(confidence, confidence, dtype=np.float32)
    if min(weight.shape) < 4 * _FILL_COARSEST or not weight.any():
        return depth  # too small for a pyramid, or no focus signal anywhere to fill from
    weighted = weight * depth
    levels = []
    while min(weight.shape) >= 2 * _FILL_COARSEST:
        weight, weighted = cv2.pyrDown(weight, borderType=border), cv2.pyrDown(weighted, borderType=border)
        levels.append((weight, weighted))
    del weight, weighted
    quarter_support, full_support = _support_from_quarter(levels[1][0], depth.shape, sigma)
    if quarter_support.min() >= least:
        return depth  # every pixel has support: nothing changes
    estimate = None
    for level in range(len(levels), 0, -1):
        weight, weighted = levels.pop()
        mean = weighted / np.maximum(weight, np.float32(1e-12))
        if estimate is None:  # coarsest: cells with no confidence at all take the image's mean
            mean[weight <= 1e-12] = weighted.sum() / weight.sum()
        else:
            up = cv2.pyrUp(estimate, dstsize=weight.shape[::-1])
            weight *= np.float32(4.0 ** (level - FILL_LEVEL) / least)
            mean -= up
            mean *= _smoothstep(weight)
            mean += up
        estimate = up = mean
    del levels, weight, weighted, mean, up
    # depth + (1 − keep)·(far − depth), keep = smoothstep(support / least): 0 where keep is 1
    change = full_support()
    change *= np.float32(1.0 / least)
    change = _smoothstep(change)
    change -= 1
    far = cv2.pyrUp(estimate, dstsize=depth.shape[::-1])
    del estimate
    np.subtract(depth, far, out=far)
    far *= change
    depth += far
    return depth


def unfocused_mask(confidence, sigma=REGULARISE_SIGMA, least=UNFOCUSED_SUPPORT):
    """Pixels with no usable focus signal in or around them: their depth is a guess.

    ``confidence`` is a host array whose last two axes are the image
    (``(Y, X)``, or any leading axes of time or channels). Where the
    confidence-squared averaged by a Gaussian of ``sigma`` stays below
    ``least``, neither the pixel nor its neighbourhood says where focus is,
    and :func:`regularise_depth` had nothing to fill it from.

    Examples
    --------
    >>> confidence = np.zeros((40, 40), np.float32); confidence[:, :20] = 0.8
    >>> mask = unfocused_mask(confidence)
    >>> bool(mask[:, :20].any()), bool(mask[:, 39].all())
    (False, True)
    """
    import cv2

    confidence = np.asarray(confidence, dtype=np.float32)
    planes = confidence.reshape((-1,) + confidence.shape[-2:])
    mask = np.empty(planes.shape, dtype=bool)
    for plane, out in zip(planes, mask):
        support = cv2.GaussianBlur(plane * plane, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        np.less(support, least, out=out)
    return mask.reshape(confidence.shape)
