"""JPEG, PNG, BMP and WebP frames: Pillow reads the header, OpenCV decodes.

Pillow's header gives the size, the colour mode and the EXIF orientation
without decoding; OpenCV decodes (fast, and it releases the GIL), with the
orientation applied here so that the decoded shape always matches the header.
"""

import warnings
import zlib
from functools import partial

import cv2
import numpy as np
from PIL import Image

from .frames import StackReadError, _check_frame_pixels, _FileFrames, _reading

_GRAY_PIL_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION_TAG = 0x0112


def _read_pil_header_frame(path, max_frame_pixels):
    with _reading(path, "not a readable image"), open(path, "rb") as file:
        head = file.read(26)
        file.seek(0)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(file) as image:
                    width, height = image.size
                    mode = image.mode
                    orientation = _exif_orientation(image.info.get("exif"))
        except Image.DecompressionBombError as exc:
            raise StackReadError(f"{path}: header declares an image too large to decode ({exc})") from exc
    _check_frame_pixels(path, height, width, max_frame_pixels)
    if orientation in (5, 6, 7, 8):
        height, width = width, height
    gray = mode in _GRAY_PIL_MODES
    # PNG is the one format here with 16 bits; its IHDR holds the bit depth at byte 24.
    sixteen_bit = head.startswith(_PNG_SIGNATURE) and len(head) > 24 and head[24] == 16
    make_loader = _JpegLoader if path.suffix.lower() in (".jpg", ".jpeg") else partial
    loader = make_loader(_decode_with_opencv, path, gray, orientation)
    return _FileFrames(
        shape=(height, width) if gray else (height, width, 3),
        dtype=np.dtype(np.uint16 if sixteen_bit else np.uint8),
        loaders=(loader,),
        physical={"z_step_um": None, "pixel_size_um": None},
    )


class _JpegLoader(partial):
    """``loader()`` decodes a JPEG frame; ``loader.reduced(f)`` decodes it at ``1/f`` size (f = 2, 4, 8)."""

    def reduced(self, reduction):
        return self.func(*self.args, reduction=reduction)


def _exif_orientation(exif_bytes):
    """EXIF orientation (1 to 8) from raw EXIF bytes; 1 when absent or invalid."""
    if not exif_bytes:
        return 1
    exif = Image.Exif()
    try:
        exif.load(exif_bytes)
    except Exception:  # malformed EXIF must not stop a stack from opening
        return 1
    orientation = exif.get(_EXIF_ORIENTATION_TAG, 1)
    return orientation if orientation in range(1, 9) else 1


#: libjpeg's DCT scaling: decoding at 1/2, 1/4 or 1/8 size costs a fraction of a full decode.
_REDUCED_FLAGS = {
    (2, True): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    (2, False): cv2.IMREAD_REDUCED_COLOR_2,
    (4, True): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    (4, False): cv2.IMREAD_REDUCED_COLOR_4,
    (8, True): cv2.IMREAD_REDUCED_GRAYSCALE_8,
    (8, False): cv2.IMREAD_REDUCED_COLOR_8,
}


#: OpenCV >= 4.11 can decode straight to RGB (JPEG: libjpeg-turbo writes RGB).
_IMREAD_COLOR_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)


def _decode_with_opencv(path, gray, orientation, reduction=1):
    # Orientation is applied here, from the header, so the decoded shape always
    # matches what open_stack reported, whatever OpenCV's own EXIF support does.
    flags = cv2.IMREAD_IGNORE_ORIENTATION
    if reduction > 1:  # JPEG only
        flags |= _REDUCED_FLAGS[reduction, gray]
    else:
        flags |= cv2.IMREAD_ANYDEPTH | (cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR)
    # Decoding to RGB saves a pass over the frame and, since OpenCV converts
    # in place through a temporary copy, a fresh frame-sized allocation: each
    # costs 10-20 ms per 12 MP frame, mostly page faults (benchmarks/RESULTS.md).
    swap = not gray
    if swap and _IMREAD_COLOR_RGB is not None:
        flags = (flags & ~cv2.IMREAD_COLOR) | _IMREAD_COLOR_RGB
        swap = False
    with _reading(path, "cannot decode image data"):
        data = np.fromfile(path, dtype=np.uint8)
        if data[:8].tobytes() == _PNG_SIGNATURE:
            _check_png_chunks(path, data)
        elif data[:2].tobytes() == b"BM":
            _check_bmp_size(path, data)
        image = cv2.imdecode(data, flags)
    if image is None:
        raise StackReadError(f"{path}: cannot decode image data (truncated or corrupt file)")
    if swap:
        cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)
    return _apply_orientation(image, orientation)


def _check_bmp_size(path, data):
    """Refuse a BMP shorter than its header says, before OpenCV logs its own error about it."""
    declared = int.from_bytes(data[2:6].tobytes(), "little") if len(data) >= 6 else 0
    if len(data) < 14 or declared > len(data):
        raise StackReadError(f"{path}: cannot decode image data (truncated BMP: {len(data):,} of {declared:,} bytes)")


def _check_png_chunks(path, data):
    """Check a PNG's chunk lengths and CRCs before libpng sees it.

    libpng prints its complaints about a corrupt file straight to the
    terminal ("libpng error: IDAT: CRC error"), around any message of ours;
    checked here, the user reads one line naming the file instead.
    """
    view = memoryview(data).cast("B")
    position, size = 8, len(view)
    while position + 12 <= size:
        length = int.from_bytes(view[position : position + 4], "big")
        end = position + 12 + length
        if end > size:
            break
        kind = bytes(view[position + 4 : position + 8])
        stored = int.from_bytes(view[end - 4 : end], "big")
        if zlib.crc32(view[position + 4 : end - 4]) != stored:
            name = kind.decode("latin-1")
            raise StackReadError(f"{path}: cannot decode image data (corrupt PNG: checksum error in its {name} chunk)")
        if kind == b"IEND":
            return
        position = end
    raise StackReadError(f"{path}: cannot decode image data (truncated PNG: the file ends before its last chunk)")


def _apply_orientation(image, orientation):
    """View of ``image`` turned upright according to its EXIF orientation."""
    if orientation == 2:
        return image[:, ::-1]
    if orientation == 3:
        return image[::-1, ::-1]
    if orientation == 4:
        return image[::-1]
    if orientation == 5:
        return image.swapaxes(0, 1)
    if orientation == 6:
        return np.rot90(image, -1)
    if orientation == 7:
        return image[::-1, ::-1].swapaxes(0, 1)
    if orientation == 8:
        return np.rot90(image, 1)
    return image
