"""Focus measures: how sharp each pixel's neighbourhood is in one frame.

Each function takes a grey float32 image (values scaled to [0, 1]) and a
:class:`~napari_focus_stack.engine.backend.Backend`, and returns a float32
map of the same shape where larger means sharper.
"""

#: Sigma of the Gaussian applied before the Laplacian: suppresses pixel noise
#: and JPEG block edges, which the bare 3x3 Laplacian would take for detail.
PRESMOOTH_SIGMA = 1.0


#: The depth is chosen on the focus scores smoothed once more, by a Gaussian
#: of this many times ``smoothing``: the fused image wants the small window
#: (sharp edges, thin structures), a depth map wants agreement over a wider
#: area (steady sub-slice depth on smooth surfaces, less speckle). 4 keeps the
#: depth accuracy that the 8 px window gave on smooth surfaces
#: (tests/engine/test_pipeline.py).
DEPTH_SMOOTHING = 4


def depth_sigma(smoothing):
    """Sigma of the extra smoothing of the scores that depth selection uses."""
    return DEPTH_SMOOTHING * float(smoothing)


#: The scores are smoothed for depth as logarithms of the score plus this
#: many times the first frame's noise floor (:meth:`~.noise.NoiseProbe.floor`;
#: one number for every frame, tile and device), which keeps the logarithm
#: of a textureless pixel steady; without a noise estimate, of the score
#: plus :data:`MIN_LOG_FLOOR`.
LOG_FLOOR_FACTOR = 1.0
MIN_LOG_FLOOR = 1e-12


def selection_scores(score, sigma, floor, be, *, work=None, out=None):
    """The scores depth is selected on: their geometric mean over a Gaussian of ``sigma``.

    ``exp(G(ln(score + floor)))``. Neighbours vote on the ratios between a
    pixel's frames, not on absolute energies: a dark fibre or a bright edge
    has a hundred times the energy of the faint texture beside it, and a
    plain Gaussian of the scores spread its frame 8-10 px into that texture
    (the depth halo of thin structures), while in the logarithm each
    neighbour counts by how much it prefers one frame to another. Speckle on
    real stacks falls too (cells3d 2.73 % to 0.64 %; docs/ALGORITHMS.md).
    ``work`` (free scratch of the score's shape) and ``out`` are optional
    buffers; ``score`` is left as it is.
    """
    xp = be.xp
    logs = xp.add(score, xp.float32(max(float(floor), MIN_LOG_FLOOR)), out=work)
    xp.log(logs, out=logs)
    smoothed = be.gaussian(logs, sigma, out=out)
    return xp.exp(smoothed, out=smoothed)


def laplacian_energy(gray, radius, be, *, work=None, out=None):
    """Mean squared Laplacian of Gaussian over a ``(2 radius + 1)`` square window.

    The squared Laplacian is the focus measure that ranks best for accuracy
    and robustness in Pertuz et al. (2013); the window mean makes it a
    "sum-modified-Laplacian"-style energy that is large wherever detail is
    sharp and drops smoothly with defocus on every side of the focal plane.
    ``work`` is an optional scratch array the size of ``gray``.

    Examples
    --------
    >>> import numpy as np
    >>> from napari_focus_stack.engine.backend import get_backend
    >>> be = get_backend("cpu")
    >>> sharp = np.zeros((32, 32), np.float32); sharp[::2] = 1
    >>> blurred = be.gaussian(sharp, 2.0)
    >>> e_sharp, e_blur = laplacian_energy(sharp, 3, be), laplacian_energy(blurred, 3, be)
    >>> bool(e_sharp.mean() > 10 * e_blur.mean())
    True
    """
    smoothed = be.gaussian(gray, PRESMOOTH_SIGMA, out=work)
    lap = be.laplacian(smoothed, out=out)
    be.xp.multiply(lap, lap, out=lap)
    return be.box_mean(lap, radius, out=work)


def focus_measure(gray, radius, smoothing, be, *, work=None, out=None):
    """Laplacian energy in a window of ``radius``, smoothed with sigma ``smoothing``.

    The smoothing makes neighbouring pixels agree on their best slice, which
    removes isolated wrong choices in weakly textured areas. ``work`` is
    scratch space; the result goes to ``out`` when given (same shape as
    ``gray``, float32); ``gray`` is left as it was.
    """
    energy = laplacian_energy(gray, radius, be, work=work, out=out)
    return be.gaussian(energy, smoothing, out=out)


class FocusMeasure:
    """:func:`focus_measure` for a run of frames, reusing its buffers.

    Allocating fresh image-sized arrays for every frame costs page faults
    comparable to the filters themselves on the CPU. The scores are written
    to the same buffer for every frame: callers keep what they need of them
    (the selector its own smoothed copy) before the next call.
    """

    def __init__(self, radius, smoothing, be):
        self.radius, self.smoothing, self.be = radius, smoothing, be
        self._buffers = None

    def __call__(self, gray):
        """Focus scores of ``gray``; valid until the next call."""
        if self._buffers is None or self._buffers[0].shape != gray.shape:
            xp = self.be.xp
            self._buffers = [xp.empty_like(gray, dtype=xp.float32) for _ in range(2)]
        work, out = self._buffers
        return focus_measure(gray, self.radius, self.smoothing, self.be, work=work, out=out)

    @property
    def scratch(self):
        """The work buffer, free between calls (None before the first)."""
        return None if self._buffers is None else self._buffers[0]

    def release(self):
        """Free the buffers (before the result is assembled, to lower peak memory)."""
        self._buffers = None
