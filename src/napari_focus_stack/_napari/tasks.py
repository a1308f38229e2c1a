"""Work off the main thread: the one way the napari glue starts workers.

:func:`start_worker` runs a function or generator in a napari worker thread
(callbacks connected before it starts) or, with ``synchronous=True``, on the
calling thread with the same callbacks (for tests and scripts); every worker
of the plugin starts through it.

The engine is a generator that yields once per frame and returns its result
(see :mod:`napari_focus_stack.engine.pipeline`). :class:`FrameTask` runs such
a generator with a cancel event, so the viewer stays responsive, napari's
progress bar advances per frame and errors appear as notifications.
"""

import inspect
import threading

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error

from ..engine.result import StackCancelled
from ..engine.steps import drain

#: Returned by a cancelled task's generator in place of a result.
CANCELLED = object()


def _until_cancelled(steps_function, *args, **kwargs):
    """Delegate to ``steps_function``'s generator; a cancellation returns CANCELLED.

    Turning StackCancelled into a return value keeps a cancel from being
    reported as an error.
    """
    try:
        return (yield from steps_function(*args, **kwargs))
    except StackCancelled:
        return CANCELLED


class FrameTask:
    """One run of ``steps_function(*args, cancel=event, **kwargs)``.

    Parameters
    ----------
    steps_function : generator function
        Yields once per frame, returns the result; stops with
        :class:`StackCancelled` when its ``cancel`` event is set.
    total : int
        Number of yields expected, for the progress bar.
    description : str
        Shown beside the progress bar.
    """

    def __init__(self, steps_function, *args, total, description, **kwargs):
        self.cancel_event = threading.Event()
        self.worker = None
        self._call = (steps_function, args, {**kwargs, "cancel": self.cancel_event})
        self._total = total
        self._description = description

    def start(self, *, on_returned, on_cancelled=None, on_failed=None, on_finished=None, synchronous=False):
        """Start the work; ``on_returned(result)`` runs on the main thread.

        Errors are shown as notifications and passed to ``on_failed(error)``;
        with ``synchronous=True`` they are raised to the caller instead.
        ``on_finished()`` runs afterwards in every case.
        """

        def returned(value):
            if value is CANCELLED:
                if on_cancelled is not None:
                    on_cancelled()
            else:
                on_returned(value)

        def failed(error):
            show_error(f"{self._description} failed: {error}")
            if on_failed is not None:
                on_failed(error)

        def finished():
            if on_finished is not None:
                on_finished()

        function, args, kwargs = self._call
        self.worker = start_worker(
            _until_cancelled,
            function,
            *args,
            progress={"total": self._total, "desc": self._description},
            on_returned=returned,
            on_failed=failed,
            on_finished=finished,
            synchronous=synchronous,
            **kwargs,
        )

    def cancel(self):
        """Ask the work to stop; it does before its next frame."""
        self.cancel_event.set()


def start_worker(
    function,
    *args,
    on_returned=None,
    on_yielded=None,
    on_failed=None,
    on_finished=None,
    progress=None,
    synchronous=False,
    reported=(),
    ignore_errors=False,
    **kwargs,
):
    """Run ``function(*args, **kwargs)`` (a function or a generator function) in a napari worker thread.

    The callbacks run on the main thread: ``on_yielded(value)`` for each
    value a generator yields, ``on_returned(result)``, ``on_failed(error)``,
    and ``on_finished()`` afterwards in every case. ``progress`` (napari's
    ``{"total": ..., "desc": ...}``) shows a progress bar. Without
    ``on_failed`` (and ``ignore_errors``) an error is raised on the main thread,
    as napari does. Returns the started worker.

    ``synchronous=True`` runs it on the calling thread instead, with the
    same callbacks, and returns None; errors are raised to the caller,
    except those of the types in ``reported``, passed to ``on_failed``.
    """
    if synchronous:
        return _run_here(function, args, kwargs, on_returned, on_yielded, on_failed, on_finished, progress, reported)
    connect = {"returned": on_returned, "yielded": on_yielded, "errored": on_failed, "finished": on_finished}
    worker = create_worker(
        function,
        *args,
        _progress=progress,
        _start_thread=False,
        _ignore_errors=ignore_errors,
        _connect={signal: callback for signal, callback in connect.items() if callback is not None},
        **kwargs,
    )
    worker.start()
    return worker


def _run_here(function, args, kwargs, on_returned, on_yielded, on_failed, on_finished, progress_bar, reported):
    try:
        try:
            if inspect.isgeneratorfunction(function):
                result = _drain(function(*args, **kwargs), on_yielded, progress_bar or {})
            else:
                result = function(*args, **kwargs)
        except reported as error:
            on_failed(error)
            return None
        if on_returned is not None:
            on_returned(result)
        return None
    finally:
        if on_finished is not None:
            on_finished()


def _drain(steps, on_yielded, bar_options):
    """Run a generator to its end with a progress bar; its return value."""
    with progress(total=bar_options.get("total"), desc=bar_options.get("desc")) as bar:

        def event(value):
            if on_yielded is not None:
                on_yielded(value)
            bar.update(1)

        return drain(steps, event)
