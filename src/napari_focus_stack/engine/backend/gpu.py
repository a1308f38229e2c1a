"""The GPU backend: :class:`NdimageBackend` on CuPy and ``cupyx.scipy.ndimage``, one instance per device.

:func:`_cupy_backend` checks that CuPy imports, that CUDA sees the device
and that a kernel runs on it, and says why not
(:class:`DeviceUnavailableError`) so that ``device="auto"`` can fall back to
the CPU.
"""

import os
import sys
import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import kernels
from .base import NdimageBackend
from .memory import MemoryPolicy

#: Share of the free device memory that is a GPU run's default working-memory budget.
DEFAULT_BUDGET_SHARE = 0.8


class DeviceUnavailableError(RuntimeError):
    """A GPU was asked for but cannot be used; the message says how to fix it."""


#: The NVIDIA driver's own library, which CUDA's runtime (and so CuPy) loads, by platform.
DRIVER_LIBRARIES = {"linux": "libcuda.so.1", "win32": "nvcuda.dll"}


@lru_cache(maxsize=1)
def _driver_library_loads():
    import ctypes

    try:
        ctypes.CDLL(DRIVER_LIBRARIES[sys.platform])
    except OSError:
        return False
    return True


def nvidia_driver_found():
    """Whether a GPU could be there: False only when the NVIDIA driver's library is surely missing.

    Cheap (a library lookup, under a millisecond) where importing CuPy to
    find out costs 0.1-0.5 s, which ``device="auto"`` would pay in every
    run of a machine without a GPU. ``libcuda.so.1`` on Linux (WSL's
    included) and ``nvcuda.dll`` on Windows are what CUDA's runtime itself
    loads. Elsewhere (macOS, where CUDA and CuPy are no more), or once CuPy
    is imported anyway (tests' stand-in, a caller's own import), it says
    True and CuPy is asked as before.
    """
    if "cupy" in sys.modules or sys.platform not in DRIVER_LIBRARIES:
        return True
    return _driver_library_loads()


def kernel_cache_dir():
    """Where CuPy keeps the kernels it compiles (``CUPY_CACHE_DIR``, by default ``~/.cupy/kernel_cache``)."""
    return Path(os.environ.get("CUPY_CACHE_DIR") or Path.home() / ".cupy" / "kernel_cache")


def usable_cache_dir():
    """The kernel cache folder, or a fallback in the temporary folder where it cannot be written.

    CuPy creates its cache folder and writes each compiled kernel there; if
    it cannot (a read-only home: containers, shared accounts), compiling
    fails and so does every GPU run. Then ``CUPY_CACHE_DIR`` is set to a
    folder of this user's in the temporary folder. Nothing is created when
    the folder, or the nearest existing folder above it, is writable.
    Called before CuPy compiles anything.
    """
    folder = kernel_cache_dir()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing.is_dir() and os.access(existing, os.W_OK | os.X_OK):
        return folder
    import tempfile

    user = os.getuid() if hasattr(os, "getuid") else 0
    folder = Path(tempfile.gettempdir()) / f"napari-focus-stack-cupy-{user}"
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["CUPY_CACHE_DIR"] = str(folder)
    return folder


def _cupy_backend(index):
    """CuPy backend on device ``index``, or DeviceUnavailableError saying why not."""
    hint = 'install CuPy with `pip install "napari-focus-stack[gpu]"` (or "[gpu-cuda13]" for its CUDA 13 build)'
    usable_cache_dir()  # before the kernel check compiles anything
    try:
        import cupy
        import cupyx.scipy.ndimage as cundi
    except ImportError as exc:
        raise DeviceUnavailableError(f"GPU requested but CuPy is not installed: {hint}") from exc
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError when there is no driver or device
        if sys.platform in DRIVER_LIBRARIES and not _driver_library_loads():
            # CUDA says "cudaErrorInsufficientDriver: driver version is insufficient", which reads as an old driver
            raise DeviceUnavailableError(
                f"GPU requested but no NVIDIA driver was found on this machine ({exc})"
            ) from exc
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


#: Devices where a test kernel ran. Only successes are kept, so a transient
#: CUDA error does not keep "auto" on the CPU for good.
_KERNEL_CHECKS = set()


def _kernel_check(cupy, index):
    """Run one tiny kernel on GPU ``index`` (once per process): None if it worked, else why not.

    A driver and a device are not enough: CuPy compiles kernels at run time
    with NVRTC, which a CuPy wheel installed without CUDA's libraries cannot
    find. Without this check such a run would fail in its first filter, deep
    in the pipeline, and ``device="auto"`` could not fall back to the CPU.
    """
    if index in _KERNEL_CHECKS:
        return None
    try:
        with cupy.cuda.Device(index):
            total = float((cupy.arange(4, dtype=cupy.float32) * 2).sum())
    except Exception as exc:  # DynamicLibNotFoundError (no NVRTC), CUDA errors
        return f"{type(exc).__name__}: {exc}"
    if total != 12:
        return f"a test kernel computed {total}, not 12"
    _KERNEL_CHECKS.add(index)
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
    #: The budget holds only what is on the GPU. CuPy's pool keeps freed
    #: blocks for reuse, split and binned by size, so a run holds more than
    #: its tiles were planned for (benchmarks/RESULTS.md, GPU): tiles are
    #: planned to 80 % of the budget and the pool is emptied between tiles.
    #: With the default budget (:data:`DEFAULT_BUDGET_SHARE` of the free
    #: memory) tiles plan for 64 % of the free device memory.
    memory = MemoryPolicy(frames_in_budget=False, budget_share=0.8, band_pixels=2**21, warp_band_pixels=2**21)

    def device(self):
        """Context manager making this backend's GPU the current one."""
        return self.xp.cuda.Device(self.index)

    #: Frames are copied into page-locked host memory on the read-ahead
    #: thread (:meth:`stage`): uploads from it are several times faster than
    #: from ordinary memory, on the thread that feeds the GPU
    #: (benchmarks/RESULTS.md, GPU).
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
        gpu_check compares the two.
        """
        if kernels.WARP_KERNEL_FAILED:
            return super().warp_cubic(image, transform, rows, cols, origin)
        kernel = kernels.warp_kernel(self.xp)
        try:
            return self._warp_fused(kernel, image, transform, rows, cols, origin)
        except self.xp.cuda.compiler.CompileException as exc:
            # a CUDA whose compiler rejects it: the array code gives the same pixels
            kernels.WARP_KERNEL_FAILED.append(str(exc))
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
            image,
            f32(m[0, 0]),
            f32(m[0, 1]),
            f32(m[0, 2]),
            f32(m[1, 0]),
            f32(m[1, 1]),
            f32(m[1, 2]),
            f32(origin[0]),
            f32(origin[1]),
            i64(rows.start),
            i64(cols.start),
            i64(out_cols),
            i64(height),
            i64(width),
            i64(channels),
            out,
        )
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
        """:data:`DEFAULT_BUDGET_SHARE` of the free device memory (the GPU is not shared with the desktop's RAM).

        Tiles are planned to ``memory.budget_share`` of it (CuPy's pool keeps the rest).
        """
        return int(self.available_memory() * DEFAULT_BUDGET_SHARE)
