"""The reference backend: an array module and its ``ndimage`` (NumPy/SciPy, or CuPy/cupyx).

Filters, transfers, resampling and per-pixel helpers, written once against
``xp`` and ``ndi``: :class:`NdimageBackend` on NumPy is the reference that
the OpenCV backend is tested against, and the code path CuPy runs.
"""

import contextlib
import math
from functools import lru_cache

import numpy as np

from ..luma import LUMA_WEIGHTS
from ..warp import source_coordinates
from .memory import MemoryPolicy, host_available_memory

#: Binomial kernel of the Burt-Adelson pyramid.
PYRAMID_KERNEL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


@lru_cache(maxsize=64)
def gaussian_kernel(sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian, truncated at 3 sigma (float32)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


@lru_cache(maxsize=64)
def box_kernel(radius: int) -> np.ndarray:
    """1-D mean over ``2 * radius + 1`` samples (float32)."""
    n = 2 * int(radius) + 1
    return np.full(n, 1.0 / n, dtype=np.float32)


class NdimageBackend:
    """Array module + ``ndimage`` module: NumPy/SciPy, or CuPy/cupyx."""

    def __init__(self, xp=np, ndi=None, name="cpu"):
        self.xp = xp
        self._ndi = ndi
        self.name = name
        self._constants = {}

    @property
    def ndi(self):
        """The ``ndimage`` module; SciPy's is imported on first use (it costs
        a quarter of a second, which the OpenCV path never needs to pay)."""
        if self._ndi is None:
            import scipy.ndimage

            self._ndi = scipy.ndimage
        return self._ndi

    def __repr__(self):
        return f"{type(self).__name__}({self.name!r})"

    # --- transfers -------------------------------------------------------
    def asarray(self, a):
        """Put ``a`` on this backend's device, keeping its dtype."""
        return self.xp.asarray(a)

    def to_host(self, a) -> np.ndarray:
        """A NumPy array with the contents of ``a``."""
        return a if isinstance(a, np.ndarray) else self.xp.asnumpy(a)

    def synchronize(self):
        """Wait for queued device work (no-op on the CPU)."""

    def constant(self, values):
        """``values`` (a small float32 vector: a filter kernel, colour weights) on the device.

        Uploaded once per backend: on a GPU each upload from pageable host
        memory waits for the queued work, which would stall every filter call.
        """
        key = tuple(float(v) for v in np.ravel(values))
        array = self._constants.get(key)
        if array is None:
            array = self._constants[key] = self.xp.asarray(np.asarray(key, dtype=np.float32))
        return array

    #: Whether frames are staged in page-locked memory before they go up (a GPU).
    stages_in_pinned_memory = False

    #: Errors that mean "this did not fit": the pipeline retries in smaller tiles.
    out_of_memory = (MemoryError,)

    def available_memory(self):
        """Bytes this device can still allocate (host RAM on the CPU)."""
        return host_available_memory() or 4 * 2**30

    def release_memory(self):
        """Return cached blocks to the device after an out-of-memory error."""

    #: How this device's working memory is planned (tiles, bands).
    memory = MemoryPolicy()

    def default_budget(self):
        """Working memory a run may use by default: half the free host memory."""
        return self.available_memory() // 2

    def device(self):
        """Context manager that makes this backend's device current (no-op on the CPU)."""
        return contextlib.nullcontext()

    # --- filters (float32 in, float32 out) -------------------------------
    # Filters write into ``out`` when given: the CPU pipeline reuses its
    # buffers between frames instead of faulting in fresh pages for each.
    def correlate_separable(self, image, kernel, mode="reflect", out=None):
        """Correlate both image axes with the same 1-D ``kernel``."""
        k = self.constant(kernel)
        rows = self.ndi.correlate1d(image, k, axis=0, mode=mode)
        return self.ndi.correlate1d(rows, k, axis=1, mode=mode, output=out)

    def gaussian(self, image, sigma, out=None):
        return self.correlate_separable(image, gaussian_kernel(float(sigma)), out=out)

    def box_mean(self, image, radius, out=None):
        return self.correlate_separable(image, box_kernel(int(radius)), out=out)

    def laplacian(self, image, out=None):
        """Five-point Laplacian."""
        return self.ndi.laplace(image, mode="reflect", output=out)

    def resize(self, image, factor):
        """Bilinear up-sampling by an integer ``factor``, pixel centres aligned.

        Works on ``(Y, X)`` and ``(Y, X, C)``; the edge value is repeated
        beyond the border.
        """
        if factor == 1:
            return image
        zoom = (factor, factor) + (1,) * (image.ndim - 2)
        return self.ndi.zoom(image, zoom, order=1, mode="nearest", grid_mode=True)

    def pyramid_down(self, image, out=None, scratch=None):
        """Blur with the binomial kernel and keep every other row and column.

        ``out`` (the halved size) and ``scratch`` (``image``'s size), float32,
        are reused when given: fresh frame-sized arrays cost their page faults.
        """
        blurred = self.correlate_separable(image, PYRAMID_KERNEL, mode="mirror", out=scratch)
        if out is None:
            return self.xp.ascontiguousarray(blurred[::2, ::2])
        out[...] = blurred[::2, ::2]
        return out

    #: Whether :meth:`pyramid_reduce` and :meth:`pyramid_up` write into their
    #: ``scratch`` (callers that lend buffers can then use one for more).
    pyramid_needs_scratch = True

    def pyramid_reduce(self, image, out=None, scratch=None):
        """:meth:`pyramid_down` where ulp-level differences do not matter (soft blends, not arg-max choices).

        The same kernel and borders; the CPU backend hands it to OpenCV's
        ``pyrDown``, 4x faster, within 2e-7 of :meth:`pyramid_down`.
        """
        return self.pyramid_down(image, out=out, scratch=scratch)

    def pyramid_up(self, image, shape, out=None, scratch=None):
        """Inverse of :meth:`pyramid_down`'s sampling: zero-fill and interpolate.

        ``out`` and ``scratch``, float32 arrays of ``shape``, are reused when given.
        The CPU backend hands it to OpenCV's ``pyrUp``, 3x faster, within 2e-7 of this.
        """
        xp = self.xp
        if scratch is None:
            up = xp.zeros(tuple(shape[:2]) + image.shape[2:], dtype=xp.float32)
        else:
            up = scratch
            up.fill(0)
        up[::2, ::2] = image
        kernel = np.asarray(PYRAMID_KERNEL, dtype=np.float32) * 2
        return self.correlate_separable(up, kernel, mode="mirror", out=out)

    # --- resampling ----------------------------------------------------
    #: Whether aligned frames are warped by :meth:`warp_cubic` here (on the
    #: device) rather than by OpenCV on the host's read-ahead thread.
    warps_on_device = True

    def warp_cubic(self, image, transform, rows, cols, origin=(0, 0)):
        """Bicubic resampling of ``image`` at the output pixels ``rows`` x ``cols``.

        ``transform`` (3x3, host) maps output pixel coordinates to frame
        pixel coordinates; ``image`` is the part of the frame that starts at
        ``origin`` = ``(x, y)``. Source positions are
        :func:`~napari_focus_stack.engine.warp.source_coordinates` (float32, the same whatever part
        is asked for, so tiles resample exactly as the whole image does); the
        kernel is Keys' cubic with ``a = -0.75`` and pixels beyond the border
        repeat it, as OpenCV's ``remap`` with ``INTER_CUBIC`` and
        ``BORDER_REPLICATE``. Works on ``(Y, X)`` and ``(Y, X, C)`` of any
        dtype; returns unrounded float32 ``(len(rows), len(cols)[, C])``.
        """
        xp = self.xp
        height, width = image.shape[:2]
        channels = image.shape[2:]
        flat = image.reshape((height * width,) + channels)
        out = xp.empty((rows.stop - rows.start, cols.stop - cols.start) + channels, dtype=xp.float32)
        step = max(1, self.memory.warp_band_pixels // max(out.shape[1], 1))
        expand = (slice(None), slice(None)) + (None,) * len(channels)
        for start in range(rows.start, rows.stop, step):
            band_rows = slice(start, min(rows.stop, start + step))
            sx, sy = source_coordinates(transform, band_rows, cols, xp)
            sx -= xp.float32(origin[0])  # exact: integers off float32 values
            sy -= xp.float32(origin[1])
            x0, y0 = xp.floor(sx), xp.floor(sy)
            wx, wy = _keys_weights(sx - x0, xp), _keys_weights(sy - y0, xp)
            del sx, sy
            x0, y0 = x0.astype(xp.int64), y0.astype(xp.int64)
            band = None
            for i in range(4):
                offsets = xp.clip(y0 + (i - 1), 0, height - 1) * width
                row = None
                for j in range(4):
                    taps = flat[offsets + xp.clip(x0 + (j - 1), 0, width - 1)].astype(xp.float32)
                    taps *= wx[j][expand]
                    row = taps if row is None else xp.add(row, taps, out=row)
                row *= wy[i][expand]
                band = row if band is None else xp.add(band, row, out=band)
            out[start - rows.start : band_rows.stop - rows.start] = band
        return out

    # --- per-pixel -------------------------------------------------------
    def for_each_band(self, function, height, rows=128, width=None):
        """Call ``function(rows_slice)`` for bands of ``rows`` rows covering ``height``.

        The bands are independent; on the CPU they run on all cores (NumPy
        releases the GIL in its loops), on a GPU one after the other, larger
        (:meth:`MemoryPolicy.rows_per_band` of ``width``).
        """
        if width is not None:
            rows = self.memory.rows_per_band(width, rows)
        for start in range(0, height, rows):
            function(slice(start, start + rows))

    def accumulate_product(self, total, band, weight, minus=None):
        """``total += (band - minus) * weight`` (``minus`` None: 0), in place, for float32 arrays of one shape.

        ``band`` may be overwritten.
        """
        if minus is not None:
            band -= minus
        band *= weight
        total += band

    def copy_where(self, dst, src, mask):
        """``dst[mask] = src[mask]`` in place; a 2-D mask applies to every channel."""
        if dst.ndim == 3 and mask.ndim == 2:
            mask = mask[..., None]
        self.xp.copyto(dst, src, where=mask)

    # --- conversions -----------------------------------------------------
    def channel_planes(self, frame):
        """The channels of ``(Y, X[, C])`` as a list of 2-D arrays (views where possible)."""
        return [frame] if frame.ndim == 2 else [frame[..., c] for c in range(frame.shape[2])]

    def luminance(self, frame, out=None):
        """Grey float32 image from ``(Y, X)`` or ``(Y, X, 3)``, same value units.

        Written to ``out`` (float32, ``(Y, X)``) when given, else a new array.
        """
        xp = self.xp
        if frame.ndim == 2:
            if out is None:
                return frame.astype(xp.float32)
            xp.copyto(out, frame)
            return out
        w = self.constant(LUMA_WEIGHTS)
        # Elementwise, channel by channel: no float32 copy of the whole colour
        # frame, and no matrix product, which CuPy would hand to cuBLAS (a
        # library the GPU path otherwise never loads).
        gray = xp.multiply(frame[..., 0], w[0], dtype=xp.float32, out=out)
        for c in (1, 2):
            gray += xp.multiply(frame[..., c], w[c], dtype=xp.float32)
        return gray


def _keys_weights(t, xp):
    """Weights of the taps at -1, 0, 1, 2 for fractions ``t`` (Keys' cubic, a = -0.75, as OpenCV)."""
    a = xp.float32(-0.75)
    u = t + xp.float32(1)
    w0 = ((a * u - 5 * a) * u + 8 * a) * u - 4 * a
    w1 = ((a + 2) * t - (a + 3)) * t * t + 1
    s = 1 - t
    w2 = ((a + 2) * s - (a + 3)) * s * s + 1
    return w0, w1, w2, 1 - w0 - w1 - w2
