"""The napari reader: folders, lists and multi-page TIFFs of frames."""

import numpy as np
import pytest
import tifffile

from napari_focus_stack import simulate_stack
from napari_focus_stack._napari import reader
from napari_focus_stack.io import save_image

pytestmark = pytest.mark.napari

PLUGIN = "napari-focus-stack"


@pytest.fixture(scope="module")
def frames():
    return simulate_stack((40, 56), 5, rgb=True, seed=2).frames


@pytest.fixture
def frame_folder(tmp_path, frames):
    folder = tmp_path / "beetle wing"
    folder.mkdir()
    for k, frame in enumerate(frames):
        save_image(frame, folder / f"z{k + 1}.{'PNG' if k % 2 else 'png'}")
    (folder / "notes.txt").write_text("acquired on Tuesday")
    return folder


def test_opens_a_folder_in_the_viewer(make_napari_viewer, frame_folder, frames):
    viewer = make_napari_viewer()
    [layer] = viewer.open(frame_folder, plugin=PLUGIN)
    assert layer.name == "beetle wing" and layer.rgb
    np.testing.assert_array_equal(layer.data, frames)
    assert layer.metadata["names"][0] == "z1.png"
    assert tuple(layer.axis_labels) == ("z", "y", "x")


def test_reads_a_list_of_files(frame_folder, frames):
    paths = sorted(str(p) for p in frame_folder.glob("*.png"))
    [(data, kwargs, kind)] = reader.napari_get_reader(paths)(paths)
    assert kind == "image" and kwargs["name"] == "beetle wing"
    np.testing.assert_array_equal(data, frames[::2])


def test_imagej_tiff_gets_physical_scale(tmp_path, frames):
    path = tmp_path / "stack.tif"
    gray = frames[..., 1]
    tifffile.imwrite(
        path,
        gray,
        imagej=True,
        resolution=(1 / 0.65, 1 / 0.65),
        metadata={"spacing": 2.5, "unit": "um", "axes": "ZYX"},
    )
    [(data, kwargs, _)] = reader.napari_get_reader(str(path))(str(path))
    assert data.shape == gray.shape and kwargs["name"] == "stack" and not kwargs["rgb"]
    np.testing.assert_allclose(kwargs["scale"], (2.5, 0.65, 0.65), rtol=1e-6)
    assert kwargs["units"] == ("µm", "µm", "µm")


@pytest.mark.parametrize(
    "make_path",
    [
        lambda tmp: tmp / "missing folder",
        lambda tmp: (tmp / "notes.txt").write_text("x") and tmp / "notes.txt",
        lambda tmp: tmp,  # empty folder
        lambda tmp: (save_image(np.zeros((8, 8), np.uint8), tmp / "one.png"), tmp / "one.png")[1],
        lambda tmp: (tifffile.imwrite(tmp / "1.tif", np.zeros((8, 8), np.uint8)), tmp / "1.tif")[1],
        lambda tmp: (tmp / "broken.tif").write_bytes(b"not a tiff") and tmp / "broken.tif",
    ],
    ids=["missing", "text file", "empty folder", "single png", "single-page tiff", "corrupt tiff"],
)
def test_get_reader_declines_what_is_not_a_stack(tmp_path, make_path):
    assert reader.napari_get_reader(str(make_path(tmp_path))) is None


def test_unreadable_folder_is_reported_and_opens_nothing(make_napari_viewer, frame_folder, monkeypatch):
    save_image(np.zeros((10, 10, 3), np.uint8), frame_folder / "z9.png")
    errors = []
    monkeypatch.setattr(reader, "show_error", errors.append)
    viewer = make_napari_viewer()
    assert viewer.open(frame_folder, plugin=PLUGIN) == []
    assert len(viewer.layers) == 0
    [message] = errors
    assert "beetle wing" in message and "z9.png" in message and "same size" in message


@pytest.mark.parametrize("loop_name", ["0_loop.png", "a", "zz"])
def test_a_symlink_loop_beside_the_frames_does_not_hide_them(frame_folder, frames, loop_name):
    """Entries are examined one by one: a link that loops (listed first or last) is passed over."""
    (frame_folder / loop_name).symlink_to(frame_folder / loop_name)
    assert reader.napari_get_reader(str(frame_folder)) is reader.read_focus_stack
    [(data, kwargs, kind)] = reader.read_focus_stack(str(frame_folder))
    np.testing.assert_array_equal(data, frames)
    assert kind == "image" and len(kwargs["metadata"]["names"]) == len(frames)


def test_a_zero_page_tiff_is_reported_not_raised(tmp_path, frames, monkeypatch):
    folder = tmp_path / "stack"
    folder.mkdir()
    for k, frame in enumerate(frames):
        save_image(frame, folder / f"z{k + 1}.png")
    (folder / "z0.tif").write_bytes(b"II*\0\0\0\0\0")
    shown = []
    monkeypatch.setattr(reader, "show_error", shown.append)
    assert reader.napari_get_reader(str(folder / "z0.tif")) is None
    assert reader.read_focus_stack(str(folder)) == reader.NO_LAYERS
    assert shown == [
        f"Focus Stack could not open stack: {folder / 'z0.tif'}: not a readable TIFF (it holds no image pages)"
    ]


def test_a_file_that_goes_away_is_reported_not_raised(frame_folder, monkeypatch):
    def gone(source):
        raise FileNotFoundError(2, "No such file or directory", str(frame_folder / "z2.png"))

    shown = []
    monkeypatch.setattr(reader, "read_stack", gone)
    monkeypatch.setattr(reader, "show_error", shown.append)
    assert reader.read_focus_stack(str(frame_folder)) == reader.NO_LAYERS
    assert shown == [f"Focus Stack could not open beetle wing: No such file or directory ({frame_folder / 'z2.png'})"]
