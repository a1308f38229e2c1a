"""Screenshot of the whole window, for the README.

Always written to a temporary folder; with ``NFS_WRITE_SCREENSHOT=1`` it also
replaces ``docs/images/napari_widget.png``.
"""

import os
import shutil
from pathlib import Path

import pytest
from qtpy.QtGui import QImage

pytestmark = pytest.mark.napari

PLUGIN = "napari-focus-stack"
README_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "napari_widget.png"


def test_window_screenshot(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.window._qt_window.resize(1440, 900)
    viewer.open_sample(PLUGIN, "synthetic_focal_stack")
    viewer.dims.set_current_step(0, 2)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Focus Stack")
    widget.synchronous = True
    widget.run()
    viewer.layers["synthetic stack confidence"].visible = True
    viewer.canvas.grid.enabled = True
    viewer.canvas.grid.shape = (2, 2)
    viewer.canvas.grid.spacing = 0.05
    viewer.layers.selection.active = viewer.layers["synthetic stack fused"]
    qtbot.wait(200)  # let the canvas take its size before fitting the view
    viewer.reset_view()
    qtbot.wait(200)

    path = tmp_path / "napari_widget.png"
    viewer.window._qt_window.grab().save(str(path))
    image = QImage(str(path))
    assert image.width() >= 1200 and image.height() >= 700
    if os.environ.get("NFS_WRITE_SCREENSHOT") == "1":
        README_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, README_IMAGE)
