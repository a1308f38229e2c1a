"""Tests for engine/align/ (registration, failure handling, exposure) and engine/warp.py (warping, coverage).

Accuracy is scored as the corner residual: the four image corners mapped
through the estimated and the true transform of each frame, RMS distance in
full-resolution pixels.
"""

import numpy as np
import pytest

from napari_focus_stack.engine.align import (
    ALIGN_MODES,
    estimate_gains,
    estimate_pair,
    estimate_transforms,
    registration_image,
)
from napari_focus_stack.engine.align.check import check_level, distant_agreement, separations
from napari_focus_stack.engine.align.images import _pyramid
from napari_focus_stack.engine.warp import coverage_mask, rescale_transforms, warp_frame
from napari_focus_stack.io import open_stack
from napari_focus_stack.synthetic import make_texture, simulate_scene, simulate_stack

SHAPE = (384, 512)
DRIFT = 0.05 * SHAPE[1]  # 5 % of the width


def corner_residuals(estimated, true, shape):
    """Per frame, RMS distance (px) between the corners mapped by ``estimated`` and ``true``."""
    height, width = shape[:2]
    corners = np.array([[0, width - 1, 0, width - 1], [0, 0, height - 1, height - 1], [1, 1, 1, 1]], float)
    difference = (estimated @ corners - true @ corners)[:, :2]
    return np.sqrt((difference**2).sum(axis=1).mean(axis=1))


def align(frames, mode="similarity", **kwargs):
    return estimate_transforms([registration_image(frame) for frame in frames], mode, **kwargs)


def grid_period(seed):
    """The period make_texture("grid") draws for ``seed``."""
    return int(np.random.default_rng(seed).integers(12, 21))


# --- registration images ---------------------------------------------------------------


def test_registration_image_is_reduced_normalised_and_exposure_free():
    frame = (make_texture("mixed", (600, 2100), rgb=True) * 200).astype(np.uint8)
    image = registration_image(frame)
    assert image.shape == (150, 525) and image.dtype == np.float32  # shrunk by 4
    assert abs(float(image.mean())) < 1e-3 and np.sqrt(np.mean(image**2)) == pytest.approx(1, rel=1e-4)
    brighter = registration_image(np.clip(frame * 1.2 + 10, 0, 255).astype(np.uint8))
    assert np.abs(brighter - image).mean() < 0.05
    assert not registration_image(np.full((64, 64), 7, np.uint16)).any()


# --- accuracy on simulated stacks ------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "scene"),
    [
        ("similarity", dict(texture="mixed", depth="dome", breathing=0.15, rotation=1.0, rgb=True, seed=1)),
        ("similarity", dict(texture="cells", depth="slope", breathing=-0.15, rotation=-1.0, seed=2)),
        ("affine", dict(texture="noise", depth="steps", breathing=0.15, rotation=1.0, noise=0.01, seed=3)),
        ("affine", dict(texture="photo", depth="waves", breathing=-0.15, rotation=-1.0, rgb=True, seed=4)),
    ],
)
def test_corner_residual_below_a_fifth_of_a_pixel(mode, scene):
    sim = simulate_stack(SHAPE, 10, drift=DRIFT, jitter=1.0, gain=0.1, **scene)
    result = align(sim.frames, mode)
    residuals = corner_residuals(result.transforms, sim.transforms, SHAPE)
    assert residuals.max() <= 0.2, residuals.round(3)
    assert result.failed == [] and result.messages == []
    assert result.reference == 5 and np.array_equal(result.transforms[5], np.eye(3))


def test_similarity_transforms_have_no_shear():
    sim = simulate_stack(SHAPE, 6, texture="noise", breathing=0.1, rotation=1.0, seed=5)
    linear = align(sim.frames).transforms[:, :2, :2]
    np.testing.assert_allclose(linear[:, 0, 0], linear[:, 1, 1], atol=1e-12)
    np.testing.assert_allclose(linear[:, 0, 1], -linear[:, 1, 0], atol=1e-12)


def test_translation_mode_estimates_shifts_only():
    sim = simulate_stack(SHAPE, 8, texture="cells", drift=DRIFT, jitter=2.0, seed=6)
    result = align(sim.frames, "translation")
    np.testing.assert_array_equal(result.transforms[:, :2, :2], np.tile(np.eye(2), (8, 1, 1)))
    assert corner_residuals(result.transforms, sim.transforms, SHAPE).max() <= 0.1


def test_selectable_reference_and_full_resolution_coordinates():
    sim = simulate_stack(SHAPE, 6, texture="mixed", breathing=0.1, drift=DRIFT, seed=7)
    half = [registration_image(frame, max_side=256) for frame in sim.frames]  # 192 x 256
    result = estimate_transforms(half, "similarity", reference=0, full_shape=SHAPE)
    truth = sim.transforms @ np.linalg.inv(sim.transforms[0])
    assert result.reference == 0 and np.array_equal(result.transforms[0], np.eye(3))
    assert corner_residuals(result.transforms, truth, SHAPE).max() <= 0.3


def test_large_magnification_steps():
    # 15 % over 3 frames: 7.5 % from one frame to the next.
    sim = simulate_stack(SHAPE, 3, texture="mixed", breathing=0.15, rotation=1.0, drift=DRIFT, seed=8)
    assert corner_residuals(align(sim.frames).transforms, sim.transforms, SHAPE).max() <= 0.2


def test_mode_none_and_bad_arguments():
    frames = simulate_stack((64, 64), 3, drift=5, seed=9).frames
    result = align(frames, "none")
    np.testing.assert_array_equal(result.transforms, np.tile(np.eye(3), (3, 1, 1)))
    assert "none" in ALIGN_MODES
    with pytest.raises(ValueError, match="align mode must be one of"):
        align(frames, "rigid")
    with pytest.raises(ValueError, match="reference must be a frame index"):
        align(frames, reference=3)


# --- repetitive patterns ---------------------------------------------------------------


def test_grid_moving_several_periods_in_total():
    # Registering every frame straight to the reference would have to pick
    # among copies of the grid; neighbour steps of 0.4 period do not.
    seed = 0
    period = grid_period(seed)
    sim = simulate_stack(SHAPE, 9, texture="grid", drift=0.4 * period * 8, seed=seed)
    assert np.hypot(*sim.transforms[0, :2, 2]) > 1.5 * period
    result = align(sim.frames)
    assert corner_residuals(result.transforms, sim.transforms, SHAPE).max() < 0.5


def test_grid_step_larger_than_half_its_period():
    # 0.7 period per step: the nearest copy of the grid is the wrong one. A
    # faint aperiodic background (15 %) is all that tells the copies apart.
    seed = 1
    period = grid_period(seed)
    grid = make_texture("grid", SHAPE, seed=seed)
    np.testing.assert_allclose(grid[:, period:], grid[:, :-period], atol=1e-5)
    texture = 0.85 * grid + 0.15 * make_texture("cells", SHAPE, seed=seed)
    sim = simulate_stack(texture=texture, n_slices=9, drift=0.7 * period * 8, seed=seed)
    result = align(sim.frames)
    assert corner_residuals(result.transforms, sim.transforms, SHAPE).max() < 0.5


# --- frames that cannot be aligned -----------------------------------------------------


def test_noise_and_blank_frames_are_reported_and_bridged():
    sim = simulate_stack(SHAPE, 10, texture="mixed", breathing=0.1, drift=DRIFT, jitter=1.0, seed=10)
    frames = sim.frames.copy()
    frames[3] = np.random.default_rng(0).integers(0, 256, SHAPE, dtype=np.uint8)
    frames[7] = 128
    result = align(frames)
    assert result.failed == [3, 7]
    assert any("frame 3" in message for message in result.messages)
    assert result.quality[[2, 3, 6, 7]].max() < 0.15
    residuals = corner_residuals(result.transforms, sim.transforms, SHAPE)
    assert residuals[[0, 1, 2, 4, 5, 6, 8, 9]].max() <= 0.2
    assert residuals[[3, 7]].max() < 5  # interpolated: right up to the jitter


def test_failed_end_frame_is_extrapolated():
    sim = simulate_stack(SHAPE, 8, texture="noise", breathing=0.12, drift=DRIFT, seed=11)
    frames = sim.frames.copy()
    frames[0] = 0
    result = align(frames)
    assert result.failed == [0]
    residuals = corner_residuals(result.transforms, sim.transforms, SHAPE)
    assert residuals[0] < 1 and residuals[1:].max() <= 0.2


def test_unrelated_frames_never_give_wild_transforms():
    rng = np.random.default_rng(1)
    frames = rng.integers(0, 256, (4,) + SHAPE, dtype=np.uint8)
    result = align(frames, "affine")
    assert result.failed == [0, 1, 3]
    np.testing.assert_array_equal(result.transforms, np.tile(np.eye(3), (4, 1, 1)))


def test_estimate_pair_rejects_an_impossible_starting_point():
    texture = make_texture("noise", SHAPE)
    fixed = registration_image(texture)
    wild = np.array([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 1]])
    matrix, quality = estimate_pair(fixed, fixed, initial=wild)
    assert quality == 0 and np.array_equal(matrix, wild)  # reported as failed, not refined
    matrix, quality = estimate_pair(fixed, fixed)
    assert quality > 0.99 and np.abs(matrix - np.eye(3)).max() < 1e-3


def test_lazy_sequence_is_fetched_a_few_times_per_frame():
    sim = simulate_stack(SHAPE, 6, texture="mixed", drift=DRIFT, seed=12)
    fetched = []

    class Lazy:
        def __len__(self):
            return len(sim.frames)

        def __getitem__(self, index):
            fetched.append(index)
            return registration_image(sim.frames[index])

    result = estimate_transforms(Lazy())
    assert corner_residuals(result.transforms, sim.transforms, SHAPE).max() <= 0.2
    assert max(fetched.count(index) for index in range(6)) <= 2


# --- exposure ----------------------------------------------------------------------------


@pytest.mark.parametrize("rgb", [True, False])
def test_gains_recovered_within_one_percent(rgb):
    sim = simulate_stack(SHAPE, 10, texture="mixed", rgb=rgb, gain=0.1, breathing=0.15, drift=DRIFT, seed=13)
    gains, offsets = estimate_gains(sim.frames, sim.transforms)
    assert gains.shape == sim.gains.shape and offsets.shape == sim.gains.shape
    assert np.abs(gains - sim.gains).max() <= 0.01
    assert not offsets.any()


def test_offsets_are_found_when_they_stand_out():
    sim = simulate_stack(SHAPE, 6, texture="photo", rgb=True, gain=0.1, drift=DRIFT, seed=14)
    frames = sim.frames.astype(np.int16)
    frames[4:] += 12
    gains, offsets = estimate_gains(np.clip(frames, 0, 255).astype(np.uint8), sim.transforms)
    np.testing.assert_allclose(offsets[4:], 12, atol=1.5)
    assert not offsets[:3].any()
    assert np.abs(gains - sim.gains).max() <= 0.02


def test_gains_from_reduced_frames_and_full_resolution_transforms():
    sim = simulate_stack(SHAPE, 5, texture="cells", rgb=True, gain=0.1, breathing=0.1, seed=15)
    reduced = [frame[::2, ::2] for frame in sim.frames]  # any smaller copies do
    half = rescale_transforms(sim.transforms, SHAPE, (192, 256))
    gains, _ = estimate_gains(reduced, sim.transforms, full_shape=SHAPE)
    np.testing.assert_allclose(gains, estimate_gains(reduced, half)[0])
    assert np.abs(gains - sim.gains).max() <= 0.01


# --- applying transforms -----------------------------------------------------------------


def test_warped_frame_matches_the_reference_where_covered():
    # No defocus change: every frame shows the reference's content, moved.
    sim = simulate_stack(
        SHAPE,
        5,
        texture="mixed",
        blur_per_slice=0,
        breathing=0.15,
        rotation=1.0,
        drift=4 * DRIFT,
        gain=0.1,
        rgb=True,
        seed=16,
    )
    reference = sim.frames[2].astype(float)
    for k in (0, 4):
        warped = warp_frame(sim.frames[k], sim.transforms[k], SHAPE, sim.gains[k], interpolation="cubic")
        covered = coverage_mask(sim.transforms[k], SHAPE, SHAPE)
        assert warped.dtype == np.uint8 and warped.shape == reference.shape
        assert 0.5 < covered.mean() < 0.99  # frame 0 is zoomed out: its corners are missing
        inner = covered & np.pad(np.ones((SHAPE[0] - 8, SHAPE[1] - 8), bool), 4)
        assert np.abs(warped[inner] - reference[inner]).mean() < 1.5


def test_coverage_mask_is_exact():
    shift = np.array([[1.0, 0, 2.4], [0, 1, -1.6], [0, 0, 1]])
    mask = coverage_mask(shift, (10, 20), (10, 20))
    rows, cols = np.nonzero(mask)
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (0, 17, 2, 9)  # x + 2.4 < 19.5, y - 1.6 >= -0.5
    assert coverage_mask(np.eye(3), (10, 20), (12, 20))[10:].sum() == 0


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_warp_frame_keeps_dtype_and_corrects_exposure(dtype):
    full = 1.0 if dtype == np.float32 else np.iinfo(dtype).max
    frame = np.full((6, 8, 3), 0.4 * full, dtype=dtype)
    corrected = warp_frame(frame, np.eye(3), (6, 8), gain=[2.0, 1.0, 0.5], offset=[0, 0.1 * full, 0])
    assert corrected.dtype == dtype
    np.testing.assert_allclose(corrected[0, 0], np.array([0.2, 0.3, 0.8]) * full, rtol=1e-3, atol=0.5)
    assert warp_frame(frame, np.eye(3), (6, 8)) is frame  # nothing to do
    bright = warp_frame(frame[..., 0], np.eye(3), (6, 8), gain=0.25)
    assert bright.dtype == dtype and bright.max() == pytest.approx(full if dtype != np.float32 else 1.6)


# --- a real stack ----------------------------------------------------------------------


def test_pcb_stack_breathes_monotonically(real_stack):
    frames = open_stack(real_stack("pcb_aimonen"))
    images = [registration_image(frames.reduced(k, 1024)) for k in range(len(frames))]
    result = estimate_transforms(images, full_shape=frames.shape[1:])
    scales = np.sqrt(np.linalg.det(result.transforms[:, :2, :2]))
    assert np.all(np.diff(scales) < 0), scales
    assert 0.03 < scales[0] / scales[-1] - 1 < 0.045  # ~3.6 % first to last
    assert result.failed == [] and result.quality.min() > 0.8


def test_coverage_by_row_intervals_equals_the_per_pixel_test():
    from napari_focus_stack.engine.warp import outside_frame, source_coordinates

    rng = np.random.default_rng(8)
    for i in range(120):
        angle = rng.uniform(-3.2, 3.2) if i % 3 == 0 else rng.uniform(-0.05, 0.05)
        scale = rng.uniform(0.7, 1.3)
        c, s = scale * np.cos(angle), scale * np.sin(angle)
        transform = np.array([[c, -s, rng.uniform(-30, 30)], [s, c, rng.uniform(-30, 30)], [0, 0, 1]])
        if i % 5 == 0:
            transform[0, 1] = transform[1, 0] = 0
        if i % 7 == 0:  # edges exactly on half pixels
            transform[:2, 2] = np.round(transform[:2, 2]) + 0.5
        frame = (int(rng.integers(50, 200)), int(rng.integers(50, 200)))
        rows = slice(int(rng.integers(0, 20)), int(rng.integers(60, 220)))
        cols = slice(int(rng.integers(0, 20)), int(rng.integers(60, 220)))
        x, y = source_coordinates(transform, rows, cols)
        expected = (x < -0.5) | (x >= frame[1] - 0.5) | (y < -0.5) | (y >= frame[0] - 0.5)
        np.testing.assert_array_equal(outside_frame(transform, frame, rows, cols), expected, err_msg=str(i))


def small_copies(frames):
    pyramids = [_pyramid(registration_image(frame)) for frame in frames]
    level = check_level(pyramids[0])
    return [p[level] for p in pyramids], pyramids[0][0].shape, level


def test_distant_frames_support_real_drift_and_refute_a_made_up_one():
    assert separations(5) == [2] and separations(48) == [6, 12] and separations(2) == []
    moving = simulate_stack(SHAPE, 16, texture="noise", drift=DRIFT, noise=0.01, seed=3)
    small, shape, level = small_copies(moving.frames)
    assert level == 1 and small[0].shape == (192, 256)
    truth = distant_agreement(small, moving.transforms, shape, level)
    assert truth.separations == [2, 4] and truth.supported
    # the true drift undone makes frames 4 apart far more alike than leaving them
    assert truth.aligned[1] > truth.unaligned[1] + 0.1
    static = simulate_stack(SHAPE, 16, texture="noise", noise=0.01, seed=3)
    small, shape, level = small_copies(static.frames)
    # a static stack credited with that drift (as a chain of biased steps would be)
    made_up = distant_agreement(small, moving.transforms, shape, level)
    assert not made_up.supported and made_up.aligned[1] < made_up.unaligned[1] - 0.1
    assert "as they are at 4 frames apart" in made_up.describe()
    assert distant_agreement(small[:2], moving.transforms[:2], shape, level) is None


def test_confocal_sections_are_not_taken_for_motion(real_stack):
    """cells3d: each optical section shows other nuclei; the chained steps found 69 px of motion that is not there."""
    frames = open_stack(real_stack("cells3d_nuclei_confocal_16bit"))
    result = estimate_transforms([registration_image(frames[k]) for k in range(len(frames))])
    assert np.array_equal(result.transforms, np.tile(np.eye(3), (len(frames), 1, 1))) and result.failed == []
    # the neighbours hardly support it (6 % of their differences explained) and distant frames refute it
    assert result.explained < 0.1 and not result.agreement.supported
    assert result.messages[-1].endswith("not motion; frames used as they are")


def largest_error(estimated, true, shape):
    corners = np.array([[0, shape[1] - 1, 0, shape[1] - 1], [0, 0, shape[0] - 1, shape[0] - 1], [1, 1, 1, 1]], float)
    difference = (estimated @ corners - true @ corners)[:, :2]
    return float(np.max(np.hypot(difference[:, 0], difference[:, 1])))


def test_a_long_still_stack_is_left_as_it_is():
    """32 differently blurred frames of a dome: the chained steps add up to 9.5 px of motion that is not there."""
    sim = simulate_scene("surface-dome", (256, 256), 32, seed=0)
    result = align(sim.frames)
    assert result.explained < 0.04  # 0.02 measured; real motion explains 0.05 to 0.8 (benchmarks/static_alignment.py)
    assert np.array_equal(result.transforms, np.tile(np.eye(3), (32, 1, 1)))
    assert "taken as defocus, not motion; frames used as they are" in result.messages[-1]


def test_jitter_is_corrected_without_the_steady_drift_of_defocus():
    sim = simulate_scene("surface-dome", (256, 256), 32, seed=0, jitter=0.5)
    result = align(sim.frames)
    assert result.explained > 0.3  # 0.49 measured
    # 9.3 px off with the steady part kept; 1.2 px measured without it
    assert largest_error(result.transforms, sim.transforms, (256, 256)) < 2.0
    assert "only the frame-to-frame motion is corrected" in result.messages[-1]


def test_steady_part_follows_ramps_not_jitter():
    from napari_focus_stack.engine.align.check import steady_part

    ramp = simulate_stack((64, 64), 16, texture="noise", breathing=0.1, drift=5, rotation=1, seed=1).transforms
    assert np.allclose(steady_part(ramp), ramp, atol=1e-6)  # ramps (rotation: nearly linear) are their own steady part
    jitter = simulate_stack((64, 64), 16, texture="noise", jitter=1.0, seed=1).transforms
    rest = jitter[:, :2, 2] - steady_part(jitter)[:, :2, 2]
    assert np.std(rest) > 0.6 * np.std(jitter[:, :2, 2])  # a cubic cannot follow 16 random shifts


def test_a_still_stack_is_told_from_a_sample_of_pairs(monkeypatch):
    from napari_focus_stack import focus_stack
    from napari_focus_stack.engine.align import policy

    sim = simulate_scene("clutter", (256, 256), 24, seed=0)
    reduced = []
    original = policy.registration_image
    monkeypatch.setattr(policy, "registration_image", lambda frame: reduced.append(frame.shape) or original(frame))
    result = focus_stack(sim.frames, device="cpu")
    assert len(reduced) == 16  # 8 pairs registered, not 23
    messages = result.metadata["alignment"]["messages"]
    assert messages == [messages[0]] and messages[0].startswith("motion checked on 8 pairs of neighbours")
    assert messages[0].endswith("frames used as they are")
    # what estimating every pair decides too: no motion; the exposure from the same small copies
    monkeypatch.setattr(policy, "SAMPLE_MIN_FRAMES", 10**9)
    whole = focus_stack(sim.frames, device="cpu")
    assert whole.metadata["alignment"]["messages"][-1].endswith("taken as defocus, not motion; frames used as they are")
    np.testing.assert_array_equal(result.transforms, whole.transforms)
    np.testing.assert_allclose(result.metadata["alignment"]["gains"], whole.metadata["alignment"]["gains"], atol=1e-4)
    assert np.abs(result.fused.astype(int) - whole.fused).max() <= 1


def test_a_sample_of_pairs_sees_jitter_and_drift():
    from napari_focus_stack.engine.align.policy import looks_still
    from napari_focus_stack.io import open_stack

    for motion in (dict(jitter=0.5), dict(drift=12.0)):
        sim = simulate_scene("clutter", (256, 256), 24, seed=0, **motion)
        assert looks_still(open_stack(sim.frames), "similarity") is None, motion


def test_the_sample_splits_its_steps_as_the_whole_estimate_does():
    # A still 64-frame dome at 384 px: the defocus bias changes along the
    # stack, so the mean of the sampled steps (the earlier steady model)
    # left a rest that explained nothing and a steady part that explained
    # "enough": every pair was registered. Fitted in the frame index like
    # the whole estimate's steady part, the sample calls it still.
    from napari_focus_stack.engine.align.check import steady_steps
    from napari_focus_stack.engine.align.policy import looks_still

    sim = simulate_stack((384, 384), 64, rgb=True, texture="mixed", depth="dome", noise=0.01, seed=11)
    message = looks_still(open_stack(sim.frames), "similarity")
    assert message is not None and "its steady part explains 4.5% of what the rest leaves" in message
    whole = align(sim.frames)
    assert "(25.3 px) explains 3.7% of what the frame-to-frame motion leaves" in whole.messages[-1]
    # the steps of a cubic trend are a quadratic in the frame index: fitted exactly
    index = np.array([0, 9, 18, 27, 36, 45, 54, 62])
    steps = np.tile(np.eye(3), (len(index), 1, 1))
    steps[:, 0, 0] = 1 + 1e-3 * (index / 62) ** 2
    steps[:, 1, 2] = 0.3 - 0.01 * index
    np.testing.assert_allclose(steady_steps(index, steps, 64), steps, atol=1e-12)
    np.testing.assert_allclose(steady_steps(index[:2], steps[:2], 64), steps[:2], atol=1e-12)  # a line through two


def test_the_estimate_walks_a_lazy_stack_a_few_images_at_a_time():
    import threading
    import weakref
    from collections import Counter

    from napari_focus_stack.engine.align.estimate import _IN_FLIGHT_PER_THREAD, ALIGN_THREADS

    sim = simulate_stack((192, 192), 40, texture="noise", jitter=1.0, seed=4)

    class Lazy:
        """Registration images made when asked for, counting fetches and the images alive."""

        def __init__(self):
            self.fetches, self.alive, self.most = Counter(), 0, 0
            self.lock = threading.Lock()

        def __len__(self):
            return len(sim.frames)

        def __getitem__(self, k):
            image = registration_image(sim.frames[k])
            with self.lock:
                self.fetches[k] += 1
                self.alive += 1
                self.most = max(self.most, self.alive)
            weakref.finalize(image, self.gone)
            return image

        def gone(self):
            with self.lock:
                self.alive -= 1

    lazy = Lazy()
    streamed = estimate_transforms(lazy, "similarity")
    listed = align(sim.frames)
    np.testing.assert_array_equal(streamed.transforms, listed.transforms)
    assert streamed.messages == listed.messages  # the steady-part check ran on both
    assert listed.messages[-1].startswith("the steady part of the motion (14.8 px) explains 4.6%")
    # once for the neighbour steps, once more for the steady-part check
    assert set(lazy.fetches.values()) == {2}
    # in flight: the fetches ahead, the pair being registered, the first frame's pyramid
    assert lazy.most <= max(2, _IN_FLIGHT_PER_THREAD * ALIGN_THREADS) + 4 < 40


def test_aligning_a_stack_holds_a_bounded_number_of_registration_images(monkeypatch):
    import threading
    import weakref

    from napari_focus_stack import focus_stack
    from napari_focus_stack.engine.align import policy

    sim = simulate_stack((192, 192), 40, texture="noise", jitter=1.0, seed=4)
    count = {"alive": 0, "most": 0, "made": 0}
    lock = threading.Lock()
    original = policy.registration_image

    def gone():
        with lock:
            count["alive"] -= 1

    def counted(frame):
        image = original(frame)
        with lock:
            count["alive"] += 1
            count["made"] += 1
            count["most"] = max(count["most"], count["alive"])
        weakref.finalize(image, gone)
        return image

    monkeypatch.setattr(policy, "registration_image", counted)
    result = focus_stack(sim.frames, device="cpu")
    assert result.transforms is not None and count["made"] == 16 + 2 * 40  # the sample, then two passes
    # the sample check's 8 pairs at once (16), then a few at a time: not the 40 frames
    assert count["most"] <= 16
