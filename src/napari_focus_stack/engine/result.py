"""Parameters, progress events and results passed between the engine and its callers."""

import math
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

METHODS = ("weighted", "depthmap", "pyramid")
#: Motion models for alignment (engine/align/), "none" to skip it.
ALIGN_MODES = ("similarity", "affine", "translation", "none")
DEVICES = ("auto", "cpu", "gpu")

#: Documented parameter ranges (inclusive); the CLI and the widget use them too.
RANGES = {"radius": (1, 20), "smoothing": (1, 10), "scale_factor": (1, 4)}

DEFAULTS = {
    "radius": 2,
    "smoothing": 1,
    "scale_factor": 1,
    "method": "weighted",
    "align": "similarity",
    "device": "auto",
}


class StackCancelled(Exception):
    """Raised when a run is cancelled between two frames."""


@dataclass(frozen=True)
class StackParams:
    """Validated parameters of one focus-stacking run: the one place they are declared.

    Every caller (the Python API, channels, batch and Dask, the command line,
    the napari widgets) builds or passes this object, most often through
    :meth:`of`, rather than listing the parameters again. What each one means
    is documented in :func:`napari_focus_stack.focus_stack`.

    >>> StackParams.of(radius=4, method="pyramid").radius
    4
    >>> StackParams.of(StackParams(radius=4), smoothing=3) == StackParams(radius=4, smoothing=3)
    True
    >>> StackParams.of(radus=4)
    Traceback (most recent call last):
    ...
    TypeError: unknown parameter 'radus'; the parameters are radius, smoothing, scale_factor, method, align, device, reference
    """

    radius: int = DEFAULTS["radius"]
    smoothing: int = DEFAULTS["smoothing"]
    scale_factor: int = DEFAULTS["scale_factor"]
    method: str = DEFAULTS["method"]
    align: str = DEFAULTS["align"]
    device: str = DEFAULTS["device"]
    reference: int | None = None

    def __post_init__(self):
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                if isinstance(value, float) and value.is_integer():
                    object.__setattr__(self, name, int(value))
                    value = int(value)
                else:
                    raise ValueError(f"{name} must be a whole number from {lo} to {hi}, got {value!r}")
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be from {lo} to {hi}, got {value}")
            object.__setattr__(self, name, int(value))
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.align not in ALIGN_MODES:
            raise ValueError(f"align must be one of {', '.join(ALIGN_MODES)}, got {self.align!r}")
        ref = self.reference
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, (int, np.integer)) or ref < 0):
            raise ValueError(f"reference must be a frame index (0, 1, ...) or None, got {ref!r}")
        check_device(self.device)

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def names(cls) -> tuple:
        """The parameters' names, in their order."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def of(cls, params=None, **overrides) -> "StackParams":
        """``params`` with ``overrides`` applied, checked.

        ``params`` is a :class:`StackParams`, a mapping of parameter names to
        values, or None for the defaults. An unknown name is a TypeError, a
        bad value a ValueError (both name the parameter).
        """
        if params is None:
            base = {}
        elif isinstance(params, StackParams):
            if not overrides:
                return params
            base = params.as_dict()
        elif isinstance(params, Mapping):
            base = dict(params)
        else:
            raise TypeError(f"params must be a StackParams, a dict or None, got {type(params).__name__}")
        values = {**base, **overrides}
        unknown = [name for name in values if name not in cls.names()]
        if unknown:
            raise TypeError(f"unknown parameter {unknown[0]!r}; the parameters are {', '.join(cls.names())}")
        return cls(**values)


def check_device(device):
    """Refuse a device that is not ``auto``, ``cpu``, ``gpu``, ``gpu:N`` (N = 0, 1, ...) or ``gpu:all``.

    Only the spelling is checked here; whether that GPU exists is the backend's to say.

    >>> check_device("gpu:1")
    >>> check_device("gpu:-1")
    Traceback (most recent call last):
    ...
    ValueError: device must be 'auto', 'cpu', 'gpu', 'gpu:N' or 'gpu:all', got 'gpu:-1' (N is a GPU number: 0, 1, ...)
    """
    text = str(device).lower()
    kind, colon, index = text.partition(":")
    if text in DEVICES or (kind == "gpu" and colon and (index == "all" or (index.isdigit() and index.isascii()))):
        return
    hint = " (N is a GPU number: 0, 1, ...)" if kind == "gpu" else ""
    raise ValueError(f"device must be 'auto', 'cpu', 'gpu', 'gpu:N' or 'gpu:all', got {device!r}{hint}")


_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 2**10,
    "kib": 2**10,
    "m": 2**20,
    "mb": 2**20,
    "mib": 2**20,
    "g": 2**30,
    "gb": 2**30,
    "gib": 2**30,
    "t": 2**40,
    "tb": 2**40,
    "tib": 2**40,
}
_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*)\s*")


def parse_size(text):
    """Bytes from a size such as ``"2GB"``, ``"512MiB"`` or ``"1000000"`` (units of 1024).

    >>> parse_size("2GB"), parse_size("1.5k")
    (2147483648, 1536)
    """
    match = _SIZE.fullmatch(str(text).lower())
    if match is None or match[2] not in _SIZE_UNITS:
        raise ValueError(f"not a memory size: {text!r} (for example 2GB or 512MB)")
    size = int(float(match[1]) * _SIZE_UNITS[match[2]])
    if size < 1:
        raise ValueError(f"memory size {text!r} is less than one byte (for example 2GB or 512MB)")
    return size


def check_max_memory(max_memory):
    """A memory budget as whole bytes (at least 1), or None for the default.

    Takes a number of bytes or a size string (``"2GB"``); refuses anything
    else, so that 0 or a typo never silently means "the default".

    >>> check_max_memory("1GB"), check_max_memory(2e9), check_max_memory(None)
    (1073741824, 2000000000, None)
    >>> check_max_memory(0)
    Traceback (most recent call last):
    ...
    ValueError: max_memory must be at least 1 byte, got 0
    """
    if max_memory is None:
        return None
    if isinstance(max_memory, str):
        return parse_size(max_memory)
    if isinstance(max_memory, bool) or not isinstance(max_memory, (int, float, np.integer, np.floating)):
        raise ValueError(
            f"max_memory must be a number of bytes or a size such as '2GB', got {type(max_memory).__name__}"
        )
    if not math.isfinite(max_memory):
        raise ValueError(f"max_memory must be a finite number of bytes, got {max_memory!r}")
    if max_memory < 1:
        raise ValueError(f"max_memory must be at least 1 byte, got {max_memory!r}")
    return int(max_memory)


@dataclass(frozen=True)
class Progress:
    """One progress event: ``done`` of ``total`` steps of ``stage`` are finished."""

    stage: str
    done: int
    total: int


@dataclass
class StackResult:
    """What a focus-stacking run produces.

    Attributes
    ----------
    fused : ndarray
        All-in-focus image, ``(Y*s, X*s[, C])`` with ``s = scale_factor``, in
        the input's dtype.
    depth : ndarray of float32 or None
        Sub-slice depth in slice units, 0 = first frame; None when the run
        was asked for the fused image only (``maps=False``).
    confidence : ndarray of float32 or None
        In [0, 1]: how clearly one slice stood out as the sharpest; None
        with the depth.
    params : StackParams
        The parameters used.
    device : str
        Where it ran (``"cpu"`` or ``"gpu:N"``).
    metadata : dict
        What the source said (``z_step_um``, ``pixel_size_um``, ``names``...).
    transforms : ndarray or None
        ``(Z, 3, 3)`` per-frame transforms found by alignment (``transforms[k]``
        maps reference-frame pixel coordinates ``(x, y, 1)`` to frame ``k``'s;
        in input pixels), None without alignment.
    partial_coverage : ndarray of bool or None
        Output pixels that not every aligned frame covers (they were fused
        from the frames that do); None when every frame covers everything.
    timings : dict
        Seconds spent per stage.
    """

    fused: np.ndarray
    depth: np.ndarray | None
    confidence: np.ndarray | None
    params: StackParams
    device: str = "cpu"
    metadata: dict = field(default_factory=dict)
    transforms: np.ndarray | None = None
    partial_coverage: np.ndarray | None = None
    timings: dict = field(default_factory=dict)

    def mark_unfocused(self, min_confidence=None) -> "StackResult":
        """Set the depth of pixels with no usable focus signal to NaN (see :attr:`valid`).

        Their depth was a guess (a flat, textureless or dark area); marked, a
        viewer can show them transparent and an analysis can leave them out.
        ``metadata["unfocused"]`` says what share of pixels was marked.
        Returns this result.
        """
        self._need_maps("mark unfocused depth")
        mask = ~self.valid_mask(min_confidence)
        self.depth = np.where(mask, np.float32(np.nan), self.depth).astype(np.float32)
        self.metadata["unfocused"] = float(mask.mean())
        return self

    def valid_mask(self, min_confidence=None) -> np.ndarray:
        """Pixels whose depth rests on a focus signal: where the confidence around them
        (the root of its Gaussian-weighted mean square, :func:`~.depth.unfocused_mask`)
        reaches ``min_confidence`` (default :data:`~.depth.MIN_CONFIDENCE`, 0.1)."""
        from .depth import MIN_CONFIDENCE, unfocused_mask

        self._need_maps("tell where the depth is valid")
        least = (MIN_CONFIDENCE if min_confidence is None else float(min_confidence)) ** 2
        return ~unfocused_mask(self.confidence, least=least)

    @property
    def valid(self) -> np.ndarray:
        """:meth:`valid_mask` at the default threshold: where the depth is not a guess."""
        return self.valid_mask()

    @property
    def depth_um(self) -> np.ndarray | None:
        """Depth in µm when the z step is known (and a depth was made), else None."""
        step = self.metadata.get("z_step_um")
        return None if step is None or self.depth is None else self.depth * np.float32(step)

    @property
    def has_maps(self) -> bool:
        """Whether the run made a depth and a confidence map (not with ``maps=False``)."""
        return self.depth is not None and self.confidence is not None

    def _need_maps(self, what):
        if not self.has_maps:
            raise ValueError(f"cannot {what}: this result has no depth or confidence map (it was run with maps=False)")

    def provenance(self) -> dict[str, Any]:
        """Parameters and source facts, as stored in saved files' metadata."""
        info = {"software": "napari-focus-stack", **self.params.as_dict(), "device": self.device}
        for key in ("z_step_um", "pixel_size_um", "n_frames", "alignment"):
            if self.metadata.get(key) is not None:
                info[key] = self.metadata[key]
        if self.transforms is not None:
            info["transforms"] = self.transforms.tolist()
        return info

    #: What each output role holds.
    ROLES = {"fused image": "fused", "depth map": "depth", "confidence map": "confidence"}

    def output_images(self, roles, **facts) -> dict:
        """``{role: (image, metadata)}`` to save for each of ``roles`` ("fused image", "depth map", "confidence map").

        The one description of what a saved output holds, for the command
        line, batch and Dask alike: every image carries :meth:`provenance`
        and ``facts`` (such as the stack's name); the maps say which they
        are (``"content"``); a fused image of several channels is ``(C, Y,
        X)``, saved as one multi-channel TIFF (``"axes": "CYX"``) that names
        its channels.
        """
        info = {**self.provenance(), **facts}
        channels = self.metadata.get("channels")
        images = {}
        for role in roles:
            if role != "fused image" and getattr(self, self.ROLES[role]) is None:
                self._need_maps(f"save the {role}")
            if role == "fused image":
                metadata = info if not channels else {**info, "axes": "CYX", "channels": channels}
            else:
                metadata = {**info, "content": role}
            images[role] = (getattr(self, self.ROLES[role]), metadata)
        return images
