import numpy as np
import pytest

from napari_focus_stack.engine.backend import get_backend
from napari_focus_stack.engine.depth import SliceSelector, fixed_to_ratios, peak_confidence, subslice_offset

BE = get_backend("cpu")


def gaussian_curve(peak, n=9, width=1.3):
    k = np.arange(n, dtype=np.float32)
    return np.exp(-0.5 * ((k - peak) / width) ** 2).astype(np.float32)


@pytest.mark.parametrize("peak", [2.0, 3.3, 4.49, 5.5, 6.8])
def test_gaussian_curves_are_located_exactly(peak):
    scores = gaussian_curve(peak)
    selector = SliceSelector(BE)
    for s in scores:
        selector.update(np.full((2, 3), s, dtype=np.float32))
    depth, confidence = selector.finish()
    assert depth.shape == (2, 3) and depth.dtype == np.float32
    np.testing.assert_allclose(depth, peak, atol=1e-4)
    assert confidence.min() > 0.5


def test_selector_matches_full_stack_argmax():
    rng = np.random.default_rng(3)
    stack = rng.random((7, 20, 30), dtype=np.float32)
    selector = SliceSelector(BE)
    for s in stack:
        selector.update(s)
    best = stack.argmax(0)
    np.testing.assert_array_equal(selector.index, best)
    np.testing.assert_array_equal(selector.best, stack.max(0))
    k = np.clip(best, 1, 5)
    rows, cols = np.indices(best.shape)
    inside = (best > 0) & (best < 6)
    # the neighbours are kept as uint16 fixed-point ratios to the best score (the
    # one below rounded twice: the previous frame's ratio, then its product)
    below, above = fixed_to_ratios(selector.below, np), fixed_to_ratios(selector.above, np)
    peak = stack.max(0)
    np.testing.assert_allclose(below[inside], (stack[k - 1, rows, cols] / peak)[inside], rtol=0, atol=1.6e-5)
    np.testing.assert_allclose(above[inside], (stack[k + 1, rows, cols] / peak)[inside], rtol=0, atol=7.7e-6)
    assert (below[best == 0] == -1).all() and (above[best == 6] == -1).all()
    # the depth from those ratios, against the three-point fit on the full stack's scores
    exact = best + subslice_offset(
        np.where(best > 0, stack[k - 1, rows, cols], -1), peak, np.where(best < 6, stack[k + 1, rows, cols], -1), BE
    )
    depth, _ = selector.finish()
    np.testing.assert_allclose(depth, exact, rtol=0, atol=2e-4)


def test_offset_is_zero_at_stack_ends_and_bounded():
    below = np.array([-1.0, 0.2, 1.0], np.float32)
    peak = np.array([1.0, 1.0, 1.0], np.float32)
    above = np.array([0.5, -1.0, 1.0], np.float32)
    np.testing.assert_array_equal(subslice_offset(below, peak, above, BE), [0, 0, 0])
    rng = np.random.default_rng(0)
    p = rng.random(1000, dtype=np.float32) + 1
    off = subslice_offset(rng.random(1000, dtype=np.float32) * p, p, rng.random(1000, dtype=np.float32) * p, BE)
    assert off.min() >= -0.5 and off.max() <= 0.5


def test_confidence_flat_is_zero_peaked_is_high():
    flat = np.full((1, 1), 0.4, np.float32)
    assert peak_confidence(flat, flat, BE)[0, 0] == 0
    best = np.ones((1, 1), np.float32)
    assert peak_confidence(best, best * 0.2, BE)[0, 0] == pytest.approx(0.8)
    # dim data: the same curve shape gives the same confidence
    assert peak_confidence(best * 1e-4, best * 0.2e-4, BE)[0, 0] == pytest.approx(0.8, abs=1e-4)
    # no detail at all (zero energy everywhere): no confidence, no division by zero
    assert peak_confidence(best * 0, best * 0, BE)[0, 0] == 0


def test_one_frame_is_refused():
    selector = SliceSelector(BE)
    selector.update(np.ones((2, 2), np.float32))
    with pytest.raises(ValueError, match="at least 2 frames"):
        selector.finish()


def test_regularise_keeps_confident_depth_and_fills_guesses():
    from napari_focus_stack.engine.depth import regularise_depth

    depth = np.full((64, 64), 3.0, np.float32)
    confidence = np.full((64, 64), 0.9, np.float32)
    depth[30, 30], confidence[30, 30] = 9.0, 0.05  # an isolated guess in a textureless spot
    depth[:, 48:], confidence[:, 48:] = 6.0, 1.0  # a confident step
    out = regularise_depth(depth, confidence, BE, 8.0)
    assert abs(out[30, 30] - 3.0) < 0.5  # the guess takes its confident surroundings' depth
    np.testing.assert_allclose(out[:, 48:], 6.0, atol=1e-5)  # full confidence: unchanged
    assert abs(out[10, 10] - 3.0) < 1e-4


def test_noise_floor_lowers_the_confidence_of_noise_peaks():
    best, mean = np.full((4, 4), 1.3e-4, np.float32), np.full((4, 4), 1e-4, np.float32)
    plain = peak_confidence(best, mean, BE)[0, 0]
    with_floor = peak_confidence(best, mean, BE, floor=3e-4)[0, 0]
    assert plain == pytest.approx(0.3 / 1.3, rel=1e-3) and with_floor < plain / 3


def tilted_surface_with_blank(seed=0, side=256, hole=(64, 192)):
    """A confident tilted surface (depth 2..10 slices) around a blank square of weak, blocky guesses."""
    from napari_focus_stack.engine.depth import REGULARISE_SIGMA, regularise_depth

    rng = np.random.default_rng(seed)
    truth = np.broadcast_to(2 + 8 * np.arange(side, dtype=np.float32) / (side - 1), (side, side)).copy()
    depth = (truth + rng.normal(0, 0.1, truth.shape)).astype(np.float32)
    confidence = np.full(truth.shape, 0.8, np.float32)
    blank = (slice(*hole), slice(*hole))
    n = (hole[1] - hole[0]) // 4
    depth[blank] = np.kron(rng.uniform(0, 14, (n, n)), np.ones((4, 4)))  # guesses over 4 px blobs, any slice
    confidence[blank] = np.kron(rng.uniform(0, 0.1, (n, n)), np.ones((4, 4)))  # noise-level peaks
    return regularise_depth(depth, confidence, BE, REGULARISE_SIGMA), confidence, truth, blank


def test_fill_gives_a_blank_area_the_surrounding_surface_depth():
    from napari_focus_stack.engine.depth import fill_unsupported_depth
    from napari_focus_stack.synthetic import depth_speckle

    regularised, confidence, truth, blank = tilted_surface_with_blank()
    filled = fill_unsupported_depth(regularised.copy(), confidence)
    before, after = np.abs(regularised - truth)[blank], np.abs(filled - truth)[blank]
    # measured: max 3.35 -> 2.43 slices, RMS 1.00 -> 0.85 over the blank (the fill is smooth, not a plane fit)
    assert after.max() < 2.7 and np.sqrt(np.mean(after**2)) < 0.9
    assert np.sqrt(np.mean(after**2)) < np.sqrt(np.mean(before**2)) - 0.1
    assert depth_speckle(filled) < 0.01
    # pixels with support (beyond the Gaussian's reach from the blank) are exactly as given
    changed = np.argwhere(filled != regularised)
    assert changed.min() >= 64 + 8 and changed.max() < 192 - 8
    far = np.ones(truth.shape, bool)
    far[40:216, 40:216] = False
    np.testing.assert_array_equal(filled[far], regularised[far])


def test_fill_leaves_a_map_with_support_everywhere_untouched():
    from napari_focus_stack.engine.depth import fill_unsupported_depth

    rng = np.random.default_rng(1)
    depth = rng.uniform(0, 9, (200, 300)).astype(np.float32)
    confidence = rng.uniform(0.3, 1.0, (200, 300)).astype(np.float32)
    np.testing.assert_array_equal(fill_unsupported_depth(depth.copy(), confidence), depth)
    # no confidence anywhere: nothing to fill from, nothing invented
    np.testing.assert_array_equal(fill_unsupported_depth(depth.copy(), np.zeros_like(depth)), depth)


def test_fill_in_the_pipeline_is_the_same_tiled_and_untiled(monkeypatch):
    import cv2

    from napari_focus_stack import focus_stack, simulate_stack
    from napari_focus_stack.engine import pipeline
    from napari_focus_stack.engine.depth import unfocused_mask
    from napari_focus_stack.engine.result import StackParams
    from napari_focus_stack.engine.tiling import working_bytes_per_pixel

    side = 256
    truth = np.broadcast_to(2 + 8 * np.arange(side, dtype=np.float32) / (side - 1), (side, side)).copy()
    texture = cv2.GaussianBlur(np.random.default_rng(3).random((side, side), dtype=np.float32), (0, 0), 1.0)
    texture = (texture - texture.min()) / np.ptp(texture)
    blank = (slice(72, 184), slice(72, 184))
    texture[blank] = 0.5  # no detail: only noise
    sim = simulate_stack(texture=texture, depth=truth, n_slices=12, noise=0.01, seed=3)
    whole = focus_stack(sim.frames, device="cpu", align="none")
    budget = int(working_bytes_per_pixel(1, 1, StackParams(device="cpu")) * side * side * 0.3)
    tiled = focus_stack(sim.frames, device="cpu", align="none", max_memory=budget)
    assert tiled.metadata["tiles"] > 1 and whole.metadata["tiles"] == 1
    # within float32 rounding (docs/ALGORITHMS.md): OpenCV's filters round a pixel by where it falls in
    # a row's vector lanes, which the tile layout decides
    np.testing.assert_allclose(tiled.depth, whole.depth, rtol=0, atol=1e-5)
    np.testing.assert_allclose(tiled.confidence, whole.confidence, rtol=0, atol=1e-6)
    monkeypatch.setattr(pipeline, "fill_unsupported_depth", lambda depth, confidence: depth)
    unfilled = focus_stack(sim.frames, device="cpu", align="none")
    # it only touched depth: the same fused image, confidence and unfocused pixels
    np.testing.assert_array_equal(unfilled.fused, whole.fused)
    np.testing.assert_array_equal(unfocused_mask(unfilled.confidence), unfocused_mask(whole.confidence))
    # measured: the blank's worst depth error 2.62 -> 1.44 slices
    assert (unfilled.depth != whole.depth).any()
    assert np.abs(whole.depth - truth)[blank].max() < 1.7 < np.abs(unfilled.depth - truth)[blank].max()


def test_focus_curve_width_is_streamed_exactly_and_caps_the_regularisation_weights():
    from napari_focus_stack.engine.depth import WIDTH_REFERENCE

    rng = np.random.default_rng(5)
    stack = rng.random((15, 16, 24), dtype=np.float32) ** 3
    stack[:, 0, 0] = gaussian_curve(7.0, n=15, width=0.4)  # one sharp slice
    stack[:, 0, 1] = 1.0  # the same score on every slice
    stack[:, 0, 2] = gaussian_curve(7.0, n=15, width=3.0)  # a clear peak over many slices
    selector = SliceSelector(BE)
    for score in stack:
        selector.update(score.copy())
    ratio = stack.astype(np.float64) / stack.max(axis=0)
    np.testing.assert_allclose(selector.width, (ratio**4).sum(axis=0), rtol=1e-5)
    assert selector.width[0, 0] == pytest.approx(1.0, abs=1e-3) and selector.width[0, 1] == pytest.approx(15.0)
    _, confidence = selector.finish()
    weights = selector.regularisation_weights(confidence)
    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights, np.minimum(confidence, (WIDTH_REFERENCE / selector.width) ** 2))
    assert weights[0, 0] == confidence[0, 0]  # a narrow curve keeps its confidence
    assert weights[0, 1] == confidence[0, 1] == 0  # flat: no confidence to cap
    assert selector.width[0, 2] > 3.5 and confidence[0, 2] > 0.45
    assert weights[0, 2] == pytest.approx((2 / selector.width[0, 2]) ** 2) and weights[0, 2] < 0.8 * confidence[0, 2]


def test_selector_state_is_22_bytes_a_pixel_while_frames_stream():
    """Best, sum and width in float32, the index in int16, two masks, and three uint16 ratios."""
    rng = np.random.default_rng(8)
    selector = SliceSelector(BE)
    for score in rng.random((4, 30, 40), dtype=np.float32):
        selector.update(score)
    state = [selector.best, selector.total, selector.width, selector.index, selector.took_best, selector.took_above]
    state += [selector.below, selector.above, selector.previous]
    assert [a.dtype.name for a in state[-3:]] == ["uint16"] * 3
    assert sum(a.nbytes for a in state) == 22 * 30 * 40


@pytest.mark.parametrize("dtype", [np.float32, np.uint16, np.int16, np.uint8])
@pytest.mark.parametrize("channels", [None, 3])
def test_masked_copy_matches_numpy_on_every_backend_path(dtype, channels):
    from napari_focus_stack.engine.backend.base import NdimageBackend

    rng = np.random.default_rng(9)
    shape = (37, 53) if channels is None else (37, 53, channels)
    dst = (rng.random(shape) * 100).astype(dtype)
    src = (rng.random(shape) * 100).astype(dtype)
    mask = rng.random((37, 53)) > 0.5  # changes from pixel to pixel
    expected = dst.copy()
    np.copyto(expected, src, where=mask if channels is None else mask[..., None])
    for backend in (BE, NdimageBackend()):
        out = dst.copy()
        backend.copy_where(out, src, mask)
        np.testing.assert_array_equal(out, expected)
        rows = out[5:20]  # a band of rows, as the selector passes them
        backend.copy_where(rows, src[5:20] + 1, mask[5:20])
        np.testing.assert_array_equal(out[5:20][mask[5:20]], (src[5:20] + 1)[mask[5:20]])
