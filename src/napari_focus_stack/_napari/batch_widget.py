"""The "Focus Stack batch" dock widget: fuse every stack of a folder, then show the results.

Pick an input folder and how its frames make stacks (the grouping rules of
:mod:`napari_focus_stack.batch`); Preview lists the stacks, Run processes them
one after the other with :func:`napari_focus_stack.distributed.process_one` in
a napari worker thread (progress per stack, Cancel between stacks) and opens
the fused images as layers. A stack that fails is reported; the others go on.
Set ``widget.synchronous = True`` to run on the calling thread, as tests do.

What is testable without a viewer (choices, plans, running them, result
layers) is in :mod:`.batch_view`, free of Qt; the engine controls are the
single widget's (:mod:`.controls`).
"""

import threading
from functools import partial
from pathlib import Path

import napari
from magicgui.widgets import CheckBox, ComboBox, Container, FileEdit, Label, LineEdit, PushButton, SpinBox, TextEdit
from napari.utils.notifications import show_error, show_warning

from ..batch import OUTPUT_FORMATS, BatchOptions
from . import actions
from .batch_view import (  # noqa: F401 - the Qt-free model, re-exported: what the widget shows and runs
    DEFAULT_OUTPUT_NAME,
    DEFAULT_PATTERN,
    GROUPINGS,
    MAX_RESULT_LAYERS,
    MAX_SEPARATE_LAYERS,
    OUTPUT_TOOLTIP,
    PATTERN_TOOLTIP,
    batch_layers,
    find_stacks,
    iter_batch,
    plan_batch,
    read_fused,
    summarize,
)
from .controls import check_gpu, engine_controls, params_of, row
from .tasks import start_worker


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
        self.engine = engine_controls()
        self.radius, self.smoothing, self.scale_factor = (
            self.engine[n] for n in ("radius", "smoothing", "scale_factor")
        )
        self.method, self.align, self.device = (self.engine[n] for n in ("method", "align", "device"))
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
                self.input_folder,
                self.output_folder,
                self.grouping,
                self.stack_size,
                self.pattern,
                self.preview_button,
                self.stack_list,
                self.radius,
                self.smoothing,
                self.scale_factor,
                self.method,
                self.align,
                self.device,
                self.format,
                row(self.depth, self.confidence),
                self.resume,
                row(self.run_button, self.cancel_button),
                self.status,
            ]
        )
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
            params_of(self.engine), format=self.format.value, depth=self.depth.value, confidence=self.confidence.value
        )

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
            plan_batch,
            root,
            outdir,
            options,
            grouping=self.grouping.value,
            stack_size=self.stack_size.value,
            pattern=self.pattern.value,
            resume=self.resume.value,
        )
        self._set_busy(True)
        self.status.value = f"Finding stacks in {root}…"
        self.worker = start_worker(
            plan,
            progress={"desc": "Finding stacks"},
            on_returned=then,
            on_failed=self._plan_failed,
            synchronous=self.synchronous,
            reported=(ValueError,),
        )

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
        self.worker = start_worker(
            iter_batch,
            plan,
            self.cancel_event,
            progress={"total": len(plan.stacks), "desc": description},
            on_yielded=self._record,
            on_finished=self._finish,
            synchronous=self.synchronous,
        )

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
