"""Alignment policy: estimating a stack's alignment on reduced frames, and which corrections are worth applying.

:func:`align_frames` reads every frame once at reduced size (a few threads),
estimates the transforms and exposure, and returns the frames seen through
them (:class:`~.frames.AlignedFrames`); motion and exposure changes too small
to matter are dropped (:func:`negligible_as_none`). :func:`aligned_like`
applies a finished run's alignment again (re-fusing, the napari layers).
"""

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..result import Progress, StackCancelled
from .estimate import estimate_transforms
from .exposure import GAIN_MAX_SIDE, estimate_gains, shrink
from .frames import AlignedFrames
from .images import REGISTRATION_MAX_SIDE, registration_image


def _check_cancel(cancel):
    if cancel is not None and cancel.is_set():
        raise StackCancelled()


def align_frames(frames, params, cancel):
    """Estimate the stack's alignment on reduced frames; yields Progress.

    Returns the :class:`AlignmentResult` and the frames seen through it
    (:class:`AlignedFrames`, warped as they are read).
    """
    n = len(frames)
    if params.reference is not None and params.reference >= n:
        raise ValueError(f"reference frame {params.reference} is not one of the {n} frames (0 to {n - 1})")

    # Kept per frame: its registration image (long side <= 1024 px) and a
    # small copy for exposure (<= 256 px); not the frame itself. Frames are
    # read and reduced on a few threads (each holds one whole frame at most).
    def reduce(k):
        reduced = frames.reduced(k, REGISTRATION_MAX_SIDE)
        return registration_image(reduced), shrink(reduced, GAIN_MAX_SIDE)

    images, small = [], []
    with ThreadPoolExecutor(min(READ_THREADS, n), thread_name_prefix="focus-stack-reduce") as pool:
        pending = [pool.submit(reduce, k) for k in range(n)]
        try:
            for k, future in enumerate(pending):
                _check_cancel(cancel)
                image, tiny = future.result()
                images.append(image)
                small.append(tiny)
                yield Progress("aligning", k + 1, n)
        finally:
            for future in pending:
                future.cancel()
    _check_cancel(cancel)
    full_shape = tuple(frames.shape[1:3])
    alignment = estimate_transforms(images, params.align, params.reference, full_shape=full_shape)
    del images
    if alignment.agreement is not None and not alignment.agreement.supported:
        # Frames that do not show the same content (optical sections) cannot
        # be compared for exposure either: their brightness differs by content.
        gains, offsets = np.ones(n), np.zeros(n)
        alignment.messages.append("exposure left as it is: the frames do not show the same content")
    else:
        gains, offsets = estimate_gains(small, alignment.transforms, alignment.reference, full_shape=full_shape)
    return alignment, AlignedFrames(frames, *negligible_as_none(alignment, gains, offsets, full_shape))


#: Threads reading and reducing frames for alignment: few, since each may
#: hold a whole decoded frame.
READ_THREADS = max(1, min(4, os.cpu_count() or 1))

#: Below this (largest corner displacement over the stack, in px) frames are
#: used as they are: resampling would blur them more than the motion does,
#: and defocus itself shifts features by up to about a pixel, which
#: registration then reports as motion (docs/ALGORITHMS.md).
MIN_MOTION_PX = 1.5
#: Images with a shorter side than this are not aligned: too little content
#: for a trustworthy estimate (tens of pixels of error were seen below it).
MIN_ALIGN_SIDE = 128
#: Exposure changes below this (relative) are left uncorrected.
MIN_GAIN_CHANGE = 0.005


def negligible_as_none(alignment, gains, offsets, shape):
    """Transforms, gains and offsets to apply, with negligible corrections dropped."""
    transforms = alignment.transforms
    if max_corner_motion(transforms, shape) < MIN_MOTION_PX:
        if np.any(transforms != np.eye(3)):  # not already left unaligned, with its reason
            alignment.messages.append(f"motion below {MIN_MOTION_PX:g} px: frames used as they are")
        transforms = np.broadcast_to(np.eye(3), transforms.shape)
    gains, offsets = np.asarray(gains, float), np.asarray(offsets, float)
    if np.abs(gains - 1).max() < MIN_GAIN_CHANGE and np.abs(offsets).max() < 0.5:
        gains = offsets = [None] * len(transforms)
    return transforms, gains, offsets


def max_corner_motion(transforms, shape):
    """Largest distance (px) any transform moves an image corner."""
    height, width = shape
    corners = np.array([[0, width - 1, 0, width - 1], [0, 0, height - 1, height - 1], [1, 1, 1, 1]], float)
    moved = transforms @ corners - corners  # (Z, 3, 4)
    return float(np.max(np.hypot(moved[:, 0], moved[:, 1])))


def alignment_summary(alignment, aligned):
    """What alignment found, JSON-friendly, for metadata and saved files."""
    return {
        "mode": alignment.mode,
        "reference": alignment.reference,
        "failed": list(alignment.failed),
        "messages": list(alignment.messages),
        "gains": None if aligned.gains[0] is None else np.asarray(aligned.gains, float).tolist(),
        "offsets": None if aligned.offsets[0] is None else np.asarray(aligned.offsets, float).tolist(),
    }


def aligned_like(frames, transforms, alignment=None):
    """``frames`` seen through a run's ``transforms`` and exposure corrections.

    ``transforms`` and ``alignment`` are a :class:`StackResult`'s
    ``transforms`` and ``metadata["alignment"]``; without transforms the
    frames are returned as they are.
    """
    if transforms is None:
        return frames
    n = len(frames)
    gains = (alignment or {}).get("gains") or [None] * n
    offsets = (alignment or {}).get("offsets") or [None] * n
    return AlignedFrames(frames, np.asarray(transforms), gains, offsets)
