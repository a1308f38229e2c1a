"""Command line: ``napari-focus-stack FRAMES... -o FUSED [--depth D] [--confidence C]``
for one stack, ``napari-focus-stack batch ROOT -o OUTDIR [...]`` for many.

Imports nothing of napari, Qt or Dask at start-up: start-up time counts in every run.
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

from ._process import keep_freed_memory
from .engine.result import ALIGN_MODES, DEFAULTS, DEVICES, METHODS, RANGES

PROG = "napari-focus-stack"


class UsageError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit 2."""


def build_parser():
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Fuse a focal stack (z-stack) into one all-in-focus image, "
        "with optional depth and confidence maps. For many stacks: napari-focus-stack batch --help. "
        "Before the first GPU run on a machine: napari-focus-stack --warm-up.",
        epilog="Example: napari-focus-stack frames/ -o fused.tif --depth depth.tif",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="a folder of frames, a multi-page TIFF, a glob pattern, or several image files "
        "(a folder named 'batch' as ./batch)",
    )
    p.add_argument("-o", "--output", required=True, metavar="FUSED", help="fused image (.tif, .png, .jpg)")
    p.add_argument("--depth", metavar="DEPTH.tif", help="also write the depth map (float32 TIFF, slices)")
    p.add_argument("--confidence", metavar="CONF.tif", help="also write the confidence map (float32 TIFF, 0-1)")
    p.add_argument(
        "--mark-unfocused",
        action="store_true",
        help="write NaN as the depth of pixels with no usable focus signal (flat, textureless or dark areas)",
    )
    p.add_argument(
        "--reference", type=int, metavar="K", help="align to frame K (0 = first) instead of the middle frame"
    )
    micro = p.add_argument_group("microscope files (CZI, ND2, LIF, OME-Zarr, OME-TIFF hyperstacks)")
    micro.add_argument(
        "--depth-from",
        default="all",
        metavar="{all,C}",
        help="with several channels: take the one shared depth map from every channel's focus combined "
        "(default) or from channel C; every channel is fused along it into one multi-channel TIFF",
    )
    micro.add_argument("--channel", metavar="C", help="fuse only channel C (an index or a channel name)")
    micro.add_argument("--time", type=int, metavar="T", help="the time point to fuse (0 = first)")
    add_engine_options(p)
    return p


def add_engine_options(p):
    """The focus-stacking options both forms share: radius ... max-memory, and --quiet."""

    def ranged(name):
        lo, hi = RANGES[name]
        flag = "--" + name.replace("_", "-")
        return flag, dict(type=int, default=DEFAULTS[name], metavar="N", help=f"{lo}-{hi} (default {DEFAULTS[name]})")

    for name, text in (
        ("radius", "half-size of the sharpness window in pixels"),
        ("smoothing", "smoothing of the sharpness maps"),
        ("scale_factor", "process and write at N times the input resolution"),
    ):
        flag, kwargs = ranged(name)
        kwargs["help"] = f"{text}, {kwargs['help']}"
        p.add_argument(flag, **kwargs)
    p.add_argument("--method", choices=METHODS, default=DEFAULTS["method"], help="fusion method (default %(default)s)")
    p.add_argument(
        "--align",
        choices=ALIGN_MODES,
        default=DEFAULTS["align"],
        help="register the frames to the middle one first: shift+rotation+scale (focus breathing), "
        "affine, shift only, or none (default %(default)s)",
    )
    p.add_argument(
        "--device",
        default=DEFAULTS["device"],
        metavar="{" + ",".join(DEVICES) + ",gpu:N,gpu:all}",
        help="where to compute (default %(default)s)",
    )
    p.add_argument(
        "--max-memory",
        type=parse_size,
        metavar="SIZE",
        help="working-memory budget, e.g. 2GB or 512MB (default: half the free memory); "
        "larger images are processed in tiles, with the same result",
    )
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def engine_params(args):
    """The :class:`~napari_focus_stack.engine.result.StackParams` the options ask for, checked.

    Built once, here, from whichever engine options the command has (the
    batch command has no ``--reference``).
    """
    from .engine.result import StackParams

    given = {name: getattr(args, name) for name in StackParams.names() if hasattr(args, name)}
    try:
        return StackParams.of(**given)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def parse_size(text):
    """Bytes from a size such as ``2GB``, ``512MiB`` or ``1000000`` (at least one byte)."""
    from .engine.result import parse_size as parse

    try:
        return parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def output_paths(args):
    """The outputs as ``{role: Path}``, their formats checked (writability comes later)."""
    from .io import SAVE_EXTENSIONS

    outputs = {"fused image": Path(args.output)}
    if args.depth:
        outputs["depth map"] = Path(args.depth)
    if args.confidence:
        outputs["confidence map"] = Path(args.confidence)
    fused = outputs["fused image"]
    for role, path in outputs.items():
        if path.is_dir():
            raise UsageError(f"cannot write the {role} {path}: it is a folder")
    if fused.suffix.lower() not in SAVE_EXTENSIONS:
        raise UsageError(f"cannot write {fused.name}: the fused image can be saved as {', '.join(SAVE_EXTENSIONS)}")
    for role, path in list(outputs.items())[1:]:
        if path.suffix.lower() not in (".tif", ".tiff"):
            raise UsageError(f"the {role} is written as float32 TIFF: use a .tif name, not {path.name}")
    return outputs


class ProgressBars:
    """A callback for Progress events: one bar per stage ("aligning", "stacking").

    :meth:`close` clears what is on screen, so that a message printed next
    starts on a line of its own.
    """

    def __init__(self):
        self.bars = {}

    def __call__(self, event):
        from tqdm import tqdm

        bar = self.bars.get(event.stage)
        if bar is None:
            self.close()
            bar = self.bars[event.stage] = tqdm(
                total=event.total, unit="frame", desc=event.stage.capitalize(), file=sys.stderr, leave=False
            )
        bar.total = event.total
        bar.update(event.done - bar.n)
        if event.done == event.total:
            bar.close()

    def close(self):
        for bar in self.bars.values():
            bar.close()


def progress_bar():
    """A callback for Progress events, with a ``close()`` (see :class:`ProgressBars`)."""
    return ProgressBars()


def warn(message):
    print(f"{PROG}: warning: {message}", file=sys.stderr)


def run(args):
    import contextlib

    from .engine.backend import small_pages

    # One stack, one process: nearly every array is touched once, except in
    # the pyramid method, which makes fresh levels for every frame and so
    # gains from reusing freed huge pages; weighted and depthmap are faster
    # without (benchmarks/RESULTS.md, "12 MP x 10").
    pages = small_pages() if args.method != "pyramid" else contextlib.nullcontext()
    with pages:
        return run_one(args)


def run_one(args):
    from .engine.backend import get_backends
    from .engine.pipeline import drain, run_pipeline
    from .io import OutputSet, StackWriteError, check_storable, non_finite_warning

    params = engine_params(args)
    roles = output_paths(args)
    source = args.inputs[0] if len(args.inputs) == 1 else args.inputs
    channels = open_channels(source, args)
    frames = channels[0]
    several = len(channels) > 1
    if several:
        from .channels import check_depth_from

        try:
            depth_from = check_depth_from(args.depth_from, len(channels))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if roles["fused image"].suffix.lower() not in (".tif", ".tiff"):
            raise UsageError(
                f"cannot write {roles['fused image'].name}: {len(channels)} channels are written as one "
                "multi-channel TIFF: use a .tif name (or pick one with --channel)"
            )
    elif str(args.depth_from).lower() != "all":
        warn("--depth-from applies to stacks of several channels; this one has one")
    try:
        check_storable(frames.dtype, roles["fused image"])
    except ValueError as exc:
        raise UsageError(f"cannot write the fused image {roles['fused image']}: {exc}") from None
    backends = get_backends(params.device)
    try:  # every output checked and its temporary file made before any computing
        outputs = OutputSet(roles, inputs=frames.metadata.get("paths") or [], remove_stale=True)
    except StackWriteError as exc:
        raise UsageError(str(exc)) from None
    args.outputs = outputs
    with outputs:
        bars = None if args.quiet else progress_bar()
        if several:
            from .channels import iter_focus_stack_channels

            steps = iter_focus_stack_channels(channels, params, depth_from=depth_from, max_memory=args.max_memory)
        else:
            steps = run_pipeline(
                frames, params, backends, metadata=frames.metadata, max_memory=args.max_memory, maps=wants_maps(args)
            )
        try:
            result = drain(steps, bars)
        except ValueError as exc:  # a reference frame beyond the stack, a budget too small, a corrupt frame
            raise UsageError(str(exc)) from exc
        finally:
            if bars is not None:
                bars.close()
        if args.mark_unfocused:
            result.mark_unfocused()
        for message in (result.metadata.get("alignment") or {}).get("messages", []):
            if not args.quiet or result.metadata["alignment"]["failed"]:
                print(f"{PROG}: alignment: {message}", file=sys.stderr)
        missing = non_finite_warning(result.metadata)
        if missing is not None:
            warn(missing)
        for role, (image, metadata) in result.output_images(roles).items():
            try:
                outputs.write_image(role, image, metadata=metadata)
            except ValueError as exc:  # what the format cannot store
                raise UsageError(f"cannot write the {role} {roles[role]}: {exc}") from None
        outputs.commit()
    args.written = list(roles.values())
    if not args.quiet:
        size = "x".join(str(s) for s in (result.fused.shape[-2:] if several else result.fused.shape[:2])[::-1])
        what = f"{len(channels)} channels of {len(frames)} frames" if several else f"{len(frames)} frames"
        print(f"{PROG}: fused {what} into {roles['fused image']} ({size}, {result.device})", file=sys.stderr)
    return 0


def wants_maps(args):
    """Whether a one-stack run needs its depth and confidence: to write one, or to mark unfocused depth."""
    return bool(args.depth or args.confidence or args.mark_unfocused)


def open_channels(source, args):
    """The stacks to fuse: one, or one per channel of a microscope file (along one depth).

    A microscope file (or OME-TIFF hyperstack) with several time points
    needs ``--time``; with several channels every channel is fused unless
    ``--channel`` picks one.
    """
    from .io import SeveralStacksError, open_stack

    picked = args.channel is not None or args.time is not None
    if not picked:
        try:
            return [open_stack(source)]
        except SeveralStacksError:
            pass  # channels or time points: picked below
    elif not isinstance(source, str):
        raise UsageError("--channel and --time pick from one microscope file, not from several inputs")
    from .io import open_hyperstack

    hyperstack = open_hyperstack(source)
    times = hyperstack.sizes["T"]
    if args.time is None and times > 1:
        raise UsageError(
            f"{source}: has {times} time points: pick one with --time T (0 to {times - 1}), "
            "or fuse each with the batch command"
        )
    time = 0 if args.time is None else args.time
    if args.channel is not None:
        channel = int(args.channel) if str(args.channel).isdigit() else args.channel
        return [hyperstack.stack(time, channel)]
    return [hyperstack.stack(time, c) for c in range(hyperstack.sizes["C"])]


BATCH_EXAMPLES = r"""examples:
  napari-focus-stack batch scans/ -o fused/                       one stack per sub-folder
  napari-focus-stack batch frames/ -o fused/ --stack-size 10      every 10 frames of a flat folder
  napari-focus-stack batch frames/ -o fused/ --group '(?P<stack>.+)_z\d+\.tif'
  napari-focus-stack batch frames/ -o fused/ --auto --dry-run     find the focus sweeps, list the stacks
  napari-focus-stack batch scans/ -o fused/ --depth --format png --workers 4 --resume
  napari-focus-stack batch scans/ -o fused/ --scheduler tcp://head-node:8786
  napari-focus-stack batch plates/ -o fused/ --depth              every .czi/.nd2/.lif/.zarr: one stack per time point
"""


def build_batch_parser():
    from .batch import OUTPUT_FORMATS

    p = argparse.ArgumentParser(
        prog=f"{PROG} batch",
        description="Fuse many focal stacks, one output per stack, here or on a Dask cluster.\n"
        "Each stack's images are written atomically, then its manifest <name>.json, which\n"
        "--resume trusts; a stack that fails is reported and the others go on.",
        epilog=BATCH_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "root",
        metavar="ROOT",
        help="a folder of stacks, one per sub-folder; or a folder of frames, with --stack-size, --group or --auto",
    )
    p.add_argument(
        "-o", "--output", required=True, metavar="OUTDIR", help="folder for the outputs (created if missing)"
    )
    grouping = p.add_argument_group("grouping (default: one stack per sub-folder of ROOT)")
    grouping = grouping.add_mutually_exclusive_group()
    grouping.add_argument(
        "--stack-size", type=int, metavar="N", help="consecutive stacks of N frames of ROOT, in natural order"
    )
    grouping.add_argument(
        "--group",
        metavar="REGEX",
        help="a regular expression matching whole file names in ROOT whose group (?P<stack>...) names the stack",
    )
    grouping.add_argument(
        "--auto", action="store_true", help="find the focus sweeps in the frames of ROOT, and say where"
    )
    outputs = p.add_argument_group("outputs")
    outputs.add_argument(
        "--format", choices=OUTPUT_FORMATS, default="tif", help="of the fused images (default %(default)s)"
    )
    outputs.add_argument("--depth", action="store_true", help="also write <name>_depth.tif (float32, slices)")
    outputs.add_argument("--confidence", action="store_true", help="also write <name>_confidence.tif (float32, 0-1)")
    outputs.add_argument(
        "--resume", action="store_true", help="skip stacks a previous run completed with the same options"
    )
    outputs.add_argument("--dry-run", action="store_true", help="list the stacks and their outputs; write nothing")
    outputs.add_argument(
        "--depth-from",
        default="all",
        metavar="{all,C}",
        help="microscope files (CZI, ND2, LIF, OME-Zarr) are stacks of their own, one per time point, every "
        "channel fused along one depth into a multi-channel TIFF: the depth from all channels combined "
        "(default) or from channel C",
    )
    where = p.add_argument_group("where to run (default: one stack after the other, in this process)")
    where = where.add_mutually_exclusive_group()
    where.add_argument(
        "--workers", type=int, metavar="N", help="N stacks at a time on a local Dask cluster (127.0.0.1 only)"
    )
    where.add_argument(
        "--scheduler", metavar="ADDRESS", help="send the stacks to a running Dask cluster (tcp://host:8786)"
    )
    p.add_argument(
        "--threads-per-stack",
        type=int,
        metavar="N",
        help="OpenCV threads per stack (default: 1 on Dask, OpenCV's default otherwise)",
    )
    add_engine_options(p)
    return p


def batch_options(args):
    """Keyword options of :func:`~napari_focus_stack.distributed.stack_many`, checked."""
    from .batch import BatchOptions

    options = dict(
        params=engine_params(args),
        format=args.format,
        depth=args.depth,
        confidence=args.confidence,
        max_memory=args.max_memory,
        threads_per_stack=args.threads_per_stack,
        depth_from=args.depth_from,
    )
    try:
        BatchOptions(**options)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be at least 1, not {args.workers}")
    return options


def _cli_phrasing():
    """How the batch planner's messages name the command line's grouping options."""
    from .batch import Phrasing

    return Phrasing(
        pattern="--group {pattern!r}",
        loose="; for the {loose} images directly in it use --stack-size N, --group REGEX or --auto",
        skipped=" that is not skipped (see above)",
    )


def grouping_of(args):
    """The grouping rule (:data:`~napari_focus_stack.batch.GROUPINGS`) the options ask for."""
    if args.stack_size is not None:
        return "size"
    if args.group is not None:
        return "pattern"
    return "sweeps" if args.auto else "subfolders"


def group_stacks(args):
    """The stacks of ``args.root`` by the grouping rule the options ask for (:func:`~napari_focus_stack.batch.find_stacks`),
    saying which folders were skipped, which files matched no stack, and where the sweeps are."""
    from .batch import BatchPlanError, NoStacksError, find_stacks

    grouping = grouping_of(args)
    try:
        found = find_stacks(
            args.root,
            grouping,
            stack_size=args.stack_size,
            pattern=args.group,
            exclude=[args.output],
            output=args.output,
            phrasing=_cli_phrasing(),
        )
    except NoStacksError as exc:
        report_skipped(exc.skipped, quiet=False)
        raise UsageError(str(exc)) from None
    except BatchPlanError as exc:  # the output folder holds input frames
        raise UsageError(str(exc)) from None
    except ValueError as exc:  # a bad pattern or stack size
        if grouping not in ("size", "pattern"):
            raise
        raise UsageError(str(exc)) from None
    report_skipped(found.skipped, args.quiet)
    if found.left_out and not args.quiet:
        example = found.left_out[0].name
        print(f"{PROG} batch: {len(found.left_out)} file(s) match no stack, e.g. {example}", file=sys.stderr)
    if found.sweeps is not None and not args.quiet:
        print(f"{PROG} batch: {found.sweeps.describe()}", file=sys.stderr)
    return found


def report_skipped(skipped, quiet):
    for name, reason in skipped:
        if not quiet:
            print(f"{PROG} batch: skipped folder {name}: {reason}", file=sys.stderr)


def print_dry_run(plan):
    """One line per stack: name, frames, first and last file, output, and whether resume skips it."""
    width = max(len(stack.name) for stack in plan.stacks)
    for stack, outputs, done in zip(plan.stacks, plan.outputs, plan.complete):
        first, last = Path(stack.paths[0]).name, Path(stack.paths[-1]).name
        note = "  (complete: skipped)" if done else ""
        frames = f"{len(stack.paths):>4} frame{'s' if len(stack.paths) != 1 else ' '}"
        print(f"{stack.name:<{width}}  {frames}  {first} .. {last}  -> {outputs.fused.name}{note}")
    n_frames = sum(len(stack.paths) for stack in plan.stacks)
    print(f"{len(plan.stacks)} stacks, {n_frames} frames; dry run: nothing written")


def batch_progress_bar(total, quiet):
    """A callback for each StackOutcome: one bar for the batch, failures as they come."""
    bar = None
    if not quiet:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="stack", desc="Batch", file=sys.stderr, leave=False)

    def report(outcome):
        if bar is None:
            if outcome.warning:
                print(f"{PROG} batch: warning {outcome.name}: {outcome.warning}", file=sys.stderr)
            return
        if outcome.failed:
            bar.write(f"failed {outcome.name}: {outcome.reason}", file=sys.stderr)
        if outcome.warning:
            bar.write(f"warning {outcome.name}: {outcome.warning}", file=sys.stderr)
        bar.set_postfix_str(f"{outcome.name} {outcome.status}", refresh=False)
        bar.update(1)

    return report, bar


def print_summary(outcomes, outdir, seconds, quiet):
    """Counts, time and every failure with its reason; returns the exit status."""
    from .batch import Tally

    tally = Tally.of(outcomes)
    if tally.failed or not quiet:
        parts = [f"{tally.done} done"]
        if tally.skipped:
            parts.append(f"{tally.skipped} skipped (already complete)")
        if tally.failed:
            parts.append(f"{len(tally.failed)} failed (none of their files written)")
        print(
            f"{PROG} batch: {tally.total} stacks: {', '.join(parts)}, in {seconds:.1f} s; outputs in {outdir}",
            file=sys.stderr,
        )
    for outcome in tally.failed:
        print(f"  failed {outcome.name}: {outcome.reason}", file=sys.stderr)
    return 1 if tally.failed else 0


def run_batch(args):
    from .batch import BatchOptions, BatchPlanError, plan_batch
    from .distributed import DaskMissingError, check_before_running, stack_many
    from .io import StackWriteError

    options = batch_options(args)
    found = group_stacks(args)
    outdir = Path(args.output)
    try:
        # whether resume skips a stack is said by a dry run; a real run's stack_many checks it itself
        plan = plan_batch(args.root, outdir, BatchOptions(**options), found=found, resume=args.resume and args.dry_run)
    except BatchPlanError as exc:
        raise UsageError(str(exc)) from None
    if args.dry_run:
        print_dry_run(plan)
        return 0
    try:
        check_before_running(plan.options, outdir, here=args.scheduler is None)
    except StackWriteError as exc:
        raise UsageError(str(exc)) from None
    stacks = plan.stacks
    report, bar = batch_progress_bar(len(stacks), args.quiet)
    started = time.perf_counter()
    try:
        outcomes = stack_many(
            stacks,
            outdir,
            workers=args.workers,
            scheduler=args.scheduler,
            resume=args.resume,
            progress=report,
            **options,
        )
    except (DaskMissingError, ConnectionError, BatchPlanError, StackWriteError) as exc:
        raise UsageError(str(exc)) from None
    finally:
        if bar is not None:
            bar.close()
    return print_summary(outcomes, outdir, time.perf_counter() - started, args.quiet)


def _silence_opencv_log():
    """OpenCV logs a decoder's failure itself ("[ERROR:0@0.08] global loadsave.cpp ..."), before
    the one line that names the file; in this process, its log is off (what fails is raised)."""
    import cv2

    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is not None:
        logging.setLogLevel(logging.LOG_LEVEL_SILENT)


def _one_line_warning(message, category, filename, lineno, file=None, line=None):
    text = str(message).strip().splitlines()[0] if str(message).strip() else category.__name__
    print(f"{PROG}: warning: {text}", file=sys.stderr)


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so that the same clean-up as for Ctrl-C runs."""


def _raise_terminated(signum, frame):
    raise Terminated


def _interrupted_message(args, batch, terminated):
    what = "terminated" if terminated else "cancelled"
    if batch:
        on_dask = getattr(args, "workers", None) is not None or getattr(args, "scheduler", None) is not None
        unfinished = "stacks in progress are redone" if on_dask else "the stack in progress left nothing"
        return f"{what}; finished stacks are complete, {unfinished}; rerun with --resume to do the rest"
    written = getattr(args, "written", None)
    if written:
        return f"{what} after every output was written ({', '.join(str(path) for path in written)})"
    return f"{what}{_nothing_written(args)}"


def _nothing_written(args):
    """What a failed single-stack run left: nothing, or what could not be removed."""
    outputs = getattr(args, "outputs", None)
    left = [] if outputs is None else outputs.left_behind
    if left:
        return f"; no output is complete, but files beside {', '.join(map(str, left))} could not be removed"
    return "; no output was written"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    batch = argv[:1] == ["batch"]
    if batch:
        args, command = build_batch_parser().parse_args(argv[1:]), run_batch
    elif argv[:1] == ["--warm-up"]:
        from .warm_up import run_warm_up, warm_up_parser

        args, command = warm_up_parser(PROG).parse_args(argv[1:]), run_warm_up
    else:
        args, command = build_parser().parse_args(argv), run
    import signal
    import threading

    from .engine.backend import DeviceUnavailableError
    from .engine.result import StackCancelled
    from .engine.tiling import MemoryBudgetError
    from .io import StackReadError, StackWriteError

    _silence_opencv_log()
    keep_freed_memory()
    previous = None
    if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGTERM"):
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning  # a library's warning: one line, without its source
            return command(args)
    except (UsageError, StackReadError, DeviceUnavailableError, MemoryBudgetError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except StackWriteError as exc:
        print(f"{PROG}: error: {exc}{'' if batch else _nothing_written(args)}", file=sys.stderr)
        return 1
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        where = f": {exc.filename}" if exc.filename else ""
        print(f"{PROG}: error: {reason}{where}{'' if batch else _nothing_written(args)}", file=sys.stderr)
        return 1
    except MemoryError:
        nothing = "" if batch else _nothing_written(args)
        print(f"{PROG}: error: out of memory{nothing}; try a smaller --max-memory", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, StackCancelled) as exc:
        terminated = isinstance(exc, Terminated)
        print(f"{PROG}: {_interrupted_message(args, batch, terminated)}", file=sys.stderr)
        return 143 if terminated else 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
