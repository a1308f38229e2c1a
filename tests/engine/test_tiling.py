"""Tiled processing: same result as untiled, within the memory budget."""

import tracemalloc

import numpy as np
import pytest

from napari_focus_stack import focus_stack, simulate_stack
from napari_focus_stack.engine.backend import OpenCVBackend
from napari_focus_stack.engine.pipeline import run_pipeline
from napari_focus_stack.engine.result import StackParams
from napari_focus_stack.engine.tiling import MemoryBudgetError, plan_tiles, working_bytes_per_pixel
from napari_focus_stack.io import open_stack


def drain(steps):
    events = []
    while True:
        try:
            events.append(next(steps))
        except StopIteration as done:
            return done.value, events


@pytest.fixture(scope="module")
def sim():
    return simulate_stack((300, 340), 7, texture="mixed", depth="steps", rgb=True, noise=0.01, seed=21)


@pytest.fixture(scope="module")
def large_sim():
    # the pyramid reaches ~176 px: tiling it needs a larger image
    return simulate_stack((1100, 1000), 4, texture="noise", depth="slope", noise=0.01, seed=23)


CASES = [
    ("sim", dict(method="weighted")),
    ("sim", dict(method="depthmap")),
    ("sim", dict(method="depthmap", radius=3, smoothing=1)),
    ("sim", dict(method="depthmap", scale_factor=2)),
    ("large_sim", dict(method="pyramid")),
]


@pytest.mark.parametrize(
    "stack, kwargs", CASES, ids=lambda k: "-".join(f"{a}{b}" for a, b in k.items()) if isinstance(k, dict) else k
)
def test_tiled_equals_untiled(request, stack, kwargs):
    sim = request.getfixturevalue(stack)
    whole = focus_stack(sim.frames, device="cpu", **kwargs)
    params = StackParams(device="cpu", **kwargs)
    channels = sim.frames.shape[3] if sim.frames.ndim == 4 else 1
    s = params.scale_factor
    # a budget of a third to a half of the whole image forces several tiles
    pixels = sim.frames.shape[1] * sim.frames.shape[2] * s * s
    fraction = 0.6 if kwargs["method"] == "pyramid" else 0.3
    budget = int(working_bytes_per_pixel(channels, 1, params) * pixels * fraction)
    tiled = focus_stack(sim.frames, device="cpu", max_memory=budget, **kwargs)
    assert tiled.metadata["tiles"] > 1
    assert whole.metadata["tiles"] == 1
    # within float32 rounding: <= 5e-5 of the range for depth (its scores are smoothed as logarithms,
    # whose rounding exp() turns into relative errors of 1e-6; 1.3e-4 of 7 slices measured), <= 1 grey
    # level where rounding flips
    assert np.abs(tiled.depth - whole.depth).max() <= 5e-5 * len(sim.frames)
    assert np.abs(tiled.confidence - whole.confidence).max() <= 1e-5
    assert np.abs(tiled.fused.astype(int) - whole.fused).max() <= 1
    assert np.mean(tiled.fused != whole.fused) < 1e-3


def test_plan_covers_the_image_once(sim):
    params = StackParams(radius=4, smoothing=2)
    tiles = plan_tiles((300, 340), params, 6_000_000, 3, 1)
    assert len(tiles) > 4
    covered = np.zeros((300, 340), int)
    for tile in tiles:
        covered[tile.write] += 1
        rows, cols = tile.read
        kept = np.zeros((rows.stop - rows.start, cols.stop - cols.start), bool)
        kept[tile.keep] = True
        assert kept.sum() == covered[tile.write].size
    assert (covered == 1).all()


def test_budget_too_small_is_explained():
    with pytest.raises(
        MemoryBudgetError,
        match=r"budget of 97.7 KiB is too small for these parameters; at least [\d.]+ [KM]iB is needed",
    ):
        plan_tiles((3000, 4000), StackParams(), 100_000, 3, 1)


def test_working_memory_stays_within_budget():
    # the budget bounds the stacking stage; alignment, before it, keeps one
    # registration image per frame (<= 1024 px long side), documented apart
    frames = simulate_stack((512, 512), 6, rgb=True, seed=22).frames
    budget = 8 * 2**20
    tracemalloc.start()
    result = focus_stack(frames, device="cpu", max_memory=budget, align="none")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    outputs = result.fused.nbytes + result.depth.nbytes + result.confidence.nbytes
    assert result.metadata["tiles"] > 1
    assert peak - outputs < budget


def test_out_of_memory_is_retried_with_smaller_tiles(sim, monkeypatch):
    import napari_focus_stack.engine.pipeline as pipeline

    calls = []
    original = pipeline.stack_tile

    def flaky(frames, *args):
        calls.append(frames.shape)
        if len(calls) == 1:
            raise MemoryError("simulated device out of memory")
        return (yield from original(frames, *args))

    monkeypatch.setattr(pipeline, "stack_tile", flaky)
    result = focus_stack(sim.frames, device="cpu")
    expected = focus_stack(sim.frames[:], device="cpu")
    assert result.metadata["tiles"] > 1 and calls[0][1:3] == (300, 340)
    # tiles' scores differ from the whole image's by float rounding, which can
    # tip the selector's uint16 fixed-point ratios by one step (about 1.5e-5)
    np.testing.assert_allclose(result.depth, expected.depth, atol=3e-5)


def test_several_devices_share_the_tiles(sim):
    # two CPU backends stand in for two GPUs: same tiles, same result
    frames = open_stack(sim.frames)
    params = StackParams(device="cpu")
    budget = int(working_bytes_per_pixel(3, 1, params) * 300 * 340 * 0.3)
    one, _ = drain(run_pipeline(frames, params, OpenCVBackend(), max_memory=budget))
    two, events = drain(run_pipeline(frames, params, [OpenCVBackend(), OpenCVBackend()], max_memory=budget))
    assert two.metadata["tiles"] == one.metadata["tiles"] > 1
    assert events[-1].done == events[-1].total == one.metadata["tiles"] * 7
    np.testing.assert_array_equal(two.fused, one.fused)
    np.testing.assert_array_equal(two.depth, one.depth)


def test_aligned_tiles_equal_the_whole():
    # every pixel is resampled at the same float32 source position in any
    # tile (align.source_coordinates), so tiling an aligned stack changes nothing
    sim = simulate_stack(
        (300, 340), 6, texture="mixed", depth="slope", rgb=True, noise=0.01, drift=5, breathing=0.02, gain=0.05, seed=24
    )
    whole = focus_stack(sim.frames, device="cpu")
    budget = int(working_bytes_per_pixel(3, 1, StackParams()) * 300 * 340 * 0.3)
    tiled = focus_stack(sim.frames, device="cpu", max_memory=budget)
    assert tiled.metadata["tiles"] > 1 and not np.allclose(whole.transforms, np.eye(3))
    np.testing.assert_array_equal(tiled.partial_coverage, whole.partial_coverage)
    assert np.abs(tiled.depth - whole.depth).max() <= 1e-5 * 6
    assert np.abs(tiled.confidence - whole.confidence).max() <= 1e-5
    assert np.abs(tiled.fused.astype(int) - whole.fused).max() <= 1


@pytest.mark.parametrize("scale_factor", [1, 2])
def test_refusing_in_tiles_equals_one_pass_within_the_budget(scale_factor):
    from napari_focus_stack import fuse_from_depth
    from napari_focus_stack.engine.tiling import refuse_bytes_per_pixel

    sim = simulate_stack(
        (240, 280), 5, texture="mixed", depth="dome", rgb=True, noise=0.01, drift=4, breathing=0.02, seed=25
    )
    result = focus_stack(sim.frames, method="depthmap", scale_factor=scale_factor, device="cpu")
    depth = result.depth.copy()
    depth[: depth.shape[0] // 2] = 1.5  # an edit: half the image from between slices 1 and 2
    whole = fuse_from_depth(sim.frames, depth, result=result, device="cpu")
    pixels = depth.shape[0] * depth.shape[1]
    budget = int(refuse_bytes_per_pixel(3, 1, scale_factor) * pixels * 0.3 + 3 * sim.frames[0].nbytes)
    events = []
    tracemalloc.start()
    tiled = fuse_from_depth(sim.frames, depth, result=result, device="cpu", max_memory=budget, progress=events.append)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert events[-1].total >= 4 * 5  # several tiles of 5 frames each
    np.testing.assert_array_equal(tiled, whole)
    assert peak - tiled.nbytes < budget


def test_refuse_budget_too_small_is_explained():
    from napari_focus_stack import fuse_from_depth

    sim = simulate_stack((240, 280), 4, rgb=True, seed=26)
    with pytest.raises(MemoryBudgetError, match="too small to re-fuse this stack"):
        fuse_from_depth(sim.frames, np.zeros((240, 280), np.float32), device="cpu", max_memory=50_000)
