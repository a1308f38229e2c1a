"""Layered scenes: defocus with occlusion, as a real lens renders it.

A scene is a list of :class:`Layer` objects, each a colour, a coverage
(alpha) and a depth. Slice ``k`` composites the layers from far to near, each
blurred by its own defocus at ``k``: the blurred, premultiplied colour of a
layer covers what lies behind it by its blurred coverage. A defocused
foreground therefore spills over the background behind its edges (the halo
that a per-pixel "gather" blur never shows), and thin structures in front
fade into a veil when out of focus.

The point spread function is a Gaussian or a pillbox (a uniform disk, the
shape of a real aperture). Depth is in slice units and grows away from the
camera: a layer of larger depth is behind one of smaller depth.
"""

from dataclasses import dataclass

import cv2
import numpy as np

from .camera import _expose, _quantise
from .textures import _gaussian_blur

#: Point spread functions :func:`defocus` accepts.
PSFS = ("gaussian", "pillbox")

#: Supersampling of drawn shapes (anti-aliased edges and sub-pixel widths).
_SUPERSAMPLE = 4


@dataclass
class Layer:
    """One layer of a scene.

    Attributes
    ----------
    colour : ndarray of float32
        ``(Y, X)`` or ``(Y, X, 3)`` in [0, 1], the layer's sharp appearance.
    alpha : ndarray of float32
        ``(Y, X)`` coverage in [0, 1]; 0 where the layer is absent.
    depth : float or ndarray
        Depth in slices where the layer is in focus: one number (a flat
        layer) or a ``(Y, X)`` map (tilted or curved; defocus then varies
        over the layer, rendered from closely spaced blurs).
    """

    colour: np.ndarray
    alpha: np.ndarray
    depth: float | np.ndarray

    def depth_map(self, shape):
        return np.broadcast_to(np.asarray(self.depth, dtype=np.float32), shape)

    def order_key(self):
        """Mean depth over the covered pixels: layers are composited far (large) to near."""
        depth = self.depth_map(self.alpha.shape)
        weight = self.alpha.sum()
        return float((depth * self.alpha).sum() / weight) if weight > 0 else float(depth.mean())


# --------------------------------------------------------------------------
# Point spread functions
# --------------------------------------------------------------------------


def pillbox_kernel(radius):
    """Normalised uniform disk of ``radius`` px, its edge anti-aliased by supersampling."""
    radius = max(float(radius), 0.25)  # smaller disks miss every sample: a point
    half = int(np.ceil(radius + 0.5))
    fine = (np.arange(-half * _SUPERSAMPLE, (half + 1) * _SUPERSAMPLE) + 0.5) / _SUPERSAMPLE - 0.5
    yy, xx = np.meshgrid(fine, fine, indexing="ij")
    inside = (xx * xx + yy * yy <= radius * radius).astype(np.float32)
    size = 2 * half + 1
    kernel = inside.reshape(size, _SUPERSAMPLE, size, _SUPERSAMPLE).mean(axis=(1, 3))
    return kernel / kernel.sum()


def defocus(image, spread, psf):
    """Blur ``image`` by a defocus of ``spread`` px with the given ``psf``.

    ``spread`` is the Gaussian's sigma; the pillbox gets radius ``2 * spread``,
    which has the same second moment, so both PSFs blur equally "far".
    """
    if psf not in PSFS:
        raise ValueError(f"psf must be one of {', '.join(PSFS)}, got {psf!r}")
    if spread <= 1e-3:
        return image.copy()
    if psf == "gaussian":
        return _gaussian_blur(image, spread).reshape(image.shape)
    kernel = pillbox_kernel(2 * spread)
    return cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_REFLECT).reshape(image.shape)


def _spread_levels(low, high):
    """Defocus levels covering [low, high]: steps of 0.25 px, 12.5 % above 2 px."""
    levels = [max(0.0, low)]
    while levels[-1] < high:
        levels.append(levels[-1] + max(0.25, levels[-1] / 8))
    return np.array(levels)


def defocus_varying(image, spread, psf):
    """Blur ``image`` by a per-pixel ``spread`` map: blends of closely spaced uniform blurs."""
    low, high = float(spread.min()), float(spread.max())
    if high - low < 0.05:
        return defocus(image, 0.5 * (low + high), psf)
    levels = _spread_levels(low, high)
    position = np.interp(spread, levels, np.arange(len(levels))).astype(np.float32)
    out = np.zeros(image.shape, dtype=np.float32)
    weights_shape = position.shape + (1,) * (image.ndim - 2)
    for index, level in enumerate(levels):
        weight = np.clip(1 - np.abs(position - index), 0, 1)
        if weight.any():
            out += weight.reshape(weights_shape) * defocus(image, level, psf)
    return out


# --------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------


def _with_channels(array):
    return array if array.ndim == 3 else array[..., None]


def render_slice(layers, focus, blur_per_slice, psf):
    """Composite ``layers`` (any order) as seen with the lens focused at depth ``focus``.

    Returns float32 ``(Y, X[, C])``.
    """
    ordered = sorted(layers, key=Layer.order_key, reverse=True)
    shape = ordered[0].alpha.shape
    rgb = ordered[0].colour.ndim == 3
    out = np.zeros(shape + ((3,) if rgb else (1,)), dtype=np.float32)
    for layer in ordered:
        spread = blur_per_slice * np.abs(layer.depth_map(shape) - focus)
        # only the layer's bounding box, grown by the reach of its blur
        reach = int(np.ceil(4 * float(spread.max()))) + 2
        box = _bounding_box(layer.alpha, reach)
        if box is None:
            continue
        alpha = layer.alpha[box]
        premultiplied = _with_channels(layer.colour[box]) * alpha[..., None]
        planes = np.concatenate([premultiplied, alpha[..., None]], axis=-1).astype(np.float32)
        if np.ndim(layer.depth) == 0:
            blurred = defocus(planes, float(spread.flat[0]), psf)
        else:
            blurred = defocus_varying(planes, spread[box], psf)
        blurred = _with_channels(blurred)
        region = out[box]
        region *= 1 - blurred[..., -1:]
        region += blurred[..., :-1]
    return out if rgb else out[..., 0]


def _bounding_box(alpha, margin):
    """Slices of the box around ``alpha > 0`` grown by ``margin``; None when empty."""
    rows = np.flatnonzero(alpha.any(axis=1))
    cols = np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return None
    return (
        slice(max(0, rows[0] - margin), min(alpha.shape[0], rows[-1] + margin + 1)),
        slice(max(0, cols[0] - margin), min(alpha.shape[1], cols[-1] + margin + 1)),
    )


def composite_truth(layers):
    """All-in-focus image, depth of the visible layer, and the visible layer's index.

    Every layer sharp, composited far to near; the depth at a pixel is that of
    the layer contributing most to it (its coverage times what the layers in
    front leave visible).
    """
    ordered = sorted(range(len(layers)), key=lambda i: layers[i].order_key(), reverse=True)
    shape = layers[0].alpha.shape
    rgb = layers[0].colour.ndim == 3
    image = np.zeros(shape + ((3,) if rgb else (1,)), dtype=np.float32)
    visible = np.ones(shape, dtype=np.float32)  # what the layers in front leave, near to far
    contribution = np.zeros((len(layers),) + shape, dtype=np.float32)
    for i in ordered:
        layer = layers[i]
        image *= 1 - layer.alpha[..., None]
        image += _with_channels(layer.colour) * layer.alpha[..., None]
    for i in reversed(ordered):  # near to far
        contribution[i] = layers[i].alpha * visible
        visible *= 1 - layers[i].alpha
    owner = np.argmax(contribution, axis=0)
    depth = np.zeros(shape, dtype=np.float32)
    for i, layer in enumerate(layers):
        depth = np.where(owner == i, layer.depth_map(shape), depth)
    return (image if rgb else image[..., 0]), depth.astype(np.float32), owner


def occlusion_boundary(owner, depth, *, reach=3, min_step=0.5):
    """Pixels within ``reach`` px of where the visible layer changes by at least ``min_step`` slices."""
    edges = np.zeros(owner.shape, dtype=bool)
    for axis in (0, 1):
        changes = np.diff(owner, axis=axis) != 0
        steps = np.abs(np.diff(depth, axis=axis)) >= min_step
        edge = changes & steps
        if axis == 0:
            edges[:-1] |= edge
            edges[1:] |= edge
        else:
            edges[:, :-1] |= edge
            edges[:, 1:] |= edge
    size = 2 * reach + 1
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    return cv2.dilate(edges.astype(np.uint8), kernel).astype(bool)


def render_layers(
    layers, n_slices, *, blur_per_slice=1.0, psf="pillbox", noise=0.0, photons=None, dtype="uint8", seed=0
):
    """Render a focal stack of ``layers`` and its truth.

    Parameters
    ----------
    layers : list of Layer
    n_slices : int
        Frames; slice ``k`` is focused at depth ``k``.
    blur_per_slice : float, optional
        Defocus spread (px) per slice of distance from focus.
    psf : {"pillbox", "gaussian"}, optional
    noise : float, optional
        Std of additive Gaussian read noise, as a fraction of full range.
    photons : float or None, optional
        Photons collected at full brightness: shot (Poisson) noise when given.
    dtype : {"uint8", "uint16", "float32"}, optional
    seed : int, optional
        Seed of the noise.

    Returns
    -------
    frames, texture, depth, boundary
        Frames ``(Z, Y, X[, C])`` in ``dtype``; the all-in-focus truth in the
        same dtype and scale; float32 depth in slices; the occlusion boundary
        mask (:func:`occlusion_boundary`).

    Examples
    --------
    >>> shape = (48, 64)
    >>> back = Layer(np.random.default_rng(0).random(shape, np.float32), np.ones(shape, np.float32), 6.0)
    >>> disc = np.zeros(shape, np.float32); disc[16:32, 16:32] = 1
    >>> front = Layer(np.ones(shape, np.float32), disc, 1.0)
    >>> frames, texture, depth, boundary = render_layers([back, front], 8)
    >>> frames.shape, float(depth[24, 24]), float(depth[0, 0]), bool(boundary[24, 16])
    ((8, 48, 64), 1.0, 6.0, True)
    """
    rng = np.random.default_rng([seed, 7])
    texture, depth, owner = composite_truth(layers)
    frames = None
    for k in range(n_slices):
        image = render_slice(layers, k, blur_per_slice, psf)
        if photons:
            image = rng.poisson(np.clip(image, 0, None) * photons).astype(np.float32) / np.float32(photons)
        frame = _expose(image, 1.0, noise, rng, dtype)
        if frames is None:
            frames = np.empty((n_slices,) + frame.shape, dtype=frame.dtype)
        frames[k] = frame
    return frames, _quantise(texture, dtype), depth, occlusion_boundary(owner, depth)


# --------------------------------------------------------------------------
# Shapes: anti-aliased coverage masks
# --------------------------------------------------------------------------


def _fine_canvas(shape):
    return np.zeros((shape[0] * _SUPERSAMPLE, shape[1] * _SUPERSAMPLE), dtype=np.float32)


def _coarse(canvas, shape):
    return cv2.resize(canvas, (shape[1], shape[0]), interpolation=cv2.INTER_AREA).astype(np.float32)


def ellipse_mask(shape, centre, axes, angle):
    """Coverage of a filled ellipse (centre ``(x, y)``, semi-axes, degrees)."""
    s = _SUPERSAMPLE
    canvas = _fine_canvas(shape)
    cv2.ellipse(
        canvas,
        (round((centre[0] + 0.5) * s), round((centre[1] + 0.5) * s)),
        (max(1, round(axes[0] * s)), max(1, round(axes[1] * s))),
        float(angle),
        0,
        360,
        1.0,
        thickness=-1,
    )
    return _coarse(canvas, shape)


def polygon_mask(shape, points):
    """Coverage of a filled polygon with vertices ``points`` ((x, y) px)."""
    s = _SUPERSAMPLE
    canvas = _fine_canvas(shape)
    fine = np.round((np.asarray(points, dtype=np.float64) + 0.5) * s).astype(np.int32)
    cv2.fillPoly(canvas, [fine], 1.0)
    return _coarse(canvas, shape)


def curve_mask(shape, points, width):
    """Coverage of a polyline through ``points`` ((x, y) px), ``width`` px thick (sub-pixel widths fade)."""
    s = _SUPERSAMPLE
    canvas = _fine_canvas(shape)
    fine = np.round((np.asarray(points, dtype=np.float64) + 0.5) * s).astype(np.int32)
    cv2.polylines(canvas, [fine], False, 1.0, thickness=max(1, round(width * s)), lineType=cv2.LINE_8)
    return _coarse(canvas, shape)


def random_curve(shape, rng, *, length, turn=0.15, start=None):
    """Points of a smooth random walk of ``length`` px (a hair, a fibre, a filament)."""
    height, width = shape
    position = np.array(start if start is not None else (rng.uniform(0, width), rng.uniform(0, height)), dtype=float)
    heading = rng.uniform(0, 2 * np.pi)
    bend = 0.0
    points = [position.copy()]
    step = 2.0
    for _ in range(int(length / step)):
        bend = 0.8 * bend + rng.normal(0, turn)
        heading += bend
        position = position + step * np.array([np.cos(heading), np.sin(heading)])
        points.append(position.copy())
    return np.array(points)
