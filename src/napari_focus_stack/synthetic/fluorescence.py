"""Widefield fluorescence: a volume of emitters, every slice collecting every emitter's light.

Unlike a surface seen in reflected light, a fluorescent specimen is
transparent: slice ``k`` sums the light of all emitters, each blurred by its
distance from ``k`` (a Gaussian whose width grows with defocus and which keeps
the emitter's total light, so defocused emitters become a dim wide glow),
plus a broad haze scattered by the tissue, a uniform autofluorescence, and
the camera's shot noise, offset and read noise. Frames are dim 16-bit data,
as microscopes record them.
"""

import numpy as np

from .layered import curve_mask, random_curve
from .textures import _gaussian_blur

#: Depth bins per slice: emitters closer than this in depth are blurred together.
_BINS_PER_SLICE = 4


def _blur(image, sigma):
    return image.copy() if sigma <= 1e-3 else _gaussian_blur(image, sigma)


def _binned(emitters, shape):
    """Emitter images summed per depth bin: ``{bin depth: image}``."""
    bins = {}
    for image, depth in emitters:
        key = round(float(depth) * _BINS_PER_SLICE) / _BINS_PER_SLICE
        if key not in bins:
            bins[key] = np.zeros(shape, dtype=np.float32)
        bins[key] += image
    return bins


def render_fluorescence(
    emitters,
    shape,
    n_slices,
    *,
    blur_per_slice=1.5,
    core_sigma=1.0,
    haze=0.2,
    haze_sigma=24.0,
    background=0.03,
    photons=120.0,
    offset=100.0,
    read_noise=2.0,
    seed=0,
):
    """Widefield focal stack of ``emitters`` and its truth.

    Parameters
    ----------
    emitters : list of (ndarray, float)
        ``(Y, X)`` float32 brightness of each emitter (1 = the brightest
        in-focus pixel collects ``photons``) and its depth in slices.
    shape : tuple of int
    n_slices : int
    blur_per_slice : float, optional
        Growth of the defocus sigma (px) per slice.
    core_sigma : float, optional
        Sigma (px) of the in-focus point spread function.
    haze : float, optional
        Share of each emitter's light scattered into a broad glow of sigma
        ``haze_sigma`` in every slice, whatever the focus.
    background : float, optional
        Uniform autofluorescence, as a share of ``photons``.
    photons, offset, read_noise : float, optional
        Photons per pixel at brightness 1; camera offset and read-noise std
        in counts (1 count per photon).
    seed : int, optional

    Returns
    -------
    frames, texture, depth, mask
        uint16 frames ``(Z, Y, X)``; the all-in-focus truth (every emitter in
        focus, with the haze and background that do not depend on focus, no
        noise); float32 depth of the emitter giving most in-focus light at
        each pixel; the mask of pixels where that light stands out of the
        background (where depth is observable).

    Examples
    --------
    >>> image = np.zeros((32, 32), np.float32); image[16, 16] = 20
    >>> frames, texture, depth, mask = render_fluorescence([(image, 3.0)], (32, 32), 6)
    >>> frames.dtype.name, int(np.argmax(frames[:, 16, 16])), float(depth[16, 16]), bool(mask[16, 16])
    ('uint16', 3, 3.0, True)
    """
    rng = np.random.default_rng([seed, 11])
    bins = _binned(emitters, shape)
    total = sum(bins.values())
    scattered = haze * _blur(total, haze_sigma) + background
    in_focus = {depth: (1 - haze) * _blur(image, core_sigma) for depth, image in bins.items()}
    frames = np.empty((n_slices,) + tuple(shape), dtype=np.uint16)
    for k in range(n_slices):
        light = scattered.copy()
        for depth, image in bins.items():
            sigma = np.hypot(core_sigma, blur_per_slice * abs(depth - k))
            light += (1 - haze) * _blur(image, sigma)
        counts = rng.poisson(np.clip(light, 0, None) * photons).astype(np.float32)
        counts += offset + rng.normal(0, read_noise, counts.shape).astype(np.float32)
        frames[k] = np.clip(np.rint(counts), 0, 65535).astype(np.uint16)

    sharp = sum(in_focus.values())
    truth = np.clip(np.rint(offset + photons * (scattered + sharp)), 0, 65535).astype(np.uint16)
    keys = list(in_focus)
    owner = np.argmax(np.stack([in_focus[key] for key in keys]), axis=0)
    depth = np.asarray(keys, dtype=np.float32)[owner]
    # observable: in-focus light at least 5 shot-noise stds above the background
    floor = 5 * np.sqrt(photons * float(scattered.mean()) + read_noise**2) / photons
    mask = sharp > max(floor, 0.05)
    return frames, truth, depth, mask


def blob_emitters(shape, n_slices, rng, *, density=1.2e-3):
    """Round and oval cells or nuclei of 1.5 to 5 px radius at random depths."""
    height, width = shape
    rows, cols = np.mgrid[:height, :width].astype(np.float32)
    emitters = []
    for _ in range(max(1, int(density * height * width))):
        y, x = rng.uniform(0, height), rng.uniform(0, width)
        sy, sx = rng.uniform(1.5, 5.0, 2)
        brightness = rng.uniform(0.3, 1.0)
        image = brightness * np.exp(-0.5 * (((rows - y) / sy) ** 2 + ((cols - x) / sx) ** 2))
        emitters.append((image.astype(np.float32), rng.uniform(0.5, n_slices - 1.5)))
    return emitters


def filament_emitters(shape, n_slices, rng, *, count=None, segment=12):
    """Thin curved filaments (mitochondria, microtubules) whose depth changes along them."""
    height, width = shape
    count = count or max(4, int(14 * height * width / 256**2))
    emitters = []
    for _ in range(count):
        points = random_curve(shape, rng, length=rng.uniform(0.3, 0.9) * max(shape), turn=0.08)
        start, stop = rng.uniform(0.5, n_slices - 1.5, 2)
        stop = start + np.clip(stop - start, -3, 3)
        brightness = rng.uniform(0.4, 1.0)
        width_px = rng.uniform(1.0, 2.0)
        drawn = np.zeros(shape, dtype=np.float32)  # pieces share end points: count each pixel once
        for first in range(0, len(points) - 1, segment):
            piece = points[first : first + segment + 1]
            t = (first + 0.5 * len(piece)) / len(points)
            depth = float(np.clip(start + t * (stop - start), 0.5, n_slices - 1.5))
            coverage = np.maximum(curve_mask(shape, piece, width_px), drawn)
            emitters.append((brightness * (coverage - drawn), depth))
            drawn = coverage
    return emitters


def _on_surface(emitters, surface):
    """``emitters`` moved in depth onto ``surface``: each takes the depth at its light's centroid."""
    rows, cols = np.indices(surface.shape)
    moved = []
    for image, _ in emitters:
        total = float(image.sum())
        if total <= 0:
            continue
        y = int(np.clip(round(float((rows * image).sum()) / total), 0, surface.shape[0] - 1))
        x = int(np.clip(round(float((cols * image).sum()) / total), 0, surface.shape[1] - 1))
        moved.append((image, float(surface[y, x])))
    return moved


def render_channels(shape=(192, 192), n_slices=12, *, photons=(150.0, 40.0), seed=0):
    """Two fluorescence channels of one specimen lying on a curved surface.

    Channel 0 holds cells (blobs), channel 1 filaments; both lie on the same
    smooth surface, so one depth map serves both, but each channel shows it
    only where its own structures are. ``photons`` sets each channel's
    brightness (channel 1 dimmer, as a second stain often is).

    Returns
    -------
    channels : list of ndarray
        uint16 ``(Z, Y, X)`` frames per channel.
    depth : ndarray of float32
        The surface's depth in slices.
    masks : list of ndarray of bool
        Per channel, where its in-focus light makes the depth observable.

    Examples
    --------
    >>> channels, depth, masks = render_channels((64, 64), 6)
    >>> len(channels), channels[0].shape, depth.shape, bool(masks[0].any() and masks[1].any())
    (2, (6, 64, 64), (64, 64), True)
    """
    rng = np.random.default_rng([seed, 13])
    height, width = shape
    y, x = np.mgrid[:height, :width].astype(np.float32)
    tilt = rng.uniform(-1, 1, 2)
    dome = np.exp(-(((y - height / 2) / (0.45 * height)) ** 2 + ((x - width / 2) / (0.45 * width)) ** 2))
    surface = 0.5 * (tilt[0] * (y / height - 0.5) + tilt[1] * (x / width - 0.5)) + dome
    low, high = float(surface.min()), float(surface.max())
    surface = (0.5 + (surface - low) / max(high - low, 1e-6) * (n_slices - 2)).astype(np.float32)
    channels, masks = [], []
    makers = (blob_emitters, filament_emitters)
    for c, (make, light) in enumerate(zip(makers, photons)):
        emitters = _on_surface(make(shape, n_slices, rng), surface)
        frames, _, _, mask = render_fluorescence(emitters, shape, n_slices, photons=light, seed=seed * 10 + c)
        channels.append(frames)
        masks.append(mask)
    return channels, surface, masks
