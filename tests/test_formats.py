"""Tests for napari_focus_stack.formats: RAW frames (rawpy) and microscope files (bioio).

Every file is written by the tests: a CFA DNG by tifffile (LibRaw decodes it
like a camera's), OME-TIFF hyperstacks by tifffile, OME-Zarr by bioio-ome-zarr's
writer and CZI by pylibCZIrw (which bioio-czi brings). No installed package
ships a small ND2 or LIF file, so those readers are not exercised here.
"""

import importlib.util
import re
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_focus_stack import batch, formats
from napari_focus_stack.io import RAW_EXTENSIONS, StackReadError, open_stack, raw, read_stack

# --- RAW frames ----------------------------------------------------------------------

BLACK, WHITE = 64, 4095 + 64
#: ColorMatrix1 (XYZ to camera) as SRATIONAL pairs: the identity.
IDENTITY_MATRIX = (1, 1, 0, 1, 0, 1, 0, 1, 1, 1, 0, 1, 0, 1, 0, 1, 1, 1)


def write_dng(path, camera_rgb, *, orientation=1, neutral=(0.5, 1.0, 0.5)):
    """Write a 12-bit RGGB mosaic DNG of ``camera_rgb`` (what each photosite would see, above black).

    ``neutral`` is AsShotNeutral, the camera's white balance: a gray object
    reads (0.5, 1, 0.5) here, so the camera multipliers are (2, 1, 2).
    """
    height, width, _ = camera_rgb.shape
    mosaic = np.empty((height, width), np.uint16)
    mosaic[0::2, 0::2] = camera_rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = camera_rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = camera_rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = camera_rgb[1::2, 1::2, 2]
    mosaic += BLACK
    as_shot = [value for n in neutral for value in (round(n * 10000), 10000)]
    tags = [
        (271, "s", 0, "Test", True),  # Make
        (272, "s", 0, "Test DNG", True),  # Model
        (274, "H", 1, orientation, True),
        (33421, "H", 2, (2, 2), True),  # CFARepeatPatternDim
        (33422, "B", 4, (0, 1, 1, 2), True),  # CFAPattern: RGGB
        (50706, "B", 4, (1, 4, 0, 0), True),  # DNGVersion
        (50707, "B", 4, (1, 1, 0, 0), True),  # DNGBackwardVersion
        (50708, "s", 0, "Test DNG", True),  # UniqueCameraModel
        (50710, "B", 3, (0, 1, 2), True),  # CFAPlaneColor
        (50711, "H", 1, 1, True),  # CFALayout: rectangular
        (50714, "H", 1, BLACK, True),  # BlackLevel
        (50717, "H", 1, WHITE, True),  # WhiteLevel
        (50721, "2i", 9, IDENTITY_MATRIX, True),  # ColorMatrix1
        (50778, "H", 1, 21, True),  # CalibrationIlluminant1: D65
        (50728, "2I", 3, as_shot, True),  # AsShotNeutral
    ]
    tifffile.imwrite(path, mosaic, photometric=32803, subfiletype=0, extratags=tags, metadata=None)
    return path


def two_grays(height=64, width=96):
    """Left half a gray of 1000 (green) above black, right half twice as bright, as the camera sees them."""
    scene = np.zeros((height, width, 3), np.uint16)
    scene[:, : width // 2] = (500, 1000, 500)
    scene[:, width // 2 :] = (1000, 2000, 1000)
    return scene


def corner_block(height=64, width=96):
    """A dim gray with a bright block near the top-left corner: shows which way is up."""
    scene = np.full((height, width, 3), (200, 400, 200), np.uint16)
    scene[4:20, 8:40] = (1000, 2000, 1000)
    return scene


def test_raw_frames_are_linear_16_bit_with_the_camera_white_balance(tmp_path):
    pytest.importorskip("rawpy")
    folder = tmp_path / "stack"
    folder.mkdir()
    write_dng(folder / "z01.DNG", two_grays())
    write_dng(folder / "z02.dng", two_grays())
    frames = open_stack(folder)
    assert frames.shape == (2, 64, 96, 3)
    assert frames.dtype == np.uint16
    assert frames.metadata["names"] == ["z01.DNG", "z02.dng"]
    frame = frames[1].astype(float)
    dim, bright = frame[16:48, 8:40], frame[16:48, 56:88]
    # 1000 of 4095 above black, scaled to 16 bits with no automatic brightening.
    expected = 1000 / (WHITE - BLACK) * 65535
    assert np.allclose(dim, expected, rtol=0.005)
    # The camera multipliers (2, 1, 2) make the gray neutral ...
    assert np.ptp(dim.mean(axis=(0, 1))) < 0.005 * expected
    # ... and the output is linear (no gamma curve): twice the light, twice the value.
    assert np.allclose(bright.mean(axis=(0, 1)) / dim.mean(axis=(0, 1)), 2.0, rtol=0.005)


def test_raw_white_balance_comes_from_the_file(tmp_path):
    pytest.importorskip("rawpy")
    paths = [write_dng(tmp_path / f"z{i}.dng", two_grays(), neutral=(1.0, 1.0, 1.0)) for i in range(2)]
    red, green, blue = open_stack(paths)[0][16:48, 8:40].astype(float).mean(axis=(0, 1))
    # As shot neutral says this camera needs no correction, so the gray stays green.
    assert green > 2.5 * blue > 2.5 * red


@pytest.mark.parametrize(
    ("orientation", "turn"),
    [
        (3, lambda image: image[::-1, ::-1]),
        (6, lambda image: np.rot90(image, -1)),  # rotate 90° clockwise to view
        (8, lambda image: np.rot90(image, 1)),
        (2, lambda image: image[:, ::-1]),
    ],
)
def test_raw_orientation_is_applied(tmp_path, orientation, turn):
    pytest.importorskip("rawpy")
    upright = open_stack([write_dng(tmp_path / f"up{i}.dng", corner_block()) for i in range(2)])[0]
    paths = [write_dng(tmp_path / f"o{i}.nef", corner_block(), orientation=orientation) for i in range(2)]
    frames = open_stack(paths)
    assert frames.shape[1:] == turn(upright).shape  # from the header, before any decoding
    np.testing.assert_array_equal(frames[0], turn(upright))


def test_raw_frames_are_decoded_only_when_indexed(tmp_path, monkeypatch):
    pytest.importorskip("rawpy")
    decoded = []

    def counting_decode(path):
        decoded.append(Path(path).name)
        return real_decode(path)

    real_decode = raw.decode_raw
    monkeypatch.setattr(raw, "decode_raw", counting_decode)
    paths = [write_dng(tmp_path / f"z{i}.dng", corner_block()) for i in range(3)]
    frames = open_stack(paths)
    assert frames.shape == (3, 64, 96, 3) and decoded == []
    assert frames[2].shape == (64, 96, 3)
    assert decoded == ["z2.dng"]


def test_raw_frames_stack_end_to_end(tmp_path):
    pytest.importorskip("rawpy")
    from napari_focus_stack import focus_stack

    paths = [write_dng(tmp_path / f"z{i}.arw", corner_block()) for i in range(3)]
    result = focus_stack(paths)
    assert result.fused.shape == (64, 96, 3)
    assert result.fused.dtype == np.uint16


def test_a_file_that_is_not_raw_is_named(tmp_path):
    pytest.importorskip("rawpy")
    (tmp_path / "a.cr2").write_bytes(b"this is not a raw file at all" * 10)
    write_dng(tmp_path / "b.cr2", corner_block())
    message = "a.cr2: not a readable RAW file (Unsupported file format or not RAW file)"
    with pytest.raises(StackReadError, match=re.escape(message)):
        open_stack(tmp_path)


def test_missing_rawpy_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "rawpy", None)  # import rawpy raises ImportError
    for name in ("z1.NEF", "z2.NEF"):
        (tmp_path / name).write_bytes(b"raw")
    expected = f'{tmp_path / "z1.NEF"}: reading Nikon NEF files needs rawpy: pip install "napari-focus-stack[raw]"'
    with pytest.raises(StackReadError) as caught:
        open_stack(tmp_path)
    assert str(caught.value) == expected


def test_formats_is_an_alias_of_the_io_readers():
    from napari_focus_stack.io import microscope

    for name in formats.__all__:
        home = raw if hasattr(raw, name) else microscope
        assert getattr(formats, name) is getattr(home, name), name


def test_raw_extensions_have_names_and_are_listed_in_folders_and_napari(tmp_path):
    assert set(formats.RAW_FORMAT_NAMES) == RAW_EXTENSIONS
    manifest = (Path(formats.__file__).parent / "napari.yaml").read_text()
    patterns = set(re.findall(r'"\*(\.\w+)"', manifest))
    assert patterns >= RAW_EXTENSIONS
    for name in ("a.NEF", "b.cr3", "c.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [path.name for path in batch.list_images(tmp_path)] == ["a.NEF", "b.cr3", "c.jpg"]


# --- Microscope files: OME-TIFF hyperstacks ---------------------------------------------

CHANNELS = ["DAPI", "GFP", "RFP"]


def hyperstack_data(shape=(2, 3, 4, 32, 48), dtype=np.uint16):
    rng = np.random.default_rng(7)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


def write_ome_tiff(path, data, *, axes="TCZYX", unit="µm", sizes=(2.0, 0.25, 0.5), channels=CHANNELS):
    z, y, x = sizes
    metadata = {
        "axes": axes,
        "PhysicalSizeZ": z,
        "PhysicalSizeY": y,
        "PhysicalSizeX": x,
        "PhysicalSizeZUnit": unit,
        "PhysicalSizeYUnit": unit,
        "PhysicalSizeXUnit": unit,
    }
    if channels:
        metadata["Channel"] = {"Name": channels}
    tifffile.imwrite(path, data, ome=True, photometric="rgb" if axes.endswith("S") else None, metadata=metadata)
    return path


@pytest.mark.parametrize(("unit", "sizes"), [("µm", (2.0, 0.25, 0.5)), ("nm", (2000.0, 250.0, 500.0))])
def test_ome_tiff_hyperstack(tmp_path, unit, sizes):
    pytest.importorskip("bioio_ome_tiff")
    data = hyperstack_data()
    path = write_ome_tiff(tmp_path / "cells.ome.tif", data, unit=unit, sizes=sizes)
    hyperstack = formats.open_hyperstack(path)
    assert hyperstack.dims == "TCZYX"
    assert hyperstack.sizes == {"T": 2, "C": 3, "Z": 4, "Y": 32, "X": 48}
    assert hyperstack.channel_names == CHANNELS
    assert hyperstack.pixel_size_um == pytest.approx((0.25, 0.5))
    assert hyperstack.z_step_um == pytest.approx(2.0)
    assert hyperstack.dtype == np.uint16
    frames = hyperstack.stack(time=1, channel=2)
    assert frames.shape == (4, 32, 48) and frames.dtype == np.uint16
    for z in range(4):
        np.testing.assert_array_equal(frames[z], data[1, 2, z])
    assert frames.metadata["z_step_um"] == pytest.approx(2.0)
    assert frames.metadata["pixel_size_um"] == pytest.approx((0.25, 0.5))
    assert frames.metadata["hyperstack"] == {"time": 1, "channel": 2, "channel_name": "RFP", "scene": "Image:0"}
    assert frames.label(3) == f"{path}[t=1,c=2,z=3]"
    by_name, _ = read_stack(hyperstack.stack(time=0, channel="GFP"))
    np.testing.assert_array_equal(by_name, data[0, 1])


def test_ome_tiff_hyperstack_with_rgb_samples(tmp_path):
    pytest.importorskip("bioio_ome_tiff")
    data = hyperstack_data((2, 3, 16, 24, 3), np.uint8)
    path = write_ome_tiff(tmp_path / "rgb.ome.tif", data, axes="TZYXS", channels=None)
    hyperstack = formats.open_hyperstack(path)
    assert hyperstack.sizes == {"T": 2, "C": 1, "Z": 3, "Y": 16, "X": 24, "S": 3}
    frames = hyperstack.stack(time=1)
    assert frames.shape == (3, 16, 24, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(read_stack(frames)[0], data[1])


def test_open_stack_of_a_multichannel_file_says_what_it_holds(tmp_path):
    pytest.importorskip("bioio_ome_tiff")
    path = write_ome_tiff(tmp_path / "cells.ome.tif", hyperstack_data())
    with pytest.raises(StackReadError) as caught:
        read_stack(path)
    from napari_focus_stack.io import SeveralStacksError

    assert isinstance(caught.value, SeveralStacksError)  # what the command line picks channels from
    assert str(caught.value) == (
        f"{path}: has 3 channels and 2 time points; focus stacking takes one z-stack: "
        "napari_focus_stack.open_hyperstack(path).stack(time=, channel=) picks one"
    )


def test_single_stack_ome_tiff_keeps_the_tifffile_path(tmp_path):
    data = hyperstack_data((1, 1, 4, 32, 48))
    path = write_ome_tiff(tmp_path / "one.ome.tif", data, channels=["GFP"])
    stack, metadata = read_stack(path)
    np.testing.assert_array_equal(stack, data[0, 0])
    assert metadata["names"] == [f"one.ome.tif[{z}]" for z in range(4)]  # tifffile's naming, not bioio's
    assert metadata["z_step_um"] == pytest.approx(2.0)


def test_ome_tiff_scenes(tmp_path):
    pytest.importorskip("bioio_ome_tiff")
    first, second = hyperstack_data((1, 1, 3, 16, 24)), hyperstack_data((1, 1, 5, 8, 12)) // 2
    path = tmp_path / "positions.ome.tif"
    with tifffile.TiffWriter(path, ome=True) as tif:
        for data in (first, second):
            tif.write(data[0, 0], metadata={"axes": "ZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5})
    hyperstack = formats.open_hyperstack(path)
    assert len(hyperstack.scenes) == 2 and hyperstack.scene == 0
    assert hyperstack.sizes == {"T": 1, "C": 1, "Z": 3, "Y": 16, "X": 24}
    assert hyperstack.describe() == "2 scenes"
    frames = hyperstack.stack(scene=1)
    assert frames.shape == (5, 8, 12)
    np.testing.assert_array_equal(read_stack(frames)[0], second[0, 0])
    assert frames.metadata["hyperstack"]["scene"] == hyperstack.scenes[1]
    other = formats.open_hyperstack(path, scene=hyperstack.scenes[1])
    assert other.scene == 1 and other.sizes["Z"] == 5


def test_hyperstack_positions_out_of_range_are_named(tmp_path):
    pytest.importorskip("bioio_ome_tiff")
    path = write_ome_tiff(tmp_path / "cells.ome.tif", hyperstack_data())
    hyperstack = formats.open_hyperstack(path)
    with pytest.raises(StackReadError, match=re.escape(f"{path}: channel 3 out of range: the file has 3 (0 to 2)")):
        hyperstack.stack(channel=3)
    with pytest.raises(StackReadError, match=re.escape(f"{path}: no channel named 'YFP'; it has DAPI, GFP, RFP")):
        hyperstack.stack(channel="YFP")


def peak_memory_while(action):
    """What ``action()`` returns, and the most memory it held at once (bytes)."""
    tracemalloc.start()
    try:
        value = action()
        return value, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


#: (T, C, Z, Y, X) of the streaming checks: 8 planes of 192 KiB.
STREAMED = (1, 2, 8, 256, 384)


def assert_reads_one_plane(path, data):
    """Frame 5 of channel 1 is read holding about one plane, not the z-stack bioio chunks by default."""
    frames = formats.open_hyperstack(path).stack(channel=1)
    frames[0]  # first use: imports, caches and file handles
    plane, peak = peak_memory_while(lambda: frames[5])
    np.testing.assert_array_equal(plane, data[0, 1, 5])
    # Decoding takes a copy or two of the plane; the z-stack is 8 planes.
    assert peak < data[0, 1].nbytes / 2, f"{peak:,} bytes held to read a plane of {plane.nbytes:,}"


def test_ome_tiff_frames_stream_one_plane_at_a_time(tmp_path):
    pytest.importorskip("bioio_ome_tiff")
    data = hyperstack_data(STREAMED)
    assert_reads_one_plane(write_ome_tiff(tmp_path / "big.ome.tif", data, channels=CHANNELS[:2]), data)


# --- Microscope files: OME-Zarr ----------------------------------------------------------


def write_ome_zarr(path, data, *, zarr_format=3, channels=CHANNELS):
    writers = pytest.importorskip("bioio_ome_zarr.writers")
    writer = writers.OMEZarrWriter(
        str(path),
        level_shapes=[data.shape],
        dtype=data.dtype,
        zarr_format=zarr_format,
        chunk_shape=(1, 1, 1, *data.shape[3:]),
        channels=[writers.Channel(label=name, color="FFFFFF") for name in channels],
        axes_units=[None, None, "micrometer", "nanometer", "nanometer"],
        physical_pixel_size=[1.0, 1.0, 2.0, 250.0, 500.0],
    )
    writer.write_full_volume(data)
    return path


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_ome_zarr(tmp_path, zarr_format):
    data = hyperstack_data()
    path = write_ome_zarr(tmp_path / "cells.ome.zarr", data, zarr_format=zarr_format)
    hyperstack = formats.open_hyperstack(path)
    assert hyperstack.dims == "TCZYX"
    assert hyperstack.sizes == {"T": 2, "C": 3, "Z": 4, "Y": 32, "X": 48}
    assert hyperstack.channel_names == CHANNELS
    assert hyperstack.pixel_size_um == pytest.approx((0.25, 0.5))  # written in nanometres
    assert hyperstack.z_step_um == pytest.approx(2.0)
    frames = hyperstack.stack(time=0, channel=1)
    assert frames.shape == (4, 32, 48) and frames.dtype == np.uint16
    np.testing.assert_array_equal(frames[3], data[0, 1, 3])
    np.testing.assert_array_equal(read_stack(frames)[0], data[0, 1])
    with pytest.raises(StackReadError, match=re.escape(f"{path}: has 3 channels and 2 time points;")):
        open_stack(path)


def test_ome_zarr_frames_stream_one_plane_at_a_time(tmp_path):
    data = hyperstack_data(STREAMED)
    assert_reads_one_plane(write_ome_zarr(tmp_path / "big.ome.zarr", data, channels=CHANNELS[:2]), data)


def test_open_stack_of_a_single_stack_ome_zarr_folder(tmp_path):
    data = hyperstack_data((1, 1, 3, 32, 48))
    # Found by its metadata, not its name: otherwise a folder is a folder of frames.
    path = write_ome_zarr(tmp_path / "acquisition", data, channels=["GFP"])
    stack, metadata = read_stack(path)
    np.testing.assert_array_equal(stack, data[0, 0])
    assert metadata["z_step_um"] == pytest.approx(2.0)
    assert metadata["pixel_size_um"] == pytest.approx((0.25, 0.5))
    assert metadata["names"] == [f"acquisition[z={z}]" for z in range(3)]
    assert len(open_stack([path])) == 3


# --- Microscope files: CZI -----------------------------------------------------------------


def write_czi(path, data, channels):
    czi = pytest.importorskip("pylibCZIrw.czi")
    with czi.create_czi(str(path)) as writer:
        for t, c, z in np.ndindex(data.shape[:3]):
            writer.write(data[t, c, z][..., None], plane={"T": t, "C": c, "Z": z})
        # CZI stores its scaling in metres, and pylibCZIrw writes the values as given.
        writer.write_metadata(channel_names=dict(enumerate(channels)), scale_x=0.5e-6, scale_y=0.25e-6, scale_z=2e-6)
    return path


def test_czi(tmp_path):
    pytest.importorskip("bioio_czi")
    data = hyperstack_data((2, 2, 3, 32, 48))
    path = write_czi(tmp_path / "cells.czi", data, ["DAPI", "GFP"])
    hyperstack = formats.open_hyperstack(path)
    assert hyperstack.sizes == {"T": 2, "C": 2, "Z": 3, "Y": 32, "X": 48}
    assert hyperstack.channel_names == ["DAPI", "GFP"]
    assert hyperstack.pixel_size_um == pytest.approx((0.25, 0.5))
    assert hyperstack.z_step_um == pytest.approx(2.0)
    frames = hyperstack.stack(time=1, channel="GFP")
    np.testing.assert_array_equal(frames[1], data[1, 1, 1])
    np.testing.assert_array_equal(read_stack(frames)[0], data[1, 1])
    with pytest.raises(StackReadError, match=re.escape(f"{path}: has 2 channels and 2 time points;")):
        open_stack(path)


def test_czi_frames_stream_one_plane_at_a_time(tmp_path, monkeypatch):
    pytest.importorskip("bioio_czi")
    aicspylibczi = pytest.importorskip("aicspylibczi")
    data = hyperstack_data(STREAMED)
    frames = formats.open_hyperstack(write_czi(tmp_path / "big.czi", data, CHANNELS[:2])).stack(channel=1)
    # libCZI's buffers are not Python's, so what it reads is counted where bioio-czi asks for it.
    read = []
    original = aicspylibczi.CziFile.read_image

    def counting_read_image(self, **dims):
        image, dims_read = original(self, **dims)
        read.append(image.nbytes)
        return image, dims_read

    monkeypatch.setattr(aicspylibczi.CziFile, "read_image", counting_read_image)
    np.testing.assert_array_equal(frames[5], data[0, 1, 5])
    assert read == [data[0, 1, 5].nbytes]


def test_open_stack_of_a_single_stack_czi(tmp_path):
    pytest.importorskip("bioio_czi")
    data = hyperstack_data((1, 1, 3, 32, 48))
    path = write_czi(tmp_path / "one.czi", data, ["GFP"])
    stack, metadata = read_stack(path)
    np.testing.assert_array_equal(stack, data[0, 0])
    assert metadata["z_step_um"] == pytest.approx(2.0)


# --- Missing packages ------------------------------------------------------------------------


def test_missing_bioio_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bioio", None)
    path = tmp_path / "cells.nd2"
    path.write_bytes(b"nd2")
    with pytest.raises(StackReadError) as caught:
        open_stack(path)
    assert str(caught.value) == (
        f'{path}: reading Nikon ND2 files needs bioio: pip install "napari-focus-stack[formats]"'
    )
    from napari_focus_stack.io import MissingExtraError

    assert isinstance(caught.value, MissingExtraError)


def test_missing_bioio_on_an_ome_tiff_hyperstack_keeps_the_tiff_message(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bioio", None)
    path = write_ome_tiff(tmp_path / "cells.ome.tif", hyperstack_data())
    with pytest.raises(StackReadError) as caught:
        open_stack(path)
    assert str(caught.value) == (
        f"{path}: has a time axis of 2 points; split it into one z-stack per time point first "
        '(or open it in napari); or open_hyperstack() picks one after pip install "napari-focus-stack[formats]"'
    )


def test_a_file_no_bioio_reader_recognises_is_named(tmp_path):
    pytest.importorskip("bioio_nd2")
    path = tmp_path / "cells.nd2"
    path.write_bytes(b"not an nd2 file" * 100)
    with pytest.raises(StackReadError) as caught:
        open_stack(path)
    assert str(caught.value) == f"{path}: not a readable Nikon ND2 file (no bioio reader recognises it)"


def test_a_missing_reader_plugin_is_named(tmp_path, monkeypatch):
    pytest.importorskip("bioio")
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "bioio_lif" else find_spec(name, *args)
    )
    path = tmp_path / "cells.lif"
    path.write_bytes(b"not a lif file" * 100)
    with pytest.raises(StackReadError) as caught:
        open_stack(path)
    assert str(caught.value) == (
        f'{path}: reading it needs the bioio plugin bioio-lif: pip install "napari-focus-stack[formats]"'
    )


def test_a_microscope_file_in_a_list_of_frames_is_refused(tmp_path):
    (tmp_path / "a.czi").write_bytes(b"czi")
    (tmp_path / "b.png").write_bytes(b"png")
    with pytest.raises(StackReadError, match=re.escape(f"{tmp_path / 'a.czi'}: a microscope file holds")):
        open_stack([tmp_path / "b.png", tmp_path / "a.czi"])


# --- Batch: microscope files are stacks of their own -------------------------------------


def test_batch_fuses_each_time_point_of_a_microscope_file_along_one_depth(tmp_path, capsys):
    pytest.importorskip("bioio_ome_zarr")
    from napari_focus_stack import focus_stack_channels
    from napari_focus_stack.cli import main
    from napari_focus_stack.io import read_metadata
    from napari_focus_stack.synthetic import render_channels, simulate_stack

    channels, _, _ = render_channels((48, 64), 5, seed=1)
    data = np.stack([np.stack(channels), np.stack(channels)[:, :, ::-1]])  # (T, C, Z, Y, X)
    root = tmp_path / "plates"
    write_ome_zarr(root / "plate1" / "cells.ome.zarr", data, channels=["nuclei", "actin"])
    frames = root / "plate1" / "B02"
    frames.mkdir()
    for k, frame in enumerate(simulate_stack((48, 64), 4, seed=2).frames):
        tifffile.imwrite(frames / f"z{k}.tif", frame)
    stacks = batch.group_by_subfolder(root)
    assert [(s.name, s.time, len(s.paths)) for s in stacks] == [
        ("plate1/B02", None, 4),
        ("plate1/cells_t000", 0, 1),
        ("plate1/cells_t001", 1, 1),
    ]
    out = tmp_path / "out"
    assert main(["batch", str(root), "-o", str(out), "--depth", "--align", "none"]) == 0
    assert "3 stacks: 3 done" in capsys.readouterr().err
    for t in (0, 1):
        fused = tifffile.imread(out / f"plate1_cells_t00{t}.tif")
        expected = focus_stack_channels([data[t, c] for c in range(2)], align="none")
        assert fused.shape == (2, 48, 64)
        np.testing.assert_array_equal(fused, expected.fused)
        np.testing.assert_array_equal(tifffile.imread(out / f"plate1_cells_t00{t}_depth.tif"), expected.depth)
        assert read_metadata(out / f"plate1_cells_t00{t}.tif")["axes"] == "CYX"
    assert main(["batch", str(root), "-o", str(out), "--depth", "--align", "none", "--resume", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("(complete: skipped)") == 3
    code = main(["batch", str(root), "-o", str(tmp_path / "png"), "--format", "png", "--align", "none", "-q"])
    assert code == 1 and "2 channels are written as one multi-channel TIFF: use --format tif" in capsys.readouterr().err
