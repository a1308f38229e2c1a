"""Make the pictures in README.md from the project's own simulator.

    python docs/make_figures.py

Writes PNGs into docs/images/. Every picture is computed, so it can be made
again after the engine changes.
"""

from pathlib import Path

import cv2
import numpy as np

from napari_focus_stack import focus_stack, focus_stack_channels, simulate_stack
from napari_focus_stack.engine.result import METHODS
from napari_focus_stack.synthetic import render_channels

OUT = Path(__file__).resolve().parent / "images"
PANEL = 256


def labelled(image, text):
    """An RGB uint8 panel of PANEL x PANEL with ``text`` written on it."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    panel = cv2.resize(image, (PANEL, PANEL), interpolation=cv2.INTER_AREA).copy()
    cv2.rectangle(panel, (0, 0), (PANEL, 22), (0, 0, 0), thickness=-1)
    cv2.putText(panel, text, (6, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return panel


def coloured_depth(depth, n_slices):
    """Depth in slices as an RGB viridis image over the stack's range."""
    scaled = np.clip(depth / (n_slices - 1) * 255, 0, 255).astype(np.uint8)
    return cv2.applyColorMap(scaled, cv2.COLORMAP_VIRIDIS)[..., ::-1]


def composite(nuclei, actin, limits):
    """Two fluorescence channels as cyan and magenta, each over its display range ``limits``."""
    (low0, high0), (low1, high1) = limits
    a = np.clip((nuclei.astype(np.float32) - low0) / (high0 - low0), 0, 1)
    b = np.clip((actin.astype(np.float32) - low1) / (high1 - low1), 0, 1)
    rgb = np.stack([b, a, np.clip(a + b, 0, 1)], axis=-1)
    return (rgb * 255).astype(np.uint8)


def depth_with_holes(depth, n_slices):
    """Coloured depth, grey where it is NaN (hidden: no usable focus signal)."""
    image = coloured_depth(np.nan_to_num(depth), n_slices)
    image[np.isnan(depth)] = 96
    return image


def fluorescence_figure(n=12):
    """Two fluorescence channels fused along one depth map (README, 'For microscopists')."""
    channels, _, _ = render_channels((384, 384), n, seed=3)
    limits = [tuple(np.percentile(c, (1, 99.8))) for c in channels]
    shared = focus_stack_channels(channels, mark_unfocused=True, device="cpu")
    nuclei_only = focus_stack(channels[0], mark_unfocused=True, device="cpu")
    save_row(
        "fluorescence.png",
        [
            labelled(composite(channels[0][2], channels[1][2], limits), "frame 3 of 12"),
            labelled(composite(channels[0][9], channels[1][9], limits), "frame 10 of 12"),
            labelled(composite(shared.fused[0], shared.fused[1], limits), "fused, one depth"),
            labelled(depth_with_holes(shared.depth, n), "depth: both channels"),
            labelled(depth_with_holes(nuclei_only.depth, n), "depth: nuclei only"),
        ],
    )


def geometric_figure():
    """Depth selected on arithmetic and on geometric means of the scores (README, depth maps).

    "Before" is the same engine with the selection's geometric mean replaced
    by the plain Gaussian of the scores it had until 2026-12-01.
    """
    from unittest import mock

    from napari_focus_stack.engine import pipeline
    from napari_focus_stack.io import open_stack
    from napari_focus_stack.synthetic import depth_rmse, depth_speckle, simulate_scene

    def arithmetic(score, sigma, floor, be, *, work=None, out=None):
        return be.gaussian(score, sigma, out=out)

    def both(frames):
        with mock.patch.object(pipeline, "selection_scores", arithmetic):
            before = focus_stack(frames, align="none", device="cpu")
        return before, focus_stack(frames, align="none", device="cpu")

    n = 14
    fibres = simulate_scene("fibres-brightfield", (384, 384), n, seed=0)
    before, after = both(fibres.frames)
    panels = [labelled(coloured_depth(fibres.depth, n), "fibres: true depth")]
    for name, run in (("before", before), ("now", after)):
        rmse = depth_rmse(run.depth, fibres.depth, fibres.mask)
        panels.append(labelled(coloured_depth(run.depth, n), f"{name}: RMSE {rmse:.2f} sl"))
    cells = Path(__file__).resolve().parents[2] / "shared" / "data" / "stacks" / "cells3d_nuclei_confocal_16bit"
    if cells.is_dir():  # a real stack, read in place when present
        frames = open_stack(str(cells))
        stack = np.stack([frames[k] for k in range(len(frames))])
        before, after = both(stack)
        fused = after.fused.astype(np.float32)
        low, high = np.percentile(fused, (1, 99.8))
        panels.append(labelled((np.clip((fused - low) / (high - low), 0, 1) * 255).astype(np.uint8), "cells3d fused"))
        for name, run in (("before", before), ("now", after)):
            panels.append(
                labelled(coloured_depth(run.depth, len(frames)), f"{name}: speckle {depth_speckle(run.depth):.2%}")
            )
    save_row("depth_geometric.png", panels)


def save_row(name, panels):
    path = OUT / name
    gap = np.full((PANEL, 4, 3), 255, np.uint8)
    row = [p for panel in panels for p in (panel, gap)][:-1]
    cv2.imwrite(str(path), np.hstack(row)[..., ::-1])
    print("wrote", path)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    n = 12
    sim = simulate_stack((512, 512), n, texture="mixed", depth="dome", rgb=True, noise=0.01, seed=1)
    result = focus_stack(sim.frames, device="cpu")
    save_row(
        "overview.png",
        [
            labelled(sim.frames[1], "frame 2 of 12"),
            labelled(sim.frames[9], "frame 10 of 12"),
            labelled(result.fused, "fused"),
            labelled(coloured_depth(result.depth, n), "depth (slices)"),
            labelled((result.confidence * 255).astype(np.uint8), "confidence"),
        ],
    )

    steps = simulate_stack((384, 384), n, texture="cells", depth="steps", rgb=True, noise=0.02, seed=4)
    save_row(
        "radius.png",
        [labelled(coloured_depth(steps.depth, n), "true depth")]
        + [
            labelled(coloured_depth(focus_stack(steps.frames, radius=r, smoothing=2).depth, n), f"radius {r}")
            for r in (2, 8, 16)
        ],
    )
    save_row(
        "smoothing.png",
        [labelled(coloured_depth(steps.depth, n), "true depth")]
        + [
            labelled(coloured_depth(focus_stack(steps.frames, radius=4, smoothing=s).depth, n), f"smoothing {s}")
            for s in (1, 4, 10)
        ],
    )
    crop = (slice(96, 224), slice(96, 224))
    save_row(
        "methods.png",
        [labelled(steps.texture[crop], "truth")]
        + [labelled(focus_stack(steps.frames, method=m).fused[crop], m) for m in METHODS],
    )
    fluorescence_figure()
    geometric_figure()


if __name__ == "__main__":
    main()
