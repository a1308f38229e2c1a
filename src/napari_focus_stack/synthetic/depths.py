"""Depth maps for the surface model: the true depth, in slices, of every pixel.

:func:`make_depth` draws one of :data:`KINDS_DEPTH` (a slope, a dome, steps,
waves), inside the stack with a margin at either end.
"""

import numpy as np

from .textures import _check_shape, _octave_noise


def _stretch(surface, low, high):
    """Linearly map ``surface`` so that its minimum is ``low`` and its maximum ``high``."""
    span = float(surface.max() - surface.min())
    unit = (surface - surface.min()) / span if span > 0 else np.zeros_like(surface)
    return (low + (high - low) * unit).astype(np.float32)


def _unit_grid(shape):
    """Row and column coordinates scaled to [0, 1], as broadcastable columns and rows."""
    rows = np.linspace(0, 1, shape[0], dtype=np.float32)[:, None]
    cols = np.linspace(0, 1, shape[1], dtype=np.float32)[None, :]
    return rows, cols


def _slope_depth(shape, low, high, rng):
    """Depth rising linearly from the left edge to the right edge."""
    _, cols = _unit_grid(shape)
    return np.broadcast_to(_stretch(cols, low, high), shape).copy()


def _dome_depth(shape, low, high, rng):
    """Gaussian bump near the centre, deepest at its top."""
    rows, cols = _unit_grid(shape)
    centre_y, centre_x = rng.uniform(0.4, 0.6, 2)
    height, width = shape
    aspect = width / height  # round in pixels, not in unit coordinates
    radius2 = ((rows - centre_y) / aspect) ** 2 + (cols - centre_x) ** 2
    return _stretch(np.exp(-radius2 / (2 * 0.3**2)), low, high)


def _steps_depth(shape, low, high, rng):
    """3 to 5 flat terraces with sharp edges, at levels that are not whole slices."""
    n_levels = int(rng.integers(3, 6))
    levels = np.linspace(low, high, n_levels)
    spacing = (high - low) / (n_levels - 1)
    levels = np.clip(levels + rng.uniform(-0.2, 0.2, n_levels) * spacing, low, high)
    coarse_octave = max(0, int(np.log2(min(shape))) - 2)  # a few blobs across
    field = _octave_noise(shape, rng, [coarse_octave])
    thresholds = np.quantile(field[::4, ::4], np.linspace(0, 1, n_levels + 1)[1:-1])
    return levels[np.digitize(field, thresholds)].astype(np.float32)


def _waves_depth(shape, low, high, rng):
    """Smooth sum of a wave along X and a wave along Y."""
    rows, cols = _unit_grid(shape)
    phase_y, phase_x = rng.uniform(0, 2 * np.pi, 2)
    surface = np.sin(2 * np.pi * 1.5 * cols + phase_x) + np.sin(2 * np.pi * 1.2 * rows + phase_y)
    return _stretch(surface, low, high)


_DEPTHS = {
    "slope": _slope_depth,
    "dome": _dome_depth,
    "steps": _steps_depth,
    "waves": _waves_depth,
}


#: Names accepted by :func:`make_depth`.
KINDS_DEPTH = tuple(_DEPTHS)


def make_depth(kind, shape, n_slices, *, seed=0):
    """Make a true surface depth for a stack of ``n_slices``.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS_DEPTH`: ``"slope"`` (linear ramp along X),
        ``"dome"`` (smooth Gaussian bump), ``"steps"`` (3 to 5 flat terraces
        with sharp edges, at levels that are not all whole slices) or
        ``"waves"`` (smooth sinusoidal surface).
    shape : tuple of int
        ``(Y, X)`` size.
    n_slices : int
        Number of slices of the stack, at least 3.
    seed : int, optional
        Seed of the random generator (placement, levels, phases).

    Returns
    -------
    depth : ndarray of float32
        ``(Y, X)`` depth in slice units (0 = first slice), spanning
        ``[0.5, n_slices - 1.5]`` so that the surface lies inside the stack
        with a margin.

    Examples
    --------
    >>> depth = make_depth("slope", (4, 5), 6)
    >>> depth[0].tolist()
    [0.5, 1.5, 2.5, 3.5, 4.5]
    """
    if kind not in _DEPTHS:
        raise ValueError(f"depth kind must be one of {', '.join(KINDS_DEPTH)}, got {kind!r}")
    if n_slices < 3:
        raise ValueError(f"n_slices must be at least 3 to leave a margin, got {n_slices}")
    rng = np.random.default_rng(seed)
    return _DEPTHS[kind](_check_shape(shape), 0.5, n_slices - 1.5, rng)
