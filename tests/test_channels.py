"""Channels fused along one shared depth: every channel equals fuse_from_depth
along it, and the combined depth beats each channel's own on two-channel
fluorescence."""

import numpy as np
import pytest

from napari_focus_stack import focus_stack, focus_stack_channels, fuse_from_depth
from napari_focus_stack.channels import ChannelView, channel_weights, open_channels
from napari_focus_stack.io import StackReadError
from napari_focus_stack.synthetic import render_channels, simulate_stack


@pytest.fixture(scope="module")
def two_channels():
    return render_channels((128, 128), 10, seed=1)


def test_every_channel_is_fused_along_the_shared_depth(two_channels):
    channels, _, _ = two_channels
    result = focus_stack_channels(channels, align="none", device="cpu")
    assert result.fused.shape == (2, 128, 128) and result.fused.dtype == np.uint16
    assert result.depth.shape == result.confidence.shape == (128, 128)
    for c, channel in enumerate(channels):
        expected = fuse_from_depth(channel, result.depth, result=result, device="cpu")
        np.testing.assert_array_equal(result.fused[c], expected, err_msg=f"channel {c}")
    info = result.metadata["channels"]
    assert info["count"] == 2 and info["depth_from"] == "all" and len(info["weights"]) == 2


def test_aligned_channels_follow_the_guides_alignment():
    """Channels of a drifting stack are warped by the transforms found on the guide."""
    sim = simulate_stack((160, 160), 6, texture="cells", depth="dome", jitter=3.0, seed=5)
    other = np.sqrt(sim.frames.astype(np.float32) * 255).astype(np.uint8)  # a second stain: same structures
    result = focus_stack_channels([sim.frames, other], device="cpu")
    assert result.transforms is not None and result.transforms.shape == (6, 3, 3)
    alone = fuse_from_depth(sim.frames, result.depth, result=result, device="cpu")
    # offsets of the guide's exposure correction are left out; gains and motion are shared
    assert np.abs(result.fused[0].astype(int) - alone).max() <= 1


def test_combined_depth_is_at_least_as_accurate_as_the_best_channel():
    for seed in (0, 1):
        channels, truth, masks = render_channels((160, 160), 12, seed=seed)
        observed = masks[0] | masks[1]
        errors = {}
        for depth_from in ("all", 0, 1):
            depth = focus_stack_channels(channels, depth_from=depth_from, align="none", device="cpu").depth
            errors[depth_from] = float(np.sqrt(np.mean((depth - truth)[observed] ** 2)))
        assert errors["all"] <= min(errors[0], errors[1]), (seed, errors)
        assert errors["all"] < 0.45, (seed, errors)


def test_depth_from_one_channel_is_that_channels_own_depth(two_channels):
    channels, _, _ = two_channels
    shared = focus_stack_channels(channels, depth_from=1, align="none", device="cpu")
    alone = focus_stack(channels[1], align="none", device="cpu")
    np.testing.assert_array_equal(shared.depth, alone.depth)
    np.testing.assert_array_equal(shared.confidence, alone.confidence)
    assert shared.metadata["channels"]["weights"] is None


def test_channel_weights_are_one_over_each_channels_noise():
    rng = np.random.default_rng(0)
    quiet = np.clip(1000 + rng.normal(0, 10, (3, 128, 128)), 0, None).astype(np.uint16)
    loud = np.clip(1000 + rng.normal(0, 40, (3, 128, 128)), 0, None).astype(np.uint16)
    w_quiet, w_loud = channel_weights(open_channels([quiet, loud]))
    assert w_quiet == pytest.approx(1 / 10, rel=0.1) and w_loud == pytest.approx(1 / 40, rel=0.1)


@pytest.mark.parametrize("layout", ["CZYX", "ZCYX", "ZYXC"])
def test_channel_axis_of_an_array(two_channels, layout):
    channels, _, _ = two_channels
    czyx = np.stack(channels)
    data = np.transpose(czyx, ["CZYX".index(a) for a in layout])
    result = focus_stack(data, channel_axis=layout.index("C"), align="none", device="cpu")
    expected = focus_stack_channels(channels, align="none", device="cpu")
    fused = result.fused if layout != "ZYXC" else np.moveaxis(result.fused, -1, 0)
    assert result.fused.shape == ((2, 128, 128) if layout != "ZYXC" else (128, 128, 2))
    np.testing.assert_array_equal(fused, expected.fused)
    np.testing.assert_array_equal(result.depth, expected.depth)


def test_channel_view_reads_only_the_frames_asked_for():
    class Counting:
        shape, dtype, ndim = (2, 4, 8, 8), np.dtype(np.uint8), 4

        def __init__(self):
            self.reads = []

        def __getitem__(self, index):
            self.reads.append(index)
            return np.zeros((8, 8), np.uint8)

    data = Counting()
    view = ChannelView(data, 0, 1)
    assert view.shape == (4, 8, 8)
    view[3]
    assert data.reads == [(1, 3, slice(None), slice(None))]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"depth_from": 2}, "depth_from channel 2 does not exist: there are 2 channels"),
        ({"depth_from": "green"}, "depth_from must be 'all' or a channel index from 0 to 1, got 'green'"),
        ({"depth_from": True}, "depth_from must be 'all' or a channel index"),
    ],
)
def test_bad_depth_from_is_one_clear_error(two_channels, kwargs, message):
    with pytest.raises(ValueError, match=message):
        focus_stack_channels(two_channels[0], **kwargs)


def test_channels_must_match():
    a = np.zeros((4, 32, 32), np.uint8)
    with pytest.raises(
        StackReadError, match=r"channel 1 is shaped \(4, 32, 16\) \(Z, Y, X\) but channel 0 is \(4, 32, 32\)"
    ):
        focus_stack_channels([a, a[:, :, :16]])
    with pytest.raises(StackReadError, match="channel 1 .* holds colour frames"):
        focus_stack_channels([a, np.zeros((4, 32, 32, 3), np.uint8)])
    with pytest.raises(ValueError, match="would split the image axes"):
        focus_stack(np.zeros((4, 2, 32, 32), np.uint8), channel_axis=2)


@pytest.mark.parametrize(
    "source, kwargs, error, message",
    [
        (
            np.zeros((4, 2, 32, 32), np.uint8),
            {"channel_axis": "c"},
            ValueError,
            "channel_axis must be an axis number, got 'c'",
        ),
        (
            np.zeros((4, 32, 32), np.uint8),
            {"channel_axis": 0},
            ValueError,
            "a stack with a channel axis has 4 dimensions",
        ),
        (
            np.zeros((4, 2, 32, 32), np.uint8),
            {"channel_axis": 5},
            ValueError,
            "channel_axis 5 is out of range for 4 dimensions",
        ),
        ("frames/", {"channel_axis": 0}, TypeError, "channel_axis needs an array"),
    ],
)
def test_bad_channel_axis_is_one_clear_error(source, kwargs, error, message):
    with pytest.raises(error, match=message):
        focus_stack(source, **kwargs)


def test_no_channels_is_one_clear_error():
    with pytest.raises(StackReadError, match="no channels given"):
        focus_stack_channels([])
