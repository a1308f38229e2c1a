"""The 12 MP x 10 JPEG command against the fastest peer, interleaved: wall, CPU seconds, peak memory (issue 15).

    python benchmarks/vs_fastest_peer.py [--repeat 4] [--focusweave PATH] [--size 12mp]

The stack is ``bench.py``'s (``benchmarks/_cache/12mp-mixed-dome``, made on
first use). Each round runs, in fresh processes (``bench.run_measured``: the
child's own wall time, CPU and peak RSS), our command writing the fused
image only, our command writing depth and confidence too, and focusweave
(``--no-align --keep-size``, its defaults otherwise: the fastest peer here)
in an order that alternates from round to round, after one warm-up run of
each. Printed: medians, and the median over rounds of our wall time over
focusweave's in the same round (targets: <= 0.5x, <= 4.5 CPU-s, peak
< 1 GB).
"""

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import CASES, SIZES, ensure_case, run_measured  # noqa: E402

OURS = Path(sys.executable).parent / "napari-focus-stack"
FOCUSWEAVE = Path("/root/peers/focusweave/bin/focusweave")


def commands(frames, out, focusweave):
    return {
        "ours, fused only": [OURS, frames, "-o", out / "ours.tif", "--quiet"],
        "ours, + depth and confidence": [
            OURS,
            frames,
            "-o",
            out / "ours-maps.tif",
            "--depth",
            out / "depth.tif",
            "--confidence",
            out / "confidence.tif",
            "--quiet",
        ],
        "focusweave": [focusweave, frames, "--output", out / "focusweave.tif", "--no-align", "--keep-size"],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=4)
    parser.add_argument("--size", default="12mp", choices=SIZES)
    parser.add_argument("--focusweave", type=Path, default=FOCUSWEAVE)
    parser.add_argument("--cache", type=Path, default=HERE / "_cache")
    args = parser.parse_args(argv)
    case = next(c for c in CASES if c.size == args.size and c.main)
    frames = ensure_case(case, args.cache).frames_dir
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        todo = commands(frames, Path(tmp), args.focusweave)
        for argv_ in todo.values():  # warm-up: file cache, first-run costs
            run_measured(argv_)
        for round_ in range(args.repeat):
            names = list(todo) if round_ % 2 == 0 else list(todo)[::-1]
            for name in names:
                done = run_measured(todo[name])
                if done.returncode != 0:
                    raise RuntimeError(f"{name} failed:\n{done.stderr_tail}")
                runs.setdefault(name, []).append(done)
    print(
        f"{case.describe()} ({frames}), {args.repeat} interleaved rounds after a warm-up; "
        f"{platform.machine()}, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(
        "| command | wall (s, median) | CPU (s, median) | peak RSS (MiB, median) | wall / focusweave (median of rounds) |"
    )
    print("|---|--:|--:|--:|--:|")
    peer = [r.wall_s for r in runs["focusweave"]]
    for name, done in runs.items():
        ratio = statistics.median(r.wall_s / p for r, p in zip(done, peer))
        print(
            f"| {name} | {statistics.median(r.wall_s for r in done):.2f} | "
            f"{statistics.median(r.cpu_s for r in done):.2f} | {statistics.median(r.peak_rss_mib for r in done):.0f} | "
            f"{ratio:.2f}x |"
        )


if __name__ == "__main__":
    main()
