"""Grouping: which frames make which stack (:class:`Stack`).

- :func:`group_by_subfolder`: every folder under a root that holds images;
- :func:`group_by_size`: consecutive runs of N frames of a flat folder;
- :func:`group_by_regex`: a named group ``stack`` in the file name;
- :func:`group_by_sweeps`: focus sweeps found in the frames themselves.
"""

import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..engine.dtypes import full_scale
from ..io import IMAGE_EXTENSIONS, natural_sort_key, open_stack, split_into_stacks
from .manifest import batch_outputs_reason

#: Name of the regex group that identifies a stack in :func:`group_by_regex`.
STACK_GROUP = "stack"


@dataclass(frozen=True)
class Stack:
    """One focal stack of a batch: a name and its frame files, in stacking order.

    A stack of a microscope file (CZI, ND2, LIF, OME-Zarr) has that one file
    as its path and, when the file holds several time points, the ``time``
    point it is; its channels are fused along one depth (:func:`stack_channels`).
    """

    name: str
    paths: tuple
    time: int | None = None

    def __post_init__(self):
        object.__setattr__(self, "paths", tuple(os.fspath(path) for path in self.paths))

    @property
    def is_microscope_file(self):
        from ..io import is_microscope_file

        return len(self.paths) == 1 and is_microscope_file(self.paths[0])


def stack_channels(stack):
    """The frames of ``stack``: one :class:`FrameSequence`, or one per channel of a microscope file."""
    if not stack.is_microscope_file:
        return [open_stack(list(stack.paths))]
    from ..io import open_hyperstack

    hyperstack = open_hyperstack(stack.paths[0])
    time = stack.time or 0
    return [hyperstack.stack(time, c) for c in range(hyperstack.sizes["C"])]


def microscope_stacks(path, name):
    """The stacks of a microscope file: one, or one per time point (``<name>_t000``...)."""
    from ..io import open_hyperstack

    times = open_hyperstack(path).sizes["T"]
    if times == 1:
        return [Stack(name, [path])]
    width = max(3, len(str(times - 1)))
    return [Stack(f"{name}_t{t:0{width}d}", [path], time=t) for t in range(times)]


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
    from ..io import is_microscope_file

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
    scale = full_scale(frame.dtype)
    if frame.ndim == 3:
        frame = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    gray = frame.astype(np.float32) / np.float32(scale)
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
