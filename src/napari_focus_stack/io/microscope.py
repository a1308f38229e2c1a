"""Microscope files, through ``bioio`` and its reader plugins (the ``[formats]`` extra).

Zeiss ``.czi``, Nikon ``.nd2``, Leica ``.lif``, OME-Zarr folders, and
OME-TIFF hyperstacks with time points or several channels.
:func:`open_hyperstack` tells what a file holds (time points, channels,
z planes, physical sizes) and :meth:`Hyperstack.stack` picks one z-stack,
streamed one z plane at a time from bioio's lazy (dask) data, so a file
larger than memory works. :func:`~napari_focus_stack.io.open_stack` and
:func:`~napari_focus_stack.io.read_stack` take such a file when it holds one
z-stack only. bioio is not imported until such a file is read; when it is
missing, the :class:`~napari_focus_stack.io.StackReadError` names the extra.
"""

import importlib
import importlib.util
import inspect
import json
import logging
import math
import os
import threading
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np

from .frames import (
    FrameSequence,
    MissingExtraError,
    SeveralStacksError,
    StackReadError,
    _check_frame_pixels,
    _import,
    _output_dtype,
    _reading,
    _unit_in_um,
)

#: Microscope files read through bioio (the [formats] extra), besides
#: OME-Zarr folders and the OME-TIFF hyperstacks the TIFF reader does not split.
MICROSCOPE_EXTENSIONS = frozenset({".czi", ".nd2", ".lif", ".zarr"})


_FORMATS_EXTRA = 'pip install "napari-focus-stack[formats]"'
_MICROSCOPE_NAMES = {".czi": "Zeiss CZI", ".nd2": "Nikon ND2", ".lif": "Leica LIF", ".zarr": "OME-Zarr"}
_PLUGINS = {".czi": "bioio-czi", ".nd2": "bioio-nd2", ".lif": "bioio-lif", ".zarr": "bioio-ome-zarr"}
#: One z plane per dask chunk (samples of RGB pixels stay together), for the
#: readers that take ``chunk_dims``: their default chunk is a whole z-stack.
_PLANE_CHUNK_DIMS = ["Y", "X", "S"]
#: Readers whose libraries can be called from several threads at once.
_THREAD_SAFE_READERS = ("bioio_ome_tiff", "bioio_ome_zarr")


def is_ome_zarr(path):
    """Whether the folder ``path`` is an OME-Zarr image (or a ``.zarr`` folder).

    OME-Zarr keeps its ``multiscales`` in ``.zattrs`` (Zarr 2, NGFF 0.4) or
    under ``ome`` in ``zarr.json`` (Zarr 3, NGFF 0.5).
    """
    path = Path(path)
    if not path.is_dir():
        return False
    if path.suffix.lower() == ".zarr":
        return True
    for name, key in ((".zattrs", None), ("zarr.json", "attributes")):
        try:
            attributes = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(attributes, dict):
            continue
        attributes = attributes.get(key, {}) if key else attributes
        if isinstance(attributes, dict):
            attributes = {**attributes, **(attributes.get("ome") or {})}
            if "multiscales" in attributes or "bioformats2raw.layout" in attributes:
                return True
    return False


def is_microscope_file(path):
    """Whether :func:`open_stack` reads ``path`` through bioio (from its name, or an OME-Zarr folder)."""
    path = Path(path)
    return path.suffix.lower() in MICROSCOPE_EXTENSIONS or is_ome_zarr(path)


def _microscope_kind(path):
    path = Path(path)
    if path.suffix.lower() in _MICROSCOPE_NAMES:
        return _MICROSCOPE_NAMES[path.suffix.lower()]
    if path.is_dir():
        return "OME-Zarr"
    return "OME-TIFF hyperstack"


class _QuietWhileOpening(logging.Filter):
    """bioio logs a warning for each plugin that turns a file down; what matters is raised."""

    def filter(self, record):
        return False


@contextmanager
def _quiet_bioio():
    quiet = _QuietWhileOpening()
    loggers = [logging.getLogger(name) for name in ("bioio", "bioio_base")]
    for logger in loggers:
        logger.addFilter(quiet)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(quiet)


def _open_bioimage(path, scene):
    bioio = _import("bioio", path, _microscope_kind(path), _FORMATS_EXTRA)
    unsupported = importlib.import_module("bioio_base.exceptions").UnsupportedFileFormatError
    with _reading(path, f"not a readable {_microscope_kind(path)} file"), _quiet_bioio():
        try:
            reader = _ome_zarr_reader(path) if path.is_dir() else None
            if reader is None:
                reader = bioio.BioImage.determine_plugin(os.fspath(path)).metadata.get_reader()
        except unsupported:
            plugin_name = _PLUGINS.get(Path(path).suffix.lower(), "bioio-ome-tiff")
            if importlib.util.find_spec(plugin_name.replace("-", "_")) is None:
                raise StackReadError(
                    f"{path}: reading it needs the bioio plugin {plugin_name}: {_FORMATS_EXTRA}"
                ) from None
            raise StackReadError(
                f"{path}: not a readable {_microscope_kind(path)} file (no bioio reader recognises it)"
            ) from None
        parameters = inspect.signature(reader.__init__).parameters.values()
        takes_chunks = any(p.name == "chunk_dims" or p.kind is p.VAR_KEYWORD for p in parameters)
        options = {"chunk_dims": list(_PLANE_CHUNK_DIMS)} if takes_chunks else {}
        image = bioio.BioImage(os.fspath(path), reader=reader, **options)
        if scene is not None:
            image.set_scene(scene)
        return image


def _ome_zarr_reader(path):
    """bioio-ome-zarr's reader for an OME-Zarr folder: bioio picks plugins by name, and
    an OME-Zarr folder need not be called ``.zarr``."""
    try:
        return importlib.import_module("bioio_ome_zarr").Reader
    except ImportError:
        raise StackReadError(f"{path}: reading it needs the bioio plugin bioio-ome-zarr: {_FORMATS_EXTRA}") from None


class Hyperstack:
    """One scene of a microscope file: its time points, channels and z planes, read lazily.

    Built by :func:`open_hyperstack`. Nothing but the metadata is read until
    a plane of a :meth:`stack` is indexed.

    Attributes
    ----------
    path : pathlib.Path
    dims : str
        Axis order of the file's data, ``"TCZYX"`` or ``"TCZYXS"`` (RGB samples).
    sizes : dict
        ``{"T": ..., "C": ..., "Z": ..., "Y": ..., "X": ...}``, with ``"S"`` for RGB samples.
    channel_names : list of str
    pixel_size_um : tuple of float or None
        ``(y, x)`` pixel size in µm, as in :class:`~napari_focus_stack.io.FrameSequence` metadata.
    z_step_um : float or None
    dtype : numpy.dtype
        As stored (frames come as uint8, uint16 or float32: see :func:`open_stack`).
    scenes : tuple of str
        Every scene in the file; :attr:`scene` is the index of this one.
    """

    def __init__(self, path, image):
        self.path = Path(path)
        self._image = image
        dims = image.dims
        self.dims = dims.order
        self.sizes = {axis: int(getattr(dims, axis)) for axis in self.dims}
        self.channel_names = [str(name) for name in image.channel_names]
        self.scenes = tuple(str(scene) for scene in image.scenes)
        self.scene = int(image.current_scene_index)
        self.dtype = np.dtype(image.dtype)
        physical = _physical_sizes_um(image)
        self.z_step_um = physical["Z"]
        self.pixel_size_um = None if physical["X"] is None else (physical["Y"] or physical["X"], physical["X"])
        reader = type(image.reader).__module__.split(".")[0]
        # A lock per file for the readers whose libraries are not known to be thread-safe.
        self._lock = None if reader in _THREAD_SAFE_READERS else threading.Lock()

    def __repr__(self):
        sizes = ", ".join(f"{axis}={size}" for axis, size in self.sizes.items())
        return f"Hyperstack({str(self.path)!r}, {sizes}, dtype={self.dtype.name})"

    def describe(self):
        """What the file holds besides one z-stack, e.g. ``"2 channels and 3 time points"``; "" when nothing."""
        parts = []
        if self.sizes["C"] > 1:
            parts.append(f"{self.sizes['C']} channels")
        if self.sizes["T"] > 1:
            parts.append(f"{self.sizes['T']} time points")
        if len(self.scenes) > 1:
            parts.append(f"{len(self.scenes)} scenes")
        return " and ".join(parts)

    def stack(self, time=0, channel=0, scene=None, *, max_frame_pixels=400_000_000):
        """The z-stack at ``time`` and ``channel``, one plane decoded per frame indexed.

        Parameters
        ----------
        time : int, optional
        channel : int or str, optional
            An index, or one of :attr:`channel_names`.
        scene : int or str, optional
            Another scene of the file (index or name); None for this one.
        max_frame_pixels : int, optional
            See :func:`napari_focus_stack.open_stack`.

        Returns
        -------
        frames : FrameSequence
            ``(Z, Y, X)``, or ``(Z, Y, X, 3)`` for RGB samples; its metadata
            holds ``z_step_um`` and ``pixel_size_um`` from the file, and
            ``hyperstack``: the time point, channel (index and name) and scene.
        """
        if scene is not None and scene not in (self.scene, self.scenes[self.scene]):
            return open_hyperstack(self.path, scene=scene).stack(time, channel, max_frame_pixels=max_frame_pixels)
        time = self._position("time point", time, self.sizes["T"])
        channel = self._channel_index(channel)
        depth, height, width = self.sizes["Z"], self.sizes["Y"], self.sizes["X"]
        _check_frame_pixels(self.path, height, width, max_frame_pixels)
        samples = self.sizes.get("S", 1)
        if samples not in (1, 3, 4):
            raise StackReadError(f"{self.path}: {samples} samples per pixel; reads gray or RGB (alpha is dropped)")
        order = "ZYXS" if "S" in self.sizes else "ZYX"
        with _reading(self.path, f"not a readable {_microscope_kind(self.path)} file"):
            data = self._image.get_image_dask_data(order, T=time, C=channel)
        dtype = _output_dtype(self.dtype, self.path)
        several = self.sizes["T"] > 1 or self.sizes["C"] > 1
        position = f"t={time},c={channel}," if several else ""
        metadata = {
            "z_step_um": self.z_step_um,
            "pixel_size_um": self.pixel_size_um,
            "names": [f"{self.path.name}[{position}z={z}]" for z in range(depth)],
            "paths": [str(self.path)] * depth,
            "source": str(self.path),
            "hyperstack": {
                "time": time,
                "channel": channel,
                "channel_name": self.channel_names[channel] if channel < len(self.channel_names) else None,
                "scene": self.scenes[self.scene] if self.scenes else None,
            },
        }
        loaders = [partial(self._plane, data, z) for z in range(depth)]
        frame_shape = (height, width) if samples == 1 else (height, width, 3)
        return FrameSequence(loaders, frame_shape, dtype, metadata)

    def _plane(self, data, z):
        with _reading(self.path, f"cannot decode z plane {z}"), self._locked():
            # Synchronous: the plane is one chunk, and callers decode frames in their own threads.
            plane = np.asarray(data[z].compute(scheduler="synchronous"))
        return plane[..., :3] if plane.ndim == 3 else plane

    @contextmanager
    def _locked(self):
        if self._lock is None:
            yield
            return
        with self._lock:
            yield

    def _position(self, what, index, size):
        try:
            index = int(index)
        except (TypeError, ValueError):
            raise StackReadError(f"{self.path}: {what} {index!r} is not a number") from None
        if not 0 <= index < size:
            raise StackReadError(f"{self.path}: {what} {index} out of range: the file has {size} (0 to {size - 1})")
        return index

    def _channel_index(self, channel):
        if isinstance(channel, str):
            if channel not in self.channel_names:
                raise StackReadError(
                    f"{self.path}: no channel named {channel!r}; it has {', '.join(self.channel_names)}"
                )
            return self.channel_names.index(channel)
        return self._position("channel", channel, self.sizes["C"])


def _physical_sizes_um(image):
    """``{"Z": µm, "Y": µm, "X": µm}`` (None where unknown) of a BioImage.

    bioio gives sizes in the file's units: the readers of CZI, ND2 and LIF
    convert to µm; OME-Zarr gives its axes' units and OME-TIFF its OME
    metadata's, converted here.
    """
    sizes = image.physical_pixel_sizes
    units = _ome_tiff_units(image)
    result = {}
    for axis in "ZYX":
        value = getattr(sizes, axis)
        if value is None or not math.isfinite(float(value)) or float(value) <= 0:
            result[axis] = None
            continue
        unit = getattr(image.dimension_properties, axis).unit
        if unit is not None:
            result[axis] = float((float(value) * unit).to("micrometer").magnitude)
        else:
            scale = units.get(axis, 1.0)
            result[axis] = None if scale is None else float(value) * scale
    return result


def _ome_tiff_units(image):
    """µm per unit of each axis from an OME-TIFF's metadata; empty for other readers."""
    if not type(image.reader).__module__.startswith("bioio_ome_tiff"):
        return {}
    try:
        pixels = image.ome_metadata.images[image.current_scene_index].pixels
    except (AttributeError, IndexError):
        return {}
    units = {}
    for axis in "ZYX":
        unit = getattr(pixels, f"physical_size_{axis.lower()}_unit", None)
        units[axis] = _unit_in_um(getattr(unit, "value", unit)) if unit is not None else 1.0
    return units


def open_hyperstack(path, *, scene=None):
    """Open a microscope file (CZI, ND2, LIF, OME-Zarr, OME-TIFF) through bioio.

    Parameters
    ----------
    path : str or os.PathLike
    scene : int or str, optional
        The scene to open (index or name); the first when None.

    Returns
    -------
    Hyperstack

    Raises
    ------
    StackReadError
        bioio (the ``[formats]`` extra) or the file's reader plugin is not
        installed, or the file cannot be read.
    """
    path = Path(os.path.expanduser(os.fspath(path)))
    if not path.exists():
        raise StackReadError(f"{path}: no such file or folder")
    image = _open_bioimage(path, scene)
    with _reading(path, f"not a readable {_microscope_kind(path)} file"):
        hyperstack = Hyperstack(path, image)
    for axis in "ZYX":
        if axis not in hyperstack.sizes:
            raise StackReadError(f"{path}: no {axis} axis (axes {hyperstack.dims}); reads z-stacks")
    return hyperstack


def open_microscope_stack(path, max_frame_pixels=400_000_000, *, tiff_error=None):
    """The one z-stack of a microscope file, for :func:`open_stack`.

    ``tiff_error`` is why the plain TIFF reader turned an OME-TIFF down; it
    is what the user reads when bioio is not installed.
    """
    try:
        hyperstack = open_hyperstack(path)
    except StackReadError as exc:
        if tiff_error is not None and isinstance(exc, MissingExtraError):  # bioio itself is missing
            raise StackReadError(f"{tiff_error}; or open_hyperstack() picks one after {_FORMATS_EXTRA}") from None
        raise
    held = hyperstack.describe()
    if held:
        raise SeveralStacksError(
            f"{path}: has {held}; focus stacking takes one z-stack: "
            "napari_focus_stack.open_hyperstack(path).stack(time=, channel=) picks one"
        )
    if hyperstack.sizes["Z"] < 2:
        raise StackReadError(f"{path}: only one z plane; focus stacking needs at least 2 frames")
    return hyperstack.stack(max_frame_pixels=max_frame_pixels)
