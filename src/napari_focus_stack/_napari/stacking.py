"""Focus-stack the data of a napari layer, and re-fuse it from an edited depth map.

No Qt and no viewer here, so everything is testable with plain arrays.

A layer may hold several z-stacks: ``(T, Z, Y, X)`` is one stack per time
point. :class:`StackLayout` says which axis is z, cuts the layer's data into
``(Z, Y, X[, C])`` stacks without copying (dask data stays lazy) and puts the
per-stack results back together in the layer's axis order.

>>> import numpy as np
>>> layout = StackLayout(shape=(2, 5, 8, 8), z_axis=1, rgb=False)
>>> layout.planes(), layout.output_shape((8, 8))
([(0,), (1,)], (2, 1, 8, 8))
"""

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from ..api import iter_focus_stack
from ..engine.backend import get_backend
from ..engine.pipeline import MIN_ALIGN_SIDE, aligned_like, run_refuse
from ..engine.result import StackParams
from ..io import open_stack

#: Label value of a depth-edit pixel that keeps the computed depth; label
#: ``k + 1`` means "take this pixel from frame k".
KEEP_DEPTH = 0


@dataclass(frozen=True)
class StackLayout:
    """Where the z axis of a layer's data is, and what surrounds it.

    Parameters
    ----------
    shape : tuple of int
        Shape of the layer's data, including the colour axis of RGB layers.
    z_axis : int
        The focus (z) axis; one of the axes before the last two spatial ones.
    rgb : bool
        Whether the last axis holds colour channels.
    """

    shape: tuple
    z_axis: int
    rgb: bool

    def __post_init__(self):
        if not 0 <= self.z_axis < self.ndim - 2:
            raise ValueError(
                f"z axis {self.z_axis} is not one of the {self.ndim - 2} non-spatial "
                f"axes of data shaped {self.shape}"
            )

    @property
    def ndim(self) -> int:
        """Dimensions as napari counts them (without the colour axis)."""
        return len(self.shape) - int(self.rgb)

    @property
    def n_frames(self) -> int:
        return self.shape[self.z_axis]

    @property
    def outer_axes(self) -> tuple:
        """Axes that are neither z nor spatial (time, channel...): one stack per index."""
        return tuple(a for a in range(self.ndim - 2) if a != self.z_axis)

    @property
    def keeps_z(self) -> bool:
        """Whether results keep a length-1 z axis.

        napari aligns layers by their last axes, so a result of ``(T, Z, Y, X)``
        must stay ``(T, 1, Y, X)`` for its time axis to line up with the
        input's; when z is the first axis it can simply be dropped.
        """
        return self.z_axis > 0

    def planes(self) -> list:
        """Index (over :attr:`outer_axes`) of every stack in the data; ``[()]`` for one."""
        return list(np.ndindex(*(self.shape[a] for a in self.outer_axes)))

    def stack(self, data, plane):
        """The ``(Z, Y, X[, C])`` stack at ``plane``: a view, lazy for dask arrays.

        Indexing every outer axis with an integer leaves z as the first axis.
        """
        index = [slice(None)] * len(self.shape)
        for axis, i in zip(self.outer_axes, plane):
            index[axis] = i
        return data[tuple(index)]

    def output_index(self, plane) -> tuple:
        """Index of ``plane``'s image in an array of :meth:`output_shape`."""
        return (*plane[: self.z_axis], 0, *plane[self.z_axis :]) if self.keeps_z else tuple(plane)

    def output_shape(self, image_shape) -> tuple:
        """Shape of the assembled results whose per-stack images are ``image_shape``."""
        outer = tuple(self.shape[a] for a in self.outer_axes)
        shape = outer + tuple(image_shape)
        return shape[: self.z_axis] + (1,) + shape[self.z_axis :] if self.keeps_z else shape

    def assemble(self, images) -> np.ndarray:
        """One array, in the layer's axis order, from the images of :meth:`planes`."""
        return np.stack(images).reshape(self.output_shape(images[0].shape))


@dataclass
class StackRun:
    """One focus-stacking run of a layer: what is needed to show, edit and re-fuse it.

    Attributes
    ----------
    source_name : str
        Name of the input layer.
    frames : array-like
        The input layer's data (a reference, not a copy), for re-fusing.
    layout : StackLayout
    params : StackParams
    fused, depth, confidence : ndarray
        Results in the layer's axis order (:meth:`StackLayout.output_shape`);
        ``depth`` in slices, 0 = first frame.
    device : str
        Where it ran.
    z_step_um : float or None
        Distance between frames; None when unknown.
    input_view : dict
        The input layer's ``scale``, ``translate``, ``units``, ``axis_labels``,
        ``colormap`` and ``contrast_limits``, so results overlay it.
    alignments : list
        Per stack (in :meth:`StackLayout.planes` order), the ``(transforms,
        alignment)`` it was fused with: :attr:`StackResult.transforms` and
        ``metadata["alignment"]`` (None, None without alignment).
    mark_unfocused : bool
        Show the depth of pixels with no usable focus signal as NaN
        (transparent); ``depth`` itself keeps them, for retouching.
    """

    source_name: str
    frames: Any
    layout: StackLayout
    params: StackParams
    fused: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    device: str = "cpu"
    z_step_um: Optional[float] = None
    input_view: dict = field(default_factory=dict)
    alignments: list = field(default_factory=list)
    mark_unfocused: bool = False

    def alignment_problems(self) -> list:
        """One line per frame that could not be aligned, for the user."""
        return [
            message
            for _, alignment in self.alignments
            if alignment
            for message in alignment["messages"]
            if alignment["failed"] and "frames used as they are" not in message
        ]

    def aligned_frames(self, plane):
        """The frames of ``plane`` as they were fused: aligned when they were."""
        frames = open_stack(self.layout.stack(self.frames, plane))
        index = self.layout.planes().index(plane)
        return aligned_like(frames, *self.alignments[index]) if self.alignments else frames

    def provenance(self) -> dict:
        """Plain facts about the run (JSON-friendly), for layer metadata."""
        return {
            "software": "napari-focus-stack",
            "source_layer": self.source_name,
            **self.params.as_dict(),
            "device": self.device,
            "z_axis": self.layout.z_axis,
            "n_frames": self.layout.n_frames,
            "z_step_um": self.z_step_um,
            "mark_unfocused": self.mark_unfocused,
        }


def iter_stack_layer(
    data, layout, params, *, source_name="", z_step_um=None, input_view=None, cancel=None, mark_unfocused=False
):
    """Focus-stack every stack in a layer's data.

    A generator: yields the engine's :class:`Progress` once per frame (so
    ``len(layout.planes()) * layout.n_frames`` times) and returns a
    :class:`StackRun`. Nothing runs until the first ``next()``: the backend
    is chosen and frames are read on the thread that iterates.

    Raises
    ------
    StackCancelled
        When ``cancel`` is set; checked between frames.
    """
    results = []
    for plane in layout.planes():
        stack = layout.stack(data, plane)
        result = yield from iter_focus_stack(stack, **params.as_dict(), cancel=cancel)
        results.append(result)
    return StackRun(
        source_name=source_name,
        frames=data,
        layout=layout,
        params=params,
        fused=layout.assemble([r.fused for r in results]),
        depth=layout.assemble([r.depth for r in results]),
        confidence=layout.assemble([r.confidence for r in results]),
        device=results[0].device,
        z_step_um=z_step_um,
        input_view=dict(input_view or {}),
        alignments=[(r.transforms, r.metadata.get("alignment")) for r in results],
        mark_unfocused=mark_unfocused,
    )


def expected_steps(layout, params, image_shape) -> int:
    """How many progress events a run of :func:`iter_stack_layer` yields."""
    aligning = params.align != "none" and min(image_shape[:2]) >= MIN_ALIGN_SIDE
    return len(layout.planes()) * layout.n_frames * (2 if aligning else 1)


def edited_depth(depth, edits):
    """``depth`` (slices) with every painted pixel of ``edits`` set to its frame.

    ``edits`` holds :data:`KEEP_DEPTH` where the computed depth stays and
    ``k + 1`` where the user chose frame ``k``.
    """
    chosen = np.asarray(edits, dtype=np.float32) - 1
    return np.where(np.asarray(edits) != KEEP_DEPTH, chosen, depth).astype(np.float32)


def planes_with_edits(run, edits) -> list:
    """The planes of ``run`` in which ``edits`` has painted pixels."""
    layout = run.layout
    return [p for p in layout.planes() if np.any(edits[layout.output_index(p)] != KEEP_DEPTH)]


def iter_refuse(run, edits, *, cancel=None):
    """Re-fuse ``run`` along its depth map with the painted ``edits`` applied.

    Focus is not measured again. Only painted pixels change: everywhere else
    the result keeps the run's fused pixels, whichever fusion method made
    them. Starts from the run's own result each time, so erased edits revert.
    A generator: yields Progress per frame of each edited stack, returns the
    fused array (the layout of ``run.fused``).
    """
    if edits.shape != run.depth.shape:
        raise ValueError(
            f"depth edits are shaped {edits.shape} but the depth map is {run.depth.shape}; "
            "make a new edit layer for this result"
        )
    fused = run.fused.copy()
    be = get_backend(run.params.device)
    for plane in planes_with_edits(run, edits):
        at = run.layout.output_index(plane)
        depth = edited_depth(run.depth[at], edits[at])
        frames = run.aligned_frames(plane)
        refused = yield from run_refuse(frames, depth, run.params.scale_factor, be, cancel=cancel)
        painted = edits[at] != KEEP_DEPTH
        fused[at][painted] = refused[painted]
    return fused
