"""Alignment policy: estimating a stack's alignment on reduced frames, and which corrections are worth applying.

:func:`align_frames` walks the stack at reduced size (a few frames at a
time, :func:`~.estimate.iter_estimate_transforms`), estimates the transforms
and exposure, and returns the frames seen through
them (:class:`~.frames.AlignedFrames`); motion and exposure changes too small
to matter are dropped (:func:`negligible_as_none`). :func:`aligned_like`
applies a finished run's alignment again (re-fusing, the napari layers).
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ..result import Progress, StackCancelled
from ..steps import mapped
from .check import MIN_STEADY_EXPLAINED, correlation, explained_share, min_explained, steady_steps
from .estimate import _MIN_QUALITY, AlignmentResult, in_parallel, iter_estimate_transforms, register_neighbours
from .exposure import GAIN_MAX_SIDE, estimate_gains, shrink
from .frames import AlignedFrames
from .images import REGISTRATION_MAX_SIDE, _pyramid, registration_image
from .pairwise import _level_margin


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
    full_shape = tuple(frames.shape[1:3])
    if n >= SAMPLE_MIN_FRAMES:
        still = looks_still(frames, params.align, cancel)
        if still is not None:  # exposure only, from small copies: far cheaper than registering every pair
            return (yield from _still_stack(frames, params, still, full_shape, cancel))

    # Read as the estimate walks the stack (a few frames at a time); kept
    # per frame is a small copy for exposure (<= 256 px), not the frame.
    reduced = ReducedFrames(frames)
    steps = iter_estimate_transforms(reduced, params.align, params.reference, full_shape=full_shape, cancel=cancel)
    alignment = yield from mapped(steps, lambda k: Progress("aligning", k + 1, n))
    if alignment.agreement is not None and not alignment.agreement.supported:
        # Frames that do not show the same content (optical sections) cannot
        # be compared for exposure either: their brightness differs by content.
        gains, offsets = np.ones(n), np.zeros(n)
        alignment.messages.append("exposure left as it is: the frames do not show the same content")
    else:
        gains, offsets = estimate_gains(reduced.small, alignment.transforms, alignment.reference, full_shape=full_shape)
    return alignment, AlignedFrames(frames, *negligible_as_none(alignment, gains, offsets, full_shape))


class ReducedFrames:
    """A stack's registration images, each made when asked for from the frame read at reduced size.

    The first read of a frame also keeps its small copy for exposure in
    :attr:`small` (``shrink(..., GAIN_MAX_SIDE)``): exposure is estimated
    once the transforms are known, without reading the frames again.
    """

    def __init__(self, frames):
        self.frames = frames
        self.small = None  # (Z, y, x[, C]), in one block: see iter_estimate_transforms
        self._read = np.zeros(len(frames), bool)
        self._lock = threading.Lock()

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, k):
        reduced = self.frames.reduced(k, REGISTRATION_MAX_SIDE)
        if not self._read[k]:
            small = shrink(reduced, GAIN_MAX_SIDE)
            with self._lock:
                if self.small is None:
                    self.small = np.empty((len(self.frames), *small.shape), small.dtype)
                self.small[k], self._read[k] = small, True
        return registration_image(reduced)


#: Threads reading and reducing frames for alignment: few, since each may
#: hold a whole decoded frame.
READ_THREADS = max(1, min(4, os.cpu_count() or 1))
#: Stacks of at least this many frames are first checked for motion on
#: :data:`SAMPLE_PAIRS` pairs of neighbours spread over the stack.
SAMPLE_MIN_FRAMES = 24
SAMPLE_PAIRS = 8


def looks_still(frames, mode, cancel=None):
    """Whether a sample of neighbouring pairs shows no motion worth estimating.

    :data:`SAMPLE_PAIRS` pairs spread over the stack are registered as
    :func:`estimate_transforms` registers neighbours, and judged as it
    judges a whole stack: the stack counts as still when every pair
    registered and their motion explains less than
    :func:`~.check.min_explained` of their differences, or when its steady
    part explains too little of what the rest leaves and the rest too little
    of the differences (the steady part of the sampled steps is fitted as
    :func:`~.check.steady_steps`: the steps of the whole estimate's
    :func:`~.check.steady_part`). Motion present everywhere
    (breathing, drift, jitter) shows in any sample, so the other pairs need
    not be registered; motion confined to a few frames may be missed.

    Returns
    -------
    str or None
        The message saying so, or None when the stack must be estimated whole.
    """
    n = len(frames)
    starts = np.unique(np.linspace(0, n - 2, SAMPLE_PAIRS).round().astype(int))

    def pair(k):
        _check_cancel(cancel)
        fixed, moving = (registration_image(frames.reduced(j, REGISTRATION_MAX_SIDE)) for j in (k, k + 1))
        step = register_neighbours(_pyramid(fixed), _pyramid(moving), mode, _level_margin(fixed.shape, 0))
        # kept for the steady-part check, in half precision: 16 images at once
        return (fixed.astype(np.float16), moving.astype(np.float16), *step)

    pairs = in_parallel(pair, starts, threads=READ_THREADS)
    quality = np.array([q for _, _, _, q, _ in pairs])
    if not np.all(quality >= _MIN_QUALITY):
        return None
    shape = pairs[0][0].shape
    margin = _level_margin(shape, 0)
    every = np.ones(len(pairs), bool)
    unaligned = np.array([q0 for *_, q0 in pairs])
    share, needed = explained_share(quality, unaligned, every), min_explained(shape)
    if share < needed:
        return (
            f"motion checked on {len(pairs)} pairs of neighbours: it explains {share:.1%} of their differences "
            f"(less than {needed:.1%}): taken as defocus; frames used as they are"
        )
    matrices = [matrix for _, _, matrix, _, _ in pairs]
    rest = [matrix @ np.linalg.inv(steady) for matrix, steady in zip(matrices, steady_steps(starts, matrices, n))]
    without = np.array([correlation(a, b, r, margin) for (a, b, *_), r in zip(pairs, rest)])
    steady_share = explained_share(quality, without, every)
    rest_share = explained_share(without, unaligned, every)
    if steady_share < min_explained(shape, MIN_STEADY_EXPLAINED) and rest_share < needed:
        return (
            f"motion checked on {len(pairs)} pairs of neighbours: its steady part explains {steady_share:.1%} of "
            f"what the rest leaves and the rest {rest_share:.1%} of their differences: taken as defocus; "
            "frames used as they are"
        )
    return None


def _read_reduced(frames, reduce, cancel):
    """``[reduce(k) for k in range(len(frames))]`` on a few threads (each holds one whole frame at most); yields Progress."""
    n = len(frames)
    results = []
    with ThreadPoolExecutor(min(READ_THREADS, n), thread_name_prefix="focus-stack-reduce") as pool:
        pending = [pool.submit(reduce, k) for k in range(n)]
        try:
            for k, future in enumerate(pending):
                _check_cancel(cancel)
                results.append(future.result())
                yield Progress("aligning", k + 1, n)
        finally:
            for future in pending:
                future.cancel()
    return results


def _still_stack(frames, params, message, full_shape, cancel):
    """The alignment of a stack :func:`looks_still` found still: identity, and exposure from small copies."""
    n = len(frames)
    small = yield from _read_reduced(frames, lambda k: shrink(frames.reduced(k, GAIN_MAX_SIDE), GAIN_MAX_SIDE), cancel)
    reference = n // 2 if params.reference is None else int(params.reference)
    identity = np.tile(np.eye(3), (n, 1, 1))
    alignment = AlignmentResult(identity, reference, params.align, np.full(n - 1, np.nan), messages=[message])
    gains, offsets = estimate_gains(small, identity, reference, full_shape=full_shape)
    return alignment, AlignedFrames(frames, *negligible_as_none(alignment, gains, offsets, full_shape))


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
