"""The Focus Stack batch dock widget: grouping, preview, run, failures, resume and cancel."""

import numpy as np
import pytest
import tifffile
from PIL import Image

from napari_focus_stack._napari import batch_view, batch_widget
from napari_focus_stack._napari.batch_widget import (
    MAX_SEPARATE_LAYERS,
    FocusStackBatchWidget,
    batch_layers,
    find_stacks,
)
from napari_focus_stack.batch import BatchOptions
from napari_focus_stack.distributed import process_one
from napari_focus_stack.engine.result import DEFAULTS
from napari_focus_stack.io import save_image
from napari_focus_stack.synthetic import simulate_stack

pytestmark = pytest.mark.napari

SHAPE = (48, 64)
N_FRAMES = 5


@pytest.fixture(scope="module")
def scenes():
    """Three small stacks: two RGB, one gray."""
    looks = [("mixed", "dome", True), ("cells", "slope", True), ("noise", "waves", False)]
    return [
        simulate_stack(SHAPE, N_FRAMES, texture=texture, depth=depth, rgb=rgb, noise=0.01, seed=seed).frames
        for seed, (texture, depth, rgb) in enumerate(looks)
    ]


def write_frames(folder, frames, pattern="z{}.png"):
    folder.mkdir(parents=True, exist_ok=True)
    return [save_image(frame, folder / pattern.format(k)) for k, frame in enumerate(frames, start=1)]


@pytest.fixture
def scans(tmp_path, scenes):
    """A folder of stacks field_1 ... field_3, and field_4 whose third frame is cut short."""
    root = tmp_path / "scans"
    for index, frames in enumerate(scenes, start=1):
        write_frames(root / f"field_{index}", frames)
    corrupt = write_frames(root / "field_4", scenes[0])[2]
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    return root


@pytest.fixture
def flat(tmp_path, scenes):
    """One folder of three stacks' frames, a_z1.png ... c_z5.png."""
    root = tmp_path / "flat"
    for name, frames in zip("abc", [scenes[0], scenes[1], scenes[0][::-1]]):
        write_frames(root, frames, pattern=f"{name}_z{{}}.png")
    return root


@pytest.fixture
def notifications(monkeypatch):
    """Warnings and errors the widget shows, as ``(kind, message)``."""
    shown = []
    for kind in ("show_warning", "show_error"):
        monkeypatch.setattr(batch_widget, kind, lambda message, kind=kind: shown.append((kind, message)))
    return shown


def docked(viewer, root, **values):
    widget = FocusStackBatchWidget(viewer)
    widget.synchronous = True
    widget.input_folder.value = root
    for name, value in values.items():
        getattr(widget, name).value = value
    return widget


def file_names(folder):
    return sorted(path.name for path in folder.iterdir())


def test_run_writes_outputs_opens_layers_and_reports_the_failed_stack(make_napari_viewer, scans, scenes, notifications):
    viewer = make_napari_viewer()
    widget = docked(viewer, scans)
    outdir = scans / "fused"
    assert widget.output_folder.value == outdir
    widget.run()
    assert file_names(outdir) == [f"field_{i}.{ext}" for i in (1, 2, 3) for ext in ("json", "tif")]
    assert [layer.name for layer in viewer.layers] == ["field_1", "field_2", "field_3"]
    for layer, frames in zip(viewer.layers, scenes):
        assert layer.data.dtype == np.uint8 and layer.data.shape == frames.shape[1:]
        assert layer.rgb == (frames.ndim == 4)
        np.testing.assert_array_equal(layer.data, tifffile.imread(outdir / f"{layer.name}.tif"))
    assert viewer.layers["field_1"].metadata["focus_stack"]["radius"] == DEFAULTS["radius"]
    [(kind, message)] = notifications
    assert kind == "show_warning" and "1 of 4 stacks failed" in message and "field_4: " in message
    assert "z3.png" in message
    assert widget.status.value == f"3 done, 0 skipped, 1 failed. Outputs in {outdir}."
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_docked_from_the_plugins_menu_preview_lists_the_stacks_and_writes_nothing(make_napari_viewer, scans):
    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-focus-stack", "Focus Stack batch")
    assert isinstance(widget, FocusStackBatchWidget)
    assert not widget.stack_size.enabled and not widget.pattern.enabled
    widget.input_folder.value = scans
    widget.synchronous = True
    widget.preview()
    assert widget.stack_list.value.splitlines() == [
        *(f"field_{i}: {N_FRAMES} frames" for i in (1, 2, 3, 4)),
        f"4 stacks, {4 * N_FRAMES} frames -> {scans / 'fused'}",
    ]
    assert widget.status.value == "4 stacks; nothing written yet."
    assert not (scans / "fused").exists() and len(viewer.layers) == 0


def test_every_n_frames_on_a_flat_folder_opens_one_stacked_layer(make_napari_viewer, flat, monkeypatch, notifications):
    monkeypatch.setattr(batch_view, "MAX_SEPARATE_LAYERS", 2)
    viewer = make_napari_viewer()
    widget = docked(viewer, flat, grouping="size", stack_size=N_FRAMES, output_folder=flat)
    assert widget.stack_size.enabled and not widget.pattern.enabled
    widget.run()  # the outputs would land among the frames
    [(kind, message)] = notifications
    assert kind == "show_error" and "holds input frames" in message
    assert file_names(flat) == sorted(f"{name}_z{k}.png" for name in "abc" for k in range(1, 6))

    widget.output_folder.value = outdir = flat.parent / "out"
    widget.format.value = "png"
    widget.run()
    assert file_names(outdir) == [f"stack_00{i}.{ext}" for i in (1, 2, 3) for ext in ("json", "png")]
    [layer] = viewer.layers
    assert layer.name == "flat fused" and layer.data.shape == (3, *SHAPE, 3)
    assert layer.metadata["stacks"] == ["stack_001", "stack_002", "stack_003"]
    np.testing.assert_array_equal(layer.data[1], np.asarray(Image.open(outdir / "stack_002.png")))
    assert widget.status.value.startswith("3 done, 0 skipped, 0 failed.")


def test_file_name_pattern_and_focus_sweeps_group_a_flat_folder(make_napari_viewer, flat):
    viewer = make_napari_viewer()
    widget = docked(viewer, flat, grouping="pattern")
    assert widget.pattern.enabled and not widget.stack_size.enabled
    widget.preview()
    assert widget.stack_list.value.splitlines()[:3] == [f"{name}: {N_FRAMES} frames" for name in "abc"]
    widget.grouping.value = "sweeps"
    widget.preview()
    assert widget.stack_list.value.splitlines()[:3] == [f"stack_00{i}: {N_FRAMES} frames" for i in (1, 2, 3)]


def test_resume_skips_the_stacks_a_first_run_finished(make_napari_viewer, scans):
    viewer = make_napari_viewer()
    widget = docked(viewer, scans, resume=True)
    widget.run()
    outdir = scans / "fused"
    written = {path: path.stat().st_mtime_ns for path in outdir.iterdir()}
    widget.preview()
    assert widget.stack_list.value.splitlines()[0] == f"field_1: {N_FRAMES} frames  (complete: skipped)"
    widget.run()
    assert widget.status.value.startswith("0 done, 3 skipped, 1 failed.")
    assert {path: path.stat().st_mtime_ns for path in outdir.iterdir()} == written
    assert [layer.name for layer in viewer.layers] == ["field_1", "field_2", "field_3"]


def test_cancel_stops_before_the_next_stack(make_napari_viewer, scans, monkeypatch):
    viewer = make_napari_viewer()
    widget = docked(viewer, scans)

    def cancelled_during(stack, outdir, options):
        widget.cancel()  # pressed while this stack is processed
        return process_one(stack, outdir, options)

    monkeypatch.setattr(batch_view, "process_one", cancelled_during)
    widget.run()
    assert file_names(scans / "fused") == ["field_1.json", "field_1.tif"]
    assert [layer.name for layer in viewer.layers] == ["field_1"]
    assert widget.status.value.startswith("Stopped after 1 of 4 stacks (1 done, 0 skipped, 0 failed)")
    assert widget.run_button.enabled and not widget.cancel_button.enabled


def test_runs_in_a_worker_thread(make_napari_viewer, qtbot, scans, notifications):
    viewer = make_napari_viewer()
    widget = docked(viewer, scans, output_folder=scans / "field_1")
    widget.synchronous = False
    widget.run()
    qtbot.waitUntil(lambda: len(notifications) == 1, timeout=10_000)
    assert "holds input frames" in notifications.pop()[1] and widget.run_button.enabled

    widget.output_folder.value = scans / "fused"
    widget.run()
    assert not widget.run_button.enabled and widget.cancel_button.enabled
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=20_000)
    assert [layer.name for layer in viewer.layers] == ["field_1", "field_2", "field_3"]
    assert widget.status.value.startswith("3 done, 0 skipped, 1 failed.")
    assert "field_4: " in notifications[0][1]

    widget.output_folder.value = outdir = scans.parent / "cancelled"
    widget.run()
    widget.cancel()  # while the stacks are being found
    qtbot.waitUntil(lambda: widget.run_button.enabled, timeout=20_000)
    assert widget.status.value.startswith("Stopped after 0 of 4 stacks"), widget.status.value
    assert file_names(outdir) == []


def test_at_most_max_result_layers_open(make_napari_viewer, scans, monkeypatch):
    monkeypatch.setattr(batch_view, "MAX_RESULT_LAYERS", 2)
    viewer = make_napari_viewer()
    widget = docked(viewer, scans)
    widget.run()
    assert [layer.name for layer in viewer.layers] == ["field_1", "field_2"]
    assert widget.status.value.endswith("; the first 2 are open.")


def test_find_stacks_skips_earlier_results_and_explains_why_it_found_none(tmp_path, scans, flat):
    stacks = find_stacks(scans, "subfolders")
    assert [stack.name for stack in stacks] == ["field_1", "field_2", "field_3", "field_4"]
    (scans / "fused").mkdir()
    assert process_one(stacks[0], scans / "fused", BatchOptions()).status == "done"
    assert find_stacks(scans, "subfolders") == stacks  # earlier results are not a stack
    with pytest.raises(ValueError, match="choose another grouping"):
        find_stacks(flat, "subfolders")
    with pytest.raises(ValueError, match=r"needs a named group \(\?P<stack>"):
        find_stacks(flat, "pattern", pattern=r".+\.png")
    with pytest.raises(ValueError, match="matches none of the 15 file names"):
        find_stacks(flat, "pattern", pattern=r"(?P<stack>.+)\.tif")
    with pytest.raises(ValueError, match="not a folder"):
        find_stacks(tmp_path / "missing", "size")


def layer_data(name, shape):
    return np.zeros(shape, np.uint8), {"name": name, "rgb": False, "metadata": {}}, "image"


def test_many_results_of_one_shape_open_as_one_stacked_layer():
    many = [layer_data(f"s{i}", (4, 5)) for i in range(MAX_SEPARATE_LAYERS + 1)]
    [(data, kwargs, layer_type)] = batch_layers(many, "scans fused")
    assert data.shape == (MAX_SEPARATE_LAYERS + 1, 4, 5) and layer_type == "image"
    assert kwargs["name"] == "scans fused" and kwargs["metadata"]["stacks"] == [f"s{i}" for i in range(len(many))]
    mixed = [*many[:-1], layer_data("odd", (4, 6))]
    names = [kwargs["name"] for _, kwargs, _ in batch_layers(mixed, "scans fused")]
    assert names == [*(f"s{i}" for i in range(MAX_SEPARATE_LAYERS)), "odd"]
    few = many[:MAX_SEPARATE_LAYERS]
    assert len(batch_layers(few, "scans fused")) == MAX_SEPARATE_LAYERS
