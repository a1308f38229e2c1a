"""Frame sequences: the protocol every stage reads frames through, and its adapters.

A stack of frames is anything with ``shape`` ``(Z, Y, X[, C])``, ``dtype``,
``len()`` and ``[k]`` giving frame ``k`` as an array (:class:`Frames`):
:class:`~napari_focus_stack.io.FrameSequence` from files or arrays,
:class:`~.align.AlignedFrames` (warped as they are read), and the adapters
here: :class:`CroppedFrames` (one tile), :class:`WarpJobs` (aligned frames
handed to a device to warp) and :class:`PinnedFrames` (host pixels staged in
page-locked memory for a GPU). Aligned sequences also have ``is_aligned``,
``coverage(k)`` and ``warp_job(k)``; :func:`is_aligned` and
:func:`coverage_of` are the one place those optional members are asked for.
"""

import dataclasses
from typing import Protocol, runtime_checkable

import numpy as np

from .align import WarpJob


@runtime_checkable
class Frames(Protocol):
    """What the stages need of a stack of frames."""

    shape: tuple
    dtype: np.dtype

    def __len__(self) -> int: ...

    def __getitem__(self, k): ...


def is_aligned(frames):
    """Whether ``frames`` are aligned frames (warped as read, with coverage and warp jobs)."""
    return getattr(frames, "is_aligned", False)


def coverage_of(frames, k):
    """Where frame ``k`` has real pixels (aligned frames), or None for everywhere."""
    coverage = getattr(frames, "coverage", None)
    return None if coverage is None else coverage(k)


def uncovered_mask(frames, k, scale_factor, be, raw=None):
    """Where frame ``k`` of ``frames`` has no real pixels (on the device, scaled), or None.

    For a frame warped on the device (``raw`` a :class:`WarpJob`), the mask
    is made there too.
    """
    if isinstance(raw, WarpJob):
        uncovered = raw.uncovered(be)
    else:
        mask = coverage_of(frames, k)
        uncovered = None if mask is None else be.asarray(~mask)
    if uncovered is None:
        return None
    if scale_factor > 1:
        uncovered = be.xp.repeat(be.xp.repeat(uncovered, scale_factor, axis=0), scale_factor, axis=1)
    return uncovered


class WarpJobs:
    """A sequence of :class:`WarpJob` for frames that the device warps."""

    def __init__(self, frames):
        self.frames = frames
        self.dtype, self.shape = frames.dtype, frames.shape

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, k):
        return self.frames.warp_job(k)


def device_warped(frames, be):
    """``frames``, or their :class:`WarpJob` where ``be`` warps aligned frames on its device.

    On a GPU, each frame's pixels are also copied into page-locked memory
    (:class:`PinnedFrames`), on the read-ahead thread that fetches them.
    """
    if be.warps_on_device and is_aligned(frames):
        frames = WarpJobs(frames)
    return PinnedFrames(frames, be) if be.stages_in_pinned_memory else frames


class PinnedFrames:
    """Frames (or :class:`WarpJob`) with their host pixels staged in page-locked memory.

    Two buffers alternate: :func:`~.pipeline.prefetched` stages frame ``k + 1`` while
    frame ``k`` goes up, and asks for ``k + 2`` (which reuses ``k``'s buffer)
    only after ``k`` was uploaded and the upload waited for.
    """

    def __init__(self, frames, be):
        self.frames, self.be = frames, be
        self.dtype, self.shape = frames.dtype, frames.shape
        self._buffers = {}

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, k):
        item = self.frames[k]
        if isinstance(item, WarpJob):
            return dataclasses.replace(item, raw=self.be.stage(item.raw, k % 2, self._buffers))
        return self.be.stage(item, k % 2, self._buffers)


class CroppedFrames:
    """The frames of a sequence restricted to a ``(rows, cols)`` region."""

    def __init__(self, frames, region):
        self.frames, self.region = frames, region
        self.dtype = frames.dtype
        rows, cols = region
        self.shape = (len(frames), rows.stop - rows.start, cols.stop - cols.start) + tuple(frames.shape[3:])

    def __len__(self):
        return len(self.frames)

    @property
    def is_aligned(self):
        """Whether these are :class:`AlignedFrames`: then only this part is resampled."""
        return is_aligned(self.frames)

    def __getitem__(self, i):
        if self.is_aligned:
            return self.frames.warp_region(i, self.region)
        return np.ascontiguousarray(self.frames[i][self.region])

    def warp_job(self, k):
        """This part of aligned frame ``k``, to be warped on a device."""
        return self.frames.warp_job(k, self.region)

    def coverage(self, k):
        if self.is_aligned:
            return self.frames.coverage(k, self.region)
        mask = coverage_of(self.frames, k)
        return None if mask is None else mask[self.region]
