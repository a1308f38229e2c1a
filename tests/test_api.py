"""The drop-in FocusStacker class keeps the original tool's API and defaults."""

import numpy as np
import pytest
import tifffile

from napari_focus_stack import FocusStacker, focus_stack, simulate_stack
from napari_focus_stack.io import read_image, read_metadata, save_image


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
    assert groups == [paths[:2], paths[2:4]] and all(type(p) is str for g in groups for p in g)


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


#: The original tool's usage example (its README), verbatim.
ORIGINAL_EXAMPLE = """\
from focus_stacker import FocusStacker

# Initialize stacker with default settings
stacker = FocusStacker()

# Process a single stack
result = stacker.process_stack(['image1.jpg', 'image2.jpg', 'image3.jpg'])
stacker.save_image(result, 'output.jpg')

# Process multiple stacks in a directory
import glob
image_paths = glob.glob('path/to/images/*.jpg')
stacks = stacker.split_into_stacks(image_paths, stack_size=3)

for i, stack in enumerate(stacks):
    result = stacker.process_stack(stack)
    stacker.save_image(result, f'output_{i+1}.jpg')
"""


def test_the_original_tools_example_runs_verbatim(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "path" / "to" / "images"
    folder.mkdir(parents=True)
    for seed, names in ((1, ["image1.jpg", "image2.jpg", "image3.jpg"]), (2, None)):
        sim = simulate_stack((40, 48), 6 if names is None else 3, rgb=True, seed=seed)
        for k, frame in enumerate(sim.frames):
            save_image(frame, tmp_path / names[k] if names else folder / f"z{k + 1}.jpg")
    namespace = {}
    exec(compile(ORIGINAL_EXAMPLE, "original_example.py", "exec"), namespace)
    stacker = namespace["stacker"]
    assert (stacker.radius, stacker.smoothing, stacker.scale_factor) == (8, 4, 2)
    assert [type(path) for stack in namespace["stacks"] for path in stack] == [str] * 6
    assert namespace["stacks"][1] == [f"path/to/images/z{k}.jpg" for k in (4, 5, 6)]
    for name in ("output.jpg", "output_1.jpg", "output_2.jpg"):
        image, _ = read_image(tmp_path / name)
        assert image.shape == (80, 96, 3) and image.dtype == np.uint8, name
    assert not (tmp_path / "output_3.jpg").exists()
