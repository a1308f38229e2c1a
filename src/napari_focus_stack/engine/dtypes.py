"""Pixel dtypes and sizes: the full scale of a dtype, float32 results rounded and clipped
back into the frames' dtype, and the ceiling division that reduced sizes use."""

import numpy as np


def full_scale(dtype) -> float:
    """Full-scale value of ``dtype``: 255 for uint8, 65535 for uint16, 1 for floats.

    >>> full_scale(np.uint16), full_scale("float32")
    (65535.0, 1.0)
    """
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def ceil_div(n, d) -> int:
    """``n / d`` rounded up, for whole numbers: the size of ``n`` pixels reduced ``d`` times.

    >>> ceil_div(10, 4), ceil_div(8, 4)
    (3, 2)
    """
    return -(-n // d)


def to_dtype(image, dtype, be):
    """Round and clip float32 ``image`` into ``dtype`` (float stays float32)."""
    xp = be.xp
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return image.astype(xp.float32, copy=False)
    info = np.iinfo(dtype)
    return xp.clip(xp.rint(image), info.min, info.max).astype(dtype)
