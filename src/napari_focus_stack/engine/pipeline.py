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

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .align import WarpJob
from .align.policy import MIN_ALIGN_SIDE, align_frames, aligned_like, alignment_summary  # noqa: F401  (aligned_like: callers re-fuse through the pipeline)
from .depth import REGULARISE_SIGMA, SliceSelector, fill_unsupported_depth, regularise_depth
from .dtypes import full_scale, to_dtype
from .focus import LOG_FLOOR_FACTOR, FocusMeasure, depth_sigma, selection_scores
from .frames import CroppedFrames, device_warped, uncovered_mask
from .fuse import FUSIONS, FrameStep, fuse_frames_at_depth
from .noise import NoiseProbe
from .result import StackCancelled, StackResult
from .schedule import plan_within, relabel, run_tiles
from .steps import drain  # noqa: F401  (callers drain runs through the pipeline)
from .tiling import plan_refuse_tiles, plan_tiles, tile_bytes


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


def finish_in_bands(selector, fuse_rows, dtype, be, floor=0.0, weights=False):
    """Depth, confidence, regularisation weights and fused image, computed band by band.

    ``fuse_rows(rows, depth)`` gives the fused float32 pixels of a band;
    without it, the fused image is None. The weights
    (:meth:`SliceSelector.regularisation_weights`) are None unless asked for.
    """
    xp = be.xp
    shape = selector.best.shape
    depth = xp.empty(shape, dtype=xp.float32)
    confidence = xp.empty(shape, dtype=xp.float32)
    capped = xp.empty(shape, dtype=xp.float32) if weights else None
    fused = None
    step = be.memory.rows_per_band(shape[1], band_rows(shape[0]))
    for start in range(0, shape[0], step):
        rows = slice(start, start + step)
        depth[rows], confidence[rows] = selector.finish(rows, floor)
        if weights:
            capped[rows] = selector.regularisation_weights(confidence[rows], rows)
        if fuse_rows is None:
            continue
        pixels = fuse_rows(rows, depth[rows])
        if fused is None:
            fused = xp.empty(shape + pixels.shape[2:], dtype=dtype)
        fused[rows] = to_dtype(pixels, dtype, be)
    return depth, confidence, capped, fused


def stack_tile(frames, params, be, out_shape, cancel, timings, noise=None, maps=True):
    """Stream ``frames`` (one tile of them) through the stages on ``be``.

    Generator: yields the index of each frame done; returns ``(fused, depth,
    confidence)`` as host arrays. ``timings`` (a dict) accumulates seconds
    per stage. ``noise`` is the run's :class:`NoiseProbe` (whole frames'
    noise, the same for every tile); without it no noise floor is used.
    ``out_shape`` is the whole image's output shape (a fusion's pyramid
    depth follows it, so every tile has the same). Without ``maps``, depth
    and confidence are None, and not selected at all for a fusion that does
    not need them (the fused image is the same).
    """
    measure = FocusMeasure(params.radius, params.smoothing, be)
    fusion = FUSIONS[params.method].for_image(be, out_shape)
    selector = SliceSelector(be) if maps or fusion.needs_selection else None
    to_unit = be.xp.float32(1.0 / full_scale(frames.dtype))
    stop = cancel.is_set if cancel is not None else (lambda: False)
    clock = time.perf_counter()
    gray_buffer = None  # one grey image for every frame: a fresh one per frame costs its page faults
    # depth is selected on smoother scores (focus.depth_sigma), written over
    # the grey image, which the focus measure no longer needs (the selector
    # keeps what it needs of them as ratios)
    sigma = depth_sigma(params.smoothing)
    for k, raw in enumerate(prefetched(device_warped(frames, be), stop)):
        _check_cancel(cancel)
        t0 = time.perf_counter()
        frame = prepare_frame(raw, params.scale_factor, be)
        gray = gray_buffer = be.luminance(frame, out=gray_buffer)
        gray *= to_unit
        score = measure(gray)
        uncovered = uncovered_mask(frames, k, params.scale_factor, be, raw)
        if uncovered is not None:  # aligned frames: only real pixels compete
            be.xp.copyto(score, be.xp.float32(0), where=uncovered)
        selection = took_best = took_above = None
        if selector is not None:
            # one floor for every frame (the first's): a per-frame one would make
            # a textureless pixel prefer the noisiest frame
            floor = 0.0 if noise is None else LOG_FLOOR_FACTOR * noise.floor(0, params.radius, params.scale_factor)
            selection = selection_scores(score, sigma, floor, be, work=measure.scratch, out=gray)
            if uncovered is not None:
                be.xp.copyto(selection, be.xp.float32(0), where=uncovered)
        t1 = time.perf_counter()
        if selector is not None:
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
    gray_buffer = None
    measure.release()
    if selector is None:  # the fused image alone
        fusion.release_frames()
        fused, depth, confidence = fusion.finish(frames.dtype), None, None
    else:
        # what only the frame loop needed (a depth-map fusion reads the index, not the masks)
        selector.previous = selector.took_best = selector.took_above = None
        # confidence counts the stack's noise energy as no detail (engine/noise.py)
        floor = 0.0
        if noise is not None:
            floor = max(noise.floor(k, params.radius, params.scale_factor) for k in range(len(frames)))
        fusion.release_frames()
        regularise = maps and fusion.regularises_depth  # depth-map fusion follows its depth exactly
        depth, confidence, weights, fused = finish_in_bands(
            selector, fusion.band_finisher(selector), frames.dtype, be, floor, weights=regularise
        )
        if fused is None:  # the pyramids are collapsed whole
            selector = None  # its per-pixel state, freed first
            fused = fusion.finish(frames.dtype)
        if not maps:  # selected for the fusion's sake only
            depth = confidence = None
        elif regularise:
            depth = regularise_depth(depth, weights, be, REGULARISE_SIGMA)
        weights = None
    outputs = tuple(None if a is None else be.to_host(a) for a in (fused, depth, confidence))
    timings["finish"] = timings.get("finish", 0.0) + time.perf_counter() - clock
    return outputs


def run_pipeline(frames, params, be, *, metadata=None, cancel=None, max_memory=None, maps=True):
    """Focus-stack ``frames`` (a sequence of ``(Y, X[, C])`` arrays, with ``dtype`` and ``shape``).

    ``be`` is a backend or a list of backends (several GPUs: tiles are spread
    over them). Images whose working memory exceeds ``max_memory`` bytes
    (default: the backend's :meth:`default_budget`) are processed in
    overlapping tiles with the same result. An out-of-memory error is retried
    with tiles half the size. ``maps=False``: the caller needs the fused
    image only; the result's depth and confidence are None, and a method
    whose fusion does not read the depth (weighted, pyramid) skips its
    selection, regularisation and fill (about a quarter of the work), with
    the same fused image.

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
    device_warp = alignment is not None and backends[0].warps_on_device
    plan = backends[0].memory.tile_plan(device_warp)
    if len(backends) > 1:  # one stack on several devices: at least a tile for each
        whole = plan_tiles(frames.shape[1:3], params, 2**62, channels, frames.dtype.itemsize, **plan)
        one_pass = tile_bytes(whole, params, channels, frames.dtype.itemsize, **plan)
        budget = min(budget, one_pass // len(backends))
    run_tile = lambda part, tile_be, stop, tile_timings: stack_tile(
        part, params, tile_be, out_shape, stop, tile_timings, noise, maps
    )
    fused, depth, confidence, tiles = yield from run_tiles(
        run_tile, frames, params, backends, budget, plan, cancel, timings, maps
    )
    if depth is not None and FUSIONS[params.method].regularises_depth:
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


def run_refuse(frames, depth, scale_factor, be, *, cancel=None, max_memory=None):
    """Re-fuse ``frames`` along an edited ``depth`` map; yields Progress, returns the image.

    Pass frames through :func:`aligned_like` to re-fuse an aligned result.
    Images whose working memory exceeds ``max_memory`` (default: the
    backend's :meth:`default_budget`) are re-fused in tiles, with the same
    result.
    """
    n = len(frames)
    channels = frames.shape[3] if len(frames.shape) == 4 else 1
    tiles = plan_within(
        lambda usable: plan_refuse_tiles(
            frames.shape[1:3],
            scale_factor,
            usable,
            channels,
            frames.dtype.itemsize,
            frames_in_budget=be.memory.frames_in_budget,
        ),
        max_memory or be.default_budget(),
        be.memory.budget_share,
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
            image = yield from relabel(steps, i * n, len(tiles) * n, "re-fusing")
            _check_cancel(cancel)
            image = be.to_host(to_dtype(image, frames.dtype, be))
            if len(tiles) == 1:
                return image
            if fused is None:
                fused = np.empty(tuple(depth.shape[:2]) + image.shape[2:], dtype=image.dtype)
            fused[tile.write] = image[tile.keep]
    return fused
