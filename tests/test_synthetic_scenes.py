"""The layered (occlusion) and fluorescence simulators, and the scene families."""

import numpy as np
import pytest

from napari_focus_stack.synthetic import (
    SCENE_FAMILIES,
    Layer,
    describe_family,
    render_fluorescence,
    render_layers,
    simulate_scene,
)
from napari_focus_stack.synthetic.layered import defocus, pillbox_kernel, render_slice


def disc_scene(shape=(64, 64), front_value=1.0, back_value=0.2, front_depth=1.0, back_depth=6.0):
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    disc = (((rows - 32) ** 2 + (cols - 32) ** 2) <= 10**2).astype(np.float32)
    back = Layer(np.full(shape, back_value, np.float32), np.ones(shape, np.float32), back_depth)
    front = Layer(np.full(shape, front_value, np.float32), disc, front_depth)
    return [back, front], disc


def test_pillbox_kernel_is_a_normalised_disk():
    kernel = pillbox_kernel(3.0)
    assert kernel.shape == (9, 9)
    assert kernel.sum() == pytest.approx(1.0, abs=1e-6)
    assert kernel[4, 4] == pytest.approx(kernel[4, 5])  # flat inside
    assert kernel[0, 0] == 0  # nothing beyond the radius
    assert pillbox_kernel(0.0).sum() == pytest.approx(1.0)  # a point, not NaN


def test_pillbox_and_gaussian_spread_equally():
    point = np.zeros((41, 41), np.float32)
    point[20, 20] = 1
    rows = np.arange(41) - 20
    for psf in ("gaussian", "pillbox"):
        blurred = defocus(point, 3.0, psf)
        variance = float((blurred.sum(axis=1) * rows**2).sum())
        assert blurred.sum() == pytest.approx(1.0, abs=1e-4)
        assert variance == pytest.approx(9.0, rel=0.08), psf


def test_defocused_foreground_spills_over_the_background():
    layers, disc = disc_scene()
    focused_on_back = render_slice(layers, 6.0, 1.0, "pillbox")
    # just outside the disc the background (0.2) is lit by the blurred bright disc
    assert focused_on_back[32, 45] > 0.35
    # the background far from the disc is untouched, and sharp
    assert focused_on_back[2, 2] == pytest.approx(0.2, abs=1e-6)
    # focused on the disc, its edge is sharp: the spill is gone
    focused_on_front = render_slice(layers, 1.0, 1.0, "pillbox")
    assert focused_on_front[32, 45] == pytest.approx(0.2, abs=1e-6)


def test_render_layers_truth():
    layers, disc = disc_scene()
    frames, texture, depth, boundary = render_layers(layers, 8, dtype="uint8")
    assert frames.shape == (8, 64, 64) and frames.dtype == np.uint8
    assert texture[32, 32] == 255 and texture[2, 2] == round(0.2 * 255)
    assert depth[32, 32] == 1.0 and depth[2, 2] == 6.0
    # the boundary is the disc's edge, 3 px either side
    assert boundary[32, 42] and boundary[32, 44] and not boundary[32, 47] and not boundary[32, 32]
    # far-to-near order follows depth, not list order
    frames_reversed = render_layers(layers[::-1], 8)[0]
    np.testing.assert_array_equal(frames, frames_reversed)


def test_render_layers_shot_noise():
    layers, _ = disc_scene(back_value=0.5)
    frames = render_layers(layers, 4, photons=50.0, dtype="float32", seed=3)[0]
    patch = frames[0, :16, :16]  # background, in focus at no slice but flat: only noise varies
    assert patch.mean() == pytest.approx(0.5, abs=0.03)
    assert patch.std() == pytest.approx(np.sqrt(0.5 * 50) / 50, rel=0.2)


def test_fluorescence_light_is_conserved_and_peaks_in_focus():
    image = np.zeros((64, 64), np.float32)
    image[30:34, 30:34] = 1.0
    frames, truth, depth, mask = render_fluorescence(
        [(image, 4.0)], (64, 64), 10, photons=200, offset=100, read_noise=0.0, haze=0.2, seed=1
    )
    assert frames.dtype == np.uint16
    signal = frames.astype(np.float64) - 100
    totals = signal.sum(axis=(1, 2))
    # every slice collects the emitter's light (defocus spreads, never removes it)
    assert totals.std() / totals.mean() < 0.02
    assert int(np.argmax(signal[:, 32, 32])) == 4
    assert depth[32, 32] == 4.0 and mask[32, 32] and not mask[5, 5]
    assert truth.dtype == np.uint16 and truth[32, 32] > frames[:, 32, 32].max() * 0.8


@pytest.mark.parametrize("family", SCENE_FAMILIES)
def test_every_family_renders_with_truth(family):
    sim = simulate_scene(family, shape=(48, 64), n_slices=6, seed=2)
    assert sim.frames.shape[:3] == (6, 48, 64)
    assert sim.frames.dtype in (np.uint8, np.uint16)
    assert sim.texture.shape == sim.frames.shape[1:] and sim.texture.dtype == sim.frames.dtype
    assert sim.depth.shape == (48, 64) and sim.depth.dtype == np.float32
    assert sim.depth.min() >= 0.5 and sim.depth.max() <= 4.5
    assert sim.params["family"] == family and describe_family(family)
    if sim.boundary is not None:
        assert sim.boundary.shape == (48, 64) and sim.boundary.dtype == bool
    if sim.mask is not None:
        assert sim.mask.any() and sim.data_range > 0
    again = simulate_scene(family, shape=(48, 64), n_slices=6, seed=2)
    np.testing.assert_array_equal(sim.frames, again.frames)


def test_there_are_enough_families_of_each_model():
    assert len(SCENE_FAMILIES) >= 12
    models = {name.split("-")[0] for name in SCENE_FAMILIES}
    assert {"surface", "occlusion", "fluorescence"} <= models


def test_unknown_family_is_refused():
    with pytest.raises(ValueError, match="family must be one of"):
        simulate_scene("nope")
