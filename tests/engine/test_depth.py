import numpy as np
import pytest

from napari_focus_stack.engine.backend import get_backend
from napari_focus_stack.engine.depth import SliceSelector, peak_confidence, subslice_offset

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
    np.testing.assert_array_equal(selector.below[inside], stack[k - 1, rows, cols][inside])
    np.testing.assert_array_equal(selector.above[inside], stack[k + 1, rows, cols][inside])
    assert (selector.below[best == 0] == -1).all() and (selector.above[best == 6] == -1).all()


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
