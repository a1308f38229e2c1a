"""Pixel dtypes: a dtype's full scale, and float32 results rounded back into a dtype."""

import numpy as np


def value_range(dtype) -> float:
    """Full-scale value of ``dtype``: 255 for uint8, 65535 for uint16, 1 for floats."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def to_dtype(image, dtype, be):
    """Round and clip float32 ``image`` into ``dtype`` (float stays float32)."""
    xp = be.xp
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return image.astype(xp.float32, copy=False)
    info = np.iinfo(dtype)
    return xp.clip(xp.rint(image), info.min, info.max).astype(dtype)
