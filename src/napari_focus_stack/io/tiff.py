"""TIFF frames (plain, ImageJ hyperstack, OME): tifffile reads the headers and pages.

A multi-page TIFF is one stack; its z step and pixel size come from the OME
metadata, the ImageJ description or the resolution tags. An OME-TIFF that
holds more than one z-stack is left to bioio (:mod:`.microscope`).
"""

import xml.etree.ElementTree as ElementTree
from functools import partial

import cv2
import numpy as np
import tifffile

from .frames import StackReadError, _check_frame_pixels, _FileFrames, _reading, _unit_in_um

TIFF_EXTENSIONS = frozenset({".tif", ".tiff"})


_TIFF_ALPHA_SAMPLES = (1, 2)  # EXTRASAMPLE ASSOCALPHA, UNASSALPHA
_TIFF_RESOLUTION_UNITS_IN_UM = {3: 1e4, 4: 1e3, 5: 1.0}  # centimeter, millimeter, micrometer


class _OmeHyperstackError(StackReadError):
    """An OME-TIFF holding more than one z-stack (time points, channels): bioio reads it."""


def _read_tiff_frames(path, max_frame_pixels):
    with _reading(path, "not a readable TIFF"), tifffile.TiffFile(path) as tif:
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
            if tif.is_ome:  # time points or channels: bioio picks one stack (microscope.py)
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
            f"{path}: {color} colour samples per pixel ({page.photometric.name}); reads gray or RGB (alpha is dropped)"
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
        raise StackReadError(f"{path}: has {channels} channels; reads 1 (gray) or 3 (RGB): split the channels first")
    z_axes = [axis for axis in stack_axes if axis != "C"]
    if len(z_axes) > 1:
        raise StackReadError(f"{path}: has several stack axes ({''.join(z_axes)}); reads one z axis")
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
    with _reading(path, f"cannot decode TIFF page {keys[0]}"), tifffile.TiffFile(path) as tif:
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
