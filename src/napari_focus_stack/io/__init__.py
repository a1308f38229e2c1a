"""Read and write focus stacks: folders, lists and globs of frames, multi-page TIFFs.

:func:`open_stack` checks a stack from its file headers alone (sizes, channels,
bit depth, absurd dimensions) and returns a lazy :class:`FrameSequence` that
decodes one frame at a time; :func:`read_stack` loads the whole stack after
checking that it fits in memory. JPEG, PNG, BMP and WebP frames are decoded
with OpenCV (fast, releases the GIL), TIFF with tifffile. Every problem a user
can cause is raised as :class:`StackReadError`, whose one-line message names
the file and the problem.

The package, by concern; imports point one way, from ``sources`` to the
readers, and every reader imports only ``frames``:

- ``frames``: :class:`FrameSequence`, :class:`StackReadError`, missing data,
  and what every reader shares.
- ``sources``: :func:`open_stack`, :func:`read_stack`, :func:`read_image`;
  folders, lists and globs, natural order, :func:`split_into_stacks`.
- ``raster`` (JPEG, PNG, BMP, WebP), ``tiff``, ``raw`` (camera RAW through
  rawpy), ``microscope`` (CZI, ND2, LIF, OME-Zarr through bioio).
- ``writing``: :func:`save_image`, :class:`OutputSet` and atomic writes.

>>> import numpy as np
>>> frames = open_stack(np.zeros((3, 4, 5), np.uint8))
>>> frames.shape, frames.dtype.name, frames[0].shape
((3, 4, 5), 'uint8', (4, 5))
"""

from .frames import (
    FILL_SIGMA,
    MAX_FLOAT_MAGNITUDE,
    FrameSequence,
    MissingExtraError,
    SeveralStacksError,
    StackReadError,
    fill_missing,
    non_finite_warning,
)
from .microscope import MICROSCOPE_EXTENSIONS, Hyperstack, is_microscope_file, is_ome_zarr, open_hyperstack
from .raw import RAW_EXTENSIONS, RAW_FORMAT_NAMES
from .sources import (
    IMAGE_EXTENSIONS,
    SIDECAR_EXTENSIONS,
    natural_sort_key,
    open_stack,
    read_image,
    read_stack,
    split_into_stacks,
)
from .tiff import TIFF_EXTENSIONS
from .writing import (
    SAVE_EXTENSIONS,
    OutputSet,
    StackWriteError,
    check_outputs,
    check_storable,
    image_writer,
    path_key,
    read_metadata,
    remove_stale_temporaries,
    save_image,
    suppress_os_error,
    write_atomically,
)

__all__ = [
    "FILL_SIGMA",
    "IMAGE_EXTENSIONS",
    "MAX_FLOAT_MAGNITUDE",
    "MICROSCOPE_EXTENSIONS",
    "RAW_EXTENSIONS",
    "RAW_FORMAT_NAMES",
    "SAVE_EXTENSIONS",
    "SIDECAR_EXTENSIONS",
    "TIFF_EXTENSIONS",
    "FrameSequence",
    "Hyperstack",
    "MissingExtraError",
    "OutputSet",
    "SeveralStacksError",
    "StackReadError",
    "StackWriteError",
    "check_outputs",
    "check_storable",
    "fill_missing",
    "image_writer",
    "is_microscope_file",
    "is_ome_zarr",
    "natural_sort_key",
    "non_finite_warning",
    "open_hyperstack",
    "open_stack",
    "path_key",
    "read_image",
    "read_metadata",
    "read_stack",
    "remove_stale_temporaries",
    "save_image",
    "split_into_stacks",
    "suppress_os_error",
    "write_atomically",
]
