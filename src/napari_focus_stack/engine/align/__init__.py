"""Frame alignment: estimate per-frame motion and exposure, and undo them.

Real stacks move: a lens that refocuses magnifies (focus breathing), stages
drift, hand-held and rail shots shift and rotate, and exposure and white
balance flicker. Alignment runs in two passes.

1. **Estimate**, on reduced, defocus-robust images: :func:`registration_image`
   turns each frame into a band-passed luminance image of about a megapixel;
   :func:`estimate_transforms` registers neighbouring frames (which look
   alike) with :func:`estimate_pair`, checks every step against its
   neighbours, and composes the steps to the reference frame;
   :func:`estimate_gains` matches each frame's exposure to the reference.
2. **Apply**, at full resolution, frame by frame: :func:`warp_frame`
   resamples a frame into the reference geometry and corrects its exposure;
   :func:`coverage_mask` says where the frame had real pixels.

Transforms follow the simulator's convention
(:func:`napari_focus_stack.synthetic.simulate_stack`): ``transforms[k]`` is a
3x3 matrix that maps reference pixel coordinates ``(x, y, 1)`` (x = column,
y = row, pixel centres at integers) to frame ``k``'s; the reference frame's
is the identity.

>>> from napari_focus_stack.synthetic import simulate_stack
>>> sim = simulate_stack((128, 160), 5, texture="noise", drift=6, seed=1)
>>> images = [registration_image(frame) for frame in sim.frames]
>>> result = estimate_transforms(images, "translation")
>>> error = result.transforms[:, :2, 2] - sim.transforms[:, :2, 2]
>>> bool(abs(error).max() < 0.2), result.failed
(True, [])

The work is split by concern: :mod:`.images` (registration images and
pyramids), :mod:`.pairwise` (two images), :mod:`.estimate` (the whole
stack), :mod:`.check` (how much of an estimate the frames support: defocus
alone makes registration report motion), :mod:`.exposure` (gains and
offsets), :mod:`.frames` (a stack seen through its alignment), :mod:`.policy`
(what is estimated and applied); the warping and coverage geometry they share is
:mod:`napari_focus_stack.engine.warp`.
"""

from ..result import ALIGN_MODES
from ..warp import (
    HOST_WARP_BAND_PIXELS,
    coverage_mask,
    outside_frame,
    rescale_transforms,
    source_coordinates,
    warp_frame,
)
from .estimate import ALIGN_THREADS, AlignmentResult, estimate_transforms, in_parallel
from .exposure import GAIN_MAX_SIDE, estimate_gains, shrink
from .frames import AlignedFrames, WarpJob
from .images import REGISTRATION_MAX_SIDE, reduction_factor, registration_image
from .pairwise import estimate_pair

__all__ = [
    "ALIGN_MODES",
    "ALIGN_THREADS",
    "GAIN_MAX_SIDE",
    "HOST_WARP_BAND_PIXELS",
    "REGISTRATION_MAX_SIDE",
    "AlignedFrames",
    "AlignmentResult",
    "WarpJob",
    "coverage_mask",
    "estimate_gains",
    "estimate_pair",
    "estimate_transforms",
    "in_parallel",
    "outside_frame",
    "reduction_factor",
    "registration_image",
    "rescale_transforms",
    "shrink",
    "source_coordinates",
    "warp_frame",
]
