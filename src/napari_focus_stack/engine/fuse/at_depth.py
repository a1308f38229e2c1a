"""Pixels taken from the frames next to a given sub-slice depth: the weights of the two
slices around each pixel's depth, and :func:`fuse_frames_at_depth`, which re-fuses a
stack along a (hand-edited) depth map. :class:`~.depthmap.DepthMapFusion` uses the same
weights, so both give identical pixels for the same depth map.
"""

#: Depth-map hand-over: up to this distance from a slice only that slice is
#: used (sharpest pixels, best PSNR); beyond it the neighbour fades in so that
#: both slices weigh 0.5 where the depth is half-way between them.
HANDOVER_START = 0.25


def neighbour_weight(t, be):
    """Weight in [0, 0.5] of the farther of two slices at distance ``t`` in [0, 0.5]."""
    xp = be.xp
    s = xp.clip((t - HANDOVER_START) / (0.5 - HANDOVER_START), 0, 1)
    return (0.5 * s * s * (3 - 2 * s)).astype(xp.float32)


def slice_pair_weights(depth, n_frames, be):
    """Split each pixel's depth between the slices below and above it.

    Returns ``lower`` (int16 slice index), ``w_lower`` and ``w_upper`` (float32,
    summing to 1) for frames ``lower`` and ``lower + 1``. Both fusion paths
    (streaming and :func:`fuse_from_depth`) use this one function, so they
    give identical pixels for the same depth map.
    """
    xp = be.xp
    depth = xp.clip(depth, 0, n_frames - 1)
    lower = xp.floor(depth)
    t = (depth - lower).astype(xp.float32)
    near_lower = t <= 0.5
    w_upper = xp.where(near_lower, neighbour_weight(t, be), 1 - neighbour_weight(1 - t, be))
    w_upper = w_upper.astype(xp.float32)
    return lower.astype(xp.int16), 1 - w_upper, w_upper


def weighted_pair(w_lower, lower_pixels, w_upper, upper_pixels, be):
    """``w_lower * lower + w_upper * upper`` in float32, channels broadcast."""
    if lower_pixels.ndim == 3:
        w_lower, w_upper = w_lower[..., None], w_upper[..., None]
    xp = be.xp
    a = w_lower * lower_pixels.astype(xp.float32, copy=False)
    b = w_upper * upper_pixels.astype(xp.float32, copy=False)
    return a + b


def fuse_frames_at_depth(frames, n_frames, depth, be):
    """Fuse an iterable of ``n_frames`` prepared frames along a given depth map.

    Generator: yields after each frame (for progress and cancellation) and
    returns the fused float32 image. Used to re-fuse after the depth map was
    edited by hand, without measuring focus again.
    """
    xp = be.xp
    lower, w_lower, w_upper = slice_pair_weights(depth, n_frames, be)
    lower_acc = upper_acc = None
    for k, frame in enumerate(frames):
        if lower_acc is None:
            lower_acc = xp.zeros(frame.shape, dtype=frame.dtype)
            upper_acc = xp.zeros(frame.shape, dtype=frame.dtype)
        be.copy_where(lower_acc, frame, lower == k)
        be.copy_where(upper_acc, frame, lower == k - 1)
        yield k
    return weighted_pair(w_lower, lower_acc, w_upper, upper_acc, be)
