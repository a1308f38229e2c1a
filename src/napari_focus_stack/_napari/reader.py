"""napari reader: a folder or list of frames, or a multi-page TIFF, as one z-stack layer.

A folder or list is claimed when it holds image files; what is wrong with it
(frames of different sizes, a corrupt file) is then told to the user in a
notification, naming the file. A single file is claimed only when it is a
TIFF with several frames, so napari's own reader keeps single images.
"""

import os
from pathlib import Path

from napari.utils.notifications import show_error

from ..io import (
    IMAGE_EXTENSIONS,
    SIDECAR_EXTENSIONS,
    TIFF_EXTENSIONS,
    StackReadError,
    open_stack,
    read_stack,
)

#: What a reader returns when it took the path but opened no layer: npe2's
#: "null layer" sentinel, so napari adds nothing and shows no second error.
NO_LAYERS = [(None,)]


def _is_image_file(path) -> bool:
    path = Path(path)
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _folder_has_images(folder) -> bool:
    """Whether ``folder`` holds an image file; entries that cannot be examined
    (a symbolic link that loops, a file removed meanwhile) are passed over."""
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return False
    for entry in entries:
        try:
            if _is_image_file(entry.path) and entry.is_file():
                return True
        except OSError:
            continue
    return False


def _is_multi_frame_tiff(path) -> bool:
    if Path(path).suffix.lower() not in TIFF_EXTENSIONS:
        return False
    try:
        return len(open_stack(path)) > 1
    except (StackReadError, OSError):
        return False


def _claims(path) -> bool:
    """Whether ``path`` (str or list of str) looks like a focus stack, from names and headers."""
    if isinstance(path, (list, tuple)):
        names = [p for p in path if Path(p).suffix.lower() not in SIDECAR_EXTENSIONS]
        return len(names) > 1 and all(_is_image_file(p) for p in names)
    if os.path.isdir(path):
        return _folder_has_images(path)
    return _is_multi_frame_tiff(path)


def napari_get_reader(path):
    """Return :func:`read_focus_stack` if ``path`` looks like a focus stack, else None.

    Never raises: napari asks every reader about every path.
    """
    try:
        return read_focus_stack if _claims(path) else None
    except Exception:  # a reader that raises here breaks napari's open dialog
        return None


def stack_name(path) -> str:
    """Layer name: the folder's name, the file's stem, or the common folder of a list."""
    if isinstance(path, (list, tuple)):
        return Path(os.path.commonpath([os.path.abspath(p) for p in path])).name or "stack"
    path = Path(path)
    return path.name if path.is_dir() else path.stem


def layer_kwargs(name, metadata, rgb) -> dict:
    """``add_image`` arguments: physical scale and units where the files give them."""
    kwargs = {"name": name, "rgb": rgb, "axis_labels": ("z", "y", "x"), "metadata": dict(metadata)}
    pixel_size, z_step = metadata.get("pixel_size_um"), metadata.get("z_step_um")
    if pixel_size is not None:
        kwargs["scale"] = (z_step or 1.0, *pixel_size)
        kwargs["units"] = ("µm" if z_step else "pixel", "µm", "µm")
    return kwargs


def read_focus_stack(path):
    """Read ``path`` into one image layer ``(Z, Y, X[, 3])``.

    On a stack that cannot be read, show why and open nothing.
    """
    source = list(path) if isinstance(path, (list, tuple)) else path
    try:
        data, metadata = read_stack(source)
    except StackReadError as exc:
        show_error(f"Focus Stack could not open {stack_name(path)}: {exc}")
        return NO_LAYERS
    except OSError as exc:  # the file went away or became unreadable after napari asked
        where = f" ({exc.filename})" if exc.filename else ""
        show_error(f"Focus Stack could not open {stack_name(path)}: {exc.strerror or exc}{where}")
        return NO_LAYERS
    except MemoryError:
        show_error(f"Focus Stack could not open {stack_name(path)}: not enough memory for the whole stack")
        return NO_LAYERS
    rgb = data.ndim == 4
    return [(data, layer_kwargs(stack_name(path), metadata, rgb), "image")]
