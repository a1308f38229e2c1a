"""Streams frames through the stages: align -> prepare -> measure focus -> select -> fuse.

Alignment is estimated first, on reduced frames (:func:`align_frames`); the
frames are then warped as they are read. Images too large for the memory
budget are processed in overlapping tiles with the same result
(:mod:`.tiling`), on one device or spread over several.

:func:`run_pipeline` is a generator: it yields a :class:`Progress` after every
frame and returns the :class:`StackResult`. Callers that want a plain function
drain it (:func:`napari_focus_stack.focus_stack`); the napari widget hands it
to a worker thread; the command line feeds a progress bar. Closing the
generator (or a cancel flag, checked between frames) stops the run.

Frames are decoded one ahead on a second thread while the current one is
measured, so decoding and computing overlap on two cores.
"""

import dataclasses
import math
import os
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .align import (
    GAIN_MAX_SIDE,
    REGISTRATION_MAX_SIDE,
    AlignedFrames,
    WarpJob,
    estimate_gains,
    estimate_transforms,
    registration_image,
    shrink,
)
from .depth import REGULARISE_SIGMA, SliceSelector, fill_unsupported_depth, regularise_depth
from .focus import FocusMeasure, depth_sigma
from .noise import NoiseProbe
from .dtypes import to_dtype
from .fuse import FUSIONS, FrameStep, fuse_frames_at_depth
from .result import Progress, StackCancelled, StackResult
from .tiling import MemoryBudgetError, format_bytes, plan_refuse_tiles, plan_tiles, tile_bytes


def _plan_within(plan, budget, share):
    """``plan(bytes)`` given ``share`` of ``budget``; a budget too small is reported in the caller's terms."""
    try:
        return plan(int(budget * share))
    except MemoryBudgetError as exc:
        if share >= 1 or exc.need is None:
            raise
        need = format_bytes(math.ceil(exc.need / share))
        raise MemoryBudgetError(
            f"a memory budget of {format_bytes(budget)} is too small for these parameters; at least {need} "
            f"is needed (on a GPU, tiles use {share:.0%} of the budget: CuPy's memory pool keeps the rest)",
            math.ceil(exc.need / share),
        ) from None


def value_range(dtype) -> float:
    """Full-scale value of ``dtype``: 255 for uint8, 65535 for uint16, 1 for floats."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def prepare_frame(raw, scale_factor, be):
    """Frame on the device, up-sampled by ``scale_factor``, in the input's dtype.

    ``raw`` is a host array, or a :class:`WarpJob` that is warped on the
    device. Integer frames stay integers (up-sampled values are rounded
    back), which keeps memory small and makes every path see the same pixels.
    """
    frame = raw.apply(be) if isinstance(raw, WarpJob) else be.asarray(raw)
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


def band_rows(height):
    """Rows finished at a time: bands keep the per-pixel temporaries small
    (about 50 bytes per pixel of a band) and in cache."""
    return max(16, min(256, height // 16))


def finish_in_bands(selector, fuse_rows, dtype, be, floor=0.0):
    """Depth, confidence and fused image, computed band by band.

    ``fuse_rows(rows, depth)`` gives the fused float32 pixels of a band;
    without it, the fused image is None.
    """
    xp = be.xp
    shape = selector.best.shape
    depth = xp.empty(shape, dtype=xp.float32)
    confidence = xp.empty(shape, dtype=xp.float32)
    fused = None
    step = be.rows_per_band(shape[1], band_rows(shape[0]))
    for start in range(0, shape[0], step):
        rows = slice(start, start + step)
        depth[rows], confidence[rows] = selector.finish(rows, floor)
        if fuse_rows is None:
            continue
        pixels = fuse_rows(rows, depth[rows])
        if fused is None:
            fused = xp.empty(shape + pixels.shape[2:], dtype=dtype)
        fused[rows] = to_dtype(pixels, dtype, be)
    return depth, confidence, fused


def stack_tile(frames, params, be, out_shape, cancel, timings, noise=None):
    """Stream ``frames`` (one tile of them) through the stages on ``be``.

    Generator: yields the index of each frame done; returns ``(fused, depth,
    confidence)`` as host arrays. ``timings`` (a dict) accumulates seconds
    per stage. ``noise`` is the run's :class:`NoiseProbe` (whole frames'
    noise, the same for every tile); without it no noise floor is used.
    ``out_shape`` is the whole image's output shape (a fusion's pyramid
    depth follows it, so every tile has the same).
    """
    selector = SliceSelector(be)
    measure = FocusMeasure(params.radius, params.smoothing, be)
    fusion = FUSIONS[params.method].for_image(be, out_shape)
    to_unit = be.xp.float32(1.0 / value_range(frames.dtype))
    stop = cancel.is_set if cancel is not None else (lambda: False)
    clock = time.perf_counter()
    gray_buffer = None  # one grey image for every frame: a fresh one per frame costs its page faults
    # depth is selected on smoother scores (focus.depth_sigma); two buffers
    # alternate, as the selector keeps the previous frame's
    sigma, select_buffers = depth_sigma(params.smoothing), [None, None]
    for k, raw in enumerate(prefetched(device_warped(frames, be), stop)):
        _check_cancel(cancel)
        t0 = time.perf_counter()
        frame = prepare_frame(raw, params.scale_factor, be)
        gray = gray_buffer = be.luminance(frame, out=gray_buffer)
        gray *= to_unit
        score = measure(gray)
        uncovered = _uncovered(frames, k, params.scale_factor, be, raw)
        if uncovered is not None:  # aligned frames: only real pixels compete
            be.xp.copyto(score, be.xp.float32(0), where=uncovered)
        selection = select_buffers[k % 2] = be.gaussian(score, sigma, out=select_buffers[k % 2])
        if uncovered is not None:
            be.xp.copyto(selection, be.xp.float32(0), where=uncovered)
        t1 = time.perf_counter()
        took_best, took_above = selector.update(selection)
        t2 = time.perf_counter()
        step = FrameStep(frame, score, took_best, took_above, uncovered)
        if noise is not None:
            step.floor = noise.floor(k, params.radius, params.scale_factor)
            step.reference = noise.reference(params.radius)
            step.borrowed = (gray, measure.scratch)  # both free until the next frame
        fusion.update(step)
        del frame, gray, score, selection, took_best, took_above, step
        clock, t3 = time.perf_counter(), clock
        for stage, seconds in (("read", t0 - t3), ("focus", t1 - t0), ("select", t2 - t1), ("fuse", clock - t2)):
            timings[stage] = timings.get(stage, 0.0) + seconds
        yield k
    _check_cancel(cancel)
    # what only the frame loop needed, freed before the outputs are allocated
    gray_buffer = select_buffers = None
    measure.release()
    selector.previous = None
    # confidence counts the stack's noise energy as no detail (engine/noise.py)
    floor = 0.0 if noise is None else max(noise.floor(k, params.radius, params.scale_factor) for k in range(len(frames)))
    fusion.release_frames()
    depth, confidence, fused = finish_in_bands(selector, fusion.band_finisher(selector), frames.dtype, be, floor)
    if fused is None:  # the pyramids are collapsed whole
        selector = None  # its per-pixel state, freed first
        fused = fusion.finish(frames.dtype)
    if fusion.regularises_depth:  # depth-map fusion follows its depth: retouching re-fuses along it exactly
        depth = regularise_depth(depth, confidence, be, REGULARISE_SIGMA)
    outputs = be.to_host(fused), be.to_host(depth), be.to_host(confidence)
    timings["finish"] = timings.get("finish", 0.0) + time.perf_counter() - clock
    return outputs


def coverage_of(frames, k):
    """Where frame ``k`` has real pixels (aligned frames), or None for everywhere."""
    coverage = getattr(frames, "coverage", None)
    return None if coverage is None else coverage(k)


def _uncovered(frames, k, scale_factor, be, raw=None):
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


class _WarpJobs:
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
    (:class:`_PinnedFrames`), on the read-ahead thread that fetches them.
    """
    if be.warps_on_device and getattr(frames, "is_aligned", False):
        frames = _WarpJobs(frames)
    return _PinnedFrames(frames, be) if be.stages_in_pinned_memory else frames


class _PinnedFrames:
    """Frames (or :class:`WarpJob`) with their host pixels staged in page-locked memory.

    Two buffers alternate: :func:`prefetched` stages frame ``k + 1`` while
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
        return getattr(self.frames, "is_aligned", False)

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


class _AnyOf:
    """A cancel flag that is set when any of its flags is."""

    def __init__(self, *flags):
        self.flags = [f for f in flags if f is not None]

    def is_set(self):
        return any(f.is_set() for f in self.flags)


def drain(steps, on_event=None):
    """Run generator ``steps`` to its end, passing what it yields to ``on_event``; return its value."""
    while True:
        try:
            event = next(steps)
        except StopIteration as done:
            return done.value
        if on_event is not None:
            on_event(event)


def _relabel(steps, offset, total, stage="stacking"):
    """Re-yield frame indices from ``steps`` as overall Progress; return its value."""
    while True:
        try:
            k = next(steps)
        except StopIteration as done:
            return done.value
        yield Progress(stage, offset + k + 1, total)


def _output_arrays(frames, params):
    """Host arrays for the whole (scaled) result, filled tile by tile."""
    s = params.scale_factor
    plane = (frames.shape[1] * s, frames.shape[2] * s)
    fused = np.empty(plane + tuple(frames.shape[3:]), dtype=frames.dtype)
    return fused, np.empty(plane, np.float32), np.empty(plane, np.float32)


def _stack_tiles(frames, params, be, tiles, out_shape, cancel, timings, noise=None):
    """Tiles one after the other on one backend; yields Progress, returns the outputs."""
    n = len(frames)
    with be.device():  # the backend's GPU, whichever thread created the backend
        if len(tiles) == 1:
            return (yield from _relabel(stack_tile(frames, params, be, out_shape, cancel, timings, noise), 0, n))
        outputs = _output_arrays(frames, params)
        for i, tile in enumerate(tiles):
            steps = stack_tile(CroppedFrames(frames, tile.read), params, be, out_shape, cancel, timings, noise)
            for whole, part in zip(outputs, (yield from _relabel(steps, i * n, len(tiles) * n))):
                whole[tile.write] = part[tile.keep]
            steps = part = None
            be.release_memory()  # a GPU pool's cached blocks: the next tile's sizes differ
        return outputs


def _stack_tiles_on_devices(frames, params, backends, tiles, out_shape, cancel, timings, noise=None):
    """Tiles spread over several devices, one thread each; yields Progress."""
    n, total = len(frames), len(tiles) * len(frames)
    outputs = _output_arrays(frames, params)
    todo, done = queue.Queue(), queue.Queue()
    for tile in tiles:
        todo.put(tile)
    closing = threading.Event()
    stop = _AnyOf(cancel, closing)

    def work(be):
        with be.device():
            while True:
                try:
                    tile = todo.get_nowait()
                except queue.Empty:
                    return
                steps = stack_tile(CroppedFrames(frames, tile.read), params, be, out_shape, stop, {}, noise)
                while True:
                    try:
                        next(steps)
                    except StopIteration as finished:
                        parts = finished.value
                        break
                    done.put(1)
                for whole, part in zip(outputs, parts):
                    whole[tile.write] = part[tile.keep]
                steps = parts = part = None
                be.release_memory()

    with ThreadPoolExecutor(len(backends), thread_name_prefix="focus-stack-device") as pool:
        futures = [pool.submit(work, be) for be in backends]
        try:
            count = 0
            while count < total:
                try:
                    count += done.get(timeout=0.1)
                except queue.Empty:
                    for future in futures:
                        if future.done() and future.exception() is not None:
                            raise future.exception()
                    if all(future.done() for future in futures) and done.empty():
                        break  # every tile is in, whatever the count said: never wait forever
                    continue
                yield Progress("stacking", count, total)
            for future in futures:
                future.result()
        finally:
            closing.set()
    del timings  # per-device stage times overlap; only the total is meaningful
    return outputs


def run_pipeline(frames, params, be, *, metadata=None, cancel=None, max_memory=None):
    """Focus-stack ``frames`` (a sequence of ``(Y, X[, C])`` arrays, with ``dtype`` and ``shape``).

    ``be`` is a backend or a list of backends (several GPUs: tiles are spread
    over them). Images whose working memory exceeds ``max_memory`` bytes
    (default: the backend's :meth:`default_budget`) are processed in
    overlapping tiles with the same result. An out-of-memory error is retried
    with tiles half the size.

    Yields a :class:`Progress` per frame (per tile); returns a :class:`StackResult`.
    ``cancel`` is anything with ``is_set()`` (a ``threading.Event``).
    """
    backends = list(be) if isinstance(be, (list, tuple)) else [be]
    n = len(frames)
    timings, started = {}, time.perf_counter()
    frames = noise = NoiseProbe(frames)  # under alignment and tiling: sees every frame whole
    alignment = None
    if params.align != "none" and min(frames.shape[1:3]) >= MIN_ALIGN_SIDE:
        alignment, frames = yield from align_frames(frames, params, cancel)
        timings["align"] = time.perf_counter() - started
    channels = frames.shape[3] if len(frames.shape) == 4 else 1
    s = params.scale_factor
    out_shape = (frames.shape[1] * s, frames.shape[2] * s)
    budget = max_memory or backends[0].default_budget()
    out_of_memory = tuple({error for b in backends for error in b.out_of_memory})
    device_warp = alignment is not None and backends[0].warps_on_device
    plan = {
        "frames_in_budget": backends[0].frames_in_budget,
        "band_pixels": backends[0].reserved_band_pixels(device_warp),
        "device_warp": device_warp,
    }
    if len(backends) > 1:  # one stack on several devices: at least a tile for each
        whole = plan_tiles(frames.shape[1:3], params, 2**62, channels, frames.dtype.itemsize, **plan)
        one_pass = tile_bytes(whole, params, channels, frames.dtype.itemsize, **plan)
        budget = min(budget, one_pass // len(backends))
    while True:
        tiles = _plan_within(
            lambda usable: plan_tiles(frames.shape[1:3], params, usable, channels, frames.dtype.itemsize, **plan),
            budget,
            backends[0].budget_share,
        )
        try:
            if len(backends) == 1:
                steps = _stack_tiles(frames, params, backends[0], tiles, out_shape, cancel, timings, noise)
            else:
                steps = _stack_tiles_on_devices(frames, params, backends, tiles, out_shape, cancel, timings, noise)
            fused, depth, confidence = yield from steps
            break
        except out_of_memory:
            pass
        # Out of memory. Here, past the except clause, the traceback and the
        # device arrays its frames held are gone, so their blocks can be freed.
        steps = None
        for b in backends:
            b.release_memory()
        # half of what the largest tile needed, so the next plan has smaller tiles
        budget = tile_bytes(tiles, params, channels, frames.dtype.itemsize, **plan) // 2
    if FUSIONS[params.method].regularises_depth:
        # on the assembled map, on the host: tiles and devices give the same depth
        clock = time.perf_counter()
        fill_unsupported_depth(depth, confidence)
        timings["fill"] = time.perf_counter() - clock
    metadata = {**(metadata or {}), "n_frames": n, "tiles": len(tiles)}
    transforms = partial = None
    if alignment is not None:
        timings["warp"] = frames.warp_seconds  # on the read-ahead thread, overlapping the rest
        metadata["alignment"] = alignment_summary(alignment, frames)
        transforms = np.array(frames.transforms)
        partial = frames.partial_coverage()
        if partial is not None and s > 1:
            partial = np.repeat(np.repeat(partial, s, axis=0), s, axis=1)
    timings["total"] = time.perf_counter() - started
    return StackResult(
        fused=fused,
        depth=depth,
        confidence=confidence,
        params=params,
        device=",".join(b.name for b in backends),
        metadata=metadata,
        transforms=transforms,
        partial_coverage=partial,
        timings=timings,
    )


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
        transforms = np.broadcast_to(np.eye(3), transforms.shape)
        alignment.messages.append(f"motion below {MIN_MOTION_PX:g} px: frames used as they are")
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


def run_refuse(frames, depth, scale_factor, be, *, cancel=None, max_memory=None):
    """Re-fuse ``frames`` along an edited ``depth`` map; yields Progress, returns the image.

    Pass frames through :func:`aligned_like` to re-fuse an aligned result.
    Images whose working memory exceeds ``max_memory`` (default: the
    backend's :meth:`default_budget`) are re-fused in tiles, with the same
    result.
    """
    n = len(frames)
    channels = frames.shape[3] if len(frames.shape) == 4 else 1
    tiles = _plan_within(
        lambda usable: plan_refuse_tiles(
            frames.shape[1:3], scale_factor, usable, channels, frames.dtype.itemsize, frames_in_budget=be.frames_in_budget
        ),
        max_memory or be.default_budget(),
        be.budget_share,
    )
    fused = None
    with be.device():
        for i, tile in enumerate(tiles):
            part = frames if len(tiles) == 1 else CroppedFrames(frames, tile.read)
            s = scale_factor
            rows, cols = tile.read
            tile_depth = depth[rows.start * s : rows.stop * s, cols.start * s : cols.stop * s]
            stop = cancel.is_set if cancel is not None else (lambda: False)
            prepared = (prepare_frame(raw, s, be) for raw in prefetched(device_warped(part, be), stop))
            steps = fuse_frames_at_depth(prepared, n, be.asarray(tile_depth).astype(be.xp.float32), be)
            image = yield from _relabel(steps, i * n, len(tiles) * n, "re-fusing")
            _check_cancel(cancel)
            image = be.to_host(to_dtype(image, frames.dtype, be))
            if len(tiles) == 1:
                return image
            if fused is None:
                fused = np.empty(tuple(depth.shape[:2]) + image.shape[2:], dtype=image.dtype)
            fused[tile.write] = image[tile.keep]
    return fused
