"""Scores against the truth: PSNR, SSIM, depth error, depth speckle, where depth is observable."""

import cv2
import numpy as np
from skimage import color, metrics, util

from ..engine.dtypes import full_scale


def _luminance(image):
    """Luminance in [0, 1] units of a gray or RGB image of any dtype."""
    image = util.img_as_float32(np.asarray(image))
    return color.rgb2gray(image) if image.ndim == 3 else image


def textured_mask(texture, *, radius=4, threshold=0.02):
    """Where depth is observable: pixels whose neighbourhood has texture.

    Parameters
    ----------
    texture : ndarray
        All-in-focus image ``(Y, X[, 3])``, any dtype (scaled to [0, 1]).
    radius : int, optional
        Half-size of the square neighbourhood; also the width of the image
        border left out, where neighbourhoods are mirrored.
    threshold : float, optional
        Least standard deviation of the luminance, in [0, 1] units, in the
        neighbourhood.

    Returns
    -------
    mask : ndarray of bool
        ``(Y, X)``.

    Examples
    --------
    >>> from napari_focus_stack.synthetic import make_texture
    >>> image = np.zeros((32, 32), dtype=np.float32)
    >>> image[:, 16:] = make_texture("noise", (32, 16))
    >>> mask = textured_mask(image, radius=2)
    >>> bool(mask[:, :12].any()), bool(mask[2:-2, 20:-2].all())
    (False, True)
    """
    luminance = _luminance(texture).astype(np.float32)
    size = (2 * radius + 1, 2 * radius + 1)
    mean = cv2.blur(luminance, size, borderType=cv2.BORDER_REFLECT)
    mean_square = cv2.blur(luminance * luminance, size, borderType=cv2.BORDER_REFLECT)
    local_std = np.sqrt(np.clip(mean_square - mean * mean, 0, None))
    mask = local_std > threshold
    border = np.zeros_like(mask)
    border[radius : mask.shape[0] - radius, radius : mask.shape[1] - radius] = True
    return mask & border


def depth_rmse(estimate, truth, mask=None):
    """Root-mean-square difference between two depth maps, in slices.

    Parameters
    ----------
    estimate, truth : ndarray
        ``(Y, X)`` depth maps.
    mask : ndarray of bool, optional
        Pixels to score, e.g. :func:`textured_mask`; all by default.

    Returns
    -------
    float

    Examples
    --------
    >>> depth_rmse(np.full((4, 4), 2.5), np.full((4, 4), 2.0))
    0.5
    """
    difference = np.asarray(estimate, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    if mask is not None:
        difference = difference[np.asarray(mask, dtype=bool)]
    if difference.size == 0:
        raise ValueError("the mask selects no pixels")
    return float(np.sqrt(np.mean(difference**2)))


def depth_speckle(depth, *, window=15, slices=2.0):
    """Share of finite pixels more than ``slices`` from the median of their ``window`` square.

    Isolated wrong depths ("speckle") in a depth map; needs no truth, so it
    serves real stacks. Non-finite pixels are left out (and stand in for the
    map's median when their neighbours' medians are taken).

    Examples
    --------
    >>> depth = np.full((32, 32), 3.0, np.float32); depth[10, 10] = 9.0
    >>> round(depth_speckle(depth) * 32 * 32)
    1
    """
    from scipy import ndimage

    depth = np.asarray(depth)
    finite = np.isfinite(depth)
    if not finite.any():
        return float("nan")
    filled = np.where(finite, depth, np.median(depth[finite])).astype(np.float32)
    median = ndimage.median_filter(filled, size=window, mode="nearest")
    return float(((np.abs(filled - median) > slices) & finite).sum() / finite.sum())


def psnr(image, truth, data_range=None):
    """Peak signal-to-noise ratio (dB) of ``image`` against ``truth``.

    The peak is ``data_range``, by default the full range of ``truth``'s
    dtype (1.0 for floats).

    Examples
    --------
    >>> truth = np.full((8, 8), 100, dtype=np.uint8)
    >>> round(psnr(truth + 1, truth), 2)
    48.13
    """
    truth = np.asarray(truth)
    peak = full_scale(truth.dtype) if data_range is None else float(data_range)
    return float(metrics.peak_signal_noise_ratio(truth, np.asarray(image), data_range=peak))


def ssim(image, truth, data_range=None):
    """Structural similarity of ``image`` to ``truth``, gray or RGB.

    The data range is ``data_range``, by default the full range of
    ``truth``'s dtype (1.0 for floats).

    Examples
    --------
    >>> from napari_focus_stack.synthetic import make_texture
    >>> truth = make_texture("noise", (32, 32))
    >>> ssim(truth, truth)
    1.0
    """
    truth = np.asarray(truth)
    return float(
        metrics.structural_similarity(
            truth,
            np.asarray(image),
            data_range=full_scale(truth.dtype) if data_range is None else float(data_range),
            channel_axis=-1 if truth.ndim == 3 else None,
        )
    )
