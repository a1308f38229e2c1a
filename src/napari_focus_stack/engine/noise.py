"""Sensor noise: how much of a frame's focus energy is noise alone.

Focus scores are Laplacian energies, and noise has Laplacian energy too. Where
no frame has detail above the noise (flat areas, dim fluorescence, low
light), the scores differ only by chance, and weighting by them copies one
noisy frame. Adding the energy that the noise alone would give to every
score makes such pixels' weights alike, so the frames there are averaged and
the noise drops, while where one frame's detail stands far above the noise
the weights stay as steep as before.

The noise is estimated once per frame, on the host, from the frame as read
(before alignment and scaling): the same number whatever the device, the
tiling or the tile, so results stay identical across them.
"""

import functools
import threading

import cv2
import numpy as np

from .dtypes import full_scale
from .luma import LUMA_WEIGHTS

#: Noise energies added to each focus score before weighting. 3 gave the
#: best mean PSNR and SSIM over the quality suite's families (1, 3 and 10
#: tried; benchmarks/RESULTS.md, docs/ALGORITHMS.md).
NOISE_FLOOR = 3.0

#: Side of the central square on which a frame's noise is estimated.
SAMPLE_SIDE = 1024

#: Immerkaer's (1996) noise kernel: the difference of two Laplacians, which
#: cancels smooth image structure; white noise of std s gives std 6 s.
_IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)


def noise_sigma(frame, value_range):
    """Standard deviation of a frame's pixel noise, in units of ``value_range``.

    Immerkaer's fast estimate, made robust to texture by taking the median of
    the absolute residual rather than its mean (a textured image still
    inflates it slightly). ``frame`` is a host ``(Y, X[, C])`` array.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> frame = np.clip(128 + rng.normal(0, 5, (256, 256)), 0, 255).astype(np.uint8)
    >>> round(noise_sigma(frame, 255) * 255)
    5
    """
    return frame_statistics(frame, value_range)[0]


def frame_statistics(frame, value_range, variance=False):
    """Noise std (:func:`noise_sigma`) and, when asked, the variance of a frame's luminance (else None).

    Both in units of ``value_range``, measured on the central
    :data:`SAMPLE_SIDE` square, non-finite pixels left out.
    """
    height, width = frame.shape[:2]
    top, left = max(0, (height - SAMPLE_SIDE) // 2), max(0, (width - SAMPLE_SIDE) // 2)
    crop = frame[top : top + SAMPLE_SIDE, left : left + SAMPLE_SIDE]
    if min(crop.shape[:2]) < 3:
        return 0.0, 0.0 if variance else None
    luma = np.asarray([LUMA_WEIGHTS], dtype=np.float32)
    # in bands of rows, keeping every fourth row of the residual: this runs on
    # the read-ahead thread beside the frame being measured, so its memory
    # stays a fraction of one grey frame
    samples, count, total, squares = [], 0, 0.0, 0.0
    for start in range(0, crop.shape[0] - 2, _BAND_ROWS):
        band = np.ascontiguousarray(crop[start : start + _BAND_ROWS + 2], dtype=np.float32)
        if band.ndim == 3:
            band = cv2.transform(band, luma).reshape(band.shape[:2])
        if variance:
            inner = band[:_BAND_ROWS] if start + _BAND_ROWS + 2 < crop.shape[0] else band
            finite = inner[np.isfinite(inner)].astype(np.float64)
            count, total, squares = count + finite.size, total + finite.sum(), squares + (finite * finite).sum()
        residual = cv2.filter2D(band, -1, _IMMERKAER)[1:-1:4, 1:-1]
        samples.append(np.abs(residual[np.isfinite(residual)]))
    residual = np.concatenate(samples)
    spread = None
    if variance:
        spread = (max(0.0, squares / count - (total / count) ** 2) if count else 0.0) / float(value_range) ** 2
    if residual.size == 0:
        return 0.0, spread
    middle = residual.size // 2
    residual.partition(middle)  # in place: the median without another copy
    return float(residual[middle]) / (0.6745 * 6) / float(value_range), spread


#: Rows per band of :func:`noise_sigma`.
_BAND_ROWS = 32


@functools.cache
def noise_energy_gain(radius, scale_factor):
    """Mean focus energy (:func:`~.focus.laplacian_energy`) of unit white noise, up-sampled by ``scale_factor``.

    Measured once on a fixed noise image with the engine's own operators, so
    it matches them exactly (up-sampling correlates the noise and lowers it).
    """
    from .backend import get_backend
    from .focus import laplacian_energy

    be = get_backend("cpu")
    noise = np.random.default_rng(12345).standard_normal((256, 256)).astype(np.float32)
    if scale_factor > 1:
        noise = be.resize(noise, scale_factor)
    energy = laplacian_energy(noise, radius, be)
    margin = 8 * scale_factor
    return float(energy[margin:-margin, margin:-margin].mean())


class NoiseProbe:
    """A frame sequence that notes each frame's noise as it is read.

    Wraps the frames as they come from the reader, under any alignment or
    tiling: every read of frame ``k`` passes through here whole, so its
    noise is known (:meth:`floor`) by the time frame ``k`` is measured.
    Everything else is the wrapped sequence's.
    """

    def __init__(self, frames):
        self.frames = frames
        self.dtype, self.shape = frames.dtype, tuple(frames.shape)
        self._sigma, self._variance = {}, {}
        self._lock = threading.Lock()
        dtype = np.dtype(frames.dtype)
        self._value_range = full_scale(dtype)

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, k):
        frame = self.frames[k]
        if k not in self._sigma:
            sigma, variance = frame_statistics(frame, self._value_range, variance=k == 0)  # reference(): frame 0's
            with self._lock:
                self._sigma[k], self._variance[k] = sigma, variance
        return frame

    def __getattr__(self, name):
        if name == "frames":  # not set yet (a copy being made): no recursion
            raise AttributeError(name)
        return getattr(self.frames, name)

    def sigma(self, k):
        """Noise std of frame ``k`` (unit range), reading it if it was not read yet."""
        if k not in self._sigma:
            self[k]
        return self._sigma[k]

    def reference(self, radius):
        """A fixed energy of the stack's scale: the first frame's luminance variance, times the noise gain.

        Weighted fusion keeps its weights relative to it (see
        :class:`~.fuse.WeightedFusion`); any fixed number of the data's
        scale would do, and this one is the same for every tile and device.
        """
        self.sigma(0)
        return noise_energy_gain(radius, 1) * self._variance[0]

    def floor(self, k, radius, scale_factor):
        """Focus energy to add to frame ``k``'s scores: :data:`NOISE_FLOOR` times its noise's."""
        return NOISE_FLOOR * noise_energy_gain(radius, scale_factor) * self.sigma(k) ** 2
