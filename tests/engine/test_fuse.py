import numpy as np
import pytest

from napari_focus_stack.engine.backend import get_backend
from napari_focus_stack.engine.fuse import (
    PyramidFusion,
    fuse_frames_at_depth,
    neighbour_weight,
    pyramid_levels,
    slice_pair_weights,
    to_dtype,
)
from napari_focus_stack.engine.pipeline import drain

BE = get_backend("cpu")


def test_handover_weights():
    t = np.linspace(0, 0.5, 11, dtype=np.float32)
    w = neighbour_weight(t, BE)
    assert w[0] == 0 and w[t <= 0.25].max() == 0 and w[-1] == pytest.approx(0.5)
    assert np.all(np.diff(w) >= 0)
    depth = np.array([0, 1.2, 1.5, 1.65, 2.0, 3.0, 7.5], np.float32)
    lower, w_lo, w_up = slice_pair_weights(depth, 4, BE)
    np.testing.assert_array_equal(lower, [0, 1, 1, 1, 2, 3, 3])
    np.testing.assert_allclose(w_lo + w_up, 1, atol=1e-7)
    np.testing.assert_allclose(w_up[[0, 1, 4, 5, 6]], 0)
    assert w_up[2] == pytest.approx(0.5) and 0.5 < w_up[3] < 1


def test_fuse_at_integer_depth_copies_that_frame():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8)
    depth = np.zeros((16, 16), np.float32)
    depth[:, 8:] = 3
    fused = to_dtype(drain(fuse_frames_at_depth(iter(frames), 5, depth, BE)), np.uint8, BE)
    np.testing.assert_array_equal(fused[:, :8], frames[0, :, :8])
    np.testing.assert_array_equal(fused[:, 8:], frames[3, :, 8:])


def test_pyramid_fusion_of_identical_frames_is_identity():
    rng = np.random.default_rng(1)
    frame = rng.random((40, 60, 3), dtype=np.float32)
    fusion = PyramidFusion(BE, pyramid_levels(frame.shape))
    for _ in range(3):
        fusion.update_frame(frame)
    np.testing.assert_allclose(fusion.collapse(), frame, atol=1e-5)


def test_to_dtype_rounds_and_clips():
    image = np.array([-3.0, 0.4, 0.6, 254.5, 300.0], np.float32)
    np.testing.assert_array_equal(to_dtype(image, np.uint8, BE), [0, 0, 1, 254, 255])
    np.testing.assert_array_equal(to_dtype(image * 300, np.uint16, BE), [0, 120, 180, 65535, 65535])
    assert to_dtype(image, np.float32, BE).dtype == np.float32


@pytest.mark.parametrize("method", ["weighted", "depthmap", "pyramid"])
@pytest.mark.parametrize("dtype, value", [(np.uint8, 200), (np.float32, 0.25)])
def test_a_constant_stack_fuses_to_its_value(method, dtype, value):
    """No frame has any detail (issue 12, defect 1: weighted gave 0, or NaN for floats)."""
    from napari_focus_stack import focus_stack

    result = focus_stack(np.full((5, 64, 64), value, dtype), method=method, device="cpu")
    assert result.fused.dtype == dtype
    np.testing.assert_array_equal(result.fused, np.full((64, 64), value, dtype))


def test_weighted_fusion_reaches_no_farther_than_it_says():
    """Tiles rely on :func:`weighted_reach`: a change beyond it leaves a fused pixel as it is."""
    from napari_focus_stack.engine.fuse import WeightedFusion, weighted_reach

    be = get_backend("cpu")
    rng = np.random.default_rng(0)
    frames = [rng.random((96, 96)).astype(np.float32) for _ in range(3)]
    scores = [rng.random((96, 96)).astype(np.float32) for _ in range(3)]

    def fused(frames, scores):
        fusion = WeightedFusion(be)
        for frame, score in zip(frames, scores):
            fusion.update_frame(frame, score.copy(), 0.0, None, 1.0)  # update turns the scores into weights in place
        return fusion.finish(np.float32)

    before = fused(frames, scores)
    for changed in (frames, scores):
        changed[1][48, 48] += 0.5
        moved = np.argwhere(fused(frames, scores) != before)
        changed[1][48, 48] -= 0.5
        assert 0 < np.abs(moved - 48).max() <= weighted_reach()


def reference_weighted_blend(frames, scores, floor, reference, be):
    """The weighted fusion written plainly: whole pyramids of every frame, each level normalised by its weights."""
    from napari_focus_stack.engine.fuse import TINY_SCORE, WEIGHTED_LEVELS

    levels = WEIGHTED_LEVELS
    weights = [((s + floor) / reference + TINY_SCORE) ** 4 for s in scores]
    sums = totals = None
    for frame, weight in zip(frames, weights):
        bands, current = [], frame.astype(np.float32)
        for _ in range(levels):
            smaller = be.pyramid_down(current)
            bands.append(current - be.pyramid_up(smaller, current.shape))
            current = smaller
        bands.append(current)
        pyramid = [weight]
        for _ in range(levels):
            pyramid.append(be.pyramid_down(pyramid[-1]))
        terms = [b * w for b, w in zip(bands, pyramid)]
        sums = terms if sums is None else [a + t for a, t in zip(sums, terms)]
        totals = pyramid if totals is None else [a + w for a, w in zip(totals, pyramid)]
    image = sums[-1] / totals[-1]
    for total, weight in zip(reversed(sums[:-1]), reversed(totals[:-1])):
        image = total / weight + be.pyramid_up(image, total.shape)
    return image


@pytest.mark.parametrize("borrow", [False, True])
def test_weighted_fusion_streams_what_the_plain_blend_computes(borrow):
    """Reused buffers, borrowed scratch and coarser levels in the finest one's memory change no pixel's value."""
    from napari_focus_stack.engine.fuse import WeightedFusion

    be = get_backend("cpu")
    rng = np.random.default_rng(3)
    frames = [rng.random((45, 58)).astype(np.float32) for _ in range(4)]
    scores = [rng.random((45, 58)).astype(np.float32) * 0.01 for _ in range(4)]
    fusion = WeightedFusion(be)
    for frame, score in zip(frames, scores):
        borrowed = (np.full_like(frame, np.nan), np.full_like(frame, np.nan)) if borrow else None
        fusion.update_frame(frame, score.copy(), 1e-4, None, 0.02, borrowed=borrowed)
    expected = reference_weighted_blend(frames, scores, 1e-4, 0.02, be)
    np.testing.assert_allclose(fusion.finish(np.float32), expected, rtol=0, atol=1e-5)


# --- every method through the Fusion interface ---------------------------------------------


def fuse_through_the_interface(method, frames):
    """What the pipeline does with a fusion, written out: per frame a FrameStep, then its finish."""
    from napari_focus_stack.engine.depth import SliceSelector
    from napari_focus_stack.engine.focus import FocusMeasure
    from napari_focus_stack.engine.fuse import FUSIONS, FrameStep
    from napari_focus_stack.engine.pipeline import finish_in_bands

    selector, measure = SliceSelector(BE), FocusMeasure(2, 1, BE)
    fusion = FUSIONS[method].for_image(BE, frames[0].shape)
    for frame in frames:
        score = measure(frame)
        took_best, took_above = selector.update(BE.gaussian(score, 4.0))
        fusion.update(FrameStep(frame, score, took_best, took_above))
    fusion.release_frames()
    depth, _, _, fused = finish_in_bands(selector, fusion.band_finisher(selector), np.float32, BE)
    return depth, (fusion.finish(np.float32) if fused is None else fused)


@pytest.mark.parametrize("method", ["weighted", "depthmap", "pyramid"])
def test_each_fusion_takes_each_half_from_the_frame_sharp_there(method):
    rng = np.random.default_rng(5)
    texture = rng.uniform(0.2, 0.8, (64, 96)).astype(np.float32)
    left = np.zeros((64, 96), bool)
    left[:, :48] = True
    frames = [np.where(left, texture, 0.5).astype(np.float32), np.where(left, 0.5, texture).astype(np.float32)]
    depth, fused = fuse_through_the_interface(method, frames)
    assert fused.shape == (64, 96) and fused.dtype == np.float32
    inner = (slice(8, -8), slice(8, 40)), (slice(8, -8), slice(56, -8))  # away from the seam and the borders
    for k, region in enumerate(inner):
        assert np.abs(fused[region] - texture[region]).max() < 0.02, (method, k)
        np.testing.assert_allclose(depth[region], k, atol=0.05)


def test_the_registry_holds_every_method_and_declares_what_tiling_needs():
    from napari_focus_stack.engine.fuse import FUSIONS, Fusion
    from napari_focus_stack.engine.result import METHODS

    assert set(FUSIONS) == set(METHODS)
    for method, fusion in FUSIONS.items():
        assert issubclass(fusion, Fusion) and fusion.method == method
        assert fusion.bytes_per_pixel(3, 1) > 0 and fusion.tile_multiple((512, 512)) >= 1
        assert fusion.reach((512, 512), 30, 10) >= 30
    assert not FUSIONS["depthmap"].regularises_depth and FUSIONS["weighted"].regularises_depth
    assert FUSIONS["pyramid"].tile_multiple((512, 512)) == 2 ** pyramid_levels((512, 512))


def test_weighted_fusion_keeps_no_frame_sized_band_of_its_own_where_it_can_borrow():
    """On OpenCV (no pyramid scratch) the two lent arrays serve as the finest band and its expansion."""
    from napari_focus_stack.engine.backend.base import NdimageBackend
    from napari_focus_stack.engine.fuse.weighted import WeightedFusion

    rng = np.random.default_rng(4)
    frames = (rng.random((3, 40, 52, 3)) * 255).astype(np.uint8)
    scores = rng.random((3, 40, 52), dtype=np.float32)
    results = []
    for be in (BE, NdimageBackend()):
        fusion = WeightedFusion(be)
        lent = [np.empty((40, 52), np.float32) for _ in range(2)]
        for frame, score in zip(frames, scores):
            fusion.update_frame(frame, score.copy(), floor=1e-3, reference=0.5, borrowed=lent)
        finest = fusion._scratch[0]
        if be.pyramid_needs_scratch:
            assert finest["scratch"] is lent[0] and finest["up"] is lent[1] and finest["band"].shape == (40, 52)
        else:
            assert finest["band"] is lent[0] and finest["up"] is lent[1] and finest["scratch"] is None
        results.append(fusion.finish(np.uint8))
    assert not BE.pyramid_needs_scratch and NdimageBackend.pyramid_needs_scratch
    assert np.abs(results[0].astype(int) - results[1]).max() <= 1
