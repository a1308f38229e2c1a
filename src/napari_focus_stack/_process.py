"""Settings of the command line's own process (the napari process and library callers are left alone)."""

import sys

#: In this process, freed blocks up to this size stay with the allocator
#: (glibc's mmap threshold) and free memory is given back to the system only
#: beyond the trim threshold (see :func:`keep_freed_memory`).
MALLOC_MMAP_THRESHOLD = 64 * 2**20
MALLOC_TRIM_THRESHOLD = 256 * 2**20


def keep_freed_memory():
    """Let glibc keep freed frame-sized blocks for the next frame instead of returning them to the system.

    Decoded frames and OpenCV's temporaries are fresh blocks of tens of MiB,
    by default mapped from the system and unmapped when freed, so each frame
    is faulted in again: 490k faults, 1.2-1.5 s of system time at 12 MP x 10;
    about 0.6 s less with the blocks kept, peak RSS 30-50 MiB higher
    (benchmarks/RESULTS.md). The command line only; glibc only.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not sys.platform.startswith("linux") or name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD)
    mallopt(M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD)
