"""Marking pixels with no usable focus signal: NaN depth, never a silent guess."""

import numpy as np
import tifffile

from napari_focus_stack import focus_stack
from napari_focus_stack.cli import main
from napari_focus_stack.engine.depth import unfocused_mask
from napari_focus_stack.synthetic import simulate_stack


def half_flat_stack():
    """A textured surface on the left, a flat grey card on the right (nothing to focus on)."""
    sim = simulate_stack((96, 160), 8, texture="noise", depth="slope", noise=0.0, seed=4)
    frames = sim.frames.copy()
    frames[:, :, 96:] = 128
    return frames


def test_mark_unfocused_returns_nan_only_where_there_is_no_signal():
    frames = half_flat_stack()
    plain = focus_stack(frames, align="none", device="cpu")
    marked = focus_stack(frames, align="none", device="cpu", mark_unfocused=True)
    np.testing.assert_array_equal(marked.fused, plain.fused)  # the image does not change
    assert np.isnan(marked.depth[:, 130:]).all()  # the flat card, far from any texture
    assert np.isfinite(marked.depth[:, :80]).all()  # the textured part keeps every pixel
    finite = np.isfinite(marked.depth)
    np.testing.assert_array_equal(marked.depth[finite], plain.depth[finite])
    assert 0.15 < marked.metadata["unfocused"] < 0.4  # the card, less the reach of the texture beside it
    assert np.isfinite(plain.depth).all() and "unfocused" not in plain.metadata


def test_a_textured_stack_keeps_every_depth():
    sim = simulate_stack((96, 96), 8, texture="mixed", depth="dome", noise=0.01, seed=5)
    marked = focus_stack(sim.frames, align="none", device="cpu", mark_unfocused=True)
    assert np.isfinite(marked.depth).all() and marked.metadata["unfocused"] == 0.0


def test_mask_works_on_stacked_planes():
    confidence = np.zeros((2, 3, 40, 40), np.float32)
    confidence[1, 2, :, :20] = 0.8
    mask = unfocused_mask(confidence)
    assert mask.shape == confidence.shape and mask[0].all()
    assert not mask[1, 2, :, :20].any() and mask[1, 2, :, 39].all()


def test_cli_writes_nan_depth_with_mark_unfocused(tmp_path, capsys):
    frames = half_flat_stack()
    source = tmp_path / "stack.tif"
    tifffile.imwrite(source, frames)
    depth = tmp_path / "depth.tif"
    code = main([str(source), "-o", str(tmp_path / "fused.tif"), "--depth", str(depth), "--mark-unfocused", "-q"])
    assert code == 0 and capsys.readouterr().err == ""
    written = tifffile.imread(depth)
    assert written.dtype == np.float32 and np.isnan(written[:, 130:]).all() and np.isfinite(written[:, :80]).all()
