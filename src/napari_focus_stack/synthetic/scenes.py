"""Scene families for the quality suite: surfaces, layered scenes with occlusion, fluorescence.

Each family is a recipe drawn from a seed; :func:`simulate_scene` renders one
stack of it with its truth. The families cover the three image-formation
models of this package (a textured surface blurred per pixel, layers
composited with occlusion, a fluorescent volume) and, within them, Gaussian
and pillbox blur, thin structures, dense depth discontinuities, low light and
dim 16-bit data, so that no single model's quirks decide what wins.

>>> sim = simulate_scene("bristles", shape=(64, 64), n_slices=8, seed=1)
>>> sim.frames.shape, sim.frames.dtype.name, sim.boundary.dtype.name
((8, 64, 64, 3), 'uint8', 'bool')
"""

import numpy as np

from .camera import _frame_transforms, move_frames
from .fluorescence import blob_emitters, filament_emitters, render_fluorescence
from .layered import Layer, curve_mask, ellipse_mask, polygon_mask, random_curve, render_layers
from .surface import SimulatedStack, simulate_stack
from .textures import _check_shape, _octave_noise, make_texture


def _surface(texture, depth, **options):
    def build(shape, n_slices, seed):
        return simulate_stack(shape, n_slices, texture=texture, depth=depth, seed=seed, **options)

    return build


def _tinted(texture, rng, low, high):
    """``texture`` mapped into [low, high], with a random colour tint for RGB."""
    image = low + (high - low) * texture
    if image.ndim == 3:
        image = image * rng.uniform(0.75, 1.0, 3)
    return np.clip(image, 0, 1).astype(np.float32)


def _full(shape):
    return np.ones(shape, dtype=np.float32)


def _plane(shape, rng, centre, tilt, n_slices):
    """Depth map of a tilted plane through ``centre`` (slices), up to ``tilt`` slices across, kept in the stack."""
    rows, cols = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    gy, gx = rng.uniform(-1, 1, 2) * tilt / max(shape)
    plane = centre + gy * (rows - shape[0] / 2) + gx * (cols - shape[1] / 2)
    return np.clip(plane, *_depth_range(n_slices)).astype(np.float32)


def _depth_range(n_slices):
    return 0.5, n_slices - 1.5


def _occlusion(psf, back_texture):
    """Bright textured objects near the camera, in front of a textured background far behind."""

    def layers(shape, n_slices, rng, rgb):
        near, far = _depth_range(n_slices)
        back = make_texture(back_texture, shape, rgb=rgb, seed=int(rng.integers(1 << 30)))
        scene = [Layer(_tinted(back, rng, 0.05, 0.7), _full(shape), far - rng.uniform(0, 1))]
        for _ in range(int(rng.integers(2, 4))):
            texture = make_texture("cells", shape, rgb=rgb, seed=int(rng.integers(1 << 30)))
            centre = rng.uniform(0.2, 0.8, 2) * shape[::-1]
            if rng.random() < 0.5:
                axes = rng.uniform(0.1, 0.22, 2) * min(shape)
                alpha = ellipse_mask(shape, centre, axes, rng.uniform(0, 180))
            else:
                angles = np.sort(rng.uniform(0, 2 * np.pi, 6))
                radii = rng.uniform(0.08, 0.22, 6) * min(shape)
                alpha = polygon_mask(shape, centre + np.c_[np.cos(angles), np.sin(angles)] * radii[:, None])
            scene.append(Layer(_tinted(texture, rng, 0.6, 1.0), alpha, near + rng.uniform(0, 2)))
        return scene

    return dict(layers=layers, psf=psf, noise=0.01)


def _bristle_layers(shape, n_slices, rng, rgb):
    """Thin bright bristles (1-3 px) at many depths over two textured layers."""
    near, far = _depth_range(n_slices)
    back = make_texture("noise", shape, rgb=rgb, seed=int(rng.integers(1 << 30)))
    middle = make_texture("cells", shape, rgb=rgb, seed=int(rng.integers(1 << 30)))
    patch = np.clip(_octave_noise(shape, rng, [max(0, int(np.log2(min(shape))) - 3)]) * 3, -1, 1) * 0.5 + 0.5
    scene = [
        Layer(_tinted(back, rng, 0.05, 0.55), _full(shape), far),
        Layer(_tinted(middle, rng, 0.1, 0.7), patch.astype(np.float32), 0.5 * (near + far)),
    ]
    for _ in range(int(14 * shape[0] * shape[1] / 256**2) + 4):
        points = random_curve(shape, rng, length=rng.uniform(0.3, 0.8) * max(shape), turn=0.05)
        alpha = curve_mask(shape, points, rng.uniform(1.0, 3.0))
        colour = np.full(shape + ((3,) if rgb else ()), rng.uniform(0.8, 1.0), np.float32)
        if rgb:
            colour *= rng.uniform(0.85, 1.0, 3).astype(np.float32)
        scene.append(Layer(colour, alpha, rng.uniform(near, far)))
    return scene


def _fibre_layers(shape, n_slices, rng, rgb):
    """Brightfield: dark thin fibres at many depths over a bright, faintly textured slide."""
    near, far = _depth_range(n_slices)
    slide = make_texture("noise", shape, rgb=rgb, seed=int(rng.integers(1 << 30)))
    scene = [Layer(_tinted(slide, rng, 0.72, 0.9), _full(shape), _plane(shape, rng, 0.5 * (near + far), 3, n_slices))]
    for _ in range(int(20 * shape[0] * shape[1] / 256**2) + 4):
        points = random_curve(shape, rng, length=rng.uniform(0.2, 0.7) * max(shape), turn=0.1)
        alpha = curve_mask(shape, points, rng.uniform(1.0, 2.5))
        colour = np.full(shape + ((3,) if rgb else ()), rng.uniform(0.1, 0.35), np.float32)
        scene.append(Layer(colour, alpha, rng.uniform(near, far)))
    return scene


def _clutter_layers(shape, n_slices, rng, rgb):
    """Many overlapping textured objects at different depths: dense depth discontinuities."""
    near, far = _depth_range(n_slices)
    kinds = ("noise", "cells", "mixed", "grid")
    back = make_texture("mixed", shape, rgb=rgb, seed=int(rng.integers(1 << 30)))
    scene = [Layer(_tinted(back, rng, 0.0, 0.8), _full(shape), far)]
    for _ in range(int(30 * shape[0] * shape[1] / 256**2) + 5):
        texture = make_texture(kinds[int(rng.integers(len(kinds)))], shape, rgb=rgb, seed=int(rng.integers(1 << 30)))
        centre = rng.uniform(0, 1, 2) * shape[::-1]
        axes = rng.uniform(0.04, 0.15, 2) * min(shape)
        if rng.random() < 0.5:
            alpha = ellipse_mask(shape, centre, axes, rng.uniform(0, 180))
        else:
            angle = rng.uniform(0, np.pi)
            corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * axes
            rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
            alpha = polygon_mask(shape, centre + corners @ rotation.T)
        low = rng.uniform(0, 0.4)
        scene.append(Layer(_tinted(texture, rng, low, low + 0.6), alpha, rng.uniform(near, far - 1)))
    return scene


def _cell_labels(shape, rng, n_cells):
    """Voronoi cells of ``n_cells`` random seeds, labelled 0..n-1, at 2x resolution for smoother edges."""
    from scipy.spatial import cKDTree

    factor = 2
    seeds = rng.uniform(0, 1, (n_cells, 2)) * np.array(shape) * factor
    rows, cols = np.mgrid[: shape[0] * factor, : shape[1] * factor]
    _, labels = cKDTree(seeds).query(np.c_[rows.ravel(), cols.ravel()])
    return labels.reshape(rows.shape), factor


def _scene_depth_layers(shape, n_slices, rng, rgb):
    """A photograph's scene: the image split into objects, each a tilted plane at its own depth."""
    near, far = _depth_range(n_slices)
    photo = make_texture("photo", shape, rgb=rgb)
    detail = make_texture("noise", shape, rgb=rgb, seed=int(rng.integers(1 << 30)))
    colour = np.clip(0.75 * photo + 0.25 * detail, 0, 1).astype(np.float32)
    n_cells = int(24 * shape[0] * shape[1] / 256**2) + 6
    labels, factor = _cell_labels(shape, rng, n_cells)
    scene = []
    for label in range(n_cells):
        fine = (labels == label).astype(np.float32)
        alpha = fine.reshape(shape[0], factor, shape[1], factor).mean(axis=(1, 3))
        if alpha.max() == 0:
            continue
        # the cells tile the image: depth order decides which edge spills over which
        scene.append(Layer(colour, alpha, _plane(shape, rng, rng.uniform(near, far), 2.0, n_slices)))
    return scene


def _plate_layers(shape, n_slices, rng, rgb):
    """Tilted textured plates in front of a sloping background."""
    near, far = _depth_range(n_slices)
    back = make_texture("photo", shape, rgb=rgb)
    scene = [Layer(_tinted(back, rng, 0.0, 0.9), _full(shape), _plane(shape, rng, far - 1.5, 2.5, n_slices))]
    for _ in range(3):
        texture = make_texture("mixed", shape, rgb=rgb, seed=int(rng.integers(1 << 30)))
        centre = rng.uniform(0.25, 0.75, 2) * shape[::-1]
        half = rng.uniform(0.12, 0.25, 2) * min(shape)
        angle = rng.uniform(0, np.pi)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        corners = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        alpha = polygon_mask(shape, centre + corners @ rotation.T)
        depth = _plane(shape, rng, rng.uniform(near + 1, far - 3), 4.0, n_slices)
        scene.append(Layer(_tinted(texture, rng, 0.1, 0.95), alpha, depth))
    return scene


def _layered(recipe):
    def build(shape, n_slices, seed):
        rng = np.random.default_rng([seed, 5])
        rgb = recipe.get("rgb", True)
        layers = recipe["layers"](shape, n_slices, rng, rgb)
        frames, texture, depth, boundary = render_layers(
            layers,
            n_slices,
            blur_per_slice=recipe.get("blur", 1.0),
            psf=recipe["psf"],
            noise=recipe.get("noise", 0.0),
            photons=recipe.get("photons"),
            dtype=recipe.get("dtype", "uint8"),
            seed=seed,
        )
        return _stack(frames, texture, depth, seed, boundary=boundary, n_layers=len(layers), **recipe)

    return build


def _fluorescent(make_emitters, **options):
    def build(shape, n_slices, seed):
        rng = np.random.default_rng([seed, 9])
        emitters = make_emitters(shape, n_slices, rng)
        frames, texture, depth, mask = render_fluorescence(emitters, shape, n_slices, seed=seed, **options)
        signal = float(texture.max()) - float(texture.min())
        return _stack(frames, texture, depth, seed, mask=mask, data_range=max(signal, 1.0), emitters=len(emitters))

    return build


def _stack(frames, texture, depth, seed, *, boundary=None, mask=None, data_range=None, **params):
    n_slices = frames.shape[0]
    params = {key: value for key, value in params.items() if not callable(value)}
    return SimulatedStack(
        frames=frames,
        texture=texture,
        depth=depth,
        transforms=np.repeat(np.eye(3)[None], n_slices, axis=0),
        gains=np.ones(n_slices),
        params=dict(params, seed=seed, n_slices=n_slices, reference=n_slices // 2),
        boundary=boundary,
        mask=mask,
        data_range=data_range,
    )


#: Family name -> (builder, one-line description).
_FAMILIES = {
    "surface-dome": (
        _surface("mixed", "dome", rgb=True, noise=0.01),
        "textured dome, per-pixel Gaussian blur (no occlusion), RGB",
    ),
    "surface-terraces-16bit": (
        _surface("noise", "steps", dtype="uint16", noise=0.004),
        "16-bit terraces with fine texture, per-pixel blur",
    ),
    "surface-waves-photo": (
        _surface("photo", "waves", rgb=True, noise=0.01),
        "photograph on a wavy surface, per-pixel blur",
    ),
    "occlusion-gaussian": (
        _layered(_occlusion("gaussian", "mixed")),
        "bright objects in front of a textured background, Gaussian PSF",
    ),
    "occlusion-pillbox": (
        _layered(_occlusion("pillbox", "noise")),
        "bright objects in front of a textured background, pillbox PSF",
    ),
    "bristles": (
        _layered(dict(layers=_bristle_layers, psf="pillbox", noise=0.01)),
        "thin bright bristles (1-3 px) at many depths over textured layers",
    ),
    "fibres-brightfield": (
        _layered(dict(layers=_fibre_layers, psf="gaussian", noise=0.01, rgb=False)),
        "dark thin fibres over a bright slide (brightfield), grey",
    ),
    "clutter": (
        _layered(dict(layers=_clutter_layers, psf="pillbox", noise=0.01)),
        "many overlapping textured objects: dense depth discontinuities",
    ),
    "scene-depth": (
        _layered(dict(layers=_scene_depth_layers, psf="pillbox", noise=0.01)),
        "a photo cut into objects at many depths (edges everywhere)",
    ),
    "tilted-plates": (
        _layered(dict(layers=_plate_layers, psf="gaussian", noise=0.01)),
        "tilted textured plates in front of a sloping background",
    ),
    "lowlight": (
        _layered(dict(layers=_clutter_layers, psf="pillbox", photons=60.0, rgb=False)),
        "clutter in low light: shot noise of 60 photons at full scale, grey",
    ),
    "fluorescence-blobs": (
        _fluorescent(blob_emitters),
        "widefield fluorescence, cells and nuclei, dim 16-bit, shot noise",
    ),
    "fluorescence-filaments": (
        _fluorescent(filament_emitters),
        "widefield fluorescence, thin filaments, dim 16-bit, shot noise",
    ),
}

#: Names :func:`simulate_scene` accepts.
SCENE_FAMILIES = tuple(_FAMILIES)


def describe_family(family):
    """One line saying what ``family`` renders."""
    return _FAMILIES[family][1]


def simulate_scene(
    family, shape=(256, 256), n_slices=12, *, seed=0, jitter=0.0, breathing=0.0, rotation=0.0, drift=0.0
):
    """Render one stack of a scene ``family``, with its truth.

    Parameters
    ----------
    family : str
        One of :data:`SCENE_FAMILIES` (:func:`describe_family` says what each is).
    shape : tuple of int, optional
        ``(Y, X)``.
    n_slices : int, optional
        At least 4.
    seed : int, optional
        The same seed gives the same stack.
    jitter, breathing, rotation, drift : float, optional
        Camera motion, as :func:`simulate_stack` takes it: each frame is
        moved by its transform after it is rendered (the truth stays in the
        reference geometry, the middle frame's).

    Returns
    -------
    SimulatedStack
        With ``boundary`` for layered scenes, ``mask`` and ``data_range`` for
        fluorescence (see :class:`SimulatedStack`).

    Examples
    --------
    >>> sim = simulate_scene("clutter", shape=(64, 64), n_slices=6, drift=4.0, seed=2)
    >>> round(float(np.hypot(*(sim.transforms[-1] - sim.transforms[0])[:2, 2])), 2)
    4.0
    """
    if family not in _FAMILIES:
        raise ValueError(f"family must be one of {', '.join(SCENE_FAMILIES)}, got {family!r}")
    if n_slices < 4:
        raise ValueError(f"n_slices must be at least 4, got {n_slices}")
    shape = _check_shape(shape)
    sim = _FAMILIES[family][0](shape, int(n_slices), int(seed))
    sim.params["family"] = family
    motion = dict(jitter=jitter, breathing=breathing, rotation=rotation, drift=drift)
    if any(motion.values()):
        reference = sim.params["reference"]
        rng = np.random.default_rng([seed, 1])
        sim.transforms = _frame_transforms(shape, int(n_slices), reference, **motion, rng=rng)
        sim.frames = move_frames(sim.frames, sim.transforms)
        sim.params.update(motion)
    return sim
