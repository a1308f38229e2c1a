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
from typing import Any

import numpy as np

from ..api import iter_focus_stack
from ..channels import check_depth_from, iter_focus_stack_channels
from ..engine.backend import get_backend
from ..engine.depth import MIN_CONFIDENCE, unfocused_mask
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
    channel_axis : int, optional
        A channel axis (fluorescence channels) whose channels are fused along
        one shared depth (:mod:`napari_focus_stack.channels`); None: every
        outer axis is stacked on its own.
    depth_from : "all" or int
        With ``channel_axis``: where the shared depth comes from.

    Results keep every axis of the input in its order: z (and, for the depth
    and confidence maps, a shared channel axis) becomes a length-1 axis that
    spans the whole stack, so napari, which lines layers up by their last
    axes, shows each result over its input. Such axes are dropped only when
    nothing but other dropped axes comes before them.

    >>> layout = StackLayout((2, 3, 5, 8, 8), z_axis=2, rgb=False, channel_axis=1)
    >>> layout.planes(), layout.output_shape((8, 8), per_channel=True), layout.output_shape((8, 8))
    ([(0,), (1,)], (2, 3, 1, 8, 8), (2, 1, 1, 8, 8))
    """

    shape: tuple
    z_axis: int
    rgb: bool
    channel_axis: int | None = None
    depth_from: Any = "all"

    def __post_init__(self):
        if not 0 <= self.z_axis < self.ndim - 2:
            raise ValueError(
                f"z axis {self.z_axis} is not one of the {self.ndim - 2} non-spatial axes of data shaped {self.shape}"
            )
        if self.channel_axis is not None:
            if self.rgb:
                raise ValueError("an RGB layer's channels are its colours: fuse it without a channel axis")
            if self.channel_axis == self.z_axis or not 0 <= self.channel_axis < self.ndim - 2:
                raise ValueError(
                    f"channel axis {self.channel_axis} must be one of the non-spatial axes of data shaped "
                    f"{self.shape} other than the z axis ({self.z_axis})"
                )
            object.__setattr__(self, "depth_from", check_depth_from(self.depth_from, self.n_channels))

    @property
    def ndim(self) -> int:
        """Dimensions as napari counts them (without the colour axis)."""
        return len(self.shape) - int(self.rgb)

    @property
    def n_frames(self) -> int:
        return self.shape[self.z_axis]

    @property
    def n_channels(self) -> int:
        """Channels fused along one depth (1 without a channel axis)."""
        return 1 if self.channel_axis is None else self.shape[self.channel_axis]

    @property
    def outer_axes(self) -> tuple:
        """Axes that are neither z nor spatial (time, channel...)."""
        return tuple(a for a in range(self.ndim - 2) if a != self.z_axis)

    @property
    def stack_axes(self) -> tuple:
        """Outer axes with one depth map per index: all but z and a shared channel axis."""
        return tuple(a for a in self.outer_axes if a != self.channel_axis)

    @property
    def keeps_z(self) -> bool:
        """Whether results keep a length-1 z axis (z is not the first axis)."""
        return self.axis_roles()[self.z_axis] == "collapsed"

    def axis_roles(self, per_channel=False) -> dict:
        """Each non-spatial axis in a result: ``"kept"``, ``"collapsed"`` (length 1) or ``"dropped"``.

        ``per_channel``: the result has one image per channel (the fused
        image); otherwise a shared channel axis collapses (depth, confidence).
        """
        roles, leading = {}, True
        for axis in range(self.ndim - 2):
            collapsed = axis == self.z_axis or (axis == self.channel_axis and not per_channel)
            if not collapsed:
                leading = False
            roles[axis] = "kept" if not collapsed else ("dropped" if leading else "collapsed")
        return roles

    def planes(self) -> list:
        """Index (over :attr:`stack_axes`) of every depth map in the data; ``[()]`` for one."""
        return list(np.ndindex(*(self.shape[a] for a in self.stack_axes)))

    def stack(self, data, plane, channel=None):
        """The ``(Z, Y, X[, C])`` stack at ``plane`` (and ``channel``): a view, lazy for dask arrays.

        Indexing every outer axis with an integer leaves z as the first axis.
        """
        index = [slice(None)] * len(self.shape)
        for axis, i in zip(self.stack_axes, plane):
            index[axis] = i
        if self.channel_axis is not None:
            if channel is None:
                raise ValueError("a layout with a channel axis needs the channel of the stack")
            index[self.channel_axis] = channel
        return data[tuple(index)]

    def channel_stacks(self, data, plane) -> list:
        """The stacks of every channel at ``plane`` (one stack without a channel axis)."""
        if self.channel_axis is None:
            return [self.stack(data, plane)]
        return [self.stack(data, plane, c) for c in range(self.n_channels)]

    def output_index(self, plane, channel=None) -> tuple:
        """Index of ``plane``'s image (of ``channel``'s, in a per-channel result) in :meth:`output_shape`."""
        per_channel = channel is not None
        at = dict(zip(self.stack_axes, plane))
        if per_channel:
            at[self.channel_axis] = channel
        roles = self.axis_roles(per_channel)
        return tuple(at.get(a, 0) for a in range(self.ndim - 2) if roles[a] != "dropped")

    def output_shape(self, image_shape, per_channel=False) -> tuple:
        """Shape of the assembled results whose per-stack images are ``image_shape``."""
        roles = self.axis_roles(per_channel)
        outer = tuple(self.shape[a] if roles[a] == "kept" else 1 for a in range(self.ndim - 2) if roles[a] != "dropped")
        return outer + tuple(image_shape)

    def assemble(self, images, per_channel=False) -> np.ndarray:
        """One array, in the layer's axis order, from the images of :meth:`planes`.

        ``per_channel``: each image holds one image per channel, ``(C, Y, X)``.
        """
        per_channel = per_channel and self.channel_axis is not None
        first = np.asarray(images[0])
        image_shape = first.shape[1:] if per_channel else first.shape
        out = np.empty(self.output_shape(image_shape, per_channel), dtype=first.dtype)
        for plane, image in zip(self.planes(), images):
            if per_channel:
                for c in range(self.n_channels):
                    out[self.output_index(plane, c)] = image[c]
            else:
                out[self.output_index(plane)] = image
        return out


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
        (transparent, in the depth layer and as holes in the 3D surface);
        ``depth`` itself keeps them, for retouching.
    min_confidence : float
        Below this confidence around a pixel its depth counts as unfocused
        (:meth:`StackResult.valid_mask`).
    """

    source_name: str
    frames: Any
    layout: StackLayout
    params: StackParams
    fused: np.ndarray
    depth: np.ndarray
    confidence: np.ndarray
    device: str = "cpu"
    z_step_um: float | None = None
    input_view: dict = field(default_factory=dict)
    alignments: list = field(default_factory=list)
    mark_unfocused: bool = False
    min_confidence: float = MIN_CONFIDENCE

    def unfocused(self) -> np.ndarray:
        """Where the depth is a guess (no usable focus signal), in the layout of ``depth``."""
        return unfocused_mask(self.confidence, least=float(self.min_confidence) ** 2)

    def alignment_problems(self) -> list:
        """One line per frame that could not be aligned, for the user."""
        return [
            message
            for _, alignment in self.alignments
            if alignment
            for message in alignment["messages"]
            if alignment["failed"] and "frames used as they are" not in message
        ]

    def aligned_frames(self, plane, channel=None):
        """The frames of ``plane`` (and ``channel``) as they were fused: aligned when they were."""
        frames = open_stack(self.layout.stack(self.frames, plane, channel))
        index = self.layout.planes().index(plane)
        if not self.alignments:
            return frames
        transforms, alignment = self.alignments[index]
        if channel is not None and alignment is not None:
            alignment = {**alignment, "offsets": None}  # the guide's offsets are in its own units
        return aligned_like(frames, transforms, alignment)

    def provenance(self) -> dict:
        """Plain facts about the run (JSON-friendly), for layer metadata."""
        return {
            "software": "napari-focus-stack",
            "source_layer": self.source_name,
            **self.params.as_dict(),
            "device": self.device,
            "z_axis": self.layout.z_axis,
            "n_frames": self.layout.n_frames,
            **(
                {}
                if self.layout.channel_axis is None
                else {"channel_axis": self.layout.channel_axis, "depth_from": self.layout.depth_from}
            ),
            "z_step_um": self.z_step_um,
            "mark_unfocused": self.mark_unfocused,
            "min_confidence": self.min_confidence,
        }


def iter_stack_layer(
    data,
    layout,
    params,
    *,
    source_name="",
    z_step_um=None,
    input_view=None,
    cancel=None,
    mark_unfocused=False,
    min_confidence=MIN_CONFIDENCE,
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
        if layout.channel_axis is None:
            result = yield from iter_focus_stack(layout.stack(data, plane), params, cancel=cancel)
        else:
            stacks = layout.channel_stacks(data, plane)
            steps = iter_focus_stack_channels(stacks, params, depth_from=layout.depth_from, cancel=cancel)
            result = yield from steps
        results.append(result)
    return StackRun(
        source_name=source_name,
        frames=data,
        layout=layout,
        params=params,
        fused=layout.assemble([r.fused for r in results], per_channel=True),
        depth=layout.assemble([r.depth for r in results]),
        confidence=layout.assemble([r.confidence for r in results]),
        device=results[0].device,
        z_step_um=z_step_um,
        input_view=dict(input_view or {}),
        alignments=[(r.transforms, r.metadata.get("alignment")) for r in results],
        mark_unfocused=mark_unfocused,
        min_confidence=min_confidence,
    )


def expected_steps(layout, params, image_shape) -> int:
    """How many progress events a run of :func:`iter_stack_layer` yields."""
    aligning = params.align != "none" and min(image_shape[:2]) >= MIN_ALIGN_SIDE
    per_plane = layout.n_frames * (2 if aligning else 1)
    if layout.channel_axis is not None:
        per_plane += layout.n_channels * layout.n_frames  # each channel fused along the depth
    return len(layout.planes()) * per_plane


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
    layout = run.layout
    channels = [None] if layout.channel_axis is None else range(layout.n_channels)
    for plane in planes_with_edits(run, edits):
        at = layout.output_index(plane)
        depth = edited_depth(run.depth[at], edits[at])
        painted = edits[at] != KEEP_DEPTH
        for channel in channels:
            frames = run.aligned_frames(plane, channel)
            refused = yield from run_refuse(frames, depth, run.params.scale_factor, be, cancel=cancel)
            target = at if channel is None else layout.output_index(plane, channel)
            fused[target][painted] = refused[painted]
    return fused
