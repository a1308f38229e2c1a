"""Batch planning: which frames make which stack, where each stack's outputs go,
and which stacks a previous run already finished.

Everything here is pure bookkeeping on paths and small JSON files; the stacks
themselves are processed by :mod:`napari_focus_stack.distributed`.

Frames are grouped into :class:`Stack` objects in one of four ways:

- :func:`group_by_subfolder`: every folder under a root that holds images;
- :func:`group_by_size`: consecutive runs of N frames of a flat folder;
- :func:`group_by_regex`: a named group ``stack`` in the file name;
- :func:`group_by_sweeps`: focus sweeps found in the frames themselves.

Output names come from stack names through :func:`safe_output_name`, so a
folder or regex group can never place a file outside the output folder.
A stack counts as finished only when its manifest (``<name>.json``, written
atomically after all its images) exists and records the same parameters,
inputs and outputs (:func:`is_complete`).

>>> [stack.name for stack in group_by_size(["a1.png", "a2.png", "a3.png", "a4.png"], 2)]
['stack_001', 'stack_002']
>>> safe_output_name("../../etc/passwd")
'etc_passwd'
"""

import json
import os
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from . import __version__
from .engine.result import StackParams, check_max_memory
from .io import (
    IMAGE_EXTENSIONS,
    SAVE_EXTENSIONS,
    TIFF_EXTENSIONS,
    natural_sort_key,
    open_stack,
    path_key,
    read_metadata,
    split_into_stacks,
    write_atomically,
)

#: Output formats of the fused image, by extension without the dot.
OUTPUT_FORMATS = tuple(extension[1:] for extension in SAVE_EXTENSIONS)
#: Longest output name kept from a stack name (file systems allow 255 bytes).
MAX_NAME_LENGTH = 100
#: Name of the regex group that identifies a stack in :func:`group_by_regex`.
STACK_GROUP = "stack"

_UNSAFE_RUNS = re.compile(r"[^\w.-]+")
_WINDOWS_DEVICE_NAMES = frozenset(
    {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
)


class BatchPlanError(ValueError):
    """Stacks that cannot be written as asked: the message says which and why."""


@dataclass(frozen=True)
class Stack:
    """One focal stack of a batch: a name and its frame files, in stacking order.

    A stack of a microscope file (CZI, ND2, LIF, OME-Zarr) has that one file
    as its path and, when the file holds several time points, the ``time``
    point it is; its channels are fused along one depth (:func:`stack_channels`).
    """

    name: str
    paths: tuple
    time: Optional[int] = None

    def __post_init__(self):
        object.__setattr__(self, "paths", tuple(os.fspath(path) for path in self.paths))

    @property
    def is_microscope_file(self):
        from .formats import is_microscope_file

        return len(self.paths) == 1 and is_microscope_file(self.paths[0])


def stack_channels(stack):
    """The frames of ``stack``: one :class:`FrameSequence`, or one per channel of a microscope file."""
    if not stack.is_microscope_file:
        return [open_stack(list(stack.paths))]
    from .formats import open_hyperstack

    hyperstack = open_hyperstack(stack.paths[0])
    time = stack.time or 0
    return [hyperstack.stack(time, c) for c in range(hyperstack.sizes["C"])]


def microscope_stacks(path, name):
    """The stacks of a microscope file: one, or one per time point (``<name>_t000``...)."""
    from .formats import open_hyperstack

    times = open_hyperstack(path).sizes["T"]
    if times == 1:
        return [Stack(name, [path])]
    width = max(3, len(str(times - 1)))
    return [Stack(f"{name}_t{t:0{width}d}", [path], time=t) for t in range(times)]


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
    max_memory: Optional[int] = None
    threads_per_stack: Optional[int] = None

    def __init__(
        self, params=None, *, depth_from="all", format="tif", depth=False, confidence=False, max_memory=None,
        threads_per_stack=None, **engine,
    ):  # fmt: skip
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
    depth: Optional[Path]
    confidence: Optional[Path]
    manifest: Path

    def images(self):
        """``{role: path}`` of the images to write, fused image last."""
        roles = {"depth map": self.depth, "confidence map": self.confidence, "fused image": self.fused}
        return {role: path for role, path in roles.items() if path is not None}


# --- Grouping ----------------------------------------------------------------


def list_images(folder):
    """Image files directly in ``folder``, in natural order; hidden files skipped.

    Extensions are matched whatever their case (``.JPG`` and ``.jpg``).
    Entries that cannot be examined (a link that loops) are left out.
    """
    files = []
    for entry in Path(folder).iterdir():
        if entry.name.startswith(".") or entry.suffix.lower() not in IMAGE_EXTENSIONS:
            continue
        try:
            if entry.is_file():
                files.append(entry)
        except OSError:
            continue
    return sorted(files, key=natural_sort_key)


def group_by_subfolder(root, *, exclude=(), skipped=None):
    """One stack per folder under ``root`` that holds image files.

    Folders are searched at any depth (hidden ones and ``exclude`` skipped,
    symbolic links not followed); a stack is named by its folder's path
    relative to ``root`` (``plate1/A01``). Images directly in ``root`` belong
    to no stack, and neither do folders of earlier results
    (:func:`batch_outputs_reason`) or folders that cannot be read. Each
    microscope file (CZI, ND2, LIF, OME-Zarr) found is a stack of its own, or
    one per time point (:func:`microscope_stacks`), named by its path
    without the extension.

    Parameters
    ----------
    root : str or os.PathLike
    exclude : iterable of path, optional
        Folders not to search, e.g. an output folder inside ``root``.
    skipped : list, optional
        Receives ``(name, reason)`` for each folder with images that is not
        taken as a stack, so that callers can say which and why.

    Returns
    -------
    list of Stack
        In natural order of their names.
    """
    from .formats import is_microscope_file

    root = Path(root)
    excluded = {Path(folder).resolve() for folder in exclude}
    stacks = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [
            name for name in subfolders if not name.startswith(".") and (Path(folder) / name).resolve() not in excluded
        ]
        folder = Path(folder)
        # microscope files (and OME-Zarr folders, not searched further) are stacks of their own
        zarrs = [name for name in subfolders if is_microscope_file(folder / name)]
        subfolders[:] = [name for name in subfolders if name not in zarrs]
        micro = sorted(
            [folder / name for name in files if not name.startswith(".") and is_microscope_file(folder / name)]
            + [folder / name for name in zarrs],
            key=natural_sort_key,
        )
        for path in micro:
            name = path.relative_to(root).with_suffix("").as_posix()
            name = name[: -len(".ome")] if name.lower().endswith(".ome") else name  # cells.ome.zarr -> cells
            try:
                stacks.extend(microscope_stacks(path, name))
            except (ValueError, OSError) as exc:  # StackReadError: bioio missing, a corrupt file
                if skipped is not None:
                    skipped.append((name, str(exc).splitlines()[0]))
        if folder == root:
            continue
        name = folder.relative_to(root).as_posix()
        try:
            images = list_images(folder)
            reason = batch_outputs_reason(folder) if images else None
        except OSError as exc:
            images, reason = (), f"cannot be read ({exc.strerror or exc})"
            if skipped is not None:
                skipped.append((name, reason))
            continue
        if images and reason is None:
            stacks.append(Stack(name, images))
        elif images and skipped is not None:
            skipped.append((name, reason))
    return sorted(stacks, key=lambda stack: natural_sort_key(stack.name))


def group_by_size(paths, stack_size):
    """Consecutive stacks of ``stack_size`` frames, named ``stack_001``, ``stack_002``...

    Uses :func:`napari_focus_stack.io.split_into_stacks` (natural order; a last,
    shorter stack is kept when it has at least 2 frames).
    """
    return _numbered([[Path(path) for path in group] for group in split_into_stacks(paths, stack_size)])


def group_by_regex(paths, pattern):
    """Stacks named by the ``stack`` group of ``pattern`` in each file name.

    Parameters
    ----------
    paths : iterable of path
    pattern : str
        A regular expression that must match a whole file name (not its
        folder), with a named group ``(?P<stack>...)``; e.g.
        ``(?P<stack>.+)_z\\d+\\.tif``. Files it does not match are left out.

    Returns
    -------
    list of Stack
        In natural order of their names; frames in natural order.

    Raises
    ------
    ValueError
        ``pattern`` is not a regular expression or has no ``stack`` group.

    Examples
    --------
    >>> stacks = group_by_regex(["b_z2.tif", "a_z1.tif", "b_z1.tif", "notes.tif"], r"(?P<stack>.+)_z\\d+\\.tif")
    >>> [(stack.name, stack.paths) for stack in stacks]
    [('a', ('a_z1.tif',)), ('b', ('b_z1.tif', 'b_z2.tif'))]
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"not a regular expression: {pattern!r} ({exc})") from None
    if STACK_GROUP not in regex.groupindex:
        raise ValueError(
            f"the pattern {pattern!r} needs a named group (?P<{STACK_GROUP}>...) that identifies the stack"
        )
    groups = {}
    for path in paths:
        match = regex.fullmatch(Path(path).name)
        if match is not None and match[STACK_GROUP]:  # the group may be optional and unmatched
            groups.setdefault(match[STACK_GROUP], []).append(path)
    return [
        Stack(name, sorted(members, key=natural_sort_key))
        for name, members in sorted(groups.items(), key=lambda item: natural_sort_key(item[0]))
    ]


@dataclass(frozen=True)
class SweepSplit:
    """Focus sweeps found in a flat sequence of frames by :func:`group_by_sweeps`.

    Attributes
    ----------
    stacks : list of Stack
    jumps : ndarray
        Change from frame ``i`` to ``i + 1`` in units of the typical change
        between neighbouring frames (about 1 inside a sweep).
    starts : tuple of int
        Index of the first frame of each sweep after the first.
    min_jump : float
        The threshold that was applied.
    """

    stacks: list
    jumps: np.ndarray
    starts: tuple
    min_jump: float

    def describe(self):
        """What was found, a few lines of text for people."""
        n_frames = sum(len(stack.paths) for stack in self.stacks)
        lines = [f"found {len(self.stacks)} focus sweep(s) in {n_frames} frames:"]
        for index, stack in enumerate(self.stacks):
            first, last = Path(stack.paths[0]).name, Path(stack.paths[-1]).name
            line = f"  {stack.name}: {len(stack.paths)} frames, {first} .. {last}"
            if index:
                line += f" (change {self.jumps[self.starts[index - 1] - 1]:.1f}x the typical step)"
            lines.append(line)
        inside = np.delete(self.jumps, [start - 1 for start in self.starts])
        if inside.size:
            lines.append(f"  largest change inside a sweep: {inside.max():.1f}x (threshold {self.min_jump:g}x)")
        return "\n".join(lines)


def group_by_sweeps(paths, *, min_jump=4.0, grid=16):
    """Find where one focus sweep ends and the next begins, from the frames.

    Each frame is summed up by two coarse ``grid`` x ``grid`` maps: its mean
    brightness (what the scene is) and its local sharpness (which parts are in
    focus). Neighbouring frames of a sweep differ a little in both; at a
    boundary the scene changes, or the focus jumps back from one end of the
    range to the other, and the maps change much more. The change between
    frames ``i`` and ``i + 1`` is the geometric mean of the two maps'
    correlation distances, each divided by its median over the sequence, so
    a typical step inside a sweep scores about 1.

    Parameters
    ----------
    paths : sequence of path
        The frames in shooting order (all the same size).
    min_jump : float, optional
        A change of at least this many typical steps starts a new sweep.
    grid : int, optional
        Cells per side of the summary maps.

    Returns
    -------
    SweepSplit
        The stacks (``stack_001``...) and the changes that decided them.

    Notes
    -----
    The median is the typical step only when most steps lie inside sweeps:
    sweeps need at least 3 frames. Repeated sweeps over the same scene with
    strong frame-to-frame shake may not stand out; use ``--stack-size`` then.
    """
    frames = open_stack(list(paths))
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        summaries = list(pool.map(lambda index: _frame_summary(frames[index], grid), range(len(frames))))
    jumps = _typical_step_units(summaries)
    starts = _sweep_starts(jumps, min_jump)
    bounds = [0, *starts, len(frames)]
    paths = list(paths)
    groups = [paths[start:stop] for start, stop in zip(bounds, bounds[1:])]
    return SweepSplit(_numbered(groups), jumps, tuple(starts), min_jump)


def _frame_summary(frame, grid):
    """Zero-mean, unit-norm brightness and log-sharpness maps of ``grid`` x ``grid`` cells."""
    full_scale = np.iinfo(frame.dtype).max if frame.dtype.kind == "u" else 1.0
    if frame.ndim == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    gray = frame.astype(np.float32) / np.float32(full_scale)
    laplacian = cv2.Laplacian(gray, cv2.CV_32F, ksize=3)
    sharpness = np.log(cv2.resize(laplacian * laplacian, (grid, grid), interpolation=cv2.INTER_AREA) + 1e-8)
    brightness = cv2.resize(gray, (grid, grid), interpolation=cv2.INTER_AREA)
    return _unit(brightness), _unit(sharpness)


def _unit(values):
    values = values.ravel().astype(np.float64)
    values -= values.mean()
    return values / max(float(np.linalg.norm(values)), 1e-12)


def _typical_step_units(summaries):
    """Change between neighbouring frames, each map's distance over its median, combined."""
    distances = np.array(
        [[1.0 - a @ b for a, b in zip(first, second)] for first, second in zip(summaries, summaries[1:])]
    )
    typical = np.maximum(np.median(distances, axis=0), 1e-12)
    units = np.maximum(distances / typical, 0.0)
    return np.sqrt(units.prod(axis=1))


def _sweep_starts(jumps, min_jump):
    """First frames of new sweeps: the largest jumps first, leaving every sweep 2 frames or more."""
    n_frames = len(jumps) + 1
    starts = []
    for gap in np.argsort(-jumps, kind="stable"):
        start = int(gap) + 1
        if jumps[gap] < min_jump:
            break
        if all(abs(start - other) >= 2 for other in [0, n_frames, *starts]):
            starts.append(start)
    return sorted(starts)


def _numbered(groups):
    width = max(3, len(str(len(groups))))
    return [Stack(f"stack_{index:0{width}d}", paths) for index, paths in enumerate(groups, start=1)]


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


# --- Manifests: what makes a stack complete ----------------------------------------


def input_fingerprints(stack):
    """Name, size and modification time of each input frame."""
    prints = []
    for path in stack.paths:
        status = os.stat(path)
        prints.append({"name": Path(path).name, "bytes": status.st_size, "mtime_ns": status.st_mtime_ns})
    return prints


def manifest_record(stack, outputs, options, inputs, sizes=None):
    """The manifest of a finished stack; ``inputs`` from :func:`input_fingerprints`
    taken before the frames were read; ``sizes`` (``{role: bytes}``) of the
    images, by default read from the files."""
    if sizes is None:
        sizes = {role: path.stat().st_size for role, path in outputs.images().items()}
    return {
        "software": "napari-focus-stack",
        "version": __version__,
        "stack": stack.name,
        "parameters": options.recorded(),
        "inputs": inputs,
        "outputs": {role: {"file": path.name, "bytes": sizes[role]} for role, path in outputs.images().items()},
    }


def write_manifest(path, record):
    """Write ``record`` as JSON, atomically (a temporary file renamed into place)."""
    data = json.dumps(record, indent=1).encode()
    write_atomically(Path(path), lambda file: file.write(data))


def read_manifest(path):
    """The manifest at ``path`` as a dict; None when missing or unreadable."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def is_complete(stack, outputs, options):
    """True when a previous run finished ``stack`` with these options and inputs.

    Its manifest must exist and record the same parameters and input frames
    (names, sizes, modification times), and every image asked for must be
    recorded and still be there with the recorded size. Images are renamed
    into place before the manifest is written, so a run interrupted at any
    point leaves a stack that is either complete or redone.
    """
    record = read_manifest(outputs.manifest)
    if record is None or record.get("parameters") != options.recorded():
        return False
    try:
        if record.get("inputs") != input_fingerprints(stack):
            return False
    except OSError:
        return False
    recorded = record.get("outputs") or {}
    for role, path in outputs.images().items():
        entry = recorded.get(role) or {}
        if entry.get("file") != path.name or not _has_size(path, entry.get("bytes")):
            return False
    return True


def _has_size(path, size):
    try:
        return path.stat().st_size == size
    except OSError:
        return False


def holds_batch_outputs(folder, *, fused_images=False):
    """True for a folder of our results (see :func:`batch_outputs_reason`)."""
    return batch_outputs_reason(folder, fused_images=fused_images) is not None


def batch_outputs_reason(folder, *, fused_images=False):
    """Why ``folder`` is taken for a folder of our results, not a stack; None when it is not.

    It is when it holds a batch manifest of ours, or a depth or confidence
    map we wrote (an interrupted batch may leave maps without a manifest;
    maps are never frames). Fused images we wrote count only with
    ``fused_images`` (an output folder: where else would they come from);
    otherwise they are frames like any other, for a new stack.
    """
    folder = Path(folder)
    for path in sorted(folder.glob("*.json")):
        if (read_manifest(path) or {}).get("software") == "napari-focus-stack":
            return f"holds the results of an earlier batch ({path.name} is a napari-focus-stack manifest)"
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in TIFF_EXTENSIONS and not path.name.startswith("."):
            content = _ours(path, fused_images)
            if content is not None:
                return f"holds results of an earlier run ({path.name} is a {content} napari-focus-stack wrote)"
    return None


def _ours(path, fused_images):
    """What ``path`` is (``"depth map"``...) when we wrote it and it counts as a result, else None."""
    try:
        metadata = read_metadata(path)
    except Exception:  # noqa: BLE001 - not a TIFF we can read (no pages, corrupt): not ours
        return None
    if metadata.get("software") != "napari-focus-stack":
        return None
    content = metadata.get("content", "fused image")
    return content if content in ("depth map", "confidence map") or fused_images else None


# --- Planning: the one planner of the command line and the batch widget -----------

#: Grouping rules :func:`find_stacks` takes: :func:`group_by_subfolder`,
#: :func:`group_by_size`, :func:`group_by_regex`, :func:`group_by_sweeps`.
GROUPINGS = ("subfolders", "size", "pattern", "sweeps")


@dataclass(frozen=True)
class Phrasing:
    """How a front end names its grouping controls in the planner's messages.

    The defaults are the batch widget's; the command line names its options.
    """

    #: The pattern that matched no file name (``{pattern}``: the pattern).
    pattern: str = "the pattern {pattern!r}"
    #: Said after "no sub-folder of ROOT holds images" when images lie in ROOT (``{loose}``: how many).
    loose: str = "; to group the {loose} images directly in it, choose another grouping"
    #: Said after "holds images" when folders with images were skipped.
    skipped: str = ""


class NoStacksError(ValueError):
    """No stack was found; ``skipped`` lists ``(folder, reason)`` for folders with images passed over."""

    def __init__(self, message, skipped=()):
        super().__init__(message)
        self.skipped = list(skipped)


@dataclass(frozen=True)
class FoundStacks:
    """The stacks of a folder by one grouping rule, with what a front end may tell about them.

    Attributes
    ----------
    stacks : list of Stack
    skipped : list of (str, str)
        ``"subfolders"``: folders with images not taken as stacks, and why.
    left_out : list of Path
        ``"pattern"``: files whose name matched no stack.
    sweeps : SweepSplit or None
        ``"sweeps"``: where the sweeps were found, and why.
    """

    stacks: list
    skipped: list = ()
    left_out: list = ()
    sweeps: Optional[SweepSplit] = None


def find_stacks(root, grouping="subfolders", *, stack_size=10, pattern="", exclude=(), output=None, phrasing=Phrasing()):
    """The stacks in ``root`` by one of the :data:`GROUPINGS` rules.

    Sub-folders of earlier results (:func:`batch_outputs_reason`) are not stacks.

    Parameters
    ----------
    root : str or os.PathLike
    grouping : {"subfolders", "size", "pattern", "sweeps"}
    stack_size : int, optional
        Frames per stack, for ``"size"``.
    pattern : str, optional
        Regular expression with a ``(?P<stack>...)`` group, for ``"pattern"``.
    exclude : iterable of path, optional
        Folders not searched for ``"subfolders"`` (an output folder inside ``root``).
    output : path, optional
        The output folder, refused when it holds images that are not our results.
    phrasing : Phrasing, optional
        How the messages name the front end's controls.

    Returns
    -------
    FoundStacks

    Raises
    ------
    NoStacksError
        ``root`` is not a folder, or no stack is found (the message says why).
    BatchPlanError
        ``output`` holds input frames.
    ValueError
        The pattern or the stack size is invalid.
    """
    root = Path(root)
    if not root.is_dir():
        raise NoStacksError(f"{root}: not a folder")
    if output is not None:
        output = Path(output)
        if output.is_dir() and list_images(output) and not holds_batch_outputs(output, fused_images=True):
            raise BatchPlanError(f"output folder {output} holds input frames; choose another one")
    if grouping == "subfolders":
        skipped = []
        stacks = group_by_subfolder(root, exclude=exclude, skipped=skipped)
        if not stacks:
            loose = len(list_images(root))
            hint = phrasing.loose.format(loose=loose) if loose else ""
            held = phrasing.skipped if skipped else ""
            raise NoStacksError(f"no sub-folder of {root} holds images{held}{hint}", skipped)
        return FoundStacks(stacks, skipped)
    if grouping not in GROUPINGS:
        raise ValueError(f"grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    frames = list_images(root)
    if not frames:
        raise NoStacksError(f"no image files in {root}")
    if grouping == "size":
        return FoundStacks(group_by_size(frames, stack_size))
    if grouping == "pattern":
        stacks = group_by_regex(frames, pattern)
        if not stacks:
            named = phrasing.pattern.format(pattern=pattern)
            raise NoStacksError(f"{named} matches none of the {len(frames)} file names in {root}")
        grouped = {path for stack in stacks for path in stack.paths}
        return FoundStacks(stacks, left_out=[path for path in frames if str(path) not in grouped])
    split = group_by_sweeps(frames)
    return FoundStacks(split.stacks, sweeps=split)


@dataclass(frozen=True)
class BatchPlan:
    """The stacks of a batch, their outputs, and which an earlier run finished (``complete``)."""

    root: Path
    outdir: Path
    options: BatchOptions
    stacks: list
    outputs: list
    complete: list
    found: Optional[FoundStacks] = None

    def describe(self):
        """One line per stack (name, frames, whether resume skips it) and a total."""
        lines = [
            f"{stack.name}: {len(stack.paths)} frames" + ("  (complete: skipped)" if complete else "")
            for stack, complete in zip(self.stacks, self.complete)
        ]
        n_frames = sum(len(stack.paths) for stack in self.stacks)
        return "\n".join([*lines, f"{len(self.stacks)} stacks, {n_frames} frames -> {self.outdir}"])


def plan_batch(root, outdir, options, *, found=None, resume=False, **grouping):
    """Find the stacks (or take ``found``, from :func:`find_stacks`) and check their outputs, writing nothing.

    ``grouping``: the keywords of :func:`find_stacks` (``grouping``,
    ``stack_size``, ``pattern``...). With ``resume``, ``complete`` says which
    stacks an earlier run finished with these options (:func:`is_complete`).

    Raises
    ------
    ValueError
        As :func:`find_stacks`; or :class:`BatchPlanError` when outputs would
        collide, replace inputs or land among them.
    """
    root, outdir = Path(root), Path(outdir)
    if found is None:
        found = find_stacks(root, **grouping)
    stacks = found.stacks
    outputs = plan_outputs(stacks, outdir, options)
    complete = [resume and is_complete(stack, out, options) for stack, out in zip(stacks, outputs)]
    return BatchPlan(root, outdir, options, stacks, outputs, complete, found)


@dataclass(frozen=True)
class Tally:
    """How many stacks of a batch were done, skipped and failed (with the failures), of how many planned."""

    done: int
    skipped: int
    failed: list
    finished: int
    total: int

    @classmethod
    def of(cls, outcomes, total=None):
        """From :class:`~napari_focus_stack.distributed.StackOutcome` objects; ``total``: stacks planned."""
        statuses = [outcome.status for outcome in outcomes]
        failed = [outcome for outcome in outcomes if outcome.failed]
        total = len(statuses) if total is None else total
        return cls(statuses.count("done"), statuses.count("skipped"), failed, len(statuses), total)

    def counts(self):
        """``"12 done, 1 skipped, 2 failed"``."""
        return f"{self.done} done, {self.skipped} skipped, {len(self.failed)} failed"
