"""Checks of an estimated alignment against the stack itself: do distant frames agree?

Neighbouring frames are registered with each other and the steps chained, so
a small error on every step adds up over a long stack. Two causes are common
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


def distant_agreement(small, transforms, shape, level):
    """Compare distant frames with the chained ``transforms`` undone and as they are.

    Parameters
    ----------
    small : sequence of ndarray
        Every frame's registration image at pyramid ``level``.
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
    n = len(small)
    steps = separations(n)
    if not steps:
        return None
    margin = _level_margin(shape, level)
    aligned, unaligned = [], []
    for s in steps:
        starts = np.unique(np.linspace(0, n - 1 - s, min(_MAX_PAIRS, n - s)).round().astype(int))
        scores = []
        for a in starts:
            chained = transforms[a + s] @ np.linalg.inv(transforms[a])
            moving = _level_matrix(chained, 0, level)
            scores.append(
                (
                    _correlation(small[a], small[a + s], moving, margin),
                    _correlation(small[a], small[a + s], np.eye(3), margin),
                )
            )
        aligned.append(float(np.mean([q for q, _ in scores])))
        unaligned.append(float(np.mean([q for _, q in scores])))
    return Agreement(steps, aligned, unaligned)


def _correlation(fixed, moving, matrix, margin):
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
