"""Host memory: how much is available, and NumPy's huge-page policy for one-shot runs."""

import contextlib
import os


def host_available_memory():
    """Bytes of host memory available to new allocations, or None if unknown."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def _hugepage_switch():
    """NumPy's switch for ``madvise(MADV_HUGEPAGE)`` on large arrays, or None."""
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return __import__(module, fromlist=["_"])._set_madvise_hugepage
        except (ImportError, AttributeError):
            continue
    return None


@contextlib.contextmanager
def small_pages():
    """Ordinary pages for new NumPy arrays within the block, for a one-shot run.

    NumPy asks Linux for transparent huge pages for arrays of 4 MiB and more.
    The first touch of a huge page can make the kernel compact memory first:
    on the benchmark machine, writing 20 fresh 12 MP float32 arrays took 2.5 s
    with huge pages and 0.55 s without. Later runs in the same process reuse
    the freed huge pages and are faster with them (0.16 s), so only the
    one-stack command line, whose arrays are nearly all first touches, turns
    them off (not for the pyramid method, which makes new levels per frame). Nothing changes when ``NUMPY_MADVISE_HUGEPAGE`` is set (the user
    decided) or NumPy lacks the switch; the previous setting is restored.
    """
    switch = _hugepage_switch()
    if switch is None or "NUMPY_MADVISE_HUGEPAGE" in os.environ:
        yield
        return
    previous = switch(False)
    try:
        yield
    finally:
        switch(previous)
