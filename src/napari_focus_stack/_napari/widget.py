"""The "Focus Stack" dock widget: pick a z-stack layer, set parameters, run, retouch.

The work runs in a napari worker thread (:mod:`.tasks`); set
``widget.synchronous = True`` to run it on the calling thread, as tests do.
Layer building lives in :mod:`.layers` and viewer changes in :mod:`.actions`.
"""

import napari
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, PushButton, Select
from napari.layers import Image
from napari.utils.notifications import show_error, show_warning

from ..engine.depth import MIN_CONFIDENCE
from . import actions, layers
from .controls import check_gpu, engine_controls, params_of, row
from .stacking import StackLayout, expected_steps, iter_stack_layer
from .tasks import FrameTask, start_worker

#: Tooltips of this widget's own controls (the engine's are in :mod:`.controls`).
TOOLTIPS = {
    "show_aligned": "Also add the aligned frames as a layer, to check the alignment.",
    "min_confidence": "Confidence (0-1) around a pixel below which its depth counts as a guess "
    "and is hidden. The depth map keeps every value; retouching and saving use them.",
    "mark_unfocused": "Show the depth as transparent (NaN) where no frame has a usable focus "
    "signal in or around a pixel (flat, textureless or dark areas), instead of a guess.",
    "z_step": "Distance between frames in µm; the depth map is in µm when set, in frames (slices) when 0.",
    "z_axis": "The axis along which focus changes; other axes (time, channel) are "
    "stacked one by one. By default the axis labelled z, else the one just before Y and X.",
    "channels": "An axis of fluorescence channels, fused along one shared depth map so the "
    "channels stay registered ('none': each index stacked on its own). Other image layers of "
    "the same shape can be chosen below as further channels.",
    "channel_layers": "Other layers (one per channel) fused along this layer's depth map.",
    "depth_from": "Where the shared depth comes from: every channel's focus combined (each "
    "weighted by its signal-to-noise ratio), or one channel.",
    "surface": "Show the depth map as a 3D surface draped with the fused image.",
    "edit": "Add a labels layer to paint corrections into the depth map: move the z slider "
    "to the frame where a region is sharp and paint over it.",
    "refuse": "Fuse again, taking painted regions from the frames painted; focus is not measured again.",
}


def _z_step_um(layer, axis):
    """The layer's spacing along ``axis`` in µm, or 0 when it is unknown (1 pixel)."""
    scale, unit = float(layer.scale[axis]), layer.units[axis]
    try:
        return float((scale * unit).to("micrometer").magnitude)
    except Exception:  # pint DimensionalityError: pixels; a scale other than 1 is taken as µm
        return 0.0 if scale == 1.0 else scale


def _axis_name(layer, axis):
    """``"axis 1 (z)"``, or ``"axis 1"`` where the label is napari's default number."""
    label = str(layer.axis_labels[axis])
    return f"axis {axis}" if label.lstrip("-").isdigit() else f"axis {axis} ({label})"


#: Axis labels (lower case) that name a channel axis, and a time axis.
CHANNEL_LABELS = ("c", "ch", "channel", "channels")
TIME_LABELS = ("t", "time")


def _labels(layer):
    return [str(label).lower() for label in layer.axis_labels[: layer.ndim - 2]]


def _default_z_axis(layer):
    """The axis labelled z; else the last non-spatial axis not labelled as channel or time.

    Microscopy data comes as (T, C, Z, Y, X) or (T, Z, Y, X), often without
    labels: z is then the axis just before the image axes.
    """
    labels = _labels(layer)
    if "z" in labels:
        return labels.index("z")
    others = [a for a, label in enumerate(labels) if label not in CHANNEL_LABELS + TIME_LABELS]
    return others[-1] if others else layer.ndim - 3


def _default_channel_axis(layer, z_axis):
    """The axis labelled as channels (c, ch, channel), else None."""
    if layer.rgb:
        return None
    for axis, label in enumerate(_labels(layer)):
        if label in CHANNEL_LABELS and axis != z_axis:
            return axis
    return None


def _z_axis_reason(layer, axis):
    """Why the default z axis was chosen, for the status line."""
    if "z" in _labels(layer):
        return f"Z axis: {_axis_name(layer, axis)}, labelled z."
    if layer.ndim == 3:
        return f"Z axis: {_axis_name(layer, axis)}, the only one besides Y and X."
    return f"Z axis: {_axis_name(layer, axis)}, the one just before Y and X (no axis is labelled z)."


class LayerChannels:
    """Layers of one shape (one per channel) seen as one array with a channel axis first.

    Indexing takes a channel (an integer) first and passes the rest to that
    layer's data, so dask data stays lazy.
    """

    def __init__(self, datas):
        self.datas = list(datas)
        first = self.datas[0]
        self.shape = (len(self.datas), *first.shape)
        self.dtype = first.dtype
        self.ndim = len(self.shape)

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        return self.datas[int(index[0])][index[1:]]


def _input_view(layer):
    """What result layers need to overlay ``layer`` and look like it."""
    view = {
        "scale": tuple(float(s) for s in layer.scale),
        "translate": tuple(float(t) for t in layer.translate),
        "units": tuple(str(u) for u in layer.units),
        "axis_labels": tuple(layer.axis_labels),
    }
    if not layer.rgb:
        view["colormap"] = layer.colormap.name
        view["contrast_limits"] = tuple(float(c) for c in layer.contrast_limits)
    return view


def _layer_data(layer):
    """Full-resolution data of an image layer (the first level of a multiscale one)."""
    return layer.data[0] if layer.multiscale else layer.data


class FocusStackWidget(Container):
    """Dock widget that focus-stacks an image layer into fused, depth and confidence layers."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = viewer
        self.synchronous = False
        self.task = None
        self.stack = ComboBox(label="Stack", choices=self._stack_choices)
        self.z_axis = ComboBox(label="Z axis", choices=self._z_axis_choices, tooltip=TOOLTIPS["z_axis"])
        self.channels = ComboBox(label="Channels", choices=self._channel_choices, tooltip=TOOLTIPS["channels"])
        self.channel_layers = Select(
            label="Channel layers", choices=self._channel_layer_choices, tooltip=TOOLTIPS["channel_layers"]
        )
        self.channel_layers.native.setMaximumHeight(80)
        self.depth_from = ComboBox(label="Depth from", choices=self._depth_from_choices, tooltip=TOOLTIPS["depth_from"])
        self.z_step = FloatSpinBox(label="Z step (µm)", min=0, max=1e6, step=0.1, tooltip=TOOLTIPS["z_step"])
        self.z_step.native.setSpecialValueText("unknown")
        self.z_step.native.setDecimals(3)
        self.engine = engine_controls()
        self.radius, self.smoothing, self.scale_factor = (
            self.engine[n] for n in ("radius", "smoothing", "scale_factor")
        )
        self.method, self.align, self.device = (self.engine[n] for n in ("method", "align", "device"))
        self.show_aligned = CheckBox(text="Show aligned frames", value=False, tooltip=TOOLTIPS["show_aligned"])
        self.mark_unfocused = CheckBox(text="Hide unfocused depth", value=True, tooltip=TOOLTIPS["mark_unfocused"])
        self.min_confidence = FloatSpinBox(
            label="Min. confidence",
            min=0.0,
            max=1.0,
            step=0.05,
            value=MIN_CONFIDENCE,
            tooltip=TOOLTIPS["min_confidence"],
        )
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.surface_button = PushButton(text="3D surface", tooltip=TOOLTIPS["surface"])
        self.edit_button = PushButton(text="Edit depth", tooltip=TOOLTIPS["edit"])
        self.refuse_button = PushButton(text="Re-fuse", tooltip=TOOLTIPS["refuse"])
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend(
            [
                self.stack,
                self.z_axis,
                self.channels,
                self.channel_layers,
                self.depth_from,
                self.z_step,
                self.radius,
                self.smoothing,
                self.scale_factor,
                self.method,
                self.align,
                self.show_aligned,
                self.mark_unfocused,
                self.min_confidence,
                self.device,
                row(self.run_button, self.cancel_button),
                row(self.surface_button, self.edit_button, self.refuse_button),
                self.status,
            ]
        )
        self._connect_events()
        self._on_stack_changed()
        self._check_gpu()

    # --- choices ---------------------------------------------------------
    def _stack_choices(self, widget=None):
        """Image layers with at least one axis besides y and x, results excluded."""
        return [
            (layer.name, layer)
            for layer in self.viewer.layers
            if isinstance(layer, Image) and layer.ndim >= 3 and actions.run_of(layer) is None
        ]

    def _z_axis_choices(self, widget=None):
        layer = self.stack.value
        if layer is None:
            return []
        shape = _layer_data(layer).shape
        return [(f"{_axis_name(layer, axis)}: {shape[axis]} planes", axis) for axis in range(layer.ndim - 2)]

    def _channel_choices(self, widget=None):
        layer = self.stack.value
        if layer is None or layer.rgb:
            return [("none", None)]
        shape, z = _layer_data(layer).shape, self.z_axis.value
        return [("none", None)] + [
            (f"{_axis_name(layer, axis)}: {shape[axis]} channels", axis) for axis in range(layer.ndim - 2) if axis != z
        ]

    def _channel_layer_choices(self, widget=None):
        """Other gray image layers shaped like the chosen one: further channels."""
        layer = self.stack.value
        if layer is None or layer.rgb:
            return []
        shape = _layer_data(layer).shape
        return [
            (other.name, other)
            for other in self.viewer.layers
            if isinstance(other, Image)
            and other is not layer
            and not other.rgb
            and _layer_data(other).shape == shape
            and actions.run_of(other) is None
        ]

    def _n_channels(self):
        layer = self.stack.value
        if layer is None:
            return 0
        if self.channel_layers.value:
            return 1 + len(self.channel_layers.value)
        axis = self.channels.value
        return 0 if axis is None else _layer_data(layer).shape[axis]

    def _channel_names(self):
        if self.channel_layers.value:
            return [self.stack.value.name, *(layer.name for layer in self.channel_layers.value)]
        return [f"channel {c}" for c in range(self._n_channels())]

    def _depth_from_choices(self, widget=None):
        if self._n_channels() == 0:
            return [("—", "all")]
        return [("all channels combined", "all")] + [(name, c) for c, name in enumerate(self._channel_names())]

    def _refresh_channels(self, event=None):
        self.depth_from.reset_choices()
        self.depth_from.enabled = self._n_channels() > 0

    def _connect_events(self):
        for event in ("inserted", "removed", "renamed"):
            getattr(self.viewer.layers.events, event).connect(self._refresh_stacks)
            getattr(self.viewer.layers.events, event).connect(lambda event=None: self.channel_layers.reset_choices())
        self.stack.changed.connect(self._on_stack_changed)
        self.z_axis.changed.connect(self._prefill_z_step)
        self.z_axis.changed.connect(self._on_z_axis_changed)
        self.channels.changed.connect(self._refresh_channels)
        self.channel_layers.changed.connect(self._refresh_channels)
        self.run_button.changed.connect(self.run)
        self.mark_unfocused.changed.connect(lambda value: setattr(self.min_confidence, "enabled", bool(value)))
        self.cancel_button.changed.connect(self.cancel)
        self.surface_button.changed.connect(self.show_surface)
        self.edit_button.changed.connect(self.edit_depth)
        self.refuse_button.changed.connect(self.refuse)

    def _refresh_stacks(self, event=None):
        before = self.stack.value
        self.stack.reset_choices()
        if self.stack.value is not before:
            self._on_stack_changed()

    def _on_stack_changed(self, event=None):
        layer = self.stack.value
        self.z_axis.reset_choices()
        if layer is not None:
            self.z_axis.value = _default_z_axis(layer)
            self.status.value = _z_axis_reason(layer, self.z_axis.value)
        self._on_z_axis_changed()
        self.channel_layers.reset_choices()
        self._prefill_z_step()

    def _on_z_axis_changed(self, event=None):
        layer = self.stack.value
        self.channels.reset_choices()
        if layer is not None:
            self.channels.value = _default_channel_axis(layer, self.z_axis.value)
        self._refresh_channels()

    def _prefill_z_step(self, event=None):
        layer, axis = self.stack.value, self.z_axis.value
        self.z_step.value = 0.0 if layer is None or axis is None else _z_step_um(layer, axis)

    def _check_gpu(self):
        check_gpu(self.device)

    # --- running -----------------------------------------------------------
    def params(self):
        """The parameters set in the widget, checked."""
        return params_of(self.engine)

    def run(self, event=None):
        """Focus-stack the chosen layer; results appear when it is done."""
        layer = self.stack.value
        if layer is None:
            show_warning("Open a z-stack first (a folder of frames or a multi-page TIFF).")
            return
        try:
            params = self.params()
            data, layout, view = self._data_layout_view(layer)
        except ValueError as exc:
            show_error(str(exc))
            return
        self.task = FrameTask(
            iter_stack_layer,
            data,
            layout,
            params,
            source_name=layer.name,
            z_step_um=self.z_step.value or None,
            input_view=view,
            mark_unfocused=self.mark_unfocused.value,
            min_confidence=self.min_confidence.value,
            total=expected_steps(layout, params, data.shape[-3 if layer.rgb else -2 :]),
            description=f"Focus stacking {layer.name}",
        )
        self._set_busy(True)
        self.status.value = f"Stacking {layer.name}…"
        self.task.start(
            on_returned=self._show_results,
            on_cancelled=self._show_cancelled,
            on_failed=self._show_failure,
            on_finished=lambda: self._set_busy(False),
            synchronous=self.synchronous,
        )

    def _data_layout_view(self, layer):
        """The data to stack, its :class:`StackLayout` and the input's view, from the widget's choices."""
        data, view = _layer_data(layer), _input_view(layer)
        z_axis, channel_axis = self.z_axis.value, self.channels.value
        others = list(self.channel_layers.value)
        if others:  # one layer per channel: a channel axis in front
            data = LayerChannels([data, *(_layer_data(other) for other in others)])
            z_axis, channel_axis = z_axis + 1, 0
            view = {
                **view,
                "scale": (1.0, *view["scale"]),
                "translate": (0.0, *view["translate"]),
                "units": ("pixel", *view["units"]),
                "axis_labels": ("channel", *view["axis_labels"]),
                "channel_layers": [_input_view(other) | {"name": other.name} for other in [layer, *others]],
            }
        depth_from = self.depth_from.value if channel_axis is not None else "all"
        layout = StackLayout(tuple(data.shape), z_axis, layer.rgb, channel_axis, depth_from)
        return data, layout, view

    def cancel(self, event=None):
        """Stop the running task before its next frame; the viewer is left as it was."""
        if self.task is not None:
            self.task.cancel()

    def _show_results(self, run):
        """Add the result layers of a finished run."""
        actions.show_results(self.viewer, run)
        self.status.value = f"{run.source_name}: {run.layout.n_frames} frames fused on {run.device}."
        problems = run.alignment_problems()
        if problems:
            show_warning("Alignment: " + "; ".join(problems))
        if self.show_aligned.value:
            self._show_aligned(run)

    def _show_aligned(self, run):
        """Add the aligned frames as a layer; they are warped off the main thread."""
        start_worker(
            layers.aligned_layer,
            run,
            on_returned=lambda layer_data: actions.add_or_replace(self.viewer, layer_data),
            on_failed=lambda error: show_error(f"Could not show the aligned frames: {error}"),
            synchronous=self.synchronous,
        )

    def _show_cancelled(self):
        self.status.value = "Cancelled: no layers changed."

    def _show_failure(self, error):
        self.status.value = f"Failed: {error}"

    def _set_busy(self, busy):
        self.run_button.enabled = not busy
        self.cancel_button.enabled = busy
        for button in (self.surface_button, self.edit_button, self.refuse_button):
            button.enabled = not busy

    # --- results -----------------------------------------------------------
    def current_run(self):
        """The latest run of the chosen layer, or None (with a hint to the user)."""
        layer = self.stack.value
        run = None if layer is None else actions.find_run(self.viewer, layer.name)
        if run is None:
            show_warning("Run Focus Stack on this layer first.")
        return run

    def show_surface(self, event=None):
        """Show the chosen layer's depth map as a 3D surface."""
        if (run := self.current_run()) is not None:
            actions.show_depth_surface(self.viewer, run)

    def edit_depth(self, event=None):
        """Add a labels layer to paint depth corrections into."""
        if (run := self.current_run()) is not None:
            actions.edit_depth(self.viewer, run)

    def refuse(self, event=None):
        """Fuse again with the painted depth corrections."""
        if (run := self.current_run()) is None:
            return
        self._set_busy(True)
        self.task = actions.refuse(
            self.viewer,
            run,
            on_finished=lambda: self._set_busy(False),
            synchronous=self.synchronous,
        )
        if self.task is None:
            self._set_busy(False)
