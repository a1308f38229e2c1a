"""Quality of the default on small stacks of the layered and fluorescence families.

The thresholds are the default's measured quality (2026-12-01) less a
margin. Where thin structures and dense edges decide (bristles, clutter,
fibres), the default must also beat the wide window of the previous default
(radius 8, smoothing 4), which lost to the peers there (issue 11;
benchmarks/quality.py runs every family with the peers).
"""

import numpy as np
import pytest

from napari_focus_stack import focus_stack
from napari_focus_stack.synthetic import depth_rmse, psnr, simulate_scene, ssim, textured_mask

# family: (least PSNR dB, least SSIM, beats the wide window by at least dB)
CASES = {
    "bristles": (29.0, 0.90, 1.5),
    "occlusion-pillbox": (31.8, 0.94, None),
    "clutter": (30.5, 0.92, 0.8),
    "fibres-brightfield": (38.5, 0.95, 1.5),
    "fluorescence-filaments": (29.5, 0.76, None),
}


@pytest.mark.parametrize("family", list(CASES))
def test_default_quality_on_scene_families(family):
    sim = simulate_scene(family, shape=(160, 160), n_slices=10, seed=3)
    result = focus_stack(sim.frames, align="none", device="cpu")
    wide = focus_stack(sim.frames, align="none", device="cpu", radius=8, smoothing=4)
    least_psnr, least_ssim, margin = CASES[family]
    quality = psnr(result.fused, sim.texture, sim.data_range), ssim(result.fused, sim.texture, sim.data_range)
    assert quality[0] >= least_psnr and quality[1] >= least_ssim, quality
    if margin is not None:
        assert quality[0] >= psnr(wide.fused, sim.texture, sim.data_range) + margin
    mask = sim.mask if sim.mask is not None else textured_mask(sim.texture)
    assert np.isfinite(depth_rmse(result.depth, sim.depth, mask))
