"""Parameters, progress events and results passed between the engine and its callers."""

from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

METHODS = ("weighted", "depthmap", "pyramid")
#: Motion models for alignment (engine/align.py), "none" to skip it.
ALIGN_MODES = ("similarity", "affine", "translation", "none")
DEVICES = ("auto", "cpu", "gpu")

#: Documented parameter ranges (inclusive); the CLI and the widget use them too.
RANGES = {"radius": (1, 20), "smoothing": (1, 10), "scale_factor": (1, 4)}

DEFAULTS = {
    "radius": 8,
    "smoothing": 4,
    "scale_factor": 1,
    "method": "weighted",
    "align": "similarity",
    "device": "auto",
}


class StackCancelled(Exception):
    """Raised when a run is cancelled between two frames."""


@dataclass(frozen=True)
class StackParams:
    """Validated parameters of one focus-stacking run."""

    radius: int = DEFAULTS["radius"]
    smoothing: int = DEFAULTS["smoothing"]
    scale_factor: int = DEFAULTS["scale_factor"]
    method: str = DEFAULTS["method"]
    align: str = DEFAULTS["align"]
    device: str = DEFAULTS["device"]
    reference: Optional[int] = None

    def __post_init__(self):
        for name, (lo, hi) in RANGES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                if isinstance(value, float) and value.is_integer():
                    object.__setattr__(self, name, int(value))
                    value = int(value)
                else:
                    raise ValueError(
                        f"{name} must be a whole number from {lo} to {hi}, got {value!r}"
                    )
            if not lo <= value <= hi:
                raise ValueError(f"{name} must be from {lo} to {hi}, got {value}")
            object.__setattr__(self, name, int(value))
        if self.method not in METHODS:
            raise ValueError(
                f"method must be one of {', '.join(METHODS)}, got {self.method!r}"
            )
        if self.align not in ALIGN_MODES:
            raise ValueError(
                f"align must be one of {', '.join(ALIGN_MODES)}, got {self.align!r}"
            )
        ref = self.reference
        if ref is not None and (isinstance(ref, bool) or not isinstance(ref, (int, np.integer)) or ref < 0):
            raise ValueError(f"reference must be a frame index (0, 1, ...) or None, got {ref!r}")
        device = str(self.device)
        if not (device in DEVICES or device.startswith("gpu:")):
            raise ValueError(
                f"device must be 'auto', 'cpu', 'gpu', 'gpu:N' or 'gpu:all', got {self.device!r}"
            )

    def as_dict(self) -> dict:
        return asdict(self)


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
    depth : ndarray of float32
        Sub-slice depth in slice units, 0 = first frame.
    confidence : ndarray of float32
        In [0, 1]: how clearly one slice stood out as the sharpest.
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
    depth: np.ndarray
    confidence: np.ndarray
    params: StackParams
    device: str = "cpu"
    metadata: dict = field(default_factory=dict)
    transforms: Optional[np.ndarray] = None
    partial_coverage: Optional[np.ndarray] = None
    timings: dict = field(default_factory=dict)

    @property
    def depth_um(self) -> Optional[np.ndarray]:
        """Depth in µm when the z step is known, else None."""
        step = self.metadata.get("z_step_um")
        return None if step is None else self.depth * np.float32(step)

    def provenance(self) -> dict[str, Any]:
        """Parameters and source facts, as stored in saved files' metadata."""
        info = {"software": "napari-focus-stack", **self.params.as_dict(), "device": self.device}
        for key in ("z_step_um", "pixel_size_um", "n_frames", "alignment"):
            if self.metadata.get(key) is not None:
                info[key] = self.metadata[key]
        if self.transforms is not None:
            info["transforms"] = self.transforms.tolist()
        return info
