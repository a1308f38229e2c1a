"""Process many stacks: one after the other, or as Dask tasks on a cluster.

:func:`stack_many` runs :func:`process_one` for every stack, either in this
process or as one Dask task per stack: on a local cluster it starts
(``workers=N``, listening on 127.0.0.1 only), on a running cluster
(``scheduler="tcp://host:8786"``), or through a ``distributed.Client`` you
already have. Tasks receive file paths, not pixels: each worker reads its own
frames and writes its own outputs, so workers need the same view of the files
(a shared file system). Results do not depend on where a stack ran.

Dask (``pip install "napari-focus-stack[distributed]"``) is imported only when
a cluster is used.
"""

import json
import logging
import os
import threading
import time
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import cv2

from . import io as stack_io
from .api import iter_focus_stack
from .batch import (
    BatchOptions,
    input_fingerprints,
    is_complete,
    manifest_record,
    plan_outputs,
    stack_channels,
    stack_outputs,
)
from .channels import iter_focus_stack_channels
from .engine.backend import DeviceUnavailableError, get_backends, gpu_count
from .engine.pipeline import drain
from .engine.tiling import MemoryBudgetError

#: Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which turns
#: off glibc's adaptive mmap threshold: every temporary image of a few MB is
#: then mapped and page-faulted anew, and stacking runs 2-3 times slower.
#: Local workers start without it (docs/CLUSTER.md says how for other clusters).
_KEEP_GLIBC_MALLOC_DEFAULTS = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
#: How a local cluster's logs are kept off the terminal.
_LOCAL_CLUSTER_LOG_LEVEL = logging.ERROR
#: Problems with a stack's data or its outputs, as opposed to bugs: they fail that stack only.
USER_DATA_ERRORS = (
    stack_io.StackReadError,
    MemoryBudgetError,
    DeviceUnavailableError,
    OSError,
    MemoryError,
    ValueError,
)
_INSTALL_HINT = 'running on Dask needs dask[distributed]: pip install "napari-focus-stack[distributed]"'


@dataclass(frozen=True)
class StackOutcome:
    """What became of one stack.

    Attributes
    ----------
    name : str
    status : {"done", "skipped", "failed"}
        ``"skipped"``: a previous run had already finished it (resume).
    reason : str
        Why it failed, in one line; empty otherwise.
    n_frames : int
    seconds : float
        Time spent on it where it ran.
    warning : str
        Something about its data worth saying (NaN or Inf pixels), in one line.
    """

    name: str
    status: str
    reason: str = ""
    n_frames: int = 0
    seconds: float = 0.0
    warning: str = ""

    @property
    def failed(self):
        return self.status == "failed"


def describe_error(exc):
    """One line for people: the message, and the file for OS errors."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


#: OpenCV's thread count is process-wide: tasks running side by side in one
#: worker share it. The first task in sets it, the last one out restores it.
_OPENCV_THREADS = {"lock": threading.Lock(), "users": 0, "before": None}


@contextmanager
def opencv_threads(count):
    """Run with ``count`` OpenCV threads (None: leave as is), restored afterwards."""
    if count is None:
        yield
        return
    state = _OPENCV_THREADS
    with state["lock"]:
        if state["users"] == 0:
            state["before"] = cv2.getNumThreads()
            cv2.setNumThreads(int(count))
        state["users"] += 1
    try:
        yield
    finally:
        with state["lock"]:
            state["users"] -= 1
            if state["users"] == 0:
                cv2.setNumThreads(state["before"])


def worker_device(device):
    """The device a stack uses here: with ``"gpu:all"`` on a Dask worker, the worker's own GPU.

    Workers of a local cluster are named 0, 1, ...: worker ``i`` takes GPU
    ``i mod count``, so ``--workers 4 --device gpu:all`` on a 4-GPU machine
    runs four stacks at once, one per GPU. Other worker names are hashed.
    Outside a worker (a serial batch), ``"gpu:all"`` stays: each stack's
    tiles are spread over every GPU.
    """
    if str(device).lower() != "gpu:all":
        return device
    try:
        from distributed import get_worker

        name = get_worker().name
    except (ImportError, ValueError):  # not running on a Dask worker
        return device
    count = gpu_count()
    if count == 0:
        return device  # the engine says why there is no GPU
    index = name if isinstance(name, int) else zlib.crc32(str(name).encode())
    return f"gpu:{index % count}"


def process_one(stack, outdir, options):
    """Focus-stack one stack and write its outputs, all or nothing; never raises for bad data.

    Every output is checked and reserved before computing, written to a
    temporary file, and renamed into place together with the manifest, last,
    that marks the stack complete. A stack that fails (or is interrupted)
    leaves none of its files. A manifest left by an earlier run is removed
    first, so an interrupted rewrite is never taken as complete, and so are
    the temporary files of its outputs that a killed run left.

    Parameters
    ----------
    stack : Stack
    outdir : str or os.PathLike
        Existing output folder.
    options : BatchOptions

    Returns
    -------
    StackOutcome
        ``"done"``, or ``"failed"`` with the reason (unreadable or corrupt
        frames, too few frames, a memory budget too small, a format that
        cannot store the image, a write error).
    """
    started = time.perf_counter()
    warning = ""
    try:
        outputs = stack_outputs(stack, outdir, options)
        outputs.manifest.unlink(missing_ok=True)
        images = outputs.images()
        reserved = stack_io.OutputSet({**images, "manifest": outputs.manifest}, inputs=stack.paths, remove_stale=True)
        with reserved:
            inputs = input_fingerprints(stack)
            channels = stack_channels(stack)
            frames, several = channels[0], len(channels) > 1
            n_frames = len(frames)
            stack_io.check_storable(frames.dtype, outputs.fused)  # before computing
            if several and outputs.fused.suffix.lower() not in (".tif", ".tiff"):
                raise ValueError(f"{len(channels)} channels are written as one multi-channel TIFF: use --format tif")
            params = replace(options.params, device=worker_device(options.params.device))
            with opencv_threads(options.threads_per_stack):
                if several:
                    steps = iter_focus_stack_channels(
                        channels, params, depth_from=options.depth_from, max_memory=options.max_memory
                    )
                else:
                    maps = options.depth or options.confidence  # without them, the fused image alone
                    steps = iter_focus_stack(frames, params, max_memory=options.max_memory, maps=maps)
                result = drain(steps)
            warning = stack_io.non_finite_warning(result.metadata) or ""
            for role, (image, metadata) in result.output_images(images, stack=stack.name).items():
                reserved.write_image(role, image, metadata=metadata)
            record = manifest_record(stack, outputs, options, inputs, sizes=reserved.sizes())
            data = json.dumps(record, indent=1).encode()
            reserved.write("manifest", lambda file: file.write(data))
            reserved.commit()  # the manifest is renamed last
    except USER_DATA_ERRORS as exc:
        return StackOutcome(stack.name, "failed", describe_error(exc), len(stack.paths), time.perf_counter() - started)
    seconds = time.perf_counter() - started
    return StackOutcome(stack.name, "done", "", n_frames, seconds, warning)


def stack_many(stacks, outdir, *, client=None, workers=None, scheduler=None, resume=False, progress=None, **options):
    """Focus-stack every stack into ``outdir``, serially or on a Dask cluster.

    Parameters
    ----------
    stacks : list of Stack
        From :func:`napari_focus_stack.batch.group_by_subfolder` and friends.
    outdir : str or os.PathLike
        Created if missing. Each stack writes ``<name>.<format>`` (and
        ``<name>_depth.tif``, ``<name>_confidence.tif``) and ``<name>.json``,
        its manifest, with names made safe by
        :func:`~napari_focus_stack.batch.safe_output_name`.
    client : distributed.Client, optional
        Run one task per stack on this client's cluster.
    workers : int, optional
        Start a local cluster of this many single-threaded worker processes,
        listening on 127.0.0.1 only, for this call.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    resume : bool, optional
        Skip stacks a previous run finished with the same options and inputs
        (see :func:`~napari_focus_stack.batch.is_complete`).
    progress : callable, optional
        Called with each :class:`StackOutcome` as it arrives.
    **options
        :class:`~napari_focus_stack.batch.BatchOptions`: ``params`` (a
        :class:`~napari_focus_stack.engine.result.StackParams`) or the engine
        parameters as keywords (``radius``, ``method``, ``device``...),
        ``format``, ``depth``, ``confidence``, ``max_memory``, ``threads_per_stack``.
        On Dask ``threads_per_stack`` defaults to 1: stacks run side by side,
        one per worker thread.

    Returns
    -------
    list of StackOutcome
        In the order of ``stacks``.

    Raises
    ------
    BatchPlanError
        Outputs that would collide, overwrite inputs or land among them.
    StackWriteError
        The output folder cannot be created or written in.
    DeviceUnavailableError
        A GPU was asked for that this machine does not have (stacks run here).
    ValueError
        Options out of range, or more than one of ``client``, ``workers``,
        ``scheduler``.
    DaskMissingError
        A cluster was asked for without dask[distributed] installed.
    ConnectionError
        The scheduler cannot be reached.

    Examples
    --------
    >>> from distributed import Client  # doctest: +SKIP
    >>> stacks = group_by_subfolder("scans/")  # doctest: +SKIP
    >>> outcomes = stack_many(stacks, "fused/", client=Client("tcp://head:8786"), depth=True)  # doctest: +SKIP
    >>> [o.name for o in outcomes if o.failed]  # doctest: +SKIP
    []
    """
    if sum(choice is not None for choice in (client, workers, scheduler)) > 1:
        raise ValueError("give at most one of client, workers and scheduler")
    on_dask = any(choice is not None for choice in (client, workers, scheduler))
    options = BatchOptions(**options)
    if on_dask and options.threads_per_stack is None:
        options = replace(options, threads_per_stack=1)
    outdir = Path(outdir).absolute()
    # absolute paths, so that workers started elsewhere find the same files
    stacks = [replace(stack, paths=[os.path.abspath(path) for path in stack.paths]) for stack in stacks]
    plans = plan_outputs(stacks, outdir, options)
    check_before_running(options, outdir, here=client is None and scheduler is None)

    outcomes = [None] * len(stacks)
    pending = {}
    for index, (stack, outputs) in enumerate(zip(stacks, plans)):
        if resume and is_complete(stack, outputs, options):
            outcomes[index] = StackOutcome(stack.name, "skipped", n_frames=len(stack.paths))
            _report(progress, outcomes[index])
        else:
            pending[index] = stack
    if pending:
        with _executor(client, workers, scheduler) as run:
            for index, outcome in run(pending, outdir, options):
                outcomes[index] = outcome
                _report(progress, outcome)
    return outcomes


def check_before_running(options, outdir, *, here=True):
    """What would fail every stack, checked once before any: the output folder, and
    (``here``: stacks run on this machine) the GPU asked for."""
    device = options.params.device
    if here and str(device).lower() not in ("auto", "cpu"):
        get_backends(device)
    check_output_folder(outdir)


def check_output_folder(outdir):
    """Create ``outdir`` if needed and check that files can be made in it, before any stack runs.

    Raises :class:`~napari_focus_stack.io.StackWriteError` naming the folder.
    """
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise stack_io.StackWriteError(f"the output folder {outdir} is a file, not a folder")
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise stack_io.StackWriteError(f"cannot create the output folder {outdir}: {exc.strerror or exc}") from None
    if not outdir.is_dir():
        raise stack_io.StackWriteError(f"the output folder {outdir} is not a folder")
    probe = outdir / f".napari-focus-stack.{os.getpid()}.{threading.get_ident()}.probe"
    try:
        with open(probe, "xb"):
            pass
    except OSError as exc:
        raise stack_io.StackWriteError(f"cannot write in the output folder {outdir}: {exc.strerror or exc}") from None
    probe.unlink(missing_ok=True)


def _report(progress, outcome):
    if progress is not None:
        progress(outcome)


@contextmanager
def _executor(client, workers, scheduler):
    """``run(pending, outdir, options)``: yields ``(index, outcome)`` for each
    ``{index: stack}`` of ``pending``, as they finish."""
    if client is not None:
        yield _on_client(client)
    elif workers is not None:
        with local_client(workers) as local:
            yield _on_client(local)
    elif scheduler is not None:
        with remote_client(scheduler) as remote:
            yield _on_client(remote)
    else:
        yield _serially


def _serially(pending, outdir, options):
    for index, stack in pending.items():
        yield index, process_one(stack, outdir, options)


def _on_client(client):
    def run(pending, outdir, options):
        from distributed import as_completed

        futures = {
            client.submit(process_one, stack, outdir, options, pure=False): index for index, stack in pending.items()
        }
        for future in as_completed(futures):
            index = futures[future]
            yield index, _outcome_of(future, pending[index])

    return run


def _outcome_of(future, stack):
    """The task's outcome; a worker that died (killed, out of memory) fails only its stack."""
    from distributed import KilledWorker

    try:
        return future.result()
    except KilledWorker:
        reason = "the Dask worker running it died (out of memory, or killed)"
        return StackOutcome(stack.name, "failed", reason, len(stack.paths))


class DaskMissingError(ImportError):
    """A cluster was asked for, but dask[distributed] is not installed."""


def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise DaskMissingError(_INSTALL_HINT) from None
    return distributed


@contextmanager
def local_client(workers):
    """A client of a local cluster of ``workers`` single-threaded processes on 127.0.0.1."""
    distributed = _import_distributed()
    import dask

    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    with dask.config.set(_KEEP_GLIBC_MALLOC_DEFAULTS):
        cluster = distributed.LocalCluster(
            n_workers=int(workers),
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            silence_logs=_LOCAL_CLUSTER_LOG_LEVEL,
        )
    with cluster, distributed.Client(cluster) as client:
        yield client


@contextmanager
def remote_client(address):
    """A client of the running cluster whose scheduler is at ``address``."""
    distributed = _import_distributed()
    try:
        client = distributed.Client(address)
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"cannot reach the Dask scheduler at {address}: {describe_error(exc)}") from None
    with client:
        yield client
