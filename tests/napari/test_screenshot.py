"""The whole window with the widget docked and run, grabbed as an image: what
docs/make_screenshot.py makes the README's picture from."""

import pytest
from qtpy.QtGui import QImage

pytestmark = pytest.mark.napari

PLUGIN = "napari-focus-stack"


def test_window_screenshot(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1440, 900)
    viewer.open_sample(PLUGIN, "synthetic_focal_stack")
    viewer.dims.set_current_step(0, 2)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Focus Stack")
    widget.synchronous = True
    widget.run()
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.shape = (2, 2)
    qtbot.wait(200)
    viewer.reset_view()
    qtbot.wait(200)
    path = tmp_path / "napari_widget.png"
    assert viewer.window._qt_window.grab().save(str(path))
    image = QImage(str(path))
    assert image.width() >= 1200 and image.height() >= 700
    assert "synthetic stack fused" in viewer.layers and "synthetic stack depth" in viewer.layers
