"""The batch widget's model, free of Qt and napari: its choices, its plans and running them, its result layers.

Planning is :mod:`napari_focus_stack.batch`'s (the one planner the command
line uses too); here are what the widget adds: the labels of its choices,
running a plan stack by stack (:func:`iter_batch`), the fused images as
layer data (:func:`batch_layers`) and the summary line (:func:`summarize`).
"""

import numpy as np

from .. import batch
from ..batch import Tally
from ..distributed import StackOutcome, process_one
from ..io import read_image
from .layers import PROVENANCE_KEY

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
    return batch.plan_batch(
        root, outdir, options, grouping=grouping, stack_size=stack_size, pattern=pattern, resume=resume
    )


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
        return (
            f"Stopped after {tally.finished} of {tally.total} stacks ({tally.counts()}); Run with Resume to do the rest"
        )
    return tally.counts()
