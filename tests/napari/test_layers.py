"""Qt-free tests of the napari glue's model code: stacking.py and layers.py (no viewer)."""

import subprocess
import sys
import threading

import numpy as np
import pytest

from napari_focus_stack import focus_stack, fuse_from_depth, simulate_stack
from napari_focus_stack._napari import layers
from napari_focus_stack._napari.stacking import (
    StackLayout,
    edited_depth,
    expected_steps,
    iter_refuse,
    iter_stack_layer,
    planes_with_edits,
)
from napari_focus_stack.engine.result import DEFAULTS, StackCancelled, StackParams


def drain(steps):
    """Run a generator to its end; return (number of yields, returned value)."""
    count = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return count, done.value
        count += 1


@pytest.fixture(scope="module")
def sim():
    return simulate_stack((48, 64), 6, rgb=True, seed=1)


def stack_run(data, z_axis=0, rgb=True, params=None, z_step_um=None, **view):
    """Stack ``data`` as the widget would a layer named "s" shown with ``view``."""
    layout = StackLayout(data.shape, z_axis, rgb)
    steps = iter_stack_layer(
        data,
        layout,
        StackParams(**(params or {})),
        source_name="s",
        input_view=view,
        z_step_um=z_step_um,
    )
    return drain(steps)


#: The napari glue's modules that say they are free of Qt and napari.
MODEL_MODULES = ("layers", "stacking", "batch_view", "sample_data")


def test_model_modules_import_neither_qt_nor_napari():
    imports = ", ".join(f"napari_focus_stack._napari.{name}" for name in MODEL_MODULES)
    code = (
        f"import sys, {imports};"
        "gui = ('napari', 'qtpy', 'PyQt6', 'magicgui');"
        "bad = [m for m in sys.modules if m.split('.')[0] in gui];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_layout_of_a_time_series_keeps_a_length_one_z_axis():
    layout = StackLayout((3, 7, 10, 12, 3), z_axis=1, rgb=True)
    assert layout.ndim == 4 and layout.n_frames == 7 and layout.outer_axes == (0,)
    assert layout.planes() == [(0,), (1,), (2,)]
    assert layout.output_shape((10, 12)) == (3, 1, 10, 12)
    assert layout.output_index((2,)) == (2, 0)
    data = np.arange(3 * 7 * 10 * 12 * 3).reshape(3, 7, 10, 12, 3)
    np.testing.assert_array_equal(layout.stack(data, (2,)), data[2])


def test_layout_with_z_first_drops_z():
    layout = StackLayout((7, 3, 10, 12), z_axis=0, rgb=False)
    assert layout.outer_axes == (1,) and not layout.keeps_z
    assert layout.output_shape((10, 12)) == (3, 10, 12)
    data = np.random.default_rng(0).random((7, 3, 10, 12))
    np.testing.assert_array_equal(layout.stack(data, (1,)), data[:, 1])


def test_layout_rejects_a_spatial_z_axis():
    with pytest.raises(ValueError, match="z axis"):
        StackLayout((7, 10, 12), z_axis=1, rgb=False)


def test_stacking_a_layer_equals_the_engine(sim):
    count, run = stack_run(sim.frames)
    assert count == 6
    expected = focus_stack(sim.frames)
    np.testing.assert_array_equal(run.fused, expected.fused)
    np.testing.assert_array_equal(run.depth, expected.depth)
    assert run.provenance()["radius"] == DEFAULTS["radius"] and run.provenance()["source_layer"] == "s"


def test_stacking_each_time_point(sim):
    data = np.stack([sim.frames, sim.frames[::-1]])
    count, run = stack_run(data, z_axis=1)
    assert count == 12 and run.depth.shape == (2, 1, 48, 64)
    np.testing.assert_array_equal(run.depth[1, 0], focus_stack(sim.frames[::-1]).depth)


def test_cancel_stops_with_stack_cancelled(sim):
    cancel = threading.Event()
    layout = StackLayout(sim.frames.shape, 0, True)
    steps = iter_stack_layer(sim.frames, layout, StackParams(), cancel=cancel)
    next(steps)
    cancel.set()
    with pytest.raises(StackCancelled):
        next(steps)


@pytest.mark.parametrize("factor", [1, 2, 3])
def test_results_cover_the_input_field_of_view(sim, factor):
    scale, translate = (2.0, 0.5, 0.25), (5.0, 10.0, -4.0)
    params = {"scale_factor": factor}
    _, run = stack_run(sim.frames, params=params, scale=scale, translate=translate)
    geometry = layers.output_geometry(run)
    out_scale, out_translate = np.array(geometry["scale"]), np.array(geometry["translate"])
    np.testing.assert_allclose(out_scale, np.array(scale[1:]) / factor)
    size_in, size_out = np.array(sim.frames.shape[1:3]), np.array(run.fused.shape[:2])
    # left edge of the first pixel and right edge of the last one, in world units
    in_scale, in_translate = np.array(scale[1:]), np.array(translate[1:])
    np.testing.assert_allclose(out_translate - out_scale / 2, in_translate - in_scale / 2)
    np.testing.assert_allclose(
        out_translate + (size_out - 0.5) * out_scale,
        in_translate + (size_in - 0.5) * in_scale,
    )
    # output pixel j sits at input coordinate (j + 0.5) / s - 0.5
    j = np.arange(4)
    np.testing.assert_allclose(
        out_translate[0] + j * out_scale[0], translate[1] + ((j + 0.5) / factor - 0.5) * scale[1]
    )


def test_time_series_results_span_the_stack_in_z(sim):
    data = np.stack([sim.frames, sim.frames])
    _, run = stack_run(data, z_axis=1, scale=(1.0, 2.0, 1.0, 1.0), translate=(0.0, 3.0, 0.0, 0.0))
    geometry = layers.output_geometry(run)
    assert geometry["scale"][:2] == (1.0, 12.0)
    assert geometry["translate"][:2] == (0.0, 3.0 + 5 * 2.0 / 2)


def test_result_layers(sim):
    _, run = stack_run(sim.frames, z_step_um=2.5, units=("µm",) * 3, axis_labels=("z", "y", "x"))
    (depth, depth_kw, _), (conf, conf_kw, _), (fused, fused_kw, kind) = layers.result_layers(run)
    names = [depth_kw["name"], conf_kw["name"], fused_kw["name"]]
    assert names == ["s depth", "s confidence", "s fused"]
    assert kind == "image" and fused.dtype == np.uint8 and fused_kw["rgb"]
    np.testing.assert_array_equal(depth, run.depth * np.float32(2.5))
    assert depth_kw["contrast_limits"] == (0.0, 5 * 2.5)
    assert depth_kw["metadata"]["focus_stack"]["depth_unit"] == "µm"
    assert fused_kw["units"] == ("µm", "µm") and fused_kw["axis_labels"] == ("y", "x")
    assert conf_kw["visible"] is False and conf.dtype == np.float32
    assert fused_kw["metadata"][layers.RUN_KEY] is run
    assert fused_kw["metadata"]["focus_stack"]["method"] == DEFAULTS["method"]


def test_gray_fused_layer_keeps_the_input_look(sim):
    gray = sim.frames[..., 1].astype(np.uint16) * 200
    _, run = stack_run(gray, rgb=False, colormap="magenta", contrast_limits=(0.0, 40000.0))
    data, kwargs, _ = layers.fused_layer(run)
    assert data.dtype == np.uint16 and not kwargs["rgb"]
    assert kwargs["colormap"] == "magenta" and kwargs["contrast_limits"] == (0.0, 40000.0)


def test_grid_mesh_covers_the_map_with_two_triangles_per_cell():
    height = np.arange(12, dtype=np.float32).reshape(3, 4)
    vertices, faces, texcoords = layers.grid_mesh(height)
    assert vertices.shape == (12, 3) and faces.shape == (2 * 2 * 3, 3)
    np.testing.assert_array_equal(vertices[:, 0], height.ravel())
    np.testing.assert_array_equal(vertices[5], [5, 1, 1])
    assert texcoords.min() > 0 and texcoords.max() < 1


def test_grid_mesh_of_a_large_map_is_subsampled_to_the_edges():
    vertices, _, _ = layers.grid_mesh(np.zeros((2000, 1500), np.float32))
    rows, cols = np.unique(vertices[:, 1]), np.unique(vertices[:, 2])
    assert len(rows) <= layers.SURFACE_MAX_SIDE + 1 and rows[-1] == 1999 and cols[-1] == 1499


def test_surface_layer_sits_at_the_frames_z_positions(sim):
    _, run = stack_run(sim.frames, scale=(3.0, 1.0, 1.0), translate=(7.0, 0.0, 0.0))
    (vertices, faces), kwargs, kind = layers.surface_layer(run)
    assert kind == "surface" and kwargs["scale"][0] == 3.0 and kwargs["translate"][0] == 7.0
    assert kwargs["texture"].shape == sim.frames.shape[1:] and kwargs["texture"].max() <= 1


def test_position_to_plane_and_frame(sim):
    data = np.stack([sim.frames] * 3)
    _, run = stack_run(data, z_axis=1, scale=(1.0, 2.0, 1.0, 1.0), translate=(0.0, 1.0, 0.0, 0.0))
    assert layers.plane_at(run, (2.0, 5.0, 3.0, 3.0)) == (2,)
    assert layers.frame_at(run, (2.0, 5.0, 3.0, 3.0)) == 2
    assert layers.frame_at(run, (99.0, 99.0, 3.0, 3.0)) == 5  # clipped to the stack


def test_edited_depth_takes_painted_frames_and_keeps_the_rest():
    depth = np.array([[0.3, 1.7], [2.2, 4.0]], np.float32)
    edits = np.array([[0, 1], [5, 0]], np.uint8)
    expected = np.array([[0.3, 0.0], [4.0, 4.0]], np.float32)
    np.testing.assert_array_equal(edited_depth(depth, edits), expected)


@pytest.mark.parametrize("method", ["depthmap", "pyramid"])
def test_refuse_changes_exactly_the_painted_pixels(sim, method):
    _, run = stack_run(sim.frames, params={"method": method})
    edits = layers.edits_layer(run)[0]
    edits[10:20, 30:50] = 6  # take the region from the last frame
    count, fused = drain(iter_refuse(run, edits))
    assert count == 6
    painted = edits > 0
    np.testing.assert_array_equal(fused[~painted], run.fused[~painted])
    expected = fuse_from_depth(sim.frames, edited_depth(run.depth, edits))
    np.testing.assert_array_equal(fused[painted], expected[painted])
    assert np.any(fused[painted] != run.fused[painted])


def test_refuse_only_visits_edited_time_points(sim):
    data = np.stack([sim.frames] * 3)
    _, run = stack_run(data, z_axis=1)
    edits = np.zeros(run.depth.shape, np.uint8)
    edits[1, 0, :5, :5] = 1
    assert planes_with_edits(run, edits) == [(1,)]
    count, fused = drain(iter_refuse(run, edits))
    assert count == 6
    np.testing.assert_array_equal(fused[[0, 2]], run.fused[[0, 2]])


def test_refuse_refuses_edits_of_another_shape(sim):
    _, run = stack_run(sim.frames)
    with pytest.raises(ValueError, match="new edit layer"):
        drain(iter_refuse(run, np.zeros((3, 3), np.uint8)))


def test_surface_texture_of_a_large_image_is_subsampled():
    image = np.zeros((5000, 3000, 3), np.uint8)
    small = layers.subsampled(image, layers.TEXTURE_MAX_SIDE)
    assert small.shape == (1667, 1000, 3)


@pytest.fixture(scope="module")
def moving():
    return simulate_stack((160, 192), 7, rgb=True, breathing=0.06, drift=5, seed=8)


def test_moving_stack_is_aligned_counted_and_retouched_through_its_alignment(moving):
    layout = StackLayout(moving.frames.shape, 0, True)
    params = StackParams(method="depthmap")
    steps = iter_stack_layer(moving.frames, layout, params, source_name="m")
    count, run = drain(steps)
    assert count == expected_steps(layout, params, moving.frames.shape[1:3]) == 14  # aligning + stacking
    transforms, alignment = run.alignments[0]
    assert transforms is not None and alignment["mode"] == "similarity"
    assert run.alignment_problems() == []
    edits = layers.edits_layer(run)[0]
    edits[40:80, 60:120] = 1  # take the region from the first frame
    _, fused = drain(iter_refuse(run, edits))
    painted = edits > 0
    np.testing.assert_array_equal(fused[~painted], run.fused[~painted])
    result = focus_stack(moving.frames, method="depthmap")
    expected = fuse_from_depth(moving.frames, edited_depth(run.depth, edits), result=result)
    np.testing.assert_array_equal(fused[painted], expected[painted])


def test_aligned_layer_shows_the_frames_as_fused(moving):
    layout = StackLayout(moving.frames.shape, 0, True)
    steps = iter_stack_layer(moving.frames, layout, StackParams(), source_name="m", input_view={"scale": (1, 1, 1)})
    _, run = drain(steps)
    data, kwargs, kind = layers.aligned_layer(run)
    assert kind == "image" and kwargs["name"] == "m aligned" and kwargs["rgb"]
    assert data.shape == moving.frames.shape and data.dtype == np.uint8
    np.testing.assert_array_equal(data[3], moving.frames[3])  # the reference frame is not moved
    # frames line up: the first frame, aligned, is closer to the reference than as shot
    inner = (slice(20, -20), slice(20, -20))
    diff_aligned = np.abs(data[2][inner].astype(int) - data[3][inner]).mean()
    diff_raw = np.abs(moving.frames[2][inner].astype(int) - moving.frames[3][inner]).mean()
    assert diff_aligned < 0.8 * diff_raw
