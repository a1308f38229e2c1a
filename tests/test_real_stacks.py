"""Real stacks from ../shared/data/stacks: run when present, skipped when not.

No ground truth exists for them, so the checks are physical: the fused image
is sharper than every frame, keeps the input's dtype and range, and the depth
map follows the stack's known geometry.
"""

import numpy as np

from napari_focus_stack import focus_stack
from napari_focus_stack.engine.backend import get_backend
from napari_focus_stack.engine.focus import laplacian_energy
from napari_focus_stack.io import open_stack
from napari_focus_stack.synthetic import depth_speckle

BE = get_backend("cpu")


def sharpness(image):
    """Mean Laplacian energy of the luminance, in [0, 1] units."""
    gray = BE.luminance(np.asarray(image)) / np.float32(np.iinfo(image.dtype).max)
    return float(laplacian_energy(gray, 2, BE).mean())


def test_pcb_is_aligned_and_sharper_than_every_frame(real_stack):
    frames = open_stack(real_stack("pcb_aimonen"))
    assert frames.shape == (7, 1536, 2048, 3)
    result = focus_stack(frames, device="cpu")
    # focus breathing: the magnification changes monotonically, ~3.6 % in all
    scales = np.sqrt(np.abs(np.linalg.det(result.transforms[:, :2, :2])))
    assert np.all(np.diff(scales) < 0) and 0.02 < scales[0] - scales[-1] < 0.06
    assert result.metadata["alignment"]["failed"] == []
    assert result.fused.shape == (1536, 2048, 3) and result.fused.dtype == np.uint8
    best_frame = max(sharpness(frames[k]) for k in range(len(frames)))
    assert sharpness(result.fused) > 1.3 * best_frame
    # the depth map uses the whole stack: the board is tilted through focus
    used = np.unique(np.round(result.depth[result.confidence > 0.5]))
    assert len(used) >= 5
    # clean: no speckle (issue 11's target is <= 1 %; 0.17 % measured) and, marked,
    # a textured scene keeps a depth nearly everywhere (>= 90 % asked)
    assert depth_speckle(result.depth) <= 0.01
    assert np.isfinite(result.mark_unfocused().depth).mean() >= 0.9


def test_mito_lightsheet_sixteen_bit(real_stack):
    frames = open_stack(real_stack("mito_lightsheet_16bit"))
    assert frames.dtype == np.uint16 and len(frames) == 34
    stack_max = max(int(frames[k].max()) for k in range(len(frames)))
    sharpest_frame = max(sharpness(frames[k]) for k in range(len(frames)))
    mean_frame = np.mean([frames[k] for k in range(len(frames))], axis=0).astype(np.uint16)
    for method in ("depthmap", "weighted"):
        result = focus_stack(frames, radius=4, smoothing=2, method=method, device="cpu")
        assert result.fused.dtype == np.uint16 and result.fused.shape == frames.shape[1:]
        assert 255 < result.fused.max() <= stack_max
        # noisy light-sheet data: pixel noise counts as "sharpness" here, and the
        # weighted mean averages noise away, so it is held to the mean of frames
        floor = sharpest_frame if method == "depthmap" else 2 * sharpness(mean_frame)
        assert sharpness(result.fused) > floor


def test_mito_lightsheet_depth_is_clean_where_it_is_given(real_stack):
    """Sparse mitochondria on a dark background: the background has no focus signal to guess from."""
    result = focus_stack(real_stack("mito_lightsheet_16bit"), device="cpu")
    assert depth_speckle(result.depth) < 0.02  # 48.8 % before the confidence regularisation; 1.3 % now
    marked = result.mark_unfocused()
    assert 0.5 < marked.metadata["unfocused"] < 0.95  # the dark background (81 % measured)


def test_confocal_nuclei_depth_in_range(real_stack):
    frames = open_stack(real_stack("cells3d_nuclei_confocal_16bit"))
    result = focus_stack(frames, device="cpu")
    assert result.depth.shape == (256, 256)
    assert result.depth.min() >= 0 and result.depth.max() <= len(frames) - 1
    assert result.fused.dtype == np.uint16
    # optical sections change content, not place: neither warped nor re-exposed
    alignment = result.metadata["alignment"]
    assert np.array_equal(result.transforms, np.tile(np.eye(3), (len(frames), 1, 1)))
    assert alignment["gains"] is None and alignment["offsets"] is None
    assert alignment["messages"][-1] == "exposure left as it is: the frames do not show the same content"
    # 17.65 % with the 69 px of motion the chained steps made up, 10.27 % without it, 2.73 % with the
    # focus curve's width capping the regularisation weights, 0.68 % with the scores' geometric mean
    # (issue 11's target: 1 %)
    assert depth_speckle(result.depth) <= 0.01
