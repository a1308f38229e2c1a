"""Sample data: a simulated focal stack of a textured dome, with its true depth."""

from ..synthetic import simulate_stack

SAMPLE_SHAPE = (512, 512)
SAMPLE_SLICES = 12


def synthetic_focal_stack():
    """A colour stack of 12 frames, 512 x 512, and the depth it was made with.

    The true depth (in slices, 0 = first frame) comes as a hidden layer to
    compare the computed depth map with.
    """
    sim = simulate_stack(SAMPLE_SHAPE, SAMPLE_SLICES, texture="mixed", depth="dome", rgb=True, noise=0.01, seed=0)
    stack = (
        sim.frames,
        {"name": "synthetic stack", "rgb": True, "axis_labels": ("z", "y", "x")},
        "image",
    )
    truth = (
        sim.depth,
        {
            "name": "true depth",
            "colormap": "viridis",
            "contrast_limits": (0.0, SAMPLE_SLICES - 1.0),
            "visible": False,
        },
        "image",
    )
    return [stack, truth]
