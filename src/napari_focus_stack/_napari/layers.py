"""Layer data tuples ``(data, kwargs, layer_type)`` built from a :class:`StackRun`.

No Qt and no viewer here: the widget and the menu commands add what these
functions return.

Every result overlays its input exactly. The engine's up-sampling by ``s``
maps output pixel ``j`` to input coordinate ``(j + 0.5) / s - 0.5``, so an
output pixel is ``scale / s`` wide and pixel 0 sits at
``translate + (1 / s - 1) / 2 * scale`` in world coordinates.
"""

import math

import numpy as np

from ..engine.dtypes import full_scale
from .stacking import KEEP_DEPTH

#: Key under which a layer data tuple carries its :class:`StackRun` to where
#: the layer is made. The layer itself does not keep it in its metadata, which
#: stays plain JSON-friendly facts (:data:`PROVENANCE_KEY`): ``actions`` moves
#: the run into a registry held by the layer object (weakly keyed), so a run
#: lives exactly as long as its layers and retouching finds it from any of them.
RUN_KEY = "focus_stack_run"
#: Key of the layer metadata holding the run's parameters (JSON-friendly).
PROVENANCE_KEY = "focus_stack"

DEPTH_COLORMAP = "viridis"
CONFIDENCE_COLORMAP = "magma"
#: Largest number of vertices along a side of the depth surface mesh.
SURFACE_MAX_SIDE = 512
#: Largest side of the image draped over the surface (a GPU texture).
TEXTURE_MAX_SIDE = 2048


def layer_name(source_name, role) -> str:
    """Name of a result layer: ``"<input> fused"``, ``"<input> depth"``..."""
    return f"{source_name} {role}"


def output_geometry(run, per_channel=False) -> dict:
    """``scale``, ``translate``, ``units`` and ``axis_labels`` of the result layers.

    Outer axes (time...) keep the input's values; a kept length-1 z axis (and
    a shared channel axis of the depth and confidence maps) spans the whole
    stack, so the result shows at every position along it; spatial axes are
    divided by the scale factor and shifted to the pixel centres.
    ``per_channel``: the geometry of the fused image, one per channel.
    """
    view, layout, s = run.input_view, run.layout, run.params.scale_factor
    ndim = layout.ndim
    scale = list(view.get("scale") or (1.0,) * ndim)
    translate = list(view.get("translate") or (0.0,) * ndim)
    for axis in (ndim - 2, ndim - 1):
        translate[axis] += (1 / s - 1) / 2 * scale[axis]
        scale[axis] /= s
    roles = layout.axis_roles(per_channel)
    for axis, role in roles.items():
        if role == "collapsed":
            n = layout.shape[axis]
            translate[axis] += (n - 1) / 2 * scale[axis]
            scale[axis] *= n
    keep = [a for a in range(ndim) if roles.get(a) != "dropped"]
    geometry = {
        "scale": tuple(scale[a] for a in keep),
        "translate": tuple(translate[a] for a in keep),
    }
    for key in ("units", "axis_labels"):
        if view.get(key) is not None:
            geometry[key] = tuple(view[key][a] for a in keep)
    return geometry


def input_position(run, world_point) -> tuple:
    """Integer index into the input layer's axes at a viewer position, clipped to the data.

    ``world_point`` is the viewer's ``dims.point``; napari lines up a layer
    with the viewer's last axes.
    """
    layout, view = run.layout, run.input_view
    point = tuple(world_point)[-layout.ndim :]
    scale = view.get("scale") or (1.0,) * layout.ndim
    translate = view.get("translate") or (0.0,) * layout.ndim
    return tuple(
        int(np.clip(round((p - t) / s), 0, n - 1))
        for p, t, s, n in zip(point, translate, scale, layout.shape[: layout.ndim])
    )


def plane_at(run, world_point) -> tuple:
    """The stack (index over the stack axes) the viewer shows at ``world_point``."""
    position = input_position(run, world_point)
    return tuple(position[a] for a in run.layout.stack_axes)


def frame_at(run, world_point) -> int:
    """The frame (z index) the viewer shows at ``world_point``."""
    return input_position(run, world_point)[run.layout.z_axis]


def depth_unit(run) -> str:
    """``"µm"`` when the z step is known, else ``"slices"``."""
    return "slices" if run.z_step_um is None else "µm"


def depth_values(run) -> np.ndarray:
    """The depth map in :func:`depth_unit` units, 0 = first frame; NaN where unfocused, if the run marks them."""
    depth = run.depth if run.z_step_um is None else run.depth * np.float32(run.z_step_um)
    if run.mark_unfocused:
        depth = np.where(run.unfocused(), np.float32(np.nan), depth).astype(np.float32)
    return depth


def _metadata(run, role, **extra) -> dict:
    return {PROVENANCE_KEY: {"role": role, **run.provenance(), **extra}, RUN_KEY: run}


def fused_layer(run, fused=None) -> tuple:
    """The all-in-focus image, in the input's dtype, looking like the input.

    ``fused`` (default: the run's) is an array shaped like ``run.fused``.
    """
    kwargs = {
        "name": layer_name(run.source_name, "fused"),
        "rgb": run.layout.rgb,
        **output_geometry(run, per_channel=True),
    }
    if not run.layout.rgb:
        for key in ("colormap", "contrast_limits"):
            if run.input_view.get(key) is not None:
                kwargs[key] = run.input_view[key]
    kwargs["metadata"] = _metadata(run, "fused")
    return (run.fused if fused is None else fused), kwargs, "image"


def fused_layers(run, fused=None) -> list:
    """The fused layer, or one per channel layer when the run fused a set of layers.

    A run of several layers (one per channel) has its channel axis first;
    each channel's result is named and coloured after its input layer.
    """
    data, kwargs, layer_type = fused_layer(run, fused)
    channel_views = run.input_view.get("channel_layers")
    if not channel_views:
        return [(data, kwargs, layer_type)]
    results = []
    for c, view in enumerate(channel_views):
        channel_kwargs = {
            key: value[1:] if key in ("scale", "translate", "units", "axis_labels") else value
            for key, value in kwargs.items()
        }
        channel_kwargs.update(
            name=layer_name(view["name"], "fused"),
            colormap=view.get("colormap"),
            contrast_limits=view.get("contrast_limits"),
            blending="additive",
            metadata=_metadata(run, "fused", channel=c),
        )
        results.append((data[c], channel_kwargs, layer_type))
    return results


def depth_layer(run) -> tuple:
    """Depth map with a perceptual colour map spanning the stack's depth range."""
    top = (run.layout.n_frames - 1) * (run.z_step_um or 1.0)
    kwargs = {
        "name": layer_name(run.source_name, "depth"),
        "colormap": DEPTH_COLORMAP,
        "contrast_limits": (0.0, float(top)),
        **output_geometry(run),
        "metadata": _metadata(run, "depth", depth_unit=depth_unit(run)),
    }
    return depth_values(run), kwargs, "image"


def confidence_layer(run) -> tuple:
    """Confidence in [0, 1]; hidden at first, so it does not cover the others."""
    kwargs = {
        "name": layer_name(run.source_name, "confidence"),
        "colormap": CONFIDENCE_COLORMAP,
        "contrast_limits": (0.0, 1.0),
        "visible": False,
        **output_geometry(run),
        "metadata": _metadata(run, "confidence"),
    }
    return run.confidence, kwargs, "image"


def result_layers(run) -> list:
    """Depth, confidence and fused layers, in that order so the fused image is on top."""
    return [depth_layer(run), confidence_layer(run), *fused_layers(run)]


def aligned_layer(run) -> tuple:
    """The input frames as they were fused (aligned to the reference frame), placed like the input."""
    layout = run.layout
    aligned = np.empty(layout.shape, dtype=np.asarray(run.fused).dtype)
    channels = [None] if layout.channel_axis is None else range(layout.n_channels)
    for plane in layout.planes():
        for channel in channels:
            frames = run.aligned_frames(plane, channel)
            target = layout.stack(aligned, plane, channel)
            for k in range(len(frames)):
                target[k] = frames[k]
    kwargs = {"name": layer_name(run.source_name, "aligned"), "rgb": run.layout.rgb}
    for key in ("scale", "translate", "units", "axis_labels", "colormap", "contrast_limits"):
        if run.input_view.get(key) is not None:
            kwargs[key] = run.input_view[key]
    kwargs["metadata"] = _metadata(run, "aligned")
    return aligned, kwargs, "image"


def edits_layer(run) -> tuple:
    """Empty Labels layer for depth corrections, on the depth map's pixel grid.

    0 keeps the computed depth; label ``k + 1`` takes the pixel from frame
    ``k`` (the frame the z slider shows at position ``k``).
    """
    dtype = np.uint8 if run.layout.n_frames < 255 else np.uint16
    kwargs = {
        "name": layer_name(run.source_name, "depth edits"),
        "opacity": 0.5,
        **output_geometry(run),
        "metadata": _metadata(run, "depth edits", keep_label=KEEP_DEPTH),
    }
    return np.zeros(run.depth.shape, dtype=dtype), kwargs, "labels"


def grid_mesh(height, hidden=None):
    """Triangle mesh of a height map sampled on a grid of at most SURFACE_MAX_SIDE per side.

    ``hidden`` (bool, like ``height``) leaves out every triangle with a
    vertex there: holes where the height is unknown.

    Returns
    -------
    vertices : ndarray, (N, 3)
        ``(height, row, column)`` in the map's pixel units.
    faces : ndarray, (M, 3)
        Two triangles per grid cell.
    texcoords : ndarray, (N, 2)
        Position of each vertex in the map as texture coordinates ``(u, v)``
        in [0, 1], for a texture that is the map's image.
    """
    h, w = height.shape
    step = max(1, math.ceil(max(h, w) / SURFACE_MAX_SIDE))
    # every step-th row and column, and the last one so the mesh reaches the edges
    rows = np.unique(np.r_[np.arange(0, h, step), h - 1])
    cols = np.unique(np.r_[np.arange(0, w, step), w - 1])
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    vertices = np.stack([height[rr, cc], rr, cc], axis=-1).reshape(-1, 3).astype(np.float32)
    corner = (np.arange(len(rows) - 1)[:, None] * len(cols) + np.arange(len(cols) - 1)).ravel()
    right, below = corner + 1, corner + len(cols)
    faces = np.concatenate([np.stack([corner, right, below], 1), np.stack([right, below + 1, below], 1)])
    if hidden is not None:
        faces = faces[~np.asarray(hidden)[rr, cc].ravel()[faces].any(axis=1)]
    # (u, v) texture coordinates; v runs from the last row (0) to the first (1)
    texcoords = np.stack([(cc + 0.5) / w, 1 - (rr + 0.5) / h], axis=-1).reshape(-1, 2)
    return vertices, faces.astype(np.int64), texcoords.astype(np.float32)


def subsampled(image, max_side):
    """Every k-th row and column of ``image``, k chosen so no side exceeds ``max_side``."""
    step = max(1, math.ceil(max(image.shape[:2]) / max_side))
    return image[::step, ::step]


def display_rgb(image, contrast_limits=None) -> np.ndarray:
    """``image`` as float32 RGB in [0, 1], as napari shows it (gray replicated)."""
    if image.ndim == 2:
        lo, hi = contrast_limits if contrast_limits is not None else (image.min(), image.max())
        gray = (image.astype(np.float32) - lo) / max(float(hi - lo), 1e-12)
        return np.repeat(np.clip(gray, 0, 1)[..., None], 3, axis=-1)
    full = full_scale(image.dtype)
    return np.clip(image[..., :3].astype(np.float32) / full, 0, 1)


def surface_layer(run, plane=()) -> tuple:
    """The depth map of one stack as a 3D height surface, draped with the fused image.

    A depth of k frames is ``k * z step`` above the input's first frame (the
    input's z spacing when the step is unknown), so the surface lies inside
    the stack in 3D when the layer's z scale is the z step.
    """
    at = run.layout.output_index(plane)
    hidden = run.unfocused()[at] if run.mark_unfocused else None
    vertices, faces, texcoords = grid_mesh(run.depth[at], hidden)
    geometry = output_geometry(run)
    z = run.layout.z_axis
    view_scale = run.input_view.get("scale") or (1.0,) * run.layout.ndim
    view_translate = run.input_view.get("translate") or (0.0,) * run.layout.ndim
    z_scale = run.z_step_um or view_scale[z]
    if run.layout.channel_axis is not None:  # drape the channel the depth came from (the first for all)
        depth_from = run.layout.depth_from
        at_image = run.layout.output_index(plane, 0 if depth_from == "all" else depth_from)
    else:
        at_image = at
    texture = subsampled(run.fused[at_image], TEXTURE_MAX_SIDE)
    kwargs = {
        "name": layer_name(run.source_name, "depth surface"),
        "scale": (z_scale, *geometry["scale"][-2:]),
        "translate": (view_translate[z], *geometry["translate"][-2:]),
        "texture": display_rgb(texture, run.input_view.get("contrast_limits")),
        "texcoords": texcoords,
        "shading": "none",
        "metadata": _metadata(run, "depth surface"),
    }
    return (vertices, faces), kwargs, "surface"
