"""The GPU path: on a real GPU when CuPy sees one, and always on the CuPy stand-in.

The stand-in (``tests/fake_cupy.py``) computes with NumPy but refuses what
CuPy refuses (implicit host conversions, host arrays in device arithmetic,
arrays used on another device), counts transfers and device memory, and
raises CuPy's out-of-memory error past its simulated memory. Tests that need
those counts run on it only; the others also run on a real GPU.

Agreement with the CPU (tolerances stated here and in docs/ALGORITHMS.md):
depth within 1e-4 slices and confidence within 1e-4 where the image has
texture, fused pixels within 1 grey level (float32 rounding flips under 0.5 %).
Aligned stacks: both warps sample at the same float32 source positions
(``source_coordinates``), but OpenCV's 8-bit bicubic weights round about 1
warped value in 100 000 differently, which moves depth and confidence by up
to 5e-3 at those pixels (depth is picked on smoothed scores, whose flatter
peaks make the sub-slice fit more sensitive).
"""

import numpy as np
import pytest

from napari_focus_stack import focus_stack, fuse_from_depth, simulate_stack
from napari_focus_stack.engine.backend import DeviceUnavailableError, get_backend, gpu_status
from napari_focus_stack.engine.result import StackParams
from napari_focus_stack.engine.tiling import MemoryBudgetError, working_bytes_per_pixel

METHODS = ["weighted", "depthmap", "pyramid"]


@pytest.fixture(params=["fake", "real"])
def gpu(request):
    """The CuPy stand-in's state, or None on a real GPU (skipped where there is none)."""
    if request.param == "fake":
        return request.getfixturevalue("fake_gpu")()
    pytest.importorskip("cupy")
    ok, why = gpu_status()
    if not ok:
        pytest.skip(why)
    return None


@pytest.fixture(scope="module")
def rgb():
    return simulate_stack((160, 192), 6, texture="mixed", depth="dome", rgb=True, noise=0.01, seed=31)


@pytest.fixture(scope="module")
def moving():
    return simulate_stack(
        (200, 240),
        6,
        texture="mixed",
        depth="slope",
        rgb=True,
        noise=0.01,
        drift=5,
        breathing=0.02,
        gain=0.05,
        seed=32,
    )


def assert_agree(cpu, gpu_result, *, fused_levels=1, fused_fraction=5e-3, tolerance=1e-4):
    textured = cpu.confidence > 0.2
    assert textured.mean() > 0.3  # the comparison covers most of the image
    assert gpu_result.fused.dtype == cpu.fused.dtype and gpu_result.fused.shape == cpu.fused.shape
    assert np.abs(gpu_result.depth - cpu.depth)[textured].max() <= tolerance
    assert np.abs(gpu_result.confidence - cpu.confidence)[textured].max() <= tolerance
    difference = np.abs(gpu_result.fused.astype(np.int64) - cpu.fused)
    assert difference.max() <= fused_levels
    assert (difference > 0).mean() <= fused_fraction


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("kind", ["gray-uint8", "rgb-uint8", "rgb-uint16"])
def test_gpu_agrees_with_cpu(gpu, method, kind):
    colour, dtype = kind.split("-")
    sim = simulate_stack((128, 144), 5, rgb=colour == "rgb", dtype=dtype, noise=0.01, seed=33)
    cpu = focus_stack(sim.frames, method=method, device="cpu")
    on_gpu = focus_stack(sim.frames, method=method, device="gpu")
    assert on_gpu.device == "gpu:0"
    assert_agree(cpu, on_gpu)


def test_only_frames_go_up_and_only_results_come_back(fake_gpu, rgb):
    state = fake_gpu()
    result = focus_stack(rgb.frames, device="gpu", align="none")
    frames = [(shape, dtype) for shape, dtype in state.uploads if len(shape) > 1]
    constants = [shape for shape, dtype in state.uploads if len(shape) <= 1]
    # each frame goes up once, as uint8, from page-locked memory (staged on
    # the read-ahead thread in two alternating buffers), and the upload is
    # waited for before its buffer can be reused; the rest is a few filter kernels
    assert frames == [((160, 192, 3), np.dtype(np.uint8))] * 6
    frame_uploads = [p for (shape, _), p in zip(state.uploads, state.pinned_uploads) if len(shape) > 1]
    assert frame_uploads == [True] * 6
    assert len(state.pinned) == 2 and state.stream_syncs >= 6
    assert len(constants) <= 8 and all(
        shape[0] <= 64 for shape in constants
    )  # the widest: the depth regularisation Gaussian
    assert state.downloads == [
        ((160, 192, 3), np.dtype(np.uint8)),
        ((160, 192), np.dtype(np.float32)),
        ((160, 192), np.dtype(np.float32)),
    ]
    assert result.fused.dtype == np.uint8


def test_aligned_frames_are_warped_on_the_device(fake_gpu, moving):
    state = fake_gpu()
    result = focus_stack(moving.frames, device="gpu")
    assert result.transforms is not None and not np.allclose(result.transforms, np.eye(3))
    # raw uint8 frames (cropped to what the warp reaches) go up; no warped
    # frame or coverage mask is made on the host
    frames = [(shape, dtype) for shape, dtype in state.uploads if len(shape) > 1]
    assert len(frames) == 6 and all(dtype == np.uint8 and len(shape) == 3 for shape, dtype in frames)
    assert [p for (shape, _), p in zip(state.uploads, state.pinned_uploads) if len(shape) > 1] == [True] * 6
    assert len(state.downloads) == 3


def test_aligned_stack_agrees_with_cpu(gpu, moving):
    cpu = focus_stack(moving.frames, device="cpu")
    on_gpu = focus_stack(moving.frames, device="gpu")
    np.testing.assert_array_equal(on_gpu.transforms, cpu.transforms)
    np.testing.assert_array_equal(on_gpu.partial_coverage, cpu.partial_coverage)
    # OpenCV's 8-bit bicubic weights round about 1 warped value in 100 000
    # differently; depth and confidence move by up to 5e-3 at those pixels
    assert_agree(cpu, on_gpu, tolerance=5e-3)


def test_device_warp_matches_opencv():
    import cv2

    from napari_focus_stack.engine.backend import NdimageBackend
    from napari_focus_stack.engine.warp import source_coordinates

    rng = np.random.default_rng(5)
    be = NdimageBackend()
    transform = np.array([[1.013, 0.02, -2.7], [-0.018, 0.994, 1.4], [0, 0, 1]])
    rows, cols = slice(0, 60), slice(0, 80)
    x, y = source_coordinates(transform, rows, cols)
    for image in [(rng.random((70, 90, 3)) * 255).astype(np.uint8), rng.random((70, 90), dtype=np.float32)]:
        expected = cv2.remap(image, x, y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        warped = be.warp_cubic(image, transform, rows, cols)
        assert warped.dtype == np.float32 and warped.shape == expected.shape
        if image.dtype == np.uint8:  # rounded: OpenCV's 8-bit weights flip a rare pixel
            rounded = np.clip(np.rint(warped), 0, 255).astype(np.uint8)
            difference = np.abs(rounded.astype(int) - expected)
            assert difference.max() <= 1 and (difference > 0).mean() < 1e-3
        else:
            np.testing.assert_allclose(warped, expected, rtol=0, atol=1e-5)
        # a part, from a cut of the frame that holds its taps: the same pixels as the whole
        part = be.warp_cubic(image[10:60, 10:80], transform, slice(20, 40), slice(20, 50), origin=(10, 10))
        np.testing.assert_array_equal(part, warped[20:40, 20:50])


def tiling_budget(shape, fraction, **params):
    """A device budget that holds about ``fraction`` of the image at once."""
    p = StackParams(**params)
    return int(working_bytes_per_pixel(3, 1, p) * shape[0] * shape[1] * fraction)


@pytest.mark.parametrize("align", ["none", "similarity"])
def test_tiles_on_gpu_equal_one_pass_and_respect_the_budget(fake_gpu, moving, align):
    from napari_focus_stack.engine.tiling import plan_tiles, tile_bytes

    state = fake_gpu()
    whole = focus_stack(moving.frames, device="gpu", align=align)
    # 40 % of what one pass needs on the device, by the planner's own count
    params, gpu = StackParams(align=align), dict(frames_in_budget=False, band_pixels=2**21, device_warp=align != "none")
    one_pass = tile_bytes(plan_tiles((200, 240), params, 2**62, 3, 1, **gpu), params, 3, 1, **gpu)
    budget = int(0.4 * one_pass)
    state.reset_peaks()
    tiled = focus_stack(moving.frames, device="gpu", align=align, max_memory=budget)
    assert tiled.metadata["tiles"] > 1
    assert state.peak[0] <= budget
    # the pool is emptied after every tile, when only the cached kernels are alive
    assert len(state.held_at_free) == tiled.metadata["tiles"]
    assert max(state.held_at_free) < 4096
    np.testing.assert_allclose(tiled.depth, whole.depth, rtol=0, atol=1e-5 * 6)
    assert np.abs(tiled.fused.astype(int) - whole.fused).max() <= 1


def test_out_of_memory_on_the_device_is_retried_in_smaller_tiles(fake_gpu):
    # large enough for tiles with the depth regularisation's reach
    rgb = simulate_stack((256, 320), 5, texture="mixed", depth="dome", rgb=True, noise=0.01, seed=31)
    expected = focus_stack(rgb.frames, device="cpu")
    # the simulated GPU holds a third of what one pass needs; the budget claims more
    state = fake_gpu(memory=tiling_budget((256, 320), 0.35))
    result = focus_stack(rgb.frames, device="gpu", max_memory=8 * 2**30)
    assert result.metadata["tiles"] > 1
    assert max(state.peak) <= state.memory
    # the failed attempt's arrays were gone when the pool was freed (a few kernels stay)
    assert state.held_at_free and max(state.held_at_free) < 4096
    assert_agree(expected, result)


def test_a_device_too_small_for_any_tile_is_a_clear_error(fake_gpu, rgb):
    fake_gpu(memory=200_000)
    with pytest.raises(MemoryBudgetError, match="too small"):
        focus_stack(rgb.frames, device="gpu", max_memory=8 * 2**30)


def test_gpu_all_spreads_tiles_over_devices(fake_gpu):
    # large enough for two tiles with the depth regularisation's reach
    rgb = simulate_stack((256, 320), 5, texture="mixed", depth="dome", rgb=True, noise=0.01, seed=31)
    state = fake_gpu(devices=2)
    one = focus_stack(rgb.frames, device="gpu:0")
    state.allocations = [0, 0]
    both = focus_stack(rgb.frames, device="gpu:all")
    assert both.device == "gpu:0,gpu:1"
    assert both.metadata["tiles"] >= 2  # one stack is split so that both devices work
    assert state.allocations[0] > 0 and state.allocations[1] > 0
    np.testing.assert_allclose(both.depth, one.depth, rtol=0, atol=1e-5 * 6)


def test_second_gpu_keeps_everything_on_it(fake_gpu, rgb):
    state = fake_gpu(devices=2)
    result = focus_stack(rgb.frames, device="gpu:1")
    assert result.device == "gpu:1"
    assert state.allocations[0] == 0 and state.allocations[1] > 0


def test_device_selection_with_a_gpu(fake_gpu):
    fake_gpu(devices=1)
    assert get_backend("auto").name == "gpu:0"
    assert get_backend("cpu").name == "cpu"
    assert gpu_status() == (True, "GPU available (gpu:0)")
    with pytest.raises(DeviceUnavailableError, match=r"GPU 1 requested but only 1 GPU\(s\) found"):
        get_backend("gpu:1")


def test_refuse_on_gpu_agrees_with_cpu(gpu, moving):
    result = focus_stack(moving.frames, method="depthmap", device="cpu")
    depth = result.depth.copy()
    depth[:, :100] = 2.0  # a retouched region
    cpu = fuse_from_depth(moving.frames, depth, result=result, device="cpu")
    on_gpu = fuse_from_depth(moving.frames, depth, result=result, device="gpu")
    difference = np.abs(on_gpu.astype(int) - cpu)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.005
    # in tiles on the device: the same pixels
    events = []
    tiled = fuse_from_depth(
        moving.frames, depth, result=result, device="gpu", max_memory=3_000_000, progress=events.append
    )
    assert events[-1].total > 6
    np.testing.assert_array_equal(tiled, on_gpu)


def test_a_run_uses_its_backends_gpu_whichever_thread_runs_it(fake_gpu, rgb):
    # the backend is made here (gpu:1 current in this thread only); the run
    # happens on another thread, as in napari's worker or a Dask task
    import threading

    from napari_focus_stack.engine.pipeline import drain, run_pipeline
    from napari_focus_stack.io import open_stack

    state = fake_gpu(devices=2)
    be = get_backend("gpu:1")
    results = []
    thread = threading.Thread(
        target=lambda: results.append(drain(run_pipeline(open_stack(rgb.frames), StackParams(), be)))
    )
    thread.start()
    thread.join()
    assert results and results[0].device == "gpu:1"
    assert state.allocations[1] > 0 and state.allocations[0] == 0


def test_gpu_bands_are_large_and_cpu_bands_as_asked(fake_gpu):
    from napari_focus_stack.engine.backend import NdimageBackend

    fake_gpu()
    gpu = get_backend("gpu")
    bands = []
    gpu.for_each_band(bands.append, 3000, 128, width=4000)
    assert bands[0] == slice(0, 524) and len(bands) == 6  # 2 MP bands: fewer kernel launches
    cpu_bands = []
    NdimageBackend().for_each_band(cpu_bands.append, 3000, 128, width=4000)
    assert len(cpu_bands) == 24  # 128-row bands stay in the CPU's cache


def test_a_gpu_budget_too_small_is_reported_in_the_callers_figures(fake_gpu, rgb):
    # tiles use 80 % of a GPU budget; the message names the budget asked for
    # and what would do, in the same terms
    fake_gpu()
    with pytest.raises(MemoryBudgetError) as caught:
        focus_stack(rgb.frames, device="gpu", max_memory=100_000)
    message = str(caught.value)
    assert message.startswith("a memory budget of 97.7 KiB is too small")
    assert "on a GPU, tiles use 80% of the budget" in message
    focus_stack(rgb.frames, device="gpu", max_memory=caught.value.need)  # enough, as promised


def test_fused_warp_kernel_equals_the_array_code(fake_gpu):
    # the stand-in runs a NumPy transcription of the CUDA source: the arguments
    # the backend passes give, bit for bit, the array code's pixels
    from napari_focus_stack.engine.backend import NdimageBackend

    fake_gpu()
    gpu = get_backend("gpu")
    rng = np.random.default_rng(6)
    transform = np.array([[1.021, 0.013, -3.3], [-0.011, 0.987, 2.6], [0, 0, 1]])
    for image in [
        (rng.random((70, 90, 3)) * 255).astype(np.uint8),
        (rng.random((70, 90)) * 65535).astype(np.uint16),
        rng.random((70, 90), dtype=np.float32),
    ]:
        for rows, cols, origin in [(slice(0, 60), slice(0, 80), (0, 0)), (slice(7, 31), slice(12, 50), (5, 3))]:
            expected = NdimageBackend().warp_cubic(image, transform, rows, cols, origin)
            warped = gpu.to_host(gpu.warp_cubic(gpu.asarray(image), transform, rows, cols, origin))
            np.testing.assert_array_equal(warped, expected)


def test_a_warp_kernel_that_does_not_compile_falls_back_to_the_array_code(fake_gpu, monkeypatch):
    import fake_cupy

    from napari_focus_stack.engine.backend import NdimageBackend, kernels

    fake_gpu()
    monkeypatch.setattr(kernels, "WARP_KERNEL_FAILED", [])
    monkeypatch.delitem(fake_cupy.KERNELS, "napari_focus_stack_warp_cubic")
    gpu = get_backend("gpu")
    image = np.random.default_rng(7).random((40, 50), dtype=np.float32)
    transform = np.array([[1.01, 0, 0.4], [0, 0.99, -0.7], [0, 0, 1]])
    expected = NdimageBackend().warp_cubic(image, transform, slice(0, 30), slice(0, 40))
    with pytest.warns(RuntimeWarning, match="fused warp kernel not compiled"):
        warped = gpu.warp_cubic(gpu.asarray(image), transform, slice(0, 30), slice(0, 40))
    np.testing.assert_array_equal(gpu.to_host(warped), expected)
    assert len(kernels.WARP_KERNEL_FAILED) == 1
    gpu.warp_cubic(gpu.asarray(image), transform, slice(0, 30), slice(0, 40))  # not tried again, no warning
    assert len(kernels.WARP_KERNEL_FAILED) == 1
