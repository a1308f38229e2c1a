"""Camera RAW frames (``.cr2``, ``.nef``, ``.arw``, ``.dng``...: :data:`RAW_FORMAT_NAMES`).

They are decoded by LibRaw through ``rawpy`` (the ``[raw]`` extra): a linear
16-bit demosaic (no gamma, no automatic brightening) with the camera's white
balance and the file's orientation, ``(Y, X, 3)`` uint16. They are frame
files like JPEGs: :func:`napari_focus_stack.open_stack` reads a folder, list
or glob of them, checking sizes from the headers and decoding one frame at a
time. ``rawpy`` is not imported until such a file is read; when it is
missing, the :class:`~napari_focus_stack.io.StackReadError` names the extra.

>>> sorted(RAW_FORMAT_NAMES)[:4]
['.3fr', '.arw', '.cr2', '.cr3']
"""

import importlib
import os
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np

from .frames import StackReadError, _check_frame_pixels, _FileFrames, _import, _reading

#: Camera RAW frames, decoded by LibRaw through rawpy (the [raw] extra).
RAW_EXTENSIONS = frozenset(
    {
        ".3fr",
        ".arw",
        ".cr2",
        ".cr3",
        ".crw",
        ".dng",
        ".iiq",
        ".nef",
        ".nrw",
        ".orf",
        ".pef",
        ".raf",
        ".rw2",
        ".rwl",
        ".srw",
    }
)

#: What a RAW file is called in messages, by extension (every one in RAW_EXTENSIONS).
RAW_FORMAT_NAMES = {
    ".3fr": "Hasselblad 3FR",
    ".arw": "Sony ARW",
    ".cr2": "Canon CR2",
    ".cr3": "Canon CR3",
    ".crw": "Canon CRW",
    ".dng": "DNG",
    ".iiq": "Phase One IIQ",
    ".nef": "Nikon NEF",
    ".nrw": "Nikon NRW",
    ".orf": "Olympus ORF",
    ".pef": "Pentax PEF",
    ".raf": "Fujifilm RAF",
    ".rw2": "Panasonic RW2",
    ".rwl": "Leica RWL",
    ".srw": "Samsung SRW",
}


#: LibRaw's processing: linear 16-bit RGB, camera white balance, the file's
#: own orientation (user_flip left at its default); the colour space is sRGB
#: primaries without the sRGB curve.
RAW_POSTPROCESS = {"gamma": (1, 1), "no_auto_bright": True, "output_bps": 16, "use_camera_wb": True}


_RAW_EXTRA = 'pip install "napari-focus-stack[raw]"'


def raw_format_name(path):
    """``"Nikon NEF"`` for ``x.NEF``: what messages call the RAW file ``path``."""
    extension = Path(path).suffix.lower()
    return RAW_FORMAT_NAMES.get(extension, f"{extension[1:].upper()} RAW")


def read_raw_header(path, max_frame_pixels):
    """A RAW file's frame as :func:`open_stack` needs it, from its header only.

    LibRaw parses the header when the file is opened; the sensor data is
    unpacked and demosaiced only when the frame is decoded
    (:func:`decode_raw`). The decoded size is LibRaw's: the visible area,
    stretched by a non-square pixel aspect, axes swapped by a 90° orientation.
    """
    rawpy = _import("rawpy", path, raw_format_name(path), _RAW_EXTRA)
    with _raw_errors(path, "not a readable RAW file"), rawpy.imread(os.fspath(path)) as raw:
        sizes = raw.sizes
    height, width = sizes.height, sizes.width
    _check_frame_pixels(path, height, width, max_frame_pixels)
    # LibRaw's stretch(): a pixel aspect below 1 lengthens the columns, above 1 the rows.
    if sizes.pixel_aspect < 1:
        height = int(height / sizes.pixel_aspect + 0.5)
    elif sizes.pixel_aspect > 1:
        width = int(width * sizes.pixel_aspect + 0.5)
    if sizes.flip & 4:  # LibRaw's flip: bit 4 transposes (EXIF orientations 5 to 8)
        height, width = width, height
    return _FileFrames(
        shape=(height, width, 3),
        dtype=np.dtype(np.uint16),
        loaders=(partial(decode_raw, path),),
        physical={"z_step_um": None, "pixel_size_um": None},
    )


def decode_raw(path):
    """The RAW file ``path`` demosaiced by LibRaw with :data:`RAW_POSTPROCESS`: ``(Y, X, 3)`` uint16."""
    rawpy = _import("rawpy", path, raw_format_name(path), _RAW_EXTRA)
    with _raw_errors(path, "cannot decode RAW image data"), rawpy.imread(os.fspath(path)) as raw:
        return raw.postprocess(**RAW_POSTPROCESS)


@contextmanager
def _raw_errors(path, problem):
    """LibRaw's errors, whose text is bytes, as one readable line naming ``path``."""
    rawpy = importlib.import_module("rawpy")
    try:
        with _reading(path, problem):
            yield
    except StackReadError as exc:
        cause = exc.__cause__
        if not isinstance(cause, rawpy.LibRawError) or not cause.args:
            raise
        reason = cause.args[0]
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise StackReadError(f"{path}: {problem} ({reason.strip() or type(cause).__name__})") from cause
