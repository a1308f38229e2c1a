"""The CPU default: :class:`NdimageBackend`'s kernels and borders, evaluated by OpenCV's SIMD, multi-threaded filters."""

import contextlib
import os
import threading

import numpy as np

from ..luma import LUMA_WEIGHTS
from .base import NdimageBackend

#: Array types OpenCV's masked copy takes (bool masks as uint8 views).
_COPYTO_DTYPES = tuple(np.dtype(t) for t in (np.uint8, np.uint16, np.int16, np.float32))


#: Machines with at most this many cores run OpenCV's short separable filters
#: (up to :data:`SHORT_KERNEL` taps: the focus measure's) and the Laplacian on
#: one thread. Measured on a 2-core machine at 12 MP: a 7-tap separable
#: filter takes 17 ms on two threads and 16 ms on one, the Laplacian 10.3 and
#: 11.1 ms, at twice the CPU on two (the read-ahead thread decodes on the
#: other core meanwhile). Longer kernels (25 taps: 29.5 against 32.8 ms) and
#: the pyramid steps (pyrDown 3.9 against 7.4 ms) keep OpenCV's threads.
FEW_CORES = 2
SHORT_KERNEL = 9


class _FilterThreads:
    """OpenCV's thread count lowered to one around a filter call (nested and concurrent calls share one change).

    One for the process (:data:`_FILTER_THREADS`): OpenCV's thread count is a
    process-wide setting.
    """

    def __init__(self):
        self._lock, self._depth, self._saved = threading.Lock(), 0, None

    @contextlib.contextmanager
    def single(self):
        import cv2

        with self._lock:
            if self._depth == 0:
                self._saved = cv2.getNumThreads()
                cv2.setNumThreads(1)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    cv2.setNumThreads(self._saved)


_FILTER_THREADS = _FilterThreads()


class OpenCVBackend(NdimageBackend):
    """CPU backend: same kernels and borders, evaluated by OpenCV."""

    #: OpenCV's pyrDown and pyrUp need no scratch (the rare fall-backs make their own).
    pyramid_needs_scratch = False

    def pyramid_reduce(self, image, out=None, scratch=None):
        height, width = image.shape[:2]
        size = ((width + 1) // 2, (height + 1) // 2)
        image = np.ascontiguousarray(image, dtype=np.float32)
        return self._cv2.pyrDown(image, dst=out, dstsize=size, borderType=self._cv2.BORDER_REFLECT_101)

    def pyramid_up(self, image, shape, out=None, scratch=None):
        # OpenCV's pyrUp is the same zero-fill and interpolation (reflect-101
        # borders), 3x faster at 12 MP; towards an odd size it reflects about
        # another pixel, so an odd side is expanded one source pixel further
        # (the reflect-101 one, which is what the zero-filled border holds)
        # and cut back: the same pixels, to float rounding
        height, width = shape[:2]
        rows, cols = image.shape[:2]
        halved = (rows, cols) == ((height + 1) // 2, (width + 1) // 2)
        if not halved or min(rows, cols) < 2 or image.ndim > 3 or (image.ndim == 3 and image.shape[2] > 4):
            return super().pyramid_up(image, shape, out=out, scratch=scratch)
        cv2, mirror = self._cv2, self._cv2.BORDER_REFLECT_101
        image = np.ascontiguousarray(image, dtype=np.float32)
        odd_rows, odd_cols = height % 2, width % 2
        target = (height, width) + image.shape[2:]
        if odd_rows or odd_cols:
            padded = cv2.copyMakeBorder(image, 0, odd_rows, 0, odd_cols, mirror)
            even = (2 * (rows + odd_rows), 2 * (cols + odd_cols))
            up = cv2.pyrUp(padded, dstsize=even[::-1], borderType=mirror).reshape(even + image.shape[2:])
            up = up[:height, :width]
        else:
            direct = out is not None and out.dtype == np.float32 and out.flags.c_contiguous and out.shape == target
            up = cv2.pyrUp(image, dst=out if direct else None, dstsize=(width, height), borderType=mirror)
            up = up.reshape(target)
        if out is None:
            return np.ascontiguousarray(up)
        if not np.shares_memory(up, out):
            out[...] = up
        return out

    #: Aligned frames are warped by OpenCV on the read-ahead thread.
    warps_on_device = False

    def __init__(self):
        super().__init__(np, None, "cpu")
        import cv2

        self._cv2 = cv2
        self._pool = None
        self._borders = {"reflect": cv2.BORDER_REFLECT, "mirror": cv2.BORDER_REFLECT_101}
        few = (os.cpu_count() or 1) <= FEW_CORES
        self._filter_threads = _FILTER_THREADS.single if few else contextlib.nullcontext

    def correlate_separable(self, image, kernel, mode="reflect", out=None):
        cv2 = self._cv2
        k = np.asarray(kernel, dtype=np.float32)
        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.ndim == 3 and image.shape[2] > 4:
            return np.stack(
                [self.correlate_separable(image[..., c], k, mode) for c in range(image.shape[2])],
                axis=-1,
            )
        threads = self._filter_threads if len(k) <= SHORT_KERNEL else contextlib.nullcontext
        with threads():
            result = cv2.sepFilter2D(image, cv2.CV_32F, k, k, dst=out, borderType=self._borders[mode])
        return result.reshape(image.shape)

    def box_mean(self, image, radius, out=None):
        # running sums (double accumulators): 10 CPU-ms at 12 MP for a 5x5
        # window, against 30 for the separable correlation (two threads busy)
        image = np.ascontiguousarray(image, dtype=np.float32)
        if image.ndim != 2:
            return super().box_mean(image, radius, out=out)
        size = (2 * int(radius) + 1,) * 2
        direct = out is not None and out.dtype == np.float32 and out.shape == image.shape and out.flags.c_contiguous
        result = self._cv2.blur(image, size, dst=out if direct else None, borderType=self._borders["reflect"])
        if out is not None and not direct:
            out[...] = result
            return out
        return result

    def for_each_band(self, function, height, rows=128, width=None):
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(os.cpu_count() or 1, thread_name_prefix="focus-stack-band")
        # list(): wait for every band and re-raise the first error
        list(self._pool.map(function, [slice(s, s + rows) for s in range(0, height, rows)]))

    def accumulate_product(self, total, band, weight, minus=None):
        # OpenCV's loops: 10.5 ms against NumPy's 12.7 at 12 MP (a subtraction
        # and a multiply-add; memory-bound, so bands in cache on both cores
        # gained nothing here)
        arrays = (total, band, weight) + (() if minus is None else (minus,))
        if not all(a.dtype == np.float32 and a.flags.c_contiguous and a.shape == total.shape for a in arrays):
            return super().accumulate_product(total, band, weight, minus)
        if minus is not None:
            self._cv2.subtract(band, minus, dst=band)
        self._cv2.accumulateProduct(band, weight, total)

    def copy_where(self, dst, src, mask):
        # NumPy's masked copy branches on every pixel: 55 ms at 12 MP where the
        # mask changes from pixel to pixel (a noisy area's best frame), 5 ms
        # where it is uniform; OpenCV's blends without branching, 6 ms either
        # way (and NumPy's broadcast copy on RGB is slower still)
        if (
            isinstance(src, np.ndarray)
            and src.dtype == dst.dtype
            and dst.dtype in _COPYTO_DTYPES
            and (dst.ndim == 2 or (dst.ndim == 3 and dst.shape[2] <= 4))
            and src.shape == dst.shape
            and dst.flags.c_contiguous
            and src.flags.c_contiguous
            and mask.flags.c_contiguous
            and mask.shape == dst.shape[:2]
        ):
            self._cv2.copyTo(src, mask.view(np.uint8), dst)
        else:
            super().copy_where(dst, src, mask)

    def laplacian(self, image, out=None):
        cv2 = self._cv2
        image = np.ascontiguousarray(image, dtype=np.float32)
        with self._filter_threads():
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
