"""Frame alignment: estimate per-frame motion and exposure, and undo them.

Real stacks move: a lens that refocuses magnifies (focus breathing), stages
drift, hand-held and rail shots shift and rotate, and exposure and white
balance flicker. Alignment runs in two passes.

1. **Estimate**, on reduced, defocus-robust images: :func:`registration_image`
   turns each frame into a band-passed luminance image of about a megapixel;
   :func:`estimate_transforms` registers neighbouring frames (which look
   alike) with :func:`estimate_pair`, checks every step against its
   neighbours, and composes the steps to the reference frame;
   :func:`estimate_gains` matches each frame's exposure to the reference.
2. **Apply**, at full resolution, frame by frame: :func:`warp_frame`
   resamples a frame into the reference geometry and corrects its exposure;
   :func:`coverage_mask` says where the frame had real pixels.

Transforms follow the simulator's convention
(:func:`napari_focus_stack.synthetic.simulate_stack`): ``transforms[k]`` is a
3x3 matrix that maps reference pixel coordinates ``(x, y, 1)`` (x = column,
y = row, pixel centres at integers) to frame ``k``'s; the reference frame's
is the identity.

>>> from napari_focus_stack.synthetic import simulate_stack
>>> sim = simulate_stack((128, 160), 5, texture="noise", drift=6, seed=1)
>>> images = [registration_image(frame) for frame in sim.frames]
>>> result = estimate_transforms(images, "translation")
>>> error = result.transforms[:, :2, 2] - sim.transforms[:, :2, 2]
>>> bool(abs(error).max() < 0.2), result.failed
(True, [])
"""

import math
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..backend import LUMA_WEIGHTS
from ..result import ALIGN_MODES  # noqa: F401  (the motion models; they live with the parameters)

#: Long side (px) of the images transforms are estimated on. About a
#: megapixel: enough for errors well below a pixel at 12 MP, and fast.
REGISTRATION_MAX_SIDE = 1024

#: Band-pass of the registration image, as Gaussian sigmas. The fine one
#: (px) removes sensor noise and JPEG blocks; the coarse one (fraction of the
#: long side) removes illumination, vignetting and exposure differences.
_FINE_SIGMA = 2.0
_COARSE_SIGMA_FRACTION = 1 / 64
#: Band-pass filtering near the image border sees mirrored content, a
#: pattern fixed to the frame that would pull every estimate towards the
#: identity (by ~5 % of a scale step on blurred frames): registration
#: ignores a border this many coarse sigmas wide.
_MARGIN_SIGMAS = 2.5

#: Phase correlation runs on the pyramid level whose long side is at most
#: this: large enough to locate the peak, small enough that fine repetitive
#: patterns are averaged away.
_CORRELATION_SIDE = 256
#: Gauss-Newton refinement starts on the level whose long side is at most
#: this, where even a 15 % scale step moves pixels by only a few pixels.
_COARSEST_SIDE = 64
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

#: A step whose normalised correlation after registration is below this
#: has not registered (a blank or unrelated frame correlates near 0).
_MIN_QUALITY = 0.15
#: A step is inconsistent when its corners land farther than this from the
#: neighbouring steps' median (px of the registration image), or farther
#: than this many times the typical deviation of the steps.
_TREND_TOLERANCE_PX = 3.0
_TREND_TOLERANCE_FACTOR = 4.0
_TREND_WINDOW = 5

#: Exposure is compared on images shrunk to this long side (px), through
#: the means of tiles (rows, columns) so large that defocus blur leaks
#: little across their borders; a tile counts when the common region
#: fills this much of it.
GAIN_MAX_SIDE = 256
_GAIN_TILES = (6, 8)
_GAIN_TILE_COVERAGE = 0.95
#: An offset is fitted only when the reference's tile means vary by this
#: much (relative standard deviation) and the offset exceeds this many
#: standard errors; on simulated stacks without offsets the largest was 5.
_OFFSET_MIN_SPREAD = 0.05
_OFFSET_MIN_T = 8.0
#: Gains outside this range are not exposure flicker but failed frames.
_GAIN_RANGE = (0.5, 2.0)


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
    """

    transforms: np.ndarray
    reference: int
    mode: str
    quality: np.ndarray
    failed: list = field(default_factory=list)
    messages: list = field(default_factory=list)


# --------------------------------------------------------------------------
# Registration images
# --------------------------------------------------------------------------


def registration_image(frame, max_side=REGISTRATION_MAX_SIDE):
    """Band-passed luminance of ``frame``, reduced, at unit RMS.

    Defocus blurs fine detail but keeps the position of mid-frequency
    structure; exposure changes add gain and offset. A difference of
    Gaussians keeps what all frames share, and normalising its RMS makes
    images of any dtype and exposure comparable.

    Parameters
    ----------
    frame : ndarray
        ``(Y, X)`` or ``(Y, X, 3)`` RGB, any dtype.
    max_side : int, optional
        Frames larger than this are shrunk by a power of two (the sizes
        :meth:`napari_focus_stack.io.FrameSequence.reduced` returns).

    Returns
    -------
    image : ndarray of float32
        ``(y, x)``, zero mean, RMS 1 (0 everywhere for a flat frame).

    Examples
    --------
    >>> frame = np.random.default_rng(0).integers(0, 255, (600, 2000, 3), dtype=np.uint8)
    >>> image = registration_image(frame)
    >>> image.shape, image.dtype.name, round(float(image.std()), 3)
    ((300, 1000), 'float32', 1.0)
    """
    gray = _luminance(frame)
    factor = reduction_factor(gray.shape, max_side)
    if factor > 1:
        size = (-(-gray.shape[1] // factor), -(-gray.shape[0] // factor))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    band = _blur(gray, _FINE_SIGMA) - _wide_blur(gray, _coarse_sigma(gray.shape))
    rms = float(np.sqrt(np.mean(np.square(band, dtype=np.float64))))
    if not math.isfinite(rms):  # NaN or Inf pixels (frames reach here with them filled): no usable content
        return np.zeros_like(band)
    return band / np.float32(rms) if rms > 0 else band


def _luminance(frame):
    """Float32 grey image of a gray or RGB frame (Rec. 601 weights)."""
    frame = np.asarray(frame)
    if frame.ndim == 2:
        return frame.astype(np.float32)
    weights = np.asarray([LUMA_WEIGHTS], dtype=np.float32)
    return cv2.transform(frame.astype(np.float32, copy=False), weights)


def reduction_factor(shape, max_side):
    """Smallest power of two that brings the long side of ``shape`` to ``max_side`` or less."""
    factor = 1
    while -(-max(shape[:2]) // factor) > max_side:
        factor *= 2
    return factor


def _coarse_sigma(shape):
    """Sigma of the band-pass's low cut for registration images of ``shape``."""
    # Small images keep a band of two octaves above the fine sigma.
    return max(_COARSE_SIGMA_FRACTION * max(shape[:2]), 4 * _FINE_SIGMA)


def _blur(image, sigma):
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REFLECT)


def _wide_blur(image, sigma):
    """A Gaussian blur of about ``sigma`` px, computed on a reduced copy.

    A wide kernel at full size costs ten times more; the result is smooth,
    so shrinking by up to a quarter of sigma and enlarging back loses
    nothing that matters.
    """
    factor = 2 ** max(0, int(math.log2(max(sigma, 1.0) / 4)))
    if factor == 1:
        return _blur(image, sigma)
    height, width = image.shape
    small_size = (-(-width // factor), -(-height // factor))
    small = cv2.resize(image, small_size, interpolation=cv2.INTER_AREA)
    return cv2.resize(_blur(small, sigma / factor), (width, height), interpolation=cv2.INTER_LINEAR)


def _pyramid(image):
    """``[image, half, quarter, ...]`` down to a long side of about :data:`_COARSEST_SIDE`."""
    levels = [np.ascontiguousarray(image, dtype=np.float32)]
    while max(levels[-1].shape) > _COARSEST_SIDE and min(levels[-1].shape) >= 16:
        levels.append(cv2.pyrDown(levels[-1], borderType=cv2.BORDER_REFLECT))
    return levels


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


def rescale_transforms(transforms, from_shape, to_shape):
    """Re-express pixel transforms for images resized from one shape to another.

    Resizing maps pixel centres as ``x_to = (x_from + 0.5) * X_to / X_from - 0.5``
    (OpenCV's and libjpeg's convention), and likewise for y.

    Parameters
    ----------
    transforms : ndarray
        ``(3, 3)`` or ``(Z, 3, 3)`` matrices between ``from_shape`` images.
    from_shape, to_shape : tuple of int
        ``(Y, X, ...)`` sizes.

    Returns
    -------
    ndarray of float64
        The same transforms between ``to_shape`` images.

    Examples
    --------
    >>> shift = np.array([[1.0, 0, 2], [0, 1, -1], [0, 0, 1]])
    >>> rescale_transforms(shift, (100, 200), (400, 800))[:2, 2].tolist()
    [8.0, -4.0]
    """
    sy = to_shape[0] / from_shape[0]
    sx = to_shape[1] / from_shape[1]
    resize = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return resize @ np.asarray(transforms, dtype=np.float64) @ np.linalg.inv(resize)


def _corners(shape):
    """The four image corners as homogeneous columns ``(3, 4)``."""
    height, width = shape[:2]
    return np.array(
        [[0, width - 1, 0, width - 1], [0, 0, height - 1, height - 1], [1, 1, 1, 1]], dtype=float
    )


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
    return [
        (np.array([col, row]) - centre, float(surface[row, col]))
        for row, col in zip(rows[order], cols[order])
    ]


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
        all of one shape. A lazy sequence works: each image is fetched about
        twice.
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
    >>> from napari_focus_stack.synthetic import simulate_stack
    >>> sim = simulate_stack((192, 256), 5, texture="noise", breathing=0.04, seed=2)
    >>> result = estimate_transforms([registration_image(f) for f in sim.frames])
    >>> result.reference, np.round(result.transforms[:, 0, 0], 2).tolist()
    (2, [0.98, 0.99, 1.0, 1.01, 1.02])
    """
    _check_mode(mode)
    n = len(images)
    reference = n // 2 if reference is None else int(reference)
    if not 0 <= reference < n:
        raise ValueError(f"reference must be a frame index from 0 to {n - 1}, got {reference}")
    if mode == "none" or n == 1:
        identity = np.tile(np.eye(3), (n, 1, 1))
        return AlignmentResult(identity, reference, mode, np.ones(max(n - 1, 0)))
    pyramids = _Pyramids(images)
    pyramids[0]  # noqa: B018 -- fixes the shape every other image is checked against

    def step(k):  # each pair on its own: both pyramids built here, in parallel with the others
        return _register(pyramids.build(k), pyramids.build(k + 1), mode, None)

    steps = in_parallel(step, range(n - 1))
    shape = pyramids.shape
    matrices = [matrix for matrix, _ in steps]
    quality = np.array([q for _, q in steps])
    messages = []
    usable = _recheck_steps(matrices, quality, pyramids, mode, messages)
    transforms, failed = _compose(matrices, usable, reference, pyramids, mode, messages)
    transforms = transforms @ np.linalg.inv(transforms[reference])
    if full_shape is not None:
        transforms = rescale_transforms(transforms, shape, full_shape)
    transforms[reference] = np.eye(3)  # exactly, without rounding: warp_frame then skips it
    return AlignmentResult(transforms, reference, mode, quality, failed, messages)


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
    deviation = np.array(
        [_corner_distance(m, _trend(matrices, usable, k), shape) for k, m in enumerate(matrices)]
    )
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


# --------------------------------------------------------------------------
# Exposure
# --------------------------------------------------------------------------


def estimate_gains(images, transforms, reference=None, *, full_shape=None):
    """Per-frame, per-channel exposure of every frame relative to the reference.

    Defocus changes local contrast but not local means, so exposures are
    compared through the means of large tiles of the region every frame
    covers, in the reference geometry. The gain is the ratio of the overall
    means; an offset is fitted as well (a line through the tile means) only
    where the tiles show one clearly: with the blur changing between frames,
    contrast alone cannot tell an offset from a gain.

    Parameters
    ----------
    images : sequence of ndarray
        Frames ``(y, x)`` or ``(y, x, 3)``, all of one shape, any dtype;
        reduced ones are enough (and fast).
    transforms : ndarray
        ``(Z, 3, 3)`` from :func:`estimate_transforms`.
    reference : int, optional
        The reference frame; the middle one by default.
    full_shape : tuple of int, optional
        ``(Y, X, ...)`` of the frames ``transforms`` are expressed in, when
        ``images`` are reduced copies; by default the images' own.

    Returns
    -------
    gains, offsets : ndarray of float64
        ``(Z,)`` for gray, ``(Z, 3)`` for RGB, such that
        ``frame_k ~ gains[k] * reference + offsets[k]`` (offsets in the
        images' value units); 1 and 0 for the reference. Gains are kept in
        [0.5, 2] (a frame beyond is not flicker but a failed frame).

    Examples
    --------
    >>> from napari_focus_stack.synthetic import simulate_stack
    >>> sim = simulate_stack((96, 128), 5, rgb=True, gain=0.1, seed=3)
    >>> gains, offsets = estimate_gains(sim.frames, sim.transforms)
    >>> bool(np.abs(gains - sim.gains).max() < 0.01)
    True
    """
    n = len(images)
    reference = n // 2 if reference is None else int(reference)
    small = [_exposure_image(images[k]) for k in range(n)]
    shape = small[reference][1].shape
    source_shape = np.shape(images[reference]) if full_shape is None else full_shape
    transforms = rescale_transforms(transforms, source_shape, shape)
    region = np.ones(shape, dtype=bool)
    for transform in transforms:
        region &= coverage_mask(transform, shape, shape)
    reference_values, reference_clipped = small[reference]
    gains, offsets = [], []
    for k in range(n):
        values = warp_frame(small[k][0], transforms[k], shape).reshape(reference_values.shape)
        clipped = warp_frame(small[k][1].view(np.uint8), transforms[k], shape) > 0
        # Clipped highlights would pull the means down: compare other pixels.
        pixels = region & ~reference_clipped & ~clipped
        reference_means = _tile_means(reference_values, pixels)
        gain, offset = _exposure_fit(reference_means, _tile_means(values, pixels))
        gains.append(gain)
        offsets.append(offset)
    gains, offsets = np.array(gains), np.array(offsets)
    gains[reference], offsets[reference] = 1.0, 0.0
    np.clip(gains, *_GAIN_RANGE, out=gains)
    return (gains[:, 0], offsets[:, 0]) if np.ndim(images[reference]) == 2 else (gains, offsets)


def shrink(image, max_side):
    """``image`` reduced by a power of two (area average) so its long side is at most ``max_side``."""
    factor = reduction_factor(image.shape, max_side)
    if factor == 1:
        return image
    size = (-(-image.shape[1] // factor), -(-image.shape[0] // factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA).reshape(size[::-1] + image.shape[2:])


def _exposure_image(image):
    """``image`` shrunk to :data:`GAIN_MAX_SIDE`, float32 ``(y, x, C)``, and where it was clipped.

    A pixel of the small image counts as clipped when any full-size pixel
    it covers was within 2 % of an integer dtype's full scale.
    """
    image = np.asarray(image)
    factor = reduction_factor(image.shape, GAIN_MAX_SIDE)
    size = (-(-image.shape[1] // factor), -(-image.shape[0] // factor))
    channels = 1 if image.ndim == 2 else image.shape[2]
    values = cv2.resize(image.astype(np.float32), size, interpolation=cv2.INTER_AREA)
    if image.dtype.kind in "ui":
        limit = 0.98 * np.iinfo(image.dtype).max
        clipped = cv2.inRange(image, (0,) * channels, (limit,) * channels) == 0
    else:
        clipped = np.zeros(image.shape[:2], dtype=bool)
    clipped = cv2.resize(clipped.view(np.uint8), size, interpolation=cv2.INTER_AREA) > 0
    return values.reshape(size[::-1] + (channels,)), clipped


def _tile_means(image, pixels):
    """``(T, C)`` float64 means of ``image`` over ``pixels`` in each tile they fill."""
    weight = pixels.astype(np.float32)
    size = (_GAIN_TILES[1], _GAIN_TILES[0])
    weighted = image.astype(np.float32) * weight[..., None]
    sums = cv2.resize(weighted, size, interpolation=cv2.INTER_AREA)
    covered = cv2.resize(weight, size, interpolation=cv2.INTER_AREA)
    full = covered >= _GAIN_TILE_COVERAGE
    if not full.any():  # the frames share too little: use what there is
        full = covered > 0
    means = sums.reshape(covered.shape + (-1,))[full] / covered[full][:, None]
    return means.astype(np.float64)


def _exposure_fit(x, y):
    """Per column, gain and offset of ``y ~ gain * x + offset`` from tile means.

    The offset is kept only where it stands out: the tile means must spread
    (a flat or repetitive scene has no lever arm) and the line's intercept
    must exceed :data:`_OFFSET_MIN_T` standard errors (blur leaking across
    tile borders makes the errors larger than the fit assumes). Otherwise
    ``gain = mean(y) / mean(x)``, which blur cannot bias.
    """
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    ratio = y_mean / np.maximum(x_mean, 1e-12)
    spread = np.maximum(((x - x_mean) ** 2).sum(axis=0), 1e-12)
    levered = np.sqrt(spread / len(x)) >= _OFFSET_MIN_SPREAD * x_mean
    if len(x) < 4 or not levered.any():
        return ratio, np.zeros_like(ratio)
    slope = ((x - x_mean) * (y - y_mean)).sum(axis=0) / spread
    intercept = y_mean - slope * x_mean
    residual = ((y - slope * x - intercept) ** 2).sum(axis=0) / (len(x) - 2)
    intercept_error = np.sqrt(residual * (1 / len(x) + x_mean**2 / spread))
    significant = levered & (np.abs(intercept) > _OFFSET_MIN_T * intercept_error)
    return np.where(significant, slope, ratio), np.where(significant, intercept, 0.0)


# --------------------------------------------------------------------------
# Applying transforms
# --------------------------------------------------------------------------


#: Output pixels resampled at a time on the host: the coordinate maps of a
#: band take 8 bytes per pixel (32 MiB); larger calls keep OpenCV's threads
#: busier (one 12 MP remap: 0.11 s, in 64-row bands: 0.16 s).
HOST_WARP_BAND_PIXELS = 2**22


def source_coordinates(transform, rows, cols, xp=np):
    """Where output pixels ``rows`` x ``cols`` come from in the frame: float32 ``(x, y)`` maps.

    Computed in float32 from the output pixel's own coordinates, in a fixed
    order of operations, so a pixel gets the same source position whichever
    tile or band it is computed in, with NumPy or CuPy: tiled resampling is
    exactly whole-image resampling, and the GPU's equals the CPU's.

    Examples
    --------
    >>> shift = np.array([[1.0, 0, 0.5], [0, 1, -2], [0, 0, 1]])
    >>> x, y = source_coordinates(shift, slice(0, 2), slice(3, 5))
    >>> x.tolist(), y.tolist()
    ([[3.5, 4.5], [3.5, 4.5]], [[-2.0, -2.0], [-1.0, -1.0]])
    """
    m = np.asarray(transform, dtype=np.float64)[:2].astype(np.float32)
    x = xp.arange(cols.start, cols.stop, dtype=xp.float32)
    y = xp.arange(rows.start, rows.stop, dtype=xp.float32)[:, None]
    sx = x * m[0, 0] + (y * m[0, 1] + m[0, 2])
    sy = x * m[1, 0] + (y * m[1, 1] + m[1, 2])
    return sx, sy


def _full(shape):
    return slice(0, shape[0]), slice(0, shape[1])


def warp_frame(frame, transform, out_shape, gain=None, offset=None, *, interpolation="linear", region=None):
    """Resample a frame into the reference geometry, correcting its exposure.

    Parameters
    ----------
    frame : ndarray
        ``(Y, X)`` or ``(Y, X, C)``, uint8, uint16 or float32.
    transform : ndarray
        ``(3, 3)``, maps output (reference) pixel coordinates to ``frame``'s.
    out_shape : tuple of int
        ``(Y', X', ...)`` of the output.
    gain, offset : float or array_like, optional
        Exposure of the frame relative to the reference, per channel
        (:func:`estimate_gains`): the output is ``(frame - offset) / gain``.
    interpolation : {"linear", "cubic"}, optional
        Bicubic (Keys, a = -0.75) keeps more fine detail, at about 2.5 times
        the cost.
    region : tuple of slice, optional
        ``(rows, cols)`` of the output to make (a tile); the pixels are
        exactly those of the whole output (:func:`source_coordinates`).

    Returns
    -------
    ndarray
        ``(Y', X'[, C])`` (or the region's shape) in ``frame``'s dtype
        (rounded and clipped). Pixels that map outside the frame repeat its
        border (see :func:`coverage_mask`). When nothing changes, ``frame``
        itself (or a view of it).

    Examples
    --------
    >>> frame = np.arange(12, dtype=np.uint8).reshape(3, 4)
    >>> shift = np.array([[1.0, 0, 1], [0, 1, 0], [0, 0, 1]])  # frame = reference moved left
    >>> warp_frame(frame, shift, (3, 4))[0].tolist()
    [1, 2, 3, 3]
    """
    rows, cols = region if region is not None else _full(out_shape)
    transform = np.asarray(transform, dtype=np.float64)
    if np.array_equal(transform, np.eye(3)) and frame.shape[:2] == tuple(out_shape[:2]):
        warped = frame if region is None else frame[rows, cols]
    else:
        kernel = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}[interpolation]
        warped = np.empty((rows.stop - rows.start, cols.stop - cols.start) + frame.shape[2:], frame.dtype)
        step = max(1, HOST_WARP_BAND_PIXELS // max(1, cols.stop - cols.start))
        for start in range(rows.start, rows.stop, step):
            band = slice(start, min(rows.stop, start + step))
            sx, sy = source_coordinates(transform, band, cols)
            out = warped[band.start - rows.start : band.stop - rows.start]
            result = cv2.remap(frame, sx, sy, kernel, dst=out, borderMode=cv2.BORDER_REPLICATE)
            if result is not out and result.size:  # OpenCV made its own (a single channel's 2-D view)
                out[...] = result.reshape(out.shape)
    if gain is None and offset is None:
        return warped
    return _correct_exposure(warped, gain, offset)


def _correct_exposure(image, gain, offset):
    """``(image - offset) / gain`` per channel, rounded and clipped to ``image``'s dtype."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    gain = np.broadcast_to(np.asarray(1.0 if gain is None else gain, float), (channels,))
    offset = np.broadcast_to(np.asarray(0.0 if offset is None else offset, float), (channels,))
    # One affine colour transform: scales, shifts and saturates in one pass.
    matrix = np.zeros((channels, channels + 1))
    matrix[np.arange(channels), np.arange(channels)] = 1 / gain
    matrix[:, channels] = -offset / gain
    return cv2.transform(np.ascontiguousarray(image), matrix).reshape(image.shape)


def _region_corners(transform, rows, cols):
    """Where the four corner pixels of ``rows`` x ``cols`` map in the frame (float64 ``x``, ``y``)."""
    x = np.array([cols.start, cols.stop - 1, cols.start, cols.stop - 1], float)
    y = np.array([rows.start, rows.start, rows.stop - 1, rows.stop - 1], float)
    return (np.asarray(transform, float) @ np.stack([x, y, np.ones(4)]))[:2]


def _inside_outline(transform, frame_shape, rows, cols):
    """True when every output pixel of ``rows`` x ``cols`` maps inside the frame's pixel area."""
    height, width = frame_shape[:2]
    sx, sy = _region_corners(transform, rows, cols)
    # the outline maps to a convex quadrilateral; a margin of a few float32
    # steps covers the rounding of source_coordinates
    margin = 8 * float(np.spacing(np.float32(max(np.abs(sx).max(), np.abs(sy).max(), 1.0))))
    inside_x = sx.min() >= -0.5 + margin and sx.max() < width - 0.5 - margin
    return inside_x and sy.min() >= -0.5 + margin and sy.max() < height - 0.5 - margin


def _outside_or_none(transform, frame_shape, rows, cols, xp=np):
    """:func:`outside_frame`, or None when the region's outline shows every pixel is inside."""
    if _inside_outline(transform, frame_shape, rows, cols):
        return None
    return outside_frame(transform, frame_shape, rows, cols, xp)


def outside_frame(transform, frame_shape, rows, cols, xp=np):
    """Output pixels ``rows`` x ``cols`` whose source position is outside the frame's pixel area (bool).

    The source position is :func:`source_coordinates`'; on the host the mask
    is found row by row as an interval (:func:`_covered_columns`), which
    gives the same pixels several times faster.
    """
    height, width = frame_shape[:2]
    if xp is np:
        first, stop = _covered_columns(transform, frame_shape, rows, cols)
        outside = np.ones((rows.stop - rows.start, cols.stop - cols.start), dtype=bool)
        for row, a, b in zip(outside, (first - cols.start).tolist(), (stop - cols.start).tolist()):
            row[a:b] = False
        return outside
    sx, sy = source_coordinates(transform, rows, cols, xp)
    outside = (sx < -0.5) | (sx >= width - 0.5)
    outside |= (sy < -0.5) | (sy >= height - 0.5)
    return outside


def _covered_columns(transform, frame_shape, rows, cols):
    """Per output row, the columns ``[first, stop)`` whose source position lies in the frame.

    Along a row, :func:`source_coordinates` is ``x * a + c`` in float32, which
    is monotonic in ``x`` (rounding is): each of the four bounds holds on a
    prefix or a suffix of the row, found by bisection on the same float32
    expressions, so the interval is exactly where the per-pixel test holds.
    """
    height, width = frame_shape[:2]
    m = np.asarray(transform, dtype=np.float64)[:2].astype(np.float32)
    y = np.arange(rows.start, rows.stop, dtype=np.float32)
    first = np.full(y.shape, cols.start, dtype=np.int64)
    stop = np.full(y.shape, cols.stop, dtype=np.int64)
    axes = ((m[0, 0], y * m[0, 1] + m[0, 2], -0.5, width - 0.5), (m[1, 0], y * m[1, 1] + m[1, 2], -0.5, height - 0.5))
    for a, c, low, high in axes:

        def value(x, a=a, c=c):
            return x.astype(np.float32) * a + c

        # where value >= low, and where value >= high (which must not hold)
        for bound, keep_above in ((np.float32(low), True), (np.float32(high), False)):
            if a >= 0:  # non-decreasing: value >= bound from ``edge`` on
                edge = _first_true(lambda x: value(x) >= bound, cols, len(y))
                if keep_above:
                    first = np.maximum(first, edge)
                else:
                    stop = np.minimum(stop, edge)
            else:  # non-increasing: value >= bound up to ``edge``
                edge = _first_true(lambda x: value(x) < bound, cols, len(y))
                if keep_above:
                    stop = np.minimum(stop, edge)
                else:
                    first = np.maximum(first, edge)
    return first, np.maximum(stop, first)


def _first_true(predicate, cols, count):
    """Per row, the first column of ``cols`` where the monotonic ``predicate`` holds (``cols.stop`` if none)."""
    lo = np.full(count, cols.start, dtype=np.int64)
    hi = np.full(count, cols.stop, dtype=np.int64)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = (lo + hi) // 2
        holds = predicate(mid)
        hi = np.where(open_ & holds, mid, hi)
        lo = np.where(open_ & ~holds, mid + 1, lo)


def coverage_mask(transform, frame_shape, out_shape):
    """Where a frame warped by ``transform`` has real pixels (not repeated border).

    Parameters
    ----------
    transform : ndarray
        ``(3, 3)``, maps output pixel coordinates to the frame's.
    frame_shape, out_shape : tuple of int
        ``(Y, X, ...)`` of the frame and of the output.

    Returns
    -------
    ndarray of bool
        ``(Y', X')``: True where the output pixel's centre maps inside the
        frame's pixel area (at the positions :func:`source_coordinates` gives).

    Examples
    --------
    >>> shift = np.array([[1.0, 0, 1], [0, 1, 0], [0, 0, 1]])
    >>> coverage_mask(shift, (3, 4), (3, 4))[0].tolist()
    [True, True, True, False]
    """
    outside = _outside_or_none(transform, frame_shape, *_full(out_shape))
    return np.ones(out_shape[:2], dtype=bool) if outside is None else ~outside


# --------------------------------------------------------------------------
# A stack seen through its alignment
# --------------------------------------------------------------------------


class AlignedFrames:
    """Frames resampled into the reference frame's geometry, exposure corrected.

    A frame sequence like the one it wraps (``len``, indexing, ``dtype``,
    ``shape``); frames are warped when read, so the pipeline's read-ahead
    thread does the warping while the previous frame is measured.
    ``warp_seconds`` adds up the time spent warping.
    """

    #: Marks frames that are resampled when read (see :func:`~.pipeline.device_warped`).
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
            frame, self.transforms[k], self.shape[1:], self.gains[k], self.offsets[k],
            interpolation="cubic", region=region,
        )  # fmt: skip
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
        rows, cols = region if region is not None else _full((height, width))
        transform = np.asarray(self.transforms[k], dtype=np.float64)
        gain, offset = self.gains[k], self.offsets[k]
        if np.array_equal(transform, np.eye(3)):
            part = np.ascontiguousarray(frame[rows, cols])
            return WarpJob(part, None, rows, cols, (0, 0), (height, width), gain, offset)
        sx, sy = _region_corners(transform, rows, cols)
        # Keys' cubic reaches from floor(x) - 1 to floor(x) + 2; one more on
        # each side for the float32 coordinates' rounding
        x_lo, x_hi = (int(np.clip(v, 0, width - 1)) for v in (math.floor(sx.min()) - 2, math.floor(sx.max()) + 3))
        y_lo, y_hi = (int(np.clip(v, 0, height - 1)) for v in (math.floor(sy.min()) - 2, math.floor(sy.max()) + 3))
        crop = np.ascontiguousarray(frame[y_lo : y_hi + 1, x_lo : x_hi + 1])
        return WarpJob(crop, transform, rows, cols, (x_lo, y_lo), (height, width), gain, offset)

    def coverage(self, k, region=None):
        """Where frame ``k`` has real pixels: a bool mask (of ``region`` if given), or None for everywhere."""
        rows, cols = region if region is not None else _full(self.shape[1:3])
        outside = _outside_or_none(self.transforms[k], self.shape[1:3], rows, cols)
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
        from ..fuse import to_dtype

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
        return _outside_or_none(self.transform, self.frame_shape, self.rows, self.cols, be.xp)
