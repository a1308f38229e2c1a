"""Warping and coverage geometry: where output pixels come from, resampling, and coverage.

Transforms map output (reference) pixel coordinates ``(x, y, 1)`` to a
frame's (x = column, y = row, pixel centres at integers), as in
:mod:`~napari_focus_stack.engine.align`. Everything here is plain NumPy and
OpenCV on the host, except :func:`source_coordinates` and
:func:`outside_frame`, which also take CuPy as ``xp``: the backends' device
warps (:meth:`~.backend.NdimageBackend.warp_cubic`) sample at exactly these
positions, so tiles, bands and devices resample alike.
"""

import cv2
import numpy as np

#: Output pixels resampled at a time on the host: the coordinate maps of a
#: band take 8 bytes per pixel (32 MiB); larger calls keep OpenCV's threads
#: busier than narrow bands (benchmarks/RESULTS.md, host warping).
HOST_WARP_BAND_PIXELS = 2**22


def rescale_transforms(transforms, from_shape, to_shape):
    """Re-express pixel transforms for images resized from one shape to another.

    Resizing maps pixel centres as ``x_to = (x_from + 0.5) * X_to / X_from - 0.5``
    (OpenCV's and libjpeg's convention), and likewise for y.

    Parameters
    ----------
    transforms : ndarray
        ``(3, 3)`` or ``(Z, 3, 3)`` matrices between ``from_shape`` images.
    from_shape, to_shape : tuple of int
        ``(Y, X, ...)`` sizes.

    Returns
    -------
    ndarray of float64
        The same transforms between ``to_shape`` images.

    Examples
    --------
    >>> shift = np.array([[1.0, 0, 2], [0, 1, -1], [0, 0, 1]])
    >>> rescale_transforms(shift, (100, 200), (400, 800))[:2, 2].tolist()
    [8.0, -4.0]
    """
    sy = to_shape[0] / from_shape[0]
    sx = to_shape[1] / from_shape[1]
    resize = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return resize @ np.asarray(transforms, dtype=np.float64) @ np.linalg.inv(resize)


def source_coordinates(transform, rows, cols, xp=np):
    """Where output pixels ``rows`` x ``cols`` come from in the frame: float32 ``(x, y)`` maps.

    Computed in float32 from the output pixel's own coordinates, in a fixed
    order of operations, so a pixel gets the same source position whichever
    tile or band it is computed in, with NumPy or CuPy: tiled resampling is
    exactly whole-image resampling, and the GPU's equals the CPU's.

    Examples
    --------
    >>> shift = np.array([[1.0, 0, 0.5], [0, 1, -2], [0, 0, 1]])
    >>> x, y = source_coordinates(shift, slice(0, 2), slice(3, 5))
    >>> x.tolist(), y.tolist()
    ([[3.5, 4.5], [3.5, 4.5]], [[-2.0, -2.0], [-1.0, -1.0]])
    """
    m = np.asarray(transform, dtype=np.float64)[:2].astype(np.float32)
    x = xp.arange(cols.start, cols.stop, dtype=xp.float32)
    y = xp.arange(rows.start, rows.stop, dtype=xp.float32)[:, None]
    sx = x * m[0, 0] + (y * m[0, 1] + m[0, 2])
    sy = x * m[1, 0] + (y * m[1, 1] + m[1, 2])
    return sx, sy


def full_region(shape):
    """``(rows, cols)`` slices of a whole image of ``shape``."""
    return slice(0, shape[0]), slice(0, shape[1])


def warp_frame(frame, transform, out_shape, gain=None, offset=None, *, interpolation="linear", region=None):
    """Resample a frame into the reference geometry, correcting its exposure.

    Parameters
    ----------
    frame : ndarray
        ``(Y, X)`` or ``(Y, X, C)``, uint8, uint16 or float32.
    transform : ndarray
        ``(3, 3)``, maps output (reference) pixel coordinates to ``frame``'s.
    out_shape : tuple of int
        ``(Y', X', ...)`` of the output.
    gain, offset : float or array_like, optional
        Exposure of the frame relative to the reference, per channel
        (:func:`estimate_gains`): the output is ``(frame - offset) / gain``.
    interpolation : {"linear", "cubic"}, optional
        Bicubic (Keys, a = -0.75) keeps more fine detail, at about 2.5 times
        the cost.
    region : tuple of slice, optional
        ``(rows, cols)`` of the output to make (a tile); the pixels are
        exactly those of the whole output (:func:`source_coordinates`).

    Returns
    -------
    ndarray
        ``(Y', X'[, C])`` (or the region's shape) in ``frame``'s dtype
        (rounded and clipped). Pixels that map outside the frame repeat its
        border (see :func:`coverage_mask`). When nothing changes, ``frame``
        itself (or a view of it).

    Examples
    --------
    >>> frame = np.arange(12, dtype=np.uint8).reshape(3, 4)
    >>> shift = np.array([[1.0, 0, 1], [0, 1, 0], [0, 0, 1]])  # frame = reference moved left
    >>> warp_frame(frame, shift, (3, 4))[0].tolist()
    [1, 2, 3, 3]
    """
    rows, cols = region if region is not None else full_region(out_shape)
    transform = np.asarray(transform, dtype=np.float64)
    if np.array_equal(transform, np.eye(3)) and frame.shape[:2] == tuple(out_shape[:2]):
        warped = frame if region is None else frame[rows, cols]
    else:
        kernel = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}[interpolation]
        warped = np.empty((rows.stop - rows.start, cols.stop - cols.start) + frame.shape[2:], frame.dtype)
        step = max(1, HOST_WARP_BAND_PIXELS // max(1, cols.stop - cols.start))
        for start in range(rows.start, rows.stop, step):
            band = slice(start, min(rows.stop, start + step))
            sx, sy = source_coordinates(transform, band, cols)
            out = warped[band.start - rows.start : band.stop - rows.start]
            result = cv2.remap(frame, sx, sy, kernel, dst=out, borderMode=cv2.BORDER_REPLICATE)
            if result is not out and result.size:  # OpenCV made its own (a single channel's 2-D view)
                out[...] = result.reshape(out.shape)
    if gain is None and offset is None:
        return warped
    return _correct_exposure(warped, gain, offset)


def _correct_exposure(image, gain, offset):
    """``(image - offset) / gain`` per channel, rounded and clipped to ``image``'s dtype."""
    channels = 1 if image.ndim == 2 else image.shape[2]
    gain = np.broadcast_to(np.asarray(1.0 if gain is None else gain, float), (channels,))
    offset = np.broadcast_to(np.asarray(0.0 if offset is None else offset, float), (channels,))
    # One affine colour transform: scales, shifts and saturates in one pass.
    matrix = np.zeros((channels, channels + 1))
    matrix[np.arange(channels), np.arange(channels)] = 1 / gain
    matrix[:, channels] = -offset / gain
    return cv2.transform(np.ascontiguousarray(image), matrix).reshape(image.shape)


def region_corners(transform, rows, cols):
    """Where the four corner pixels of ``rows`` x ``cols`` map in the frame (float64 ``x``, ``y``)."""
    x = np.array([cols.start, cols.stop - 1, cols.start, cols.stop - 1], float)
    y = np.array([rows.start, rows.start, rows.stop - 1, rows.stop - 1], float)
    return (np.asarray(transform, float) @ np.stack([x, y, np.ones(4)]))[:2]


def _inside_outline(transform, frame_shape, rows, cols):
    """True when every output pixel of ``rows`` x ``cols`` maps inside the frame's pixel area."""
    height, width = frame_shape[:2]
    sx, sy = region_corners(transform, rows, cols)
    # the outline maps to a convex quadrilateral; a margin of a few float32
    # steps covers the rounding of source_coordinates
    margin = 8 * float(np.spacing(np.float32(max(np.abs(sx).max(), np.abs(sy).max(), 1.0))))
    inside_x = sx.min() >= -0.5 + margin and sx.max() < width - 0.5 - margin
    return inside_x and sy.min() >= -0.5 + margin and sy.max() < height - 0.5 - margin


def outside_or_none(transform, frame_shape, rows, cols, xp=np):
    """:func:`outside_frame`, or None when the region's outline shows every pixel is inside."""
    if _inside_outline(transform, frame_shape, rows, cols):
        return None
    return outside_frame(transform, frame_shape, rows, cols, xp)


def outside_frame(transform, frame_shape, rows, cols, xp=np):
    """Output pixels ``rows`` x ``cols`` whose source position is outside the frame's pixel area (bool).

    The source position is :func:`source_coordinates`'; on the host the mask
    is found row by row as an interval (:func:`_covered_columns`), which
    gives the same pixels several times faster.
    """
    height, width = frame_shape[:2]
    if xp is np:
        first, stop = _covered_columns(transform, frame_shape, rows, cols)
        outside = np.ones((rows.stop - rows.start, cols.stop - cols.start), dtype=bool)
        for row, a, b in zip(outside, (first - cols.start).tolist(), (stop - cols.start).tolist()):
            row[a:b] = False
        return outside
    sx, sy = source_coordinates(transform, rows, cols, xp)
    outside = (sx < -0.5) | (sx >= width - 0.5)
    outside |= (sy < -0.5) | (sy >= height - 0.5)
    return outside


def _covered_columns(transform, frame_shape, rows, cols):
    """Per output row, the columns ``[first, stop)`` whose source position lies in the frame.

    Along a row, :func:`source_coordinates` is ``x * a + c`` in float32, which
    is monotonic in ``x`` (rounding is): each of the four bounds holds on a
    prefix or a suffix of the row, found by bisection on the same float32
    expressions, so the interval is exactly where the per-pixel test holds.
    """
    height, width = frame_shape[:2]
    m = np.asarray(transform, dtype=np.float64)[:2].astype(np.float32)
    y = np.arange(rows.start, rows.stop, dtype=np.float32)
    first = np.full(y.shape, cols.start, dtype=np.int64)
    stop = np.full(y.shape, cols.stop, dtype=np.int64)
    axes = ((m[0, 0], y * m[0, 1] + m[0, 2], -0.5, width - 0.5), (m[1, 0], y * m[1, 1] + m[1, 2], -0.5, height - 0.5))
    for a, c, low, high in axes:

        def value(x, a=a, c=c):
            return x.astype(np.float32) * a + c

        # where value >= low, and where value >= high (which must not hold)
        for bound, keep_above in ((np.float32(low), True), (np.float32(high), False)):
            if a >= 0:  # non-decreasing: value >= bound from ``edge`` on
                edge = _first_true(lambda x, bound=bound: value(x) >= bound, cols, len(y))
                if keep_above:
                    first = np.maximum(first, edge)
                else:
                    stop = np.minimum(stop, edge)
            else:  # non-increasing: value >= bound up to ``edge``
                edge = _first_true(lambda x, bound=bound: value(x) < bound, cols, len(y))
                if keep_above:
                    stop = np.minimum(stop, edge)
                else:
                    first = np.maximum(first, edge)
    return first, np.maximum(stop, first)


def _first_true(predicate, cols, count):
    """Per row, the first column of ``cols`` where the monotonic ``predicate`` holds (``cols.stop`` if none)."""
    lo = np.full(count, cols.start, dtype=np.int64)
    hi = np.full(count, cols.stop, dtype=np.int64)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = (lo + hi) // 2
        holds = predicate(mid)
        hi = np.where(open_ & holds, mid, hi)
        lo = np.where(open_ & ~holds, mid + 1, lo)


def coverage_mask(transform, frame_shape, out_shape):
    """Where a frame warped by ``transform`` has real pixels (not repeated border).

    Parameters
    ----------
    transform : ndarray
        ``(3, 3)``, maps output pixel coordinates to the frame's.
    frame_shape, out_shape : tuple of int
        ``(Y, X, ...)`` of the frame and of the output.

    Returns
    -------
    ndarray of bool
        ``(Y', X')``: True where the output pixel's centre maps inside the
        frame's pixel area (at the positions :func:`source_coordinates` gives).

    Examples
    --------
    >>> shift = np.array([[1.0, 0, 1], [0, 1, 0], [0, 0, 1]])
    >>> coverage_mask(shift, (3, 4), (3, 4))[0].tolist()
    [True, True, True, False]
    """
    outside = outside_or_none(transform, frame_shape, *full_region(out_shape))
    return np.ones(out_shape[:2], dtype=bool) if outside is None else ~outside
