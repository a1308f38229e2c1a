"""Microscopy layouts in napari: the default z axis of unlabelled (T, C, Z, Y, X)
data, channels fused along one depth (a channel axis or a set of layers), depth
hidden where it is a guess, and lazy layers read frame by frame."""

import numpy as np
import pytest
from napari.layers import Surface

from napari_focus_stack import focus_stack, focus_stack_channels
from napari_focus_stack._napari import layers
from napari_focus_stack._napari.actions import run_of
from napari_focus_stack._napari.stacking import StackLayout, expected_steps, iter_stack_layer
from napari_focus_stack._napari.widget import FocusStackWidget
from napari_focus_stack.engine.result import StackParams
from napari_focus_stack.engine.steps import drain
from napari_focus_stack.synthetic import render_channels, simulate_stack

pytestmark = pytest.mark.napari
CPU = StackParams(align="none", device="cpu")


@pytest.fixture(scope="module")
def two_channels():
    channels, _, _ = render_channels((64, 80), 6, seed=2)
    return channels


def docked(viewer):
    widget = FocusStackWidget(viewer)
    widget.synchronous = True
    widget.align.value = "none"
    widget.device.value = "cpu"
    return widget


@pytest.mark.parametrize(
    "shape, labels, z_axis, channel_axis, reason",
    [
        ((3, 5, 32, 40), None, 1, None, "the one just before Y and X (no axis is labelled z)"),
        ((2, 5, 32, 40), None, 1, None, "the one just before Y and X"),
        ((2, 3, 5, 32, 40), None, 2, None, "the one just before Y and X"),
        ((5, 3, 32, 40), ("z", "t", "y", "x"), 0, None, "labelled z"),
        ((2, 5, 3, 32, 40), ("t", "z", "c", "y", "x"), 1, 2, "labelled z"),
        ((2, 3, 5, 32, 40), ("t", "c", "q", "y", "x"), 2, 1, "the one just before Y and X"),
        ((5, 32, 40), None, 0, None, "the only one besides Y and X"),
    ],
)
def test_default_z_and_channel_axes(make_napari_viewer, shape, labels, z_axis, channel_axis, reason):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros(shape, np.uint16), name="stack", **({"axis_labels": labels} if labels else {}))
    widget = docked(viewer)
    assert widget.z_axis.value == z_axis
    assert widget.channels.value == channel_axis
    assert reason in widget.status.value and f"axis {z_axis}" in widget.status.value


def test_unlabelled_tczyx_keeps_time_and_channel_axes_and_scale(make_napari_viewer):
    viewer = make_napari_viewer()
    sims = [[simulate_stack((32, 40), 5, seed=10 * t + c).frames for c in range(3)] for t in range(2)]
    data = np.array(sims)  # (T, C, Z, Y, X), unlabelled
    viewer.add_image(data, name="hyper", scale=(1.0, 1.0, 2.0, 0.5, 0.5))
    widget = docked(viewer)
    assert widget.z_axis.value == 2 and widget.channels.value is None
    widget.run()
    fused, depth = viewer.layers["hyper fused"], viewer.layers["hyper depth"]
    assert fused.data.shape == depth.data.shape == (2, 3, 1, 32, 40)
    np.testing.assert_allclose(fused.scale, (1.0, 1.0, 10.0, 0.5, 0.5))
    np.testing.assert_array_equal(fused.data[1, 2, 0], focus_stack(sims[1][2], align="none", device="cpu").fused)


def test_labelled_channel_axis_is_fused_along_one_depth(make_napari_viewer, two_channels):
    viewer = make_napari_viewer()
    data = np.stack([np.stack(two_channels), np.stack(two_channels)[:, ::-1]])  # (T, C, Z, Y, X)
    viewer.add_image(data, name="cells", axis_labels=("t", "c", "z", "y", "x"))
    widget = docked(viewer)
    assert widget.z_axis.value == 2 and widget.channels.value == 1 and widget.depth_from.value == "all"
    assert widget.depth_from.choices == ("all", 0, 1)
    assert widget.depth_from.native.itemText(0) == "all channels combined"
    widget.run()
    fused, depth = viewer.layers["cells fused"].data, viewer.layers["cells depth"].data
    confidence = viewer.layers["cells confidence"].data
    assert fused.shape == (2, 2, 1, 64, 80) and depth.shape == confidence.shape == (2, 1, 1, 64, 80)
    expected = focus_stack_channels([stack[::-1] for stack in two_channels], align="none", device="cpu")
    np.testing.assert_array_equal(fused[1, :, 0], expected.fused)
    np.testing.assert_array_equal(run_of(viewer.layers["cells depth"]).depth[1, 0, 0], expected.depth)
    assert tuple(viewer.layers["cells depth"].axis_labels) == ("t", "c", "z", "y", "x")


def test_depth_from_one_channel_in_the_widget(make_napari_viewer, two_channels):
    viewer = make_napari_viewer()
    viewer.add_image(np.stack(two_channels), name="cells", axis_labels=("c", "z", "y", "x"))
    widget = docked(viewer)
    widget.depth_from.value = 0
    widget.run()
    run = run_of(viewer.layers["cells depth"])
    assert run.depth.shape == (64, 80)  # the leading channel and z axes collapse away
    np.testing.assert_array_equal(run.depth, focus_stack(two_channels[0], align="none", device="cpu").depth)
    assert viewer.layers["cells fused"].data.shape == (2, 1, 64, 80)


def test_a_set_of_channel_layers_gives_one_depth_and_a_fused_layer_per_channel(make_napari_viewer, two_channels):
    viewer = make_napari_viewer()
    nuclei = viewer.add_image(two_channels[0], name="nuclei", colormap="cyan")
    viewer.add_image(two_channels[1], name="actin", colormap="magenta")
    viewer.add_image(np.zeros((6, 10, 10), np.uint16), name="other size")
    widget = docked(viewer)
    widget.stack.value = nuclei
    assert [layer.name for layer in widget.channel_layers.choices] == ["actin"]
    widget.channel_layers.value = [viewer.layers["actin"]]
    assert widget.depth_from.choices == ("all", 0, 1)
    widget.run()
    expected = focus_stack_channels(two_channels, align="none", device="cpu")
    for c, name in enumerate(["nuclei", "actin"]):
        layer = viewer.layers[f"{name} fused"]
        assert layer.data.shape == (1, 64, 80) and layer.colormap.name == ("cyan", "magenta")[c]
        np.testing.assert_array_equal(layer.data[0], expected.fused[c])
    assert "actin depth" not in viewer.layers
    np.testing.assert_array_equal(run_of(viewer.layers["nuclei depth"]).depth, expected.depth)
    widget.edit_depth()
    edits = viewer.layers["nuclei depth edits"]
    assert edits.data.shape == (64, 80)
    edits.data[5:25, 10:40] = 1  # the first frame
    before = viewer.layers["actin fused"].data.copy()
    widget.refuse()
    for name in ("nuclei", "actin"):
        layer = viewer.layers[f"{name} fused"]
        assert layer.metadata["focus_stack"]["retouched"]
    after = viewer.layers["actin fused"].data
    assert np.any(after[0, 5:25, 10:40] != before[0, 5:25, 10:40])
    np.testing.assert_array_equal(after[0, 30:], before[0, 30:])


def test_unfocused_depth_is_hidden_by_default_and_kept_underneath(make_napari_viewer):
    sim = simulate_stack((96, 96), 6, texture="cells", seed=4)
    frames = sim.frames.copy()
    frames[:, :, 48:] = 120  # the right half is blank: its depth is a guess
    viewer = make_napari_viewer()
    viewer.add_image(frames, name="half")
    widget = docked(viewer)
    assert widget.mark_unfocused.value and widget.min_confidence.value == pytest.approx(0.1)
    widget.run()
    shown = viewer.layers["half depth"].data
    run = run_of(viewer.layers["half depth"])
    assert np.isnan(shown[:, 84:]).all() and np.isfinite(shown[:, :36]).all()
    assert np.isfinite(run.depth).all()  # the raw values stay, for retouching and saving
    expected = focus_stack(frames, align="none", device="cpu", mark_unfocused=True).depth
    np.testing.assert_array_equal(np.isnan(shown), np.isnan(expected))
    widget.show_surface()
    surface = next(layer for layer in viewer.layers if isinstance(layer, Surface))
    full = 2 * 95 * 95
    assert 0.6 * full < len(surface.data[1]) < 0.95 * full  # holes where the depth is hidden
    widget.min_confidence.value = 0.0
    widget.run()
    assert np.isfinite(viewer.layers["half depth"].data).all()


def test_result_valid_matches_the_hidden_pixels():
    sim = simulate_stack((96, 96), 6, texture="cells", seed=4)
    frames = sim.frames.copy()
    frames[:, :, 48:] = 120
    result = focus_stack(frames, align="none", device="cpu")
    valid = result.valid
    assert valid.dtype == bool and valid[:, :36].all() and not valid[:, 84:].any()
    np.testing.assert_array_equal(~valid, np.isnan(result.mark_unfocused().depth))


def test_a_lazy_layer_is_read_one_frame_at_a_time():
    """A dask-backed (T, Z, Y, X) layer: each frame is computed once, nothing more."""
    import dask
    import dask.array as da

    sims = [simulate_stack((32, 40), 5, seed=t).frames for t in range(2)]
    reads = []

    def frame(t, z):
        reads.append((t, z))
        return sims[t][z]

    planes = [[da.from_delayed(dask.delayed(frame)(t, z), (32, 40), np.uint8) for z in range(5)] for t in range(2)]
    data = da.stack([da.stack(row) for row in planes])
    layout = StackLayout(data.shape, 1, False)
    steps = iter_stack_layer(data, layout, CPU)
    events = []
    run = drain(steps, events.append)
    count = len(events)
    assert count == expected_steps(layout, CPU, (32, 40))
    assert sorted(reads) == [(t, z) for t in range(2) for z in range(5)]
    np.testing.assert_array_equal(run.fused[1, 0], focus_stack(sims[1], align="none", device="cpu").fused)


def test_refuse_with_channels_moves_every_channel_along_the_edited_depth(two_channels):
    from napari_focus_stack import fuse_from_depth
    from napari_focus_stack._napari.stacking import edited_depth, iter_refuse

    data = np.stack([np.stack(two_channels)] * 2)  # (T, C, Z, Y, X)
    layout = StackLayout(data.shape, 2, False, channel_axis=1)
    steps = iter_stack_layer(data, layout, CPU)
    events = []
    run = drain(steps, events.append)
    count = len(events)
    assert count == expected_steps(layout, CPU, (64, 80)) == 2 * (6 + 2 * 6)
    edits = layers.edits_layer(run)[0]
    assert edits.shape == run.depth.shape == (2, 1, 1, 64, 80)
    edits[1, 0, 0, 10:30, 20:50] = 6  # time point 1: take the region from the last frame
    fused = drain(iter_refuse(run, edits))
    painted = edits[1, 0, 0] > 0
    depth = edited_depth(run.depth[1, 0, 0], edits[1, 0, 0])
    for c in range(2):
        expected = fuse_from_depth(two_channels[c], depth, device="cpu")
        np.testing.assert_array_equal(fused[1, c, 0][painted], expected[painted])
        np.testing.assert_array_equal(fused[1, c, 0][~painted], run.fused[1, c, 0][~painted])
    np.testing.assert_array_equal(fused[0], run.fused[0])  # time point 0 had no edits
    aligned = layers.aligned_layer(run)[0]
    np.testing.assert_array_equal(aligned, data)  # not aligned: the frames as they are


def test_channels_on_the_gpu_stand_in_agree_with_the_cpu(fake_gpu, two_channels):
    state = fake_gpu()
    on_gpu = focus_stack_channels(two_channels, align="none", device="gpu")
    cpu = focus_stack_channels(two_channels, align="none", device="cpu")
    assert on_gpu.device == "gpu:0" and state.allocations[0] > 0
    assert np.abs(on_gpu.fused.astype(int) - cpu.fused).max() <= 1
    np.testing.assert_allclose(on_gpu.depth, cpu.depth, atol=5e-3)


@pytest.mark.parametrize(
    "shape, rgb, z_axis, channel_axis, message",
    [
        ((2, 5, 32, 40, 3), True, 1, 0, "an RGB layer's channels are its colours"),
        ((2, 5, 32, 40), False, 1, 1, "channel axis 1 must be one of the non-spatial axes of data shaped"),
        ((2, 5, 32, 40), False, 1, 0, None),
    ],
)
def test_a_layout_refuses_a_channel_axis_that_cannot_be_one(shape, rgb, z_axis, channel_axis, message):
    if message is None:
        assert StackLayout(shape, z_axis, rgb, channel_axis).n_channels == 2
        return
    with pytest.raises(ValueError, match=message):
        StackLayout(shape, z_axis, rgb, channel_axis)
