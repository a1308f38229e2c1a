"""GPU check: CPU/GPU agreement, then speed and device memory at 12, 24 and 45 MP.

    python benchmarks/gpu_check.py [--sizes 12,24,45] [--frames 10] [--repeat 3]

Self-contained and short (under 5 minutes on an H100): run it on a machine
with CuPy and a CUDA GPU and paste its tables into benchmarks/RESULTS.md.
Frames are made on the host (not read from files), as the targets assume.
"""

import argparse
import platform
import statistics
import sys
import time

import numpy as np

#: The original tool's published figures (RTX 3060), for comparison.
ORIGINAL_TOOL = {12: ("5-10 s", "4 GB"), 24: ("15-20 s", "6 GB"), 45: ("30-40 s", "10 GB"), 100: ("out of memory", ">12 GB")}

#: Targets of issue 5 on an H100 (seconds), frames already in host memory.
TARGETS = {12: 0.3, 45: 1.5}


def table(title, header, rows):
    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")
    sys.stdout.flush()


def host_frames(megapixels, n_frames, seed=0):
    """RGB uint8 frames of about ``megapixels`` MP, 4:3, sharp in different places."""
    import cv2

    width = int(round((megapixels * 1e6 * 4 / 3) ** 0.5))
    height = int(round(width * 3 / 4))
    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8), (width, height))
    base = cv2.addWeighted(base, 0.7, rng.integers(0, 256, (height, width, 3), dtype=np.uint8), 0.3, 0)
    sigmas = (0.3, 1.5, 3.0, 6.0)
    blurred = [cv2.GaussianBlur(base, (0, 0), s) for s in sigmas]
    ramp = np.linspace(0, n_frames - 1, width, dtype=np.float32)  # frame k is sharp in column band k
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for k in range(n_frames):
        level = np.clip(np.searchsorted(sigmas, 0.3 + 1.2 * np.abs(ramp - k)), 0, len(sigmas) - 1)
        for i, image in enumerate(blurred):
            columns = level == i
            frames[k][:, columns] = image[:, columns]
    return frames


def agreement(cpu, gpu):
    """CPU vs GPU results on simulated stacks: max differences."""
    from napari_focus_stack import focus_stack, simulate_stack

    rows = []
    for rgb, dtype, method in [(False, "uint8", "depthmap"), (True, "uint8", "depthmap"), (True, "uint16", "pyramid"), (True, "uint8", "pyramid")]:
        sim = simulate_stack((384, 384), 10, rgb=rgb, dtype=dtype, noise=0.01, seed=3)
        a = focus_stack(sim.frames, method=method, device=cpu)
        b = focus_stack(sim.frames, method=method, device=gpu)
        textured = a.confidence > 0.2
        rows.append(
            [
                f"{'RGB' if rgb else 'gray'} {dtype} {method}",
                f"{np.abs(a.depth - b.depth)[textured].max():.2e}",
                f"{np.abs(a.confidence - b.confidence).max():.2e}",
                int(np.abs(a.fused.astype(np.int64) - b.fused).max()),
                f"{np.mean(a.fused != b.fused):.1e}",
            ]
        )
    table(
        "CPU vs GPU agreement (384x384 x 10 simulated; tolerance: float32 rounding, fused within 1 grey level)",
        ["case", "max depth diff (textured, slices)", "max confidence diff", "max fused diff (levels)", "fused pixels differing"],
        rows,
    )


def timed_run(frames, device, align, max_memory=None):
    """Seconds for one synchronised focus_stack run, and the pool's peak bytes."""
    import cupy

    from napari_focus_stack import focus_stack

    pool = cupy.get_default_memory_pool()
    pool.free_all_blocks()
    cupy.cuda.Device().synchronize()
    start = time.perf_counter()
    kwargs = {} if align is None else {"align": align}
    result = focus_stack(frames, device=device, max_memory=max_memory, **kwargs)
    cupy.cuda.Device().synchronize()
    seconds = time.perf_counter() - start
    # blocks stay cached in the pool until freed: its size after the run is the peak
    return seconds, pool.total_bytes(), result


def speed(sizes, n_frames, repeat, device, align_modes):
    rows = []
    for mp in sizes:
        frames = host_frames(mp, n_frames)
        for align in align_modes:
            try:
                timed_run(frames[:3], device, align)  # warm-up: kernels compiled, pool primed
            except (TypeError, ValueError) as exc:
                rows.append([f"{mp} MP", align or "none", f"skipped: {exc}", "", "", "", "", ""])
                continue
            times, peaks = [], []
            for _ in range(repeat):
                seconds, peak, result = timed_run(frames, device, align)
                times.append(seconds)
                peaks.append(peak)
            median = statistics.median(times)
            mpix = frames.shape[1] * frames.shape[2] / 1e6
            target = TARGETS.get(mp)
            original, vram = ORIGINAL_TOOL.get(mp, ("", ""))
            rows.append(
                [
                    f"{mpix:.1f} MP x {n_frames}",
                    align or "none",
                    f"{median:.3f}",
                    f"{mpix * n_frames / median:.0f}",
                    f"{max(peaks) / 2**30:.2f}",
                    result.metadata.get("tiles", 1),
                    "" if target is None or align not in (None, "none") else ("yes" if median <= target else f"no (target {target} s)"),
                    f"{original} / {vram}",
                ]
            )
        del frames
    table(
        f"GPU speed: median of {repeat} after warm-up, frames in host memory (RGB uint8)",
        ["size", "align", "seconds", "MP*frames/s", "peak device GiB", "tiles", "meets target", "original tool (RTX 3060) / VRAM"],
        rows,
    )


def budget_check(n_frames, device):
    """45 and 100 MP within a 2 GB working budget."""
    rows = []
    for mp in (45, 100):
        frames = host_frames(mp, n_frames)
        seconds, peak, result = timed_run(frames, device, None, max_memory=2 * 2**30)
        rows.append([f"{mp} MP x {n_frames}", f"{seconds:.2f}", f"{peak / 2**30:.2f}", result.metadata["tiles"]])
        del frames
    table("Within a 2 GB budget (max_memory=2 GiB)", ["size", "seconds", "peak device GiB", "tiles"], rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="12,24,45", help="megapixels, comma-separated")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="gpu")
    parser.add_argument("--skip-budget", action="store_true", help="skip the 45/100 MP 2 GB budget runs")
    args = parser.parse_args(argv)

    from napari_focus_stack.engine.backend import gpu_status
    from napari_focus_stack.engine.result import ALIGN_MODES

    ok, why = gpu_status()
    print(f"# GPU check — {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, Python {platform.python_version()}")
    if not ok:
        print(f"No GPU: {why}")
        return 1
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(0)
    print(
        f"Device: {props['name'].decode()}, {props['totalGlobalMem'] / 2**30:.0f} GiB, "
        f"CuPy {cupy.__version__}, CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, "
        f"{cupy.cuda.runtime.getDeviceCount()} device(s)"
    )
    started = time.perf_counter()
    agreement("cpu", args.device)
    aligns = [None] + [mode for mode in ALIGN_MODES if mode not in ("none",)][:1]
    speed([int(s) for s in args.sizes.split(",")], args.frames, args.repeat, args.device, aligns)
    if not args.skip_budget:
        budget_check(args.frames, args.device)
    print(f"\nTotal time: {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
