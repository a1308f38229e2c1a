"""Compile the GPU path's kernels once per machine: ``napari-focus-stack --warm-up``.

CuPy compiles a kernel the first time a process uses it (NVRTC), which
takes seconds per kernel and added up to 17.7 s on the first 12 MP run of
a fresh H100 machine; it also keeps what it compiled on disk (its kernel
cache, ``CUPY_CACHE_DIR``, by default ``~/.cupy/kernel_cache``), so later
processes on the machine load them instead. :func:`warm_up` runs every GPU
code path once on small simulated stacks, so that the first real stack
runs warm: every fusion method, gray and RGB, 8- and 16-bit, with and
without warping, with the default window sizes (other ``--radius`` and
``--smoothing`` values compile their own filter kernels on first use, once).
"""

import time

from .engine.backend.gpu import usable_cache_dir

#: Side (px) of the stacks the kernels are compiled on: big enough for the
#: alignment to run (128 px at least), small enough to take no time.
WARM_UP_SIDE = 192
WARM_UP_FRAMES = 4


def warm_up_cases():
    """``(description, simulate_stack options, focus_stack options)`` of every run :func:`warm_up` makes."""
    from .engine.result import METHODS

    cases = []
    for method in METHODS:
        for rgb, dtype in ((True, "uint8"), (False, "uint16")):
            for moving in (False, True):
                what = f"{method}, {'RGB' if rgb else 'gray'} {dtype}, {'warped' if moving else 'still'}"
                simulate = dict(rgb=rgb, dtype=dtype, breathing=0.06 if moving else 0.0, seed=len(cases))
                cases.append((what, simulate, dict(method=method, align="similarity" if moving else "none")))
    return cases


def warm_up(device="gpu", progress=None):
    """Run every GPU code path once, so that CuPy compiles (and caches on disk) its kernels.

    Parameters
    ----------
    device : str
        ``"gpu"`` (the current one) or ``"gpu:N"``.
    progress : callable, optional
        Called with ``(done, total, description)`` after each run.

    Returns
    -------
    dict
        ``runs``, ``seconds``, ``cache`` (the kernel cache folder) and
        ``device`` (what ran them).

    Raises
    ------
    DeviceUnavailableError
        Without a usable GPU.
    """
    cache = usable_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    from .api import focus_stack
    from .engine.backend import get_backend
    from .synthetic import simulate_stack

    get_backend(device)  # DeviceUnavailableError now, before any stack is made
    cases = warm_up_cases()
    started = time.perf_counter()
    for done, (what, simulate, options) in enumerate(cases, start=1):
        sim = simulate_stack((WARM_UP_SIDE, WARM_UP_SIDE), WARM_UP_FRAMES, **simulate)
        result = focus_stack(sim.frames, device=device, **options)
        if progress is not None:
            progress(done, len(cases), what)
    return {"runs": len(cases), "seconds": time.perf_counter() - started, "cache": cache, "device": result.device}


def warm_up_parser(prog):
    """The options of ``napari-focus-stack --warm-up``."""
    import argparse

    p = argparse.ArgumentParser(
        prog=f"{prog} --warm-up",
        description="Compile the GPU kernels once for this machine (CuPy keeps them on disk), so that the first "
        "stack runs at full speed. Takes up to a minute on a fresh machine, about a second once compiled.",
    )
    p.add_argument("--device", default="gpu", metavar="gpu[:N]", help="the GPU to compile for (default: the current)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but errors")
    return p


def run_warm_up(args):
    """:func:`warm_up` for the command line: one line per run on stderr, then where the kernels are."""
    import sys

    if not str(args.device).startswith("gpu"):
        from .engine.backend import DeviceUnavailableError

        raise DeviceUnavailableError(f"--warm-up compiles GPU kernels: give --device gpu or gpu:N, not {args.device}")

    def say(done, total, what):
        if not args.quiet:
            print(f"warm-up {done}/{total}: {what}", file=sys.stderr, flush=True)

    done = warm_up(args.device, progress=say)
    if not args.quiet:
        print(
            f"GPU kernels ready on {done['device']}: {done['runs']} runs in {done['seconds']:.1f} s; "
            f"CuPy keeps them in {done['cache']}",
            file=sys.stderr,
        )
    return 0
