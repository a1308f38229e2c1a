"""What the widget's buttons and the Layers-menu commands do to a viewer.

Every result layer knows the :class:`StackRun` it came from (:func:`run_of`:
a registry held by the layers themselves, so a run lives as long as one of
its layers; the layer metadata keeps only plain facts), so the 3D surface,
depth edits and re-fusing work from any result layer, with or without the
widget open, and re-fusing still has the input frames if the input layer was
deleted.

Results replace earlier layers of the same name, at the same place in the
layer list and with the same visibility.
"""

import weakref

import napari
from napari.layers import Layer
from napari.utils.notifications import show_info, show_warning

from . import layers
from .stacking import iter_refuse, planes_with_edits
from .tasks import FrameTask

#: The :class:`StackRun` each result layer was made from, held as long as the layer lives.
_RUNS = weakref.WeakKeyDictionary()


def run_of(layer):
    """The :class:`StackRun` a layer was made from, or None."""
    return None if layer is None else _RUNS.get(layer)


def set_run(layer, run):
    """Remember that ``layer`` belongs to ``run`` (for the 3D surface, depth edits and re-fusing)."""
    _RUNS[layer] = run


def find_run(viewer, source_name):
    """The latest run of the layer named ``source_name``, from its result layers."""
    for role in ("depth", "fused", "confidence", "depth edits"):
        name = layers.layer_name(source_name, role)
        if name in viewer.layers and run_of(viewer.layers[name]) is not None:
            return run_of(viewer.layers[name])
    return None


def add_or_replace(viewer, layer_data):
    """Add a layer from ``(data, kwargs, type)``, replacing one of the same name."""
    data, kwargs, layer_type = layer_data
    new = Layer.create(data, kwargs, layer_type)
    run = new.metadata.pop(layers.RUN_KEY, None)  # the metadata stays plain facts
    if run is not None:
        set_run(new, run)
    name = kwargs["name"]
    if name in viewer.layers:
        old = viewer.layers[name]
        index = viewer.layers.index(old)
        new.visible = old.visible
        viewer.layers.remove(old)
        viewer.layers.insert(index, new)
    else:
        viewer.layers.append(new)
    return new


def show_results(viewer, run):
    """Add (or replace) the fused, depth and confidence layers of ``run``."""
    for layer_data in layers.result_layers(run):
        add_or_replace(viewer, layer_data)
    edits_name = layers.layer_name(run.source_name, "depth edits")
    if edits_name in viewer.layers and viewer.layers[edits_name].data.shape == run.depth.shape:
        set_run(viewer.layers[edits_name], run)


def show_depth_surface(viewer, run):
    """Add the depth map of the stack shown now as a 3D surface, and switch to 3D."""
    plane = layers.plane_at(run, viewer.dims.point)
    layer = add_or_replace(viewer, layers.surface_layer(run, plane))
    viewer.dims.ndisplay = 3
    return layer


def _follow_z_slider(viewer, run, labels):
    """Keep the paint label at the frame the z slider shows, plus 1."""
    labels_ref = weakref.ref(labels)

    def update(event=None):
        target = labels_ref()
        if target is None or target not in viewer.layers:
            viewer.dims.events.current_step.disconnect(update)
            return
        target.selected_label = layers.frame_at(run, viewer.dims.point) + 1

    viewer.dims.events.current_step.connect(update)


def edit_depth(viewer, run):
    """Add a Labels layer to paint depth corrections into, ready to paint.

    An edit layer that still fits the depth map is kept with its paint.
    """
    name = layers.layer_name(run.source_name, "depth edits")
    existing = viewer.layers[name] if name in viewer.layers else None  # noqa: SIM401  (a LayerList has no get)
    if existing is not None and existing.data.shape == run.depth.shape:
        labels = existing
        set_run(labels, run)
    else:
        labels = add_or_replace(viewer, layers.edits_layer(run))
        _follow_z_slider(viewer, run, labels)
    viewer.dims.ndisplay = 2
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    labels.selected_label = layers.frame_at(run, viewer.dims.point) + 1
    show_info(
        "Move the z slider to the frame where a region is sharp and paint it; "
        "label 0 (eraser) keeps the computed depth. Then press Re-fuse."
    )
    return labels


def refuse(viewer, run, *, on_finished=None, synchronous=False):
    """Re-fuse ``run`` with the painted depth edits; updates the fused layer.

    Returns the started :class:`FrameTask`, or None (with a warning) when
    there is no edit layer that fits the depth map.
    """
    name = layers.layer_name(run.source_name, "depth edits")
    if name not in viewer.layers:
        show_warning("Nothing to re-fuse: press Edit depth and paint corrections first.")
        return None
    edits = viewer.layers[name].data.copy()  # painting may go on while this runs
    if edits.shape != run.depth.shape:
        show_warning(f"{name} no longer fits the depth map: press Edit depth for a new one.")
        return None
    planes = planes_with_edits(run, edits)
    task = FrameTask(
        iter_refuse,
        run,
        edits,
        total=len(planes) * run.layout.n_frames * run.layout.n_channels,
        description=f"Re-fusing {run.source_name}",
    )
    task.start(
        on_returned=lambda fused: _show_refused(viewer, run, fused),
        on_finished=on_finished,
        synchronous=synchronous,
    )
    return task


def _show_refused(viewer, run, fused):
    for data, kwargs, layer_type in layers.fused_layers(run, fused):
        name = kwargs["name"]
        if name in viewer.layers:
            viewer.layers[name].data = data
        else:
            add_or_replace(viewer, (data, kwargs, layer_type))
        viewer.layers[name].metadata[layers.PROVENANCE_KEY]["retouched"] = True


# --- Layers-menu commands: act on the selected result layer ------------------


def _selected_run(viewer):
    run = run_of(viewer.layers.selection.active)
    if run is None:
        show_warning("Select a layer made by Focus Stack (fused, depth or confidence) first.")
    return run


def depth_surface_command(viewer: napari.viewer.Viewer) -> None:
    """Show the selected result's depth map as a 3D surface."""
    if (run := _selected_run(viewer)) is not None:
        show_depth_surface(viewer, run)


def edit_depth_command(viewer: napari.viewer.Viewer) -> None:
    """Add a Labels layer to paint depth corrections for the selected result."""
    if (run := _selected_run(viewer)) is not None:
        edit_depth(viewer, run)


def refuse_command(viewer: napari.viewer.Viewer) -> None:
    """Re-fuse the selected result with its painted depth edits."""
    if (run := _selected_run(viewer)) is not None:
        refuse(viewer, run)
