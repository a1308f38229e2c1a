"""Alias of :mod:`napari_focus_stack.io.raw` and :mod:`napari_focus_stack.io.microscope`.

Camera RAW frames (rawpy) and microscope files (bioio) are read by those two
modules of the :mod:`napari_focus_stack.io` package; this module keeps the
names it held before that split importable from here. New code imports them
from ``napari_focus_stack.io`` (or its modules). Patch a function where it is
defined (e.g. ``napari_focus_stack.io.raw.decode_raw``), not here.
"""

from .io.frames import FrameSequence, StackReadError
from .io.microscope import (
    MICROSCOPE_EXTENSIONS,
    Hyperstack,
    is_microscope_file,
    is_ome_zarr,
    open_hyperstack,
    open_microscope_stack,
)
from .io.raw import RAW_EXTENSIONS, RAW_FORMAT_NAMES, RAW_POSTPROCESS, decode_raw, raw_format_name, read_raw_header

__all__ = [
    "MICROSCOPE_EXTENSIONS",
    "RAW_EXTENSIONS",
    "RAW_FORMAT_NAMES",
    "RAW_POSTPROCESS",
    "FrameSequence",
    "Hyperstack",
    "StackReadError",
    "decode_raw",
    "is_microscope_file",
    "is_ome_zarr",
    "open_hyperstack",
    "open_microscope_stack",
    "raw_format_name",
    "read_raw_header",
]
