"""The one place that picks the array module and the device: :func:`get_backend`.

Every stage takes a :class:`Backend` and uses only ``be.xp`` (NumPy or CuPy)
and the methods of :class:`~.base.NdimageBackend`, so one function body serves the CPU and the GPU.

Three implementations share the same semantics (separable correlation with
float32 kernels built here, ``reflect`` borders, pixel-centre resampling):

* :class:`NdimageBackend` on ``numpy`` + ``scipy.ndimage``: the reference, and
  the code path that CuPy runs through ``cupyx.scipy.ndimage``;
* :class:`OpenCVBackend`: the CPU default, the same kernels through OpenCV's
  SIMD, multi-threaded filters (several times faster, see benchmarks/);
* the CuPy backend: :class:`NdimageBackend` given ``cupy`` and
  ``cupyx.scipy.ndimage``.

Tests check that the three agree within float32 rounding.

The package holds one concern per module: :mod:`.base` (the array module,
``ndimage``, filters, transfers, resampling; the reference implementation),
:mod:`.opencv` (the CPU default), :mod:`.gpu` (CuPy on a device, and the
checks that it can run kernels) with its CUDA source in :mod:`.kernels`, and
:mod:`.memory` (the host's memory and page policy).
"""

from . import gpu as _gpu
from .base import NdimageBackend, box_kernel, gaussian_kernel
from .gpu import CupyBackend, DeviceUnavailableError, _cupy_backend
from .memory import MemoryPolicy, _hugepage_switch, host_available_memory, small_pages  # noqa: F401  (_hugepage_switch: tests read it)
from .opencv import OpenCVBackend

__all__ = [
    "CupyBackend",
    "DeviceUnavailableError",
    "NdimageBackend",
    "OpenCVBackend",
    "box_kernel",
    "gaussian_kernel",
    "get_backend",
    "get_backends",
    "gpu_count",
    "gpu_status",
    "host_available_memory",
    "small_pages",
]


def get_backend(device="auto"):
    """Backend for ``device``: ``"auto"``, ``"cpu"``, ``"gpu"``, ``"gpu:N"`` (``"gpu:all"``: the first).

    ``"auto"`` uses the first GPU when CuPy imports and a device answers, and
    the CPU otherwise; :func:`gpu_status` tells why a GPU was not used. On a
    machine without NVIDIA's driver, ``"auto"`` does not import CuPy at all
    (:func:`~.gpu.nvidia_driver_found`).
    """
    device = str(device).lower()
    if device == "cpu":
        return OpenCVBackend()
    if device == "auto":
        if not _gpu.nvidia_driver_found():
            return OpenCVBackend()
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
