"""The CuPy stand-in offers only what CuPy has, and the engine's checks of a CuPy install.

CuPy imports without a GPU (CI installs it), so its names and signatures can
be checked against the stand-in's lists on any machine; on a machine without
it those tests skip.
"""

import inspect

import fake_cupy
import numpy as np
import pytest

from napari_focus_stack.engine.backend import DeviceUnavailableError, get_backend, gpu_status

#: Keywords the engine passes, per function: CuPy must accept each.
KEYWORDS = {
    ("cupy", "copyto"): ("where",),
    ("cupy", "asarray"): ("dtype",),
    ("cupy", "multiply"): ("out", "dtype"),
    ("cupy", "add"): ("out",),
    ("cupy", "stack"): ("axis",),
    ("cupy", "full"): ("dtype",),
    ("ndarray", "astype"): ("copy",),
    ("ndimage", "correlate1d"): ("axis", "mode", "output"),
    ("ndimage", "laplace"): ("mode", "output"),
    ("ndimage", "zoom"): ("order", "mode", "grid_mode"),
}


@pytest.fixture
def real_cupy():
    cupy = pytest.importorskip("cupy")
    if cupy.__version__.endswith("fake"):
        pytest.skip("the stand-in is installed")
    import cupyx.scipy.ndimage

    return {"cupy": cupy, "ndarray": cupy.ndarray, "ndimage": cupyx.scipy.ndimage}


def accepts(function, keyword):
    """Whether ``function`` takes ``keyword`` (from its signature, or its docstring for Cython)."""
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        first_line = (function.__doc__ or "").strip().splitlines()[0]
        return f"{keyword}=" in first_line
    return keyword in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def test_every_name_the_stand_in_offers_is_cupys(real_cupy):
    lists = {"cupy": fake_cupy.CUPY_API, "ndarray": fake_cupy.NDARRAY_API, "ndimage": fake_cupy.NDIMAGE_API}
    missing = [
        f"{where}.{name}" for where, names in lists.items() for name in names if not hasattr(real_cupy[where], name)
    ]
    assert missing == []
    cupy = real_cupy["cupy"]
    # what the stand-in defines itself, beyond NumPy's functions
    for path in [
        "asarray",
        "array",
        "asnumpy",
        "get_default_memory_pool",
        "cuda.Device",
        "cuda.runtime.getDeviceCount",
        "cuda.runtime.memGetInfo",
        "cuda.runtime.runtimeGetVersion",
        "cuda.runtime.getDeviceProperties",
        "cuda.memory.OutOfMemoryError",
        "ndarray.get",
        "cuda.set_allocator",
        "cuda.MemoryPool.malloc",
        "cuda.get_current_stream",
        "cuda.Stream.synchronize",
        "ElementwiseKernel",
        "cuda.compiler.CompileException",
    ]:
        obj = cupy
        for part in path.split("."):
            obj = getattr(obj, part)
    import cupyx

    assert callable(cupyx.empty_pinned)
    assert issubclass(cupy.cuda.memory.OutOfMemoryError, MemoryError)  # the engine catches MemoryError too


@pytest.mark.parametrize("where, name", sorted(KEYWORDS))
def test_cupy_takes_the_keywords_the_engine_passes(real_cupy, where, name):
    function = getattr(real_cupy[where], name)
    assert [k for k in KEYWORDS[where, name] if not accepts(function, k)] == []


def test_stand_in_refuses_what_cupy_lacks(fake_gpu):
    fake_gpu()
    import cupy
    import cupyx.scipy.ndimage as cundi

    assert "nanquantile" not in fake_cupy.CUPY_API
    with pytest.raises(AttributeError, match="nanquantile"):
        cupy.nanquantile
    with pytest.raises(AttributeError, match="tofile"):
        cupy.zeros(3).tofile
    assert not hasattr(cundi, "gaussian_filter")  # SciPy's, not in the list the engine uses
    assert cupy.add(cupy.ones(2), 1).get().tolist() == [2.0, 2.0]


def test_gpu_whose_kernels_cannot_compile_falls_back_and_says_why(fake_gpu):
    state = fake_gpu()
    state.kernel_error = RuntimeError('Failure finding "libnvrtc.so.13 or libnvrtc.so.12"')
    assert get_backend("auto").name == "cpu"
    ok, why = gpu_status()
    assert not ok
    assert "GPU 0 found, but CuPy cannot run kernels on it" in why and "libnvrtc" in why
    with pytest.raises(DeviceUnavailableError, match=r'pip install "napari-focus-stack\[gpu\]"'):
        get_backend("gpu")


def test_gpu_whose_kernels_run_is_used(fake_gpu):
    fake_gpu()
    be = get_backend("auto")
    assert be.name == "gpu:0"
    assert gpu_status() == (True, "GPU available (gpu:0)")
    gray = be.to_host(be.luminance(be.asarray(np.full((2, 3, 3), 100, dtype=np.uint8))))
    assert gray.dtype == np.float32 and np.allclose(gray, 100, atol=1e-4)


def test_real_cupy_without_a_usable_gpu_falls_back_to_the_cpu(real_cupy):
    ok, why = gpu_status()
    if ok:
        pytest.skip("this machine has a working GPU")
    assert get_backend("auto").name == "cpu"
    assert "GPU" in why
    with pytest.raises(DeviceUnavailableError):
        get_backend("gpu")


def test_kernel_check_is_per_cupy_module_and_retried_after_a_failure(fake_gpu):
    # a fresh stand-in is a fresh process: an earlier stand-in's verdict must
    # not carry over, and a failure is not remembered
    state = fake_gpu()
    state.kernel_error = RuntimeError("cudaErrorMemoryAllocation: out of memory")
    assert get_backend("auto").name == "cpu"
    state.kernel_error = None
    assert get_backend("auto").name == "gpu:0"
    for _ in range(5):
        state = fake_gpu()
        state.kernel_error = RuntimeError("libnvrtc.so.12 not found")
        assert get_backend("auto").name == "cpu"


def test_accounting_survives_a_collection_inside_an_allocation(fake_gpu):
    """A garbage collection run while the stand-in counts a new array can free
    another array in the same thread: its release must not wait on the lock
    that thread holds (a deadlock that hung CI in a Dask worker thread)."""
    import gc
    import threading

    state = fake_gpu()
    import cupy

    def allocate():
        for _ in range(300):
            cycle = [cupy.asarray(np.ones(4))]
            cycle.append(cycle)  # garbage only a collection frees
            del cycle
            cupy.asarray(np.ones(4))

    before = gc.get_threshold()
    gc.set_threshold(7)  # collections often, some of them inside the accounting
    try:
        worker = threading.Thread(target=allocate, daemon=True)
        worker.start()
        worker.join(20)
    finally:
        gc.set_threshold(*before)
    assert not worker.is_alive(), "allocation deadlocked"
    gc.collect()
    assert state.live == [0] and state.allocations[0] == 600


def test_stand_in_kernels_check_their_arguments(fake_gpu):
    fake_gpu()
    import cupy

    kernel = cupy.ElementwiseKernel("raw T image, float32 m00", "float32 out", "out = 0;", "unknown_kernel")
    with pytest.raises(cupy.cuda.compiler.CompileException, match="unknown_kernel"):
        kernel(cupy.zeros(3), np.float32(1), cupy.zeros(3, dtype=cupy.float32))
    fake_cupy.KERNELS["check_args"] = lambda image, m00, out: None
    try:
        kernel = cupy.ElementwiseKernel("raw T image, float32 m00", "float32 out", "out = 0;", "check_args")
        out = cupy.zeros(3, dtype=cupy.float32)
        assert kernel(cupy.zeros(3), np.float32(1), out) is out
        with pytest.raises(TypeError, match="m00 must be float32"):
            kernel(cupy.zeros(3), 1.0, out)  # a Python float: the engine passes exact types
        with pytest.raises(TypeError, match="host array"):
            kernel(np.zeros(3), np.float32(1), out)
        with pytest.raises(TypeError, match="out must be float32"):
            kernel(cupy.zeros(3), np.float32(1), cupy.zeros(3))
    finally:
        del fake_cupy.KERNELS["check_args"]
