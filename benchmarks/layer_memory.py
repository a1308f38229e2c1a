"""What stacking a lazy napari layer adds to the process's memory, with and without alignment (issue 15).

    python benchmarks/layer_memory.py [--frames 120] [--side 2048] [--jitter 1.0]

The layer's data is a dask array of ``--frames`` gray uint8 frames of
``--side`` px (4 MP by default), each computed when read: one textured
base image (8 MiB), blurred by its distance to the frame's focus and moved
by ``--jitter`` px (RMS) of camera shake, so that alignment registers every
pair. It is stacked the way the dock widget does it
(``_napari.stacking.iter_stack_layer``, the viewer's thread aside), in a
fresh process per run with the default alignment and with ``align="none"``;
printed is the peak RSS each run adds above the process with the data
defined but nothing read (target for the aligned run: <= 300 MiB).
"""

import argparse
import json
import platform
import subprocess
import sys
import time

CHILD = r"""
import json, resource, sys
import cv2, dask, dask.array as da, numpy as np
from napari_focus_stack._napari.stacking import StackLayout, iter_stack_layer
from napari_focus_stack.engine.result import StackParams
from napari_focus_stack.engine.steps import drain
from napari_focus_stack.synthetic import make_texture

n, side, jitter, align = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
dask.config.set(scheduler="synchronous")  # napari computes a layer's chunks on the thread that asks
base = (make_texture("mixed", (side, side), seed=3) * 255).astype(np.uint8)
shifts = np.random.default_rng(5).normal(0, jitter, (n, 2)) if jitter else np.zeros((n, 2))

def frame(block_id=None):
    k = block_id[0]
    blur = 0.3 + 1.5 * abs(k - n / 2) / (n / 2) * 4
    moved = cv2.warpAffine(base, np.float32([[1, 0, shifts[k, 0]], [0, 1, shifts[k, 1]]]), (side, side),
                           flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return cv2.GaussianBlur(moved, (0, 0), blur)[None]

data = da.map_blocks(frame, dtype=np.uint8, chunks=((1,) * n, (side,), (side,)))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
layout = StackLayout(shape=data.shape, z_axis=0, rgb=False)
run = drain(iter_stack_layer(data, layout, StackParams(align=align)))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
messages = (run.alignments[0][1] or {}).get("messages", [])
print(json.dumps({"before": before, "peak": peak, "messages": messages}))
"""


def measure(n, side, jitter, align):
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(n), str(side), str(jitter), align], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["wall"] = time.perf_counter() - started
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--side", type=int, default=2048)
    parser.add_argument("--jitter", type=float, default=1.0, help="camera shake, px RMS")
    args = parser.parse_args(argv)
    print(
        f"{args.frames} x {args.side}x{args.side} gray uint8 dask layer, jitter {args.jitter:g} px; "
        f"{platform.machine()}, Python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print("| alignment | wall (s) | RSS before (MiB) | peak (MiB) | added (MiB) | alignment said |")
    print("|---|---:|---:|---:|---:|---|")
    for align in ("similarity", "none"):
        r = measure(args.frames, args.side, args.jitter, align)
        said = "; ".join(r["messages"]) or "-"
        print(
            f"| {align} | {r['wall']:.1f} | {r['before']:.0f} | {r['peak']:.0f} | {r['peak'] - r['before']:.0f} "
            f"| {said[:120]} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
