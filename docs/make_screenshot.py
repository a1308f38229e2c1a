"""Make the README's screenshot, docs/images/napari_widget.png: the Focus Stack widget
docked in napari, run on the sample stack, results in a 2 x 2 grid.

    xvfb-run -a python docs/make_screenshot.py [--out PATH]

Needs napari with a Qt binding (the ``[all]`` extra) and a display (Xvfb will do).
"""

import argparse
import time
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

PLUGIN = "napari-focus-stack"
OUT = Path(__file__).resolve().parent / "images" / "napari_widget.png"


def settle(seconds):
    """Let Qt lay out and paint for ``seconds``."""
    app = QApplication.instance()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def screenshot(path, size=(1440, 900)):
    viewer = napari.Viewer(show=True)
    try:
        viewer.window._qt_window.resize(*size)
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
        settle(0.3)  # let the canvas take its size before fitting the view
        viewer.reset_view()
        settle(0.3)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not viewer.window._qt_window.grab().save(str(path)):
            raise SystemExit(f"could not write {path}")
    finally:
        viewer.close()
    print("wrote", path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT), help=f"where to write it (default {OUT})")
    screenshot(parser.parse_args(argv).out)


if __name__ == "__main__":
    main()
