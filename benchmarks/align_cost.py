"""What alignment costs on stacks that need none: time and peak memory against the frame count (issue 15).

    python benchmarks/align_cost.py [--frames 16 96] [--side 1024] [--repeat 3] [--jitter PX]

Still 1024x1024 RGB JPEG stacks (``simulate_stack``, mixed texture on a dome,
noise 0.01, quality 95), cached under ``benchmarks/_cache``; with
``--jitter``, the camera shakes by that many px (RMS) from frame to frame, so
that every pair of neighbours is registered and the estimate's memory with
the frame count shows. Each stack is
fused by the whole command (``napari-focus-stack <folder> -o out.tif``) in a
fresh process, with the default alignment and with ``--align none``,
interleaved ``--repeat`` times; prints the median wall time and peak RSS of
each, and the ratios the issue sets targets for: default / none at the
largest frame count (<= 1.6) and peak memory at the largest / smallest frame
count with the default (<= 1.25).
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench import run_measured  # noqa: E402  (a fresh process per run: its own peak RSS)

from napari_focus_stack import simulate_stack  # noqa: E402

COMMAND = Path(sys.executable).parent / "napari-focus-stack"


def stack_folder(n, side, cache, jitter=0.0):
    folder = cache / (f"still-{side}px-{n}" if not jitter else f"jitter{jitter:g}-{side}px-{n}")
    stamp = folder / "params.json"
    params = {"n": n, "side": side, "texture": "mixed", "depth": "dome", "noise": 0.01, "seed": 11, "quality": 95}
    if jitter:
        params["jitter"] = jitter
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    sim = simulate_stack((side, side), n, rgb=True, texture="mixed", depth="dome", noise=0.01, jitter=jitter, seed=11)
    for k, frame in enumerate(sim.frames):
        cv2.imwrite(str(folder / f"frame_{k:03d}.jpg"), frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    stamp.write_text(json.dumps(params))
    return folder


def run(folder, align, out):
    command = [COMMAND, folder, "-o", out, "--quiet"] + ([] if align is None else ["--align", align])
    done = run_measured(command)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed:\n{done.stderr_tail}")
    return done.wall_s, done.peak_rss_mib


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[16, 96])
    parser.add_argument("--side", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=HERE / "_cache")
    parser.add_argument("--jitter", type=float, default=0.0, help="camera shake, px RMS (default: still)")
    args = parser.parse_args(argv)
    folders = {n: stack_folder(n, args.side, args.cache, args.jitter) for n in args.frames}
    results = {(n, a): [] for n in args.frames for a in ("default", "none")}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            for n in args.frames:
                order = ("default", "none") if round_ % 2 == 0 else ("none", "default")
                for align in order:
                    out = Path(tmp) / f"{n}-{align}-{round_}.tif"
                    results[(n, align)].append(run(folders[n], None if align == "default" else "none", out))
    motion = f"jitter {args.jitter:g} px" if args.jitter else "still"
    print(
        f"{args.side}x{args.side} RGB JPEG, {motion}; median of {args.repeat} interleaved runs; {platform.machine()}, "
    )
    print(f"Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print("| frames | alignment | wall (s) | peak RSS (MiB) |")
    print("|---:|---|---:|---:|")
    median = {
        key: (statistics.median(w for w, _ in v), statistics.median(r for _, r in v)) for key, v in results.items()
    }
    for (n, align), (wall, rss) in median.items():
        print(f"| {n} | {align} | {wall:.2f} | {rss:.0f} |")
    big, small = max(args.frames), min(args.frames)
    print(
        f"\ndefault / none at {big} frames: {median[(big, 'default')][0] / median[(big, 'none')][0]:.2f}x (target <= 1.6)"
    )
    ratio = median[(big, "default")][1] / median[(small, "default")][1]
    print(f"peak memory {big} / {small} frames, default: {ratio:.2f}x (target <= 1.25)")


if __name__ == "__main__":
    main()
