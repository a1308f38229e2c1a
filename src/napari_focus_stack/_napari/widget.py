"""The "Focus Stack" dock widget: pick a z-stack layer, set parameters, run, retouch.

The work runs in a napari worker thread (:mod:`.tasks`); set
``widget.synchronous = True`` to run it on the calling thread, as tests do.
Layer building lives in :mod:`.layers` and viewer changes in :mod:`.actions`.
"""

from contextlib import suppress

import napari
from magicgui.widgets import CheckBox, ComboBox, Container, FloatSpinBox, Label, PushButton, SpinBox
from napari.layers import Image
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_warning

from ..engine.backend import gpu_status
from ..engine.result import ALIGN_MODES, DEFAULTS, METHODS, RANGES, StackParams
from . import actions, layers
from .stacking import StackLayout, expected_steps, iter_stack_layer
from .tasks import FrameTask

TOOLTIPS = {
    "radius": "Half-size (px) of the window in which sharpness is measured. Larger is "
    "steadier on noisy or weakly textured images; smaller keeps depth edges tighter.",
    "smoothing": "Smoothing (px) of the sharpness maps: neighbouring pixels agree more "
    "on their best frame.",
    "scale_factor": "Compute at this many times the input resolution; results cover the "
    "same field of view with smaller pixels.",
    "method": "weighted: frames averaged by sharpness (cleanest on noisy, smooth areas). "
    "depthmap: each pixel from the frames at its depth (crispest on steep fine detail; "
    "what retouching follows). pyramid: sharpest detail per scale; can show halos.",
    "align": "How frames are registered to the middle frame before fusing: shift, rotation "
    "and scale (focus breathing); a full affine map; shift only; or 'none' to take them "
    "as they are. Motion under 1.5 px is left alone.",
    "show_aligned": "Also add the aligned frames as a layer, to check the alignment.",
    "mark_unfocused": "Show the depth as transparent (NaN) where no frame has a usable focus "
    "signal in or around a pixel (flat, textureless or dark areas), instead of a guess.",
    "z_step": "Distance between frames in µm; the depth map is in µm when set, in "
    "frames (slices) when 0.",
    "z_axis": "The axis along which focus changes; other axes (time, channel) are "
    "stacked one by one.",
    "surface": "Show the depth map as a 3D surface draped with the fused image.",
    "edit": "Add a labels layer to paint corrections into the depth map: move the z slider "
    "to the frame where a region is sharp and paint over it.",
    "refuse": "Fuse again, taking painted regions from the frames painted; focus is not "
    "measured again.",
}
DEVICES = [("Auto", "auto"), ("CPU", "cpu"), ("GPU", "gpu")]
GPU_INDEX = 2


def _spin_box(name, label):
    low, high = RANGES[name]
    return SpinBox(label=label, min=low, max=high, value=DEFAULTS[name], tooltip=TOOLTIPS[name])


def _row(*widgets):
    return Container(widgets=widgets, layout="horizontal", labels=False)


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


def _default_z_axis(layer):
    """The axis labelled z, else the first non-spatial axis."""
    labels = [str(label).lower() for label in layer.axis_labels[: layer.ndim - 2]]
    return labels.index("z") if "z" in labels else 0


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


def check_gpu(device_box):
    """Grey out the GPU choice of ``device_box`` unless a GPU is usable, with the reason as its tooltip.

    CuPy is asked off the main thread: importing it can take seconds.
    """
    show_gpu_status(device_box, False, "Checking for a GPU…")
    worker = create_worker(gpu_status, _start_thread=False, _ignore_errors=True)
    worker.returned.connect(lambda status: show_gpu_status(device_box, *status))
    worker.start()


def show_gpu_status(device_box, available, reason):
    """Enable the GPU choice, or disable it with the reason as its tooltip."""
    with suppress(RuntimeError):  # the widget was closed before the check finished
        item = device_box.native.model().item(GPU_INDEX)
        item.setEnabled(available)
        item.setToolTip(reason)
        device_box.tooltip = f"Where to compute. {reason}"


class FocusStackWidget(Container):
    """Dock widget that focus-stacks an image layer into fused, depth and confidence layers."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = viewer
        self.synchronous = False
        self.task = None
        self.stack = ComboBox(label="Stack", choices=self._stack_choices)
        self.z_axis = ComboBox(
            label="Z axis", choices=self._z_axis_choices, tooltip=TOOLTIPS["z_axis"]
        )
        self.z_step = FloatSpinBox(
            label="Z step (µm)", min=0, max=1e6, step=0.1, tooltip=TOOLTIPS["z_step"]
        )
        self.z_step.native.setSpecialValueText("unknown")
        self.z_step.native.setDecimals(3)
        self.radius = _spin_box("radius", "Radius (px)")
        self.smoothing = _spin_box("smoothing", "Smoothing")
        self.scale_factor = _spin_box("scale_factor", "Scale factor")
        self.method = ComboBox(
            label="Method", choices=METHODS, value=DEFAULTS["method"], tooltip=TOOLTIPS["method"]
        )
        self.align = ComboBox(
            label="Alignment",
            choices=ALIGN_MODES,
            value=DEFAULTS["align"],
            tooltip=TOOLTIPS["align"],
        )
        self.device = ComboBox(label="Device", choices=DEVICES, value=DEFAULTS["device"])
        self.show_aligned = CheckBox(text="Show aligned frames", value=False, tooltip=TOOLTIPS["show_aligned"])
        self.mark_unfocused = CheckBox(text="Mark unfocused depth", value=False, tooltip=TOOLTIPS["mark_unfocused"])
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.surface_button = PushButton(text="3D surface", tooltip=TOOLTIPS["surface"])
        self.edit_button = PushButton(text="Edit depth", tooltip=TOOLTIPS["edit"])
        self.refuse_button = PushButton(text="Re-fuse", tooltip=TOOLTIPS["refuse"])
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend(
            [
                self.stack, self.z_axis, self.z_step, self.radius, self.smoothing,
                self.scale_factor, self.method, self.align, self.show_aligned, self.mark_unfocused, self.device,
                _row(self.run_button, self.cancel_button),
                _row(self.surface_button, self.edit_button, self.refuse_button),
                self.status,
            ]
        )  # fmt: skip
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
        return [
            (f"{_axis_name(layer, axis)}: {shape[axis]} planes", axis)
            for axis in range(layer.ndim - 2)
        ]

    def _connect_events(self):
        for event in ("inserted", "removed", "renamed"):
            getattr(self.viewer.layers.events, event).connect(self._refresh_stacks)
        self.stack.changed.connect(self._on_stack_changed)
        self.z_axis.changed.connect(self._prefill_z_step)
        self.run_button.changed.connect(self.run)
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
        self._prefill_z_step()

    def _prefill_z_step(self, event=None):
        layer, axis = self.stack.value, self.z_axis.value
        self.z_step.value = 0.0 if layer is None or axis is None else _z_step_um(layer, axis)

    def _check_gpu(self):
        check_gpu(self.device)

    # --- running -----------------------------------------------------------
    def params(self):
        """The parameters set in the widget, checked."""
        return StackParams(
            radius=self.radius.value,
            smoothing=self.smoothing.value,
            scale_factor=self.scale_factor.value,
            method=self.method.value,
            align=self.align.value,
            device=self.device.value,
        )

    def run(self, event=None):
        """Focus-stack the chosen layer; results appear when it is done."""
        layer = self.stack.value
        if layer is None:
            show_warning("Open a z-stack first (a folder of frames or a multi-page TIFF).")
            return
        try:
            params = self.params()
            data = _layer_data(layer)
            layout = StackLayout(tuple(data.shape), self.z_axis.value, layer.rgb)
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
            input_view=_input_view(layer),
            mark_unfocused=self.mark_unfocused.value,
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
        if self.synchronous:
            actions.add_or_replace(self.viewer, layers.aligned_layer(run))
            return
        worker = create_worker(layers.aligned_layer, run, _start_thread=False)
        worker.returned.connect(lambda layer_data: actions.add_or_replace(self.viewer, layer_data))
        worker.errored.connect(lambda error: show_error(f"Could not show the aligned frames: {error}"))
        worker.start()

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
