"""Run a generator of per-frame progress in a napari worker thread.

The engine is a generator that yields once per frame and returns its result
(see :mod:`napari_focus_stack.engine.pipeline`). :class:`FrameTask` feeds such
a generator to napari's ``create_worker``, so the viewer stays responsive,
napari's progress bar advances per frame and errors appear as notifications.
``synchronous=True`` runs the same generator on the calling thread instead
(for tests and scripts), calling the same callbacks.
"""

import threading

from napari.qt.threading import create_worker
from napari.utils import progress
from napari.utils.notifications import show_error

from ..engine.result import StackCancelled

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

    def start(
        self, *, on_returned, on_cancelled=None, on_failed=None, on_finished=None, synchronous=False
    ):
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

        if synchronous:
            try:
                returned(self._drain())
            finally:
                finished()
            return
        function, args, kwargs = self._call
        self.worker = create_worker(
            _until_cancelled,
            function,
            *args,
            _progress={"total": self._total, "desc": self._description},
            _connect={"returned": returned, "errored": failed, "finished": finished},
            _start_thread=False,
            **kwargs,
        )
        self.worker.start()

    def cancel(self):
        """Ask the work to stop; it does before its next frame."""
        self.cancel_event.set()

    def _drain(self):
        function, args, kwargs = self._call
        steps = _until_cancelled(function, *args, **kwargs)
        with progress(total=self._total, desc=self._description) as bar:
            while True:
                try:
                    next(steps)
                except StopIteration as done:
                    return done.value
                bar.update(1)
