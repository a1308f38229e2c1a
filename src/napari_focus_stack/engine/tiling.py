"""Splitting an image into overlapping tiles that fit a memory budget.

Every stage has a bounded reach: a pixel's focus score depends on pixels at
most :func:`reach` away, depth selection and depth-map fusion are per pixel,
and the (depth-capped) pyramid reaches :func:`~.fuse.pyramid_reach`. A tile that reads
that much more than it keeps therefore computes its kept pixels exactly as the
whole image would, so the tiled result equals the untiled one.
"""

import math
from dataclasses import dataclass

from .backend import gaussian_kernel
from .depth import REGULARISE_SIGMA
from .focus import PRESMOOTH_SIGMA, depth_sigma
from .fuse import FUSIONS
from .warp import HOST_WARP_BAND_PIXELS


class MemoryBudgetError(ValueError):
    """The memory budget is too small for even one useful tile; ``need`` is the least that would do."""

    def __init__(self, message, need=None):
        super().__init__(message)
        self.need = need


@dataclass(frozen=True)
class Tile:
    """One tile: what it reads from the input and where its result goes.

    ``read`` is ``(rows, cols)`` in input pixels, halo included; ``keep``
    selects the exact part of the tile's (scaled) result and ``write`` is where
    that part goes in the full (scaled) output.
    """

    read: tuple
    keep: tuple
    write: tuple


def reach(params, out_shape):
    """How far (in output pixels) a pixel's result depends on its neighbours."""
    focus = (
        len(gaussian_kernel(PRESMOOTH_SIGMA)) // 2  # pre-smoothing
        + 1  # Laplacian
        + params.radius  # window
        + len(gaussian_kernel(float(params.smoothing))) // 2  # smoothing
    )
    # depth is selected on the scores smoothed once more (focus.depth_sigma),
    # then regularised by confidence over a neighbourhood (depth.regularise_depth)
    selection = focus + len(gaussian_kernel(depth_sigma(params.smoothing))) // 2
    fusion = FUSIONS[params.method]
    if fusion.regularises_depth:
        selection += len(gaussian_kernel(REGULARISE_SIGMA)) // 2
    return fusion.reach(out_shape, selection, focus)


def warp_band_bytes(band_pixels, channels, itemsize):
    """Temporaries of warping one band of ``band_pixels`` on a device
    (:meth:`~.backend.NdimageBackend.warp_cubic`): coordinates, indices,
    tap weights and the gathered taps."""
    return int(1.25 * band_pixels * (112 + channels * (itemsize + 12)))


def working_bytes_per_pixel(channels, itemsize, params, device_warp=False):
    """Bytes of working memory per output pixel while a tile streams through.

    ``device_warp``: aligned frames are warped on the device, which holds the
    raw part of the frame, its warped float copy and the rounded result.
    """
    frame = channels * itemsize
    # best, total and width (float32), below/above/previous ratios (uint16),
    # index, masks; the focus measure's two buffers and the grey image (the
    # depth-selection scores are written over it)
    select = 3 * 4 + 3 * 2 + 2 + 2 + 3 * 4
    fuse = FUSIONS[params.method].bytes_per_pixel(channels, itemsize)
    if params.scale_factor > 1:
        fuse += channels * 4  # up-sampled float frame
    raw = 2 * frame / params.scale_factor**2  # decoded frame and the one read ahead
    if device_warp:
        raw += 2 * frame + 2 * channels * 4
    outputs = 12 + frame  # the tile's depth, confidence, regularisation weights and fused image
    # a quarter more, for what the count leaves out (bands being finished,
    # the decoder's buffers)
    return 1.25 * (select + fuse + raw + outputs)


def format_bytes(n):
    """``n`` bytes as a short text: ``"1.5 GiB"``, ``"12.0 MiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def _whole(height, width):
    """The one tile of an image that fits."""
    return Tile((slice(0, height), slice(0, width)), (slice(None), slice(None)), (slice(None), slice(None)))


def _grid(height, width, core, halo, s):
    """Tiles keeping ``core`` input pixels a side, reading ``halo`` more, for an output ``s`` times larger."""
    tiles = []
    for rows, row_off, row_len, row_at in _axis_tiles(height, core, halo):
        for cols, col_off, col_len, col_at in _axis_tiles(width, core, halo):
            keep = (slice(row_off * s, (row_off + row_len) * s), slice(col_off * s, (col_off + col_len) * s))
            write = (slice(row_at * s, (row_at + row_len) * s), slice(col_at * s, (col_at + col_len) * s))
            tiles.append(Tile((rows, cols), keep, write))
    return tiles


def _axis_tiles(size, core, halo):
    """``(read, keep, write)`` slices along one axis of ``size`` input pixels."""
    spans = []
    for start in range(0, size, core):
        stop = min(start + core, size)
        lo = max(0, start - halo)
        hi = min(size, stop + halo)
        spans.append((slice(lo, hi), start - lo, stop - start, start))
    return spans


#: Temporaries per pixel of a band of the per-pixel stages (selection,
#: fusion, finishing: sub-slice fit, confidence, blending, conversion).
STAGE_BAND_BYTES_PER_PIXEL = 128


def band_bytes(band_pixels, in_pixels, out_pixels, channels, itemsize, device_warp):
    """Temporaries of one band on a device with bands of ``band_pixels`` (0: none set aside).

    A tile of ``in_pixels`` input and ``out_pixels`` output pixels is warped
    (``device_warp``) and finished in bands of at most ``band_pixels``; the
    two do not overlap in time, so the larger counts.
    """
    if not band_pixels:
        return 0
    stage = int(1.25 * STAGE_BAND_BYTES_PER_PIXEL * min(band_pixels, out_pixels))
    warp = warp_band_bytes(min(band_pixels, in_pixels), channels, itemsize) if device_warp else 0
    return max(stage, warp)


def plan_tiles(
    in_shape, params, budget_bytes, channels, itemsize, *, frames_in_budget=True, band_pixels=0, device_warp=False
):
    """Tiles covering an input of ``in_shape`` (Y, X) within ``budget_bytes``.

    Returns a single tile covering everything when the whole image fits.
    Every tile reads whole frames and crops them (a JPEG cannot be decoded in
    parts). When the budget is the memory that holds those frames
    (``frames_in_budget``: the host's, on the CPU) three whole frames
    (decoded, warped, read ahead) are set aside from it before tiles are
    sized; a GPU's budget holds only the tiles. ``band_pixels``: the device
    works in bands of that many pixels (warping aligned frames there if
    ``device_warp``), whose temporaries are set aside too (:func:`band_bytes`).
    Raises MemoryBudgetError when even the smallest useful tile does not fit.
    """
    s = params.scale_factor
    height, width = in_shape
    per_pixel = working_bytes_per_pixel(channels, itemsize, params, device_warp)
    in_pixel = per_pixel * s * s  # per input pixel of a tile

    def reserve(pixels):  # band temporaries of a tile of ``pixels`` input pixels
        return band_bytes(band_pixels, pixels, pixels * s * s, channels, itemsize, device_warp)

    if height * width * in_pixel + reserve(height * width) <= budget_bytes:
        return [_whole(height, width)]
    # three whole frames and the host warp's coordinate maps (8 bytes per pixel of a band)
    whole_frames = 0
    if frames_in_budget:
        whole_frames = 3 * height * width * channels * itemsize + 8 * min(HOST_WARP_BAND_PIXELS, height * width)
    tile_budget = budget_bytes - whole_frames

    # Tile origins on a grid fine enough for the pyramid's sub-sampling.
    align = FUSIONS[params.method].tile_multiple((height * s, width * s))
    halo = math.ceil((math.ceil(reach(params, (height * s, width * s)) / s) + 1) / align) * align
    # input pixels per tile side, halo included
    if band_pixels:  # tiles finished in one band, or in bands of ``band_pixels`` if larger
        one_band = reserve(1)  # per input pixel while the tile is a single band
        side = math.isqrt(max(0, int(tile_budget / (in_pixel + one_band))))
        if side * side * s * s > band_pixels:
            largest = math.isqrt(max(0, int((tile_budget - reserve(band_pixels)) / in_pixel)))
            side = max(math.isqrt(band_pixels // (s * s)), largest)
    else:
        side = math.isqrt(max(0, int(tile_budget / in_pixel)))
    core = (side - 2 * halo) // align * align
    if core < max(align, 16):
        smallest = (2 * halo + max(align, 16)) ** 2
        need = smallest * in_pixel + reserve(smallest) + whole_frames
        raise MemoryBudgetError(
            f"a memory budget of {format_bytes(budget_bytes)} is too small for these parameters; "
            f"at least {format_bytes(need)} is needed",
            need,
        )
    return _grid(height, width, core, halo, s)


def tile_bytes(tiles, params, channels, itemsize, *, frames_in_budget=True, band_pixels=0, device_warp=False):
    """Working bytes the largest of ``tiles`` was planned to need (``plan_tiles``'s options)."""
    per_pixel = working_bytes_per_pixel(channels, itemsize, params, device_warp)
    area = max((t.read[0].stop - t.read[0].start) * (t.read[1].stop - t.read[1].start) for t in tiles)
    s2 = params.scale_factor**2
    return int(area * s2 * per_pixel) + band_bytes(band_pixels, area, area * s2, channels, itemsize, device_warp)


def refuse_bytes_per_pixel(channels, itemsize, scale_factor):
    """Bytes per output pixel of re-fusing along a depth map (:func:`~.pipeline.run_refuse`)."""
    frame = channels * itemsize
    # depth, slice index, two weights, two gathered frames, masks, the float
    # blend and the frames in flight (decoded, read ahead, up-sampled)
    per_pixel = 4 + 2 + 8 + 2 * frame + 2 + 2 * channels * 4 + frame + 2 * frame / scale_factor**2
    if scale_factor > 1:
        per_pixel += channels * 4
    return 1.25 * per_pixel


def plan_refuse_tiles(in_shape, scale_factor, budget_bytes, channels, itemsize, *, frames_in_budget=True):
    """Tiles for re-fusing within ``budget_bytes``: the same :class:`Tile` layout as :func:`plan_tiles`.

    Re-fusing is per pixel, so tiles overlap only by the one input pixel that
    bilinear up-sampling reaches (none at ``scale_factor`` 1).
    """
    s = scale_factor
    height, width = in_shape
    in_pixel = refuse_bytes_per_pixel(channels, itemsize, s) * s * s
    if height * width * in_pixel <= budget_bytes:
        return [_whole(height, width)]
    reserve = 3 * height * width * channels * itemsize if frames_in_budget else 0
    halo = 1 if s > 1 else 0
    side = math.isqrt(max(0, int((budget_bytes - reserve) / in_pixel)))
    core = side - 2 * halo
    if core < 16:
        need = (2 * halo + 16) ** 2 * in_pixel + reserve
        raise MemoryBudgetError(
            f"a memory budget of {format_bytes(budget_bytes)} is too small to re-fuse this stack; "
            f"at least {format_bytes(need)} is needed",
            need,
        )
    return _grid(height, width, core, halo, s)
