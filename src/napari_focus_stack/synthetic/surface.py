"""Surface model: a textured surface blurred at each pixel by its own depth ("gather").

The first model of the package: fast, and exact for smooth surfaces, but it has
no occlusion (see :mod:`.layered`).
"""

from dataclasses import dataclass

import cv2
import numpy as np
from skimage import color, data, metrics, transform, util

#: Memory for one horizontal band of the renderer: its bank of blurred copies
#: and its blended slices. Bands keep 12 MP x 10 RGB renders within ~1 GB.
_BAND_BYTES = 256 * 2**20

#: Largest image side cv2.remap accepts (it keeps coordinates in 16 bits).
_REMAP_MAX_SIDE = 32766


# --------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------


def _check_shape(shape):
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be two positive sizes (Y, X), got {shape}")
    return shape


def _gaussian_blur(image, sigma):
    """Gaussian blur with a kernel reaching 4 sigma and mirrored borders."""
    radius = max(1, int(np.ceil(4 * sigma)))
    size = 2 * radius + 1
    return cv2.GaussianBlur(
        image, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT
    )


def _octave_noise(shape, rng, octaves):
    """Zero-mean, unit-std random field with equal power in each octave.

    Octave ``k`` is smoothed white noise at ``1 / 2**k`` of the resolution,
    enlarged to ``shape``: its features are about ``2**k`` pixels wide. Equal
    power per octave gives a pink (1/f) spectrum over the octaves chosen.
    """
    height, width = shape
    field = np.zeros(shape, dtype=np.float32)
    for octave in octaves:
        factor = 2**octave
        small_shape = (-(-height // factor) + 2, -(-width // factor) + 2)
        small = _gaussian_blur(rng.standard_normal(small_shape, dtype=np.float32), 0.8)
        size = (small_shape[1] * factor, small_shape[0] * factor)
        large = small if factor == 1 else cv2.resize(small, size, interpolation=cv2.INTER_CUBIC)
        field += large[factor : factor + height, factor : factor + width] / small.std()
    return (field - field.mean()) / max(float(field.std()), 1e-12)


def _to_unit_range(field):
    """Map a zero-mean, unit-std field to [0, 1], clipping at +-3 std."""
    return np.clip(0.5 + field / 6, 0, 1).astype(np.float32)


def _noise_texture(shape, rgb, rng):
    """Pink noise with detail from 1 to 32 pixels; RGB channels share 56 % of it."""
    luminance = _octave_noise(shape, rng, range(6))
    if not rgb:
        return _to_unit_range(luminance)
    channels = [0.75 * luminance + 0.66 * _octave_noise(shape, rng, range(1, 6)) for _ in "rgb"]
    return _to_unit_range(np.stack(channels, axis=-1))


def _cells_texture(shape, rgb, rng):
    """Textured elliptic cells with nuclei on a darker, smooth background."""
    height, width = shape
    n_channels = 3 if rgb else 1
    background_colour = np.array([0.8, 0.9, 1.2] if rgb else [1.0], dtype=np.float32)
    background = (0.12 + 0.04 * _octave_noise(shape, rng, range(5, 8)))[..., None]
    background = background * background_colour

    # Semi-axes of 4 % to 9 % of the image, enough cells to cover about 45 %.
    mean_radius = max(3, 0.065 * min(shape))
    n_cells = int(np.ceil(0.45 * height * width / (np.pi * mean_radius**2)))
    cells = np.zeros((height, width, n_channels), dtype=np.float32)
    coverage = np.zeros(shape, dtype=np.float32)
    for _ in range(n_cells):
        centre = (float(rng.uniform(0, width)), float(rng.uniform(0, height)))
        axes = tuple(np.clip(min(shape) * rng.uniform(0.04, 0.09, 2), 3, None).tolist())
        angle = float(rng.uniform(0, 180))
        brightness = rng.uniform(0.45, 0.75)
        hue = rng.uniform(0.25, 1.0, n_channels) if rgb else np.ones(1)
        body = brightness * hue / hue.max()
        nucleus = np.array([0.35, 0.45, 1.0]) if rgb else np.array([0.95])
        _fill_ellipse(cells, centre, axes, angle, body)
        _fill_ellipse(cells, centre, (0.4 * axes[0], 0.4 * axes[1]), angle, nucleus)
        _fill_ellipse(coverage, centre, axes, angle, 1.0)

    # A slight blur anti-aliases the drawn edges, as optics would.
    coverage = _gaussian_blur(coverage, 0.7)[..., None]
    cells = _gaussian_blur(cells, 0.7).reshape(height, width, n_channels)
    grain = np.clip(1 + 0.3 * _octave_noise(shape, rng, range(3)), 0, 2)[..., None]
    image = background * (1 - coverage) + cells * grain
    return np.clip(image if rgb else image[..., 0], 0, 1).astype(np.float32)


def _fill_ellipse(image, centre, axes, angle, value):
    """Draw a filled ellipse in place, at 1/16 pixel precision."""
    shift = 4
    scale = 2**shift
    cv2.ellipse(
        image,
        (round(centre[0] * scale), round(centre[1] * scale)),
        (max(1, round(axes[0] * scale)), max(1, round(axes[1] * scale))),
        angle,
        0,
        360,
        tuple(float(v) for v in np.atleast_1d(value)),
        thickness=-1,
        lineType=cv2.LINE_8,
        shift=shift,
    )


def _grid_texture(shape, rgb, rng):
    """Lines every ``period`` px (12 to 20) with a dot in the middle of each cell."""
    period = int(rng.integers(12, 21))
    phase_y, phase_x = rng.uniform(0, period, 2)
    rows = np.arange(shape[0], dtype=np.float32)
    cols = np.arange(shape[1], dtype=np.float32)
    lines = np.maximum(
        _periodic_peak(rows, period, phase_y, 0.8)[:, None],
        _periodic_peak(cols, period, phase_x, 0.8)[None, :],
    )
    dot_radius = period / 6
    dots = (
        _periodic_peak(rows, period, phase_y + period / 2, dot_radius)[:, None]
        * _periodic_peak(cols, period, phase_x + period / 2, dot_radius)[None, :]
    )
    if rgb:
        background = np.array([0.10, 0.10, 0.15], dtype=np.float32)
        line_colour = np.array([0.75, 0.55, 0.15], dtype=np.float32)
        dot_colour = np.array([0.15, 0.65, 0.85], dtype=np.float32)
        image = background + lines[..., None] * line_colour + dots[..., None] * dot_colour
    else:
        image = 0.1 + 0.6 * lines + 0.85 * dots
    return np.clip(image, 0, 1).astype(np.float32)


def _periodic_peak(coords, period, phase, width):
    """Gaussian profile of the given width around ``phase + n * period``."""
    offset = np.mod(coords - phase + period / 2, period) - period / 2
    return np.exp(-0.5 * (offset / width) ** 2).astype(np.float32)


def _photo_texture(shape, rgb, rng):
    """scikit-image's astronaut (RGB) or camera (gray), resized to ``shape``."""
    photo = util.img_as_float32(data.astronaut() if rgb else data.camera())
    resized = transform.resize(photo, shape + photo.shape[2:], order=1, anti_aliasing=True)
    return np.clip(resized, 0, 1).astype(np.float32)


def _mixed_texture(shape, rgb, rng):
    """Cells over pink noise: cell structure, and texture nearly everywhere."""
    cells = _cells_texture(shape, rgb, rng)
    noise = _noise_texture(shape, rgb, rng)
    return np.clip(0.6 * cells + 0.4 * noise, 0, 1).astype(np.float32)


_TEXTURES = {
    "mixed": _mixed_texture,
    "noise": _noise_texture,
    "cells": _cells_texture,
    "grid": _grid_texture,
    "photo": _photo_texture,
}

#: Names accepted by :func:`make_texture`.
KINDS_TEXTURE = tuple(_TEXTURES)


def make_texture(kind, shape, *, rgb=False, seed=0):
    """Make an all-in-focus test image.

    Parameters
    ----------
    kind : str
        One of :data:`KINDS_TEXTURE`:

        ``"mixed"``
            Cells blended with pink noise: cell structure, and fine texture
            almost everywhere (the default of :func:`simulate_stack`).
        ``"noise"``
            Band-limited pink noise with detail from 1 to 32 pixels, like
            fine microscopy texture.
        ``"cells"``
            Elliptic cells with nuclei and grainy insides on a darker, smooth
            background, which leaves flat, low-texture regions.
        ``"grid"``
            Periodic lines with a dot in each cell, period 12 to 20 px.
        ``"photo"``
            scikit-image's astronaut (RGB) or camera (gray), resized to
            ``shape`` (aspect ratio not kept).
    shape : tuple of int
        ``(Y, X)`` size.
    rgb : bool, optional
        Make a colour image, ``(Y, X, 3)``, whose channels differ.
    seed : int, optional
        Seed of the random generator; the same seed gives the same image.

    Returns
    -------
    texture : ndarray of float32
        ``(Y, X)`` or ``(Y, X, 3)``, values in [0, 1].

    Examples
    --------
    >>> texture = make_texture("cells", (128, 96), rgb=True, seed=1)
    >>> texture.shape, texture.dtype.name
    ((128, 96, 3), 'float32')
    >>> bool(texture.min() >= 0 and texture.max() <= 1)
    True
    """
    if kind not in _TEXTURES:
        raise ValueError(f"texture kind must be one of {', '.join(KINDS_TEXTURE)}, got {kind!r}")
    return _TEXTURES[kind](_check_shape(shape), bool(rgb), np.random.default_rng(seed))


# --------------------------------------------------------------------------
# Depth surfaces
# --------------------------------------------------------------------------


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


# --------------------------------------------------------------------------
# Rendering: spatially varying defocus blur
# --------------------------------------------------------------------------


def _sigma_levels(max_sigma):
    """Blur sigmas of the bank: 0, steps of 0.25 px, steps of 12.5 % above 2 px.

    Neighbouring levels are close enough that blending them linearly is
    indistinguishable from a Gaussian of the sigma in between.
    """
    levels = [0.0]
    while levels[-1] < max_sigma:
        levels.append(levels[-1] + max(0.25, levels[-1] / 8))
    return np.array(levels)


def _blur_bank(chunk, levels, rows):
    """Blur ``chunk`` at every sigma in ``levels``; keep ``rows``.

    Returns an ``(h, L, X[, C])`` array: the levels of one image row are
    adjacent. Each level is the previous one blurred by the missing sigma.
    """
    kept = chunk[rows]
    bank = np.empty((kept.shape[0], len(levels)) + kept.shape[1:], dtype=np.float32)
    bank[:, 0] = kept
    blurred = chunk
    for index in range(1, len(levels)):
        step = np.sqrt(levels[index] ** 2 - levels[index - 1] ** 2)
        blurred = _gaussian_blur(blurred, step).reshape(chunk.shape)
        bank[:, index] = blurred[rows]
    return bank


def _blend_levels(bank, position):
    """Per pixel, interpolate linearly between the bank's neighbouring levels.

    ``position`` holds the fractional level index of each pixel. Row ``y`` of
    the bank, reshaped to ``(h * L, X[, C])``, keeps its levels in rows
    ``y * L ... y * L + L - 1``, so cv2.remap's bilinear interpolation along
    those rows is a linear blend between two levels (at 1/32 steps of the
    weight, far below the difference between levels).
    """
    height, n_levels, width = bank.shape[:3]
    stacked = bank.reshape((height * n_levels,) + bank.shape[2:])
    rows = np.arange(height, dtype=np.float32)[:, None] * n_levels + position
    blended = np.empty(position.shape + bank.shape[3:], dtype=np.float32)
    for start in range(0, width, _REMAP_MAX_SIDE):
        stop = min(width, start + _REMAP_MAX_SIDE)
        columns = np.tile(np.arange(stop - start, dtype=np.float32), (height, 1))
        blended[:, start:stop] = cv2.remap(
            stacked[:, start:stop],
            columns,
            np.ascontiguousarray(rows[:, start:stop]),
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).reshape(blended[:, start:stop].shape)
    return blended


def _band_height(shape, n_levels, n_slices, n_channels):
    """Rows per band so that the bank and the blended slices fit ``_BAND_BYTES``."""
    bytes_per_row = (n_levels + n_slices) * shape[1] * n_channels * 4
    rows = max(1, _BAND_BYTES // bytes_per_row)
    return int(max(1, min(rows, shape[0], _REMAP_MAX_SIDE // n_levels)))


def _render_bands(texture, depth, n_slices, blur_per_slice):
    """Render the defocused slices band by band, in the reference geometry.

    Yields ``(rows, slices)``: a slice object over image rows, and the
    ``(Z, h, X[, C])`` float32 slices for those rows. Slice ``k`` is the
    texture blurred, at each pixel, by a Gaussian of sigma
    ``blur_per_slice * |depth - k|``.
    """
    height = depth.shape[0]
    n_channels = texture.shape[2] if texture.ndim == 3 else 1
    farthest = np.abs(np.array([depth.min(), depth.max()])[:, None] - [0, n_slices - 1]).max()
    levels = _sigma_levels(blur_per_slice * farthest)
    level_indices = np.arange(len(levels), dtype=np.float32)
    # Beyond 5 sigma the Gaussian's weight is below 1e-6: bands are seamless.
    halo = int(np.ceil(5 * levels[-1])) + 1
    band = _band_height(depth.shape, len(levels), n_slices, n_channels)
    for start in range(0, height, band):
        stop = min(height, start + band)
        chunk_start, chunk_stop = max(0, start - halo), min(height, stop + halo)
        bank = _blur_bank(
            texture[chunk_start:chunk_stop], levels, slice(start - chunk_start, stop - chunk_start)
        )
        band_depth = depth[start:stop]
        slices = np.empty((n_slices,) + bank[:, 0].shape, dtype=np.float32)
        for k in range(n_slices):
            sigma = blur_per_slice * np.abs(band_depth - k)
            position = np.interp(sigma, levels, level_indices).astype(np.float32)
            slices[k] = _blend_levels(bank, position)
        yield slice(start, stop), slices


# --------------------------------------------------------------------------
# Motion, exposure and noise
# --------------------------------------------------------------------------


def _frame_transforms(shape, n_slices, reference, jitter, breathing, rotation, drift, rng):
    """``(Z, 3, 3)`` matrices from reference to frame pixel coordinates.

    Scale and rotation about the image centre and the drift ramp linearly
    with the frame index, and are zero at ``reference``; jitter is a random
    translation per frame, also zero at ``reference``.
    """
    ramp = (np.arange(n_slices) - reference) / max(n_slices - 1, 1)
    shifts = rng.normal(0.0, 1.0, (n_slices, 2)) * jitter
    shifts[reference] = 0
    direction = rng.uniform(0, 2 * np.pi)
    shifts += np.outer(ramp * drift, [np.cos(direction), np.sin(direction)])
    centre = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])

    transforms = np.empty((n_slices, 3, 3))
    for k in range(n_slices):
        angle = np.deg2rad(rotation * ramp[k])
        linear = (1 + breathing * ramp[k]) * np.array(
            [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
        )
        transforms[k] = np.eye(3)
        transforms[k, :2, :2] = linear
        transforms[k, :2, 2] = centre + shifts[k] - linear @ centre
    return transforms


def _frame_gains(n_slices, reference, gain, rgb, rng):
    """Random exposure gains, ``(Z,)``, or ``(Z, 3)`` for RGB; 1 at ``reference``.

    Frame gains are drawn from ``[1 - gain, 1 + gain]``; for RGB they are
    multiplied by a per-channel white-balance factor from
    ``[1 - gain/4, 1 + gain/4]``.
    """
    gains = rng.uniform(1 - gain, 1 + gain, n_slices)
    if rgb:
        gains = gains[:, None] * rng.uniform(1 - gain / 4, 1 + gain / 4, (n_slices, 3))
    gains[reference] = 1
    return gains


def _warp_to_frame(image, transform):
    """Sample ``image`` (reference geometry) at ``transform^-1`` of each frame pixel."""
    inverse = np.linalg.inv(transform)[:2]
    warped = cv2.warpAffine(
        image,
        inverse,
        (image.shape[1], image.shape[0]),
        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    return warped.reshape(image.shape)


def _full_scale(dtype):
    """Value of full brightness: 255 for uint8, 65535 for uint16, 1.0 for floats."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def _quantise(image, dtype):
    """Clip a float32 [0, 1] image to that range, scale and round it to ``dtype``."""
    full = _full_scale(dtype)
    scaled = np.multiply(image, np.float32(full))
    np.clip(scaled, 0, full, out=scaled)
    if np.dtype(dtype).kind == "f":
        return scaled
    return np.rint(scaled, out=scaled).astype(dtype)


def _expose(image, gain, noise, rng, dtype):
    """Apply gain and Gaussian noise of std ``noise`` to a [0, 1] image, quantise to ``dtype``."""
    signal = image * np.asarray(gain, dtype=np.float32)
    if noise > 0:
        grain = rng.standard_normal(signal.shape, dtype=np.float32)
        grain *= np.float32(noise)
        signal += grain
    return _quantise(signal, dtype)


# --------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------


@dataclass
class SimulatedStack:
    """A simulated focal stack and the truth it was made from.

    Attributes
    ----------
    frames : ndarray
        ``(Z, Y, X)`` or ``(Z, Y, X, 3)`` in the requested dtype.
    texture : ndarray
        All-in-focus truth, ``(Y, X[, 3])``, in the frames' dtype and scale,
        without gain or noise, in the reference frame's geometry.
    depth : ndarray of float32
        ``(Y, X)`` true depth in slice units (0 = first frame), reference
        geometry.
    transforms : ndarray of float64
        ``(Z, 3, 3)`` homogeneous matrices: ``transforms[k]`` maps reference
        pixel coordinates ``(x, y, 1)`` (x = column, y = row, pixel centres
        at integers) to frame ``k``'s. Identity without motion.
    gains : ndarray of float64
        ``(Z,)`` or ``(Z, 3)`` multiplicative gain per frame (and channel).
    params : dict
        Every parameter used, for provenance.
    boundary : ndarray of bool or None
        ``(Y, X)``: pixels within 3 px of an occlusion boundary (layered
        scenes), where depth and colour change abruptly; None for a surface.
    mask : ndarray of bool or None
        ``(Y, X)``: where the depth can be observed, for scoring; None means
        :func:`textured_mask` of ``texture``.
    data_range : float or None
        Value range for PSNR and SSIM; None means the dtype's full range.
        Dim 16-bit scenes give the range their signal spans, so that SSIM
        still measures structure.
    """

    frames: np.ndarray
    texture: np.ndarray
    depth: np.ndarray
    transforms: np.ndarray
    gains: np.ndarray
    params: dict
    boundary: np.ndarray = None
    mask: np.ndarray = None
    data_range: float = None


def _stack_shape(shape, texture, depth):
    """The image shape: that of the arrays given, else ``shape``."""
    shapes = {np.shape(a)[:2] for a in (texture, depth) if not isinstance(a, str)}
    if len(shapes) > 1:
        raise ValueError(f"texture and depth arrays differ in shape: {sorted(shapes)}")
    return shapes.pop() if shapes else _check_shape(shape)


def _as_texture(texture, shape, rgb, seed):
    if isinstance(texture, str):
        return make_texture(texture, shape, rgb=rgb, seed=seed)
    texture = util.img_as_float32(np.asarray(texture))
    if texture.ndim not in (2, 3) or (texture.ndim == 3 and texture.shape[2] != 3):
        raise ValueError(f"texture array must be (Y, X) or (Y, X, 3), got {texture.shape}")
    return texture


def _as_depth(depth, shape, n_slices, seed):
    if isinstance(depth, str):
        return make_depth(depth, shape, n_slices, seed=seed)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth array must be (Y, X), got {depth.shape}")
    return depth


def simulate_stack(
    shape=(256, 256),
    n_slices=12,
    *,
    texture="mixed",
    depth="dome",
    rgb=False,
    dtype="uint8",
    blur_per_slice=1.0,
    noise=0.0,
    gain=0.0,
    jitter=0.0,
    breathing=0.0,
    rotation=0.0,
    drift=0.0,
    seed=0,
):
    """Simulate a focal stack of a textured surface, with its ground truth.

    Slice ``k`` shows the texture blurred, at each pixel, by a Gaussian of
    sigma ``blur_per_slice * |depth - k|`` pixels (sharp where the surface
    is at depth ``k``). The blur is rendered from a bank of copies blurred
    at closely spaced sigmas, blended linearly per pixel, band by band to
    bound memory. Each frame is then moved by its transform, multiplied by
    its gain, given noise, clipped and quantised.

    Parameters
    ----------
    shape : tuple of int, optional
        ``(Y, X)`` size; ignored when ``texture`` or ``depth`` is an array.
    n_slices : int, optional
        Number of frames ``Z``.
    texture : str or ndarray, optional
        A kind of :func:`make_texture`, or an all-in-focus image
        ``(Y, X[, 3])`` (integer dtypes are scaled to [0, 1], floats taken
        as [0, 1]).
    depth : str or ndarray, optional
        A kind of :func:`make_depth`, or a depth map ``(Y, X)`` in slices.
    rgb : bool, optional
        Colour stack; ignored when ``texture`` is an array.
    dtype : {"uint8", "uint16", "float32"}, optional
        Of ``frames`` and ``texture``: full range 255, 65535 or 1.0.
    blur_per_slice : float, optional
        Blur sigma (px) per slice of defocus.
    noise : float, optional
        Std of additive Gaussian noise, as a fraction of the full range
        (0.01 is moderate), drawn independently per pixel, channel and frame.
    gain : float, optional
        Largest relative exposure change: frame gains are drawn from
        ``[1 - gain, 1 + gain]`` and, for RGB, times a per-channel factor
        from ``[1 - gain/4, 1 + gain/4]`` (white-balance flicker).
    jitter : float, optional
        Std (px) of a random translation of each frame, in x and in y.
    breathing : float, optional
        Relative magnification change from the first to the last frame
        (0.1 = 10 %), ramping linearly.
    rotation : float, optional
        Rotation (degrees) from the first to the last frame, ramping linearly.
    drift : float, optional
        Translation (px) from the first to the last frame along a random
        direction, ramping linearly.
    seed : int, optional
        Seed of every random choice; the same seed gives the same stack.
        The texture and depth use it as :func:`make_texture` and
        :func:`make_depth` do.

    Returns
    -------
    SimulatedStack
        Frames and truth. The middle frame, ``n_slices // 2``, is the
        reference: identity transform, gain 1. Frame ``k`` is

        ``frame_k(p) = blurred_k(transforms[k]^-1 @ p)``

        for each frame pixel ``p = (x, y, 1)``, with ``blurred_k`` the
        defocused texture in reference geometry, where

        ``transforms[k] = T(c + shift_k) @ R(a_k) @ S(s_k) @ T(-c)``,

        ``c`` the image centre ``((X - 1) / 2, (Y - 1) / 2)``, ``t_k = (k -
        reference) / (n_slices - 1)``, ``s_k = 1 + breathing * t_k``, ``a_k =
        rotation * t_k`` and ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` in
        ``(x, y)``, and ``shift_k`` the drift ``drift * t_k`` plus the jitter.
        Frames are sampled with bicubic interpolation (OpenCV, positions to
        1/32 px) and mirrored borders.

    Examples
    --------
    >>> sim = simulate_stack((96, 128), 8, rgb=True, dtype="uint16", breathing=0.1)
    >>> sim.frames.shape, sim.frames.dtype.name
    ((8, 96, 128, 3), 'uint16')
    >>> round(float(sim.transforms[-1, 0, 0]), 3)  # scale of the last frame
    1.043
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"dtype must be uint8, uint16 or float32, got {dtype}")
    if n_slices < 1:
        raise ValueError(f"n_slices must be at least 1, got {n_slices}")
    shape = _stack_shape(shape, texture, depth)
    texture_image = _as_texture(texture, shape, rgb, seed)
    depth_map = _as_depth(depth, shape, n_slices, seed)
    rgb = texture_image.ndim == 3
    reference = n_slices // 2
    motion = dict(jitter=jitter, breathing=breathing, rotation=rotation, drift=drift)
    transforms = _frame_transforms(
        shape, n_slices, reference, **motion, rng=np.random.default_rng([seed, 1])
    )
    gains = _frame_gains(n_slices, reference, gain, rgb, np.random.default_rng([seed, 2]))
    noise_rng = np.random.default_rng([seed, 3])

    frames = np.empty((n_slices,) + texture_image.shape, dtype=dtype)
    bands = _render_bands(texture_image, depth_map, n_slices, blur_per_slice)
    if any(motion.values()):
        blurred = np.empty(frames.shape, dtype=np.float32)
        for rows, slices in bands:
            blurred[:, rows] = slices
        for k in range(n_slices):
            moved = _warp_to_frame(blurred[k], transforms[k])
            frames[k] = _expose(moved, gains[k], noise, noise_rng, dtype)
    else:
        for rows, slices in bands:
            for k in range(n_slices):
                frames[k, rows] = _expose(slices[k], gains[k], noise, noise_rng, dtype)

    params = dict(
        shape=shape,
        n_slices=n_slices,
        texture=texture if isinstance(texture, str) else "array",
        depth=depth if isinstance(depth, str) else "array",
        rgb=rgb,
        dtype=dtype.name,
        blur_per_slice=blur_per_slice,
        noise=noise,
        gain=gain,
        **motion,
        seed=seed,
        reference=reference,
    )
    return SimulatedStack(
        frames=frames,
        texture=_quantise(texture_image, dtype),
        depth=depth_map,
        transforms=transforms,
        gains=gains,
        params=params,
    )


# --------------------------------------------------------------------------
# Scoring against the truth
# --------------------------------------------------------------------------


def _luminance(image):
    """Luminance in [0, 1] units of a gray or RGB image of any dtype."""
    image = util.img_as_float32(np.asarray(image))
    return color.rgb2gray(image) if image.ndim == 3 else image


def textured_mask(texture, *, radius=4, threshold=0.02):
    """Where depth is observable: pixels whose neighbourhood has texture.

    Parameters
    ----------
    texture : ndarray
        All-in-focus image ``(Y, X[, 3])``, any dtype (scaled to [0, 1]).
    radius : int, optional
        Half-size of the square neighbourhood; also the width of the image
        border left out, where neighbourhoods are mirrored.
    threshold : float, optional
        Least standard deviation of the luminance, in [0, 1] units, in the
        neighbourhood.

    Returns
    -------
    mask : ndarray of bool
        ``(Y, X)``.

    Examples
    --------
    >>> image = np.zeros((32, 32), dtype=np.float32)
    >>> image[:, 16:] = make_texture("noise", (32, 16))
    >>> mask = textured_mask(image, radius=2)
    >>> bool(mask[:, :12].any()), bool(mask[2:-2, 20:-2].all())
    (False, True)
    """
    luminance = _luminance(texture).astype(np.float32)
    size = (2 * radius + 1, 2 * radius + 1)
    mean = cv2.blur(luminance, size, borderType=cv2.BORDER_REFLECT)
    mean_square = cv2.blur(luminance * luminance, size, borderType=cv2.BORDER_REFLECT)
    local_std = np.sqrt(np.clip(mean_square - mean * mean, 0, None))
    mask = local_std > threshold
    border = np.zeros_like(mask)
    border[radius : mask.shape[0] - radius, radius : mask.shape[1] - radius] = True
    return mask & border


def depth_rmse(estimate, truth, mask=None):
    """Root-mean-square difference between two depth maps, in slices.

    Parameters
    ----------
    estimate, truth : ndarray
        ``(Y, X)`` depth maps.
    mask : ndarray of bool, optional
        Pixels to score, e.g. :func:`textured_mask`; all by default.

    Returns
    -------
    float

    Examples
    --------
    >>> depth_rmse(np.full((4, 4), 2.5), np.full((4, 4), 2.0))
    0.5
    """
    difference = np.asarray(estimate, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    if mask is not None:
        difference = difference[np.asarray(mask, dtype=bool)]
    if difference.size == 0:
        raise ValueError("the mask selects no pixels")
    return float(np.sqrt(np.mean(difference**2)))


def depth_speckle(depth, *, window=15, slices=2.0):
    """Share of finite pixels more than ``slices`` from the median of their ``window`` square.

    Isolated wrong depths ("speckle") in a depth map; needs no truth, so it
    serves real stacks. Non-finite pixels are left out (and stand in for the
    map's median when their neighbours' medians are taken).

    Examples
    --------
    >>> depth = np.full((32, 32), 3.0, np.float32); depth[10, 10] = 9.0
    >>> round(depth_speckle(depth) * 32 * 32)
    1
    """
    from scipy import ndimage

    depth = np.asarray(depth)
    finite = np.isfinite(depth)
    if not finite.any():
        return float("nan")
    filled = np.where(finite, depth, np.median(depth[finite])).astype(np.float32)
    median = ndimage.median_filter(filled, size=window, mode="nearest")
    return float(((np.abs(filled - median) > slices) & finite).sum() / finite.sum())


def psnr(image, truth, data_range=None):
    """Peak signal-to-noise ratio (dB) of ``image`` against ``truth``.

    The peak is ``data_range``, by default the full range of ``truth``'s
    dtype (1.0 for floats).

    Examples
    --------
    >>> truth = np.full((8, 8), 100, dtype=np.uint8)
    >>> round(psnr(truth + 1, truth), 2)
    48.13
    """
    truth = np.asarray(truth)
    peak = _full_scale(truth.dtype) if data_range is None else float(data_range)
    return float(metrics.peak_signal_noise_ratio(truth, np.asarray(image), data_range=peak))


def ssim(image, truth, data_range=None):
    """Structural similarity of ``image`` to ``truth``, gray or RGB.

    The data range is ``data_range``, by default the full range of
    ``truth``'s dtype (1.0 for floats).

    Examples
    --------
    >>> truth = make_texture("noise", (32, 32))
    >>> ssim(truth, truth)
    1.0
    """
    truth = np.asarray(truth)
    return float(
        metrics.structural_similarity(
            truth,
            np.asarray(image),
            data_range=_full_scale(truth.dtype) if data_range is None else float(data_range),
            channel_axis=-1 if truth.ndim == 3 else None,
        )
    )


# --------------------------------------------------------------------------
# Sample data on disk
# --------------------------------------------------------------------------


def write_sample_stack(folder, *, shape=(768, 1024), n_slices=12, seed=0):
    """Write a simulated RGB stack as JPEG frames, with its truth in ``.truth/``.

    ``folder/z01.jpg ...`` are the frames (as a camera writes them);
    ``folder/.truth/all_in_focus.png`` and ``folder/.truth/depth.tif`` (float32,
    slices) are the ground truth. Sub-folders are not read as frames, so the
    folder can be given to the reader, the command line or napari as it is.

    Returns the frame paths.
    """
    from pathlib import Path

    from ..io import save_image

    folder = Path(folder)
    (folder / ".truth").mkdir(parents=True, exist_ok=True)
    sim = simulate_stack(shape, n_slices, rgb=True, noise=0.01, seed=seed)
    paths = [folder / f"z{k + 1:02d}.jpg" for k in range(n_slices)]
    for path, frame in zip(paths, sim.frames):
        save_image(frame, path)
    save_image(sim.texture, folder / ".truth" / "all_in_focus.png")
    save_image(sim.depth, folder / ".truth" / "depth.tif", metadata={"content": "true depth (slices)"})
    return paths


def _main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m napari_focus_stack.synthetic",
        description="Write a simulated focal stack (JPEG frames + ground truth) into FOLDER.",
    )
    parser.add_argument("folder", help="where to write the frames (created if missing)")
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 768), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_sample_stack(args.folder, shape=args.size[::-1], n_slices=args.frames, seed=args.seed)
    print(f"wrote {len(paths)} frames to {args.folder} (ground truth in {args.folder}/.truth)")


if __name__ == "__main__":
    _main()
