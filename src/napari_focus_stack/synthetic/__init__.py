"""Focal-stack simulator with ground truth, for tests, benchmarks and sample data.

Three image-formation models, each with the truth it was made from (the
all-in-focus image, the depth, and where it applies the occlusion boundaries):

* :mod:`.surface` -- a textured surface seen through a lens focused at
  successive depths: each pixel blurred by a Gaussian that grows with the
  distance of its own depth from the focus (no occlusion). Optional per-frame
  motion (jitter, drift, rotation, breathing), exposure gain and noise.
* :mod:`.layered` -- layers (colour, coverage, depth) composited far to near
  in every slice, each blurred by its own defocus with a Gaussian or pillbox
  point spread function: a defocused foreground spills over its background.
* :mod:`.fluorescence` -- a transparent volume of emitters; every slice sums
  every emitter's blurred light plus haze, with shot noise, dim 16-bit.

:mod:`.scenes` draws families of stacks from these models for the quality
suite (``benchmarks/quality.py``). What the models share: :mod:`.textures`
(the all-in-focus truth), :mod:`.depths` (depth maps of the surface model),
:mod:`.camera` (per-frame motion, gain, noise, quantisation); :mod:`.metrics`
scores a result against the truth (PSNR, SSIM, depth RMSE, speckle).

>>> from napari_focus_stack.synthetic import simulate_stack, psnr
>>> sim = simulate_stack(shape=(64, 64), n_slices=6, depth="slope")
>>> sim.frames.shape, sim.frames.dtype.name
((6, 64, 64), 'uint8')
"""

from .depths import KINDS_DEPTH, make_depth
from .fluorescence import render_channels, render_fluorescence
from .layered import PSFS, Layer, render_layers
from .metrics import depth_rmse, depth_speckle, psnr, ssim, textured_mask
from .scenes import SCENE_FAMILIES, describe_family, simulate_scene
from .surface import SimulatedStack, simulate_stack, write_sample_stack
from .textures import KINDS_TEXTURE, make_texture

__all__ = [
    "KINDS_DEPTH",
    "KINDS_TEXTURE",
    "PSFS",
    "SCENE_FAMILIES",
    "Layer",
    "SimulatedStack",
    "depth_rmse",
    "depth_speckle",
    "describe_family",
    "make_depth",
    "make_texture",
    "psnr",
    "render_channels",
    "render_fluorescence",
    "render_layers",
    "simulate_scene",
    "simulate_stack",
    "ssim",
    "textured_mask",
    "write_sample_stack",
]
