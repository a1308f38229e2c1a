"""Checks of an estimated alignment against the stack itself: does it explain the frames, do distant frames agree?

Neighbouring frames of a focus stack differ by defocus as well as by motion,
and defocus alone makes registration report motion: a fraction of a pixel
per step, always in the same direction, which chaining adds up to pixels
(tens of pixels on long stacks of blurred frames). :func:`explained_share`
asks how much of the difference between neighbours the motion explains:
real motion, even half a pixel of jitter, explains a large share; defocus
leaves the correlation of neighbours almost as it was without any motion.

Chained steps can also be wrong for other reasons. Two causes are common
on stacks that do not move: a confocal or light-sheet section shows other
structures than its neighbours (content change), and a step that could not
be measured is bridged by a guess. Real motion, on the other hand, adds up
too: frames far apart differ by all the steps between them, and undoing the
chained motion makes them more alike. :func:`distant_agreement` measures
that directly, on small copies of the registration images: the normalised
correlation of frames a few steps apart, with the chained transform and
without any.
"""

from dataclasses import dataclass

import numpy as np

from .pairwise import _centred, _interior, _level_margin, _level_matrix, _warp_into

#: Long side (px) of the copies distant frames are compared on: the
#: comparison needs the mid-frequency structure only.
CHECK_SIDE = 256
#: At most this many frame pairs per separation are compared.
_MAX_PAIRS = 24
#: Motion that explains less than this share of the differences between
#: neighbouring frames (mean over steps) is taken for defocus, not applied,
#: on registration images of 256 px (:func:`min_explained` for others).
MIN_EXPLAINED = 0.05
#: The steady part of the motion, where the bias of defocus lives, must
#: explain at least this share of what the frame-to-frame motion leaves
#: (256 px; scaled like :data:`MIN_EXPLAINED`).
MIN_STEADY_EXPLAINED = 0.1
#: Long side (px) of the registration images the two shares are set for.
_SHARE_SIDE = 256


def min_explained(shape, share=MIN_EXPLAINED):
    """The share of the neighbours' differences motion must explain on registration images of ``shape``.

    The bias of defocus is a displacement of about the blur change per
    slice, in registration pixels; on larger images the same optics blur
    fewer of them, while a real motion covers more, so less evidence is
    needed: ``share * (256 / side)^1.5``. Measured on still stacks of the 13
    families, 32 frames: defocus explained at most 0.040 at 256 px (asked
    0.05), 0.009 at 512 (asked 0.018), 0.005 at 768 (asked 0.0096); 3 %
    breathing explained 0.013-0.022, 0.022-0.058 and 0.044-0.066
    (benchmarks/static_alignment.py, docs/ALGORITHMS.md).
    """
    return share * (_SHARE_SIDE / max(shape[:2])) ** 1.5


#: Stacks of at least this many frames have their motion split into a
#: steady part and the frame-to-frame rest (:func:`steady_part`).
MIN_TREND_FRAMES = 8
#: Highest degree of the polynomial (in the frame index) of the steady part.
_TREND_DEGREE = 3


def steady_part(transforms):
    """The slowly varying part of ``transforms``: a low-degree polynomial fit in the frame index.

    Breathing, drift and the bias of registration between differently
    blurred frames change steadily along the stack; hand-held jitter and
    vibration change from frame to frame. Each of the six affine entries is
    fitted by a polynomial of degree up to :data:`_TREND_DEGREE` (fewer for
    short stacks, so that it cannot follow the jitter).

    Parameters
    ----------
    transforms : ndarray
        ``(Z, 3, 3)`` affine matrices.

    Returns
    -------
    ndarray
        ``(Z, 3, 3)``.
    """
    n = len(transforms)
    return _fitted_in_index(np.arange(n), transforms, _trend_degree(n))


def steady_steps(indices, steps, n):
    """The steady part of sampled neighbour steps: a polynomial fit of the steps in the frame index.

    What :func:`steady_part` makes of a whole stack's chained transforms,
    seen one step at a time: the steady part of the transforms is a
    polynomial of degree up to :data:`_TREND_DEGREE` in the frame index, so
    its steps are one of a degree less. Used by the sample check
    (:func:`~.policy.looks_still`), which registers only a few pairs: it
    must split their motion as the whole estimate would, or a bias that
    changes along the stack (it follows the blur) looks like neither steady
    nor frame-to-frame motion.

    Parameters
    ----------
    indices : sequence of int
        ``steps[i]`` goes from frame ``indices[i]`` to ``indices[i] + 1``.
    steps : ndarray
        ``(S, 3, 3)`` affine matrices.
    n : int
        Frames in the stack.

    Returns
    -------
    ndarray
        ``(S, 3, 3)``.
    """
    return _fitted_in_index(indices, steps, min(max(0, _trend_degree(n) - 1), len(steps) - 1))


def _trend_degree(n):
    """Degree of the steady part of a stack of ``n`` frames: fewer for short stacks, so it cannot follow jitter."""
    return min(_TREND_DEGREE, max(0, (n - 1) // 4))


def _fitted_in_index(index, matrices, degree):
    """``matrices`` (``(S, 3, 3)`` affine) with each of their six entries fitted by a polynomial of ``degree`` in ``index``."""
    matrices = np.asarray(matrices, float)
    index = np.asarray(index, float)
    count = len(matrices)
    entries = matrices[:, :2, :].reshape(count, 6)
    coefficients = np.polynomial.polynomial.polyfit(index, entries, degree)
    fitted = np.tile(np.eye(3), (count, 1, 1))
    fitted[:, :2, :] = np.polynomial.polynomial.polyval(index, coefficients).T.reshape(count, 2, 3)
    return fitted


def explained_share(aligned, unaligned, usable):
    """Mean share of the neighbours' mismatch that undoing each step's motion removes.

    Parameters
    ----------
    aligned, unaligned : ndarray
        ``(Z - 1,)`` normalised correlation of each pair of neighbours with
        their step undone and as they are.
    usable : ndarray of bool
        Steps that were measured (the others are left out).

    Returns
    -------
    float
        ``mean((aligned - unaligned) / (1 - unaligned))`` over usable steps:
        0 when the motion changes nothing, 1 when it accounts for every
        difference; 1 when no step is usable (nothing to doubt).
    """
    aligned, unaligned = np.asarray(aligned, float)[usable], np.asarray(unaligned, float)[usable]
    if not len(aligned):
        return 1.0
    return float(np.mean((aligned - unaligned) / np.maximum(1 - unaligned, 1e-3)))


@dataclass
class Agreement:
    """Mean correlation of distant frames with the chained transforms and without.

    ``separations[i]`` frames apart: ``aligned[i]`` with the estimated
    motion undone, ``unaligned[i]`` as they are.
    """

    separations: list
    aligned: list
    unaligned: list

    @property
    def supported(self):
        """Whether undoing the motion makes distant frames at least as alike at every separation."""
        return all(a >= u for a, u in zip(self.aligned, self.unaligned))

    def describe(self):
        pairs = ", ".join(
            f"{a:.3f} aligned vs {u:.3f} as they are at {s} frames apart"
            for s, a, u in zip(self.separations, self.aligned, self.unaligned)
        )
        return f"correlation of distant frames {pairs}"


def check_level(pyramid):
    """Index of the first level of ``pyramid`` (finest first) with a long side of at most :data:`CHECK_SIDE`."""
    small_enough = (i for i, image in enumerate(pyramid) if max(image.shape) <= CHECK_SIDE)
    return next(small_enough, len(pyramid) - 1)


def separations(n):
    """Separations (frames) at which distant frames are compared: about an eighth and a quarter of the stack."""
    return sorted({s for s in (max(2, round(n / 8)), max(2, round(n / 4))) if s < n})


def _distant_starts(n, separation):
    """First frames of the pairs compared ``separation`` frames apart (at most :data:`_MAX_PAIRS`)."""
    return np.unique(np.linspace(0, n - 1 - separation, min(_MAX_PAIRS, n - separation)).round().astype(int))


def distant_frames(n):
    """The frames :func:`distant_agreement` compares in a stack of ``n``: only these need a small copy kept."""
    return {int(k) for s in separations(n) for a in _distant_starts(n, s) for k in (a, a + s)}


def distant_agreement(small, transforms, shape, level):
    """Compare distant frames with the chained ``transforms`` undone and as they are.

    Parameters
    ----------
    small : sequence or mapping of ndarray
        Registration images at pyramid ``level``, indexed by frame: at
        least those of :func:`distant_frames`.
    transforms : ndarray
        ``(Z, 3, 3)``, reference to frame pixels of the registration images
        (level 0).
    shape : tuple of int
        ``(Y, X)`` of the registration images.
    level : int
        The pyramid level ``small`` was taken from (:func:`check_level`).

    Returns
    -------
    Agreement or None
        None for stacks too short to have distant frames.
    """
    n = len(transforms)
    steps = separations(n)
    if not steps:
        return None
    margin = _level_margin(shape, level)
    aligned, unaligned = [], []
    for s in steps:
        scores = []
        for a in _distant_starts(n, s):
            chained = transforms[a + s] @ np.linalg.inv(transforms[a])
            moving = _level_matrix(chained, 0, level)
            scores.append(
                (
                    correlation(small[a], small[a + s], moving, margin),
                    correlation(small[a], small[a + s], np.eye(3), margin),
                )
            )
        aligned.append(float(np.mean([q for q, _ in scores])))
        unaligned.append(float(np.mean([q for _, q in scores])))
    return Agreement(steps, aligned, unaligned)


def correlation(fixed, moving, matrix, margin):
    """Normalised correlation of ``fixed`` with ``moving`` sampled at ``matrix @ p``, on the usable overlap."""
    template, offset = _interior(np.asarray(fixed, np.float32), margin)
    if min(template.shape) < 4:
        return 0.0
    warped, valid = _warp_into(np.asarray(moving, np.float32), matrix @ offset, template.shape, margin)
    weights = valid.ravel().astype(np.float32)
    count = float(weights.sum())
    if count < 16:
        return 0.0
    a = _centred(template.ravel(), weights, count)
    b = _centred(warped.ravel(), weights, count)
    return float(a @ b) / max(float(np.sqrt(float(a @ a) * float(b @ b))), 1e-12)
