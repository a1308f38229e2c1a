"""Memory: how a device's working memory is planned (:class:`MemoryPolicy`), how much host
memory is available, and NumPy's huge-page policy for one-shot runs."""

import contextlib
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class MemoryPolicy:
    """How a backend's working memory is planned: what tiling and banding need to know of a device.

    Attributes
    ----------
    frames_in_budget : bool
        Whether the budget also holds the whole decoded frames (it is the
        host's memory); a GPU's budget holds only what is on the GPU.
    budget_share : float
        Share of the budget that tiles are planned to use: the rest is left
        for what an allocator keeps beyond the arrays in use (CuPy's pool).
    band_pixels : int or None
        Pixels per band of the per-pixel stages, where the device wants it (a
        GPU: fewer, larger bands, fewer kernel launches); None: the rows
        callers ask for (small bands that stay in the CPU's cache).
    warp_band_pixels : int
        Output pixels warped at a time on the device; bounds the warp's
        temporaries (about 150 bytes per pixel of a band,
        :func:`~napari_focus_stack.engine.tiling.warp_band_bytes`) and, on a
        GPU, the kernel launches.
    """

    frames_in_budget: bool = True
    budget_share: float = 1.0
    band_pixels: int | None = None
    warp_band_pixels: int = 2**16

    def rows_per_band(self, width, rows):
        """Rows of a band of an image ``width`` pixels wide: ``rows`` unless :attr:`band_pixels` is set."""
        return rows if self.band_pixels is None else max(rows, self.band_pixels // max(1, int(width)))

    def reserved_band_pixels(self, device_warp):
        """Pixels of a band whose temporaries a budget sets aside (0: the per-pixel count covers them)."""
        if self.band_pixels:
            return self.band_pixels
        return self.warp_band_pixels if device_warp else 0

    def tile_plan(self, device_warp):
        """The keyword arguments of :func:`~napari_focus_stack.engine.tiling.plan_tiles` for this device.

        >>> MemoryPolicy().tile_plan(device_warp=False)
        {'frames_in_budget': True, 'band_pixels': 0, 'device_warp': False}
        """
        return {
            "frames_in_budget": self.frames_in_budget,
            "band_pixels": self.reserved_band_pixels(device_warp),
            "device_warp": device_warp,
        }


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
