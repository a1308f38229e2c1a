"""Python API: :func:`focus_stack`, :func:`iter_focus_stack`, :func:`fuse_from_depth`
and the drop-in :class:`FocusStacker` class of the original tool."""

import warnings

from .engine.backend import get_backend, get_backends
from .engine.pipeline import aligned_like, drain, run_pipeline, run_refuse
from .engine.result import StackParams, check_max_memory
from .io import non_finite_warning, open_stack, save_image, split_into_stacks


def iter_focus_stack(source, params=None, *, cancel=None, max_memory=None, maps=True, **overrides):
    """Generator form of :func:`focus_stack`: yields :class:`Progress`, returns the result.

    For callers that drive the work themselves (a napari worker thread, a
    progress bar). Parameters are checked before the first frame is read.
    NaN or infinite pixels met in float frames are not warned about here:
    the result's ``metadata["non_finite"]`` counts them per frame, and
    :func:`napari_focus_stack.io.non_finite_warning` says it in a sentence.
    The engine parameters come as in :func:`focus_stack`: a :class:`StackParams`
    (``params``) and keyword ``overrides`` such as ``radius=4``.
    ``maps=False`` is for callers that need the fused image only: the
    result's ``depth`` and ``confidence`` are None, and the weighted and
    pyramid methods, whose fused image does not depend on them, skip making
    them (the same fused image, about a quarter less work).
    """
    params = StackParams.of(params, **overrides)
    max_memory = check_max_memory(max_memory)
    frames = open_stack(source)
    backends = get_backends(params.device)
    return run_pipeline(
        frames, params, backends, metadata=frames.metadata, cancel=cancel, max_memory=max_memory, maps=maps
    )


class MissingDataWarning(UserWarning):
    """Frames held NaN or infinite pixels; they were treated as missing data."""


def focus_stack(
    source,
    params=None,
    *,
    progress=None,
    cancel=None,
    max_memory=None,
    mark_unfocused=False,
    channel_axis=None,
    depth_from="all",
    **overrides,
):
    """Fuse a focal stack into one all-in-focus image, with depth and confidence maps.

    Parameters
    ----------
    source : array, folder, list of paths, glob pattern or multi-page TIFF
        An array ``(Z, Y, X[, C])`` or anything :func:`open_stack` reads.
    params : StackParams, optional
        The engine parameters below as one object (default: their defaults);
        keywords given besides it override its values. Every function that
        takes the engine parameters (:func:`iter_focus_stack`,
        :func:`~napari_focus_stack.channels.focus_stack_channels`,
        :class:`FocusStacker`, batch) takes them this way.
    radius : int, 1-20
        Half-size in pixels of the window over which sharpness is measured.
        Larger is steadier on noisy or weakly textured images, smaller keeps
        depth edges tighter.
    smoothing : int, 1-10
        Sigma in pixels of the smoothing of the sharpness maps, which makes
        neighbouring pixels agree on their best slice.
    scale_factor : int, 1-4
        Process at this many times the input resolution; outputs are that
        much larger and cover the same field of view.
    method : {"weighted", "depthmap", "pyramid"}
        ``"weighted"`` averages the frames weighted by a steep power of their
        sharpness (the sharpest dominates; alike frames are averaged, which
        removes noise); ``"depthmap"`` takes each pixel from the slices at its
        depth with a soft hand-over (crispest on steep, finely detailed
        surfaces, and what retouching follows); ``"pyramid"`` selects detail
        per scale in a Laplacian pyramid.
    align : {"similarity", "affine", "translation", "none"}
        How frames are registered to the reference frame before fusing:
        shift + rotation + scale (focus breathing), a full affine map, shift
        only, or not at all. Motion below 1 px is left alone.
    reference : int, optional
        The frame the others are aligned to (default: the middle one); the
        outputs are in its geometry.
    device : {"auto", "cpu", "gpu", "gpu:N", "gpu:all"}
        Where to compute. ``"auto"`` uses a GPU when CuPy sees one;
        ``"gpu:all"`` spreads tiles over every GPU.
    progress : callable, optional
        Called with a :class:`Progress` after every frame.
    cancel : threading.Event, optional
        When set, the run stops at the next frame with :class:`StackCancelled`.
    max_memory : int or str, optional
        Working-memory budget in bytes, or a size such as ``"2GB"`` (default:
        half the free RAM, or 80 % of the free GPU memory, of which a GPU's
        tiles are planned to 80 % as CuPy's pool keeps freed blocks). Larger
        images are processed in overlapping tiles, with the same result.
    mark_unfocused : bool
        Return NaN as the depth of pixels with no usable focus signal in or
        around them (flat, textureless or dark areas), instead of a guess
        (:meth:`StackResult.mark_unfocused`). The fused image is the same.
    channel_axis : int, optional
        For an array with a channel axis besides z (fluorescence channels:
        ``(C, Z, Y, X)``, ``(Z, C, Y, X)`` or ``(Z, Y, X, C)``): every
        channel is fused along one shared depth map
        (:func:`~napari_focus_stack.channels.focus_stack_channels`), and
        ``fused`` keeps the channel axis where it was (z removed). Without it,
        a last axis of 3 is colour.
    depth_from : "all" or int
        With ``channel_axis``: the shared depth comes from every channel's
        focus combined (``"all"``) or from channel ``k`` alone.

    Returns
    -------
    StackResult
        ``fused`` (input dtype), ``depth`` (float32, slices, 0 = first frame),
        ``confidence`` (float32 in [0, 1]) and the parameters used.

    Warns
    -----
    MissingDataWarning
        Float frames held NaN or infinite pixels: they were treated as
        missing (left out of the focus measure and filled from the other
        frames), in one warning that names the frames.

    Examples
    --------
    >>> from napari_focus_stack import focus_stack, simulate_stack
    >>> sim = simulate_stack(shape=(64, 64), n_slices=6)
    >>> result = focus_stack(sim.frames, radius=4)
    >>> result.fused.dtype == sim.frames.dtype
    True
    """
    if progress is not None and not callable(progress):
        raise TypeError(f"progress must be a callable or None, got {type(progress).__name__}")
    if channel_axis is not None:
        return _focus_stack_channel_axis(
            source,
            channel_axis,
            depth_from,
            params,
            progress=progress,
            mark_unfocused=mark_unfocused,
            cancel=cancel,
            max_memory=max_memory,
            **overrides,
        )
    steps = iter_focus_stack(source, params, cancel=cancel, max_memory=max_memory, **overrides)
    result = drain(steps, progress)
    if mark_unfocused:
        result.mark_unfocused()
    message = non_finite_warning(result.metadata)
    if message is not None:
        warnings.warn(message, MissingDataWarning, stacklevel=2)
    return result


def _focus_stack_channel_axis(source, channel_axis, depth_from, params, **kwargs):
    import numpy as np

    from .channels import focus_stack_channels, normalise_channel_axis, output_channel_axis, split_channels

    if not (hasattr(source, "shape") and hasattr(source, "dtype")):
        raise TypeError(
            "channel_axis needs an array (numpy, dask or zarr); for files, open each channel and "
            "call napari_focus_stack.channels.focus_stack_channels"
        )
    axis = normalise_channel_axis(channel_axis, len(source.shape))
    result = focus_stack_channels(split_channels(source, axis), params, depth_from=depth_from, **kwargs)
    result.fused = np.moveaxis(result.fused, 0, output_channel_axis(axis))
    result.metadata["channels"]["axis"] = axis
    return result


def fuse_from_depth(
    source, depth, *, result=None, scale_factor=None, device="auto", max_memory=None, progress=None, cancel=None
):
    """Fuse the frames along a given (for example hand-edited) depth map.

    No focus measure is computed again. ``depth`` is in slice units and has the
    shape of the fused image (the input's size times ``scale_factor``).
    ``result``, the :class:`StackResult` the depth map came from, gives the
    alignment and scale factor to reuse. Where the depth map is unchanged,
    the pixels equal :func:`focus_stack`'s ``"depthmap"`` fusion exactly.
    ``max_memory`` bounds the working memory as in :func:`focus_stack`.
    """
    if scale_factor is None:
        scale_factor = result.params.scale_factor if result is not None else 1
    params = StackParams(scale_factor=scale_factor, device=device)
    max_memory = check_max_memory(max_memory)
    frames = open_stack(source)
    if result is not None:
        frames = aligned_like(frames, result.transforms, result.metadata.get("alignment"))
    expected = tuple(s * params.scale_factor for s in frames.shape[1:3])
    if tuple(getattr(depth, "shape", ())) != expected:
        raise ValueError(
            f"depth map must have shape {expected} (the stack's image size times "
            f"scale_factor {params.scale_factor}), got {getattr(depth, 'shape', None)}"
        )
    be = get_backend(params.device)
    return drain(run_refuse(frames, depth, params.scale_factor, be, cancel=cancel, max_memory=max_memory), progress)


class FocusStacker:
    """Drop-in replacement for the original tool's class, with its defaults.

    ``radius``, ``smoothing`` and ``scale_factor`` may be given by position,
    as in the original; the other engine parameters (``method``, ``align``,
    ``device``, ``reference``) by keyword, as in :func:`focus_stack`.

    >>> stacker = FocusStacker(radius=8, smoothing=4, scale_factor=2)  # doctest: +SKIP
    >>> fused = stacker.process_stack(["z1.jpg", "z2.jpg", "z3.jpg"])  # doctest: +SKIP
    >>> stacker.save_image(fused, "fused.tif")  # doctest: +SKIP
    """

    def __init__(self, radius=8, smoothing=4, scale_factor=2, **overrides):
        self.params = StackParams.of(radius=radius, smoothing=smoothing, scale_factor=scale_factor, **overrides)
        self.last_result = None

    @property
    def radius(self):
        return self.params.radius

    @property
    def smoothing(self):
        return self.params.smoothing

    @property
    def scale_factor(self):
        return self.params.scale_factor

    def process_stack(self, image_paths):
        """Fuse the frames at ``image_paths`` (or an array); returns the fused image.

        The full :class:`StackResult` (depth, confidence) is kept in
        ``last_result``.
        """
        self.last_result = focus_stack(image_paths, self.params)
        return self.last_result.fused

    def save_image(self, image, output_path):
        """Save ``image``; format from the extension, TIFF keeps 16-bit and records the parameters."""
        metadata = self.last_result.provenance() if self.last_result is not None else self.params.as_dict()
        return save_image(image, output_path, metadata=metadata)

    @staticmethod
    def split_into_stacks(image_paths, stack_size):
        """Cut naturally sorted paths into consecutive stacks of ``stack_size`` frames."""
        return split_into_stacks(image_paths, stack_size)
