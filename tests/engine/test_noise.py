"""Noise estimate and the noise floor of focus-weighted fusion."""

import numpy as np
import pytest

from napari_focus_stack import focus_stack
from napari_focus_stack.engine.noise import NOISE_FLOOR, NoiseProbe, noise_energy_gain, noise_sigma
from napari_focus_stack.synthetic import make_texture


@pytest.mark.parametrize("sigma", [2.0, 8.0])
def test_noise_sigma_of_grey_and_colour_frames(sigma):
    rng = np.random.default_rng(1)
    grey = np.clip(120 + rng.normal(0, sigma, (200, 300)), 0, 255).astype(np.uint8)
    assert noise_sigma(grey, 255) * 255 == pytest.approx(sigma, rel=0.1)
    colour = np.clip(120 + rng.normal(0, sigma, (200, 300, 3)), 0, 255).astype(np.uint8)
    # independent channel noise: the luminance's is sqrt(sum of squared weights) of it
    luma = np.sqrt(0.299**2 + 0.587**2 + 0.114**2)
    assert noise_sigma(colour, 255) * 255 == pytest.approx(sigma * luma, rel=0.1)


def test_noise_sigma_is_little_moved_by_texture():
    texture = make_texture("photo", (256, 256))
    clean = noise_sigma((texture * 255).astype(np.float32), 255)
    rng = np.random.default_rng(2)
    noisy = noise_sigma((texture * 255 + rng.normal(0, 4, texture.shape)).astype(np.float32), 255)
    assert clean * 255 < 2.5  # a photograph alone reads as a little noise
    assert noisy * 255 == pytest.approx(4.0, rel=0.25)


def test_noise_sigma_ignores_non_finite_pixels():
    frame = np.random.default_rng(3).normal(0.5, 0.01, (64, 64)).astype(np.float32)
    frame[10:20, 10:20] = np.nan
    assert noise_sigma(frame, 1.0) == pytest.approx(0.01, rel=0.15)


def test_probe_notes_each_frame_when_read_and_forwards_the_rest():
    class Frames(list):
        dtype, shape = np.dtype(np.uint8), (2, 64, 64)

        def reduced(self, k, side):
            return "reduced"

    rng = np.random.default_rng(4)
    frames = Frames([np.clip(100 + rng.normal(0, s, (64, 64)), 0, 255).astype(np.uint8) for s in (1, 6)])
    probe = NoiseProbe(frames)
    assert probe.reduced(0, 10) == "reduced" and len(probe) == 2 and probe.shape == (2, 64, 64)
    assert probe[1] is frames[1] and probe.sigma(1) * 255 == pytest.approx(6, rel=0.15)
    floor = probe.floor(0, 2, 1)  # read on demand
    assert floor == pytest.approx(NOISE_FLOOR * noise_energy_gain(2, 1) * probe.sigma(0) ** 2)


def test_noise_energy_gain_matches_the_engine_and_drops_with_up_sampling():
    assert noise_energy_gain(2, 1) == pytest.approx(noise_energy_gain(8, 1), rel=0.05)  # the window only averages
    assert noise_energy_gain(2, 2) < 0.9 * noise_energy_gain(2, 1)


def test_flat_noisy_stack_is_averaged_not_copied():
    """No frame has detail: the noise floor makes the weights alike, so the frames are averaged."""
    rng = np.random.default_rng(5)
    frames = np.clip(128 + rng.normal(0, 6, (8, 96, 96)), 0, 255).astype(np.uint8)
    fused = focus_stack(frames, align="none", device="cpu").fused.astype(np.float64)
    # the mean of 8 frames has 1/sqrt(8) = 0.35 of the noise; copying the "sharpest" keeps ~1
    assert fused[8:-8, 8:-8].std() < 0.5 * 6
