"""Scheduling: which tiles, on which devices, and what to do when a device runs out of memory.

:func:`run_tiles` plans the tiles within the memory budget (:mod:`.tiling`),
runs them one after the other on one backend (:func:`stack_tiles`) or spread
over several devices, a thread each (:func:`stack_tiles_on_devices`), and
retries with smaller tiles after an out-of-memory error. What one tile does is
the caller's (:func:`~.pipeline.stack_tile`), passed in as ``run_tile``.
"""

import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .frames import CroppedFrames
from .result import Progress
from .steps import mapped
from .tiling import MemoryBudgetError, format_bytes, plan_tiles, tile_bytes


def plan_within(plan, budget, share):
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


class AnyOf:
    """A cancel flag that is set when any of its flags is."""

    def __init__(self, *flags):
        self.flags = [f for f in flags if f is not None]

    def is_set(self):
        return any(f.is_set() for f in self.flags)


def relabel(steps, offset, total, stage="stacking"):
    """Re-yield frame indices from ``steps`` as overall Progress; return its value."""
    return (yield from mapped(steps, lambda k: Progress(stage, offset + k + 1, total)))


def output_arrays(frames, params, maps=True):
    """Host arrays for the whole (scaled) result, filled tile by tile (without ``maps``, depth
    and confidence are None)."""
    s = params.scale_factor
    plane = (frames.shape[1] * s, frames.shape[2] * s)
    fused = np.empty(plane + tuple(frames.shape[3:]), dtype=frames.dtype)
    if not maps:
        return fused, None, None
    return fused, np.empty(plane, np.float32), np.empty(plane, np.float32)


def _put(outputs, parts, tile):
    """A tile's kept part of each output into the whole (None: an output not made)."""
    for whole, part in zip(outputs, parts):
        if whole is not None:
            whole[tile.write] = part[tile.keep]


def stack_tiles(run_tile, frames, params, be, tiles, cancel, timings, maps=True):
    """Tiles one after the other on one backend; yields Progress, returns the outputs.

    ``run_tile(frames, be, cancel, timings)`` stacks one tile's frames: a
    generator of frame indices returning ``(fused, depth, confidence)``
    (depth and confidence None without ``maps``).
    """
    n = len(frames)
    with be.device():  # the backend's GPU, whichever thread created the backend
        if len(tiles) == 1:
            return (yield from relabel(run_tile(frames, be, cancel, timings), 0, n))
        outputs = output_arrays(frames, params, maps)
        for i, tile in enumerate(tiles):
            steps = run_tile(CroppedFrames(frames, tile.read), be, cancel, timings)
            _put(outputs, (yield from relabel(steps, i * n, len(tiles) * n)), tile)
            steps = None
            be.release_memory()  # a GPU pool's cached blocks: the next tile's sizes differ
        return outputs


def stack_tiles_on_devices(run_tile, frames, params, backends, tiles, cancel, timings, maps=True):
    """Tiles spread over several devices, one thread each; yields Progress (see :func:`stack_tiles`)."""
    total = len(tiles) * len(frames)
    outputs = output_arrays(frames, params, maps)
    todo, done = queue.Queue(), queue.Queue()
    for tile in tiles:
        todo.put(tile)
    closing = threading.Event()
    stop = AnyOf(cancel, closing)

    def work(be):
        with be.device():
            while True:
                try:
                    tile = todo.get_nowait()
                except queue.Empty:
                    return
                steps = run_tile(CroppedFrames(frames, tile.read), be, stop, {})
                while True:
                    try:
                        next(steps)
                    except StopIteration as finished:
                        parts = finished.value
                        break
                    done.put(1)
                _put(outputs, parts, tile)
                steps = parts = None
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
                            raise future.exception() from None
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


def run_tiles(run_tile, frames, params, backends, budget, plan, cancel, timings, maps=True):
    """Plan tiles within ``budget`` and stack them on ``backends``; yields Progress.

    An out-of-memory error is retried with tiles half the size. Returns
    ``(fused, depth, confidence, tiles)``; without ``maps`` (``run_tile``
    makes none), depth and confidence are None.
    """
    channels = frames.shape[3] if len(frames.shape) == 4 else 1
    out_of_memory = tuple({error for b in backends for error in b.out_of_memory})
    while True:
        tiles = plan_within(
            lambda usable: plan_tiles(frames.shape[1:3], params, usable, channels, frames.dtype.itemsize, **plan),
            budget,
            backends[0].memory.budget_share,
        )
        try:
            if len(backends) == 1:
                steps = stack_tiles(run_tile, frames, params, backends[0], tiles, cancel, timings, maps)
            else:
                steps = stack_tiles_on_devices(run_tile, frames, params, backends, tiles, cancel, timings, maps)
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
    return fused, depth, confidence, tiles
