"""Write images and sets of outputs, atomically: :func:`save_image`, :class:`OutputSet`.

Every file is written under a temporary name beside its path and renamed
into place, so a path never holds half a file; an :class:`OutputSet` renames
several outputs together, all or nothing. TIFF keeps any dtype and stores the
run's metadata as JSON (:func:`read_metadata` reads it back); PNG, JPEG, BMP
and WebP are encoded by OpenCV.
"""

import errno
import glob
import json
import os
import secrets
import signal
import stat
import threading
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import tifffile

from .frames import _OBJECT_REPR, _quiet_tifffile
from .tiff import TIFF_EXTENSIONS

#: Extensions :func:`save_image` writes.
SAVE_EXTENSIONS = (".tif", ".tiff", ".png", ".jpg", ".jpeg", ".bmp", ".webp")
_EIGHT_BIT_EXTENSIONS = frozenset({".jpg", ".jpeg", ".bmp", ".webp"})
_JPEG_QUALITY = 95


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
        raise ValueError(f"{path}: cannot save {extension!r} files; supported: {', '.join(SAVE_EXTENSIONS)}")
    return write


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
    raise ValueError(f"{extension} stores 8 bits: convert {image.dtype.name} to uint8 first, or save as .tif")
