"""Large stacks within a fixed memory budget, on the CPU (or any device).

    python benchmarks/bench_budget.py [--sizes 45,100] [--frames 10] [--budget-gib 2] [--device cpu]

Frames are RGB uint8, made in host memory by ``gpu_check.host_frames`` (the
targets assume decoded frames). For each size it prints the time, the number
of tiles and the traced peak of NumPy allocations beyond the frames
themselves, split into the outputs (which the caller keeps) and the working
memory that the budget bounds.
"""

import argparse
import platform
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpu_check import host_frames, table


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="45,100", help="megapixels, comma-separated")
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--budget-gib", type=float, default=2.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--align", default="none")
    args = parser.parse_args(argv)

    from napari_focus_stack import focus_stack

    budget = int(args.budget_gib * 2**30)
    print(f"# Memory budget check — {time.strftime('%Y-%m-%d %H:%M')}, {platform.node()}, device {args.device}")
    rows = []
    for mp in (float(s) for s in args.sizes.split(",")):
        frames = host_frames(mp, args.frames, moving=args.align != "none")
        tracemalloc.start()
        start = time.perf_counter()
        result = focus_stack(frames, device=args.device, max_memory=budget, align=args.align)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        outputs = result.fused.nbytes + result.depth.nbytes + result.confidence.nbytes
        stages = ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items() if k != "total")
        rows.append(
            [
                f"{frames.shape[2]}x{frames.shape[1]} ({mp:g} MP) x {args.frames}",
                f"{frames.nbytes / 2**30:.2f}",
                f"{seconds:.1f}",
                result.metadata["tiles"],
                f"{outputs / 2**30:.2f}",
                f"{(peak - outputs) / 2**30:.2f}",
                "yes" if peak - outputs <= budget else "NO",
                stages,
            ]
        )
        del frames, result
    table(
        f"Within a {args.budget_gib:g} GiB budget (max_memory), align {args.align}",
        [
            "size",
            "frames GiB (input)",
            "seconds",
            "tiles",
            "outputs GiB",
            "working GiB (traced peak - outputs)",
            "within budget",
            "stage seconds",
        ],
        rows,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
