import json

import cv2
import numpy as np
import pytest
import tifffile

from napari_focus_stack import synthetic
from napari_focus_stack.synthetic import (
    KINDS_DEPTH,
    KINDS_TEXTURE,
    depth_rmse,
    make_depth,
    make_texture,
    psnr,
    simulate_stack,
    ssim,
    textured_mask,
)


def laplacian_energy(image, radius=4):
    """Local mean of the squared Laplacian of a float image."""
    laplacian = cv2.Laplacian(np.asarray(image, dtype=np.float32), cv2.CV_32F)
    size = (2 * radius + 1, 2 * radius + 1)
    return cv2.blur(laplacian * laplacian, size, borderType=cv2.BORDER_REFLECT)


def gaussian_dot(shape, x, y, sigma):
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    return np.exp(-((cols - x) ** 2 + (rows - y) ** 2) / (2 * sigma**2)).astype(np.float32)


# --- textures -------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS_TEXTURE)
@pytest.mark.parametrize("rgb", [False, True])
def test_make_texture_kinds(kind, rgb):
    texture = make_texture(kind, (70, 90), rgb=rgb, seed=3)
    assert texture.shape == ((70, 90, 3) if rgb else (70, 90))
    assert texture.dtype == np.float32
    assert texture.min() >= 0 and texture.max() <= 1
    assert texture.std() > 0.05
    if rgb:  # real colour, not gray copies
        assert np.abs(texture[..., 0] - texture[..., 1]).mean() > 0.02
        assert np.abs(texture[..., 1] - texture[..., 2]).mean() > 0.02


@pytest.mark.parametrize("kind", KINDS_TEXTURE)
def test_make_texture_is_deterministic(kind):
    first = make_texture(kind, (40, 50), rgb=True, seed=7)
    np.testing.assert_array_equal(first, make_texture(kind, (40, 50), rgb=True, seed=7))
    if kind != "photo":
        assert not np.array_equal(first, make_texture(kind, (40, 50), rgb=True, seed=8))


def test_cells_texture_has_flat_background():
    texture = make_texture("cells", (128, 128), seed=0)
    local_std = np.sqrt(laplacian_energy(texture))
    assert (local_std < 0.005).mean() > 0.2  # background
    assert (local_std > 0.05).mean() > 0.2  # cells


def test_make_texture_rejects_unknown_kind():
    with pytest.raises(ValueError, match="texture kind"):
        make_texture("plaid", (8, 8))


# --- depth ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS_DEPTH)
def test_make_depth_range(kind):
    depth = make_depth(kind, (60, 80), 10, seed=2)
    assert depth.shape == (60, 80) and depth.dtype == np.float32
    assert depth.min() >= 0.5 - 1e-6 and depth.max() <= 8.5 + 1e-6
    assert depth.max() - depth.min() > 5
    np.testing.assert_array_equal(depth, make_depth(kind, (60, 80), 10, seed=2))


def test_slope_depth_ramps_along_x():
    depth = make_depth("slope", (5, 11), 12)
    np.testing.assert_allclose(depth[:, 0], 0.5)
    np.testing.assert_allclose(depth[:, -1], 10.5)
    assert np.all(np.diff(depth, axis=1) > 0) and np.all(np.diff(depth, axis=0) == 0)


def test_steps_depth_has_sharp_terraces_off_integers():
    depth = make_depth("steps", (128, 128), 12, seed=4)
    levels = np.unique(depth)
    assert 3 <= levels.size <= 5
    assert not np.allclose(levels, np.round(levels))
    steps = np.abs(np.diff(depth, axis=1))
    assert np.all((steps == 0) | (steps > 1))  # flat, or a sharp edge


def test_make_depth_needs_a_margin():
    with pytest.raises(ValueError, match="at least 3"):
        make_depth("dome", (8, 8), 2)


# --- simulate_stack: shapes, dtypes, determinism ---------------------------


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "float32"])
@pytest.mark.parametrize("rgb", [False, True])
def test_simulate_stack_shapes_and_dtypes(dtype, rgb):
    sim = simulate_stack((40, 56), 6, rgb=rgb, dtype=dtype)
    channels = (3,) if rgb else ()
    assert sim.frames.shape == (6, 40, 56) + channels
    assert sim.frames.dtype == np.dtype(dtype) and sim.texture.dtype == np.dtype(dtype)
    assert sim.texture.shape == (40, 56) + channels
    assert sim.depth.shape == (40, 56) and sim.depth.dtype == np.float32
    np.testing.assert_array_equal(sim.transforms, np.broadcast_to(np.eye(3), (6, 3, 3)))
    np.testing.assert_array_equal(sim.gains, np.ones((6,) + channels))
    full = {"uint8": 255, "uint16": 65535, "float32": 1.0}[dtype]
    assert sim.frames.max() <= full and sim.frames.max() > 0.5 * full
    json.dumps(sim.params)  # storable as metadata
    assert sim.params["n_slices"] == 6 and sim.params["dtype"] == dtype


def test_simulate_stack_is_deterministic():
    options = dict(noise=0.02, gain=0.1, jitter=1.0, breathing=0.05, rotation=2.0, drift=3.0)
    first = simulate_stack((48, 64), 5, rgb=True, seed=11, **options)
    again = simulate_stack((48, 64), 5, rgb=True, seed=11, **options)
    other = simulate_stack((48, 64), 5, rgb=True, seed=12, **options)
    for name in ("frames", "texture", "depth", "transforms", "gains"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.frames, other.frames)
    assert not np.allclose(first.transforms, other.transforms)


def test_simulate_stack_uses_given_arrays():
    texture = (make_texture("noise", (30, 40)) * 255).astype(np.uint8)
    depth = np.full((30, 40), 2.0, dtype=np.float32)
    sim = simulate_stack((99, 99), 4, texture=texture, depth=depth)
    assert sim.frames.shape == (4, 30, 40)
    np.testing.assert_array_equal(sim.texture, texture)
    np.testing.assert_array_equal(sim.depth, depth)
    assert sim.params["texture"] == "array" and sim.params["shape"] == (30, 40)
    with pytest.raises(ValueError, match="differ in shape"):
        simulate_stack(texture=texture, depth=depth[:20])
    with pytest.raises(ValueError, match="dtype"):
        simulate_stack((8, 8), 3, dtype="int32")


def test_rendering_in_bands_is_seamless(monkeypatch):
    options = dict(rgb=True, depth="steps", dtype="float32", blur_per_slice=1.5, seed=5)
    whole = simulate_stack((64, 48), 6, **options)
    monkeypatch.setattr(synthetic.surface, "_BAND_BYTES", 1)  # one row per band
    monkeypatch.setattr(synthetic.surface, "_REMAP_MAX_SIDE", 30)  # two blocks of columns
    banded = simulate_stack((64, 48), 6, **options)
    np.testing.assert_allclose(banded.frames, whole.frames, atol=1e-5)


# --- simulate_stack: defocus ----------------------------------------------


def test_in_focus_slice_equals_texture():
    depth = np.full((48, 64), 3.0, dtype=np.float32)
    sim = simulate_stack(n_slices=7, texture="mixed", depth=depth, rgb=True)
    np.testing.assert_array_equal(sim.frames[3], sim.texture)
    scores = [psnr(frame, sim.texture) for frame in sim.frames[4:]]
    assert scores[0] < 40 and np.all(np.diff(scores) < 0)


def test_blur_grows_with_defocus():
    depth = np.full((64, 64), 3.0, dtype=np.float32)
    sim = simulate_stack(n_slices=8, texture="noise", depth=depth, dtype="float32")
    energy = [laplacian_energy(frame).mean() for frame in sim.frames]
    assert np.argmax(energy) == 3
    assert np.all(np.diff(energy[:4]) > 0) and np.all(np.diff(energy[3:]) < 0)


def test_sharpest_slice_is_at_true_depth():
    sim = simulate_stack((64, 256), 8, texture="noise", depth="slope", dtype="float32", blur_per_slice=1.5)
    energy = np.stack([laplacian_energy(frame) for frame in sim.frames])
    for k in range(1, 7):
        column = int(np.argmin(np.abs(sim.depth[0] - k)))
        profile = energy[:, 8:-8, column - 3 : column + 4].mean(axis=(1, 2))
        assert np.argmax(profile) == k
        assert np.all(np.diff(profile[: k + 1]) > 0) and np.all(np.diff(profile[k:]) < 0)


def test_no_blur_gives_sharp_slices():
    sim = simulate_stack((32, 32), 4, blur_per_slice=0.0)
    for frame in sim.frames:
        np.testing.assert_array_equal(frame, sim.texture)


# --- simulate_stack: motion, gain, noise -----------------------------------


def test_breathing_transforms():
    sim = simulate_stack((64, 80), 12, breathing=0.1)
    scales = np.sqrt(np.linalg.det(sim.transforms[:, :2, :2]))
    np.testing.assert_array_equal(sim.transforms[6], np.eye(3))
    np.testing.assert_allclose(scales[[0, -1]], [1 - 0.6 / 11, 1 + 0.5 / 11])
    assert scales[-1] - scales[0] == pytest.approx(0.1)
    assert np.all(np.diff(scales) > 0)
    centre = np.array([(80 - 1) / 2, (64 - 1) / 2, 1])
    np.testing.assert_allclose(sim.transforms @ centre, np.broadcast_to(centre, (12, 3)))


def test_feature_lands_where_transform_predicts():
    shape, spot = (128, 160), np.array([52.3, 41.7, 1.0])
    texture = gaussian_dot(shape, spot[0], spot[1], sigma=2.0)
    sim = simulate_stack(
        n_slices=7,
        texture=texture,
        depth=np.full(shape, 3.0),
        dtype="float32",
        blur_per_slice=0.5,
        breathing=0.1,
        rotation=5.0,
        drift=6.0,
        jitter=1.0,
        seed=1,
    )
    assert np.abs(sim.transforms[:, :2, 2]).max() > 2  # it did move
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    for frame, transform in zip(sim.frames, sim.transforms):
        x, y, _ = transform @ spot
        near = (np.abs(cols - x) < 14) & (np.abs(rows - y) < 14)
        weights = frame * near
        centroid = np.array([(weights * cols).sum(), (weights * rows).sum()]) / weights.sum()
        assert np.hypot(*(centroid - [x, y])) < 0.1


def test_gains_scale_frames():
    flat = np.full((32, 32, 3), 0.5, dtype=np.float32)
    sim = simulate_stack(n_slices=9, texture=flat, depth="dome", dtype="float32", gain=0.2)
    assert sim.gains.shape == (9, 3)
    np.testing.assert_array_equal(sim.gains[4], 1)
    assert sim.gains.min() >= 0.8 * 0.95 and sim.gains.max() <= 1.2 * 1.05
    assert sim.gains.std(axis=0).min() > 0.02  # frames differ
    assert np.abs(np.diff(sim.gains, axis=1)).max() > 0.005  # and so do channels
    np.testing.assert_allclose(sim.frames.mean(axis=(1, 2)) / 0.5, sim.gains, rtol=1e-4)

    gray = simulate_stack((16, 16), 5, texture="noise", gain=0.1)
    assert gray.gains.shape == (5,)


@pytest.mark.parametrize("dtype", ["uint8", "float32"])
def test_noise_has_requested_std(dtype):
    flat = np.full((128, 128), 0.5, dtype=np.float32)
    sim = simulate_stack(n_slices=4, texture=flat, depth="slope", dtype=dtype, noise=0.02)
    full = 255 if dtype == "uint8" else 1.0
    for frame in sim.frames:
        assert frame.astype(np.float64).std() / full == pytest.approx(0.02, rel=0.05)
        assert frame.astype(np.float64).mean() / full == pytest.approx(0.5, abs=0.002)


# --- scoring ----------------------------------------------------------------


def test_textured_mask_excludes_flat_region():
    texture = np.full((64, 64), 0.4, dtype=np.float32)
    texture[:, 32:] = make_texture("noise", (64, 32))
    mask = textured_mask(texture, radius=3)
    assert mask.dtype == bool and mask.shape == (64, 64)
    assert not mask[:, :29].any()
    assert mask[3:-3, 36:-3].mean() > 0.95
    assert not mask[:3].any() and not mask[:, -3:].any()  # border left out
    assert textured_mask((texture * 255).astype(np.uint8), radius=3).sum() == mask.sum()


def test_textured_mask_of_rgb_texture():
    sim = simulate_stack((64, 64), 5, texture="cells", rgb=True)
    mask = textured_mask(sim.texture)
    assert 0.2 < mask.mean() < 0.9


def test_depth_rmse():
    truth = np.zeros((10, 10), dtype=np.float32)
    estimate = truth.copy()
    estimate[:5] = 2.0
    assert depth_rmse(estimate, truth) == pytest.approx(np.sqrt(2))
    mask = np.zeros((10, 10), dtype=bool)
    mask[5:] = True
    assert depth_rmse(estimate, truth, mask) == 0.0
    with pytest.raises(ValueError, match="no pixels"):
        depth_rmse(estimate, truth, np.zeros_like(mask))


def test_psnr_and_ssim():
    truth = (make_texture("noise", (64, 64), rgb=True) * 200).astype(np.uint8)
    assert psnr(truth + 1, truth) == pytest.approx(20 * np.log10(255), abs=1e-9)
    assert psnr(truth.astype(np.float32) / 255 + 0.1, truth.astype(np.float32) / 255) == (pytest.approx(20.0))
    assert ssim(truth, truth) == pytest.approx(1.0)
    noisy = np.clip(truth + np.random.default_rng(0).normal(0, 20, truth.shape), 0, 255)
    assert ssim(noisy.astype(np.uint8), truth) < 0.9


def test_write_sample_stack_is_readable_with_truth(tmp_path):
    from napari_focus_stack.io import open_stack
    from napari_focus_stack.synthetic import write_sample_stack

    paths = write_sample_stack(tmp_path / "sample", shape=(48, 64), n_slices=5)
    assert [p.name for p in paths] == ["z01.jpg", "z02.jpg", "z03.jpg", "z04.jpg", "z05.jpg"]
    frames = open_stack(tmp_path / "sample")  # the .truth/ sub-folder is not read as frames
    assert frames.shape == (5, 48, 64, 3)
    assert (tmp_path / "sample" / ".truth" / "all_in_focus.png").is_file()
    assert tifffile.imread(tmp_path / "sample" / ".truth" / "depth.tif").dtype == np.float32


def test_a_batch_over_sample_stacks_finds_only_the_stacks(tmp_path):
    from napari_focus_stack.batch import group_by_subfolder
    from napari_focus_stack.synthetic import write_sample_stack

    for name in ("s1", "s2"):
        write_sample_stack(tmp_path / name, shape=(32, 40), n_slices=4)
    stacks = group_by_subfolder(tmp_path)
    assert sorted(stack.name for stack in stacks) == ["s1", "s2"]
