"""False motion on stacks that do not move: what default alignment finds, and what it costs.

    python benchmarks/static_alignment.py [--size 512] [--frames 12 24 48 96]

Simulated stacks with no motion at all (``simulate_stack``, no jitter, drift,
rotation or breathing), several textures and depth maps: the largest corner
displacement the default alignment estimates, and the fused PSNR against the
truth with the default alignment and with ``align="none"``.
"""

import argparse
import platform
import sys

from napari_focus_stack import focus_stack, simulate_stack
from napari_focus_stack.engine.align.policy import max_corner_motion
from napari_focus_stack.synthetic import psnr

SCENES = [("mixed", "dome"), ("cells", "slope"), ("noise", "steps")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, nargs="+", default=[12, 24, 48, 96])
    args = parser.parse_args(argv)
    print(f"{args.size}x{args.size} RGB, noise 0.01, seed 1; {platform.machine()}, Python {sys.version.split()[0]}")
    print("| texture / depth | frames | false motion (px) | PSNR aligned (dB) | PSNR align=none (dB) |")
    print("|---|---|---|---|---|")
    for texture, depth in SCENES:
        for n in args.frames:
            sim = simulate_stack((args.size,) * 2, n, rgb=True, texture=texture, depth=depth, noise=0.01, seed=1)
            aligned = focus_stack(sim.frames, device="cpu")
            plain = focus_stack(sim.frames, align="none", device="cpu")
            motion = 0.0 if aligned.transforms is None else max_corner_motion(aligned.transforms, (args.size,) * 2)
            print(
                f"| {texture} / {depth} | {n} | {motion:.1f} | {psnr(aligned.fused, sim.texture):.2f} | "
                f"{psnr(plain.fused, sim.texture):.2f} |"
            )


if __name__ == "__main__":
    main()
