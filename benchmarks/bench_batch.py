"""Benchmark batch processing: a plain serial loop against ``batch`` on Dask.

100 simulated stacks of 1 MP x 10 RGB JPEG frames (quality 95) are written
once into ``benchmarks/_cache/batch-100x1mp/`` (one sub-folder per stack) and
reused. Each configuration runs as its own process, timed from start to exit
(interpreter start-up, imports and cluster start-up included), with the
engine held to one OpenCV thread per stack:

- ``serial loop``: ``focus_stack`` + ``save_image`` for each stack in a plain
  Python loop, the reference;
- ``batch``: ``napari-focus-stack batch`` on its serial path;
- ``batch --workers 1`` and ``batch --workers 2``: a local Dask cluster of one
  or two single-threaded worker processes.

Prints a markdown table with each configuration's median and best wall time
over ``--repeat`` interleaved rounds (the machine may be shared: the best
round is the least disturbed), and the two ratios the targets are about:
Dask overhead (``--workers 1`` / serial loop, target <= 1.10) and scaling
(``--workers 2`` / ``--workers 1``, target <= 0.55 on 2 cores).

Usage::

    python benchmarks/bench_batch.py              # one round (about 3 minutes)
    python benchmarks/bench_batch.py --repeat 3
"""

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "_cache" / "batch-100x1mp"
OUT = HERE / "_out" / "batch"
N_STACKS = 100
N_FRAMES = 10
SHAPE = (864, 1152)  # 1 MP
SCENES = [("mixed", "dome"), ("cells", "steps"), ("photo", "waves"), ("noise", "slope")]

#: The plain loop the Dask path is measured against; runs in its own process.
SERIAL_LOOP = """
import sys, cv2
from pathlib import Path
from napari_focus_stack import focus_stack
from napari_focus_stack.io import save_image
cv2.setNumThreads(1)
root, out = Path(sys.argv[1]), Path(sys.argv[2])
out.mkdir(parents=True, exist_ok=True)
for folder in sorted(p for p in root.iterdir() if p.is_dir()):
    result = focus_stack(sorted(folder.glob("*.jpg")))
    save_image(result.fused, out / f"{folder.name}.tif", metadata=result.provenance())
"""


def write_stack(index):
    from napari_focus_stack.io import save_image
    from napari_focus_stack.synthetic import simulate_stack

    texture, depth = SCENES[index % len(SCENES)]
    folder = CACHE / f"stack_{index:03d}"
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    sim = simulate_stack(SHAPE, N_FRAMES, texture=texture, depth=depth, rgb=True, noise=0.01, seed=index)
    for k, frame in enumerate(sim.frames):
        save_image(frame, partial / f"z{k:02d}.jpg")
    partial.rename(folder)  # a stack is in the cache whole or not at all


def ensure_stacks():
    """Simulate the stacks the cache lacks (about a minute on 2 cores, once)."""
    missing = [i for i in range(N_STACKS) if not (CACHE / f"stack_{i:03d}").is_dir()]
    if missing:
        print(f"simulating {len(missing)} stacks into {CACHE} ...", file=sys.stderr)
        with ProcessPoolExecutor(os.cpu_count()) as pool:
            list(pool.map(write_stack, missing))
    for partial in CACHE.glob("*.partial"):
        shutil.rmtree(partial)


def configurations():
    cli = [sys.executable, "-m", "napari_focus_stack.cli", "batch", str(CACHE), "-q", "--threads-per-stack", "1"]
    return {
        "serial loop": lambda out: [sys.executable, "-c", SERIAL_LOOP, str(CACHE), str(out)],
        "batch (serial path)": lambda out: [*cli, "-o", str(out)],
        "batch --workers 1": lambda out: [*cli, "-o", str(out), "--workers", "1"],
        "batch --workers 2": lambda out: [*cli, "-o", str(out), "--workers", "2"],
    }


def time_run(argv, out):
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run(argv, check=True)
    seconds = time.perf_counter() - started
    written = len(list(out.glob("*.tif")))
    if written != N_STACKS:
        raise RuntimeError(f"{argv}: wrote {written} of {N_STACKS} fused images")
    return seconds


def load_average():
    return "/".join(f"{value:.2f}" for value in os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="interleaved rounds (median reported)")
    args = parser.parse_args()
    ensure_stacks()
    configs = configurations()
    times = {name: [] for name in configs}
    load_before = load_average()
    for _ in range(args.repeat):
        for name, argv in configs.items():
            out = OUT / "_".join(name.replace("(", "").replace(")", "").replace("-", "").split())
            times[name].append(time_run(argv(out), out))
    load_after = load_average()
    median = {name: statistics.median(values) for name, values in times.items()}
    reference = median["serial loop"]

    print(f"\n{N_STACKS} stacks of {SHAPE[1]}x{SHAPE[0]} px x {N_FRAMES} RGB JPEG frames, one OpenCV thread per stack")
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average "
        f"(1/5/15 min) {load_before} before, {load_after} after; median of {args.repeat} round(s)\n"
    )
    best = {name: min(values) for name, values in times.items()}
    print("| configuration | median wall time (s) | best (s) | median per stack (s) | median vs serial loop |")
    print("|---|---:|---:|---:|---:|")
    for name, seconds in median.items():
        print(f"| {name} | {seconds:.1f} | {best[name]:.1f} | {seconds / N_STACKS:.3f} | {seconds / reference:.2f} |")
    for label, of in (("median", median), ("best", best)):
        overhead = of["batch --workers 1"] / of["serial loop"]
        scaling = of["batch --workers 2"] / of["batch --workers 1"]
        print(
            f"\n{label}: Dask overhead, --workers 1 / serial loop: {overhead:.2f} (target <= 1.10); "
            f"scaling, --workers 2 / --workers 1: {scaling:.2f} (target <= 0.55)"
        )
    if args.repeat > 1:
        print("\nall rounds (s): " + "; ".join(f"{n}: {', '.join(f'{t:.1f}' for t in v)}" for n, v in times.items()))


if __name__ == "__main__":
    main()
