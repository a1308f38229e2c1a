"""The Focus Stack dock widget and the Layers-menu commands, in a real viewer."""

import time

import numpy as np
import pytest
from napari.layers import Labels, Surface

from napari_focus_stack import focus_stack, fuse_from_depth, simulate_stack
from napari_focus_stack._napari.actions import run_of
from napari_focus_stack._napari.controls import gpu_item
from napari_focus_stack._napari.widget import FocusStackWidget
from napari_focus_stack.engine.result import DEFAULTS

pytestmark = pytest.mark.napari

PLUGIN = "napari-focus-stack"


@pytest.fixture(scope="module")
def small():
    return simulate_stack((64, 96), 6, rgb=True, noise=0.01, seed=3).frames


def docked_widget(viewer):
    widget = FocusStackWidget(viewer)
    widget.synchronous = True
    return widget


def test_sample_data_run_with_defaults(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample(PLUGIN, "synthetic_focal_stack")
    stack, truth = viewer.layers
    assert stack.rgb and stack.data.shape == (12, 512, 512, 3)
    assert truth.name == "true depth" and not truth.visible
    widget = docked_widget(viewer)
    assert widget.stack.value is stack and widget.z_axis.value == 0 and widget.z_step.value == 0
    widget.run()
    names = [layer.name for layer in viewer.layers]
    assert names == [
        "synthetic stack",
        "true depth",
        "synthetic stack depth",
        "synthetic stack confidence",
        "synthetic stack fused",
    ]
    fused, depth = viewer.layers["synthetic stack fused"], viewer.layers["synthetic stack depth"]
    assert fused.rgb and fused.data.dtype == np.uint8 and fused.data.shape == (512, 512, 3)
    assert depth.data.dtype == np.float32 and depth.contrast_limits == [0.0, 11.0]
    np.testing.assert_array_equal(depth.data, focus_stack(stack.data).depth)
    assert fused.metadata["focus_stack"]["radius"] == DEFAULTS["radius"]
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_scale_factor_results_overlay_the_input_in_micrometres(make_napari_viewer, small):
    viewer = make_napari_viewer()
    layer = viewer.add_image(small, rgb=True, name="leaf", scale=(2.0, 0.5, 0.5), translate=(0, 10, 20), units="µm")
    widget = docked_widget(viewer)
    assert widget.z_step.value == 2.0
    widget.scale_factor.value = 2
    widget.run()
    fused, depth = viewer.layers["leaf fused"], viewer.layers["leaf depth"]
    assert fused.data.shape == (128, 192, 3)
    np.testing.assert_allclose(fused.scale, (0.25, 0.25))
    np.testing.assert_allclose(fused.translate, (10 - 0.125, 20 - 0.125))
    # the outer edges of the first and last pixels coincide with the input's
    for a, b in ((layer, fused), (layer, depth)):
        first_a = np.array(a.data_to_world((0, -0.5, -0.5)))[1:]
        first_b = np.array(b.data_to_world((-0.5, -0.5)))
        np.testing.assert_allclose(first_a, first_b)
    expected = focus_stack(small, scale_factor=2).depth * np.float32(2.0)
    np.testing.assert_array_equal(depth.data, expected)
    assert depth.contrast_limits == [0.0, 10.0]


def test_time_series_keeps_its_time_axis(make_napari_viewer, small):
    viewer = make_napari_viewer()
    data = np.stack([small, small[::-1]])
    viewer.add_image(data, rgb=True, name="movie", axis_labels=("t", "z", "y", "x"))
    widget = docked_widget(viewer)
    assert widget.z_axis.value == 1
    widget.run()
    depth = viewer.layers["movie depth"]
    assert depth.data.shape == (2, 1, 64, 96)
    assert viewer.layers["movie fused"].data.shape == (2, 1, 64, 96, 3)
    np.testing.assert_array_equal(depth.data[1, 0], focus_stack(small[::-1]).depth)
    assert tuple(depth.axis_labels) == ("t", "z", "y", "x")


class SlowFrames:
    """Array-like whose frames take a while to read, so a run can be cancelled midway."""

    def __init__(self, data, seconds):
        self._data, self._seconds = data, seconds
        self.shape, self.dtype, self.ndim, self.size = data.shape, data.dtype, data.ndim, data.size

    def __getitem__(self, index):
        if index == (slice(None),) * self.ndim:  # the whole stack, as the widget takes it
            return self
        time.sleep(self._seconds)
        return self._data[index]

    def __array__(self, dtype=None, copy=None):
        return np.asarray(self._data, dtype=dtype)


def test_cancel_midway_leaves_the_viewer_as_it_was(make_napari_viewer, qtbot, small):
    viewer = make_napari_viewer()
    slow = SlowFrames(np.concatenate([small] * 5), seconds=0.1)
    viewer.add_image(slow, rgb=True, name="slow", contrast_limits=(0, 255))
    widget = FocusStackWidget(viewer)
    progress = []
    widget.run()
    widget.task.worker.yielded.connect(progress.append)
    qtbot.waitUntil(lambda: len(progress) >= 2, timeout=10_000)
    assert widget.cancel_button.enabled and not widget.run_button.enabled
    widget.cancel_button.clicked()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10_000)
    assert len(progress) <= 4  # stopped within a frame of the cancel
    assert [layer.name for layer in viewer.layers] == ["slow"]
    assert widget.status.value.startswith("Cancelled")


def test_retouch_round_trip(make_napari_viewer, small):
    viewer = make_napari_viewer()
    viewer.add_image(small, rgb=True, name="moss")
    widget = docked_widget(viewer)
    widget.run()
    before = viewer.layers["moss fused"].data.copy()
    run = run_of(viewer.layers["moss depth"])
    viewer.dims.set_current_step(0, 5)
    widget.edit_depth()
    edits = viewer.layers["moss depth edits"]
    assert isinstance(edits, Labels) and edits.data.shape == (64, 96)
    assert edits.selected_label == 6 and edits.mode == "paint"
    viewer.dims.set_current_step(0, 1)
    assert edits.selected_label == 2  # follows the z slider
    edits.data[20:40, 10:50] = 6
    widget.refuse()
    after = viewer.layers["moss fused"].data
    painted = edits.data > 0
    np.testing.assert_array_equal(after[~painted], before[~painted])
    depth = np.where(painted, 5, run.depth).astype(np.float32)
    np.testing.assert_array_equal(after[painted], fuse_from_depth(small, depth)[painted])
    assert np.any(after[painted] != before[painted])
    assert viewer.layers["moss fused"].metadata["focus_stack"]["retouched"]


def test_rerun_replaces_the_result_layers(make_napari_viewer, small):
    viewer = make_napari_viewer()
    viewer.add_image(small, rgb=True, name="moss")
    widget = docked_widget(viewer)
    widget.run()
    viewer.layers["moss depth"].visible = False
    widget.radius.value = 3
    widget.run()
    assert len(viewer.layers) == 4 and not viewer.layers["moss depth"].visible
    assert viewer.layers["moss fused"].metadata["focus_stack"]["radius"] == 3


def test_layers_menu_commands_work_on_the_selected_result(make_napari_viewer, qtbot, small):
    from napari._app_model import get_app_model

    viewer = make_napari_viewer()
    viewer.add_image(small, rgb=True, name="moss", scale=(3.0, 1.0, 1.0))
    docked_widget(viewer).run()
    app = get_app_model()
    visualize = [item.command.id for item in app.menus.get_menu("napari/layers/visualize")]
    annotate = [item.command.id for item in app.menus.get_menu("napari/layers/annotate")]
    assert f"{PLUGIN}.depth_surface" in visualize
    assert {f"{PLUGIN}.edit_depth", f"{PLUGIN}.refuse"} <= set(annotate)
    commands = app.commands
    viewer.layers.selection.active = viewer.layers["moss depth"]
    commands.execute_command(f"{PLUGIN}.depth_surface")
    surface = viewer.layers["moss depth surface"]
    assert isinstance(surface, Surface) and viewer.dims.ndisplay == 3
    assert surface.scale[0] == 3.0 and surface.data[0].shape[1] == 3
    viewer.layers.selection.active = viewer.layers["moss fused"]
    commands.execute_command(f"{PLUGIN}.edit_depth")
    edits = viewer.layers["moss depth edits"]
    assert isinstance(edits, Labels) and viewer.dims.ndisplay == 2
    fused = viewer.layers["moss fused"]
    before = fused.data.copy()
    depth = run_of(fused).depth[:20, :20]  # in frames
    edits.data[:20, :20] = 1 if depth.mean() > 2.5 else 6  # a frame far from the computed one
    commands.execute_command(f"{PLUGIN}.refuse")  # in a worker thread
    qtbot.waitUntil(lambda: "retouched" in fused.metadata["focus_stack"], timeout=10_000)
    assert np.any(fused.data[:20, :20] != before[:20, :20])


def test_stack_choices_follow_the_layer_list(make_napari_viewer, small):
    viewer = make_napari_viewer()
    widget = FocusStackWidget(viewer)
    assert widget.stack.value is None
    viewer.add_image(small[0], rgb=True, name="single frame")
    layer = viewer.add_image(small, rgb=True, name="moss")
    assert widget.stack.value is layer and widget.stack.choices == (layer,)
    assert widget.z_axis.native.itemText(0) == "axis 0: 6 planes"
    viewer.layers.remove(layer)
    assert widget.stack.value is None


@pytest.mark.parametrize("kind", ["single", "batch"])
def test_gpu_choice_is_disabled_with_the_reason(make_napari_viewer, qtbot, monkeypatch, kind):
    from napari_focus_stack._napari import controls
    from napari_focus_stack._napari.batch_widget import FocusStackBatchWidget

    reason = "GPU requested but CuPy is not installed"
    monkeypatch.setattr(controls, "gpu_status", lambda: (False, reason))
    widget = {"single": FocusStackWidget, "batch": FocusStackBatchWidget}[kind](make_napari_viewer())
    gpu_item = controls.gpu_item(widget.device)
    qtbot.waitUntil(lambda: "CuPy" in gpu_item.toolTip(), timeout=5_000)
    assert not gpu_item.isEnabled() and "CuPy" in widget.device.tooltip


def test_surface_texture_lines_up_with_the_fused_image(make_napari_viewer, small):
    viewer = make_napari_viewer(show=True)
    marked = small.copy()
    marked[:, :16, :24] = (255, 0, 0)  # an asymmetric mark: a flip would move it
    viewer.add_image(marked, rgb=True, name="moss", scale=(0.1, 1.0, 1.0))
    widget = docked_widget(viewer)
    widget.run()
    widget.show_surface()
    views = {}
    for name in ("moss fused", "moss depth surface"):
        for layer in viewer.layers:
            layer.visible = layer.name == name
        viewer.reset_view()
        views[name] = viewer.screenshot(canvas_only=True)[..., :3].astype(float)
    fused, surface = views.values()
    assert np.corrcoef(fused.ravel(), surface.ravel())[0, 1] > 0.9


def test_errors_in_the_worker_become_notifications(make_napari_viewer, qtbot):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((1, 8, 8), np.uint8), name="one frame")
    widget = FocusStackWidget(viewer)
    seen = len(notification_manager.records)
    widget.run()
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=10_000)
    messages = [str(n.message) for n in notification_manager.records[seen:]]
    assert any("at least 2 frames" in m for m in messages), messages
    assert [layer.name for layer in viewer.layers] == ["one frame"]
    assert widget.status.value.startswith("Failed:")


def test_aligned_frames_layer_and_alignment_in_metadata(make_napari_viewer):
    moving = simulate_stack((160, 192), 6, rgb=True, breathing=0.06, drift=5, seed=4).frames
    viewer = make_napari_viewer()
    viewer.add_image(moving, rgb=True, name="rail")
    widget = docked_widget(viewer)
    widget.show_aligned.value = True
    widget.run()
    aligned = viewer.layers["rail aligned"]
    assert aligned.data.shape == moving.shape and aligned.data.dtype == np.uint8
    np.testing.assert_array_equal(aligned.data[3], moving[3])  # the reference frame stays put
    assert not np.array_equal(aligned.data[0], moving[0])
    run = run_of(viewer.layers["rail fused"])
    assert run.alignments[0][1]["mode"] == "similarity" and run.alignments[0][1]["failed"] == []


def test_gpu_run_from_the_widget_thread(make_napari_viewer, qtbot, fake_gpu):
    # the worker thread creates the backend and runs the GPU path (CuPy stand-in)
    state = fake_gpu()
    sim = simulate_stack((200, 240), 6, rgb=True, noise=0.01, drift=4, breathing=0.02, seed=7)
    viewer = make_napari_viewer()
    viewer.add_image(sim.frames, rgb=True, name="moving")
    widget = FocusStackWidget(viewer)
    qtbot.waitUntil(lambda: gpu_item(widget.device).isEnabled(), timeout=5_000)
    widget.device.value = "gpu"
    widget.run()
    qtbot.waitUntil(lambda: "moving fused" in [layer.name for layer in viewer.layers], timeout=20_000)
    fused = viewer.layers["moving fused"]
    assert fused.metadata["focus_stack"]["device"] == "gpu:0"
    assert len(state.downloads) == 3  # the fused image, depth and confidence; nothing else came back
    expected = focus_stack(sim.frames, device="cpu").fused
    difference = np.abs(np.asarray(fused.data).astype(int) - expected)
    assert difference.max() <= 1 and (difference > 0).mean() < 0.005


def test_mark_unfocused_shows_nan_depth_and_keeps_retouching(make_napari_viewer):
    viewer = make_napari_viewer()
    sim = simulate_stack((96, 160), 8, texture="noise", depth="slope", noise=0.0, seed=4)
    frames = sim.frames.copy()
    frames[:, :, 96:] = 128  # a flat card: no focus signal
    viewer.add_image(frames, name="s")
    widget = docked_widget(viewer)
    widget.mark_unfocused.value = True
    widget.run()
    depth = viewer.layers["s depth"]
    assert np.isnan(depth.data[:, 130:]).all() and np.isfinite(depth.data[:, :80]).all()
    run = run_of(depth)
    assert np.isfinite(run.depth).all()  # retouching works on the full depth map
    assert depth.metadata["focus_stack"]["mark_unfocused"] is True


def test_result_metadata_is_plain_json_and_the_run_lives_with_its_layers(make_napari_viewer, small):
    import gc
    import json

    from napari_focus_stack._napari import actions

    viewer = make_napari_viewer()
    viewer.add_image(small, rgb=True, name="moss")
    widget = docked_widget(viewer)
    widget.run()
    names = ["moss fused", "moss depth", "moss confidence"]
    run = run_of(viewer.layers["moss depth"])
    assert run is not None and all(run_of(viewer.layers[name]) is run for name in names)
    for name in names:
        metadata = viewer.layers[name].metadata
        assert json.loads(json.dumps(metadata)) == metadata  # what a writer may save: plain facts only
        assert metadata["focus_stack"]["source_layer"] == "moss"
    widget.edit_depth()
    assert run_of(viewer.layers["moss depth edits"]) is run
    for name in [*names, "moss depth edits"]:
        viewer.layers.remove(name)
    del run
    gc.collect()
    assert not any(r.source_name == "moss" for r in actions._RUNS.values())  # freed with its last layer
