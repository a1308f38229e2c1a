"""Shared depth of two fluorescence channels against each channel's own.

    python benchmarks/channels.py [--seeds 4] [--size 192]

Two-channel widefield stacks from ``synthetic.render_channels`` (cells and
filaments on one curved surface, the filament stain dimmer): depth RMSE in
slices against the surface, where either channel makes it observable, for the
depth taken from both channels combined (the default) and from each alone.
"""

import argparse
import platform
import sys

import numpy as np

from napari_focus_stack import focus_stack_channels
from napari_focus_stack.synthetic import render_channels


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--size", type=int, default=192)
    parser.add_argument("--slices", type=int, default=12)
    args = parser.parse_args(argv)
    print(f"{args.size}x{args.size} x {args.slices} slices; {platform.machine()}, Python {sys.version.split()[0]}")
    print("| seed | observable | depth from both | from cells (ch 0) | from filaments (ch 1) |")
    print("|---|---|---|---|---|")
    for seed in range(args.seeds):
        channels, truth, masks = render_channels((args.size, args.size), args.slices, seed=seed)
        observed = masks[0] | masks[1]
        errors = []
        for depth_from in ("all", 0, 1):
            depth = focus_stack_channels(channels, depth_from=depth_from, align="none", device="cpu").depth
            errors.append(float(np.sqrt(np.mean((depth - truth)[observed] ** 2))))
        print(f"| {seed} | {observed.mean():.1%} | " + " | ".join(f"{e:.3f}" for e in errors) + " |")


if __name__ == "__main__":
    main()
