"""Pixel dtypes: float32 results rounded and clipped back into the frames' dtype."""

import numpy as np


def to_dtype(image, dtype, be):
    """Round and clip float32 ``image`` into ``dtype`` (float stays float32)."""
    xp = be.xp
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return image.astype(xp.float32, copy=False)
    info = np.iinfo(dtype)
    return xp.clip(xp.rint(image), info.min, info.max).astype(dtype)
