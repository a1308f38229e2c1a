"""Planning: the one planner of the command line and the batch widget.

:func:`find_stacks` applies a grouping rule and says what it passed over;
:func:`plan_batch` checks every output and which stacks an earlier run
finished; :class:`Tally` counts the outcomes. Each front end words the
messages for its own controls (:class:`Phrasing`).
"""

from dataclasses import dataclass
from pathlib import Path

from .grouping import SweepSplit, group_by_regex, group_by_size, group_by_subfolder, group_by_sweeps, list_images
from .manifest import holds_batch_outputs, is_complete
from .outputs import BatchOptions, BatchPlanError, plan_outputs

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
    sweeps: SweepSplit | None = None


def find_stacks(
    root, grouping="subfolders", *, stack_size=10, pattern="", exclude=(), output=None, phrasing=Phrasing()
):
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
    found: FoundStacks | None = None

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
