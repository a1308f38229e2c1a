"""Runs as generators: every stage yields an event per frame and returns its result.

:func:`drain` runs one to its end; :func:`mapped` passes one on with its
events changed (frame indices into overall :class:`~.result.Progress`).
"""


def drain(steps, on_event=None):
    """Run generator ``steps`` to its end, passing what it yields to ``on_event``; return its value."""
    while True:
        try:
            event = next(steps)
        except StopIteration as done:
            return done.value
        if on_event is not None:
            on_event(event)


def mapped(steps, change):
    """Re-yield ``change(event)`` for every event of generator ``steps``; return its value.

    >>> def count():
    ...     yield 1
    ...     yield 2
    ...     return "done"
    >>> events = []
    >>> drain(mapped(count(), lambda k: 10 * k), events.append), events
    ('done', [10, 20])
    """
    while True:
        try:
            event = next(steps)
        except StopIteration as done:
            return done.value
        yield change(event)
