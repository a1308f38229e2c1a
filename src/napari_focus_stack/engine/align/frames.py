"""A stack seen through its alignment: frames warped into the reference geometry when read."""

import math
import time
from dataclasses import dataclass

import numpy as np

from ..dtypes import to_dtype
from ..warp import full_region, outside_or_none, region_corners, warp_frame


class AlignedFrames:
    """Frames resampled into the reference frame's geometry, exposure corrected.

    A frame sequence like the one it wraps (``len``, indexing, ``dtype``,
    ``shape``); frames are warped when read, so the pipeline's read-ahead
    thread does the warping while the previous frame is measured.
    ``warp_seconds`` adds up the time spent warping.
    """

    #: Marks frames that are resampled when read (see :func:`napari_focus_stack.engine.frames.device_warped`).
    is_aligned = True

    def __init__(self, frames, transforms, gains, offsets):
        self.frames = frames
        self.transforms, self.gains, self.offsets = transforms, gains, offsets
        self.dtype, self.shape = frames.dtype, tuple(frames.shape)
        self.warp_seconds = 0.0

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, k):
        return self.warp_region(k, None)

    def warp_region(self, k, region):
        """Frame ``k`` warped on the host; only the ``(rows, cols)`` part of the output if given.

        What a tile reads: the frame is decoded whole (a JPEG cannot be
        decoded in parts) but only the tile's part is resampled, with the
        same pixels as the whole frame's.
        """
        frame = self.frames[k]
        started = time.perf_counter()
        # bicubic: bilinear resampling costs ~1.8 dB of fused PSNR on a moving
        # simulated stack, bicubic under 0.1 dB (tests/engine/test_pipeline.py)
        frame = warp_frame(
            frame,
            self.transforms[k],
            self.shape[1:],
            self.gains[k],
            self.offsets[k],
            interpolation="cubic",
            region=region,
        )
        self.warp_seconds += time.perf_counter() - started
        return frame

    def warp_job(self, k, region=None):
        """Frame ``k`` (the part that ``region`` needs), to be warped on a device.

        ``region`` is ``(rows, cols)`` slices of the output; the job holds
        only the source pixels those output pixels' bicubic taps reach, so
        a tile uploads its part of the frame, not the whole frame.
        """
        frame = self.frames[k]
        height, width = self.shape[1:3]
        rows, cols = region if region is not None else full_region((height, width))
        transform = np.asarray(self.transforms[k], dtype=np.float64)
        gain, offset = self.gains[k], self.offsets[k]
        if np.array_equal(transform, np.eye(3)):
            part = np.ascontiguousarray(frame[rows, cols])
            return WarpJob(part, None, rows, cols, (0, 0), (height, width), gain, offset)
        sx, sy = region_corners(transform, rows, cols)
        # Keys' cubic reaches from floor(x) - 1 to floor(x) + 2; one more on
        # each side for the float32 coordinates' rounding
        x_lo, x_hi = (int(np.clip(v, 0, width - 1)) for v in (math.floor(sx.min()) - 2, math.floor(sx.max()) + 3))
        y_lo, y_hi = (int(np.clip(v, 0, height - 1)) for v in (math.floor(sy.min()) - 2, math.floor(sy.max()) + 3))
        crop = np.ascontiguousarray(frame[y_lo : y_hi + 1, x_lo : x_hi + 1])
        return WarpJob(crop, transform, rows, cols, (x_lo, y_lo), (height, width), gain, offset)

    def coverage(self, k, region=None):
        """Where frame ``k`` has real pixels: a bool mask (of ``region`` if given), or None for everywhere."""
        rows, cols = region if region is not None else full_region(self.shape[1:3])
        outside = outside_or_none(self.transforms[k], self.shape[1:3], rows, cols)
        return None if outside is None or not outside.any() else ~outside

    def partial_coverage(self):
        """Pixels that some frame does not cover (bool ``(Y, X)``), or None when all frames cover all."""
        partial = None
        for k in range(len(self)):
            mask = self.coverage(k)
            if mask is not None:
                partial = ~mask if partial is None else partial | ~mask
        return partial


@dataclass
class WarpJob:
    """Part of a frame, and how to resample it into part of the reference geometry.

    Made on the host (the read-ahead thread crops the decoded frame), done on
    a device by :meth:`apply`: the raw pixels go up in their own dtype and
    are warped, rounded and exposure-corrected there, as
    :meth:`AlignedFrames.warp_region` does on the host (see
    tests/engine/test_gpu.py for how closely they agree).
    """

    #: Raw source pixels (host), ``(Y, X[, C])``: the part of the frame the warp reaches.
    raw: np.ndarray
    #: Output pixel -> frame pixel (3x3), or None when no resampling is needed.
    transform: np.ndarray
    #: The output pixels to make.
    rows: slice
    cols: slice
    #: ``(x, y)`` of ``raw``'s first pixel in the frame.
    origin: tuple
    #: ``(Y, X)`` of the whole frame.
    frame_shape: tuple
    gain: object
    offset: object

    def apply(self, be):
        """The output frame on ``be``'s device, in ``raw``'s dtype."""
        frame = be.asarray(self.raw)
        if self.transform is not None:
            warped = be.warp_cubic(frame, self.transform, self.rows, self.cols, self.origin)
            frame = to_dtype(warped, frame.dtype, be)
        if self.gain is None and self.offset is None:
            return frame
        channels = 1 if frame.ndim == 2 else frame.shape[2]
        gain = np.broadcast_to(np.asarray(1.0 if self.gain is None else self.gain, float), (channels,))
        offset = np.broadcast_to(np.asarray(0.0 if self.offset is None else self.offset, float), (channels,))
        corrected = frame.astype(be.xp.float32)
        planes = [corrected] if frame.ndim == 2 else [corrected[..., c] for c in range(channels)]  # views
        for c, plane in enumerate(planes):
            plane *= be.xp.float32(1 / gain[c])
            plane += be.xp.float32(-offset[c] / gain[c])
        return to_dtype(corrected, frame.dtype, be)

    def uncovered(self, be):
        """Where the output has no real pixels (bool, on the device), or None when it is all covered."""
        if self.transform is None:
            return None
        return outside_or_none(self.transform, self.frame_shape, self.rows, self.cols, be.xp)
