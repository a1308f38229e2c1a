"""Exposure: every frame's gain (and, where it shows, offset) relative to the reference."""

import cv2
import numpy as np

from ..dtypes import ceil_div, full_scale
from ..warp import coverage_mask, rescale_transforms, warp_frame
from .images import reduction_factor

#: Exposure is compared on images shrunk to this long side (px), through
#: the means of tiles (rows, columns) so large that defocus blur leaks
#: little across their borders; a tile counts when the common region
#: fills this much of it.
GAIN_MAX_SIDE = 256
_GAIN_TILES = (6, 8)
_GAIN_TILE_COVERAGE = 0.95
#: An offset is fitted only when the reference's tile means vary by this
#: much (relative standard deviation) and the offset exceeds this many
#: standard errors; on simulated stacks without offsets the largest was 5.
_OFFSET_MIN_SPREAD = 0.05
_OFFSET_MIN_T = 8.0
#: Gains outside this range are not exposure flicker but failed frames.
_GAIN_RANGE = (0.5, 2.0)


def estimate_gains(images, transforms, reference=None, *, full_shape=None):
    """Per-frame, per-channel exposure of every frame relative to the reference.

    Defocus changes local contrast but not local means, so exposures are
    compared through the means of large tiles of the region every frame
    covers, in the reference geometry. The gain is the ratio of the overall
    means; an offset is fitted as well (a line through the tile means) only
    where the tiles show one clearly: with the blur changing between frames,
    contrast alone cannot tell an offset from a gain.

    Parameters
    ----------
    images : sequence of ndarray
        Frames ``(y, x)`` or ``(y, x, 3)``, all of one shape, any dtype;
        reduced ones are enough (and fast).
    transforms : ndarray
        ``(Z, 3, 3)`` from :func:`estimate_transforms`.
    reference : int, optional
        The reference frame; the middle one by default.
    full_shape : tuple of int, optional
        ``(Y, X, ...)`` of the frames ``transforms`` are expressed in, when
        ``images`` are reduced copies; by default the images' own.

    Returns
    -------
    gains, offsets : ndarray of float64
        ``(Z,)`` for gray, ``(Z, 3)`` for RGB, such that
        ``frame_k ~ gains[k] * reference + offsets[k]`` (offsets in the
        images' value units); 1 and 0 for the reference. Gains are kept in
        [0.5, 2] (a frame beyond is not flicker but a failed frame).

    Examples
    --------
    >>> from napari_focus_stack.synthetic import simulate_stack
    >>> sim = simulate_stack((96, 128), 5, rgb=True, gain=0.1, seed=3)
    >>> gains, offsets = estimate_gains(sim.frames, sim.transforms)
    >>> bool(np.abs(gains - sim.gains).max() < 0.01)
    True
    """
    n = len(images)
    reference = n // 2 if reference is None else int(reference)
    reference_values, reference_clipped = _exposure_image(images[reference])
    shape = reference_clipped.shape
    source_shape = np.shape(images[reference]) if full_shape is None else full_shape
    transforms = rescale_transforms(transforms, source_shape, shape)
    region = np.ones(shape, dtype=bool)
    for transform in transforms:
        region &= coverage_mask(transform, shape, shape)
    gains, offsets = [], []
    for k in range(n):  # one float copy at a time: memory does not grow with the frames
        small_values, small_clipped = _exposure_image(images[k])
        values = warp_frame(small_values, transforms[k], shape).reshape(reference_values.shape)
        clipped = warp_frame(small_clipped.view(np.uint8), transforms[k], shape) > 0
        # Clipped highlights would pull the means down: compare other pixels.
        pixels = region & ~reference_clipped & ~clipped
        reference_means = _tile_means(reference_values, pixels)
        gain, offset = _exposure_fit(reference_means, _tile_means(values, pixels))
        gains.append(gain)
        offsets.append(offset)
    gains, offsets = np.array(gains), np.array(offsets)
    gains[reference], offsets[reference] = 1.0, 0.0
    np.clip(gains, *_GAIN_RANGE, out=gains)
    return (gains[:, 0], offsets[:, 0]) if np.ndim(images[reference]) == 2 else (gains, offsets)


def shrink(image, max_side):
    """``image`` reduced by a power of two (area average) so its long side is at most ``max_side``."""
    factor = reduction_factor(image.shape, max_side)
    if factor == 1:
        return image
    size = (ceil_div(image.shape[1], factor), ceil_div(image.shape[0], factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA).reshape(size[::-1] + image.shape[2:])


def _exposure_image(image):
    """``image`` shrunk to :data:`GAIN_MAX_SIDE`, float32 ``(y, x, C)``, and where it was clipped.

    A pixel of the small image counts as clipped when any full-size pixel
    it covers was within 2 % of an integer dtype's full scale.
    """
    image = np.asarray(image)
    factor = reduction_factor(image.shape, GAIN_MAX_SIDE)
    size = (ceil_div(image.shape[1], factor), ceil_div(image.shape[0], factor))
    channels = 1 if image.ndim == 2 else image.shape[2]
    values = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    if image.dtype.kind in "ui":
        limit = 0.98 * full_scale(image.dtype)
        clipped = cv2.inRange(image, (0,) * channels, (limit,) * channels) == 0
    else:
        clipped = np.zeros(image.shape[:2], dtype=bool)
    clipped = cv2.resize(clipped.view(np.uint8), size, interpolation=cv2.INTER_AREA) > 0
    return values.reshape(size[::-1] + (channels,)), clipped


def _tile_means(image, pixels):
    """``(T, C)`` float64 means of ``image`` over ``pixels`` in each tile they fill."""
    weight = pixels.astype(np.float32)
    size = (_GAIN_TILES[1], _GAIN_TILES[0])
    weighted = image.astype(np.float32) * weight[..., None]
    sums = cv2.resize(weighted, size, interpolation=cv2.INTER_AREA)
    covered = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
    full = covered >= _GAIN_TILE_COVERAGE
    if not full.any():  # the frames share too little: use what there is
        full = covered > 0
    means = sums.reshape(covered.shape + (-1,))[full] / covered[full][:, None]
    return means.astype(np.float64)


def _exposure_fit(x, y):
    """Per column, gain and offset of ``y ~ gain * x + offset`` from tile means.

    The offset is kept only where it stands out: the tile means must spread
    (a flat or repetitive scene has no lever arm) and the line's intercept
    must exceed :data:`_OFFSET_MIN_T` standard errors (blur leaking across
    tile borders makes the errors larger than the fit assumes). Otherwise
    ``gain = mean(y) / mean(x)``, which blur cannot bias.
    """
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    ratio = y_mean / np.maximum(x_mean, 1e-12)
    spread = np.maximum(((x - x_mean) ** 2).sum(axis=0), 1e-12)
    levered = np.sqrt(spread / len(x)) >= _OFFSET_MIN_SPREAD * x_mean
    if len(x) < 4 or not levered.any():
        return ratio, np.zeros_like(ratio)
    slope = ((x - x_mean) * (y - y_mean)).sum(axis=0) / spread
    intercept = y_mean - slope * x_mean
    residual = ((y - slope * x - intercept) ** 2).sum(axis=0) / (len(x) - 2)
    intercept_error = np.sqrt(residual * (1 / len(x) + x_mean**2 / spread))
    significant = levered & (np.abs(intercept) > _OFFSET_MIN_T * intercept_error)
    return np.where(significant, slope, ratio), np.where(significant, intercept, 0.0)
