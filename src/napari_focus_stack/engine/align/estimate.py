"""Stack-level estimation: every frame's transform to the reference, from checked neighbour steps."""

import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..result import StackCancelled
from ..steps import drain
from ..warp import rescale_transforms
from .check import (
    MIN_STEADY_EXPLAINED,
    MIN_TREND_FRAMES,
    check_level,
    correlation,
    distant_agreement,
    distant_frames,
    explained_share,
    min_explained,
    steady_part,
)
from .images import _pyramid
from .pairwise import _check_mode, _corner_distance, _level_margin, _register

#: A step whose normalised correlation after registration is below this
#: has not registered (a blank or unrelated frame correlates near 0).
_MIN_QUALITY = 0.15
#: A step is inconsistent when its corners land farther than this from the
#: neighbouring steps' median (px of the registration image), or farther
#: than this many times the typical deviation of the steps.
_TREND_TOLERANCE_PX = 3.0
_TREND_TOLERANCE_FACTOR = 4.0
_TREND_WINDOW = 5


@dataclass
class AlignmentResult:
    """Transforms from the reference frame to every frame, and what went wrong.

    Attributes
    ----------
    transforms : ndarray of float64
        ``(Z, 3, 3)``: ``transforms[k]`` maps reference pixel coordinates
        ``(x, y, 1)`` to frame ``k``'s, in full-resolution pixels.
    reference : int
        Index of the reference frame (identity transform).
    mode : str
        One of :data:`ALIGN_MODES`.
    quality : ndarray of float64
        ``(Z - 1,)`` normalised correlation, in [-1, 1], of the
        registration images of frames ``k`` and ``k + 1`` once registered
        (about 0 for a frame that does not match its neighbour).
    failed : list of int
        Frames that could not be aligned to the reference: their transforms
        were interpolated between (or extrapolated from) their neighbours',
        or rest on a step that could not be measured (see ``messages``).
        A caller may also drop them.
    messages : list of str
        One line per problem found and what was done about it.
    agreement : Agreement or None
        How alike distant frames are with the chained motion undone and
        without (:func:`~.check.distant_agreement`); None for short stacks.
    unaligned_quality : ndarray of float64 or None
        ``(Z - 1,)`` normalised correlation of neighbours as they are, to
        compare with ``quality`` (:func:`~.check.explained_share`).
    explained : float or None
        Share of the neighbours' differences the motion explains.
    """

    transforms: np.ndarray
    reference: int
    mode: str
    quality: np.ndarray
    failed: list = field(default_factory=list)
    messages: list = field(default_factory=list)
    agreement: object = None
    unaligned_quality: np.ndarray = None
    explained: float = None


# --------------------------------------------------------------------------
# The whole stack
# --------------------------------------------------------------------------


class _Pyramids:
    """Pyramids of ``images[k]``, built on first use; the last few are kept.

    Each frame is used by the two steps around it (and rarely by a
    re-estimation), so a small cache serves a lazy sequence of any length.
    """

    def __init__(self, images, keep=4):
        self._images = images
        self._keep = keep
        self._cache = OrderedDict()
        self.shape = None  # of the first image fetched; all must have it

    def __getitem__(self, index):
        if index not in self._cache:
            self._cache[index] = self.build(index)
            if len(self._cache) > self._keep:
                self._cache.popitem(last=False)
        self._cache.move_to_end(index)
        return self._cache[index]

    def build(self, index):
        """The pyramid of ``images[index]``, not cached (safe from several threads once ``shape`` is set)."""
        image = np.asarray(self._images[index], dtype=np.float32)
        self.shape = self.shape or image.shape
        if image.ndim != 2 or image.shape != self.shape:
            raise ValueError(f"registration image {index} is {image.shape}: all must be one 2-D shape")
        return _pyramid(image)


#: Threads for alignment's independent per-pair work (OpenCV and NumPy release
#: the GIL): a lent GPU machine's 16 cores estimate a stack's steps at once.
ALIGN_THREADS = max(1, min(8, os.cpu_count() or 1))


def in_parallel(function, items, threads=ALIGN_THREADS):
    """``[function(item) for item in items]``, in order, on up to ``threads`` threads."""
    items = list(items)
    if threads <= 1 or len(items) <= 1:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="focus-stack-align") as pool:
        return list(pool.map(function, items))


def register_neighbours(fixed, moving, mode, margin):
    """The step between two neighbours' pyramids, its correlation, and their correlation as they are."""
    matrix, quality = _register(fixed, moving, mode, None)
    return matrix, quality, correlation(fixed[0], moving[0], np.eye(3), margin)


def estimate_transforms(images, mode="similarity", reference=None, *, full_shape=None):
    """Transforms from the reference frame to every frame of a stack.

    Neighbouring frames, which look alike, are registered with each other
    (:func:`estimate_pair`). Every step is checked against its neighbours:
    a step that failed (low correlation, implausible motion) or disagrees
    with the steps around it is estimated again starting from their median;
    a frame that registers with neither neighbour is bridged over (its two
    neighbours are registered with each other) and given a transform
    interpolated between theirs, or extrapolated at the ends of the stack.
    The steps are then composed to the reference frame, so a large total
    magnification is reached in small steps.

    Parameters
    ----------
    images : sequence of ndarray
        Registration images (:func:`registration_image`) in slice order,
        all of one shape. A lazy sequence works, and is how long stacks are
        aligned in bounded memory: images are fetched in order, a few at a
        time, each once for the neighbour steps and once more for the
        steady-part check of stacks that move (:func:`iter_estimate_transforms`).
    mode : str, optional
        One of :data:`ALIGN_MODES`.
    reference : int, optional
        Frame whose geometry the others are brought into; the middle frame
        (``len(images) // 2``) by default.
    full_shape : tuple of int, optional
        ``(Y, X, ...)`` of the full-resolution frames the images were
        reduced from; the transforms are returned in their pixels. By
        default, in the registration images' pixels.

    Returns
    -------
    AlignmentResult

    Examples
    --------
    >>> from napari_focus_stack.engine.align import registration_image
    >>> from napari_focus_stack.synthetic import simulate_stack
    >>> sim = simulate_stack((192, 256), 5, texture="noise", breathing=0.04, seed=2)
    >>> result = estimate_transforms([registration_image(f) for f in sim.frames])
    >>> result.reference, np.round(result.transforms[:, 0, 0], 2).tolist()
    (2, [0.98, 0.99, 1.0, 1.01, 1.02])
    """
    return drain(iter_estimate_transforms(images, mode, reference, full_shape=full_shape))


def iter_estimate_transforms(images, mode="similarity", reference=None, *, full_shape=None, cancel=None):
    """:func:`estimate_transforms`, streamed; yields each frame's index once it is registered with the previous one.

    Images are fetched in order on up to :data:`ALIGN_THREADS` threads, at
    most :data:`_IN_FLIGHT_PER_THREAD` per thread ahead of the last step
    finished, and dropped once both steps around them are measured: what is
    held is bounded whatever the number of frames. Kept for the whole stack
    are the steps and, for comparing distant frames, small copies of the few
    frames that comparison uses (:func:`~.check.distant_frames`). Steps
    re-estimated after the checks fetch their images again, and so does the
    steady-part check of moving stacks of :data:`~.check.MIN_TREND_FRAMES`
    or more (a second pass in order). ``cancel`` (an object with
    ``is_set()``) is looked at between frames in both passes and raises
    :class:`~napari_focus_stack.engine.result.StackCancelled`; returns the
    :class:`AlignmentResult`.
    """
    _check_mode(mode)
    n = len(images)
    reference = n // 2 if reference is None else int(reference)
    if not 0 <= reference < n:
        raise ValueError(f"reference must be a frame index from 0 to {n - 1}, got {reference}")
    if mode == "none" or n == 1:
        identity = np.tile(np.eye(3), (n, 1, 1))
        yield from range(n)
        return AlignmentResult(identity, reference, mode, np.ones(max(n - 1, 0)))
    pyramids = _Pyramids(images)
    first = pyramids[0]
    level = check_level(first)
    margin = _level_margin(pyramids.shape, 0)
    # The frames distant_agreement compares, at the check's level, in one
    # block (long-lived small arrays scattered among the frames' temporaries
    # would keep the heap from shrinking), in half precision: the comparison
    # is of means over many pairs.
    wanted = sorted(distant_frames(n))
    kept = np.empty((len(wanted), *first[level].shape), np.float16)
    small = dict(zip(wanted, kept))

    def build(k):
        pyramid = first if k == 0 else pyramids.build(k)
        if k in small:
            small[k][...] = pyramid[level]
        return pyramid

    def step(_, fixed, moving):
        return register_neighbours(fixed, moving, mode, margin)

    steps = []
    yield 0
    for j, measured in _along_neighbours(build, step, n, cancel):
        steps.append(measured)
        yield j + 1
    shape = pyramids.shape
    matrices = [matrix for matrix, _, _ in steps]
    quality = np.array([q for _, q, _ in steps])
    unaligned = np.array([q for _, _, q in steps])
    messages = []
    usable = _recheck_steps(matrices, quality, pyramids, mode, messages)
    transforms, failed = _compose(matrices, usable, reference, pyramids, mode, messages)
    transforms = transforms @ np.linalg.inv(transforms[reference])
    explained = explained_share(quality, unaligned, usable)
    agreement = distant_agreement(small, transforms, shape, level)
    needed = min_explained(shape)
    if explained < needed:
        # Defocus alone: the steps are the small, steady drift registration
        # reports between differently blurred frames (docs/ALGORITHMS.md).
        messages.append(
            f"the estimated motion explains {explained:.1%} of the differences between neighbouring frames "
            f"(less than {needed:.1%}): taken as defocus, not motion; frames used as they are"
        )
        transforms, failed = np.tile(np.eye(3), (n, 1, 1)), []
    elif agreement is not None and not agreement.supported:
        # Chained steps that distant frames contradict: content that changes
        # from section to section, or steps bridged by guesses, not motion.
        messages.append(
            f"the estimated motion makes distant frames less alike ({agreement.describe()}): "
            "taken as changing content, not motion; frames used as they are"
        )
        transforms, failed = np.tile(np.eye(3), (n, 1, 1)), []
    elif n >= MIN_TREND_FRAMES:
        transforms = _without_unexplained_trend(
            images, transforms, quality, usable, reference, shape, margin, messages, cancel
        )
    if full_shape is not None:
        transforms = rescale_transforms(transforms, shape, full_shape)
    transforms[reference] = np.eye(3)  # exactly, without rounding: warp_frame then skips it
    return AlignmentResult(transforms, reference, mode, quality, failed, messages, agreement, unaligned, explained)


#: Frames fetched ahead of the last finished step, per thread.
_IN_FLIGHT_PER_THREAD = 1


def _along_neighbours(fetch, pair, n, cancel=None):
    """``(j, pair(j, fetch(j), fetch(j + 1)))`` for every step j = 0 .. n - 2, in order, each ``fetch`` called once.

    A generator: fetches and pairs run on up to :data:`ALIGN_THREADS`
    threads, with at most :data:`_IN_FLIGHT_PER_THREAD` fetches per thread
    beyond the last step yielded, so a sequence of any length is walked in
    bounded memory. A pair is handed to the threads only once both its
    fetches are done, so that no thread sits waiting. ``cancel`` is looked
    at before each step.
    """
    ahead = max(2, _IN_FLIGHT_PER_THREAD * ALIGN_THREADS)
    with ThreadPoolExecutor(ALIGN_THREADS, thread_name_prefix="focus-stack-align") as pool:
        fetched, paired = {}, {}
        submitted = next_pair = 0
        try:
            for j in range(n - 1):
                while submitted < min(n, j + 1 + ahead):
                    fetched[submitted] = pool.submit(fetch, submitted)
                    submitted += 1
                # every pair whose fetches are done, and pair j in any case
                while next_pair + 1 < submitted and (next_pair <= j or fetched[next_pair + 1].done()):
                    a, b = fetched[next_pair].result(), fetched[next_pair + 1].result()
                    paired[next_pair] = pool.submit(pair, next_pair, a, b)
                    next_pair += 1
                if cancel is not None and cancel.is_set():
                    raise StackCancelled()
                result = paired.pop(j).result()
                del fetched[j]
                yield j, result
        finally:
            for future in (*fetched.values(), *paired.values()):
                future.cancel()


def _without_unexplained_trend(images, transforms, quality, usable, reference, shape, margin, messages, cancel):
    """``transforms`` without their steady part when it explains too little, else as they are.

    The steady part (:func:`~.check.steady_part`) holds breathing and drift,
    and also the steady bias of registration between differently blurred
    frames, which frame-to-frame motion does not have. It is kept when it
    explains at least :func:`~.check.min_explained` of
    :data:`~.check.MIN_STEADY_EXPLAINED` (twice the share asked of the
    whole motion) of what the frame-to-frame motion leaves of the
    neighbours' differences. The images are walked once more, in order.
    """
    n = len(transforms)
    steady = steady_part(transforms)
    rest = transforms @ np.linalg.inv(steady)
    rest = rest @ np.linalg.inv(rest[reference])

    def fetch(k):
        return np.asarray(images[k], dtype=np.float32)

    def correlation_without_steady(k, fixed, moving):
        return correlation(fixed, moving, rest[k + 1] @ np.linalg.inv(rest[k]), margin)

    without = np.array([q for _, q in _along_neighbours(fetch, correlation_without_steady, n, cancel)])
    share = explained_share(quality, without, usable)
    needed = min_explained(shape, MIN_STEADY_EXPLAINED)
    if share >= needed:
        return transforms
    size = max(_corner_distance(matrix, np.eye(3), shape) for matrix in steady @ np.linalg.inv(steady[reference]))
    messages.append(
        f"the steady part of the motion ({size:.1f} px) explains {share:.1%} of what the frame-to-frame motion "
        f"leaves (less than {needed:.1%}): taken as defocus; only the frame-to-frame motion is corrected"
    )
    return rest


def _trend(matrices, usable, index, count=1):
    """Median of the usable steps near ``index`` (excluding it), applied ``count`` times.

    The element-wise median of near-identity matrices is a robust typical
    step: steady breathing and drift give the same step again and again.
    """
    others = [j for j in range(len(matrices)) if usable[j] and j != index]
    near = [j for j in others if abs(j - index) <= _TREND_WINDOW] or others
    step = np.median([matrices[j] for j in near], axis=0) if near else np.eye(3)
    return np.linalg.matrix_power(step, count)


def _recheck_steps(matrices, quality, pyramids, mode, messages):
    """Re-estimate failed and inconsistent steps from their neighbours' trend, in place.

    A step is inconsistent when its corners land farther from the trend's
    than :data:`_TREND_TOLERANCE_PX` and than :data:`_TREND_TOLERANCE_FACTOR`
    times the typical deviation of all steps (jitter makes steps vary). If
    refinement started from the trend comes back to the same step, the
    motion was real and the step stands. Returns which steps can be used.
    """
    shape = pyramids[0][0].shape
    usable = quality >= _MIN_QUALITY
    deviation = np.array([_corner_distance(m, _trend(matrices, usable, k), shape) for k, m in enumerate(matrices)])
    typical = np.median(deviation[usable]) if usable.any() else 0.0
    tolerance = max(_TREND_TOLERANCE_PX, _TREND_TOLERANCE_FACTOR * typical)
    suspect = ~usable | ((deviation > tolerance) & (usable.sum() >= 3))
    for k in np.flatnonzero(suspect):
        trend = _trend(matrices, usable, k)
        matrix, q = _register(pyramids[k], pyramids[k + 1], mode, trend)
        if usable[k] and _corner_distance(matrix, matrices[k], shape) <= _TREND_TOLERANCE_PX:
            continue  # confirmed from another starting point
        if usable[k]:
            problem = f"{deviation[k]:.1f} px off its neighbours' trend"
        else:
            problem = f"quality {quality[k]:.2f}"
        consistent = _corner_distance(matrix, trend, shape) <= tolerance or not usable.any()
        if q >= _MIN_QUALITY and consistent:
            matrices[k], quality[k], usable[k] = matrix, q, True
            messages.append(f"step {k}->{k + 1}: {problem}; re-estimated from the trend")
        else:
            usable[k] = False
            messages.append(f"step {k}->{k + 1}: {problem}; not used")
    return usable


def _compose(matrices, usable, reference, pyramids, mode, messages):
    """Chain the steps into ``(Z, 3, 3)`` transforms, and list the frames that failed.

    Frames with no usable step on either side cannot be aligned: they are
    bridged over, and given interpolated or extrapolated transforms. Where
    two aligned frames cannot be linked, the typical step joins them, and
    every frame on the far side of that guess from ``reference`` failed.
    The transforms are relative to the first aligned frame.
    """
    n = len(matrices) + 1
    aligned = [k for k in range(n) if (k > 0 and usable[k - 1]) or (k < n - 1 and usable[k])]
    transforms = np.tile(np.eye(3), (n, 1, 1))
    if not aligned:
        messages.append("no two neighbouring frames could be registered: frames left unaligned")
        return transforms, [k for k in range(n) if k != reference]
    failed = set()
    for a, b in zip(aligned, aligned[1:]):
        link = _link(a, b, matrices, usable, pyramids, mode)
        if link is None:
            link = _trend(matrices, usable, a, b - a)
            beyond = range(b, n) if b > reference else range(0, a + 1)
            failed.update(beyond)
            messages.append(
                f"frames {a} and {b} could not be registered; the typical step joins them, "
                f"so frames {beyond.start}-{beyond.stop - 1} may be misaligned"
            )
        transforms[b] = link @ transforms[a]
    for k in sorted(set(range(n)) - set(aligned)):
        transforms[k], action = _fill_in(k, aligned, transforms, matrices, usable)
        failed.add(k)
        messages.append(f"frame {k}: registers with neither neighbour; transform {action}")
    return transforms, sorted(failed)


def _link(a, b, matrices, usable, pyramids, mode):
    """Transform from aligned frame ``a`` to the next aligned frame ``b``, or None if unknown."""
    if b == a + 1:
        return matrices[a] if usable[a] else None
    # The frames between could not be aligned: register a with b directly.
    matrix, quality = _register(pyramids[a], pyramids[b], mode, _trend(matrices, usable, a, b - a))
    return matrix if quality >= _MIN_QUALITY else None


def _fill_in(k, aligned, transforms, matrices, usable):
    """Transform of unaligned frame ``k`` from the aligned frames around it, and how."""
    before = [a for a in aligned if a < k]
    after = [b for b in aligned if b > k]
    if before and after:
        a, b = before[-1], after[0]
        t = (k - a) / (b - a)
        blend = (1 - t) * transforms[a] + t * transforms[b]
        return blend, f"interpolated between frames {a} and {b}"
    if before:
        a = before[-1]
        step = _trend(matrices, usable, k, k - a)
        return step @ transforms[a], f"extrapolated from frame {a} with the typical step"
    b = after[0]
    step = _trend(matrices, usable, k, b - k)
    action = f"extrapolated from frame {b} with the typical step"
    return np.linalg.inv(step) @ transforms[b], action
