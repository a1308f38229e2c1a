"""Read and write focus stacks: folders, lists and globs of frames, multi-page TIFFs.

:func:`open_stack` checks a stack from its file headers alone (sizes, channels,
bit depth, absurd dimensions) and returns a lazy :class:`FrameSequence` that
decodes one frame at a time; :func:`read_stack` loads the whole stack after
checking that it fits in memory. JPEG, PNG, BMP and WebP frames are decoded
with OpenCV (fast, releases the GIL), TIFF with tifffile. Every problem a user
can cause is raised as :class:`StackReadError`, whose one-line message names
the file and the problem.

>>> import numpy as np
>>> frames = open_stack(np.zeros((3, 4, 5), np.uint8))
>>> frames.shape, frames.dtype.name, frames[0].shape
((3, 4, 5), 'uint8', (4, 5))
"""

import errno
import glob
import json
import logging
import math
import operator
import os
import re
import secrets
import signal
import stat
import threading
import warnings
import xml.etree.ElementTree as ElementTree
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePath

import cv2
import numpy as np
import tifffile
from PIL import Image

from .engine.align import reduction_factor
from .engine.backend import host_available_memory

#: Camera RAW frames, decoded by LibRaw through rawpy (the [raw] extra; see formats.py).
RAW_EXTENSIONS = frozenset(
    {".3fr", ".arw", ".cr2", ".cr3", ".crw", ".dng", ".iiq", ".nef", ".nrw", ".orf", ".pef", ".raf",
     ".rw2", ".rwl", ".srw"}
)  # fmt: skip
#: Extensions (lower case) of the frame files that are read.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}) | RAW_EXTENSIONS
#: Microscope files read through bioio (the [formats] extra; see formats.py), besides
#: OME-Zarr folders and the OME-TIFF hyperstacks the TIFF reader does not split.
MICROSCOPE_EXTENSIONS = frozenset({".czi", ".nd2", ".lif", ".zarr"})
TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})
#: Files a folder may hold beside its frames; skipped silently, as are hidden files.
SIDECAR_EXTENSIONS = frozenset(
    {".txt", ".md", ".json", ".xml", ".csv", ".ini", ".log", ".xmp", ".db"}
)
#: Extensions :func:`save_image` writes.
SAVE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".webp")
_EIGHT_BIT_EXTENSIONS = frozenset({".jpg", ".jpeg", ".bmp", ".webp"})
_JPEG_QUALITY = 95

_GRAY_PIL_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION_TAG = 0x0112
_TIFF_ALPHA_SAMPLES = (1, 2)  # EXTRASAMPLE ASSOCALPHA, UNASSALPHA
_UNITS_IN_UM = {
    "pm": 1e-6, "å": 1e-4, "nm": 1e-3, "um": 1.0, "µm": 1.0, "μm": 1.0,
    "micron": 1.0, "microns": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6,
}  # fmt: skip
_TIFF_RESOLUTION_UNITS_IN_UM = {3: 1e4, 4: 1e3, 5: 1.0}  # centimeter, millimeter, micrometer
_DIGITS = re.compile(r"(\d+)", re.ASCII)


class StackReadError(ValueError):
    """A stack cannot be read; the message names the file and the problem."""


class _OmeHyperstackError(StackReadError):
    """An OME-TIFF holding more than one z-stack (time points, channels): bioio reads it."""


def natural_sort_key(path_or_str):
    """Sort key that orders numbers by value and ignores case.

    Parameters
    ----------
    path_or_str : str or os.PathLike

    Returns
    -------
    key : tuple

    Examples
    --------
    >>> sorted(["f10.jpg", "F2.jpg", "f1.jpg", "f.jpg"], key=natural_sort_key)
    ['f.jpg', 'f1.jpg', 'F2.jpg', 'f10.jpg']
    """
    text = os.fspath(path_or_str)
    path = PurePath(text)
    # Folders, stem and extension apart, so that "img.jpg" sorts before "img2.jpg".
    components = (*path.parent.parts, path.stem, path.suffix)
    return tuple(_natural_chunks(component) for component in components), text


def _natural_chunks(text):
    # Odd chunks are digit runs; (0, int) and (1, str) never compare int with str.
    return tuple(
        (0, int(chunk)) if index % 2 else (1, chunk.casefold())
        for index, chunk in enumerate(_DIGITS.split(text))
        if chunk
    )


class FrameSequence:
    """Lazy, validated stack of frames; a frame is decoded only when indexed.

    Built by :func:`open_stack`, which has already checked from the headers that
    every frame has the same shape and bit depth.

    Parameters
    ----------
    loaders : sequence of callable
        One per frame; each returns that frame as stored, shape ``frame_shape``.
    frame_shape : tuple of int
        ``(Y, X)`` or ``(Y, X, 3)``.
    dtype : numpy.dtype
        uint8, uint16 or float32; frames are converted to it.
    metadata : dict
        ``z_step_um``, ``pixel_size_um``, ``names``, ``paths`` and ``source``.
    """

    def __init__(self, loaders, frame_shape, dtype, metadata):
        self._loaders = tuple(loaders)
        self.shape = (len(self._loaders), *frame_shape)
        self.dtype = np.dtype(dtype)
        self.metadata = metadata

    @property
    def nbytes(self):
        """Bytes the whole stack takes in memory as ``dtype``."""
        return math.prod(self.shape) * self.dtype.itemsize

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, index):
        """Frame ``index`` as :attr:`dtype`; in float frames, non-finite pixels are filled.

        NaN and infinite pixels are missing data: each is replaced by a smooth
        estimate from the finite pixels around it, which has no detail and so
        loses the focus measure to every frame that holds real pixels there
        (the fused pixel then comes from those frames); the count per frame is
        recorded in ``metadata["non_finite"]`` (see :func:`non_finite_warning`).
        Integer frames cannot hold them and are returned as decoded.
        """
        index = self._index(index)
        frame = self.decoded(index)
        if self.dtype.kind == "f":
            frame = self._fill_non_finite(index, frame)
        return frame

    def label(self, index):
        """Frame ``index`` as messages name it: its file (and page), or ``frame k`` of an array."""
        paths, names = self.metadata.get("paths"), self.metadata.get("names")
        if not paths:
            return names[index] if names else f"frame {index}"
        name = names[index] if names else ""
        page = name[name.rindex("[") :] if name.endswith("]") and "[" in name else ""
        return f"{paths[index]}{page}"

    def _index(self, index):
        index = operator.index(index)
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"frame {index} out of range for a stack of {len(self)}")
        return index

    def decoded(self, index):
        """Frame ``index`` as stored in the file (NaN and Inf kept), as :attr:`dtype`."""
        index = self._index(index)
        frame = self._loaders[index]()
        if frame.shape != self.shape[1:]:
            name = self.label(index)
            raise StackReadError(
                f"{name}: decoded to shape {frame.shape} but its header says {self.shape[1:]}"
            )
        return np.ascontiguousarray(frame, dtype=self.dtype)

    def _fill_non_finite(self, index, frame):
        # The minimum and maximum find any NaN or Inf without a mask (NaN propagates).
        low, high = float(frame.min()), float(frame.max())
        if math.isfinite(low) and math.isfinite(high):
            _check_magnitude(self.label(index), low, high)
            return frame
        name = self.label(index)
        missing = ~np.isfinite(frame)
        if missing.ndim == 3:
            missing = missing.any(axis=2)
        count = int(np.count_nonzero(missing))
        if count == missing.size:
            raise StackReadError(f"{name}: every pixel is NaN or infinite; leave this frame out of the stack")
        names = self.metadata.get("names")
        self.metadata.setdefault("non_finite", {})[names[index] if names else name] = count
        filled = fill_missing(frame, missing)
        _check_magnitude(name, float(filled.min()), float(filled.max()))
        return filled

    def __repr__(self):
        return (
            f"FrameSequence(shape={self.shape}, dtype={self.dtype.name}, "
            f"source={self.metadata['source']!r})"
        )

    def reduced(self, index, max_side):
        """Frame ``index`` shrunk by a power of two so that its long side is at most ``max_side``.

        The factor ``f`` is the smallest power of two that brings the long
        side to ``max_side`` or less; the result is ``ceil(Y / f)`` by
        ``ceil(X / f)`` and its pixel ``i`` averages full-resolution pixels
        ``f * i`` to ``f * i + f - 1``. JPEG frames are decoded at that size
        directly (libjpeg's DCT scaling, up to 1/8), much faster than a full
        decode; other frames are decoded whole and shrunk by area averaging.
        EXIF orientation is applied as for ``frames[index]``.

        Parameters
        ----------
        index : int
        max_side : int

        Returns
        -------
        ndarray
            ``(ceil(Y / f), ceil(X / f)[, 3])`` in :attr:`dtype`.

        Examples
        --------
        >>> frames = open_stack(np.zeros((2, 1000, 3000), np.uint16))
        >>> frames.reduced(0, 1024).shape
        (250, 750)
        """
        height, width = self.shape[1:3]
        factor = reduction_factor((height, width), max_side)
        size = (-(-width // factor), -(-height // factor))
        loader = self._loaders[index]
        is_jpeg = (
            isinstance(loader, partial)
            and loader.func is _decode_with_opencv
            and Path(loader.args[0]).suffix.lower() in (".jpg", ".jpeg")
        )
        if factor > 1 and is_jpeg:
            image = _decode_with_opencv(*loader.args, reduction=min(factor, 8))
        else:
            image = self[index]
        if image.shape[:2] != size[::-1]:
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        return np.ascontiguousarray(image, dtype=self.dtype)


#: Gaussian sigma (px) of the neighbourhood that fills a missing pixel.
FILL_SIGMA = 4.0
#: Largest magnitude of a float pixel that is stacked: the focus measure
#: squares local contrast, and float32 arithmetic overflows beyond about 1e19.
MAX_FLOAT_MAGNITUDE = 1e18


def _check_magnitude(name, low, high):
    peak = max(-low, high)
    if peak > MAX_FLOAT_MAGNITUDE:
        raise StackReadError(
            f"{name}: pixel values reach {peak:.3g}, beyond the {MAX_FLOAT_MAGNITUDE:.0e} that float "
            "frames can be stacked with; rescale the stack first"
        )


def fill_missing(frame, missing):
    """``frame`` with the pixels where ``missing`` is True replaced from their neighbours.

    A normalised convolution: a Gaussian-weighted mean of the pixels around
    that are not missing; where none is near, the mean of all of them (0 when
    the whole frame is missing). The fill is smooth, so it holds no detail.

    Examples
    --------
    >>> frame = np.array([[1.0, np.nan, 3.0]] * 3, np.float32)
    >>> filled = fill_missing(frame, np.isnan(frame))
    >>> bool(np.isfinite(filled).all()), float(filled[1, 1])
    (True, 2.0)
    """
    valid = (~missing).astype(np.float32)
    if not valid.any():
        return np.zeros_like(frame)  # nothing to fill from (FrameSequence refuses such frames)
    filled = np.where(missing[..., None] if frame.ndim == 3 else missing, 0, frame).astype(np.float32)
    weight = cv2.GaussianBlur(valid, (0, 0), FILL_SIGMA, borderType=cv2.BORDER_REFLECT)
    planes = filled[..., None] if filled.ndim == 2 else filled
    for channel in range(planes.shape[2]):
        plane = planes[..., channel]
        mean = float(plane[~missing].mean())
        smooth = cv2.GaussianBlur(plane * valid, (0, 0), FILL_SIGMA, borderType=cv2.BORDER_REFLECT)
        estimate = np.where(weight > 1e-3, smooth / np.maximum(weight, 1e-3), mean)
        plane[missing] = estimate[missing]
    return filled.astype(frame.dtype, copy=False)


def non_finite_warning(metadata):
    """One sentence about the NaN/Inf pixels a run met, or None when there were none.

    ``metadata`` is a :class:`FrameSequence`'s (or a result's) metadata.

    Examples
    --------
    >>> non_finite_warning({"non_finite": {"z2.tif": 3, "z5.tif": 1}, "names": ["z1.tif"] * 7})
    '2 of 7 frames hold non-finite pixels (NaN or Inf), 4 in all (z2.tif: 3, z5.tif: 1); they were treated as missing and filled from the other frames'
    """
    counts = metadata.get("non_finite") or {}
    if not counts:
        return None
    order = {name: index for index, name in enumerate(metadata.get("names") or [])}
    counts = dict(sorted(counts.items(), key=lambda item: order.get(item[0], len(order))))
    listed = ", ".join(f"{name}: {count:,}" for name, count in list(counts.items())[:3])
    more = ", ..." if len(counts) > 3 else ""
    total = len(metadata.get("names") or counts)
    return (
        f"{len(counts)} of {total} frames hold non-finite pixels (NaN or Inf), "
        f"{sum(counts.values()):,} in all ({listed}{more}); "
        "they were treated as missing and filled from the other frames"
    )


@dataclass(frozen=True)
class _FileFrames:
    """What a file's header says about the frames it holds."""

    shape: tuple  # (Y, X) or (Y, X, 3), as decoded
    dtype: np.dtype  # as stored
    loaders: tuple  # one zero-argument callable per frame
    physical: dict  # z_step_um and pixel_size_um, None where the file does not say


def open_stack(source, *, max_frame_pixels=400_000_000):
    """Open a focus stack lazily, checking it from the file headers.

    Parameters
    ----------
    source : str, os.PathLike, list of paths, array or FrameSequence
        A folder (every image file in it, in natural order; hidden and sidecar
        files such as ``.txt`` are skipped, subfolders ignored), a list of
        files (kept in the given order), a glob pattern, a multi-page TIFF
        (plain, ImageJ hyperstack or OME) or an array ``(Z, Y, X[, C])``.
    max_frame_pixels : int, optional
        Refuse frames whose header declares more pixels than this (corrupt
        files, decompression bombs). Frames read through Pillow headers
        (JPEG, PNG, BMP, WebP) are also held to Pillow's own limit.

    Returns
    -------
    frames : FrameSequence
        Frames ``(Y, X)`` (gray) or ``(Y, X, 3)`` (RGB; alpha is dropped) of
        dtype uint8, uint16 or float32. EXIF orientation of JPEG, PNG and WebP
        frames is applied; TIFF orientation tags are ignored, as ImageJ does.

    Raises
    ------
    StackReadError
        Nothing to read, fewer than 2 frames, frames that differ in size,
        channels or bit depth, unreadable or unsupported files.
    """
    if isinstance(source, FrameSequence):
        return source
    if hasattr(source, "shape") and hasattr(source, "dtype"):
        return _open_array(source)
    if isinstance(source, (list, tuple)):
        if not all(isinstance(path, (str, os.PathLike)) and os.fspath(path) for path in source):
            raise StackReadError("The list of paths holds an empty path or something that is not a path")
        paths = [Path(os.path.expanduser(os.fsdecode(path))) for path in source]
        if not paths:
            raise StackReadError("No image files given: the list of paths is empty")
        return _open_paths(paths, _common_folder(paths), max_frame_pixels)
    if not isinstance(source, (str, os.PathLike)):
        raise StackReadError(
            f"cannot read a stack from a {type(source).__name__}: give a folder, files, a glob, "
            "a multi-page TIFF or an array (Z, Y, X[, C])"
        )
    text = os.path.expanduser(os.fspath(source))
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise StackReadError("No input given: the path is empty (for the current folder, give '.')")
    path = Path(text)
    if path.is_dir():
        from . import formats

        if formats.is_ome_zarr(path):
            return formats.open_microscope_stack(path, max_frame_pixels)
        return _open_paths(_list_folder(path), str(path), max_frame_pixels)
    if path.is_file():
        return _open_paths([path], str(path), max_frame_pixels)
    if any(character in text for character in "*?["):
        return _open_paths(_list_glob(text), text, max_frame_pixels)
    if path.exists():
        raise StackReadError(f"{path}: not a regular file or folder (a device, a pipe or a socket)")
    raise StackReadError(f"{path}: no such file or folder")


def read_stack(source, *, max_frame_pixels=400_000_000, memory_fraction=0.8):
    """Read a whole focus stack into memory.

    Parameters
    ----------
    source : str, os.PathLike, list of paths, array or FrameSequence
        See :func:`open_stack`.
    max_frame_pixels : int, optional
        See :func:`open_stack`.
    memory_fraction : float, optional
        Refuse stacks larger than this fraction of the available memory.

    Returns
    -------
    stack : ndarray
        ``(Z, Y, X)`` or ``(Z, Y, X, 3)``.
    metadata : dict
        See :class:`FrameSequence`.

    Examples
    --------
    >>> stack, metadata = read_stack(np.ones((2, 3, 3), np.float64))
    >>> stack.dtype.name, metadata["names"]
    ('float32', ['frame 0', 'frame 1'])
    """
    frames = open_stack(source, max_frame_pixels=max_frame_pixels)
    _check_fits_in_memory(frames, memory_fraction)
    stack = np.empty(frames.shape, frames.dtype)

    def fill(index):
        stack[index] = frames.decoded(index)

    # Decoders release the GIL, so frames decode in parallel.
    workers = min(len(frames), os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(fill, range(len(frames))))
    return stack, frames.metadata


def _check_fits_in_memory(frames, memory_fraction):
    available = host_available_memory()
    if available is None or frames.nbytes <= available * memory_fraction:
        return
    raise StackReadError(
        f"{frames.metadata['source']}: stack needs {frames.nbytes / 1e9:.2f} GB but only "
        f"{available * memory_fraction / 1e9:.2f} GB are available "
        f"({memory_fraction:.0%} of free memory); use fewer or smaller frames"
    )


# --- Sources -----------------------------------------------------------------


def _list_folder(folder):
    files = [path for path in folder.iterdir() if path.is_file()]
    paths = _image_files(files)
    if not paths:
        raise StackReadError(
            f"No image files found in {folder} (reads {_extension_list(IMAGE_EXTENSIONS)})"
        )
    return paths


def _list_glob(pattern):
    paths = _image_files(Path(match) for match in glob.glob(pattern) if os.path.isfile(match))
    if not paths:
        raise StackReadError(f"No image files found matching {pattern}")
    return paths


def _image_files(paths):
    """Image files among ``paths`` in natural order; hidden and sidecar files skipped."""
    images = []
    for path in paths:
        extension = path.suffix.lower()
        if path.name.startswith(".") or extension in SIDECAR_EXTENSIONS:
            continue
        if extension not in IMAGE_EXTENSIONS:
            raise StackReadError(_not_an_image_message(path))
        images.append(path)
    return sorted(images, key=natural_sort_key)


def _not_an_image_message(path):
    return (
        f"{path}: not a supported image file "
        f"(reads {_extension_list(IMAGE_EXTENSIONS)}); move it out of the stack"
    )


def _extension_list(extensions):
    return ", ".join(sorted(extensions))


def _common_folder(paths):
    try:
        return os.path.commonpath([str(path.parent) for path in paths])
    except ValueError:  # different drives
        return str(paths[0].parent)


def _open_paths(paths, source, max_frame_pixels):
    """Open one multi-frame file, or several files of one frame each."""
    from . import formats

    if len(paths) == 1 and formats.is_microscope_file(paths[0]):
        return formats.open_microscope_stack(paths[0], max_frame_pixels)
    for path in paths:
        if formats.is_microscope_file(path):
            raise StackReadError(f"{path}: a microscope file holds its own z-stacks; open it on its own")
        if path.is_dir():
            raise StackReadError(f"{path}: is a folder; give image files or one folder")
        if not path.is_file():
            if path.exists():
                raise StackReadError(f"{path}: not a regular file (a device, a pipe or a socket)")
            raise StackReadError(f"{path}: no such file")
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            raise StackReadError(_not_an_image_message(path))
    if len(paths) == 1:
        try:
            frames = _read_file_frames(paths[0], max_frame_pixels)
        except _OmeHyperstackError as exc:
            return formats.open_microscope_stack(paths[0], max_frame_pixels, tiff_error=exc)
        count = len(frames.loaders)
        names = [paths[0].name] if count == 1 else [f"{paths[0].name}[{i}]" for i in range(count)]
        return _frame_sequence(frames, names, [str(paths[0])] * count, source)
    first = _read_single_frame(paths[0], max_frame_pixels)
    loaders = list(first.loaders)
    for path in paths[1:]:
        frames = _read_single_frame(path, max_frame_pixels)
        _check_same_frames(path, frames, paths[0], first)
        loaders.extend(frames.loaders)
    stack = _FileFrames(first.shape, first.dtype, tuple(loaders), first.physical)
    return _frame_sequence(stack, [path.name for path in paths], [str(p) for p in paths], source)


def _read_single_frame(path, max_frame_pixels):
    frames = _read_file_frames(path, max_frame_pixels)
    if len(frames.loaders) != 1:
        raise StackReadError(
            f"{path}: holds {len(frames.loaders)} frames; open a multi-page file on its "
            "own, not as part of a folder or list"
        )
    return frames


def _check_same_frames(path, frames, first_path, first):
    if frames.shape != first.shape:
        raise StackReadError(
            f"{path}: frame is {_describe_shape(frames.shape)} but {first_path.name} is "
            f"{_describe_shape(first.shape)}; all frames must have the same size and channels"
        )
    if frames.dtype != first.dtype:
        raise StackReadError(
            f"{path}: pixels are {frames.dtype.name} but {first_path.name} has "
            f"{first.dtype.name}; all frames must have the same bit depth"
        )


def _describe_shape(shape):
    return f"{shape[1]}x{shape[0]} px {'RGB' if len(shape) == 3 else 'gray'}"


def _frame_sequence(frames, names, paths, source):
    if len(frames.loaders) < 2:
        raise StackReadError(
            f"{source}: only one frame ({names[0]}); focus stacking needs at least 2 frames"
        )
    metadata = {**frames.physical, "names": names, "paths": paths, "source": source}
    dtype = _output_dtype(frames.dtype, paths[0])
    return FrameSequence(frames.loaders, frames.shape, dtype, metadata)


def _output_dtype(dtype, label):
    """uint8, uint16 and float32 stay; other types that float32 holds become float32."""
    dtype = np.dtype(dtype)
    if dtype in (np.uint8, np.uint16, np.float32):
        return dtype
    if dtype in (np.int8, np.int16, np.float16, np.float64):
        return np.dtype(np.float32)
    raise StackReadError(
        f"{label}: unsupported pixel type {dtype.name}; reads uint8, uint16 and float32 "
        "(int8, int16, float16 and float64 as float32)"
    )


def _open_array(array):
    label = f"array of shape {tuple(array.shape)}"
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3, 4)):
        raise StackReadError(
            f"{label}: expected (Z, Y, X) or (Z, Y, X, C) with C = 1, 3 or 4 (alpha dropped)"
        )
    depth, height, width = array.shape[:3]
    if depth == 0:
        raise StackReadError(f"{label}: no frames; focus stacking needs at least 2 frames")
    if depth < 2:
        raise StackReadError(f"{label}: only one frame; focus stacking needs at least 2 frames")
    if height < 1 or width < 1:
        raise StackReadError(f"{label}: the frames are empty ({width}x{height} px)")
    rgb = array.ndim == 4 and array.shape[-1] > 1
    frame_shape = (height, width, 3) if rgb else (height, width)
    metadata = {
        "z_step_um": None,
        "pixel_size_um": None,
        "names": [f"frame {i}" for i in range(depth)],
        "paths": None,
        "source": "array",
    }
    loaders = [partial(_array_frame, array, i) for i in range(depth)]
    return FrameSequence(loaders, frame_shape, _output_dtype(array.dtype, label), metadata)


def _array_frame(array, index):
    frame = np.asarray(array[index])
    if frame.ndim == 3:
        return frame[..., 0] if frame.shape[-1] == 1 else frame[..., :3]
    return frame


@contextmanager
def _reading(label, problem):
    """Turn any failure while reading a file into a StackReadError naming ``label``.

    The library's own words are kept when they say something (``Truncated
    File Read``); reprs of its objects and bare index errors are not.
    tifffile's logged warnings (a shape description that does not match the
    pages, a file without pages) are silenced: what matters is raised here.
    """
    try:
        with _quiet_tifffile():
            yield
    except (StackReadError, MemoryError):
        raise
    except Exception as exc:
        raise StackReadError(f"{label}: {problem} ({_library_reason(exc)})") from exc


def _library_reason(exc):
    """A short, readable reason from a library's exception."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, Image.UnidentifiedImageError):
        return "unrecognised or corrupt header"
    if isinstance(exc, (IndexError, KeyError)) or not text:
        return "corrupt or unsupported file structure"
    text = _OBJECT_REPR.sub("the file", text)
    return text


_OBJECT_REPR = re.compile(r"<[^<>]*>")


class _WhileReading(logging.Filter):
    """Drops tifffile's log records on threads that are inside :func:`_reading`."""

    def __init__(self):
        super().__init__()
        self.local = threading.local()

    def filter(self, record):
        return not getattr(self.local, "depth", 0)


_TIFFFILE_QUIET = _WhileReading()
logging.getLogger("tifffile").addFilter(_TIFFFILE_QUIET)


@contextmanager
def _quiet_tifffile():
    local = _TIFFFILE_QUIET.local
    local.depth = getattr(local, "depth", 0) + 1
    try:
        yield
    finally:
        local.depth -= 1


def _check_not_empty(path):
    """Refuse zero-byte files up front, with a message that says so."""
    try:
        size = os.stat(path).st_size
    except OSError as exc:
        raise StackReadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise StackReadError(f"{path}: empty file (0 bytes); move it out of the stack")


def _check_frame_pixels(path, height, width, max_frame_pixels):
    if height < 1 or width < 1:
        raise StackReadError(f"{path}: header declares an empty image ({width}x{height} px)")
    if height * width > max_frame_pixels:
        raise StackReadError(
            f"{path}: header declares {width}x{height} px ({height * width / 1e6:,.0f} "
            f"megapixels), more than max_frame_pixels={max_frame_pixels:,}; refusing to decode"
        )


def _read_file_frames(path, max_frame_pixels):
    _check_not_empty(path)
    if path.suffix.lower() in TIFF_EXTENSIONS:
        return _read_tiff_frames(path, max_frame_pixels)
    if path.suffix.lower() in RAW_EXTENSIONS:
        from .formats import read_raw_header

        return read_raw_header(path, max_frame_pixels)
    return _read_pil_header_frame(path, max_frame_pixels)


# --- JPEG, PNG, BMP, WebP: Pillow reads the header, OpenCV decodes -----------


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
            raise StackReadError(f"{path}: header declares an image too large to decode ({exc})")
    _check_frame_pixels(path, height, width, max_frame_pixels)
    if orientation in (5, 6, 7, 8):
        height, width = width, height
    gray = mode in _GRAY_PIL_MODES
    # PNG is the one format here with 16 bits; its IHDR holds the bit depth at byte 24.
    sixteen_bit = head.startswith(_PNG_SIGNATURE) and len(head) > 24 and head[24] == 16
    loader = partial(_decode_with_opencv, path, gray, orientation)
    return _FileFrames(
        shape=(height, width) if gray else (height, width, 3),
        dtype=np.dtype(np.uint16 if sixteen_bit else np.uint8),
        loaders=(loader,),
        physical={"z_step_um": None, "pixel_size_um": None},
    )


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
    (2, True): cv2.IMREAD_REDUCED_GRAYSCALE_2, (2, False): cv2.IMREAD_REDUCED_COLOR_2,
    (4, True): cv2.IMREAD_REDUCED_GRAYSCALE_4, (4, False): cv2.IMREAD_REDUCED_COLOR_4,
    (8, True): cv2.IMREAD_REDUCED_GRAYSCALE_8, (8, False): cv2.IMREAD_REDUCED_COLOR_8,
}  # fmt: skip


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
        raise StackReadError(
            f"{path}: cannot decode image data (truncated BMP: {len(data):,} of {declared:,} bytes)"
        )


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


# --- TIFF: tifffile reads headers and pages -----------------------------------


def _read_tiff_frames(path, max_frame_pixels):
    with _reading(path, "not a readable TIFF"):
        with tifffile.TiffFile(path) as tif:
            if not tif.series or not len(tif.pages):
                raise StackReadError(f"{path}: not a readable TIFF (it holds no image pages)")
            series = tif.series[0]
            page = series.keyframe
            page_shape, page_axes = page.shape, page.axes
            height, width = page.shape[page_axes.index("Y")], page.shape[page_axes.index("X")]
            _check_frame_pixels(path, height, width, max_frame_pixels)
            color_samples = _tiff_color_samples(path, page)
            try:
                frame_keys = _tiff_frame_keys(path, series.axes, series.shape, page_axes)
            except StackReadError as exc:
                if tif.is_ome:  # time points or channels: bioio picks one stack (formats.py)
                    raise _OmeHyperstackError(str(exc)) from None
                raise
            physical = _tiff_physical_sizes(tif)
            decodable = page.compression in tifffile.TIFF.DECOMPRESSORS
    color_planes = len(frame_keys[0])
    rgb = color_samples == 3 or color_planes == 3
    if decodable:
        read = partial(_decode_tiff_pages, path, page=(page_shape, page_axes, color_samples))
        loaders = tuple(partial(read, keys) for keys in frame_keys)
    elif len(frame_keys) == 1 and color_planes == 1:
        loaders = (partial(_decode_tiff_with_opencv, path, color_samples),)
    else:
        raise StackReadError(
            f"{path}: {page.compression.name} compression of a multi-page TIFF needs the "
            "'imagecodecs' package; install it or save the stack uncompressed"
        )
    return _FileFrames(
        shape=(height, width, 3) if rgb else (height, width),
        dtype=np.dtype(page.dtype),
        loaders=loaders,
        physical=physical,
    )


def _tiff_color_samples(path, page):
    """Colour samples per pixel (1 or 3); alpha samples are dropped when decoding."""
    alpha = sum(1 for sample in page.extrasamples if sample in _TIFF_ALPHA_SAMPLES)
    color = page.samplesperpixel - alpha
    if color not in (1, 3) or page.photometric == tifffile.PHOTOMETRIC.PALETTE:
        raise StackReadError(
            f"{path}: {color} colour samples per pixel ({page.photometric.name}); "
            "reads gray or RGB (alpha is dropped)"
        )
    return color


def _tiff_frame_keys(path, axes, shape, page_axes):
    """Page indices of each frame: one page, or three for a channel axis of 3.

    ``axes`` and ``shape`` describe the series with size-1 axes removed; the
    axes before the page's own (Y, X and samples) index its pages.
    """
    if not axes.endswith(page_axes) or set(page_axes) - set("YXS"):
        raise StackReadError(f"{path}: unsupported TIFF layout (axes {axes})")
    stack_axes = dict(zip(axes[: len(axes) - len(page_axes)], shape, strict=False))
    if "T" in stack_axes:
        raise StackReadError(
            f"{path}: has a time axis of {stack_axes['T']} points; split it into one "
            "z-stack per time point first (or open it in napari)"
        )
    channels = stack_axes.get("C", 1)
    if "C" in stack_axes and "S" in page_axes:
        raise StackReadError(f"{path}: has both a channel axis and RGB samples; split it first")
    if channels not in (1, 3):
        raise StackReadError(
            f"{path}: has {channels} channels; reads 1 (gray) or 3 (RGB): split the channels first"
        )
    z_axes = [axis for axis in stack_axes if axis != "C"]
    if len(z_axes) > 1:
        raise StackReadError(
            f"{path}: has several stack axes ({''.join(z_axes)}); reads one z axis"
        )
    if not stack_axes:
        return [[0]]
    depth = stack_axes[z_axes[0]] if z_axes else 1
    frame_keys = []
    for z in range(depth):
        keys = []
        for channel in range(channels):
            position = {"C": channel, **dict.fromkeys(z_axes, z)}
            index = tuple(position[axis] for axis in stack_axes)
            keys.append(int(np.ravel_multi_index(index, tuple(stack_axes.values()))))
        frame_keys.append(keys)
    return frame_keys


def _decode_tiff_pages(path, keys, *, page):
    """Decode the pages ``keys`` of series 0 into one ``(Y, X[, 3])`` frame.

    ``page`` is the shape, axes and colour samples of the series' pages.
    """
    page_shape, page_axes, color_samples = page
    with _reading(path, f"cannot decode TIFF page {keys[0]}"):
        with tifffile.TiffFile(path) as tif:
            pages = tif.asarray(key=keys, series=0)
    pages = pages.reshape((len(keys), *page_shape))
    if "S" in page_axes:
        pages = np.moveaxis(pages, 1 + page_axes.index("S"), -1)[..., :color_samples]
        pages = pages[..., 0] if color_samples == 1 else pages
    return np.moveaxis(pages, 0, -1) if len(keys) == 3 else pages[0]


def _decode_tiff_with_opencv(path, color_samples):
    """Decode a single-page TIFF compressed in a way tifffile needs imagecodecs for."""
    with _reading(path, "cannot decode TIFF"):
        image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise StackReadError(f"{path}: cannot decode TIFF (truncated or corrupt file)")
    if image.ndim == 2:
        return image
    # OpenCV orders colour samples BGR(A); alpha and extra samples come last.
    return image[..., 2::-1] if color_samples == 3 else image[..., 0]


def _tiff_physical_sizes(tif):
    """z step and (y, x) pixel size in µm from OME, ImageJ or resolution tags."""
    if tif.is_ome:
        return _ome_physical_sizes(tif.ome_metadata)
    page = tif.series[0].keyframe
    x_resolution, y_resolution = page.resolution
    if tif.is_imagej:
        imagej = tif.imagej_metadata or {}
        scale = _unit_in_um(imagej.get("unit"))
        spacing = imagej.get("spacing")
    else:
        scale = _TIFF_RESOLUTION_UNITS_IN_UM.get(int(page.resolutionunit))
        spacing = None
    if scale is None:
        return {"z_step_um": None, "pixel_size_um": None}
    pixel_size = None
    if x_resolution > 0 and y_resolution > 0:
        pixel_size = (scale / y_resolution, scale / x_resolution)
    z_step = float(spacing) * scale if spacing else None
    return {"z_step_um": z_step, "pixel_size_um": pixel_size}


def _unit_in_um(unit):
    if not unit:
        return None
    return _UNITS_IN_UM.get(str(unit).replace("\\u00B5", "µ").strip().lower())


def _ome_physical_sizes(ome_xml):
    try:
        root = ElementTree.fromstring(ome_xml)
    except ElementTree.ParseError:
        return {"z_step_um": None, "pixel_size_um": None}
    pixels = next((element for element in root.iter() if element.tag.endswith("Pixels")), None)
    attributes = {} if pixels is None else pixels.attrib

    def size_um(axis):
        try:
            value = float(attributes[f"PhysicalSize{axis}"])
        except (KeyError, ValueError):
            return None
        scale = _unit_in_um(attributes.get(f"PhysicalSize{axis}Unit", "µm"))
        return None if scale is None else value * scale

    x_size, y_size = size_um("X"), size_um("Y")
    pixel_size = None if x_size is None else (y_size or x_size, x_size)
    return {"z_step_um": size_um("Z"), "pixel_size_um": pixel_size}


# --- Writing -------------------------------------------------------------------


def save_image(image, path, *, metadata=None):
    """Save a 2-D gray or ``(Y, X, 3)`` RGB image, atomically.

    The file is written under a temporary name in the same folder and renamed
    into place, so ``path`` never holds a half-written file.

    Parameters
    ----------
    image : array_like
    path : str or os.PathLike
        The extension picks the format. ``.tif``/``.tiff`` keep any dtype
        (uint16 and float32 included) and store ``metadata``. ``.png`` stores
        uint8 and uint16. ``.jpg``, ``.jpeg``, ``.bmp`` and ``.webp`` store
        8 bits: uint16 is scaled by 1/257 (0 -> 0, 65535 -> 255, rounded).
        Float images have no fixed range, so only TIFF stores them.
    metadata : dict, optional
        TIFF only: stored as JSON in the ImageDescription (read it back with
        :func:`read_metadata`); ``"pixel_size_um"`` ``(y, x)`` also sets the
        resolution tags. Values may be NumPy arrays and scalars.
        ``"axes": "CYX"`` saves a ``(C, Y, X)`` image of several channels,
        one TIFF page per channel (TIFF only).

    Returns
    -------
    path : pathlib.Path

    Raises
    ------
    ValueError
        Unknown extension, or an image the format cannot store.
    """
    path = Path(path)
    write_atomically(path, image_writer(image, path, metadata=metadata))
    return path


def image_writer(image, path, *, metadata=None):
    """``write(file)`` that stores ``image`` as :func:`save_image` would at ``path``.

    Everything that can be checked is checked here, before any file exists:
    the extension, the shape, what the format stores, and the metadata.
    """
    path = Path(path)
    extension = path.suffix.lower()
    image = np.asarray(image)
    channels_first = (metadata or {}).get("axes") == "CYX"
    if channels_first:
        if image.ndim != 3:
            raise ValueError(f"images of several channels are (C, Y, X), not {image.shape}")
        if extension not in TIFF_EXTENSIONS:
            raise ValueError("images of several channels are saved as one multi-channel TIFF: use a .tif name")
    elif not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise ValueError(f"save_image takes (Y, X) or (Y, X, 3) images, not {image.shape}")
    if extension in TIFF_EXTENSIONS:
        # Serialised first, so that metadata JSON cannot hold fails before any file exists.
        description = json.dumps(metadata, default=_json_default) if metadata else None
        pixel_size = (metadata or {}).get("pixel_size_um")
        write = partial(
            _write_tiff, image=image, description=description, pixel_size_um=pixel_size, channels_first=channels_first
        )
    elif extension in SAVE_EXTENSIONS:
        encoded = _encode_with_opencv(image, extension)
        write = partial(_write_bytes, data=encoded)
    else:
        raise ValueError(
            f"{path}: cannot save {extension!r} files; supported: {', '.join(SAVE_EXTENSIONS)}"
        )
    return write


def read_image(path, *, max_frame_pixels=400_000_000):
    """One image (a fused image or a map a run wrote, or any single frame) and its metadata.

    Reads what :func:`open_stack` reads (EXIF orientation applied, colour as
    RGB); the metadata is :func:`read_metadata`'s for TIFF files, else empty.
    Raises :class:`StackReadError` for a file that is not one readable image.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_image(np.full((2, 3, 3), 7, np.uint8), f"{folder}/a.tif", metadata={"radius": 8})
    ...     image, metadata = read_image(path)
    >>> image.shape, image.dtype.name, metadata
    ((2, 3, 3), 'uint8', {'radius': 8})
    """
    path = Path(path)
    if not path.is_file():
        raise StackReadError(f"{path}: no such file")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise StackReadError(_not_an_image_message(path))
    frames = _read_single_frame(path, max_frame_pixels)
    image = FrameSequence(frames.loaders, frames.shape, _output_dtype(frames.dtype, path), {}).decoded(0)
    metadata = read_metadata(path) if path.suffix.lower() in TIFF_EXTENSIONS else {}
    return image, metadata


def read_metadata(path):
    """The metadata dict :func:`save_image` stored in a TIFF; empty if there is none.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_image(np.zeros((2, 2)), f"{folder}/a.tif", metadata={"radius": 8})
    ...     read_metadata(path)
    {'radius': 8}
    """
    with _quiet_tifffile(), tifffile.TiffFile(path) as tif:
        if not len(tif.pages):
            return {}
        description = tif.pages[0].description
    try:
        metadata = json.loads(description)
    except ValueError:
        return {}
    return metadata if isinstance(metadata, dict) else {}


def _temporary_name(path):
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def remove_stale_temporaries(path):
    """Remove the temporary files a killed :func:`write_atomically` of ``path`` left; returns how many.

    Only names of exactly that form (``.name.<8 hex digits>.tmp``) are touched.
    Call it only where nothing else is writing ``path`` at the same time.
    """
    path = Path(path)
    removed = 0
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        token = candidate.name[len(path.name) + 2 : -len(".tmp")]
        if len(token) == 8 and all(c in "0123456789abcdef" for c in token):
            candidate.unlink(missing_ok=True)
            removed += 1
    return removed


def write_atomically(path, write):
    """Write ``path`` all at once: ``write(file)`` fills a temporary file beside it, then a rename.

    An interruption leaves either the old file or the new one, never half of
    one; the temporary file is removed when ``write`` fails (a killed process
    leaves it: :func:`remove_stale_temporaries`). A file-system error is
    raised as :class:`StackWriteError` naming ``path``, never the temporary.
    """
    with OutputSet({"file": path}) as outputs:
        outputs.write("file", write)
        outputs.commit()


class StackWriteError(OSError):
    """An output cannot be written; the one-line message names the user's file and the reason."""


class OutputSet:
    """Outputs written all or nothing: checked first, then filled, then renamed together.

    Creating the set checks every output (folder there, not a folder itself,
    no two the same, none an input: compared ignoring case and by inode) and
    reserves a temporary file beside each, so an output that cannot be
    written is refused before any computing. :meth:`write` fills a
    temporary; :meth:`commit` renames them all into place. Leaving the
    ``with`` block by an exception (or a signal turned into one) before
    :meth:`commit` has finished removes every temporary and every output the
    set renamed into place: the outputs are then as they were before the
    run, except that an older file at an output path that was already
    replaced is gone.

    Parameters
    ----------
    outputs : dict
        ``{role: path}``, e.g. ``{"fused image": "fused.tif"}``; roles name
        the outputs in messages.
    inputs : iterable of path, optional
        Files that no output may be.
    remove_stale : bool, optional
        First remove the temporaries a killed earlier run left beside each
        output (only where nothing else writes those outputs at the same time).

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     with OutputSet({"fused image": f"{folder}/a.png", "depth map": f"{folder}/d.tif"}) as outputs:
    ...         outputs.write_image("fused image", np.zeros((2, 2), np.uint8))
    ...         outputs.write_image("depth map", np.zeros((2, 2), np.float32))
    ...         outputs.commit()
    ...     sorted(os.listdir(folder))
    ['a.png', 'd.tif']
    """

    def __init__(self, outputs, *, inputs=(), remove_stale=False):
        self.paths = {role: Path(path) for role, path in outputs.items()}
        self.committed = False
        #: Outputs (user's paths) beside which a file of this run could not be removed.
        self.left_behind = []
        self._temporaries = {}
        self._placed = []
        check_outputs(self.paths, inputs)
        try:
            for role, path in self.paths.items():
                if remove_stale:
                    remove_stale_temporaries(path)
                temporary = _temporary_name(path)
                try:
                    with _signals_held():  # made and recorded at once: a signal cannot orphan it
                        open(temporary, "xb").close()
                        self._temporaries[role] = temporary
                except OSError as exc:
                    raise StackWriteError(f"cannot write the {role} {path}: {_write_reason(exc, path)}") from None
        except BaseException:
            self.discard()
            raise

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if not self.committed:
            self.discard()
        return False

    def write(self, role, write):
        """Fill the temporary of ``role`` with ``write(file)``."""
        path = self.paths[role]
        try:
            with open(self._temporaries[role], "wb") as file:
                write(file)
        except OSError as exc:
            raise StackWriteError(f"cannot write the {role} {path}: {_write_reason(exc, path)}") from None

    def write_image(self, role, image, *, metadata=None):
        """Fill the temporary of ``role`` with ``image``, as :func:`save_image` would."""
        self.write(role, image_writer(image, self.paths[role], metadata=metadata))

    def sizes(self):
        """``{role: bytes}`` written so far to each temporary."""
        return {role: temporary.stat().st_size for role, temporary in self._temporaries.items()}

    def commit(self):
        """Rename every temporary into place; on any failure, none of the outputs stays."""
        try:
            for role, temporary in list(self._temporaries.items()):
                path = self.paths[role]
                try:
                    with _signals_held():  # renamed and recorded at once
                        os.replace(temporary, path)
                        del self._temporaries[role]
                        self._placed.append(path)
                except OSError as exc:
                    raise StackWriteError(f"cannot write the {role} {path}: {_write_reason(exc, path)}") from None
        except BaseException:
            self.discard()
            raise
        self.committed = True

    def discard(self):
        """Remove every temporary and every output placed so far.

        Outputs beside which something could not be removed are added to
        :attr:`left_behind` (by the user's path, never the temporary's name).
        """
        with _signals_held():
            for role, path in [*self._temporaries.items(), *((None, path) for path in self._placed)]:
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    self.left_behind.append(self.paths[role] if role is not None else path)
            self._temporaries.clear()
            self._placed.clear()


def check_outputs(outputs, inputs=()):
    """Refuse outputs that cannot be, before any work: raises :class:`StackWriteError`.

    ``outputs`` is ``{role: path}``. Refused: a folder that does not exist,
    a path that is a folder, two outputs at the same path, and an output that
    is an input. Paths are compared ignoring case (on macOS and Windows
    ``Z01.JPG`` is ``z01.jpg``) and, for files that exist, by inode (links).
    """
    inputs = [Path(path) for path in inputs]
    input_keys = {path_key(path): path for path in inputs}
    input_ids = {}
    for path in inputs:
        with suppress_os_error():
            status = path.stat()
            input_ids[(status.st_dev, status.st_ino)] = path
    seen = {}
    for role, path in outputs.items():
        path = Path(path)
        key = path_key(path)
        if key in seen:
            raise StackWriteError(f"the {role} and the {seen[key]} would both be written to {path}")
        seen[key] = role
        try:
            status = path.stat()
        except OSError:
            status = None
        if key in input_keys or (status is not None and (status.st_dev, status.st_ino) in input_ids):
            raise StackWriteError(f"refusing to overwrite input file {path} with the {role}")
        if not path.parent.resolve().is_dir():
            raise StackWriteError(f"cannot write the {role}: folder {path.parent} does not exist")
        if path.is_dir():
            raise StackWriteError(f"cannot write the {role} {path}: it is a folder")
        if status is not None and not stat.S_ISREG(status.st_mode):  # a device, a pipe: never replaced
            raise StackWriteError(f"cannot write the {role} {path}: it is not a regular file")


def path_key(path):
    """A path as compared for sameness: absolute, links resolved, case folded (as on
    macOS and Windows, where ``Z01.JPG`` is ``z01.jpg``)."""
    return os.path.normcase(str(Path(path).resolve())).casefold()


@contextmanager
def suppress_os_error():
    try:
        yield
    except OSError:
        pass


def _write_reason(exc, path):
    """Why writing ``path`` failed, in words, never naming our temporary file."""
    if exc.errno == errno.ENOSPC or "requested and" in str(exc):  # NumPy's short write
        return "no space left on device"
    if exc.errno == errno.ENOENT and path.parent.is_dir():
        return f"the folder {path.parent} does not accept new files"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"no permission to write in {path.parent}"
    text = exc.strerror or str(exc) or type(exc).__name__
    return _OBJECT_REPR.sub("the file", text).replace(str(exc.filename or "\0"), str(path))


@contextmanager
def _signals_held():
    """Hold SIGINT and SIGTERM (on the main thread, where POSIX allows it) while cleaning up."""
    held = {getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)} - {None}
    can_hold = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if not can_hold:
        yield
        return
    before = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _write_tiff(file, *, image, description, pixel_size_um, channels_first=False):
    resolution = {}
    if pixel_size_um is not None:
        y_size, x_size = (float(size) for size in pixel_size_um)
        resolution = {"resolution": (1e4 / x_size, 1e4 / y_size), "resolutionunit": "CENTIMETER"}
    tifffile.imwrite(
        file,
        image,
        photometric="rgb" if image.ndim == 3 and not channels_first else "minisblack",
        description=description,
        metadata=None,  # no tifffile shape description beside ours
        **resolution,
    )


def _write_bytes(file, *, data):
    file.write(data)


def _json_default(value):
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"metadata value {value!r} of type {type(value).__name__} is not JSON")


def check_storable(dtype, path):
    """Raise ValueError when the format of ``path`` cannot store images of ``dtype``.

    The same rule :func:`save_image` applies, checked before any computing.

    >>> check_storable(np.float32, "fused.png")
    Traceback (most recent call last):
    ...
    ValueError: PNG stores uint8 or uint16, not float32; save as .tif
    """
    extension = Path(path).suffix.lower()
    if extension in TIFF_EXTENSIONS or extension not in SAVE_EXTENSIONS:
        return
    image = np.zeros((1, 1), dtype)
    if extension in _EIGHT_BIT_EXTENSIONS:
        _to_uint8(image, extension)
    elif image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG stores uint8 or uint16, not {image.dtype.name}; save as .tif")


def _encode_with_opencv(image, extension):
    if extension in _EIGHT_BIT_EXTENSIONS:
        image = _to_uint8(image, extension)
    elif image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG stores uint8 or uint16, not {image.dtype.name}; save as .tif")
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY] if extension in (".jpg", ".jpeg") else []
    ok, encoded = cv2.imencode(extension, image, params)
    if not ok:
        raise ValueError(f"OpenCV cannot encode {extension} images")
    return encoded.tobytes()


def _to_uint8(image, extension):
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    raise ValueError(
        f"{extension} stores 8 bits: convert {image.dtype.name} to uint8 first, or save as .tif"
    )


def split_into_stacks(paths, stack_size):
    """Cut files, in natural order, into consecutive stacks of ``stack_size``.

    A last, shorter group is kept if it has at least 2 files.

    Parameters
    ----------
    paths : iterable of str or os.PathLike
    stack_size : int
        At least 2.

    Returns
    -------
    stacks : list of list
        The paths as given (str stays str, Path stays Path).

    Raises
    ------
    ValueError
        ``stack_size`` below 2, or a single file left over at the end.

    Examples
    --------
    >>> split_into_stacks(["c2", "a10", "a9", "b1"], 2)
    [['a9', 'a10'], ['b1', 'c2']]
    """
    if stack_size < 2:
        raise ValueError(f"stack_size must be at least 2, not {stack_size}")
    ordered = sorted(paths, key=lambda path: natural_sort_key(Path(path)))
    stacks = [ordered[start : start + stack_size] for start in range(0, len(ordered), stack_size)]
    if stacks and len(stacks[-1]) < 2:
        raise ValueError(
            f"{len(ordered)} files do not split into stacks of {stack_size}: 1 file is left "
            f"over ({Path(stacks[-1][0]).name}); a stack needs at least 2 frames"
        )
    return stacks
