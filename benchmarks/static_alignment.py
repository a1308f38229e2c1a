"""Alignment on stacks that do not move and on stacks that do: what the default finds, and what it costs.

    python benchmarks/static_alignment.py [--size 256] [--frames 32] [--families ...] [--motions ...]

Every scene family of the quality suite (``simulate_scene``), rendered still
and then moved by the camera (``jitter``, ``breathing``, ``drift`` options):
for each, the largest corner displacement of the true motion, the share of
the neighbours' differences the estimated motion explains (the default's
evidence for motion, ``AlignmentResult.explained``), what the default
decided, the error of the transforms it applies (largest corner distance
to the truth, px; with ``align="none"`` the error is the true motion), and
the fused PSNR against the truth with the default and with
``align="none"``.

Registration between differently blurred frames reports a small, steady
motion that is not there; chaining neighbours adds it up. The default
applies motion only when it explains a share of the differences between
neighbouring frames (``check.min_explained``: 5 % at 256 px, less on larger
images) and distant frames agree.
"""

import argparse
import platform
import sys

import numpy as np

from napari_focus_stack import focus_stack
from napari_focus_stack.engine.align import registration_image
from napari_focus_stack.engine.align.check import min_explained
from napari_focus_stack.engine.align.estimate import estimate_transforms
from napari_focus_stack.engine.align.pairwise import _corner_distance
from napari_focus_stack.engine.align.policy import max_corner_motion
from napari_focus_stack.synthetic import SCENE_FAMILIES, psnr, simulate_scene

#: name -> simulate_scene camera options, as fractions of the image side where they are lengths.
MOTIONS = {
    "still": {},
    "jitter 0.5 px": {"jitter": 0.5},
    "jitter 1.5 px": {"jitter": 1.5},
    "breathing 3 %": {"breathing": 0.03},
    "drift 3 %": {"drift": 0.03},
}


def camera(name, size):
    options = dict(MOTIONS[name])
    if "drift" in options:
        options["drift"] *= size
    return options


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--families", nargs="+", default=list(SCENE_FAMILIES), choices=SCENE_FAMILIES)
    parser.add_argument("--motions", nargs="+", default=list(MOTIONS), choices=list(MOTIONS))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    shape = (args.size, args.size)
    print(
        f"{args.size}x{args.size}, {args.frames} frames, seed {args.seed}; motion applied when it explains "
        f">= {min_explained(shape):.1%} of the neighbours' differences; {platform.machine()}, "
        f"Python {sys.version.split()[0]}"
    )
    print("| family | motion | true (px) | explained | applied | error (px) | PSNR default (dB) | PSNR none (dB) |")
    print("|---|---|---:|---:|---|---:|---:|---:|")
    gains = []
    for family in args.families:
        for motion in args.motions:
            sim = simulate_scene(family, shape, args.frames, seed=args.seed, **camera(motion, args.size))
            estimate = estimate_transforms([registration_image(frame) for frame in sim.frames])
            aligned = focus_stack(sim.frames, device="cpu")
            plain = focus_stack(sim.frames, align="none", device="cpu")
            applied = aligned.transforms is not None and max_corner_motion(aligned.transforms, shape) > 0
            used = aligned.transforms if applied else np.tile(np.eye(3), (args.frames, 1, 1))
            error = max(_corner_distance(u, t, shape) for u, t in zip(used, sim.transforms))
            p_default = psnr(aligned.fused, sim.texture, data_range=sim.data_range)
            p_none = psnr(plain.fused, sim.texture, data_range=sim.data_range)
            gains.append(p_default - p_none)
            print(
                f"| {family} | {motion} | {max_corner_motion(sim.transforms, shape):.1f} | {estimate.explained:.2f} | "
                f"{'yes' if applied else 'no'} | {error:.1f} | {p_default:.2f} | {p_none:.2f} |",
                flush=True,
            )
    print(f"\nmean PSNR default - none: {np.mean(gains):+.2f} dB over {len(gains)} stacks")


if __name__ == "__main__":
    main()
