"""The frames of a stack: :class:`FrameSequence`, :class:`StackReadError`, missing data.

Every reader (``raster``, ``tiff``, ``raw``, ``microscope``) describes what a
file holds as a :class:`_FileFrames` (shape, dtype, one loader per frame),
from its header alone; ``sources`` puts them together into a
:class:`FrameSequence`. The helpers every reader shares live here too:
:func:`_reading` turns a library's failure into a one-line
:class:`StackReadError`, :func:`_check_frame_pixels` refuses absurd sizes.
This module imports no other module of the package but the engine's.
"""

import importlib
import logging
import math
import operator
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from ..engine.align import reduction_factor
from ..engine.dtypes import ceil_div

_UNITS_IN_UM = {
    "pm": 1e-6,
    "å": 1e-4,
    "nm": 1e-3,
    "um": 1.0,
    "µm": 1.0,
    "μm": 1.0,
    "micron": 1.0,
    "microns": 1.0,
    "mm": 1e3,
    "cm": 1e4,
    "m": 1e6,
}


class StackReadError(ValueError):
    """A stack cannot be read; the message names the file and the problem."""


class MissingExtraError(StackReadError):
    """Reading a file needs an optional package that is not installed; the message names the extra."""


class SeveralStacksError(StackReadError):
    """A file holds several z-stacks (channels, time points, scenes); one must be picked.

    :func:`~napari_focus_stack.io.open_hyperstack` picks one; the command
    line fuses the channels of a time point along one depth.
    """


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
            raise StackReadError(f"{name}: decoded to shape {frame.shape} but its header says {self.shape[1:]}")
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
        return f"FrameSequence(shape={self.shape}, dtype={self.dtype.name}, source={self.metadata['source']!r})"

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
        >>> from napari_focus_stack.io import open_stack
        >>> frames = open_stack(np.zeros((2, 1000, 3000), np.uint16))
        >>> frames.reduced(0, 1024).shape
        (250, 750)
        """
        height, width = self.shape[1:3]
        factor = reduction_factor((height, width), max_side)
        size = (ceil_div(width, factor), ceil_div(height, factor))
        # A loader that can decode at a reduced size says so (JPEG: see raster.py).
        reduce = getattr(self._loaders[index], "reduced", None)
        if factor > 1 and reduce is not None:
            image = reduce(min(factor, 8))
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


# --- Shared by the readers ------------------------------------------------


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


def _unit_in_um(unit):
    if not unit:
        return None
    return _UNITS_IN_UM.get(str(unit).replace("\\u00B5", "µ").strip().lower())


def _import(module, path, kind, extra):
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise MissingExtraError(f"{path}: reading {kind} files needs {package}: {extra}") from None
