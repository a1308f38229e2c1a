"""The "Focus Stack batch" dock widget: fuse every stack of a folder, then show the results.

Pick an input folder and how its frames make stacks (the grouping rules of
:mod:`napari_focus_stack.batch`); Preview lists the stacks, Run processes them
one after the other with :func:`napari_focus_stack.distributed.process_one` in
a napari worker thread (progress per stack, Cancel between stacks) and opens
the fused images as layers. A stack that fails is reported; the others go on.
Set ``widget.synchronous = True`` to run on the calling thread, as tests do.

Everything above the widget class is free of Qt and testable without a viewer.
"""

import threading
from functools import partial
from pathlib import Path

import napari
import numpy as np
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox, TextEdit
from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error, show_warning

from .. import batch
from ..batch import OUTPUT_FORMATS, BatchOptions, BatchPlan, Tally  # noqa: F401 - BatchPlan: the plans this widget runs
from ..distributed import StackOutcome, process_one
from ..engine.result import ALIGN_MODES, DEFAULTS, METHODS
from ..io import read_image
from . import actions
from .layers import PROVENANCE_KEY
from .widget import DEVICES, TOOLTIPS, _row, _spin_box, check_gpu

#: Grouping rules as ``(label, value)`` choices; values are what :func:`find_stacks` takes.
GROUPINGS = [
    ("one stack per sub-folder", "subfolders"),
    ("every N frames", "size"),
    ("file-name pattern", "pattern"),
    ("find focus sweeps automatically", "sweeps"),
]
#: The default output folder, made inside the input folder.
DEFAULT_OUTPUT_NAME = "fused"
#: Up to this many fused images open as one layer each; more of one shape open as one stacked layer.
MAX_SEPARATE_LAYERS = 10
#: At most this many fused images are opened (all of them are in the output folder).
MAX_RESULT_LAYERS = 50
DEFAULT_PATTERN = r"(?P<stack>.+)_z\d+\.\w+"
OUTPUT_TOOLTIP = f"Fused images and their manifests (.json); by default <input>/{DEFAULT_OUTPUT_NAME}."
PATTERN_TOOLTIP = (
    r"A regular expression matching whole file names; its group (?P<stack>...) names the stack: "
    r"(?P<stack>.+)_z\d+\.tif puts a_z1.tif and a_z2.tif in stack a."
)


def find_stacks(root, grouping, *, stack_size=10, pattern=""):
    """The stacks in ``root`` by one of the :data:`GROUPINGS` rules (:func:`napari_focus_stack.batch.find_stacks`).

    Raises
    ------
    ValueError
        ``root`` is not a folder, the pattern is invalid, or no stack is found.
    """
    return batch.find_stacks(root, grouping, stack_size=stack_size, pattern=pattern).stacks


def plan_batch(root, outdir, options, *, grouping, stack_size=10, pattern="", resume=False):
    """Find the stacks and check their outputs, writing nothing (:func:`napari_focus_stack.batch.plan_batch`)."""
    return batch.plan_batch(root, outdir, options, grouping=grouping, stack_size=stack_size, pattern=pattern, resume=resume)


def read_fused(path, name):
    """Layer data ``(image, kwargs, "image")`` of a fused image a batch wrote.

    TIFF files carry the run's parameters (kept in the layer's metadata) and
    their pixel size, which sets the layer's scale.
    """
    image, provenance = read_image(path)
    kwargs = {"name": name, "rgb": image.ndim == 3, "metadata": {PROVENANCE_KEY: provenance}}
    if provenance.get("pixel_size_um") is not None:
        kwargs.update(scale=tuple(provenance["pixel_size_um"]), units=("µm", "µm"))
    return image, kwargs, "image"


def iter_batch(plan, cancel):
    """Process the stacks of ``plan`` in order; yield ``(outcome, fused)`` after each.

    ``fused`` is the layer data of the stack's fused image (:func:`read_fused`)
    for the first :data:`MAX_RESULT_LAYERS` finished stacks, else None. Stacks
    ``plan.complete`` marks are skipped. Stops before the next stack once
    ``cancel`` (a :class:`threading.Event`) is set.
    """
    plan.outdir.mkdir(parents=True, exist_ok=True)
    n_read = 0
    for stack, outputs, complete in zip(plan.stacks, plan.outputs, plan.complete):
        if cancel.is_set():
            return
        if complete:
            outcome = StackOutcome(stack.name, "skipped", n_frames=len(stack.paths))
        else:
            outcome = process_one(stack, plan.outdir, plan.options)
        fused = None
        if not outcome.failed and n_read < MAX_RESULT_LAYERS:
            fused = read_fused(outputs.fused, stack.name)
            n_read += 1
        yield outcome, fused


def batch_layers(fused, title):
    """One layer per fused image, or one layer ``title`` stacking them all.

    They are stacked when there are more than :data:`MAX_SEPARATE_LAYERS` of
    one shape and dtype; the stacked layer lists the stack names in its
    metadata and has no physical scale (stacks need not share a pixel size).
    """
    shapes = {(image.shape, image.dtype) for image, _, _ in fused}
    if len(fused) <= MAX_SEPARATE_LAYERS or len(shapes) > 1:
        return list(fused)
    names = [kwargs["name"] for _, kwargs, _ in fused]
    rgb = fused[0][1]["rgb"]
    kwargs = {"name": title, "rgb": rgb, "axis_labels": ("stack", "y", "x"), "metadata": {"stacks": names}}
    return [(np.stack([image for image, _, _ in fused]), kwargs, "image")]


def summarize(outcomes, n_stacks):
    """``"12 done, 1 skipped, 2 failed"``, saying so when the batch stopped early."""
    tally = Tally.of(outcomes, n_stacks)
    if tally.finished < tally.total:
        return f"Stopped after {tally.finished} of {tally.total} stacks ({tally.counts()}); Run with Resume to do the rest"
    return tally.counts()


class FocusStackBatchWidget(Container):
    """Dock widget that focus-stacks every stack of a folder and opens the fused images."""

    def __init__(self, viewer: napari.viewer.Viewer):
        super().__init__()
        self.viewer = viewer
        self.synchronous = False
        self.worker = self.plan = self._default_output = None
        self.outcomes, self.fused, self.cancel_event = [], [], threading.Event()
        self.input_folder = FileEdit(label="Input folder", mode="d", nullable=True)
        self.output_folder = FileEdit(label="Output folder", mode="d", nullable=True, tooltip=OUTPUT_TOOLTIP)
        self.grouping = ComboBox(label="Stacks", choices=GROUPINGS, value="subfolders")
        self.stack_size = SpinBox(label="Frames per stack", min=2, max=100_000, value=10, enabled=False)
        self.pattern = LineEdit(label="Pattern", value=DEFAULT_PATTERN, enabled=False, tooltip=PATTERN_TOOLTIP)
        self.preview_button = PushButton(text="Preview")
        self.stack_list = TextEdit(value="")
        self.stack_list.native.setReadOnly(True)
        self.radius = _spin_box("radius", "Radius (px)")
        self.smoothing = _spin_box("smoothing", "Smoothing")
        self.scale_factor = _spin_box("scale_factor", "Scale factor")
        self.method = ComboBox(label="Method", choices=METHODS, value=DEFAULTS["method"], tooltip=TOOLTIPS["method"])
        self.align = ComboBox(
            label="Alignment", choices=ALIGN_MODES, value=DEFAULTS["align"], tooltip=TOOLTIPS["align"]
        )
        self.device = ComboBox(label="Device", choices=DEVICES, value=DEFAULTS["device"])
        self.format = ComboBox(label="Format", choices=OUTPUT_FORMATS, value="tif")
        self.depth = CheckBox(text="Depth maps", value=False)
        self.confidence = CheckBox(text="Confidence maps", value=False)
        self.resume = CheckBox(text="Resume: skip stacks already done with these options", value=False)
        self.run_button = PushButton(text="Run")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="")
        self.status.native.setWordWrap(True)
        self.extend(
            [
                self.input_folder, self.output_folder, self.grouping, self.stack_size, self.pattern,
                self.preview_button, self.stack_list, self.radius, self.smoothing, self.scale_factor,
                self.method, self.align, self.device, self.format, _row(self.depth, self.confidence),
                self.resume, _row(self.run_button, self.cancel_button), self.status,
            ]
        )  # fmt: skip
        self.input_folder.changed.connect(self._on_input_changed)
        self.grouping.changed.connect(self._on_grouping_changed)
        self.preview_button.changed.connect(self.preview)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        check_gpu(self.device)

    def _on_input_changed(self, event=None):
        """Point the output folder into the new input folder, unless the user chose one."""
        root = self.input_folder.value
        if root is not None and self.output_folder.value in (None, self._default_output):
            self._default_output = Path(root) / DEFAULT_OUTPUT_NAME
            self.output_folder.value = self._default_output

    def _on_grouping_changed(self, event=None):
        self.stack_size.enabled = self.grouping.value == "size"
        self.pattern.enabled = self.grouping.value == "pattern"

    def options(self):
        """The :class:`BatchOptions` set in the widget, checked."""
        return BatchOptions(
            radius=self.radius.value, smoothing=self.smoothing.value, scale_factor=self.scale_factor.value,
            method=self.method.value, align=self.align.value, device=self.device.value,
            format=self.format.value, depth=self.depth.value, confidence=self.confidence.value,
        )  # fmt: skip

    def preview(self, event=None):
        """List the stacks Run would make, writing nothing."""
        self._plan(self._show_plan)

    def run(self, event=None):
        """Process every stack in the background; the fused images open as layers when done."""
        self.cancel_event = threading.Event()
        self._plan(self._start_batch)

    def cancel(self, event=None):
        """Stop before the next stack; finished stacks keep their outputs."""
        self.cancel_event.set()
        self.status.value = "Cancelling after the current stack…"

    def _plan(self, then):
        """Plan the batch set in the widget, then call ``then(plan)``; mistakes are notified.

        Planning runs in a worker thread: finding focus sweeps reads every frame.
        """
        root, outdir = self.input_folder.value, self.output_folder.value
        if root is None or outdir is None:
            show_warning("Choose an input folder and an output folder first.")
            return
        try:
            options = self.options()
        except ValueError as error:
            show_error(str(error))
            return
        plan = partial(
            plan_batch, root, outdir, options, grouping=self.grouping.value, stack_size=self.stack_size.value,
            pattern=self.pattern.value, resume=self.resume.value,
        )  # fmt: skip
        self._set_busy(True)
        self.status.value = f"Finding stacks in {root}…"
        if not self.synchronous:
            self.worker = create_worker(
                plan, _progress={"desc": "Finding stacks"}, _connect={"returned": then, "errored": self._plan_failed}
            )
            return
        try:
            planned = plan()
        except ValueError as error:
            self._plan_failed(error)
        else:
            then(planned)

    def _plan_failed(self, error):
        """Say why there is nothing to run; anything but a mistake in the inputs is a bug, raised."""
        self._set_busy(False)
        self.status.value = f"Nothing run: {error}"
        if not isinstance(error, ValueError):
            raise error
        show_error(f"Focus Stack batch: {error}")

    def _show_plan(self, plan):
        self._set_busy(False)
        self.stack_list.value = plan.describe()
        self.status.value = f"{len(plan.stacks)} stacks; nothing written yet."

    def _start_batch(self, plan):
        self.plan, self.outcomes, self.fused = plan, [], []
        self.stack_list.value = plan.describe()
        description = f"Focus stacking {len(plan.stacks)} stacks"
        if not self.synchronous:
            self.worker = create_worker(
                iter_batch, plan, self.cancel_event,
                _progress={"total": len(plan.stacks), "desc": description},
                _connect={"yielded": self._record, "finished": self._finish},
            )  # fmt: skip
            return
        try:
            for step in progress(iter_batch(plan, self.cancel_event), total=len(plan.stacks), desc=description):
                self._record(step)
        finally:
            self._finish()

    def _record(self, step):
        """Note one stack's outcome and show it in the status line."""
        outcome, fused = step
        self.outcomes.append(outcome)
        if fused is not None:
            self.fused.append(fused)
        reason = f": {outcome.reason}" if outcome.failed else ""
        self.status.value = f"{len(self.outcomes)}/{len(self.plan.stacks)} {outcome.name} {outcome.status}{reason}"

    def _finish(self):
        """Open the fused images as layers, report the failures and sum up."""
        self._set_busy(False)
        for layer_data in batch_layers(self.fused, f"{self.plan.root.name} fused"):
            actions.add_or_replace(self.viewer, layer_data)
        failed = [outcome for outcome in self.outcomes if outcome.failed]
        if failed:
            reasons = "\n".join(f"{outcome.name}: {outcome.reason}" for outcome in failed)
            show_warning(f"Focus Stack batch: {len(failed)} of {len(self.plan.stacks)} stacks failed\n{reasons}")
        n_results = len(self.outcomes) - len(failed)
        shown = f"; the first {len(self.fused)} are open" if n_results > len(self.fused) else ""
        summary = summarize(self.outcomes, len(self.plan.stacks))
        self.status.value = f"{summary}. Outputs in {self.plan.outdir}{shown}."

    def _set_busy(self, busy):
        self.preview_button.enabled = self.run_button.enabled = not busy
        self.cancel_button.enabled = busy
