"""Several channels of one z-stack fused along one shared depth map.

Multichannel fluorescence (a nuclear stain and a membrane stain, say) images
one specimen: every channel is in focus at the same depth. Fusing each channel
on its own gives each its own depth map, and channels that should overlay no
longer do. Here the depth is found once, then every channel is fused along it
(:func:`~napari_focus_stack.api.fuse_from_depth`), so they stay registered.

Where the depth comes from (``depth_from``):

- ``"all"`` (the default): the focus of every channel combined. The engine
  measures focus on a guide stack, the sum of the channels each divided by
  its own noise level, so each channel counts by its signal-to-noise ratio:
  a bright, clean channel leads and a dim one still adds where it alone has
  structure, whatever the channels' units or brightness.
- a channel index ``k``: channel ``k`` alone (a stain known to show the
  surface best).

>>> import numpy as np
>>> from napari_focus_stack.synthetic import simulate_stack
>>> a = simulate_stack((48, 48), 5, seed=1).frames
>>> b = simulate_stack((48, 48), 5, seed=2).frames
>>> result = focus_stack_channels([a, b], align="none")
>>> result.fused.shape, result.depth.shape
((2, 48, 48), (48, 48))
"""

from functools import partial

import numpy as np

from .engine.backend import get_backends
from .engine.dtypes import full_scale
from .engine.noise import frame_statistics
from .engine.pipeline import aligned_like, drain, run_pipeline, run_refuse
from .engine.result import Progress, StackParams, check_max_memory
from .engine.steps import mapped
from .io import FrameSequence, StackReadError, open_stack

#: ``depth_from`` value: the focus of every channel combined.
ALL_CHANNELS = "all"
#: Smallest noise level (in units of a channel's value range) a channel is
#: divided by, so a noiseless (synthetic) channel cannot dominate infinitely.
MIN_NOISE = 1e-6


def check_depth_from(depth_from, n_channels):
    """``"all"`` or a channel index in ``range(n_channels)``; ValueError naming the choices otherwise.

    >>> check_depth_from("ALL", 2), check_depth_from("1", 2)
    ('all', 1)
    """
    if isinstance(depth_from, str) and depth_from.strip().lower() == ALL_CHANNELS:
        return ALL_CHANNELS
    if isinstance(depth_from, str) and depth_from.strip().isdigit():
        depth_from = int(depth_from)
    if isinstance(depth_from, bool) or not isinstance(depth_from, (int, np.integer)):
        raise ValueError(f"depth_from must be 'all' or a channel index from 0 to {n_channels - 1}, got {depth_from!r}")
    if not 0 <= depth_from < n_channels:
        raise ValueError(
            f"depth_from channel {depth_from} does not exist: there are {n_channels} channels (0 to {n_channels - 1})"
        )
    return int(depth_from)


def open_channels(channels):
    """Each channel opened as a gray stack (:func:`~napari_focus_stack.io.open_stack`), all alike."""
    channels = list(channels)
    if len(channels) < 1:
        raise StackReadError("no channels given")
    stacks = [open_stack(channel) for channel in channels]
    first = stacks[0]
    for c, stack in enumerate(stacks):
        if len(stack.shape) != 3:
            raise StackReadError(
                f"channel {c} ({stack.metadata['source']}) holds colour frames; each channel must be gray (Z, Y, X)"
            )
        if stack.shape != first.shape:
            raise StackReadError(
                f"channel {c} is shaped {stack.shape} (Z, Y, X) but channel 0 is {first.shape}; "
                "every channel needs the same frames"
            )
    return stacks


def channel_weights(stacks):
    """What each channel is multiplied by in the guide: one over its noise level.

    The noise is measured on each channel's middle frame (Immerkaer's
    estimate, as the engine's noise floor), in the channel's own units.
    """
    weights = []
    for stack in stacks:
        value_range = full_scale(stack.dtype)
        middle = stack[len(stack) // 2]
        sigma = frame_statistics(middle, value_range)[0]
        if not np.isfinite(sigma):
            sigma = 0.0
        if stack.dtype.kind == "f":
            # float data has no fixed range: floor the noise relative to its spread
            spread = float(np.nanstd(middle)) or 1.0
            weights.append(1.0 / max(sigma, MIN_NOISE * spread))
        else:
            weights.append(1.0 / (max(sigma, MIN_NOISE) * value_range))
    return weights


def _guide_frame(stacks, weights, k):
    guide = np.zeros(stacks[0].shape[1:], np.float32)
    for stack, weight in zip(stacks, weights):
        guide += stack[k].astype(np.float32) * np.float32(weight)
    return guide


def guide_stack(stacks, weights):
    """The lazy stack the shared depth is measured on: ``sum(w_c * channel_c)`` per frame, float32."""
    first = stacks[0]
    metadata = dict(first.metadata)
    metadata["source"] = f"{len(stacks)} channels combined"
    loaders = [partial(_guide_frame, stacks, weights, k) for k in range(len(first))]
    return FrameSequence(loaders, first.shape[1:], np.float32, metadata)


def iter_focus_stack_channels(
    channels, params=None, *, depth_from=ALL_CHANNELS, cancel=None, max_memory=None, **overrides
):
    """Generator form of :func:`focus_stack_channels`: yields :class:`Progress`, returns the result.

    Progress runs over the depth pass (``"stacking"``, and ``"aligning"``
    first when frames are aligned), then one ``"fusing channels"`` pass of
    ``Z`` frames per channel. The engine parameters come as in
    :func:`focus_stack_channels`.
    """
    params = StackParams.of(params, **overrides)
    max_memory = check_max_memory(max_memory)
    stacks = open_channels(channels)
    source = check_depth_from(depth_from, len(stacks))
    weights = channel_weights(stacks) if source == ALL_CHANNELS else None
    guide = guide_stack(stacks, weights) if source == ALL_CHANNELS else stacks[source]
    backends = get_backends(params.device)
    result = yield from run_pipeline(
        guide, params, backends, metadata=dict(stacks[0].metadata), cancel=cancel, max_memory=max_memory
    )
    be = backends[0]
    n, total = len(stacks[0]), len(stacks) * len(stacks[0])
    alignment = result.metadata.get("alignment")
    # the guide's per-frame gains fit every channel; its offsets are in guide units
    photometric = None if alignment is None else {**alignment, "offsets": None}
    fused = []
    for c, stack in enumerate(stacks):
        frames = aligned_like(stack, result.transforms, photometric)
        steps = run_refuse(frames, result.depth, params.scale_factor, be, cancel=cancel, max_memory=max_memory)
        image = yield from _offset_progress(steps, c * n, total)
        fused.append(image)
    result.fused = np.stack(fused)
    result.metadata["channels"] = {
        "count": len(stacks),
        "names": [(stack.metadata.get("hyperstack") or {}).get("channel_name") for stack in stacks],
        "depth_from": source,
        "weights": weights,
        "sources": [stack.metadata.get("source") for stack in stacks],
    }
    return result


def _offset_progress(steps, offset, total):
    return (yield from mapped(steps, lambda event: Progress("fusing channels", offset + event.done, total)))


def focus_stack_channels(
    channels, params=None, *, depth_from=ALL_CHANNELS, progress=None, mark_unfocused=False, **kwargs
):
    """Fuse every channel of a z-stack along one depth map.

    Parameters
    ----------
    channels : sequence
        One gray stack ``(Z, Y, X)`` per channel, each anything
        :func:`~napari_focus_stack.io.open_stack` reads (arrays, folders,
        files); all with the same shape.
    params : StackParams, optional
        The engine parameters as one object; keywords in ``kwargs`` override
        its values (as in :func:`~napari_focus_stack.api.focus_stack`).
    depth_from : "all" or int
        Where the shared depth comes from: every channel's focus combined
        (each weighted by its signal-to-noise ratio), or one channel.
    progress : callable, optional
        Called with a :class:`Progress` after every frame.
    mark_unfocused : bool
        Return NaN as the depth of pixels with no usable focus signal.
    **kwargs
        ``radius``, ``smoothing``, ``scale_factor``, ``method``, ``align``,
        ``device``, ``reference``, ``cancel``, ``max_memory``: as in
        :func:`~napari_focus_stack.api.focus_stack`. ``method`` applies to
        the depth pass (its depth regularisation); every channel is then
        fused along the depth as :func:`~napari_focus_stack.api.fuse_from_depth` does.

    Returns
    -------
    StackResult
        ``fused`` is ``(C, Y*s, X*s)`` in the channels' dtype, channel ``c``
        equal to ``fuse_from_depth(channels[c], result.depth, result=result)``
        (without the alignment's brightness offsets); one ``depth`` and one
        ``confidence``; ``metadata["channels"]`` says where the depth came
        from and each channel's weight.
    """
    result = drain(iter_focus_stack_channels(channels, params, depth_from=depth_from, **kwargs), progress)
    if mark_unfocused:
        result.mark_unfocused()
    return result


class ChannelView:
    """Channel ``channel`` of an array with a channel axis, as a lazy ``(Z, Y, X)`` array.

    Only the frames asked for are read (dask and zarr arrays stay lazy). The
    z axis is the first axis other than the channel axis.

    >>> data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # (C, Z, Y, X)
    >>> view = ChannelView(data, 0, 1)
    >>> view.shape, bool((view[2] == data[1, 2]).all())
    ((3, 4, 5), True)
    """

    def __init__(self, array, channel_axis, channel):
        self.array, self.channel = array, int(channel)
        self.channel_axis = normalise_channel_axis(channel_axis, array.ndim)
        self.z_axis = 1 if self.channel_axis == 0 else 0
        self.shape = tuple(n for axis, n in enumerate(array.shape) if axis != self.channel_axis)
        self.dtype = array.dtype
        self.ndim = len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, k):
        index = [slice(None)] * self.array.ndim
        index[self.channel_axis], index[self.z_axis] = self.channel, k
        return self.array[tuple(index)]


def normalise_channel_axis(channel_axis, ndim):
    """``channel_axis`` as a non-negative axis of a ``(Z, Y, X)`` stack with one more axis (``ndim`` = 4)."""
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, (int, np.integer)):
        raise ValueError(f"channel_axis must be an axis number, got {channel_axis!r}")
    if ndim != 4:
        raise ValueError(f"a stack with a channel axis has 4 dimensions (C, Z, Y, X in some order), got {ndim}")
    axis = int(channel_axis) + (ndim if channel_axis < 0 else 0)
    if not 0 <= axis < ndim:
        raise ValueError(f"channel_axis {channel_axis} is out of range for {ndim} dimensions")
    if axis == 2:
        raise ValueError(
            f"channel_axis {channel_axis} would split the image axes: the channel axis comes before "
            "them (C, Z, Y, X or Z, C, Y, X) or last (Z, Y, X, C)"
        )
    return axis


def split_channels(array, channel_axis):
    """One lazy :class:`ChannelView` per channel of ``array``."""
    axis = normalise_channel_axis(channel_axis, array.ndim)
    return [ChannelView(array, axis, c) for c in range(array.shape[axis])]


def output_channel_axis(channel_axis):
    """Where the channel axis sits in the results of a stack with ``channel_axis`` (z removed)."""
    return 0 if channel_axis in (0, 1) else 2
