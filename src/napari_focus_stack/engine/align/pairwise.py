"""Pairwise registration: the transform between two registration images, coarse to fine.

A phase correlation on a reduced pyramid level finds the shift; Gauss-Newton
refinement of the normalised correlation, from a coarse level to the finest,
estimates the full motion model (:data:`~napari_focus_stack.engine.result.ALIGN_MODES`).
"""

import math

import cv2
import numpy as np

from ..result import ALIGN_MODES
from .images import _coarse_sigma, _pyramid

#: Band-pass filtering near the image border sees mirrored content, a
#: pattern fixed to the frame that would pull every estimate towards the
#: identity (by ~5 % of a scale step on blurred frames): registration
#: ignores a border this many coarse sigmas wide.
_MARGIN_SIGMAS = 2.5

#: Phase correlation runs on the pyramid level whose long side is at most
#: this: large enough to locate the peak, small enough that fine repetitive
#: patterns are averaged away.
_CORRELATION_SIDE = 256
_MAX_ITERATIONS = 40
#: Refinement stops when an update moves the image corners less than this (px).
_CONVERGED_PX = 0.005
#: Largest corner displacement (px of the level) one update may make, so
#: that a poorly conditioned iteration cannot throw the warp away.
_MAX_UPDATE_PX = 2.0

#: Phase-correlation peaks at least this high relative to the highest are
#: equally likely shifts: several of them mean a repetitive pattern.
_AMBIGUOUS_PEAK_RATIO = 0.3
_MAX_CANDIDATES = 25

#: Bounds on one step between neighbouring frames: anything beyond is taken
#: as a failed estimate, never applied.
_MAX_STEP_LOG_SCALE = math.log(1.3)
_MAX_STEP_ROTATION = math.radians(10)
_MAX_STEP_ANISOTROPY = 0.1  # relative difference of the singular values
_MAX_STEP_SHIFT_FRACTION = 0.5


# --------------------------------------------------------------------------
# Coordinates and matrices
# --------------------------------------------------------------------------


def _level_matrix(matrix, from_level, to_level):
    """Re-express a fixed->moving pixel matrix from one pyramid level in another.

    ``cv2.pyrDown`` puts pixel ``i`` of a level at pixel ``2 i`` of the
    level below, so coordinates scale by 2 per level about the origin.
    """
    scale = 2.0 ** (from_level - to_level)
    conjugate = np.diag([scale, scale, 1.0])
    return conjugate @ matrix @ np.linalg.inv(conjugate)


def _corners(shape):
    """The four image corners as homogeneous columns ``(3, 4)``."""
    height, width = shape[:2]
    return np.array([[0, width - 1, 0, width - 1], [0, 0, height - 1, height - 1], [1, 1, 1, 1]], dtype=float)


def _corner_distance(a, b, shape):
    """Largest distance (px) between where ``a`` and ``b`` put the image corners."""
    corners = _corners(shape)
    return float(np.max(np.hypot(*((a @ corners) - (b @ corners))[:2])))


# --------------------------------------------------------------------------
# Motion models for Gauss-Newton, in centred coordinates
# --------------------------------------------------------------------------
# Parameters act on coordinates centred on the image and divided by half the
# long side, so that shifts, rotations and scales have comparable magnitudes
# and the normal equations are well conditioned.


def _centring(shape):
    """Matrix from centred unit coordinates to pixel coordinates."""
    height, width = shape
    radius = max(height, width) / 2
    return np.array([[radius, 0, (width - 1) / 2], [0, radius, (height - 1) / 2], [0, 0, 1.0]])


def _steepest_descent(gx, gy, u, v, mode):
    """Rows ``dI/dp`` of the warp's parameters, ``(P, N)`` float32.

    ``gx``, ``gy`` are image gradients, ``u`` and ``v`` centred coordinates
    (broadcastable to the gradients' shape).
    """
    if mode == "translation":
        rows = (gx, gy)
    elif mode == "similarity":
        rows = (gx * u + gy * v, gy * u - gx * v, gx, gy)
    else:  # affine
        rows = (gx * u, gx * v, gy * u, gy * v, gx, gy)
    return np.stack([np.ravel(row) for row in rows]).astype(np.float32, copy=False)


def _params_matrix(p, mode):
    """Centred-coordinate matrix of parameters ``p`` (zero = identity)."""
    if mode == "translation":
        linear = np.eye(2)
        shift = p
    elif mode == "similarity":
        linear = np.array([[1 + p[0], -p[1]], [p[1], 1 + p[0]]])
        shift = p[2:]
    else:
        linear = np.eye(2) + p[:4].reshape(2, 2)
        shift = p[4:]
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = shift
    return matrix


# --------------------------------------------------------------------------
# Pairwise registration
# --------------------------------------------------------------------------


def estimate_pair(fixed, moving, mode="similarity", *, initial=None):
    """Transform between two registration images, coarse to fine.

    A phase correlation on a reduced level finds the shift (the smallest of
    several equally good ones when a repetitive pattern gives several),
    then Gauss-Newton refinement of the normalised correlation, from a
    coarse pyramid level to the finest, estimates the full motion model.
    Each update is bounded, and a result outside the bounds on one step
    (30 % scale, 10 degrees, half the image) is rejected.

    Parameters
    ----------
    fixed, moving : ndarray
        ``(Y, X)`` float32 images of the same shape, from
        :func:`registration_image`.
    mode : str, optional
        One of :data:`ALIGN_MODES`.
    initial : ndarray, optional
        ``(3, 3)`` starting guess (fixed -> moving pixels); replaces the
        phase correlation.

    Returns
    -------
    matrix : ndarray of float64
        ``(3, 3)``, maps ``fixed`` pixel coordinates to ``moving``'s:
        ``moving(matrix @ p)`` matches ``fixed(p)``.
    quality : float
        Normalised correlation of the registered images on their overlap;
        0 when the estimate broke the bounds on one step (the matrix is then
        the phase-correlation shift, or ``initial``).

    Examples
    --------
    >>> from napari_focus_stack.engine.align import registration_image
    >>> from napari_focus_stack.synthetic import make_texture
    >>> texture = make_texture("noise", (128, 128))
    >>> fixed = registration_image(texture)
    >>> moving = registration_image(np.roll(texture, (3, -5), axis=(0, 1)))
    >>> matrix, quality = estimate_pair(fixed, moving, "translation")
    >>> np.round(matrix[:2, 2], 2).tolist(), quality > 0.9
    ([-5.0, 3.0], True)
    """
    _check_mode(mode)
    if fixed.shape != moving.shape:
        raise ValueError(f"images differ in shape: {fixed.shape} and {moving.shape}")
    return _register(_pyramid(fixed), _pyramid(moving), mode, initial)


def _check_mode(mode):
    if mode not in ALIGN_MODES:
        raise ValueError(f"align mode must be one of {', '.join(ALIGN_MODES)}, got {mode!r}")


def _register(fixed, moving, mode, initial):
    """:func:`estimate_pair` on pyramids; ``initial`` is None or a level-0 matrix."""
    if mode == "none":
        return np.eye(3), 1.0
    start = _coarse_shift(fixed, moving) if initial is None else np.asarray(initial, float)
    matrix, quality = start, 0.0
    for level in range(len(fixed) - 1, -1, -1):
        guess = _level_matrix(matrix, 0, level)
        margin = _level_margin(fixed[0].shape, level)
        refined, quality = _gauss_newton(fixed[level], moving[level], guess, mode, margin)
        matrix = _level_matrix(refined, level, 0)
    if not _plausible_step(matrix, fixed[0].shape):
        return start, 0.0
    return matrix, quality


def _plausible_step(matrix, shape):
    """Whether a fixed->moving matrix is a motion neighbouring frames can have."""
    if not np.all(np.isfinite(matrix)):
        return False
    linear = matrix[:2, :2]
    singular = np.linalg.svd(linear, compute_uv=False)
    if singular[1] <= 0 or np.linalg.det(linear) <= 0:
        return False
    rotation = math.atan2(linear[1, 0] - linear[0, 1], linear[0, 0] + linear[1, 1])
    centre = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2, 1.0])
    shift = (matrix @ centre)[:2] - centre[:2]
    return (
        abs(math.log(math.sqrt(singular[0] * singular[1]))) <= _MAX_STEP_LOG_SCALE
        and abs(rotation) <= _MAX_STEP_ROTATION
        and singular[0] / singular[1] - 1 <= _MAX_STEP_ANISOTROPY
        and np.all(np.abs(shift) <= _MAX_STEP_SHIFT_FRACTION * np.array(shape[::-1]))
    )


# --- phase correlation ------------------------------------------------------


def _coarse_shift(fixed, moving):
    """Level-0 translation matrix from phase correlation on a reduced level.

    Patterns finer than a few pixels of that level are averaged away there.
    A coarser repetitive pattern gives several peaks of similar height, one
    per period, which nothing in the pattern tells apart: the smallest shift
    among them is taken, as neighbouring frames move little.
    """
    small_enough = (i for i, image in enumerate(fixed) if max(image.shape) <= _CORRELATION_SIDE)
    level = next(small_enough, len(fixed) - 1)
    peaks = _peaks(_phase_correlation(fixed[level], moving[level]))
    matrix = np.eye(3)
    if peaks:  # none for a flat image
        highest = peaks[0][1]
        candidates = [shift for shift, height in peaks if height >= _AMBIGUOUS_PEAK_RATIO * highest]
        smallest = min(candidates, key=lambda shift: float(np.hypot(*shift)))
        matrix[:2, 2] = smallest * 2.0**level
    return matrix


def _phase_correlation(fixed, moving):
    """Whitened cross-correlation surface, zero shift at the centre.

    The peak sits at ``(dx, dy)`` from the centre when ``moving`` shows
    ``fixed``'s content moved by ``(dx, dy)``.
    """
    window = cv2.createHanningWindow(fixed.shape[::-1], cv2.CV_32F)
    spectrum_f = np.fft.rfft2(fixed * window)
    spectrum_m = np.fft.rfft2(moving * window)
    cross = spectrum_m * np.conj(spectrum_f)
    cross /= np.abs(cross) + 1e-12
    surface = np.fft.irfft2(cross, s=fixed.shape)
    return np.fft.fftshift(surface).astype(np.float32)


def _peaks(surface):
    """Local maxima of ``surface`` as ``((dx, dy), height)``, highest first.

    Whole pixels are enough: refinement starts from a coarser level. Only
    the :data:`_MAX_CANDIDATES` highest are kept.
    """
    dilated = cv2.dilate(surface, np.ones((5, 5), np.uint8))
    rows, cols = np.nonzero((surface >= dilated) & (surface > 0))
    order = np.argsort(surface[rows, cols])[::-1][:_MAX_CANDIDATES]
    centre = np.array([surface.shape[1] // 2, surface.shape[0] // 2])
    return [(np.array([col, row]) - centre, float(surface[row, col])) for row, col in zip(rows[order], cols[order])]


# --- Gauss-Newton refinement --------------------------------------------------


def _warp_into(image, matrix, shape, margin):
    """``image`` sampled at ``matrix @ p`` for each pixel ``p`` of ``shape``, and where usable.

    Usable means farther than ``margin`` pixels inside ``image``'s border
    (where the band-pass saw mirrored content).
    """
    size = (shape[1], shape[0])
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpAffine(image, matrix[:2], size, flags=flags, borderMode=cv2.BORDER_REFLECT)
    interior = np.zeros(image.shape[:2], np.uint8)
    interior[margin : image.shape[0] - margin, margin : image.shape[1] - margin] = 1
    nearest = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP
    valid = cv2.warpAffine(interior, matrix[:2], size, flags=nearest)
    return warped, valid.view(bool)


def _interior(image, margin):
    """The part of ``image`` farther than ``margin`` px from its border, and its offset matrix."""
    offset = np.eye(3)
    offset[:2, 2] = margin
    return image[margin : image.shape[0] - margin, margin : image.shape[1] - margin], offset


def _level_margin(shape, level):
    """Border (px) ignored on pyramid ``level`` of registration images of ``shape``."""
    margin = _MARGIN_SIGMAS * _coarse_sigma(shape)
    # +2: pyrDown's own 5-tap filter mirrors the border too.
    return int(math.ceil(margin / 2**level)) + 2


def _centred(values, weights, count):
    """``values`` minus their mean where ``weights`` is 1, and 0 where it is 0."""
    # float32 dot products: float64 ones go through a BLAS path that is
    # slower by two orders of magnitude here, for no useful precision.
    mean = np.float32((values @ weights) / count)
    return (values - mean) * weights


def _gauss_newton(fixed, moving, matrix, mode, margin):
    """Refine a fixed->moving pixel matrix by inverse-compositional Gauss-Newton.

    Minimises ``sum (gain * moving(W p) + offset - fixed(p))^2`` over the
    overlap, with gain and offset solved in closed form at each iteration
    (the criterion of ECC: normalised correlation). The Jacobian is taken on
    ``fixed`` once (Baker & Matthews 2004); pixels whose warped position
    falls outside ``moving`` are removed from the normal equations.

    Returns the refined matrix and its normalised correlation; the iterate
    with the best correlation is kept, so refinement never makes the match
    worse than the starting point.
    """
    template, offset = _interior(fixed, margin)
    if min(template.shape) < 4:
        return matrix, 0.0
    centring = _centring(fixed.shape)
    to_centred = np.linalg.inv(centring)
    jacobian = _jacobian(fixed, margin, centring, mode)
    hessian_all = (jacobian @ jacobian.T).astype(np.float64)
    shape = template.shape
    template = template.ravel()
    best, best_ncc = matrix, -1.0
    for _ in range(_MAX_ITERATIONS):
        warped, valid = _warp_into(moving, matrix @ offset, shape, margin)
        weights = valid.ravel().astype(np.float32)
        count = float(weights.sum())
        if count < 16 * len(jacobian):
            break
        target = _centred(template, weights, count)
        current = _centred(warped.ravel(), weights, count)
        correlation = float(current @ target)
        energy = float(current @ current)
        ncc = correlation / max(math.sqrt(energy * float(target @ target)), 1e-12)
        if ncc <= best_ncc:
            break  # diverging: keep the best iterate
        best, best_ncc = matrix, ncc
        error = np.float32(correlation / max(energy, 1e-12)) * current - target
        outside = jacobian[:, np.flatnonzero(weights == 0)]
        hessian = hessian_all - (outside @ outside.T).astype(np.float64)
        try:
            step = np.linalg.lstsq(hessian, (jacobian @ error).astype(np.float64), rcond=1e-10)[0]
        except np.linalg.LinAlgError:  # degenerate normal equations: keep the best iterate
            break
        update = centring @ _params_matrix(step, mode) @ to_centred
        moved = _corner_distance(update, np.eye(3), fixed.shape)
        if moved > _MAX_UPDATE_PX:
            update = centring @ _params_matrix(step * (_MAX_UPDATE_PX / moved), mode) @ to_centred
        matrix = matrix @ np.linalg.inv(update)
        if moved < _CONVERGED_PX:
            # The last update is too small to change the correlation measurably.
            best = matrix
            break
    return best, best_ncc


def _jacobian(image, margin, centring, mode):
    """``(P, N)`` float32 derivatives of ``image``'s interior under each warp parameter."""
    height, width = image.shape
    gy, gx = (g[margin : height - margin, margin : width - margin] for g in np.gradient(image))
    radius = np.float32(centring[0, 0])
    u = (np.arange(margin, width - margin, dtype=np.float32) - np.float32(centring[0, 2])) / radius
    v = (np.arange(margin, height - margin, dtype=np.float32) - np.float32(centring[1, 2])) / radius
    return _steepest_descent(gx * radius, gy * radius, u[None, :], v[:, None], mode)
