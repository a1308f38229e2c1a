"""The OpenCV backend must agree with the ndimage backend (which is what CuPy runs)."""

import numpy as np
import pytest

from napari_focus_stack.engine.backend import (
    DeviceUnavailableError,
    NdimageBackend,
    OpenCVBackend,
    get_backend,
    gpu_status,
)

CV = OpenCVBackend()
ND = NdimageBackend()
RNG = np.random.default_rng(0)
GRAY = RNG.random((53, 71), dtype=np.float32)
RGB = RNG.random((53, 71, 3), dtype=np.float32)

OPERATIONS = {
    "gaussian": lambda be, a: be.gaussian(a, 2.5),
    "box_mean": lambda be, a: be.box_mean(a, 4),
    "resize": lambda be, a: be.resize(a, 3),
    "pyramid_down": lambda be, a: be.pyramid_down(a),
    # OpenCV's pyrDown on the CPU backend, the generic reduction elsewhere
    "pyramid_reduce": lambda be, a: be.pyramid_reduce(a),
    "pyramid_up": lambda be, a: be.pyramid_up(be.pyramid_down(a), a.shape),
}


@pytest.mark.parametrize("image", [GRAY, RGB], ids=["gray", "rgb"])
@pytest.mark.parametrize("name", sorted(OPERATIONS))
def test_opencv_matches_ndimage(name, image):
    op = OPERATIONS[name]
    a, b = op(CV, image), op(ND, image)
    assert a.shape == b.shape
    assert a.dtype == b.dtype == np.float32
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)


def test_laplacian_and_luminance_match():
    np.testing.assert_allclose(CV.laplacian(GRAY), ND.laplacian(GRAY), atol=1e-6)
    np.testing.assert_allclose(CV.luminance(RGB), ND.luminance(RGB), atol=1e-6)
    assert CV.luminance(RGB).shape == (53, 71)


def test_resize_keeps_pixel_centres():
    # A bilinear ramp must stay a ramp on the finer grid, with the same mean.
    ramp = np.tile(np.arange(8, dtype=np.float32), (4, 1))
    up = CV.resize(ramp, 2)
    assert up.shape == (8, 16)
    # interior samples at input coordinate (j + 0.5) / 2 - 0.5
    expected = (np.arange(16) + 0.5) / 2 - 0.5
    np.testing.assert_allclose(up[0, 1:-1], expected[1:-1], atol=1e-6)


def test_pyramid_round_trip_is_exact():
    down = CV.pyramid_down(RGB)
    assert down.shape == (27, 36, 3)
    band = RGB - CV.pyramid_up(down, RGB.shape)
    np.testing.assert_allclose(band + CV.pyramid_up(down, RGB.shape), RGB, atol=1e-6)


@pytest.mark.parametrize("shape", [(54, 72), (53, 72), (54, 71), (53, 71), (3, 5)], ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("channels", [(), (3,)], ids=["gray", "rgb"])
def test_opencv_pyramid_up_is_the_zero_fill_and_interpolation_on_odd_and_even_sides(shape, channels):
    # OpenCV's pyrUp reflects about another pixel towards an odd side: the
    # override expands one pixel further there and cuts back
    shape = shape + channels
    small = RNG.random(((shape[0] + 1) // 2, (shape[1] + 1) // 2) + channels, dtype=np.float32)
    reference = NdimageBackend.pyramid_up(CV, small, shape)  # the definition, on OpenCV's filters
    up = CV.pyramid_up(small, shape)
    assert up.shape == shape and up.dtype == np.float32 and up.flags.c_contiguous
    assert np.abs(up - reference).max() <= 2e-7
    np.testing.assert_allclose(up, ND.pyramid_up(small, shape), rtol=0, atol=1e-6)
    out, scratch = np.full(shape, np.nan, np.float32), np.full(shape, np.nan, np.float32)
    assert CV.pyramid_up(small, shape, out=out, scratch=scratch) is out
    np.testing.assert_array_equal(out, up)


def test_cpu_and_auto_without_gpu(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    assert get_backend("cpu").name == "cpu"
    assert get_backend("auto").name == "cpu"
    ok, why = gpu_status()
    assert not ok and "CuPy is not installed" in why


@pytest.fixture
def no_cupy_imported(monkeypatch):
    """A process that has not imported CuPy (a real CuPy stays installed): its modules are taken out."""
    import sys

    for name in [n for n in sys.modules if n == "cupy" or n.startswith(("cupy.", "cupyx", "cupy_backends"))]:
        monkeypatch.delitem(sys.modules, name)


def driver(monkeypatch, found):
    """The NVIDIA driver's library found (True) or missing (False) on this machine."""
    from napari_focus_stack.engine.backend import gpu

    monkeypatch.setattr(gpu, "_driver_library_loads", lambda: found)


def test_auto_without_nvidia_driver_does_not_import_cupy(no_cupy_imported, monkeypatch):
    import sys

    import napari_focus_stack.engine.backend as backend

    asked = []
    monkeypatch.setattr(backend, "_cupy_backend", lambda index: asked.append(index) or CV)
    driver(monkeypatch, False)
    assert get_backend("auto").name == "cpu" and backend.get_backends("auto")[0].name == "cpu"
    assert asked == [] and "cupy" not in sys.modules
    # a GPU asked for by name is still CuPy's to refuse, with its reason
    assert get_backend("gpu") is CV and asked == [0]
    driver(monkeypatch, True)  # a driver: CuPy is asked, as before
    asked.clear()
    assert get_backend("auto") is CV and asked == [0]


def test_auto_with_the_cupy_stand_in_needs_no_driver(fake_gpu, monkeypatch):
    # CuPy (here its stand-in) already imported costs nothing to ask: the driver check steps aside
    driver(monkeypatch, False)
    fake_gpu()
    assert get_backend("auto").name == "gpu:0"


def test_nvidia_driver_library_by_platform(no_cupy_imported, monkeypatch):
    import sys

    from napari_focus_stack.engine.backend import gpu

    assert gpu.DRIVER_LIBRARIES == {"linux": "libcuda.so.1", "win32": "nvcuda.dll"}
    gpu._driver_library_loads.cache_clear()
    monkeypatch.setitem(gpu.DRIVER_LIBRARIES, sys.platform, "libno-such-driver-here.so.1")
    try:
        assert gpu.nvidia_driver_found() is False  # a library that is not there
    finally:
        gpu._driver_library_loads.cache_clear()
    monkeypatch.setattr(gpu, "DRIVER_LIBRARIES", {})  # a platform without a known library (macOS): CuPy answers
    assert gpu.nvidia_driver_found() is True


@pytest.mark.parametrize("device", ["gpu", "gpu:1"])
def test_gpu_without_cupy_says_how_to_install(monkeypatch, device):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(DeviceUnavailableError, match=r'pip install "napari-focus-stack\[gpu\]"'):
        get_backend(device)


@pytest.mark.parametrize("device", ["tpu", "gpu:x", ""])
def test_unknown_device(device):
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu', 'gpu', 'gpu:N' or 'gpu:all'"):
        get_backend(device)


@pytest.mark.parametrize("be", [CV, ND], ids=["opencv", "ndimage"])
@pytest.mark.parametrize("image", [GRAY, RGB, (RGB * 255).astype(np.uint8)], ids=["gray", "rgb", "rgb-uint8"])
def test_luminance_into_a_given_buffer(be, image):
    out = np.full(image.shape[:2], np.nan, dtype=np.float32)
    assert be.luminance(image, out=out) is out
    np.testing.assert_array_equal(out, be.luminance(image))


def test_pyramid_buffers_given_or_not_give_the_same_pixels():
    for be in (CV, ND):
        down = be.pyramid_down(GRAY)
        out, scratch = np.empty_like(down), np.empty_like(GRAY)
        np.testing.assert_array_equal(be.pyramid_down(GRAY, out=out, scratch=scratch), down)
        np.testing.assert_array_equal(
            be.pyramid_reduce(GRAY, out=np.empty_like(down), scratch=scratch), be.pyramid_reduce(GRAY)
        )
        up = be.pyramid_up(down, GRAY.shape)
        scratch.fill(np.nan)  # a used scratch: zero-filled before use
        np.testing.assert_array_equal(be.pyramid_up(down, GRAY.shape, out=np.empty_like(GRAY), scratch=scratch), up)


@pytest.mark.parametrize("minus", [False, True], ids=["product", "difference"])
@pytest.mark.parametrize("be", [CV, ND], ids=["opencv", "ndimage"])
def test_accumulate_product_adds_the_weighted_band_in_place(be, minus):
    band, weight, up = (RNG.random((53, 71), dtype=np.float32) for _ in range(3))
    total = RNG.random((53, 71), dtype=np.float32)
    expected = total.astype(np.float64) + (band - (up if minus else 0)).astype(np.float64) * weight
    target = total.copy()
    be.accumulate_product(target, band.copy(), weight, minus=up if minus else None)
    np.testing.assert_allclose(target, expected, rtol=0, atol=1e-6)
    # a strided view (one channel of an RGB plane) takes NumPy's way, same result
    strided = np.repeat(band[..., None], 3, axis=2)[..., 1]
    assert not strided.flags.c_contiguous
    view_target = total.copy()
    be.accumulate_product(view_target, strided, weight, minus=up if minus else None)
    np.testing.assert_allclose(view_target, expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("found", [False, True], ids=["no-driver", "driver"])
def test_gpu_without_a_usable_device_says_whether_the_driver_is_missing(fake_gpu, monkeypatch, found):
    import sys

    fake_gpu()

    def fails():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient for CUDA runtime version")

    monkeypatch.setattr(sys.modules["cupy"].cuda.runtime, "getDeviceCount", fails)
    monkeypatch.setattr(sys, "platform", "linux")
    driver(monkeypatch, found)
    with pytest.raises(DeviceUnavailableError) as error:
        get_backend("gpu")
    said = "no NVIDIA driver was found on this machine" if not found else "CUDA reports no usable device"
    assert str(error.value).startswith(f"GPU requested but {said} (cudaErrorInsufficientDriver: ")


def test_opencv_box_mean_is_the_separable_box_to_float_rounding():
    from napari_focus_stack.engine.backend.base import NdimageBackend
    from napari_focus_stack.engine.backend.opencv import OpenCVBackend

    rng = np.random.default_rng(21)
    image = (rng.random((61, 83), dtype=np.float32) ** 4) * 1e-3
    image[:, :30] = 0  # running sums must give exact zeros where the window holds only zeros
    cv, ref = OpenCVBackend(), NdimageBackend()
    for radius in (1, 2, 5):
        expected = ref.box_mean(image, radius)
        out = np.full_like(image, np.nan)
        got = cv.box_mean(image, radius, out=out)
        assert got is out and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-12)
        assert (got[:, : 30 - radius] == 0).all() and got.min() >= 0


def test_single_threaded_filters_restore_opencv_threads_after_nested_and_concurrent_calls():
    import threading

    import cv2

    from napari_focus_stack.engine.backend.opencv import _FilterThreads

    before = cv2.getNumThreads()
    threads = _FilterThreads()
    seen = []

    def work():
        with threads.single(), threads.single():
            seen.append(cv2.getNumThreads())

    workers = [threading.Thread(target=work) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert seen == [1] * 8 and cv2.getNumThreads() == before


def test_every_opencv_backend_shares_one_thread_setting(monkeypatch):
    import napari_focus_stack.engine.backend.opencv as module

    monkeypatch.setattr(module.os, "cpu_count", lambda: 2)
    first, second = module.OpenCVBackend(), module.OpenCVBackend()
    assert first._filter_threads.__self__ is second._filter_threads.__self__
