"""Whole-engine behaviour on simulated stacks with ground truth."""

import threading
import tracemalloc

import numpy as np
import pytest
import scipy.ndimage

from napari_focus_stack import StackCancelled, focus_stack, fuse_from_depth, simulate_stack
from napari_focus_stack.engine.backend import NdimageBackend, get_backend
from napari_focus_stack.engine.pipeline import drain, run_pipeline
from napari_focus_stack.engine.result import StackParams
from napari_focus_stack.io import open_stack
from napari_focus_stack.synthetic import depth_rmse, psnr, ssim, textured_mask


def baselines(sim):
    best_frame = max(psnr(f, sim.texture) for f in sim.frames)
    mean_frame = psnr(np.rint(sim.frames.mean(0)).astype(sim.frames.dtype), sim.texture)
    return best_frame, mean_frame


# (texture, depth shape, rgb, dtype, size): smooth surfaces, moderate noise (1 % of
# range). The waves surface has the same number of waves at any size, so it is
# rendered larger: at 192 px its curvature within the default window (radius
# 8 + smoothing 4) alone costs ~0.35 slices.
SMOOTH_CASES = [
    ("mixed", "dome", False, "uint8", 192),
    ("noise", "slope", True, "uint8", 192),
    ("photo", "waves", True, "uint16", 384),
    ("cells", "dome", True, "float32", 192),
]


@pytest.mark.parametrize("method", ["weighted", "depthmap", "pyramid"])
@pytest.mark.parametrize("texture, shape, rgb, dtype, size", SMOOTH_CASES)
def test_quality_on_smooth_surfaces(texture, shape, rgb, dtype, size, method):
    sim = simulate_stack((size, size), 12, texture=texture, depth=shape, rgb=rgb, dtype=dtype, noise=0.01, seed=2)
    result = focus_stack(sim.frames, method=method, device="cpu")
    best_frame, mean_frame = baselines(sim)
    quality = psnr(result.fused, sim.texture)
    assert quality > best_frame + 10 and quality > mean_frame + 10
    assert quality > 37
    best_frame_ssim = max(ssim(f, sim.texture) for f in sim.frames)
    assert ssim(result.fused, sim.texture) > max(0.93, best_frame_ssim + 0.1)
    # sub-slice interpolation: a whole-slice argmax cannot get under ~0.29
    assert depth_rmse(result.depth, sim.depth, textured_mask(sim.texture)) < 0.3


@pytest.mark.parametrize("method", ["weighted", "depthmap", "pyramid"])
def test_quality_on_steps(method):
    # Depth edges: a windowed focus measure mixes both sides of an edge within
    # its window, so depth is off there (documented in benchmarks/RESULTS.md);
    # away from edges the terraces are found to a fraction of a slice.
    sim = simulate_stack((192, 192), 12, texture="cells", depth="steps", noise=0.01, seed=3)
    result = focus_stack(sim.frames, method=method, device="cpu")
    best_frame, _ = baselines(sim)
    assert psnr(result.fused, sim.texture) > best_frame + 10
    assert ssim(result.fused, sim.texture) > 0.9
    gy, gx = np.gradient(sim.depth)
    edge_distance = scipy.ndimage.distance_transform_edt(np.hypot(gy, gx) < 0.1)
    textured = textured_mask(sim.texture)
    assert depth_rmse(result.depth, sim.depth, textured & (edge_distance > 8)) < 0.3
    assert depth_rmse(result.depth, sim.depth, textured) < 1.0


def test_subslice_beats_whole_slice_argmax():
    sim = simulate_stack((160, 160), 10, texture="noise", depth="slope", noise=0.01, seed=4)
    result = focus_stack(sim.frames, device="cpu")
    mask = textured_mask(sim.texture)
    subslice = depth_rmse(result.depth, sim.depth, mask)
    whole = depth_rmse(np.round(result.depth), sim.depth, mask)
    assert whole > 0.25 and subslice < 0.1


def test_outputs_shapes_dtypes_and_ranges():
    sim = simulate_stack((64, 96), 7, rgb=True, dtype="uint16", seed=5)
    result = focus_stack(sim.frames, device="cpu")
    assert result.fused.shape == (64, 96, 3) and result.fused.dtype == np.uint16
    assert result.depth.shape == (64, 96) and result.depth.dtype == np.float32
    assert result.confidence.shape == (64, 96) and result.confidence.dtype == np.float32
    assert result.depth.min() >= 0 and result.depth.max() <= 6
    assert result.confidence.min() >= 0 and result.confidence.max() <= 1
    assert result.params == StackParams(device="cpu")
    assert result.metadata["n_frames"] == 7 and result.device == "cpu"


def test_sixteen_bit_keeps_its_range():
    # A 12-bit camera in a 16-bit container: values far above 255, nothing clipped.
    sim = simulate_stack((96, 96), 8, dtype="uint16", seed=6)
    frames = (sim.frames // 16).astype(np.uint16)
    truth = (sim.texture // 16).astype(np.uint16)
    fused = focus_stack(frames, device="cpu").fused
    assert fused.dtype == np.uint16
    assert 0.95 < np.percentile(fused, 99.5) / np.percentile(truth, 99.5) < 1.02
    assert 3900 < fused.max() < 4096
    error = fused.astype(float) - truth
    assert 10 * np.log10(4095**2 / np.mean(error**2)) > 35  # PSNR on the 12-bit range


@pytest.mark.parametrize("method, channel_psnr", [("weighted", 33), ("depthmap", 35), ("pyramid", 35)])
def test_colour_is_not_shifted(method, channel_psnr):
    sim = simulate_stack((128, 128), 10, texture="photo", depth="dome", rgb=True, noise=0.005, seed=7)
    fused = focus_stack(sim.frames, method=method, device="cpu").fused.astype(float)
    truth = sim.texture.astype(float)
    np.testing.assert_allclose(fused.mean((0, 1)), truth.mean((0, 1)), atol=0.5)
    # every channel individually close, not only the luminance; the weighted
    # mean is softer on this steep, finely detailed surface (RESULTS.md)
    for c in range(3):
        assert psnr(fused[..., c].astype(np.uint8), sim.texture[..., c]) > channel_psnr


def test_scale_factor_outputs_cover_the_same_field():
    sim = simulate_stack((64, 80), 8, depth="slope", seed=8)
    r1 = focus_stack(sim.frames, device="cpu")
    r2 = focus_stack(sim.frames, scale_factor=2, device="cpu")
    assert r2.fused.shape == (128, 160) and r2.depth.shape == (128, 160)
    assert r2.fused.dtype == np.uint8 and r2.params.scale_factor == 2
    # 2x2 means of the up-sampled result land back on the input grid
    down = r2.depth.reshape(64, 2, 80, 2).mean((1, 3))
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(down - r1.depth)[inner].mean() < 0.15


@pytest.mark.parametrize("method", ["weighted", "depthmap", "pyramid"])
def test_memory_does_not_grow_with_frames(method):
    shape = (256, 256)
    frame_bytes = shape[0] * shape[1] * 4

    def peak(n):
        frames = simulate_stack(shape, n, rgb=True, seed=9).frames
        tracemalloc.start()
        focus_stack(frames, method=method, align="none", device="cpu")
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak

    few, many = peak(4), peak(16)
    # 12 more frames would cost 12 float32 frames if the stack were held
    assert many - few < 1.5 * frame_bytes


def test_progress_and_cancel():
    sim = simulate_stack((160, 160), 6, seed=10)
    events = []
    focus_stack(sim.frames, device="cpu", progress=events.append)
    assert [(e.stage, e.done, e.total) for e in events] == [
        *(("aligning", k, 6) for k in range(1, 7)),
        *(("stacking", k, 6) for k in range(1, 7)),
    ]
    events.clear()
    focus_stack(sim.frames, align="none", device="cpu", progress=events.append)
    assert [(e.stage, e.done, e.total) for e in events] == [("stacking", k, 6) for k in range(1, 7)]

    cancel = threading.Event()

    def stop_after_two(event):
        if event.done == 2:
            cancel.set()

    with pytest.raises(StackCancelled):
        focus_stack(sim.frames, device="cpu", progress=stop_after_two, cancel=cancel)


def test_ndimage_backend_agrees_with_opencv():
    # NdimageBackend(numpy, scipy) is the code CuPy runs: CPU/GPU agreement
    sim = simulate_stack((96, 96), 8, rgb=True, noise=0.01, seed=11)
    frames = open_stack(sim.frames)
    for method in ("weighted", "depthmap", "pyramid"):
        params = StackParams(method=method)
        a = drain(run_pipeline(frames, params, get_backend("cpu")))
        b = drain(run_pipeline(frames, params, NdimageBackend()))
        textured = a.confidence > 0.2
        assert np.abs(a.depth - b.depth)[textured].max() < 1e-3
        assert np.abs(a.fused.astype(int) - b.fused).max() <= 1


def test_refuse_from_unchanged_depth_is_identical():
    sim = simulate_stack((80, 80), 9, rgb=True, noise=0.01, seed=12)
    result = focus_stack(sim.frames, method="depthmap", device="cpu")
    again = fuse_from_depth(sim.frames, result.depth, result=result, device="cpu")
    np.testing.assert_array_equal(again, result.fused)


def test_refuse_reuses_the_alignment():
    sim = simulate_stack((160, 192), 7, rgb=True, breathing=0.06, drift=4, seed=15)
    result = focus_stack(sim.frames, method="depthmap", device="cpu")
    assert result.transforms is not None and not np.allclose(result.transforms, np.eye(3))
    again = fuse_from_depth(sim.frames, result.depth, result=result, device="cpu")
    np.testing.assert_array_equal(again, result.fused)
    unaligned = fuse_from_depth(sim.frames, result.depth, device="cpu")
    assert np.mean(unaligned != result.fused) > 0.2


def test_refuse_changes_only_the_edited_region():
    sim = simulate_stack((80, 80), 9, rgb=True, seed=13)
    result = focus_stack(sim.frames, method="depthmap", scale_factor=2, device="cpu")
    depth = result.depth.copy()
    depth[40:80, 60:100] = 0  # paint "first slice" into a patch
    edited = fuse_from_depth(sim.frames, depth, result=result, device="cpu")
    changed = np.any(edited != result.fused, axis=-1)
    assert changed[40:80, 60:100].mean() > 0.9
    changed[40:80, 60:100] = False
    assert not changed.any()


def test_refuse_checks_the_depth_shape():
    sim = simulate_stack((32, 32), 4, seed=14)
    with pytest.raises(ValueError, match=r"depth map must have shape \(64, 64\)"):
        fuse_from_depth(sim.frames, np.zeros((32, 32), np.float32), scale_factor=2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"radius": 0}, "radius must be from 1 to 20, got 0"),
        ({"radius": 21}, "radius must be from 1 to 20, got 21"),
        ({"smoothing": 11}, "smoothing must be from 1 to 10, got 11"),
        ({"scale_factor": 5}, "scale_factor must be from 1 to 4, got 5"),
        ({"radius": 2.5}, "radius must be a whole number from 1 to 20, got 2.5"),
        ({"method": "mean"}, "method must be one of weighted, depthmap, pyramid, got 'mean'"),
        ({"device": "tpu"}, "device must be 'auto', 'cpu', 'gpu', 'gpu:N' or 'gpu:all', got 'tpu'"),
    ],
)
def test_parameters_outside_their_range(kwargs, message):
    frames = simulate_stack((16, 16), 3).frames
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        focus_stack(frames, **kwargs)


# --- alignment in the pipeline -------------------------------------------------


@pytest.mark.parametrize("mode", ["similarity", "affine"])
def test_moving_stack_fuses_like_a_still_one(mode):
    # same scene, same seed: rendered still, and with breathing, drift, rotation and flicker
    kwargs = dict(texture="mixed", depth="dome", rgb=True, noise=0.01, seed=31)
    still = simulate_stack((384, 512), 10, **kwargs)
    moving = simulate_stack((384, 512), 10, breathing=0.12, drift=20, rotation=1.0, gain=0.08, jitter=1, **kwargs)
    reference = psnr(focus_stack(still.frames, align="none", device="cpu").fused, still.texture)
    result = focus_stack(moving.frames, align=mode, device="cpu")
    inner = (slice(40, -40), slice(40, -40))  # the border is filled from fewer frames
    assert psnr(result.fused[inner], moving.texture[inner]) > reference - 1.0
    unaligned = focus_stack(moving.frames, align="none", device="cpu")
    assert psnr(unaligned.fused[inner], moving.texture[inner]) < reference - 5
    # transforms agree with the truth at the corners (reference = middle frame)
    corners = np.array([[0, 511, 0, 511], [0, 0, 383, 383], [1, 1, 1, 1]], float)
    error = (result.transforms @ corners - moving.transforms @ corners)[:, :2]
    assert np.sqrt((error**2).sum(1).mean(-1)).max() < 0.5
    assert result.metadata["alignment"]["failed"] == []
    assert result.partial_coverage is not None and 0.01 < result.partial_coverage.mean() < 0.3
    assert not result.partial_coverage[inner].any()


def test_alignment_is_saved_with_the_outputs(tmp_path):
    from napari_focus_stack.io import read_metadata, save_image

    sim = simulate_stack((192, 256), 7, breathing=0.05, drift=6, seed=32)
    result = focus_stack(sim.frames, device="cpu")
    save_image(result.fused, tmp_path / "fused.tif", metadata=result.provenance())
    info = read_metadata(tmp_path / "fused.tif")
    assert info["align"] == "similarity" and info["alignment"]["reference"] == 3
    np.testing.assert_allclose(np.array(info["transforms"]), result.transforms)


def test_reference_frame_and_its_range():
    sim = simulate_stack((192, 256), 7, breathing=0.05, drift=6, seed=33)
    result = focus_stack(sim.frames, reference=0, device="cpu")
    np.testing.assert_array_equal(result.transforms[0], np.eye(3))
    assert result.metadata["alignment"]["reference"] == 0
    with pytest.raises(ValueError, match=r"reference frame 9 is not one of the 7 frames \(0 to 6\)"):
        focus_stack(sim.frames, reference=9, device="cpu")


def test_still_or_tiny_stacks_are_not_resampled():
    still = simulate_stack((256, 256), 8, rgb=True, noise=0.01, seed=34)
    aligned = focus_stack(still.frames, device="cpu")
    plain = focus_stack(still.frames, align="none", device="cpu")
    np.testing.assert_array_equal(aligned.fused, plain.fused)
    assert "frames used as they are" in aligned.metadata["alignment"]["messages"][-1]
    tiny = simulate_stack((64, 64), 5, seed=35)
    assert focus_stack(tiny.frames, device="cpu").transforms is None


# --- the fused image alone (maps=False) ---------------------------------------


class CountingSelector:
    """Stands in for SliceSelector in the pipeline, counting the instances made."""

    made = 0

    def __new__(cls, be):
        from napari_focus_stack.engine.depth import SliceSelector

        CountingSelector.made += 1
        return SliceSelector(be)


@pytest.mark.parametrize("method", ["weighted", "pyramid", "depthmap"])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(rgb=True, noise=0.01),  # one tile
        dict(shape=(512, 640), n_slices=5, noise=0.01, max_memory=22_000_000),  # tiles (the pyramid's are large)
        dict(rgb=True, breathing=0.05, drift=6),  # aligned: uncovered pixels
    ],
    ids=["whole", "tiled", "aligned"],
)
def test_fused_image_alone_is_the_same_without_the_depth_work(method, kwargs, monkeypatch):
    import napari_focus_stack.engine.pipeline as pipeline

    kwargs = {"shape": (192, 256), "n_slices": 7, **kwargs}
    max_memory = kwargs.pop("max_memory", None)
    sim = simulate_stack(texture="mixed", seed=40, **kwargs)
    params = StackParams(method=method, device="cpu")
    be = get_backend("cpu")
    monkeypatch.setattr(pipeline, "SliceSelector", CountingSelector)
    fill = []
    monkeypatch.setattr(pipeline, "fill_unsupported_depth", lambda *a: fill.append(a))
    CountingSelector.made = 0
    full = drain(run_pipeline(open_stack(sim.frames), params, be, max_memory=max_memory))
    tiles = full.metadata["tiles"]
    assert CountingSelector.made == tiles and full.has_maps and len(fill) == (method != "depthmap")
    assert (tiles > 1) == (max_memory is not None)
    CountingSelector.made, fill[:] = 0, []
    alone = drain(run_pipeline(open_stack(sim.frames), params, be, max_memory=max_memory, maps=False))
    assert alone.fused.dtype == full.fused.dtype and alone.fused.tobytes() == full.fused.tobytes()
    assert alone.depth is None and alone.confidence is None and not alone.has_maps
    assert alone.metadata == full.metadata
    # depth-map fusion follows the depth: it is selected for the fusion, and not returned
    assert CountingSelector.made == (tiles if method == "depthmap" else 0)
    assert fill == []
    if "drift" in kwargs:
        assert alone.transforms is not None and alone.partial_coverage is not None
        np.testing.assert_array_equal(alone.transforms, full.transforms)
        np.testing.assert_array_equal(alone.partial_coverage, full.partial_coverage)
    if tiles > 1 and method != "pyramid":  # two devices (CPU backends stand in) share the tiles (half the budget each)
        two = drain(
            run_pipeline(open_stack(sim.frames), params, [be, get_backend("cpu")], max_memory=max_memory, maps=False)
        )
        assert two.fused.tobytes() == full.fused.tobytes() and two.depth is None and two.confidence is None


def test_a_result_without_maps_says_so_when_asked_for_them():
    from napari_focus_stack.api import iter_focus_stack

    sim = simulate_stack((64, 64), 5, seed=41)
    result = drain(iter_focus_stack(sim.frames, device="cpu", maps=False))
    assert result.depth is None and result.confidence is None
    assert result.depth_um is None
    for ask in (result.mark_unfocused, result.valid_mask, lambda: result.valid):
        with pytest.raises(ValueError, match=r"no depth or confidence map \(it was run with maps=False\)"):
            ask()
    with pytest.raises(ValueError, match="cannot save the depth map: this result has no depth"):
        result.output_images(["fused image", "depth map"])
    assert list(result.output_images(["fused image"])) == ["fused image"]
    # the default keeps both maps
    assert focus_stack(sim.frames, device="cpu").has_maps
