"""A corpus of malformed inputs, made here, and random ones from hypothesis, fed to
``read_stack``, ``focus_stack`` and the command line (issue 12).

Whatever comes in, what comes out is a result or one clean error: a
``StackReadError`` (or ``ValueError``) whose one-line message names the file or
array, never a traceback; nothing is left behind (no output, no temporary) when
a run fails; and the inputs are never changed.
"""

import contextlib
import io as text_io
import os
import struct
import tempfile
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from napari_focus_stack.api import MissingDataWarning, focus_stack
from napari_focus_stack.cli import main
from napari_focus_stack.io import StackReadError, read_stack, save_image

FORMATS = ("png", "jpg", "tif", "bmp", "webp")
SHAPE = (40, 48)
BOUNDED = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def frames(n=3, dtype=np.uint8, seed=0):
    """A small RGB focal stack: sharp texture in a different band of columns per frame."""
    rng = np.random.default_rng(seed)
    texture = rng.random((*SHAPE, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(texture, (0, 0), 2.0)
    band = np.arange(SHAPE[1]) * n // SHAPE[1]
    stack = np.stack([np.where((band == k)[None, :, None], texture, blurred) for k in range(n)])
    return stack.astype(dtype) if np.dtype(dtype).kind == "f" else np.round(stack * 255).astype(dtype)


def encoded(extension, frame=None):
    """The bytes of a valid small frame in ``extension``'s format."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"f.{extension}"
        save_image(frames(1)[0] if frame is None else frame, path)
        return path.read_bytes()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width, height):
    """A PNG whose header declares ``width`` x ``height`` px, with a few bytes of pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + png_chunk(b"IEND", b"")
    )


def tiff_declaring(path, width, height):
    tifffile.imwrite(path, np.zeros((2, 2), np.uint8))
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(width)
        tif.pages[0].tags["ImageLength"].overwrite(height)


def snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def run_quietly(argv):
    """The command line's exit status and what it printed (stdout, stderr)."""
    out, err = text_io.StringIO(), text_io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@contextlib.contextmanager
def warnings_are_errors():
    """Every warning fails the test, except ours about missing data."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", MissingDataWarning)
        yield


def check_source(source, inputs_root, workdir):
    """Feed ``source`` to read_stack, focus_stack and the CLI; assert the issue's targets.

    Returns whether it was read (True) or refused (False), the same for all three.
    """
    before = snapshot(inputs_root)
    outcomes = []
    for attempt in (lambda: read_stack(source), lambda: focus_stack(source, device="cpu")):
        try:
            with warnings_are_errors():  # no library warning escapes
                attempt()
            outcomes.append(True)
        except StackReadError as exc:
            message = str(exc)
            assert "\n" not in message and "Traceback" not in message and " object at 0x" not in message
            assert ".tmp" not in message and "<_io" not in message
            assert str(inputs_root) in message or message.startswith("No image files"), message
            outcomes.append(False)
    assert outcomes[0] == outcomes[1] or outcomes == [True, False], outcomes  # decoding can fail only later

    out = Path(workdir) / "out"
    out.mkdir()
    code, stdout, stderr = run_quietly([source, "-o", out / "f.tif", "--depth", out / "d.tif", "-q"])
    assert "Traceback" not in stderr and stdout == ""
    if code == 0:
        assert sorted(os.listdir(out)) == ["d.tif", "f.tif"]
    else:
        assert code == 2, stderr
        lines = stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("napari-focus-stack: error: ") and ".tmp" not in stderr
        assert str(inputs_root) in stderr or "No image files" in stderr, stderr
        assert os.listdir(out) == []  # nothing written, not even a temporary
    assert (code == 0) == outcomes[1], (stderr, outcomes)
    assert snapshot(inputs_root) == before  # inputs unchanged, byte for byte
    return outcomes[1]


# --- The corpus ------------------------------------------------------------------------


def corpus():
    """``(name, make)``: ``make(folder)`` writes two good frames and one bad file into ``folder``."""
    cases = []
    for extension in FORMATS:
        good = encoded(extension)
        cases += [
            (f"zero-byte {extension}", extension, b""),
            (f"truncated {extension}", extension, good[: len(good) // 2]),
            (f"header only {extension}", extension, good[:16]),
            (f"bad header {extension}", extension, good[:4] + b"\xff" * 12 + good[16:]),
            (f"garbage {extension}", extension, os.urandom(300)),
        ]
    cases += [
        ("zero-page tif", "tif", b"II*\0\0\0\0\0"),
        ("absurd-dimension png", "png", png_declaring(100_000, 100_000)),
        ("decompression-bomb png", "png", png_declaring(15_000, 15_000)),
    ]
    return cases


@pytest.mark.parametrize("name, extension, data", corpus(), ids=[case[0] for case in corpus()])
def test_corpus_file_in_a_folder_of_good_frames(tmp_path, name, extension, data):
    stack = tmp_path / "stack"
    stack.mkdir()
    for k, frame in enumerate(frames(2)):
        save_image(frame, stack / f"z{2 * k + 1}.{extension}")
    (stack / f"z2.{extension}").write_bytes(data)
    assert check_source(stack, stack, tmp_path) is False


def test_corpus_absurd_dimension_tiff(tmp_path):
    stack = tmp_path / "stack"
    stack.mkdir()
    for k, frame in enumerate(frames(2)):
        save_image(frame, stack / f"z{2 * k + 1}.tif")
    tiff_declaring(stack / "z2.tif", 100_000, 100_000)
    assert check_source(stack, stack, tmp_path) is False


@pytest.mark.parametrize(
    "name, stack",
    [
        ("noise", np.random.default_rng(1).integers(0, 256, (4, *SHAPE), dtype=np.uint8)),
        ("16-bit noise", np.random.default_rng(2).integers(0, 65536, (3, *SHAPE, 3), dtype=np.uint16)),
        (
            "float with NaN and Inf",
            np.where(np.random.default_rng(3).random((3, *SHAPE)) < 0.05, np.nan, frames(3, np.float32)[..., 0]),
        ),
        (
            "float with Inf",
            np.where(np.random.default_rng(4).random((3, *SHAPE)) < 0.05, -np.inf, frames(3, np.float32)[..., 0]),
        ),
    ],
)
def test_corpus_stacks_that_are_read(tmp_path, name, stack):
    stack = stack.astype(np.float32) if stack.dtype.kind == "f" else stack
    path = tmp_path / "in" / "stack.tif"
    path.parent.mkdir()
    tifffile.imwrite(path, stack, photometric="rgb" if stack.ndim == 4 else "minisblack")
    assert check_source(path, path.parent, tmp_path) is True
    result = focus_stack(stack, device="cpu", align="none") if stack.dtype.kind != "f" else None
    if result is not None:
        assert result.fused.dtype == stack.dtype and 0 <= result.confidence.min() <= result.confidence.max() <= 1


def test_corpus_float_frames_beyond_float32_arithmetic_are_refused(tmp_path):
    stack = frames(3, np.float32) * np.float32(1e30)
    with pytest.raises(StackReadError, match=r"^frame 0: pixel values reach 1e\+30, beyond the 1e\+18"):
        focus_stack(stack)


@pytest.mark.parametrize("value", [0, 128, 255])
def test_corpus_constant_stack_gives_a_result(value):
    with warnings_are_errors():
        result = focus_stack(np.full((4, *SHAPE), value, np.uint8), device="cpu")
    assert result.fused.shape == SHAPE and result.fused.dtype == np.uint8
    assert np.isfinite(result.depth).all() and 0 <= result.confidence.min() <= result.confidence.max() <= 1


@pytest.mark.parametrize("method", ["weighted", "depthmap", "pyramid"])
@pytest.mark.parametrize("dtype, value", [(np.uint8, 200), (np.uint16, 40000), (np.float32, 0.25)])
def test_corpus_constant_stack_fuses_to_the_constant(method, dtype, value):
    with warnings_are_errors():
        result = focus_stack(np.full((5, 64, 64), value, dtype), method=method, device="cpu")
    np.testing.assert_array_equal(result.fused, np.full((64, 64), value, dtype))


@pytest.mark.parametrize(
    "shape", [(0, 8, 8), (1, 8, 8), (3, 0, 8), (3, 8, 0), (3, 0, 0, 3), (3, 8, 8, 2), (8, 8), (2, 2, 2, 2, 2)]
)
def test_corpus_arrays_of_no_use_are_refused_in_one_line(shape):
    with pytest.raises(StackReadError) as raised:
        focus_stack(np.zeros(shape, np.uint8))
    assert str(raised.value).startswith(f"array of shape {shape}: ") and "\n" not in str(raised.value)


# --- Random malformed files and arrays ----------------------------------------------------


def mutate(data, kind, position, value):
    position = position % (len(data) + 1)
    if kind == "truncate":
        return data[:position]
    if kind == "flip":
        return data[:position] + bytes([value]) + data[position + 1 :]
    if kind == "insert":
        return data[:position] + bytes([value]) * 7 + data[position:]
    return bytes(value for _ in range(position % 64))  # "replace": a short run of one byte


@BOUNDED
@given(
    extension=st.sampled_from(FORMATS),
    kind=st.sampled_from(["truncate", "flip", "insert", "replace"]),
    position=st.integers(0, 10_000),
    value=st.integers(0, 255),
)
def test_random_malformed_files(extension, kind, position, value):
    with tempfile.TemporaryDirectory() as workdir:
        stack = Path(workdir) / "stack"
        stack.mkdir()
        good = frames(3)
        for k in (0, 2):
            save_image(good[k], stack / f"z{k + 1}.{extension}")
        (stack / f"z2.{extension}").write_bytes(mutate(encoded(extension, good[1]), kind, position, value))
        check_source(stack, stack, workdir)


SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, 0.0, 1e30, -1e30, 1e-30])


@BOUNDED
@given(
    depth=st.integers(0, 4),
    height=st.integers(0, 24),
    width=st.integers(0, 24),
    channels=st.sampled_from([None, 1, 2, 3, 4]),
    dtype=st.sampled_from(["uint8", "uint16", "float32", "float64", "int16", "int32", "bool", "complex64"]),
    specials=st.lists(st.tuples(st.integers(0, 10_000), SPECIAL), max_size=6),
    seed=st.integers(0, 2**16),
)
def test_random_arrays(depth, height, width, channels, dtype, specials, seed):
    shape = (depth, height, width) + (() if channels is None else (channels,))
    rng = np.random.default_rng(seed)
    array = (rng.random(shape) * (255 if dtype != "bool" else 1)).astype(dtype)
    if array.size and np.dtype(dtype).kind == "f":
        for position, value in specials:
            array.flat[position % array.size] = value
    before = array.copy()
    try:
        with warnings_are_errors():
            result = focus_stack(array, device="cpu", radius=2)
    except StackReadError as exc:
        message = str(exc)
        assert "\n" not in message and (message.startswith("array of shape") or message.startswith("frame ")), message
    else:
        rgb = channels in (3, 4)
        assert result.fused.shape == (height, width) + ((3,) if rgb else ())
        assert np.isfinite(result.depth).all() and result.depth.min() >= 0 and result.depth.max() <= depth - 1
        assert np.isfinite(result.confidence).all()
        assert result.confidence.min() >= 0 and result.confidence.max() <= 1
        if result.fused.dtype.kind == "f":
            assert np.isfinite(result.fused).all()
    np.testing.assert_array_equal(array, before)  # the caller's array is never changed


@BOUNDED
@given(
    depth=st.integers(1, 4),
    dtype=st.sampled_from(["uint8", "uint16", "float32"]),
    specials=st.lists(st.tuples(st.integers(0, 10_000), SPECIAL), max_size=4),
    extension=st.sampled_from(["tif", "png", "jpg"]),
)
def test_random_stacks_through_the_command_line(depth, dtype, specials, extension):
    stack = frames(depth, np.float32)
    if dtype != "float32":
        stack = np.round(stack * np.iinfo(dtype).max).astype(dtype)
    for position, value in specials if dtype == "float32" else ():
        stack.flat[position % stack.size] = value
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "in" / "stack.tif"
        path.parent.mkdir()
        tifffile.imwrite(path, stack, photometric="rgb")
        before = path.read_bytes()
        out = Path(workdir) / "out"
        out.mkdir()
        code, stdout, stderr = run_quietly([path, "-o", out / f"f.{extension}", "--confidence", out / "c.tif", "-q"])
        assert "Traceback" not in stderr and stdout == ""
        if code == 0:
            assert sorted(os.listdir(out)) == ["c.tif", f"f.{extension}"]
            assert np.isfinite(tifffile.imread(out / "c.tif")).all()
        else:
            assert code == 2 and len(stderr.splitlines()) == 1, stderr
            assert str(path) in stderr or str(out / f"f.{extension}") in stderr, stderr
            assert os.listdir(out) == []
        assert path.read_bytes() == before
