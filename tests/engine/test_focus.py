"""The focus measure: squared Laplacian of Gaussian in a window, smoothed; its buffers."""

import numpy as np
import pytest

from napari_focus_stack.engine.backend import get_backend
from napari_focus_stack.engine.focus import (
    DEPTH_SMOOTHING,
    FocusMeasure,
    depth_sigma,
    focus_measure,
    laplacian_energy,
)

BE = get_backend("cpu")


@pytest.fixture(scope="module")
def texture():
    return np.random.default_rng(2).uniform(0, 1, (96, 96)).astype(np.float32)


def test_energy_falls_monotonically_with_defocus(texture):
    energies = [float(laplacian_energy(BE.gaussian(texture, s) if s else texture, 2, BE).mean()) for s in (0, 1, 2, 4)]
    assert all(a > b for a, b in zip(energies, energies[1:])), energies
    assert energies[0] > 5 * energies[2]


def test_a_flat_image_has_no_energy_and_the_measure_is_local(texture):
    flat = np.full((96, 96), 0.5, np.float32)
    np.testing.assert_allclose(laplacian_energy(flat, 2, BE), 0, atol=1e-12)
    half = flat.copy()
    half[:, :48] = texture[:, :48]
    energy = laplacian_energy(half, 2, BE)
    # the pre-smoothing (sigma 1, 4 px), the Laplacian (1 px) and the window (2 px) reach 7 px
    assert energy[:, :40].min() > 0 and energy[:, 56:].max() == 0


def test_energy_is_the_window_mean_of_the_squared_laplacian_of_gaussian(texture):
    import scipy.ndimage as ndi

    smoothed = BE.gaussian(texture, 1.0)
    lap = ndi.laplace(smoothed.astype(np.float64), mode="reflect")
    expected = ndi.uniform_filter(lap * lap, size=5, mode="reflect")
    inner = (slice(8, -8), slice(8, -8))
    np.testing.assert_allclose(laplacian_energy(texture, 2, BE)[inner], expected[inner], rtol=1e-4, atol=1e-7)


def test_focus_measure_smooths_the_energy_and_leaves_its_input(texture):
    before = texture.copy()
    energy = laplacian_energy(texture, 2, BE)
    measured = focus_measure(texture, 2, 3, BE)
    np.testing.assert_array_equal(texture, before)
    np.testing.assert_allclose(measured, BE.gaussian(energy, 3), rtol=1e-5, atol=1e-9)
    assert measured.std() < energy.std()


def test_focus_measure_reuses_its_buffers_and_releases_them(texture):
    measure = FocusMeasure(2, 1, BE)
    assert measure.scratch is None
    first = measure(texture)
    np.testing.assert_allclose(first, focus_measure(texture, 2, 1, BE), rtol=1e-6)
    second = measure(texture[::-1].copy())
    assert np.shares_memory(second, first)  # the same buffer: valid until the next call
    assert measure.scratch is not None and measure.scratch.shape == texture.shape
    measure.release()
    assert measure.scratch is None


def test_depth_is_selected_on_scores_smoothed_four_times_more():
    assert DEPTH_SMOOTHING == 4 and depth_sigma(1) == 4.0 and depth_sigma(3) == 12.0


def test_selection_scores_keep_a_faint_texture_beside_a_strong_edge_its_own_frame():
    # A dark fibre (column 20) sharp in frame 0, a hundred times the energy of
    # the faint background texture, which is sharpest in frame 2.
    from napari_focus_stack.engine.backend import get_backend
    from napari_focus_stack.engine.focus import depth_sigma, selection_scores

    be = get_backend("cpu")
    background = np.array([1e-5, 2e-5, 4e-5], np.float32)
    fibre = np.array([1e-2, 1e-3, 1e-4], np.float32)
    scores = np.broadcast_to(background[:, None, None], (3, 64, 64)).copy()
    scores[:, :, 19:22] = fibre[:, None, None]
    sigma = depth_sigma(1)
    plain = np.stack([be.gaussian(s, sigma) for s in scores])
    geometric = np.stack([selection_scores(s, sigma, 1e-6, be) for s in scores])
    beside = (32, 27)  # 6 px from the fibre
    assert plain[:, beside[0], beside[1]].argmax() == 0  # the fibre's energy, spread: a depth halo
    assert geometric[:, beside[0], beside[1]].argmax() == 2  # its own frame
    assert geometric[:, 32, 20].argmax() == 0 and geometric[:, 32, 60].argmax() == 2
    # a flat curve stays flat: exp(G(ln(s + floor))) of a constant is the constant plus the floor
    flat = selection_scores(np.full((16, 16), 3e-4, np.float32), sigma, 1e-4, be)
    np.testing.assert_allclose(flat, 4e-4, rtol=1e-5)
    work = np.empty((16, 16), np.float32)
    kept = np.full((16, 16), 3e-4, np.float32)
    selection_scores(kept, sigma, 0.0, be, work=work)
    assert (kept == np.float32(3e-4)).all()  # the score is left as it is
