"""Registration images: reduced, band-passed luminance that defocus and exposure leave comparable, and their pyramids."""

import math

import cv2
import numpy as np

from ..dtypes import ceil_div
from ..luma import LUMA_WEIGHTS

#: Long side (px) of the images transforms are estimated on. About a
#: megapixel: enough for errors well below a pixel at 12 MP, and fast.
REGISTRATION_MAX_SIDE = 1024

#: Band-pass of the registration image, as Gaussian sigmas. The fine one
#: (px) removes sensor noise and JPEG blocks; the coarse one (fraction of the
#: long side) removes illumination, vignetting and exposure differences.
_FINE_SIGMA = 2.0
_COARSE_SIGMA_FRACTION = 1 / 64
#: Gauss-Newton refinement starts on the level whose long side is at most
#: this, where even a 15 % scale step moves pixels by only a few pixels.
_COARSEST_SIDE = 64


def registration_image(frame, max_side=REGISTRATION_MAX_SIDE):
    """Band-passed luminance of ``frame``, reduced, at unit RMS.

    Defocus blurs fine detail but keeps the position of mid-frequency
    structure; exposure changes add gain and offset. A difference of
    Gaussians keeps what all frames share, and normalising its RMS makes
    images of any dtype and exposure comparable.

    Parameters
    ----------
    frame : ndarray
        ``(Y, X)`` or ``(Y, X, 3)`` RGB, any dtype.
    max_side : int, optional
        Frames larger than this are shrunk by a power of two (the sizes
        :meth:`napari_focus_stack.io.FrameSequence.reduced` returns).

    Returns
    -------
    image : ndarray of float32
        ``(y, x)``, zero mean, RMS 1 (0 everywhere for a flat frame).

    Examples
    --------
    >>> frame = np.random.default_rng(0).integers(0, 255, (600, 2000, 3), dtype=np.uint8)
    >>> image = registration_image(frame)
    >>> image.shape, image.dtype.name, round(float(image.std()), 3)
    ((300, 1000), 'float32', 1.0)
    """
    gray = _luminance(frame)
    factor = reduction_factor(gray.shape, max_side)
    if factor > 1:
        size = (ceil_div(gray.shape[1], factor), ceil_div(gray.shape[0], factor))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    band = _blur(gray, _FINE_SIGMA) - _wide_blur(gray, _coarse_sigma(gray.shape))
    rms = float(np.sqrt(np.mean(np.square(band, dtype=np.float64))))
    if not math.isfinite(rms):  # NaN or Inf pixels (frames reach here with them filled): no usable content
        return np.zeros_like(band)
    return band / np.float32(rms) if rms > 0 else band


def _luminance(frame):
    """Float32 grey image of a gray or RGB frame (Rec. 601 weights)."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        return frame.astype(np.float32)
    weights = np.asarray([LUMA_WEIGHTS], dtype=np.float32)
    return cv2.transform(frame.astype(np.float32, copy=False), weights)


def reduction_factor(shape, max_side):
    """Smallest power of two that brings the long side of ``shape`` to ``max_side`` or less."""
    factor = 1
    while ceil_div(max(shape[:2]), factor) > max_side:
        factor *= 2
    return factor


def _coarse_sigma(shape):
    """Sigma of the band-pass's low cut for registration images of ``shape``."""
    # Small images keep a band of two octaves above the fine sigma.
    return max(_COARSE_SIGMA_FRACTION * max(shape[:2]), 4 * _FINE_SIGMA)


def _blur(image, sigma):
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def _wide_blur(image, sigma):
    """A Gaussian blur of about ``sigma`` px, computed on a reduced copy.

    A wide kernel at full size costs ten times more; the result is smooth,
    so shrinking by up to a quarter of sigma and enlarging back loses
    nothing that matters.
    """
    factor = 2 ** max(0, int(math.log2(max(sigma, 1.0) / 4)))
    if factor == 1:
        return _blur(image, sigma)
    height, width = image.shape
    small_size = (ceil_div(width, factor), ceil_div(height, factor))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    return cv2.resize(_blur(small, sigma / factor), (width, height), interpolation=cv2.INTER_LINEAR)


def _pyramid(image):
    """``[image, half, quarter, ...]`` down to a long side of about :data:`_COARSEST_SIDE`."""
    levels = [np.ascontiguousarray(image, dtype=np.float32)]
    while max(levels[-1].shape) > _COARSEST_SIDE and min(levels[-1].shape) >= 16:
        levels.append(cv2.pyrDown(levels[-1], borderType=cv2.BORDER_REFLECT))
    return levels
