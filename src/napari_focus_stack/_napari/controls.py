"""Controls both dock widgets share: the engine parameters and the device box with its GPU check.

:func:`engine_controls` makes one magicgui control per engine parameter
(:class:`~napari_focus_stack.engine.result.StackParams`), with its range,
default and tooltip; :func:`params_of` reads them back as a StackParams, so
neither widget lists the parameters itself.
"""

from contextlib import suppress

from magicgui.widgets import ComboBox, Container, SpinBox

from ..engine.backend import gpu_status
from ..engine.result import ALIGN_MODES, DEFAULTS, METHODS, RANGES, StackParams
from .tasks import start_worker

#: Tooltips of the engine controls.
TOOLTIPS = {
    "radius": "Half-size (px) of the window in which sharpness is measured. Larger is "
    "steadier on noisy or weakly textured images; smaller keeps depth edges tighter.",
    "smoothing": "Smoothing (px) of the sharpness maps: neighbouring pixels agree more on their best frame.",
    "scale_factor": "Compute at this many times the input resolution; results cover the "
    "same field of view with smaller pixels.",
    "method": "weighted: frames averaged by sharpness (cleanest on noisy, smooth areas). "
    "depthmap: each pixel from the frames at its depth (crispest on steep fine detail; "
    "what retouching follows). pyramid: sharpest detail per scale; can show halos.",
    "align": "How frames are registered to the middle frame before fusing: shift, rotation "
    "and scale (focus breathing); a full affine map; shift only; or 'none' to take them "
    "as they are. Motion under 1.5 px is left alone.",
}
#: The device box's choices as ``(label, value)``.
DEVICES = [("Auto", "auto"), ("CPU", "cpu"), ("GPU", "gpu")]
#: Labels of the engine controls, by parameter.
LABELS = {
    "radius": "Radius (px)",
    "smoothing": "Smoothing",
    "scale_factor": "Scale factor",
    "method": "Method",
    "align": "Alignment",
    "device": "Device",
}


def spin_box(name, label):
    """A spin box for the ranged engine parameter ``name`` (its range, default and tooltip)."""
    low, high = RANGES[name]
    return SpinBox(label=label, min=low, max=high, value=DEFAULTS[name], tooltip=TOOLTIPS[name])


def engine_controls():
    """``{parameter: control}`` for every engine parameter a widget sets (all but ``reference``)."""
    controls = {name: spin_box(name, LABELS[name]) for name in RANGES}
    for name, choices in (("method", METHODS), ("align", ALIGN_MODES)):
        controls[name] = ComboBox(label=LABELS[name], choices=choices, value=DEFAULTS[name], tooltip=TOOLTIPS[name])
    controls["device"] = ComboBox(label=LABELS["device"], choices=DEVICES, value=DEFAULTS["device"])
    return controls


def params_of(controls):
    """The :class:`StackParams` the controls of :func:`engine_controls` are set to, checked."""
    return StackParams.of(**{name: control.value for name, control in controls.items()})


def row(*widgets):
    """Widgets side by side."""
    return Container(widgets=widgets, layout="horizontal", labels=False)


def gpu_item(device_box):
    """The GPU choice of ``device_box`` (a Qt item of its model), found by its value."""
    native = device_box.native
    return native.model().item(native.findData("gpu"))


def check_gpu(device_box):
    """Grey out the GPU choice of ``device_box`` unless a GPU is usable, with the reason as its tooltip.

    CuPy is asked off the main thread: importing it can take seconds.
    """
    show_gpu_status(device_box, False, "Checking for a GPU…")
    start_worker(gpu_status, on_returned=lambda status: show_gpu_status(device_box, *status), ignore_errors=True)


def show_gpu_status(device_box, available, reason):
    """Enable the GPU choice, or disable it with the reason as its tooltip."""
    with suppress(RuntimeError):  # the widget was closed before the check finished
        item = gpu_item(device_box)
        item.setEnabled(available)
        item.setToolTip(reason)
        device_box.tooltip = f"Where to compute. {reason}"
