"""Textures for the simulators: what the all-in-focus truth looks like.

:func:`make_texture` draws one of :data:`KINDS_TEXTURE` (pink noise, cells,
a grid, a photograph, a mix); the blur and noise helpers here serve every
model of the package.
"""

import cv2
import numpy as np
from skimage import data, transform, util

from ..engine.dtypes import ceil_div


def _check_shape(shape):
    shape = tuple(int(n) for n in shape)
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be two positive sizes (Y, X), got {shape}")
    return shape


def _gaussian_blur(image, sigma):
    """Gaussian blur with a kernel reaching 4 sigma and mirrored borders."""
    radius = max(1, int(np.ceil(4 * sigma)))
    size = 2 * radius + 1
    return cv2.GaussianBlur(image, (size, size), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT)


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
        small_shape = (ceil_div(height, factor) + 2, ceil_div(width, factor) + 2)
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
