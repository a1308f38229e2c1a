"""A strict stand-in for CuPy, so the GPU code path runs on machines without a GPU.

Most machines that run these tests have no GPU, so without this module the
CuPy backend would never run in CI. :func:`install` puts modules named
``cupy``, ``cupyx``, ``cupyx.scipy`` and ``cupyx.scipy.ndimage`` in
``sys.modules``; they compute with NumPy and SciPy but behave like CuPy where
a mistake would otherwise only show on a GPU:

* device arrays are not NumPy arrays: ``np.asarray(device_array)`` and
  anything else that converts implicitly (OpenCV, ``np.copyto`` with a host
  destination...) raises ``TypeError``, as CuPy does; ``cupy.asnumpy`` and
  ``.get()`` are the only ways back, and they are counted;
* host arrays are rejected where CuPy rejects them (in arithmetic with
  device arrays, as filter inputs); ``cupy.asarray`` uploads, and is counted;
* every array belongs to the device that was current (per thread) when it
  was made, and using it while another device is current raises, like
  CuPy's kernels do;
* device memory is accounted (arrays owning their data, freed when
  collected), its peak recorded per device, and an allocation beyond the
  simulated memory raises ``cupy.cuda.memory.OutOfMemoryError``.

* only names that CuPy has are offered: :data:`CUPY_API`,
  :data:`NDARRAY_API` and :data:`NDIMAGE_API` list what the engine uses, and
  ``tests/test_fake_cupy.py`` checks each against the real CuPy wherever it
  is installed (CI installs it: it imports without a GPU). A NumPy function
  that CuPy lacks fails here, not first on a GPU;
* ``STATE.kernel_error`` makes every kernel raise, as CuPy does when it
  cannot load NVRTC to compile them;
* ``cupy.ElementwiseKernel`` runs a NumPy transcription of the kernel's CUDA
  source, operation by operation in float32 (:data:`KERNELS`, by kernel
  name), with its arguments checked against the kernel's parameter list; a
  kernel without one raises CuPy's ``CompileException``, as a CUDA whose
  compiler rejects it does. A fresh install forgets which devices ran the
  backend's test kernel, as a new process does.

Once installed, ``cupy`` is in ``sys.modules``: ``device="auto"`` then asks
it even on a machine without NVIDIA's driver, as for any CuPy already
imported (``engine/backend/gpu.py``, ``nvidia_driver_found``).

It is not a simulator of CUDA's timing or streams: it checks what code does
to arrays, not how fast it is.
"""

import sys
import threading
import types
import weakref

import numpy as np
import scipy.ndimage
from numpy.lib.mixins import NDArrayOperatorsMixin

#: ``cupy.<name>`` that the engine and benchmarks use (NumPy's, wrapped, here).
#: Add a name only after checking that CuPy has it (tests/test_fake_cupy.py).
CUPY_API = frozenset(
    [
        "abs",
        "add",
        "arange",
        "ascontiguousarray",
        "clip",
        "copyto",
        "empty",
        "empty_like",
        "equal",
        "exp",
        "floor",
        "fmax",
        "full",
        "greater",
        "log",
        "maximum",
        "minimum",
        "multiply",
        "ones",
        "ones_like",
        "repeat",
        "rint",
        "stack",
        "where",
        "zeros",
        "zeros_like",
        "float16",
        "float32",
        "float64",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "bool_",
    ]
)
#: ``cupy.ndarray`` attributes and methods offered on device arrays.
NDARRAY_API = frozenset(
    [
        "astype",
        "copy",
        "reshape",
        "view",
        "sum",
        "max",
        "min",
        "mean",
        "any",
        "all",
        "argmax",
        "ravel",
        "fill",
        "dtype",
        "ndim",
        "shape",
        "size",
        "nbytes",
        "strides",
        "flags",
    ]
)
#: ``cupyx.scipy.ndimage`` functions.
NDIMAGE_API = frozenset(["correlate1d", "laplace", "zoom"])


class OutOfMemoryError(MemoryError):
    """What ``cupy.cuda.memory.OutOfMemoryError`` is here (CuPy's also derives from MemoryError)."""


class CUDARuntimeError(RuntimeError):
    pass


class CompileException(Exception):
    """What ``cupy.cuda.compiler.CompileException`` is here."""


class FakeGPUState:
    """What the fake devices saw: transfers, memory in use and its peak."""

    def __init__(self, devices=1, memory=16 * 2**30):
        self.count = devices
        self.memory = memory
        self.live = [0] * devices
        self.peak = [0] * devices
        self.allocations = [0] * devices
        self.held_at_free = []  # bytes in use at each free_all_blocks()
        self.uploads = []  # (shape, dtype) of each host -> device copy
        self.downloads = []  # (shape, dtype) of each device -> host copy
        self.pinned = []  # host buffers from cupyx.empty_pinned
        self.pinned_uploads = []  # per upload: whether it came from such a buffer
        self.stream_syncs = 0
        self.kernel_error = None  # raised by every kernel when set (CuPy without NVRTC)
        self._local = threading.local()
        # re-entrant: a garbage collection inside _account may free another
        # array, whose finalizer (_release) then takes the lock in the same thread
        self._lock = threading.RLock()
        self._owned = {}

    @property
    def current(self):
        return getattr(self._local, "device", 0)

    @current.setter
    def current(self, index):
        self._local.device = index

    def reset_peaks(self):
        self.peak = list(self.live)

    def _account(self, array, device):
        """Count ``array``'s bytes against ``device`` until it is collected."""
        if array.base is not None or array.nbytes == 0 or id(array) in self._owned:
            return
        with self._lock:
            if self.live[device] + array.nbytes > self.memory:
                raise OutOfMemoryError(
                    f"Out of memory allocating {array.nbytes:,} bytes (allocated so far: {self.live[device]:,} bytes)."
                )
            self.live[device] += array.nbytes
            self.peak[device] = max(self.peak[device], self.live[device])
            self.allocations[device] += 1
            key = id(array)
            self._owned[key] = weakref.finalize(array, self._release, key, device, array.nbytes)

    def _release(self, key, device, nbytes):
        with self._lock:
            self.live[device] -= nbytes
            self._owned.pop(key, None)


STATE = FakeGPUState()


class DeviceArray(NDArrayOperatorsMixin):
    """An array 'on a device': NumPy inside, no implicit way out."""

    __slots__ = ("_a", "device_id", "__weakref__")

    def __init__(self, array, device):
        self._a = array
        self.device_id = device

    # --- the ways out -------------------------------------------------
    def __array__(self, *args, **kwargs):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly."
        )

    def get(self, stream=None):
        STATE.downloads.append((self._a.shape, self._a.dtype))
        return self._a.copy()

    def tolist(self):
        return self.get().tolist()

    def item(self):
        return self._a.item()

    def __bool__(self):
        return bool(self._a)

    def __float__(self):
        return float(self._a)

    def __int__(self):
        return int(self._a)

    # --- array protocol -----------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if STATE.kernel_error is not None:
            raise STATE.kernel_error
        out = kwargs.pop("out", None)
        kwargs = _unwrap(kwargs)
        if out is not None:
            kwargs["out"] = tuple(_unwrap(o) for o in out)
        result = getattr(ufunc, method)(*_unwrap(inputs), **kwargs)
        if out is not None:
            return out[0] if len(out) == 1 else out
        return _wrap(result)

    def __array_function__(self, func, types_, args, kwargs):
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    def __getattr__(self, name):
        if name not in NDARRAY_API:
            raise AttributeError(f"'cupy.ndarray' stand-in has no attribute {name!r} (see NDARRAY_API)")
        attr = getattr(_unwrap(self), name)
        if callable(attr):
            return lambda *args, **kwargs: _wrap(attr(*_unwrap(args), **_unwrap(kwargs)))
        return _wrap(attr) if isinstance(attr, np.ndarray) else attr

    def __getitem__(self, key):
        return _wrap(_unwrap(self)[_unwrap(key, host_ok=True)])

    def __setitem__(self, key, value):
        _unwrap(self)[_unwrap(key, host_ok=True)] = _unwrap(value)

    def __len__(self):
        return len(self._a)

    def __iter__(self):
        return (_wrap(row) for row in _unwrap(self))

    def __repr__(self):
        return f"DeviceArray(device={self.device_id}, {self._a!r})"

    @property
    def T(self):
        return _wrap(self._a.T)


def _wrap(value, device=None):
    """NumPy results as device arrays (scalars as 0-d arrays, as CuPy's reductions give)."""
    if isinstance(value, DeviceArray):
        return value
    if isinstance(value, np.ndarray):
        device = STATE.current if device is None else device
        STATE._account(value, device)
        return DeviceArray(value, device)
    if isinstance(value, np.generic) and not isinstance(value, (np.dtype,)):
        return _wrap(np.asarray(value), device)
    if isinstance(value, tuple):
        return tuple(_wrap(v, device) for v in value)
    if isinstance(value, list):
        return [_wrap(v, device) for v in value]
    return value


def _unwrap(value, host_ok=False):
    """The NumPy arrays inside; host arrays and other devices' arrays are errors."""
    if isinstance(value, DeviceArray):
        if value.device_id != STATE.current:
            raise ValueError(
                f"The device where the array resides ({value.device_id}) is different "
                f"from the current device ({STATE.current})."
            )
        return value._a
    if isinstance(value, np.ndarray) and not host_ok:
        raise TypeError(f"Unsupported type {type(value)} (a host array where a device array is needed)")
    if isinstance(value, tuple):
        return tuple(_unwrap(v, host_ok) for v in value)
    if isinstance(value, list):
        return [_unwrap(v, host_ok) for v in value]
    if isinstance(value, dict):
        return {k: _unwrap(v, host_ok) for k, v in value.items()}
    return value


# --- the ``cupy`` module ---------------------------------------------------
def asarray(a, dtype=None, order=None):
    if isinstance(a, DeviceArray):
        return a if dtype is None or a.dtype == dtype else a.astype(dtype)
    host = np.array(a, dtype=dtype, order=order or "K", copy=True)
    if isinstance(a, (np.ndarray, list, tuple)):
        STATE.uploads.append((host.shape, host.dtype))
        pinned = isinstance(a, np.ndarray) and any(np.shares_memory(a, b) for b in STATE.pinned)
        STATE.pinned_uploads.append(pinned)
    return _wrap(host)


def array(a, dtype=None, copy=True, order="K"):
    if isinstance(a, DeviceArray):
        return _wrap(np.array(_unwrap(a), dtype=dtype, copy=True, order=order))
    return asarray(a, dtype=dtype, order=order)


def asnumpy(a, stream=None):
    return a.get() if isinstance(a, DeviceArray) else np.asarray(a)


def _function(func):
    def call(*args, **kwargs):
        if STATE.kernel_error is not None:
            raise STATE.kernel_error
        return _wrap(func(*_unwrap(args), **_unwrap(kwargs)))

    call.__name__ = getattr(func, "__name__", "function")
    return call


class _Device:
    def __init__(self, index=None):
        self.id = STATE.current if index is None else int(index)
        if not 0 <= self.id < STATE.count:
            raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")
        self._previous = []

    def use(self):
        STATE.current = self.id

    def synchronize(self):
        pass

    def __enter__(self):
        self._previous.append(STATE.current)
        STATE.current = self.id
        return self

    def __exit__(self, *exc):
        STATE.current = self._previous.pop()


class _MemoryPool:
    def used_bytes(self):
        return STATE.live[STATE.current]

    def total_bytes(self):
        return STATE.peak[STATE.current]

    def free_bytes(self):
        return 0

    def malloc(self, size):
        raise NotImplementedError("the stand-in's allocations are counted in STATE, not through an allocator")

    def free_all_blocks(self):
        # what is still held when the caller frees the pool (between tiles,
        # after an out-of-memory error); peaks stay, as with CuPy
        STATE.held_at_free.append(STATE.live[STATE.current])


_POOL = _MemoryPool()


class _Stream:
    def synchronize(self):
        STATE.stream_syncs += 1


_STREAM = _Stream()


def _empty_pinned(shape, dtype=np.float64):
    buffer = np.empty(shape, dtype=dtype)
    STATE.pinned.append(buffer)
    return buffer


def _runtime():
    runtime = types.SimpleNamespace()
    runtime.getDeviceCount = lambda: STATE.count
    runtime.memGetInfo = lambda: (STATE.memory - STATE.live[STATE.current], STATE.memory)
    runtime.runtimeGetVersion = lambda: 13000
    runtime.getDeviceProperties = lambda i: {"name": f"Fake GPU {i}".encode(), "totalGlobalMem": STATE.memory}
    runtime.CUDARuntimeError = CUDARuntimeError
    return runtime


class _CupyModule(types.ModuleType):
    """``cupy``: anything not defined here is NumPy's, wrapped."""

    def __getattr__(self, name):
        if name not in CUPY_API:
            raise AttributeError(f"module 'cupy' stand-in has no attribute {name!r} (see CUPY_API)")
        attr = getattr(np, name)
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes (cupy.float32 is numpy.float32), constants
        return _function(attr)


def _make_modules():
    cupy = _CupyModule("cupy")
    cupy.__version__ = "0.0-fake"
    cupy.ndarray = DeviceArray
    cupy.asarray = asarray
    cupy.array = array
    cupy.asnumpy = asnumpy
    cupy.get_default_memory_pool = lambda: _POOL
    cupy.ElementwiseKernel = ElementwiseKernel
    cupy.cuda = types.SimpleNamespace(
        set_allocator=lambda allocator=None: None,  # allocations are counted in STATE instead
        get_current_stream=lambda: _STREAM,
        Device=_Device,
        runtime=_runtime(),
        memory=types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError),
        compiler=types.SimpleNamespace(CompileException=CompileException),
    )

    ndimage = types.ModuleType("cupyx.scipy.ndimage")
    for name in NDIMAGE_API:
        setattr(ndimage, name, _function(getattr(scipy.ndimage, name)))
    cupyx = types.ModuleType("cupyx")
    cupyx.empty_pinned = _empty_pinned  # page-locked host memory: ordinary host memory here, tracked
    cupyx_scipy = types.ModuleType("cupyx.scipy")
    cupyx.scipy, cupyx_scipy.ndimage = cupyx_scipy, ndimage
    return {"cupy": cupy, "cupyx": cupyx, "cupyx.scipy": cupyx_scipy, "cupyx.scipy.ndimage": ndimage}


# --- cupy.ElementwiseKernel ---------------------------------------------------
def _keys_weights(t):
    """keys_weights of the warp kernel's preamble, each operation a float32 one."""
    f32 = np.float32
    a = f32(-0.75)
    u = t + f32(1.0)
    p = a * u - f32(-3.75)
    p = p * u + f32(-6.0)
    w0 = p * u - f32(-3.0)
    p = f32(1.25) * t - f32(2.25)
    w1 = p * t * t + f32(1.0)
    s = f32(1.0) - t
    p = f32(1.25) * s - f32(2.25)
    w2 = p * s * s + f32(1.0)
    w3 = f32(1.0) - w0 - w1 - w2
    return w0, w1, w2, w3


def _warp_cubic_kernel(image, m00, m01, m02, m10, m11, m12, ox, oy, row0, col0, out_cols, height, width, channels, out):
    """The engine's ``napari_focus_stack_warp_cubic`` kernel body, for every ``i`` at once."""
    i = np.arange(out.size, dtype=np.int64)
    c = i % channels
    pixel = i // channels
    x = (col0 + pixel % out_cols).astype(np.float32)
    y = (row0 + pixel // out_cols).astype(np.float32)
    sx = (x * m00 + (y * m01 + m02)) - ox
    sy = (x * m10 + (y * m11 + m12)) - oy
    fx, fy = np.floor(sx), np.floor(sy)
    wx, wy = _keys_weights(sx - fx), _keys_weights(sy - fy)
    x0, y0 = fx.astype(np.int64), fy.astype(np.int64)
    flat = image.reshape(-1)
    band = np.zeros(out.size, np.float32)
    for r in range(4):
        yy = np.clip(y0 + (r - 1), 0, height - 1)
        row = np.zeros(out.size, np.float32)
        for k in range(4):
            xx = np.clip(x0 + (k - 1), 0, width - 1)
            row = row + flat[(yy * width + xx) * channels + c].astype(np.float32) * wx[k]
        band = band + row * wy[r]
    out.reshape(-1)[...] = band


#: NumPy transcriptions of the engine's CUDA kernels, by kernel name.
KERNELS = {"napari_focus_stack_warp_cubic": _warp_cubic_kernel}

#: C types of ElementwiseKernel parameters and the NumPy scalar each must be.
_SCALAR_TYPES = {"float32": np.float32, "int64": np.int64}


class ElementwiseKernel:
    """``cupy.ElementwiseKernel``: runs :data:`KERNELS`' transcription of the named kernel."""

    def __init__(self, in_params, out_params, operation, name="kernel", preamble="", **kwargs):
        self.params = [p.split() for p in f"{in_params}, {out_params}".split(",")]
        self.name = name

    def __call__(self, *args):
        if STATE.kernel_error is not None:
            raise STATE.kernel_error
        if self.name not in KERNELS:
            raise CompileException(f"the CuPy stand-in has no NumPy transcription of kernel {self.name!r}")
        if len(args) != len(self.params):
            raise TypeError(f"{self.name}: {len(self.params)} arguments expected, {len(args)} given")
        values = []
        for param, arg in zip(self.params, args):
            kind = param[-2]
            if not isinstance(arg, (DeviceArray, np.ndarray)):  # a scalar: the engine passes the exact type
                if kind not in _SCALAR_TYPES or not isinstance(arg, _SCALAR_TYPES[kind]):
                    raise TypeError(f"{self.name}: {param[-1]} must be {kind}, got {type(arg).__name__}")
                values.append(arg)
            else:  # arrays: on the current device
                array = _unwrap(arg)
                if kind in _SCALAR_TYPES and array.dtype != _SCALAR_TYPES[kind]:
                    raise TypeError(f"{self.name}: {param[-1]} must be float32, got {array.dtype}")
                values.append(array)
        KERNELS[self.name](*values)
        return args[-1]


def install(monkeypatch, devices=1, memory=16 * 2**30):
    """Install fresh fake CuPy modules (undone by ``monkeypatch``); returns their state."""
    global STATE
    STATE = FakeGPUState(devices, memory)
    for name, module in _make_modules().items():
        monkeypatch.setitem(sys.modules, name, module)
    from napari_focus_stack.engine.backend import gpu

    monkeypatch.setattr(gpu, "_KERNEL_CHECKS", set())  # a fresh GPU, as in a new process
    return STATE
