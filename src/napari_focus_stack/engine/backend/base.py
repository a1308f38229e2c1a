"""The one place that picks the array module and the device.

Every stage takes a :class:`Backend` and uses only ``be.xp`` (NumPy or CuPy)
and the filter methods below, so one function body serves the CPU and the GPU.

Three implementations share the same semantics (separable correlation with
float32 kernels built here, ``reflect`` borders, pixel-centre resampling):

* :class:`NdimageBackend` on ``numpy`` + ``scipy.ndimage``: the reference, and
  the code path that CuPy runs through ``cupyx.scipy.ndimage``;
* :class:`OpenCVBackend`: the CPU default, the same kernels through OpenCV's
  SIMD, multi-threaded filters (several times faster, see benchmarks/);
* the CuPy backend: :class:`NdimageBackend` given ``cupy`` and
  ``cupyx.scipy.ndimage``.

Tests check that the three agree within float32 rounding.
"""

import contextlib
import math
import os
import warnings
from functools import lru_cache

import numpy as np

from .luma import LUMA_WEIGHTS

#: Binomial kernel of the Burt-Adelson pyramid.
PYRAMID_KERNEL = (1 / 16, 4 / 16, 6 / 16, 4 / 16, 1 / 16)


def host_available_memory():
    """Bytes of host memory available to new allocations, or None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _hugepage_switch():
    """NumPy's switch for ``madvise(MADV_HUGEPAGE)`` on large arrays, or None."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return getattr(__import__(module, fromlist=["_"]), "_set_madvise_hugepage")
        except (ImportError, AttributeError):
            continue
    return None


@contextlib.contextmanager
def small_pages():
    """Ordinary pages for new NumPy arrays within the block, for a one-shot run.

    NumPy asks Linux for transparent huge pages for arrays of 4 MiB and more.
    The first touch of a huge page can make the kernel compact memory first:
    on the benchmark machine, writing 20 fresh 12 MP float32 arrays took 2.5 s
    with huge pages and 0.55 s without. Later runs in the same process reuse
    the freed huge pages and are faster with them (0.16 s), so only the
    one-stack command line, whose arrays are nearly all first touches, turns
    them off (not for the pyramid method, which makes new levels per frame). Nothing changes when ``NUMPY_MADVISE_HUGEPAGE`` is set (the user
    decided) or NumPy lacks the switch; the previous setting is restored.
    """
    switch = _hugepage_switch()
    if switch is None or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        yield
        return
    previous = switch(False)
    try:
        yield
    finally:
        switch(previous)


class DeviceUnavailableError(RuntimeError):
    """A GPU was asked for but cannot be used; the message says how to fix it."""


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

    #: Whether the memory budget also holds the whole decoded frames (it is
    #: the host's memory); a GPU's budget holds only what is on the GPU.
    frames_in_budget = True
    #: Share of the budget that tiles are planned to use: the rest is left for
    #: what an allocator keeps beyond the arrays in use (CuPy's pool).
    budget_share = 1.0

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

    def pyramid_reduce(self, image, out=None, scratch=None):
        """:meth:`pyramid_down` where ulp-level differences do not matter (soft blends, not arg-max choices).

        The same kernel and borders; the CPU backend hands it to OpenCV's
        ``pyrDown``, 4x faster, within 2e-7 of :meth:`pyramid_down`.
        """
        return self.pyramid_down(image, out=out, scratch=scratch)

    def pyramid_up(self, image, shape, out=None, scratch=None):
        """Inverse of :meth:`pyramid_down`'s sampling: zero-fill and interpolate.

        ``out`` and ``scratch``, float32 arrays of ``shape``, are reused when given.
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
    #: Output pixels warped at a time; bounds the warp's temporaries (about
    #: 150 bytes per pixel of a band, :func:`~.tiling.warp_band_bytes`) and,
    #: on a GPU, the kernel launches.
    warp_band_pixels = 2**16

    def warp_cubic(self, image, transform, rows, cols, origin=(0, 0)):
        """Bicubic resampling of ``image`` at the output pixels ``rows`` x ``cols``.

        ``transform`` (3x3, host) maps output pixel coordinates to frame
        pixel coordinates; ``image`` is the part of the frame that starts at
        ``origin`` = ``(x, y)``. Source positions are
        :func:`~.warp.source_coordinates` (float32, the same whatever part
        is asked for, so tiles resample exactly as the whole image does); the
        kernel is Keys' cubic with ``a = -0.75`` and pixels beyond the border
        repeat it, as OpenCV's ``remap`` with ``INTER_CUBIC`` and
        ``BORDER_REPLICATE``. Works on ``(Y, X)`` and ``(Y, X, C)`` of any
        dtype; returns unrounded float32 ``(len(rows), len(cols)[, C])``.
        """
        from .warp import source_coordinates

        xp = self.xp
        height, width = image.shape[:2]
        channels = image.shape[2:]
        flat = image.reshape((height * width,) + channels)
        out = xp.empty((rows.stop - rows.start, cols.stop - cols.start) + channels, dtype=xp.float32)
        step = max(1, self.warp_band_pixels // max(out.shape[1], 1))
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
    #: Pixels per band of the per-pixel stages, where the backend sets it
    #: (a GPU: fewer, larger bands, fewer kernel launches); None: the rows
    #: callers ask for (small bands that stay in the CPU's cache).
    band_pixels = None

    def rows_per_band(self, width, rows):
        """Rows of a band of an image ``width`` pixels wide, ``rows`` unless :attr:`band_pixels` is set."""
        return rows if self.band_pixels is None else max(rows, self.band_pixels // max(1, int(width)))

    def reserved_band_pixels(self, device_warp):
        """Pixels of a band whose temporaries a memory budget sets aside (0: the per-pixel count covers them)."""
        if self.band_pixels:
            return self.band_pixels
        return self.warp_band_pixels if device_warp else 0

    def for_each_band(self, function, height, rows=128, width=None):
        """Call ``function(rows_slice)`` for bands of ``rows`` rows covering ``height``.

        The bands are independent; on the CPU they run on all cores (NumPy
        releases the GIL in its loops), on a GPU one after the other, larger
        (:meth:`rows_per_band` of ``width``).
        """
        if width is not None:
            rows = self.rows_per_band(width, rows)
        for start in range(0, height, rows):
            function(slice(start, start + rows))

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


class OpenCVBackend(NdimageBackend):
    """CPU backend: same kernels and borders, evaluated by OpenCV."""

    def pyramid_reduce(self, image, out=None, scratch=None):
        height, width = image.shape[:2]
        size = ((width + 1) // 2, (height + 1) // 2)
        image = np.ascontiguousarray(image, dtype=np.float32)
        return self._cv2.pyrDown(image, dst=out, dstsize=size, borderType=self._cv2.BORDER_REFLECT_101)

    #: Aligned frames are warped by OpenCV on the read-ahead thread.
    warps_on_device = False

    def __init__(self):
        super().__init__(np, None, "cpu")
        import cv2

        self._cv2 = cv2
        self._pool = None
        self._borders = {"reflect": cv2.BORDER_REFLECT, "mirror": cv2.BORDER_REFLECT_101}

    def correlate_separable(self, image, kernel, mode="reflect", out=None):
        cv2 = self._cv2
        k = np.asarray(kernel, dtype=np.float32)
        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.ndim == 3 and image.shape[2] > 4:
            return np.stack(
                [self.correlate_separable(image[..., c], k, mode) for c in range(image.shape[2])],
                axis=-1,
            )
        result = cv2.sepFilter2D(image, cv2.CV_32F, k, k, dst=out, borderType=self._borders[mode])
        return result.reshape(image.shape)

    def for_each_band(self, function, height, rows=128, width=None):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="focus-stack-band")
        # list(): wait for every band and re-raise the first error
        list(self._pool.map(function, [slice(s, s + rows) for s in range(0, height, rows)]))

    def copy_where(self, dst, src, mask):
        # NumPy's broadcast masked copy is ~40x slower than OpenCV's on RGB.
        if dst.ndim == 3 and dst.shape[2] <= 4 and dst.flags.c_contiguous and src.flags.c_contiguous:
            self._cv2.copyTo(src, mask.view(np.uint8), dst)
        else:
            super().copy_where(dst, src, mask)

    def laplacian(self, image, out=None):
        cv2 = self._cv2
        image = np.ascontiguousarray(image, dtype=np.float32)
        return cv2.Laplacian(image, cv2.CV_32F, dst=out, ksize=1, borderType=cv2.BORDER_REFLECT)

    def resize(self, image, factor):
        if factor == 1:
            return image
        cv2 = self._cv2
        image = np.ascontiguousarray(image, dtype=np.float32)
        h, w = image.shape[:2]
        out = cv2.resize(image, (w * factor, h * factor), interpolation=cv2.INTER_LINEAR)
        return out.reshape((h * factor, w * factor) + image.shape[2:])

    def channel_planes(self, frame):
        # contiguous planes: NumPy is slow on the stride-3 views of interleaved RGB
        return [frame] if frame.ndim == 2 else list(self._cv2.split(np.ascontiguousarray(frame)))

    def luminance(self, frame, out=None):
        if frame.ndim == 2:
            if out is None:
                return frame.astype(np.float32)
            np.copyto(out, frame)
            return out
        cv2 = self._cv2
        m = np.asarray([LUMA_WEIGHTS], dtype=np.float32)
        gray = np.empty(frame.shape[:2], dtype=np.float32) if out is None else out
        # in bands, so the float copy of the colour frame stays small and in cache
        for start in range(0, frame.shape[0], 128):
            band = np.ascontiguousarray(frame[start : start + 128], dtype=np.float32)
            gray[start : start + 128] = cv2.transform(band, m).reshape(band.shape[:2])
        return gray


def _cupy_backend(index):
    """CuPy backend on device ``index``, or DeviceUnavailableError saying why not."""
    hint = (
        'install CuPy with `pip install "napari-focus-stack[gpu]"` '
        '(or "[gpu-cuda13]" for its CUDA 13 build)'
    )
    try:
        import cupy
        import cupyx.scipy.ndimage as cundi
    except ImportError as exc:
        raise DeviceUnavailableError(f"GPU requested but CuPy is not installed: {hint}") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when there is no driver or device
        raise DeviceUnavailableError(f"GPU requested but CUDA reports no usable device ({exc})") from exc
    if index >= count:
        raise DeviceUnavailableError(f"GPU {index} requested but only {count} GPU(s) found")
    why = _kernel_check(cupy, index)
    if why is not None:
        raise DeviceUnavailableError(
            f"GPU {index} found, but CuPy cannot run kernels on it ({why}). CuPy compiles its "
            "kernels with CUDA's runtime libraries (NVRTC): install them with CuPy, "
            '`pip install "napari-focus-stack[gpu]"` (cupy-cuda12x[ctk]), or install the CUDA Toolkit'
        )
    cupy.cuda.Device(index).use()
    return CupyBackend(cupy, cundi, index)


#: (CuPy module, device) pairs where a test kernel ran. Keyed by the module
#: itself (not its id, which a later module may reuse); only successes are
#: kept, so a transient CUDA error does not keep "auto" on the CPU for good.
_KERNEL_CHECKS = set()


def _kernel_check(cupy, index):
    """Run one tiny kernel on GPU ``index`` (once per process): None if it worked, else why not.

    A driver and a device are not enough: CuPy compiles kernels at run time
    with NVRTC, which a CuPy wheel installed without CUDA's libraries cannot
    find. Without this check such a run would fail in its first filter, deep
    in the pipeline, and ``device="auto"`` could not fall back to the CPU.
    """
    key = (cupy, index)
    if key in _KERNEL_CHECKS:
        return None
    try:
        with cupy.cuda.Device(index):
            total = float((cupy.arange(4, dtype=cupy.float32) * 2).sum())
    except Exception as exc:  # DynamicLibNotFoundError (no NVRTC), CUDA errors
        return f"{type(exc).__name__}: {exc}"
    if total != 12:
        return f"a test kernel computed {total}, not 12"
    _KERNEL_CHECKS.add(key)
    return None


class CupyBackend(NdimageBackend):
    """GPU backend: the ndimage code path on CuPy, one instance per device."""

    def __init__(self, cupy, cundi, index):
        super().__init__(cupy, cundi, f"gpu:{index}")
        self.index = index
        self.out_of_memory = (MemoryError, cupy.cuda.memory.OutOfMemoryError)

    #: Larger bands on a GPU: about 700 array operations per 12 MP frame in
    #: 128-row bands become about 200 (counted on the CuPy stand-in); each
    #: costs a kernel launch, ~10 us of overhead.
    #: Temporaries: up to ~200 bytes per band pixel, set aside in the budget.
    band_pixels = 2**21
    warp_band_pixels = 2**21
    frames_in_budget = False
    #: CuPy's pool keeps freed blocks for reuse, split and binned by size: on
    #: an H200 a 100 MP run planned to 2 GiB held 2.32 GiB (gpu_check,
    #: 2026-11-27), so tiles are planned to 80 % and the pool is emptied
    #: between tiles.
    budget_share = 0.8

    def device(self):
        """Context manager making this backend's GPU the current one."""
        return self.xp.cuda.Device(self.index)

    #: Frames are copied into page-locked host memory on the read-ahead
    #: thread (:meth:`stage`): a 12 MP frame then goes up in 0.7 ms instead
    #: of 4-7 ms from ordinary memory, on the thread that feeds the GPU
    #: (gpu_check, H100 and H200, 2026-11-27).
    stages_in_pinned_memory = True

    def stage(self, array, slot, buffers):
        """A copy of host ``array`` in page-locked memory, in ``buffers[slot]`` (grown as needed).

        The caller alternates slots: a slot is written again only after the
        frame staged in it went up (:meth:`asarray` waits for its copy).
        """
        array = np.asarray(array)  # a crop may be a strided view: copied straight into the buffer
        buffer = buffers.get(slot)
        if buffer is None or buffer.nbytes < array.nbytes:
            import cupyx

            buffer = buffers[slot] = cupyx.empty_pinned(max(array.nbytes, 1), dtype=np.uint8)
        staged = buffer[: array.nbytes].view(array.dtype).reshape(array.shape)
        np.copyto(staged, array)
        return staged

    def asarray(self, a):
        """Upload ``a``; returns once the copy is done, so its host memory may be reused."""
        out = self.xp.asarray(a)
        if isinstance(a, np.ndarray):
            self.xp.cuda.get_current_stream().synchronize()
        return out

    def warp_cubic(self, image, transform, rows, cols, origin=(0, 0)):
        """:meth:`NdimageBackend.warp_cubic` in one CUDA kernel, with the same float32 arithmetic.

        The array code costs about 700 kernel launches and 28 ms per 12 MP
        RGB frame on an H200 (gpu_check, 2026-11-27). This kernel evaluates
        each output value in the order the array code does, every
        operation rounded to nearest (``__fmul_rn`` and friends, which the
        compiler may not fuse into FMAs), so the results are identical;
        gpu_check compares the two. Without CuPy's ``ElementwiseKernel`` (the
        test stand-in) the array code runs.
        """
        kernel = _warp_kernel(self.xp)
        if kernel is None or _WARP_KERNEL_FAILED:
            return super().warp_cubic(image, transform, rows, cols, origin)
        try:
            return self._warp_fused(kernel, image, transform, rows, cols, origin)
        except self.xp.cuda.compiler.CompileException as exc:
            # a CUDA whose compiler rejects it: the array code gives the same pixels
            _WARP_KERNEL_FAILED.append(str(exc))
            warnings.warn(f"fused warp kernel not compiled, using array code: {exc}", RuntimeWarning, stacklevel=2)
            return super().warp_cubic(image, transform, rows, cols, origin)

    def _warp_fused(self, kernel, image, transform, rows, cols, origin):
        xp = self.xp
        image = xp.ascontiguousarray(image)
        height, width = image.shape[:2]
        channels = image.shape[2] if image.ndim == 3 else 1
        out_rows, out_cols = rows.stop - rows.start, cols.stop - cols.start
        out = xp.empty((out_rows, out_cols) + image.shape[2:], dtype=xp.float32)
        m = np.asarray(transform, dtype=np.float64)[:2].astype(np.float32)
        f32, i64 = np.float32, np.int64
        kernel(
            image, f32(m[0, 0]), f32(m[0, 1]), f32(m[0, 2]), f32(m[1, 0]), f32(m[1, 1]), f32(m[1, 2]),
            f32(origin[0]), f32(origin[1]), i64(rows.start), i64(cols.start), i64(out_cols),
            i64(height), i64(width), i64(channels), out,
        )  # fmt: skip
        return out

    def synchronize(self):
        self.xp.cuda.Device(self.index).synchronize()

    def available_memory(self):
        with self.device():
            free, _ = self.xp.cuda.runtime.memGetInfo()
            return free + self.xp.get_default_memory_pool().free_bytes()

    def release_memory(self):
        with self.device():
            self.xp.get_default_memory_pool().free_all_blocks()

    def default_budget(self):
        """80 % of the free device memory (the GPU is not shared with the desktop's RAM)."""
        return int(self.available_memory() * 0.8)


_WARP_PREAMBLE = r"""
__device__ void keys_weights(const float t, float* w) {
    // NdimageBackend's _keys_weights, operation by operation, rounded to nearest
    const float a = -0.75f;
    const float u = __fadd_rn(t, 1.0f);
    float p = __fsub_rn(__fmul_rn(a, u), -3.75f);          // a*u - 5a
    p = __fadd_rn(__fmul_rn(p, u), -6.0f);                 // * u + 8a
    w[0] = __fsub_rn(__fmul_rn(p, u), -3.0f);              // * u - 4a
    p = __fsub_rn(__fmul_rn(1.25f, t), 2.25f);             // (a+2) t - (a+3)
    w[1] = __fadd_rn(__fmul_rn(__fmul_rn(p, t), t), 1.0f);
    const float s = __fsub_rn(1.0f, t);
    p = __fsub_rn(__fmul_rn(1.25f, s), 2.25f);
    w[2] = __fadd_rn(__fmul_rn(__fmul_rn(p, s), s), 1.0f);
    w[3] = __fsub_rn(__fsub_rn(__fsub_rn(1.0f, w[0]), w[1]), w[2]);
}
"""

_WARP_BODY = r"""
    const long long c = i % channels;
    const long long pixel = i / channels;
    const float x = (float)(col0 + pixel % out_cols);
    const float y = (float)(row0 + pixel / out_cols);
    const float sx = __fsub_rn(__fadd_rn(__fmul_rn(x, m00), __fadd_rn(__fmul_rn(y, m01), m02)), ox);
    const float sy = __fsub_rn(__fadd_rn(__fmul_rn(x, m10), __fadd_rn(__fmul_rn(y, m11), m12)), oy);
    const float fx = floorf(sx), fy = floorf(sy);
    float wx[4], wy[4];
    keys_weights(__fsub_rn(sx, fx), wx);
    keys_weights(__fsub_rn(sy, fy), wy);
    const long long x0 = (long long)fx, y0 = (long long)fy;
    float band = 0.0f;
    for (int r = 0; r < 4; ++r) {
        const long long yy = min(max(y0 + r - 1, 0LL), height - 1);
        float row = 0.0f;
        for (int k = 0; k < 4; ++k) {
            const long long xx = min(max(x0 + k - 1, 0LL), width - 1);
            row = __fadd_rn(row, __fmul_rn((float)image[(yy * width + xx) * channels + c], wx[k]));
        }
        band = __fadd_rn(band, __fmul_rn(row, wy[r]));
    }
    out = band;
"""


#: Why the fused warp kernel did not compile, if it did not (then never tried again).
_WARP_KERNEL_FAILED = []


@lru_cache(maxsize=4)
def _warp_kernel(cupy):
    """The fused bicubic warp as a CuPy ElementwiseKernel, or None where CuPy has none."""
    elementwise = getattr(cupy, "ElementwiseKernel", None)
    if elementwise is None:
        return None
    return elementwise(
        "raw T image, float32 m00, float32 m01, float32 m02, float32 m10, float32 m11, float32 m12, "
        "float32 ox, float32 oy, int64 row0, int64 col0, int64 out_cols, int64 height, int64 width, "
        "int64 channels",
        "float32 out",
        _WARP_BODY,
        "napari_focus_stack_warp_cubic",
        preamble=_WARP_PREAMBLE,
    )


def get_backend(device="auto"):
    """Backend for ``device``: ``"auto"``, ``"cpu"``, ``"gpu"``, ``"gpu:N"`` (``"gpu:all"``: the first).

    ``"auto"`` uses the first GPU when CuPy imports and a device answers, and
    the CPU otherwise; :func:`gpu_status` tells why a GPU was not used.
    """
    device = str(device).lower()
    if device == "cpu":
        return OpenCVBackend()
    if device == "auto":
        try:
            return _cupy_backend(0)
        except DeviceUnavailableError:
            return OpenCVBackend()
    if device == "gpu" or device.startswith("gpu:"):
        index_text = device.partition(":")[2] or "0"
        if index_text == "all":
            return _cupy_backend(0)
        if not index_text.isdigit():
            raise ValueError(f"device must be 'auto', 'cpu', 'gpu', 'gpu:N' or 'gpu:all', got {device!r}")
        return _cupy_backend(int(index_text))
    raise ValueError(f"device must be 'auto', 'cpu', 'gpu', 'gpu:N' or 'gpu:all', got {device!r}")


def get_backends(device="auto"):
    """Backends for ``device``; ``"gpu:all"`` gives one per visible GPU."""
    if str(device).lower() != "gpu:all":
        return [get_backend(device)]
    first = _cupy_backend(0)
    count = first.xp.cuda.runtime.getDeviceCount()
    return [first] + [_cupy_backend(i) for i in range(1, count)]


def gpu_count() -> int:
    """How many GPUs CuPy sees (0 without CuPy or a driver)."""
    try:
        return _cupy_backend(0).xp.cuda.runtime.getDeviceCount()
    except DeviceUnavailableError:
        return 0


def gpu_status() -> tuple[bool, str]:
    """Whether a GPU can be used, and a sentence saying why (not)."""
    try:
        be = _cupy_backend(0)
    except DeviceUnavailableError as exc:
        return False, str(exc)
    return True, f"GPU available ({be.name})"
