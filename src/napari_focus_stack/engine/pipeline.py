"""Streams frames through the stages: prepare -> measure focus -> select -> fuse.

:func:`run_pipeline` is a generator: it yields a :class:`Progress` after every
frame and returns the :class:`StackResult`. Callers that want a plain function
drain it (:func:`napari_focus_stack.focus_stack`); the napari widget hands it
to a worker thread; the command line feeds a progress bar. Closing the
generator (or a cancel flag, checked between frames) stops the run.

Frames are decoded one ahead on a second thread while the current one is
measured, so decoding and computing overlap on two cores.
"""

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .depth import SliceSelector
from .focus import FocusMeasure
from .fuse import DepthMapFusion, PyramidFusion, fuse_frames_at_depth, to_dtype
from .result import Progress, StackCancelled, StackResult


def value_range(dtype) -> float:
    """Full-scale value of ``dtype``: 255 for uint8, 65535 for uint16, 1 for floats."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def prepare_frame(raw, scale_factor, be):
    """Frame on the device, up-sampled by ``scale_factor``, in the input's dtype.

    Integer frames stay integers (up-sampled values are rounded back), which
    keeps memory small and makes every path see the same pixels.
    """
    frame = be.asarray(raw)
    if scale_factor == 1:
        return frame
    upsampled = be.resize(frame.astype(be.xp.float32), scale_factor)
    return to_dtype(upsampled, frame.dtype, be)


def prefetched(frames, stop):
    """Iterate ``frames[i]`` with the next frame decoded on a background thread."""
    n = len(frames)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="focus-stack-read") as pool:
        pending = pool.submit(frames.__getitem__, 0)
        try:
            for i in range(n):
                frame = pending.result()
                if i + 1 < n and not stop():
                    pending = pool.submit(frames.__getitem__, i + 1)
                yield frame
        finally:
            pending.cancel()


def _check_cancel(cancel):
    if cancel is not None and cancel.is_set():
        raise StackCancelled("focus stacking was cancelled")


#: Rows finished at a time: per-pixel work on bands keeps temporaries small
#: and in cache.
BAND_ROWS = 256


def finish_depthmap(selector, fusion, dtype, be):
    """Depth, confidence and the depth-map fused image, computed band by band."""
    xp = be.xp
    shape = selector.best.shape
    depth = xp.empty(shape, dtype=xp.float32)
    confidence = xp.empty(shape, dtype=xp.float32)
    fused = xp.empty(fusion.best.shape, dtype=dtype)
    for start in range(0, shape[0], BAND_ROWS):
        rows = slice(start, start + BAND_ROWS)
        depth[rows], confidence[rows] = selector.finish(rows)
        pixels = fusion.finish(depth[rows], selector.index[rows], selector.count, rows)
        fused[rows] = to_dtype(pixels, dtype, be)
    return depth, confidence, fused


def run_pipeline(frames, params, be, *, metadata=None, cancel=None):
    """Focus-stack ``frames`` (a sequence of ``(Y, X[, C])`` arrays).

    Yields a :class:`Progress` per frame; returns a :class:`StackResult`.
    ``cancel`` is anything with ``is_set()`` (a ``threading.Event``).
    """
    n = len(frames)
    selector = SliceSelector(be)
    measure = FocusMeasure(params.radius, params.smoothing, be)
    fusion = DepthMapFusion(be) if params.method == "depthmap" else PyramidFusion(be)
    to_unit = be.xp.float32(1.0 / value_range(frames.dtype))
    timings = {"read": 0.0, "focus": 0.0, "select": 0.0, "fuse": 0.0}
    stop = cancel.is_set if cancel is not None else (lambda: False)
    clock = time.perf_counter()
    for k, raw in enumerate(prefetched(frames, stop)):
        _check_cancel(cancel)
        t0 = time.perf_counter()
        frame = prepare_frame(raw, params.scale_factor, be)
        gray = be.luminance(frame)
        gray *= to_unit
        score = measure(gray)
        t1 = time.perf_counter()
        took_best, took_above = selector.update(score)
        t2 = time.perf_counter()
        if params.method == "depthmap":
            fusion.update(frame, took_best, took_above)
        else:
            fusion.update(frame)
        del frame, gray, score, took_best, took_above
        clock, t3 = time.perf_counter(), clock
        for stage, seconds in (("read", t0 - t3), ("focus", t1 - t0), ("select", t2 - t1), ("fuse", clock - t2)):
            timings[stage] += seconds
        yield Progress("stacking", k + 1, n)
    _check_cancel(cancel)
    # what only the frame loop needed, freed before the outputs are allocated
    measure.release()
    selector.previous = None
    if params.method == "depthmap":
        fusion.previous = None
        depth, confidence, fused = finish_depthmap(selector, fusion, frames.dtype, be)
    else:
        depth, confidence = selector.finish()
        fused = to_dtype(fusion.finish(), frames.dtype, be)
    result = StackResult(
        fused=be.to_host(fused),
        depth=be.to_host(depth),
        confidence=be.to_host(confidence),
        params=params,
        device=be.name,
        metadata={**(metadata or {}), "n_frames": n},
        timings=timings,
    )
    timings["finish"] = time.perf_counter() - clock
    return result


def run_refuse(frames, depth, scale_factor, be, *, cancel=None):
    """Re-fuse ``frames`` along an edited ``depth`` map; yields Progress, returns the image."""
    n = len(frames)
    stop = cancel.is_set if cancel is not None else (lambda: False)
    prepared = (prepare_frame(raw, scale_factor, be) for raw in prefetched(frames, stop))
    steps = fuse_frames_at_depth(prepared, n, be.asarray(depth).astype(be.xp.float32), be)
    while True:
        try:
            k = next(steps)
        except StopIteration as done:
            return be.to_host(to_dtype(done.value, frames.dtype, be))
        _check_cancel(cancel)
        yield Progress("re-fusing", k + 1, n)
