"""What every stack of a batch is processed with (:class:`BatchOptions`) and where its outputs go.

Output names come from stack names through :func:`safe_output_name`, so a
folder or regex group can never place a file outside the output folder.
"""

import re
import unicodedata
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from ..engine.result import StackParams, check_max_memory
from ..io import SAVE_EXTENSIONS, path_key

#: Output formats of the fused image, by extension without the dot.
OUTPUT_FORMATS = tuple(extension[1:] for extension in SAVE_EXTENSIONS)
#: Longest output name kept from a stack name (file systems allow 255 bytes).
MAX_NAME_LENGTH = 100

_UNSAFE_RUNS = re.compile(r"[^\w.-]+")
_WINDOWS_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
)


class BatchPlanError(ValueError):
    """Stacks that cannot be written as asked: the message says which and why."""


@dataclass(frozen=True, init=False)
class BatchOptions:
    """What every stack of a batch is processed with.

    ``BatchOptions(params, format="png", depth=True)``, or with the engine
    parameters as keywords: ``BatchOptions(radius=4, depth=True)``.

    Parameters
    ----------
    params : StackParams, optional
        The engine parameters (as for :func:`napari_focus_stack.focus_stack`);
        ``radius=``, ``method=``... given as keywords override its values.
    depth_from : "all" or int
        For microscope files of several channels: where their one shared
        depth comes from (:func:`napari_focus_stack.focus_stack_channels`).
    format : str
        Extension of the fused image, one of :data:`OUTPUT_FORMATS`.
    depth, confidence : bool
        Also write ``<name>_depth.tif`` / ``<name>_confidence.tif`` (float32).
    max_memory : int, optional
        Working-memory budget per stack in bytes.
    threads_per_stack : int, optional
        OpenCV threads while a stack is processed; None keeps OpenCV's setting.
    """

    params: StackParams
    depth_from: object = "all"
    format: str = "tif"
    depth: bool = False
    confidence: bool = False
    max_memory: int | None = None
    threads_per_stack: int | None = None

    def __init__(
        self,
        params=None,
        *,
        depth_from="all",
        format="tif",
        depth=False,
        confidence=False,
        max_memory=None,
        threads_per_stack=None,
        **engine,
    ):
        put = partial(object.__setattr__, self)
        put("params", StackParams.of(params, **engine))  # raises ValueError for a parameter out of range
        put("max_memory", check_max_memory(max_memory))
        fmt = str(format).lower().lstrip(".")
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"format must be one of {', '.join(OUTPUT_FORMATS)}, got {format!r}")
        put("format", fmt)
        text = str(depth_from).strip().lower()
        if text != "all" and not text.isdigit():
            raise ValueError(f"depth_from must be 'all' or a channel index, got {depth_from!r}")
        put("depth_from", text if text == "all" else int(text))
        if threads_per_stack is not None and int(threads_per_stack) < 1:
            raise ValueError(f"threads_per_stack must be at least 1, got {threads_per_stack}")
        put("threads_per_stack", threads_per_stack)
        put("depth", depth)
        put("confidence", confidence)

    def recorded(self):
        """The parameters the outputs depend on, as stored in each manifest.

        Device, memory budget and threads change how a stack is computed,
        not what comes out, so they are left out. (Manifests of earlier
        versions recorded the same dict, ``reference`` always None.)
        """
        params = self.params.as_dict()
        del params["device"]
        if self.depth_from != "all":  # only multichannel microscope files use it
            params["depth_from"] = self.depth_from
        return params


@dataclass(frozen=True)
class StackOutputs:
    """Where one stack's files go; ``depth`` and ``confidence`` are None when not asked for."""

    fused: Path
    depth: Path | None
    confidence: Path | None
    manifest: Path

    def images(self):
        """``{role: path}`` of the images to write, fused image last."""
        roles = {"depth map": self.depth, "confidence map": self.confidence, "fused image": self.fused}
        return {role: path for role, path in roles.items() if path is not None}


# --- Output names and paths ------------------------------------------------------


def safe_output_name(name):
    """A file name made from a stack name that stays inside the output folder.

    Path separators and any character other than letters, digits, ``.``,
    ``-`` and ``_`` become ``_``; leading and trailing dots, dashes and
    underscores go (no hidden files, no ``..``, no names read as options);
    Windows device names get a trailing ``_``; the result is cut to
    :data:`MAX_NAME_LENGTH` characters.

    Raises
    ------
    ValueError
        Nothing usable is left (e.g. ``".."`` or ``""``).

    Examples
    --------
    >>> safe_output_name("plate 1/A01"), safe_output_name("/abs/path"), safe_output_name("NUL")
    ('plate_1_A01', 'abs_path', 'NUL_')
    """
    text = unicodedata.normalize("NFC", str(name))
    cleaned = _UNSAFE_RUNS.sub("_", text).strip("._-")[:MAX_NAME_LENGTH].rstrip("._-")
    if not cleaned:
        raise ValueError(f"stack name {name!r} gives no usable file name")
    if cleaned.split(".")[0].upper() in _WINDOWS_DEVICE_NAMES:
        cleaned += "_"
    return cleaned


def stack_outputs(stack, outdir, options):
    """The :class:`StackOutputs` of ``stack`` in ``outdir``."""
    outdir = Path(outdir)
    base = safe_output_name(stack.name)
    return StackOutputs(
        fused=outdir / f"{base}.{options.format}",
        depth=outdir / f"{base}_depth.tif" if options.depth else None,
        confidence=outdir / f"{base}_confidence.tif" if options.confidence else None,
        manifest=outdir / f"{base}.json",
    )


def plan_outputs(stacks, outdir, options):
    """Output paths of every stack, checked before anything is written.

    Raises
    ------
    BatchPlanError
        A stack name gives no usable file name, two stacks would write the
        same file (compared ignoring case, as on macOS and Windows), an
        output would replace an input, or ``outdir`` holds input frames.
    """
    outdir = Path(outdir)
    input_folders = {path_key(Path(path).resolve().parent) for stack in stacks for path in stack.paths}
    if path_key(outdir) in input_folders:
        raise BatchPlanError(f"the output folder {outdir} holds input frames; choose another one")
    inputs = {path_key(path) for stack in stacks for path in stack.paths}
    owners = {}
    plans = []
    for stack in stacks:
        try:
            outputs = stack_outputs(stack, outdir, options)
        except ValueError as exc:
            raise BatchPlanError(str(exc)) from None
        for path in (*outputs.images().values(), outputs.manifest):
            key = path.name.casefold()
            if key in owners:
                raise BatchPlanError(
                    f"stacks {owners[key]!r} and {stack.name!r} would both write {path.name}; rename one of them"
                )
            owners[key] = stack.name
            if path_key(path) in inputs:
                raise BatchPlanError(f"refusing to overwrite input file {path}")
        plans.append(outputs)
    return plans
