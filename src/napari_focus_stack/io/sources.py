"""Where a stack comes from: folders, lists and globs of frames, multi-frame files, arrays.

:func:`open_stack` lists the frames of a source (natural order, hidden and
sidecar files skipped), has each file's reader check its header
(:mod:`.raster`, :mod:`.tiff`, :mod:`.raw`, :mod:`.microscope`) and checks
that the frames agree; :func:`read_stack` loads the whole stack once it
fits in memory. The readers never import this module.
"""

import glob
import os
import re
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path, PurePath

import numpy as np

from ..engine.backend import host_available_memory
from .frames import FrameSequence, StackReadError, _check_not_empty, _FileFrames, _output_dtype
from .microscope import is_microscope_file, is_ome_zarr, open_microscope_stack
from .raster import _read_pil_header_frame
from .raw import RAW_EXTENSIONS, read_raw_header
from .tiff import TIFF_EXTENSIONS, _OmeHyperstackError, _read_tiff_frames
from .writing import read_metadata

#: Extensions (lower case) of the frame files that are read.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}) | RAW_EXTENSIONS
#: Files a folder may hold beside its frames; skipped silently, as are hidden files.
SIDECAR_EXTENSIONS = frozenset({".txt", ".md", ".json", ".xml", ".csv", ".ini", ".log", ".xmp", ".db"})
_DIGITS = re.compile(r"(\d+)", re.ASCII)


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
        if is_ome_zarr(path):
            return open_microscope_stack(path, max_frame_pixels)
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


def _list_folder(folder):
    files = [path for path in folder.iterdir() if path.is_file()]
    paths = _image_files(files)
    if not paths:
        raise StackReadError(f"No image files found in {folder} (reads {_extension_list(IMAGE_EXTENSIONS)})")
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
    return f"{path}: not a supported image file (reads {_extension_list(IMAGE_EXTENSIONS)}); move it out of the stack"


def _extension_list(extensions):
    return ", ".join(sorted(extensions))


def _common_folder(paths):
    try:
        return os.path.commonpath([str(path.parent) for path in paths])
    except ValueError:  # different drives
        return str(paths[0].parent)


def _open_paths(paths, source, max_frame_pixels):
    """Open one multi-frame file, or several files of one frame each."""
    if len(paths) == 1 and is_microscope_file(paths[0]):
        return open_microscope_stack(paths[0], max_frame_pixels)
    for path in paths:
        if is_microscope_file(path):
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
            return open_microscope_stack(paths[0], max_frame_pixels, tiff_error=exc)
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
        raise StackReadError(f"{source}: only one frame ({names[0]}); focus stacking needs at least 2 frames")
    metadata = {**frames.physical, "names": names, "paths": paths, "source": source}
    dtype = _output_dtype(frames.dtype, paths[0])
    return FrameSequence(frames.loaders, frames.shape, dtype, metadata)


def _open_array(array):
    label = f"array of shape {tuple(array.shape)}"
    if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3, 4)):
        raise StackReadError(f"{label}: expected (Z, Y, X) or (Z, Y, X, C) with C = 1, 3 or 4 (alpha dropped)")
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


def _read_file_frames(path, max_frame_pixels):
    _check_not_empty(path)
    if path.suffix.lower() in TIFF_EXTENSIONS:
        return _read_tiff_frames(path, max_frame_pixels)
    if path.suffix.lower() in RAW_EXTENSIONS:
        return read_raw_header(path, max_frame_pixels)
    return _read_pil_header_frame(path, max_frame_pixels)


def read_image(path, *, max_frame_pixels=400_000_000):
    """One image (a fused image or a map a run wrote, or any single frame) and its metadata.

    Reads what :func:`open_stack` reads (EXIF orientation applied, colour as
    RGB); the metadata is :func:`read_metadata`'s for TIFF files, else empty.
    Raises :class:`StackReadError` for a file that is not one readable image.

    Examples
    --------
    >>> import tempfile
    >>> from napari_focus_stack.io import save_image
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
