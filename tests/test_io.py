"""Tests for napari_focus_stack.io: reading, validating and writing stacks."""

import json
import re
import struct
import time
import tracemalloc
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image, ImageOps

from napari_focus_stack.io import (
    FrameSequence,
    StackReadError,
    natural_sort_key,
    open_stack,
    read_metadata,
    read_stack,
    save_image,
    sources,
    split_into_stacks,
)

# The shared data sit beside the checkout: <repo root>/../shared/data/stacks.
SHARED_STACKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "stacks"


def random_stack(shape, dtype=np.uint8, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.random(shape).astype(dtype)
    return rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)


def write_image(path, image):
    """Write an RGB(A) or gray image with OpenCV (which wants BGR)."""
    if image.ndim == 3:
        code = cv2.COLOR_RGB2BGR if image.shape[-1] == 3 else cv2.COLOR_RGBA2BGRA
        image = cv2.cvtColor(image, code)
    assert cv2.imwrite(str(path), image)
    return path


def write_frames(folder, stack, names):
    folder.mkdir(exist_ok=True)
    return [write_image(folder / name, frame) for frame, name in zip(stack, names, strict=True)]


def write_multipage_tiff(path, stack, **kwargs):
    with tifffile.TiffWriter(path) as tif:
        for frame in stack:
            tif.write(frame, metadata=None, **kwargs)
    return path


def message_naming(path, text=""):
    return re.escape(str(path)) + ".*" + text


# --- natural sort --------------------------------------------------------------------


def test_natural_sort_orders_numbers_by_value_ignoring_case():
    names = ["f10.jpg", "F2.jpg", "f1.jpg", "f.jpg", "e9.jpg", "f1b.jpg", "f_1.jpg"]
    assert sorted(names, key=natural_sort_key) == [
        "e9.jpg",
        "f.jpg",
        "f1.jpg",
        "f1b.jpg",
        "F2.jpg",
        "f10.jpg",
        "f_1.jpg",
    ]


def test_natural_sort_accepts_paths_and_breaks_ties():
    paths = [Path("a/img02.png"), Path("a/img2.png"), Path("a/img1.png"), Path("a/img.png")]
    ordered = sorted(paths, key=natural_sort_key)
    assert ordered[:2] == [Path("a/img.png"), Path("a/img1.png")]
    assert natural_sort_key(paths[0]) != natural_sort_key(paths[1])


# --- sources -------------------------------------------------------------------------


def test_folder_with_mixed_case_extensions_in_natural_order(tmp_path):
    stack = random_stack((3, 6, 8, 3))
    write_frames(tmp_path, stack, ["z10.PNG", "z2.png", "Z1.Png"])
    (tmp_path / "SOURCE.txt").write_text("where these came from")
    (tmp_path / ".DS_Store").write_bytes(b"\0\1junk")
    (tmp_path / "reference").mkdir()
    write_image(tmp_path / "reference" / "z0.png", stack[0])

    frames = open_stack(tmp_path)

    assert frames.shape == (3, 6, 8, 3)
    assert frames.metadata["names"] == ["Z1.Png", "z2.png", "z10.PNG"]
    assert frames.metadata["source"] == str(tmp_path)
    np.testing.assert_array_equal(frames[0], stack[2])
    np.testing.assert_array_equal(frames[-1], stack[0])


def test_jpeg_frames_with_upper_and_lower_case_extensions(tmp_path):
    stack = np.full((2, 16, 16, 3), 128, np.uint8)
    write_frames(tmp_path, stack, ["a1.JPG", "a2.jpeg"])
    frames = open_stack(tmp_path)
    assert frames.shape == (2, 16, 16, 3)
    assert np.abs(frames[1].astype(int) - 128).max() <= 2


def test_list_of_paths_keeps_given_order(tmp_path):
    stack = random_stack((3, 5, 7))
    paths = write_frames(tmp_path, stack, ["a.png", "b.png", "c.png"])
    frames = open_stack([str(paths[2]), paths[0], paths[1]])
    assert frames.metadata["names"] == ["c.png", "a.png", "b.png"]
    assert frames.metadata["paths"] == [str(paths[2]), str(paths[0]), str(paths[1])]
    np.testing.assert_array_equal(frames[0], stack[2])


def test_glob_pattern(tmp_path):
    stack = random_stack((3, 5, 7), np.uint16)
    write_frames(tmp_path, stack, ["s1.png", "s2.png", "s3.png"])
    write_image(tmp_path / "other.png", stack[0])
    frames = open_stack(str(tmp_path / "s*.png"))
    assert frames.dtype == np.uint16
    assert frames.metadata["names"] == ["s1.png", "s2.png", "s3.png"]
    np.testing.assert_array_equal(read_stack(str(tmp_path / "s?.png"))[0], stack)


def test_multipage_tiff(tmp_path):
    stack = random_stack((4, 6, 5), np.uint16)
    path = write_multipage_tiff(tmp_path / "stack.tif", stack)
    frames = open_stack(path)
    assert frames.shape == stack.shape
    assert frames.metadata["names"][1] == "stack.tif[1]"
    assert frames.metadata["paths"] == [str(path)] * 4
    np.testing.assert_array_equal(read_stack(path)[0], stack)


def test_imagej_hyperstack_channels_last_with_spacing_and_pixel_size(tmp_path):
    stack = random_stack((4, 3, 6, 5), np.uint16)  # Z, C, Y, X
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(
        path,
        stack,
        imagej=True,
        resolution=(1 / 0.25, 1 / 0.5),  # pixels per µm, x then y
        metadata={"axes": "ZCYX", "spacing": 2.5, "unit": "um"},
    )
    array, metadata = read_stack(path)
    np.testing.assert_array_equal(array, np.moveaxis(stack, 1, -1))
    assert metadata["z_step_um"] == pytest.approx(2.5)
    assert metadata["pixel_size_um"] == pytest.approx((0.5, 0.25))


def test_imagej_spacing_in_nanometres(tmp_path):
    path = tmp_path / "nm.tif"
    tifffile.imwrite(
        path,
        random_stack((3, 4, 4), np.uint8),
        imagej=True,
        resolution=(1 / 100, 1 / 100),
        metadata={"axes": "ZYX", "spacing": 300.0, "unit": "nm"},
    )
    metadata = open_stack(path).metadata
    assert metadata["z_step_um"] == pytest.approx(0.3)
    assert metadata["pixel_size_um"] == pytest.approx((0.1, 0.1))


def test_ome_tiff_physical_sizes_in_micrometres(tmp_path):
    stack = random_stack((3, 4, 5), np.uint16)
    path = tmp_path / "stack.ome.tif"
    tifffile.imwrite(
        path,
        stack,
        ome=True,
        metadata={
            "axes": "ZYX",
            "PhysicalSizeX": 120,
            "PhysicalSizeXUnit": "nm",
            "PhysicalSizeY": 0.13,
            "PhysicalSizeZ": 0.002,
            "PhysicalSizeZUnit": "mm",
        },
    )
    array, metadata = read_stack(path)
    np.testing.assert_array_equal(array, stack)
    assert metadata["z_step_um"] == pytest.approx(2.0)
    assert metadata["pixel_size_um"] == pytest.approx((0.13, 0.12))


def test_folder_without_physical_sizes_says_none(tmp_path):
    write_frames(tmp_path, random_stack((2, 4, 4)), ["a.png", "b.png"])
    metadata = open_stack(tmp_path).metadata
    assert metadata["z_step_um"] is None and metadata["pixel_size_um"] is None


@pytest.mark.parametrize(
    ("dtype", "extension", "expected"),
    [
        (np.uint8, ".png", np.uint8),
        (np.uint16, ".png", np.uint16),
        (np.uint8, ".tif", np.uint8),
        (np.uint16, ".tif", np.uint16),
        (np.float32, ".tif", np.float32),
        (np.float64, ".tif", np.float32),
        (np.int16, ".tif", np.float32),
    ],
)
def test_bit_depths(tmp_path, dtype, extension, expected):
    stack = random_stack((2, 5, 6), dtype)
    if extension == ".tif":
        paths = [tmp_path / f"{i}.tif" for i in range(2)]
        for path, frame in zip(paths, stack, strict=True):
            tifffile.imwrite(path, frame)
    else:
        paths = write_frames(tmp_path, stack, ["0.png", "1.png"])
    array, _ = read_stack(paths)
    assert array.dtype == expected
    np.testing.assert_array_equal(array, stack.astype(expected))


@pytest.mark.parametrize(("channels", "expected_shape"), [(None, (5, 6)), (3, (5, 6, 3)), (4, (5, 6, 3))])
def test_gray_rgb_and_rgba_png(tmp_path, channels, expected_shape):
    shape = (2, 5, 6) if channels is None else (2, 5, 6, channels)
    stack = random_stack(shape)
    frames = open_stack(write_frames(tmp_path, stack, ["a.png", "b.png"]))
    assert frames.shape[1:] == expected_shape
    np.testing.assert_array_equal(frames[1], stack[1] if channels is None else stack[1, ..., :3])


def test_gray_rgb_frames_stay_rgb(tmp_path):
    stack = np.repeat(random_stack((2, 4, 4, 1)), 3, axis=-1)
    assert open_stack(write_frames(tmp_path, stack, ["a.png", "b.png"])).shape == (2, 4, 4, 3)


def test_gray_with_alpha_png_reads_gray(tmp_path):
    stack = random_stack((2, 4, 5, 2))
    for index, frame in enumerate(stack):
        Image.fromarray(frame, mode="LA").save(tmp_path / f"{index}.png")
    frames = open_stack(tmp_path)
    assert frames.shape == (2, 4, 5)
    np.testing.assert_array_equal(frames[0], stack[0, ..., 0])


def test_rgba_tiff_drops_alpha(tmp_path):
    stack = random_stack((2, 4, 5, 4))
    path = write_multipage_tiff(tmp_path / "rgba.tif", stack, photometric="rgb", extrasamples=[2])
    np.testing.assert_array_equal(read_stack(path)[0], stack[..., :3])


def test_planar_rgb_tiff_reads_channels_last(tmp_path):
    stack = random_stack((2, 3, 4, 5))
    path = write_multipage_tiff(tmp_path / "planar.tif", stack, photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_stack(path)[0], np.moveaxis(stack, 1, -1))


def test_lzw_tiff_frames_decode_without_imagecodecs(tmp_path):
    stack = random_stack((2, 5, 6), np.uint16)
    for index, frame in enumerate(stack):
        Image.fromarray(frame).save(tmp_path / f"{index}.tif", compression="tiff_lzw")
    np.testing.assert_array_equal(read_stack(tmp_path)[0], stack)


def test_numpy_array_is_wrapped_lazily():
    stack = random_stack((3, 4, 5, 4), np.float64)
    frames = open_stack(stack)
    assert frames.shape == (3, 4, 5, 3) and frames.dtype == np.float32
    assert frames.metadata["paths"] is None
    assert frames[2].flags.c_contiguous
    np.testing.assert_allclose(frames[2], stack[2, ..., :3], rtol=1e-6)
    assert open_stack(frames) is frames


def test_open_stack_decodes_nothing(tmp_path, monkeypatch):
    paths = write_frames(tmp_path, random_stack((2, 4, 4, 3)), ["a.jpg", "b.jpg"])

    decoded = []
    imdecode = cv2.imdecode

    def counting_imdecode(*args):
        decoded.append(args)
        return imdecode(*args)

    monkeypatch.setattr(cv2, "imdecode", counting_imdecode)
    frames = open_stack(paths)
    assert len(frames) == 2 and frames.nbytes == 2 * 4 * 4 * 3
    assert decoded == []
    frames[1]
    assert len(decoded) == 1


def test_index_out_of_range(tmp_path):
    frames = open_stack(np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(IndexError):
        frames[2]
    assert len(list(frames)) == 2


# --- EXIF orientation ------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path, orientation):
    stack = random_stack((2, 3, 5, 3))
    exif = Image.Exif()
    exif[0x0112] = orientation
    paths = []
    for index, frame in enumerate(stack):
        paths.append(tmp_path / f"{index}.png")
        Image.fromarray(frame).save(paths[-1], exif=exif)
    frames = open_stack(paths)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(paths[1])))
    assert frames.shape[1:] == upright.shape
    np.testing.assert_array_equal(frames[1], upright)


def test_exif_orientation_of_jpeg(tmp_path):
    image = np.zeros((24, 40, 3), np.uint8)
    image[:8, :8] = 255  # top-left corner; rotated 90° clockwise it is top-right
    exif = Image.Exif()
    exif[0x0112] = 6
    for index in range(2):
        Image.fromarray(image).save(tmp_path / f"{index}.jpg", exif=exif, quality=95)
    frames = open_stack(tmp_path)
    assert frames.shape == (2, 40, 24, 3)
    assert frames[0][:8, -8:].mean() > 200 and frames[0][-8:, :8].mean() < 50


def test_exif_orientation_of_16_bit_png(tmp_path):
    stack = random_stack((2, 3, 5), np.uint16)
    exif = Image.Exif()
    exif[0x0112] = 8
    for index, frame in enumerate(stack):
        Image.fromarray(frame).save(tmp_path / f"{index}.png", exif=exif)
    frames = open_stack(tmp_path)
    assert frames.dtype == np.uint16 and frames.shape == (2, 5, 3)
    np.testing.assert_array_equal(frames[0], np.rot90(stack[0]))


# --- bad input -------------------------------------------------------------------------


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    expected = f"No image files found in {re.escape(str(tmp_path))}"
    with pytest.raises(StackReadError, match=expected):
        open_stack(tmp_path)


def test_glob_without_match(tmp_path):
    with pytest.raises(StackReadError, match="No image files found matching"):
        open_stack(str(tmp_path / "*.jpg"))


def test_missing_path(tmp_path):
    with pytest.raises(StackReadError, match=message_naming(tmp_path / "nope", "no such file")):
        open_stack(tmp_path / "nope")


def test_empty_list():
    with pytest.raises(StackReadError, match="No image files given"):
        open_stack([])


def test_single_frame_folder(tmp_path):
    write_image(tmp_path / "only.png", random_stack((4, 4)))
    with pytest.raises(StackReadError, match="only.png.*needs at least 2 frames"):
        open_stack(tmp_path)


def test_single_page_tiff(tmp_path):
    path = tmp_path / "one.tif"
    tifffile.imwrite(path, random_stack((4, 4)))
    with pytest.raises(StackReadError, match="one.tif.*needs at least 2 frames"):
        open_stack(path)


def test_array_with_one_frame_or_wrong_shape():
    with pytest.raises(StackReadError, match="needs at least 2 frames"):
        open_stack(np.zeros((1, 4, 4)))
    with pytest.raises(StackReadError, match=r"expected \(Z, Y, X\)"):
        open_stack(np.zeros((4, 4)))
    with pytest.raises(StackReadError, match="C = 1, 3 or 4"):
        open_stack(np.zeros((2, 4, 4, 2)))
    with pytest.raises(StackReadError, match="unsupported pixel type bool"):
        open_stack(np.zeros((2, 4, 4), bool))


def test_frames_of_different_sizes(tmp_path):
    write_image(tmp_path / "a1.png", random_stack((4, 6)))
    write_image(tmp_path / "a2.png", random_stack((4, 6)))
    write_image(tmp_path / "a3.png", random_stack((5, 6)))
    expected = message_naming(tmp_path / "a3.png", "6x5 px gray but a1.png is 6x4 px gray")
    with pytest.raises(StackReadError, match=expected):
        open_stack(tmp_path)


def test_frames_with_different_channels(tmp_path):
    write_image(tmp_path / "a1.png", random_stack((4, 6, 3)))
    write_image(tmp_path / "a2.png", random_stack((4, 6)))
    expected = message_naming(tmp_path / "a2.png", "gray but a1.png")
    with pytest.raises(StackReadError, match=expected):
        open_stack(tmp_path)


def test_frames_with_different_bit_depths(tmp_path):
    write_image(tmp_path / "a1.png", random_stack((4, 6), np.uint8))
    write_image(tmp_path / "a2.png", random_stack((4, 6), np.uint16))
    with pytest.raises(StackReadError, match=message_naming(tmp_path / "a2.png", "uint16.*uint8")):
        open_stack(tmp_path)


def test_unsupported_pixel_type_names_the_file(tmp_path):
    for index in range(2):
        tifffile.imwrite(tmp_path / f"{index}.tif", np.zeros((4, 4), np.int32))
    expected = message_naming(tmp_path / "0.tif", "unsupported pixel type int32")
    with pytest.raises(StackReadError, match=expected):
        open_stack(tmp_path)


def test_unknown_file_in_folder(tmp_path):
    write_frames(tmp_path, random_stack((2, 4, 4)), ["a.png", "b.png"])
    (tmp_path / "scan.bin").write_bytes(b"\0" * 16)
    expected = message_naming(tmp_path / "scan.bin", "not a supported")
    with pytest.raises(StackReadError, match=expected):
        open_stack(tmp_path)


@pytest.mark.parametrize("name", ["bad.jpg", "bad.png", "bad.tif"])
def test_file_that_is_not_an_image(tmp_path, name):
    write_frames(tmp_path, random_stack((2, 4, 4)), ["a.png", "b.png"])
    (tmp_path / name).write_text("this is not an image")
    with pytest.raises(StackReadError, match=message_naming(tmp_path / name, "not a readable")):
        open_stack(tmp_path)


@pytest.mark.parametrize("extension", [".jpg", ".png"])
def test_truncated_file_fails_when_decoded(tmp_path, extension):
    names = [f"a{extension}", f"b{extension}"]
    paths = write_frames(tmp_path, random_stack((2, 64, 64, 3)), names)
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    frames = open_stack(tmp_path)
    np.asarray(frames[0])
    with pytest.raises(StackReadError, match=message_naming(paths[1], "cannot decode")):
        frames[1]


def test_multipage_tiff_inside_folder(tmp_path):
    write_image(tmp_path / "a.png", random_stack((4, 4)))
    write_multipage_tiff(tmp_path / "b.tif", random_stack((3, 4, 4)))
    with pytest.raises(StackReadError, match="b.tif: holds 3 frames"):
        open_stack(tmp_path)


def test_hyperstack_with_time_axis(tmp_path):
    path = tmp_path / "movie.tif"
    tifffile.imwrite(path, random_stack((2, 3, 4, 4)), imagej=True, metadata={"axes": "TZYX"})
    with pytest.raises(StackReadError, match="movie.tif: has a time axis.*split"):
        open_stack(path)


def test_hyperstack_with_two_channels(tmp_path):
    path = tmp_path / "two.tif"
    tifffile.imwrite(path, random_stack((3, 2, 4, 4)), imagej=True, metadata={"axes": "ZCYX"})
    with pytest.raises(StackReadError, match=r"two.tif: has 2 channels; reads 1 \(gray\) or 3"):
        open_stack(path)


def test_compressed_multipage_tiff_needs_imagecodecs(tmp_path):
    if 5 in tifffile.TIFF.DECOMPRESSORS:
        pytest.skip("tifffile decodes LZW here (imagecodecs is installed)")
    frames = [Image.fromarray(frame) for frame in random_stack((2, 4, 4))]
    path = tmp_path / "lzw.tif"
    frames[0].save(path, save_all=True, append_images=frames[1:], compression="tiff_lzw")
    with pytest.raises(StackReadError, match="lzw.tif: LZW compression.*imagecodecs"):
        open_stack(path)


# --- decompression bombs ---------------------------------------------------------------


def png_declaring(path, width, height):
    """A tiny valid-looking PNG whose IHDR declares ``width`` x ``height``."""
    write_image(path, np.zeros((8, 8), np.uint8))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))
    return path


def tiff_declaring(path, width, height):
    """A tiny TIFF whose ImageWidth and ImageLength tags declare ``width`` x ``height``."""
    tifffile.imwrite(path, np.zeros((8, 8), np.uint8), metadata=None)
    with tifffile.TiffFile(path) as tif:
        tags = tif.pages[0].tags
        patches = [
            (tags[name].valueoffset, "<H" if tags[name].dtype == 3 else "<I", value)
            for name, value in (("ImageWidth", width), ("ImageLength", height))
        ]
    data = bytearray(path.read_bytes())
    for offset, fmt, value in patches:
        data[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    ("make", "size", "limit"),
    [
        (png_declaring, 100_000, 400_000_000),  # beyond Pillow's own limit too
        (png_declaring, 5_000, 1_000_000),
        (tiff_declaring, 60_000, 400_000_000),
    ],
)
def test_decompression_bomb_refused_from_header(tmp_path, make, size, limit):
    write_image(tmp_path / "a.png", np.zeros((8, 8), np.uint8))
    bomb = make(tmp_path / ("b.png" if make is png_declaring else "b.tif"), size, size)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(StackReadError, match=message_naming(bomb, "header declares")):
            read_stack([tmp_path / "a.png", bomb], max_frame_pixels=limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50e6
    assert time.perf_counter() - start < 2


# --- memory ----------------------------------------------------------------------------


def test_stack_larger_than_available_memory_is_refused(monkeypatch):
    monkeypatch.setattr(sources, "host_available_memory", lambda: 1_000_000)
    stack = np.zeros((4, 500, 500), np.uint8)  # 1 MB
    with pytest.raises(StackReadError, match="stack needs 0.00 GB but only 0.00 GB"):
        read_stack(stack)
    monkeypatch.setattr(sources, "host_available_memory", lambda: 1_000_000_000)
    assert read_stack(stack, memory_fraction=0.5)[0].shape == stack.shape


def test_unknown_available_memory_skips_the_check(monkeypatch):
    monkeypatch.setattr(sources, "host_available_memory", lambda: None)
    assert read_stack(np.zeros((2, 3, 3), np.uint8))[0].shape == (2, 3, 3)


def test_available_memory_is_read():
    available = sources.host_available_memory()
    assert available is None or available > 0


# --- writing ---------------------------------------------------------------------------


def test_save_uint16_tiff_round_trip_with_metadata(tmp_path):
    image = random_stack((5, 7, 3), np.uint16)
    metadata = {"radius": 8, "weights": np.array([0.5, 1.5]), "pixel_size_um": (0.5, 0.25)}
    path = save_image(image, tmp_path / "fused.tif", metadata=metadata)
    assert path == tmp_path / "fused.tif"
    np.testing.assert_array_equal(tifffile.imread(path), image)
    expected = {"radius": 8, "weights": [0.5, 1.5], "pixel_size_um": [0.5, 0.25]}
    assert read_metadata(path) == expected
    save_image(image, tmp_path / "fused2.tif")
    assert open_stack(tmp_path).metadata["pixel_size_um"] == pytest.approx((0.5, 0.25))


def test_save_float32_tiff_without_metadata(tmp_path):
    image = random_stack((5, 7), np.float32)
    path = save_image(image, tmp_path / "depth.TIFF")
    np.testing.assert_array_equal(tifffile.imread(path), image)
    assert read_metadata(path) == {}


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_save_png_round_trip(tmp_path, dtype):
    image = random_stack((5, 7, 3), dtype)
    path = save_image(image, tmp_path / "fused.png")
    decoded = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(decoded, image)


def test_save_jpeg_scales_16_bit_to_8_bit(tmp_path):
    image = np.zeros((16, 16), np.uint16)
    image[:, 8:] = 65535
    path = save_image(image, tmp_path / "fused.jpg")
    decoded = np.asarray(Image.open(path))
    assert decoded.dtype == np.uint8
    assert decoded[:, :6].max() <= 2 and decoded[:, 10:].min() >= 253


def test_save_refuses_what_the_format_cannot_store(tmp_path):
    with pytest.raises(ValueError, match=r"\.jpg stores 8 bits.*float32"):
        save_image(np.zeros((4, 4), np.float32), tmp_path / "a.jpg")
    with pytest.raises(ValueError, match="PNG stores uint8 or uint16"):
        save_image(np.zeros((4, 4), np.float32), tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"supported: \.tif, \.tiff, \.png"):
        save_image(np.zeros((4, 4), np.uint8), tmp_path / "a.gif")
    with pytest.raises(ValueError, match=r"\(Y, X\) or \(Y, X, 3\)"):
        save_image(np.zeros((2, 4, 4), np.uint8), tmp_path / "a.tif")
    with pytest.raises(TypeError, match="not JSON"):
        save_image(np.zeros((4, 4), np.uint8), tmp_path / "a.tif", metadata={"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "fused.tif"
    save_image(np.ones((4, 4), np.uint8), path)
    before = path.read_bytes()

    def write_half_then_fail(file, *args, **kwargs):
        file.write(b"II*\0 half a tiff")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        save_image(np.zeros((4, 4), np.uint8), path)
    with pytest.raises(OSError, match="disk full"):
        save_image(np.zeros((4, 4), np.uint8), tmp_path / "new.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fused.tif"]
    assert path.read_bytes() == before


def test_read_metadata_of_foreign_tiff(tmp_path):
    path = tmp_path / "imagej.tif"
    tifffile.imwrite(path, np.zeros((4, 4), np.uint8), imagej=True)
    assert read_metadata(path) == {}
    json.dumps(read_metadata(path))


# --- split_into_stacks -------------------------------------------------------------------


def test_split_into_stacks():
    paths = [f"img{i}.jpg" for i in (10, 2, 1, 3, 4, 5, 6, 7, 8, 9)]
    stacks = split_into_stacks(paths, 4)
    assert stacks == [  # strings in, strings out
        ["img1.jpg", "img2.jpg", "img3.jpg", "img4.jpg"],
        ["img5.jpg", "img6.jpg", "img7.jpg", "img8.jpg"],
        ["img9.jpg", "img10.jpg"],
    ]
    assert split_into_stacks([], 3) == []
    as_paths = split_into_stacks([Path(p) for p in paths], 4)
    assert as_paths[2] == [Path("img9.jpg"), Path("img10.jpg")] and isinstance(as_paths[0][0], Path)


def test_split_into_stacks_refuses_a_lone_leftover_and_tiny_stacks():
    with pytest.raises(ValueError, match="7 files .* stacks of 3: 1 file is left over"):
        split_into_stacks([f"{i}.png" for i in range(7)], 3)
    with pytest.raises(ValueError, match="at least 2"):
        split_into_stacks(["a.png", "b.png"], 1)


# --- the project's real stacks -------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "shape", "dtype"),
    [
        ("pcb_aimonen", (7, 1536, 2048, 3), np.uint8),
        ("mito_lightsheet_16bit", (34, 800, 512), np.uint16),
        ("cells3d_nuclei_confocal_16bit", (60, 256, 256), np.uint16),
    ],
)
def test_real_stacks(name, shape, dtype):
    folder = SHARED_STACKS / name
    if not folder.is_dir():
        pytest.skip(f"{folder} not present")
    frames = open_stack(folder)
    assert frames.shape == shape and frames.dtype == dtype
    assert len(frames.metadata["names"]) == shape[0]
    last = frames[-1]
    assert last.shape == shape[1:] and last.dtype == dtype and last.any()
    assert isinstance(frames, FrameSequence)


# --- reduced reads ---------------------------------------------------------------------


def smooth_rgb(shape, seed=0):
    """A smooth RGB image: JPEG keeps it closely, so decoders can be compared."""
    noise = np.random.default_rng(seed).random((shape[0] // 32, shape[1] // 32, 3)).astype(np.float32)
    return (cv2.resize(noise, shape[::-1], interpolation=cv2.INTER_CUBIC) * 255).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("orientation", [1, 6])
@pytest.mark.parametrize("gray", [False, True])
def test_reduced_jpeg_matches_area_shrink_of_full_frame(tmp_path, orientation, gray):
    image = smooth_rgb((320, 512))  # sides divisible by 16: shrinking by area is exact
    image = image[..., 0] if gray else image
    exif = Image.Exif()
    exif[0x0112] = orientation
    for index in range(2):
        Image.fromarray(image).save(tmp_path / f"{index}.jpg", exif=exif, quality=95)
    frames = open_stack(tmp_path)
    for max_side, factor in ((260, 2), (100, 8), (40, 16)):
        small = frames.reduced(1, max_side)
        height, width = frames.shape[1:3]
        assert small.shape[:2] == (-(-height // factor), -(-width // factor))
        assert small.dtype == np.uint8 and small.ndim == (2 if gray else 3)
        shrunk = cv2.resize(frames[1], small.shape[1::-1], interpolation=cv2.INTER_AREA)
        assert np.abs(small.astype(float) - shrunk).mean() < 1


def test_reduced_jpeg_decodes_less(tmp_path):
    for index in range(2):
        Image.fromarray(smooth_rgb((1200, 1600), index)).save(tmp_path / f"{index}.jpg", quality=90)
    frames = open_stack(tmp_path)

    def best_time(read):
        times = []
        for _ in range(3):
            start = time.perf_counter()
            read()
            times.append(time.perf_counter() - start)
        return min(times)

    assert best_time(lambda: frames.reduced(0, 400)) < best_time(lambda: frames[0])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_reduced_other_sources_shrink_by_area(tmp_path, dtype):
    stack = random_stack((2, 50, 70), dtype)
    sources = [stack, write_multipage_tiff(tmp_path / "stack.tif", stack)]
    for source in sources:
        frames = open_stack(source)
        small = frames.reduced(-1, 20)
        assert small.shape == (13, 18) and small.dtype == dtype
        np.testing.assert_array_equal(small, cv2.resize(stack[-1], (18, 13), interpolation=cv2.INTER_AREA))
        np.testing.assert_array_equal(frames.reduced(0, 70), stack[0])


def test_read_image_gives_what_save_image_wrote(tmp_path):
    from napari_focus_stack.io import read_image

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red: a BGR mix-up would show
    depth = np.linspace(0, 3, 20, dtype=np.float32).reshape(4, 5)
    for name, image, metadata in [("a.png", rgb, None), ("d.tif", depth, {"content": "depth map"})]:
        path = save_image(image, tmp_path / name, metadata=metadata)
        read, found = read_image(path)
        np.testing.assert_array_equal(read, image)
        assert read.dtype == image.dtype and found == (metadata or {})
    with pytest.raises(StackReadError, match="no such file"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(StackReadError, match="notes.txt"):
        read_image(tmp_path / "notes.txt")


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".bmp", ".webp"])
def test_colour_order_of_every_decoded_format(tmp_path, suffix):
    # pure red, green and blue thirds: whatever decodes to RGB (OpenCV >= 4.11
    # directly, older ones through BGR), each third keeps its channel
    frame = np.zeros((48, 96, 3), np.uint8)
    for c in range(3):
        frame[:, 32 * c : 32 * (c + 1), c] = 220
    for name in ("a", "b"):
        Image.fromarray(frame).save(tmp_path / f"{name}{suffix}", quality=95)
    frames = open_stack(tmp_path)
    for image in (frames[0], frames.reduced(0, 48)):  # full size, and JPEG's reduced decoding
        step = image.shape[1] // 3
        for c in range(3):
            means = image[:, step * c + 2 : step * (c + 1) - 2].reshape(-1, 3).mean(axis=0)
            assert means[c] > 200 and np.delete(means, c).max() < 20, (c, means)


def test_sixteen_bit_png_colour_order(tmp_path):
    stack = random_stack((2, 5, 6, 3), dtype=np.uint16)
    frames = open_stack(write_frames(tmp_path, stack, ["a.png", "b.png"]))
    assert frames.dtype == np.uint16
    np.testing.assert_array_equal(frames[1], stack[1])
