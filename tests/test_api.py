"""The drop-in FocusStacker class keeps the original tool's API and defaults."""

import numpy as np
import pytest
import tifffile

from napari_focus_stack import FocusStacker, focus_stack, simulate_stack
from napari_focus_stack.io import read_metadata, save_image


@pytest.fixture
def frame_paths(tmp_path):
    sim = simulate_stack((40, 56), 5, rgb=True, seed=3)
    paths = []
    for k, frame in enumerate(sim.frames):
        path = tmp_path / f"img_{k + 1}.png"
        save_image(frame, path)
        paths.append(str(path))
    return paths, sim


def test_defaults_are_the_original_tools():
    stacker = FocusStacker()
    assert (stacker.radius, stacker.smoothing, stacker.scale_factor) == (8, 4, 2)


def test_process_stack_and_save_image(tmp_path, frame_paths):
    paths, sim = frame_paths
    stacker = FocusStacker(radius=3, smoothing=2, scale_factor=2)
    fused = stacker.process_stack(paths)
    assert fused.shape == (80, 112, 3) and fused.dtype == np.uint8
    expected = focus_stack(sim.frames, radius=3, smoothing=2, scale_factor=2, device="cpu")
    np.testing.assert_array_equal(fused, expected.fused)
    assert stacker.last_result.depth.shape == (80, 112)
    out = tmp_path / "fused.tif"
    stacker.save_image(fused, str(out))
    np.testing.assert_array_equal(tifffile.imread(out), fused)
    info = read_metadata(out)
    assert (info["radius"], info["smoothing"], info["scale_factor"]) == (3, 2, 2)


def test_sixteen_bit_tiff_stays_sixteen_bit(tmp_path):
    sim = simulate_stack((32, 32), 4, dtype="uint16", seed=4)
    stacker = FocusStacker(scale_factor=1)
    fused = stacker.process_stack(sim.frames)
    stacker.save_image(fused, tmp_path / "fused.tif")
    back = tifffile.imread(tmp_path / "fused.tif")
    assert back.dtype == np.uint16 and back.max() > 255


def test_split_into_stacks(frame_paths):
    paths, _ = frame_paths
    groups = FocusStacker.split_into_stacks(paths[:4], stack_size=2)
    assert [[p.name for p in g] for g in groups] == [["img_1.png", "img_2.png"], ["img_3.png", "img_4.png"]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"radius": 25}, "radius must be from 1 to 20"),
        ({"smoothing": 0}, "smoothing must be from 1 to 10"),
        ({"scale_factor": 8}, "scale_factor must be from 1 to 4"),
    ],
)
def test_ranges_are_checked_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FocusStacker(**kwargs)
