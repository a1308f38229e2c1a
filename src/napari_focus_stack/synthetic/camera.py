"""What the camera adds to each frame: motion, exposure gain, noise and quantisation.

Shared by the models: frames are rendered in the reference geometry as float32
in [0, 1], moved by a per-frame transform, exposed and quantised to the
requested dtype.
"""

import cv2
import numpy as np

from ..engine.dtypes import full_scale


def _frame_transforms(shape, n_slices, reference, jitter, breathing, rotation, drift, rng):
    """``(Z, 3, 3)`` matrices from reference to frame pixel coordinates.

    Scale and rotation about the image centre and the drift ramp linearly
    with the frame index, and are zero at ``reference``; jitter is a random
    translation per frame, also zero at ``reference``.
    """
    ramp = (np.arange(n_slices) - reference) / max(n_slices - 1, 1)
    shifts = rng.normal(0.0, 1.0, (n_slices, 2)) * jitter
    shifts[reference] = 0
    direction = rng.uniform(0, 2 * np.pi)
    shifts += np.outer(ramp * drift, [np.cos(direction), np.sin(direction)])
    centre = np.array([(shape[1] - 1) / 2, (shape[0] - 1) / 2])

    transforms = np.empty((n_slices, 3, 3))
    for k in range(n_slices):
        angle = np.deg2rad(rotation * ramp[k])
        linear = (1 + breathing * ramp[k]) * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        transforms[k] = np.eye(3)
        transforms[k, :2, :2] = linear
        transforms[k, :2, 2] = centre + shifts[k] - linear @ centre
    return transforms


def _frame_gains(n_slices, reference, gain, rgb, rng):
    """Random exposure gains, ``(Z,)``, or ``(Z, 3)`` for RGB; 1 at ``reference``.

    Frame gains are drawn from ``[1 - gain, 1 + gain]``; for RGB they are
    multiplied by a per-channel white-balance factor from
    ``[1 - gain/4, 1 + gain/4]``.
    """
    gains = rng.uniform(1 - gain, 1 + gain, n_slices)
    if rgb:
        gains = gains[:, None] * rng.uniform(1 - gain / 4, 1 + gain / 4, (n_slices, 3))
    gains[reference] = 1
    return gains


def _warp_to_frame(image, transform):
    """Sample ``image`` (reference geometry) at ``transform^-1`` of each frame pixel."""
    inverse = np.linalg.inv(transform)[:2]
    warped = cv2.warpAffine(
        image,
        inverse,
        (image.shape[1], image.shape[0]),
        flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REFLECT,
    )
    return warped.reshape(image.shape)


def _quantise(image, dtype):
    """Clip a float32 [0, 1] image to that range, scale and round it to ``dtype``."""
    full = full_scale(dtype)
    scaled = np.multiply(image, np.float32(full))
    np.clip(scaled, 0, full, out=scaled)
    if np.dtype(dtype).kind == "f":
        return scaled
    return np.rint(scaled, out=scaled).astype(dtype)


def _expose(image, gain, noise, rng, dtype):
    """Apply gain and Gaussian noise of std ``noise`` to a [0, 1] image, quantise to ``dtype``."""
    signal = image * np.asarray(gain, dtype=np.float32)
    if noise > 0:
        grain = rng.standard_normal(signal.shape, dtype=np.float32)
        grain *= np.float32(noise)
        signal += grain
    return _quantise(signal, dtype)


def move_frames(frames, transforms):
    """``frames`` (reference geometry) seen through ``transforms``, in their dtype.

    Each frame is sampled as :func:`_warp_to_frame` does and rounded back to
    the frames' dtype; the reference frame (identity) is kept as it is.
    """
    moved = np.empty_like(frames)
    full = full_scale(frames.dtype)
    for k, (frame, transform) in enumerate(zip(frames, transforms)):
        if np.array_equal(transform, np.eye(3)):
            moved[k] = frame
            continue
        warped = _warp_to_frame(frame.astype(np.float32) / np.float32(full), transform)
        moved[k] = _quantise(warped, frames.dtype)
    return moved
