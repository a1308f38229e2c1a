"""Surface model: a textured surface blurred at each pixel by its own depth ("gather").

The first model of the package: fast, and exact for smooth surfaces, but it has
no occlusion (see :mod:`.layered`). Its texture comes from :mod:`.textures`,
its depth from :mod:`.depths`, and each frame's motion, gain and noise from
:mod:`.camera`.
"""

from dataclasses import dataclass

import cv2
import numpy as np
from skimage import util

from .camera import _expose, _frame_gains, _frame_transforms, _quantise, _warp_to_frame
from .depths import make_depth
from .textures import _check_shape, _gaussian_blur, make_texture

#: Memory for one horizontal band of the renderer: its bank of blurred copies
#: and its blended slices. Bands keep 12 MP x 10 RGB renders within ~1 GB.
_BAND_BYTES = 256 * 2**20

#: Largest image side cv2.remap accepts (it keeps coordinates in 16 bits).
_REMAP_MAX_SIDE = 32766


# --------------------------------------------------------------------------
# Rendering: spatially varying defocus blur
# --------------------------------------------------------------------------


def _sigma_levels(max_sigma):
    """Blur sigmas of the bank: 0, steps of 0.25 px, steps of 12.5 % above 2 px.

    Neighbouring levels are close enough that blending them linearly is
    indistinguishable from a Gaussian of the sigma in between.
    """
    levels = [0.0]
    while levels[-1] < max_sigma:
        levels.append(levels[-1] + max(0.25, levels[-1] / 8))
    return np.array(levels)


def _blur_bank(chunk, levels, rows):
    """Blur ``chunk`` at every sigma in ``levels``; keep ``rows``.

    Returns an ``(h, L, X[, C])`` array: the levels of one image row are
    adjacent. Each level is the previous one blurred by the missing sigma.
    """
    kept = chunk[rows]
    bank = np.empty((kept.shape[0], len(levels)) + kept.shape[1:], dtype=np.float32)
    bank[:, 0] = kept
    blurred = chunk
    for index in range(1, len(levels)):
        step = np.sqrt(levels[index] ** 2 - levels[index - 1] ** 2)
        blurred = _gaussian_blur(blurred, step).reshape(chunk.shape)
        bank[:, index] = blurred[rows]
    return bank


def _blend_levels(bank, position):
    """Per pixel, interpolate linearly between the bank's neighbouring levels.

    ``position`` holds the fractional level index of each pixel. Row ``y`` of
    the bank, reshaped to ``(h * L, X[, C])``, keeps its levels in rows
    ``y * L ... y * L + L - 1``, so cv2.remap's bilinear interpolation along
    those rows is a linear blend between two levels (at 1/32 steps of the
    weight, far below the difference between levels).
    """
    height, n_levels, width = bank.shape[:3]
    stacked = bank.reshape((height * n_levels,) + bank.shape[2:])
    rows = np.arange(height, dtype=np.float32)[:, None] * n_levels + position
    blended = np.empty(position.shape + bank.shape[3:], dtype=np.float32)
    for start in range(0, width, _REMAP_MAX_SIDE):
        stop = min(width, start + _REMAP_MAX_SIDE)
        columns = np.tile(np.arange(stop - start, dtype=np.float32), (height, 1))
        blended[:, start:stop] = cv2.remap(
            stacked[:, start:stop],
            columns,
            np.ascontiguousarray(rows[:, start:stop]),
            interpolation=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        ).reshape(blended[:, start:stop].shape)
    return blended


def _band_height(shape, n_levels, n_slices, n_channels):
    """Rows per band so that the bank and the blended slices fit ``_BAND_BYTES``."""
    bytes_per_row = (n_levels + n_slices) * shape[1] * n_channels * 4
    rows = max(1, _BAND_BYTES // bytes_per_row)
    return int(max(1, min(rows, shape[0], _REMAP_MAX_SIDE // n_levels)))


def _render_bands(texture, depth, n_slices, blur_per_slice):
    """Render the defocused slices band by band, in the reference geometry.

    Yields ``(rows, slices)``: a slice object over image rows, and the
    ``(Z, h, X[, C])`` float32 slices for those rows. Slice ``k`` is the
    texture blurred, at each pixel, by a Gaussian of sigma
    ``blur_per_slice * |depth - k|``.
    """
    height = depth.shape[0]
    n_channels = texture.shape[2] if texture.ndim == 3 else 1
    farthest = np.abs(np.array([depth.min(), depth.max()])[:, None] - [0, n_slices - 1]).max()
    levels = _sigma_levels(blur_per_slice * farthest)
    level_indices = np.arange(len(levels), dtype=np.float32)
    # Beyond 5 sigma the Gaussian's weight is below 1e-6: bands are seamless.
    halo = int(np.ceil(5 * levels[-1])) + 1
    band = _band_height(depth.shape, len(levels), n_slices, n_channels)
    for start in range(0, height, band):
        stop = min(height, start + band)
        chunk_start, chunk_stop = max(0, start - halo), min(height, stop + halo)
        bank = _blur_bank(texture[chunk_start:chunk_stop], levels, slice(start - chunk_start, stop - chunk_start))
        band_depth = depth[start:stop]
        slices = np.empty((n_slices,) + bank[:, 0].shape, dtype=np.float32)
        for k in range(n_slices):
            sigma = blur_per_slice * np.abs(band_depth - k)
            position = np.interp(sigma, levels, level_indices).astype(np.float32)
            slices[k] = _blend_levels(bank, position)
        yield slice(start, stop), slices


# --------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------


@dataclass
class SimulatedStack:
    """A simulated focal stack and the truth it was made from.

    Attributes
    ----------
    frames : ndarray
        ``(Z, Y, X)`` or ``(Z, Y, X, 3)`` in the requested dtype.
    texture : ndarray
        All-in-focus truth, ``(Y, X[, 3])``, in the frames' dtype and scale,
        without gain or noise, in the reference frame's geometry.
    depth : ndarray of float32
        ``(Y, X)`` true depth in slice units (0 = first frame), reference
        geometry.
    transforms : ndarray of float64
        ``(Z, 3, 3)`` homogeneous matrices: ``transforms[k]`` maps reference
        pixel coordinates ``(x, y, 1)`` (x = column, y = row, pixel centres
        at integers) to frame ``k``'s. Identity without motion.
    gains : ndarray of float64
        ``(Z,)`` or ``(Z, 3)`` multiplicative gain per frame (and channel).
    params : dict
        Every parameter used, for provenance.
    boundary : ndarray of bool or None
        ``(Y, X)``: pixels within 3 px of an occlusion boundary (layered
        scenes), where depth and colour change abruptly; None for a surface.
    mask : ndarray of bool or None
        ``(Y, X)``: where the depth can be observed, for scoring; None means
        :func:`textured_mask` of ``texture``.
    data_range : float or None
        Value range for PSNR and SSIM; None means the dtype's full range.
        Dim 16-bit scenes give the range their signal spans, so that SSIM
        still measures structure.
    """

    frames: np.ndarray
    texture: np.ndarray
    depth: np.ndarray
    transforms: np.ndarray
    gains: np.ndarray
    params: dict
    boundary: np.ndarray = None
    mask: np.ndarray = None
    data_range: float = None


def _stack_shape(shape, texture, depth):
    """The image shape: that of the arrays given, else ``shape``."""
    shapes = {np.shape(a)[:2] for a in (texture, depth) if not isinstance(a, str)}
    if len(shapes) > 1:
        raise ValueError(f"texture and depth arrays differ in shape: {sorted(shapes)}")
    return shapes.pop() if shapes else _check_shape(shape)


def _as_texture(texture, shape, rgb, seed):
    if isinstance(texture, str):
        return make_texture(texture, shape, rgb=rgb, seed=seed)
    texture = util.img_as_float32(np.asarray(texture))
    if texture.ndim not in (2, 3) or (texture.ndim == 3 and texture.shape[2] != 3):
        raise ValueError(f"texture array must be (Y, X) or (Y, X, 3), got {texture.shape}")
    return texture


def _as_depth(depth, shape, n_slices, seed):
    if isinstance(depth, str):
        return make_depth(depth, shape, n_slices, seed=seed)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth array must be (Y, X), got {depth.shape}")
    return depth


def simulate_stack(
    shape=(256, 256),
    n_slices=12,
    *,
    texture="mixed",
    depth="dome",
    rgb=False,
    dtype="uint8",
    blur_per_slice=1.0,
    noise=0.0,
    gain=0.0,
    jitter=0.0,
    breathing=0.0,
    rotation=0.0,
    drift=0.0,
    seed=0,
):
    """Simulate a focal stack of a textured surface, with its ground truth.

    Slice ``k`` shows the texture blurred, at each pixel, by a Gaussian of
    sigma ``blur_per_slice * |depth - k|`` pixels (sharp where the surface
    is at depth ``k``). The blur is rendered from a bank of copies blurred
    at closely spaced sigmas, blended linearly per pixel, band by band to
    bound memory. Each frame is then moved by its transform, multiplied by
    its gain, given noise, clipped and quantised.

    Parameters
    ----------
    shape : tuple of int, optional
        ``(Y, X)`` size; ignored when ``texture`` or ``depth`` is an array.
    n_slices : int, optional
        Number of frames ``Z``.
    texture : str or ndarray, optional
        A kind of :func:`make_texture`, or an all-in-focus image
        ``(Y, X[, 3])`` (integer dtypes are scaled to [0, 1], floats taken
        as [0, 1]).
    depth : str or ndarray, optional
        A kind of :func:`make_depth`, or a depth map ``(Y, X)`` in slices.
    rgb : bool, optional
        Colour stack; ignored when ``texture`` is an array.
    dtype : {"uint8", "uint16", "float32"}, optional
        Of ``frames`` and ``texture``: full range 255, 65535 or 1.0.
    blur_per_slice : float, optional
        Blur sigma (px) per slice of defocus.
    noise : float, optional
        Std of additive Gaussian noise, as a fraction of the full range
        (0.01 is moderate), drawn independently per pixel, channel and frame.
    gain : float, optional
        Largest relative exposure change: frame gains are drawn from
        ``[1 - gain, 1 + gain]`` and, for RGB, times a per-channel factor
        from ``[1 - gain/4, 1 + gain/4]`` (white-balance flicker).
    jitter : float, optional
        Std (px) of a random translation of each frame, in x and in y.
    breathing : float, optional
        Relative magnification change from the first to the last frame
        (0.1 = 10 %), ramping linearly.
    rotation : float, optional
        Rotation (degrees) from the first to the last frame, ramping linearly.
    drift : float, optional
        Translation (px) from the first to the last frame along a random
        direction, ramping linearly.
    seed : int, optional
        Seed of every random choice; the same seed gives the same stack.
        The texture and depth use it as :func:`make_texture` and
        :func:`make_depth` do.

    Returns
    -------
    SimulatedStack
        Frames and truth. The middle frame, ``n_slices // 2``, is the
        reference: identity transform, gain 1. Frame ``k`` is

        ``frame_k(p) = blurred_k(transforms[k]^-1 @ p)``

        for each frame pixel ``p = (x, y, 1)``, with ``blurred_k`` the
        defocused texture in reference geometry, where

        ``transforms[k] = T(c + shift_k) @ R(a_k) @ S(s_k) @ T(-c)``,

        ``c`` the image centre ``((X - 1) / 2, (Y - 1) / 2)``, ``t_k = (k -
        reference) / (n_slices - 1)``, ``s_k = 1 + breathing * t_k``, ``a_k =
        rotation * t_k`` and ``R(a) = [[cos a, -sin a], [sin a, cos a]]`` in
        ``(x, y)``, and ``shift_k`` the drift ``drift * t_k`` plus the jitter.
        Frames are sampled with bicubic interpolation (OpenCV, positions to
        1/32 px) and mirrored borders.

    Examples
    --------
    >>> sim = simulate_stack((96, 128), 8, rgb=True, dtype="uint16", breathing=0.1)
    >>> sim.frames.shape, sim.frames.dtype.name
    ((8, 96, 128, 3), 'uint16')
    >>> round(float(sim.transforms[-1, 0, 0]), 3)  # scale of the last frame
    1.043
    """
    dtype = np.dtype(dtype)
    if dtype not in (np.uint8, np.uint16, np.float32):
        raise ValueError(f"dtype must be uint8, uint16 or float32, got {dtype}")
    if n_slices < 1:
        raise ValueError(f"n_slices must be at least 1, got {n_slices}")
    shape = _stack_shape(shape, texture, depth)
    texture_image = _as_texture(texture, shape, rgb, seed)
    depth_map = _as_depth(depth, shape, n_slices, seed)
    rgb = texture_image.ndim == 3
    reference = n_slices // 2
    motion = dict(jitter=jitter, breathing=breathing, rotation=rotation, drift=drift)
    transforms = _frame_transforms(shape, n_slices, reference, **motion, rng=np.random.default_rng([seed, 1]))
    gains = _frame_gains(n_slices, reference, gain, rgb, np.random.default_rng([seed, 2]))
    noise_rng = np.random.default_rng([seed, 3])

    frames = np.empty((n_slices,) + texture_image.shape, dtype=dtype)
    bands = _render_bands(texture_image, depth_map, n_slices, blur_per_slice)
    if any(motion.values()):
        blurred = np.empty(frames.shape, dtype=np.float32)
        for rows, slices in bands:
            blurred[:, rows] = slices
        for k in range(n_slices):
            moved = _warp_to_frame(blurred[k], transforms[k])
            frames[k] = _expose(moved, gains[k], noise, noise_rng, dtype)
    else:
        for rows, slices in bands:
            for k in range(n_slices):
                frames[k, rows] = _expose(slices[k], gains[k], noise, noise_rng, dtype)

    params = dict(
        shape=shape,
        n_slices=n_slices,
        texture=texture if isinstance(texture, str) else "array",
        depth=depth if isinstance(depth, str) else "array",
        rgb=rgb,
        dtype=dtype.name,
        blur_per_slice=blur_per_slice,
        noise=noise,
        gain=gain,
        **motion,
        seed=seed,
        reference=reference,
    )
    return SimulatedStack(
        frames=frames,
        texture=_quantise(texture_image, dtype),
        depth=depth_map,
        transforms=transforms,
        gains=gains,
        params=params,
    )


# --------------------------------------------------------------------------
# Sample data on disk
# --------------------------------------------------------------------------


def write_sample_stack(folder, *, shape=(768, 1024), n_slices=12, seed=0):
    """Write a simulated RGB stack as JPEG frames, with its truth in ``.truth/``.

    ``folder/z01.jpg ...`` are the frames (as a camera writes them);
    ``folder/.truth/all_in_focus.png`` and ``folder/.truth/depth.tif`` (float32,
    slices) are the ground truth. Sub-folders are not read as frames, so the
    folder can be given to the reader, the command line or napari as it is.

    Returns the frame paths.
    """
    from pathlib import Path

    from ..io import save_image

    folder = Path(folder)
    (folder / ".truth").mkdir(parents=True, exist_ok=True)
    sim = simulate_stack(shape, n_slices, rgb=True, noise=0.01, seed=seed)
    paths = [folder / f"z{k + 1:02d}.jpg" for k in range(n_slices)]
    for path, frame in zip(paths, sim.frames):
        save_image(frame, path)
    save_image(sim.texture, folder / ".truth" / "all_in_focus.png")
    save_image(sim.depth, folder / ".truth" / "depth.tif", metadata={"content": "true depth (slices)"})
    return paths


def _main(argv=None):
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m napari_focus_stack.synthetic",
        description="Write a simulated focal stack (JPEG frames + ground truth) into FOLDER.",
    )
    parser.add_argument("folder", help="where to write the frames (created if missing)")
    parser.add_argument("--size", type=int, nargs=2, default=(1024, 768), metavar=("WIDTH", "HEIGHT"))
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_sample_stack(args.folder, shape=args.size[::-1], n_slices=args.frames, seed=args.seed)
    print(f"wrote {len(paths)} frames to {args.folder} (ground truth in {args.folder}/.truth)")


if __name__ == "__main__":
    _main()
