"""Issue 12: every bad input and fault ends cleanly: the right result or one clear
line naming the user's file, nothing half-written, nothing left behind, inputs
unchanged. One test (or a few) per defect of the issue, by its number."""

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from napari_focus_stack import io
from napari_focus_stack.api import FocusStacker, MissingDataWarning, focus_stack
from napari_focus_stack.batch import BatchOptions
from napari_focus_stack.cli import main
from napari_focus_stack.io import StackReadError, read_stack, save_image, writing

PREFIX = "napari-focus-stack: error: "


def focal_frames(n=5, shape=(48, 64), rgb=True, dtype=np.uint8, seed=0):
    """A small focal stack: one texture, sharp in a different band of columns in each frame."""
    rng = np.random.default_rng(seed)
    texture = rng.random((*shape, 3) if rgb else shape).astype(np.float32)
    blurred = cv2.GaussianBlur(texture, (0, 0), 2.5)
    band = np.arange(shape[1]) * n // shape[1]
    frames = []
    for k in range(n):
        sharp = (band == k)[None, :, None] if rgb else (band == k)[None, :]
        frames.append(np.where(sharp, texture, blurred))
    frames = np.stack(frames)
    if np.dtype(dtype).kind == "f":
        return frames.astype(dtype)
    return np.round(frames * np.iinfo(dtype).max).astype(dtype)


def write_folder(folder, frames, extension="png"):
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        save_image(frame, folder / f"z{k + 1}.{extension}")
    return folder


def snapshot(folder):
    """Every file under ``folder`` (hidden ones too) and its bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(Path(folder).rglob("*"))
        if path.is_file()
    }


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_error_line(err, *fragments):
    """``err`` ends in exactly one error line holding every fragment (after any progress bar)."""
    assert "Traceback" not in err and ".tmp" not in err, err
    last = err.rstrip("\n").split("\n")[-1].split("\r")[-1]
    assert last.startswith(PREFIX) and "<" not in last, err
    segments = [part for line in err.split("\n") for part in line.split("\r") if part.strip()]
    bars = ("Aligning:", "Stacking:", "Batch:")
    assert [part for part in segments if not part.startswith(bars)] == [last], err  # nothing but bars and it
    for fragment in fragments:
        assert fragment in last, (fragment, last)
    assert err.count(PREFIX) == 1


@pytest.fixture
def frames_dir(tmp_path):
    return write_folder(tmp_path / "frames", focal_frames())


# --- 2, 3: batch and folders it skips ---------------------------------------------


def test_2_a_folder_of_fused_tiffs_we_wrote_is_a_stack(tmp_path, capsys):
    root = tmp_path / "scans"
    (root / "ours").mkdir(parents=True)
    for k, frame in enumerate(focal_frames()):  # frames that are fused images of earlier runs
        save_image(frame, root / "ours" / f"f{k}.tif", metadata={"software": "napari-focus-stack", "radius": 8})
    write_folder(root / "plain", focal_frames(seed=1))
    code, out, err = run_cli(capsys, "batch", root, "-o", tmp_path / "out", "--dry-run")
    assert code == 0 and "ours" in out and "plain" in out and "2 stacks" in out
    code, _, err = run_cli(capsys, "batch", root, "-o", tmp_path / "out", "-q")
    assert code == 0 and (tmp_path / "out" / "ours.tif").is_file()


def test_2_a_skipped_folder_is_named_with_the_reason(tmp_path, capsys):
    root = tmp_path / "scans"
    write_folder(root / "a", focal_frames())
    assert run_cli(capsys, "batch", root, "-o", root / "old", "--depth", "-q")[0] == 0
    code, out, err = run_cli(capsys, "batch", root, "-o", tmp_path / "new", "--dry-run")
    assert code == 0 and "1 stacks" in out
    assert (
        "napari-focus-stack batch: skipped folder old: holds the results of an earlier batch (a.json is a napari-focus-stack manifest)"
        in err
    )
    (root / "old" / "a.json").unlink()  # an interrupted batch: maps, no manifest
    code, out, err = run_cli(capsys, "batch", root, "-o", tmp_path / "new", "--dry-run")
    assert (
        "skipped folder old: holds results of an earlier run (a_depth.tif is a depth map napari-focus-stack wrote)"
        in err
    )


def test_3_a_zero_page_tiff_fails_its_stack_only(tmp_path, capsys):
    root = tmp_path / "scans"
    write_folder(root / "good", focal_frames())
    bad = write_folder(root / "bad", focal_frames(seed=2))
    (bad / "z0.tif").write_bytes(b"II*\0\0\0\0\0")
    before = snapshot(root)
    code, _, err = run_cli(capsys, "batch", root, "-o", tmp_path / "out")
    assert code == 1 and "Traceback" not in err
    assert f"failed bad: {bad / 'z0.tif'}: not a readable TIFF (it holds no image pages)" in err
    assert "1 done" in err and "1 failed (none of their files written)" in err
    assert sorted(os.listdir(tmp_path / "out")) == ["good.json", "good.tif"]
    assert snapshot(root) == before


# --- 4: devices -----------------------------------------------------------------


@pytest.mark.parametrize("device", ["gpu:x", "gpu:-1", "gpu:", "GPU:1.5"])
def test_4_a_malformed_device_is_one_line_up_front(tmp_path, frames_dir, capsys, device):
    code, _, err = run_cli(capsys, frames_dir, "-o", tmp_path / "f.tif", "--device", device)
    assert code == 2
    assert_one_error_line(err, f"device must be 'auto', 'cpu', 'gpu', 'gpu:N' or 'gpu:all', got {device!r}")
    code, _, err = run_cli(capsys, "batch", tmp_path, "-o", tmp_path / "out", "--device", device)
    assert code == 2 and err.count(PREFIX) == 1 and "got" in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "f.tif").exists()


def test_4_a_missing_gpu_in_a_batch_is_one_error_not_one_per_stack(tmp_path, capsys, monkeypatch):
    from napari_focus_stack.engine import backend

    def no_gpu(index):
        raise backend.DeviceUnavailableError("GPU requested but CUDA reports no usable device (test)")

    monkeypatch.setattr(backend, "_cupy_backend", no_gpu)
    root = tmp_path / "scans"
    for name in ("a", "b", "c"):
        write_folder(root / name, focal_frames())
    code, _, err = run_cli(capsys, "batch", root, "-o", tmp_path / "out", "--device", "gpu")
    assert code == 2
    assert_one_error_line(err, "GPU requested but CUDA reports no usable device (test)")
    assert "failed" not in err and not (tmp_path / "out").exists()


# --- 5: NaN and Inf ------------------------------------------------------------------


def nan_frames():
    frames = focal_frames(n=5, shape=(160, 200), rgb=False, dtype=np.float32)
    clean = frames.copy()
    # each where its frame is out of focus (frame k is sharp in columns 40k to 40k + 39)
    frames[1, 40:52, 130:150] = np.nan
    frames[2, ::9, 150::7] = np.inf
    frames[3, 100, 20] = -np.inf
    return frames, clean


@pytest.mark.parametrize("method, align", [("weighted", "similarity"), ("depthmap", "none"), ("pyramid", "none")])
def test_5_non_finite_pixels_are_missing_data_reported_once(method, align):
    frames, clean = nan_frames()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = focus_stack(frames, method=method, align=align, device="cpu")
    assert [w.category for w in caught] == [MissingDataWarning]
    assert str(caught[0].message) == (
        "3 of 5 frames hold non-finite pixels (NaN or Inf), 385 in all "
        "(frame 1: 240, frame 2: 144, frame 3: 1); they were treated as missing and filled from the other frames"
    )
    assert np.isfinite(result.fused).all() and np.isfinite(result.depth).all()
    assert result.confidence.min() >= 0 and result.confidence.max() <= 1
    reference = focus_stack(clean, method=method, align=align, device="cpu")
    # missing pixels lose the focus measure: the image is as without them, to a few levels
    difference = np.abs(result.fused - reference.fused)
    assert difference.mean() < 2e-5 and difference.max() < 3e-3


def test_5_the_cli_says_it_in_one_warning_and_no_lapack_noise(tmp_path, capfd):
    frames, _ = nan_frames()
    stack = tmp_path / "stack.tif"
    tifffile.imwrite(stack, frames)
    before = stack.read_bytes()
    code = main([str(stack), "-o", str(tmp_path / "f.tif"), "--confidence", str(tmp_path / "c.tif"), "-q"])
    out, err = capfd.readouterr()
    assert code == 0 and out == ""
    assert err == (
        "napari-focus-stack: warning: 3 of 5 frames hold non-finite pixels (NaN or Inf), 385 in all "
        "(stack.tif[1]: 240, stack.tif[2]: 144, stack.tif[3]: 1); they were treated as missing and filled "
        "from the other frames\n"
    )
    confidence = tifffile.imread(tmp_path / "c.tif")
    assert np.isfinite(tifffile.imread(tmp_path / "f.tif")).all() and np.isfinite(confidence).all()
    assert stack.read_bytes() == before


def test_5_a_frame_without_any_finite_pixel_is_refused_by_name():
    frames, _ = nan_frames()
    frames[4] = np.nan
    with pytest.raises(StackReadError, match=r"^frame 4: every pixel is NaN or infinite; leave this frame out"):
        focus_stack(frames, device="cpu")


def test_5_integer_frames_get_no_extra_pass(monkeypatch):
    def never(*args):
        raise AssertionError("integer frames cannot hold NaN")

    monkeypatch.setattr(io.FrameSequence, "_fill_non_finite", never)
    assert focus_stack(focal_frames(), device="cpu").fused.dtype == np.uint8


def test_5_read_stack_keeps_what_the_file_holds():
    frames, _ = nan_frames()
    stack, metadata = read_stack(frames)
    assert np.isnan(stack[1, 40, 130]) and np.isinf(stack[2, 0, 150]) and "non_finite" not in metadata


# --- 6, 7, 14, 15: outputs all or nothing ------------------------------------------


def failing_writer(monkeypatch, target_suffix, error):
    """Make the writer of outputs ending in ``target_suffix`` write half a file, then raise ``error``."""
    real = writing.image_writer

    def writer(image, path, *, metadata=None):
        write = real(image, path, metadata=metadata)
        if not str(path).endswith(target_suffix):
            return write

        def half(file):
            file.write(b"\0" * 1000)
            raise error

        return half

    monkeypatch.setattr(writing, "image_writer", writer)


def test_6_sigint_while_the_depth_map_is_written_leaves_nothing(tmp_path, frames_dir, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    failing_writer(monkeypatch, "d.tif", KeyboardInterrupt())
    code, _, err = run_cli(capsys, frames_dir, "-o", out / "f.tif", "--depth", out / "d.tif", "-q")
    assert code == 130 and err == "napari-focus-stack: cancelled; no output was written\n"
    assert list(out.iterdir()) == []


@pytest.mark.parametrize(
    "error", [OSError(errno.ENOSPC, "No space left on device"), OSError("196608 requested and 64624 written")]
)
def test_7_a_full_disk_names_the_file_and_removes_every_output(tmp_path, frames_dir, capsys, monkeypatch, error):
    out = tmp_path / "out"
    out.mkdir()
    (out / "f.tif").write_bytes(b"an older result")  # replaced only if everything succeeds
    failing_writer(monkeypatch, "c.tif", error)
    code, _, err = run_cli(
        capsys, frames_dir, "-o", out / "f.tif", "--depth", out / "d.tif", "--confidence", out / "c.tif", "-q"
    )
    assert code == 1
    assert (
        err
        == f"{PREFIX}cannot write the confidence map {out / 'c.tif'}: no space left on device; no output was written\n"
    )
    assert sorted(os.listdir(out)) == ["f.tif"] and (out / "f.tif").read_bytes() == b"an older result"


def test_8_an_output_that_cannot_be_written_fails_before_computing(tmp_path, frames_dir, capsys, monkeypatch):
    from napari_focus_stack.engine import pipeline

    def not_now(*args, **kwargs):
        raise AssertionError("computed before the outputs were checked")

    monkeypatch.setattr(pipeline, "run_pipeline", not_now)
    (tmp_path / "existing_folder.tif").mkdir()
    cases = [
        (
            ["-o", tmp_path / "existing_folder.tif"],
            f"cannot write the fused image {tmp_path / 'existing_folder.tif'}: it is a folder",
        ),
        (["-o", "/proc/x.tif"], "cannot write the fused image /proc/x.tif: the folder /proc does not accept new files"),
        (
            ["-o", tmp_path / "f.tif", "--depth", tmp_path / "existing_folder.tif"],
            f"cannot write the depth map {tmp_path / 'existing_folder.tif'}: it is a folder",
        ),
        (["-o", tmp_path / "f.tif", "--depth", tmp_path / "no" / "d.tif"], "cannot write the depth map: folder"),
    ]
    for args, message in cases:
        code, _, err = run_cli(capsys, frames_dir, *args)
        assert code == 2
        assert_one_error_line(err, message)
    assert sorted(os.listdir(tmp_path)) == ["existing_folder.tif", "frames"]


def test_15_a_failed_run_leaves_no_output_and_says_so(tmp_path, frames_dir, capsys, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    failing_writer(monkeypatch, "d.tif", OSError(errno.EIO, "Input/output error"))
    code, _, err = run_cli(capsys, frames_dir, "-o", out / "f.tif", "--depth", out / "d.tif", "-q")
    assert code == 1 and err.endswith("; no output was written\n") and f"the depth map {out / 'd.tif'}" in err
    assert list(out.iterdir()) == []


SIGNALLED = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from napari_focus_stack.io import writing
    from napari_focus_stack.cli import main

    real = writing.image_writer

    def slow(image, path, *, metadata=None):
        write = real(image, path, metadata=metadata)
        if not str(path).endswith(sys.argv[2]):
            return write
        def stalled(file):
            file.write(b"half")
            file.flush()
            Path(sys.argv[1]).write_text("writing")
            time.sleep(60)
        return stalled

    writing.image_writer = slow
    sys.exit(main(sys.argv[3:]))
    """
)


def start_stalled(ready, stall_on, *cli_args):
    """Start the CLI in a child that stalls while writing ``stall_on``; return it once that write has begun."""
    process = subprocess.Popen(
        [sys.executable, "-c", SIGNALLED, str(ready), stall_on, *map(str, cli_args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not ready.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ready.exists(), process.communicate()
    return process


@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "cancelled")])
def test_14_a_signal_during_a_write_leaves_nothing_behind(tmp_path, frames_dir, signum, code, word):
    out = tmp_path / "out"
    out.mkdir()
    process = start_stalled(
        tmp_path / "ready", "d.tif", frames_dir, "-o", out / "f.tif", "--depth", out / "d.tif", "-q"
    )
    assert any(name.startswith(".d.tif.") for name in os.listdir(out))  # mid-write: a temporary exists
    process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == code
    assert stderr == f"napari-focus-stack: {word}; no output was written\n" and stdout == ""
    assert list(out.iterdir()) == []


# --- 9, 10: messages --------------------------------------------------------------


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def truncate_bmp(folder):
    """Frames as BMP, one of them cut in half."""
    for path in sorted(folder.glob("*.png")):
        save_image(cv2.imread(str(path), cv2.IMREAD_UNCHANGED)[..., ::-1], path.with_suffix(".bmp"))
        path.unlink()
    (folder / "z0.bmp").write_bytes((folder / "z1.bmp").read_bytes())
    truncate(folder / "z0.bmp")


def corrupt_png(path):
    data = bytearray(path.read_bytes())
    at = data.find(b"IDAT") + 10
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda folder: (folder / "z0.png").write_bytes(b""), "z0.png: empty file (0 bytes); move it out of the stack"),
        (lambda folder: (folder / "z0.png").write_bytes(b"\x89PNG\r\n\x1a\ngarbage"), "z0.png: not a readable image"),
        (lambda folder: (folder / "z0.jpg").write_bytes(b"\xff\xd8\xff\xe0garbage"), "z0.jpg: not a readable image"),
        (
            lambda folder: (folder / "z0.tif").write_bytes(b"II*\0\0\0\0\0"),
            "z0.tif: not a readable TIFF (it holds no image pages)",
        ),
        (lambda folder: (folder / "z0.tif").write_bytes(b"II*\0garbage!"), "z0.tif: not a readable TIFF"),
        (
            lambda folder: corrupt_png(folder / "z3.png"),
            "z3.png: cannot decode image data (corrupt PNG: checksum error in its IDAT chunk)",
        ),
        (
            lambda folder: truncate(folder / "z3.png"),
            "z3.png: cannot decode image data (truncated PNG: the file ends before its last chunk)",
        ),
        (lambda folder: truncate_bmp(folder), "z0.bmp: cannot decode image data (truncated BMP: 4,635 of 9,270 bytes)"),
    ],
)
def test_9_10_bad_files_give_one_line_naming_the_file(tmp_path, frames_dir, capfd, make, message):
    make(frames_dir)
    before = snapshot(frames_dir)
    code = main([str(frames_dir), "-o", str(tmp_path / "f.tif")])  # with the progress bar
    out, err = capfd.readouterr()
    assert code == 2 and out == ""
    assert_one_error_line(err, str(frames_dir / message.split(":")[0]), message.split(": ", 1)[1])
    assert "libpng" not in err and "BufferedReader" not in err and "list index" not in err
    assert snapshot(frames_dir) == before and not (tmp_path / "f.tif").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["frames"]  # no temporary left


def test_10_tifffiles_warnings_are_not_printed(tmp_path, capfd):
    stack = tmp_path / "s.tif"
    tifffile.imwrite(stack, focal_frames(rgb=False), metadata={"shape": [5, 48, 64]})
    stack.write_bytes(stack.read_bytes().replace(b"[5, 48, 64]", b"[7, 49, 65]"))
    main([str(stack), "-o", str(tmp_path / "f.tif"), "-q"])
    assert "shaped series" not in capfd.readouterr().err


# --- 11, 12: the Python API and memory budgets ------------------------------------------


@pytest.mark.parametrize(
    "source, message",
    [
        (np.zeros((3, 0, 8), np.uint8), "array of shape (3, 0, 8): the frames are empty (8x0 px)"),
        (np.zeros((3, 8, 0, 3), np.uint8), "array of shape (3, 8, 0, 3): the frames are empty (0x8 px)"),
        (np.zeros((0, 8, 8), np.uint8), "array of shape (0, 8, 8): no frames; focus stacking needs at least 2 frames"),
        ("", "No input given: the path is empty (for the current folder, give '.')"),
        ([], "No image files given: the list of paths is empty"),
        (["", "a.png"], "The list of paths holds an empty path or something that is not a path"),
        (42, "cannot read a stack from a int"),
    ],
)
def test_11_api_sources_that_cannot_be_stacks(source, message):
    with pytest.raises(StackReadError) as raised:
        focus_stack(source)
    assert str(raised.value).startswith(message)
    if isinstance(source, str):
        with pytest.raises(StackReadError, match="the path is empty"):
            FocusStacker().process_stack(source)


def test_11_12_max_memory_takes_sizes_and_refuses_nonsense():
    frames = focal_frames()
    assert focus_stack(frames, max_memory="1GB", device="cpu").fused.shape == frames.shape[1:]
    for value, message in [
        (0, "max_memory must be at least 1 byte, got 0"),
        (0.5, "max_memory must be at least 1 byte, got 0.5"),
        (-1, "max_memory must be at least 1 byte, got -1"),
        ("0.5", "memory size '0.5' is less than one byte"),
        ("lots", "not a memory size: 'lots'"),
        ([1], "max_memory must be a number of bytes or a size such as '2GB', got list"),
        (float("nan"), "max_memory must be a finite number of bytes, got nan"),
    ]:
        with pytest.raises(ValueError) as raised:
            focus_stack(frames, max_memory=value)
        assert str(raised.value).startswith(message)
        with pytest.raises(ValueError):
            BatchOptions(max_memory=value)


@pytest.mark.parametrize("size", ["0.5", "0", "0.0001k"])
def test_12_a_zero_byte_budget_on_the_command_line_is_refused(tmp_path, frames_dir, capsys, size):
    with pytest.raises(SystemExit) as exited:
        main([str(frames_dir), "-o", str(tmp_path / "f.tif"), "--max-memory", size])
    assert exited.value.code == 2
    assert f"argument --max-memory: memory size '{size}' is less than one byte" in capsys.readouterr().err


# --- Outputs against inputs, stale temporaries ---------------------------------------


def test_an_output_that_case_folds_or_links_to_an_input_is_refused(tmp_path, frames_dir, capsys):
    before = snapshot(frames_dir)
    os.link(frames_dir / "z2.png", tmp_path / "hard.png")
    (tmp_path / "soft.png").symlink_to(frames_dir / "z4.png")
    for target in (frames_dir / "Z3.PNG", tmp_path / "hard.png", tmp_path / "soft.png"):
        code, _, err = run_cli(capsys, frames_dir, "-o", target)
        assert code == 2
        assert_one_error_line(err, f"refusing to overwrite input file {target} with the fused image")
    assert snapshot(frames_dir) == before


def test_the_cli_removes_stale_temporaries_of_its_own_outputs(tmp_path, frames_dir, capsys):
    stale = [tmp_path / ".f.tif.0a1b2c3d.tmp", tmp_path / ".d.tif.ffffffff.tmp"]
    kept = [tmp_path / ".f.tif.not-ours.tmp", tmp_path / ".other.tif.0a1b2c3d.tmp", tmp_path / "notes.tmp"]
    for path in stale + kept:
        path.write_bytes(b"half a file")
    code, _, _ = run_cli(capsys, frames_dir, "-o", tmp_path / "f.tif", "--depth", tmp_path / "d.tif", "-q")
    assert code == 0
    assert not any(path.exists() for path in stale)
    assert all(path.read_bytes() == b"half a file" for path in kept)


def test_batch_checks_its_output_folder_before_any_stack(tmp_path, capsys):
    root = tmp_path / "scans"
    write_folder(root / "a", focal_frames())
    code, _, err = run_cli(capsys, "batch", root, "-o", "/proc/fused")
    assert code == 2
    assert_one_error_line(err, "cannot create the output folder /proc/fused")


def test_10_a_library_warning_is_one_line_of_ours(tmp_path, frames_dir, capsys, monkeypatch):
    from napari_focus_stack.engine import pipeline

    real = pipeline.run_pipeline

    def warns(*args, **kwargs):
        warnings.warn("overflow encountered in multiply", RuntimeWarning)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_pipeline", warns)
    code, _, err = run_cli(capsys, frames_dir, "-o", tmp_path / "f.tif", "-q")
    assert code == 0 and err == "napari-focus-stack: warning: overflow encountered in multiply\n"


def test_what_could_not_be_removed_is_named_by_the_users_path(tmp_path, frames_dir, capsys, monkeypatch):
    import pathlib

    out = tmp_path / "out"
    out.mkdir()
    failing_writer(monkeypatch, "d.tif", OSError(errno.ENOSPC, "No space left on device"))
    real_unlink = pathlib.Path.unlink

    def stuck(self, missing_ok=False):
        if self.name.startswith(".d.tif."):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(pathlib.Path, "unlink", stuck)
    code, _, err = run_cli(capsys, frames_dir, "-o", out / "f.tif", "--depth", out / "d.tif", "-q")
    assert code == 1
    assert err == (
        f"{PREFIX}cannot write the depth map {out / 'd.tif'}: no space left on device; "
        f"no output is complete, but files beside {out / 'd.tif'} could not be removed\n"
    )
    assert [name.startswith(".d.tif.") for name in os.listdir(out)] == [True]


def test_batch_outputs_are_compared_with_inputs_ignoring_case(tmp_path):
    from napari_focus_stack.batch import BatchPlanError, Stack, plan_outputs

    frames = write_folder(tmp_path / "Frames", focal_frames())
    stack = Stack("a", sorted(frames.iterdir()))
    with pytest.raises(BatchPlanError, match="holds input frames; choose another one"):
        plan_outputs([stack], tmp_path / "FRAMES", BatchOptions())


@pytest.mark.parametrize(
    "args, message",
    [
        (["{frames}", "-o", "."], "cannot write the fused image .: it is a folder"),
        (
            ["/dev/null", "/dev/zero", "-o", "{tmp}/f.tif"],
            "/dev/null: not a regular file (a device, a pipe or a socket)",
        ),
        (["/dev/null", "-o", "{tmp}/f.tif"], "/dev/null: not a regular file or folder (a device, a pipe or a socket)"),
        (["batch", "{tmp}", "-o", "{frames}/z1.png"], "the output folder {frames}/z1.png is a file, not a folder"),
    ],
)
def test_odd_paths_give_one_line(tmp_path, frames_dir, capsys, args, message, monkeypatch):
    write_folder(tmp_path / "other", focal_frames())
    fill = {"frames": frames_dir, "tmp": tmp_path}
    before = snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *(arg.format(**fill) for arg in args))
    assert code == 2
    assert_one_error_line(err, message.format(**fill))
    assert snapshot(tmp_path) == before


def test_a_device_is_never_replaced_by_an_output(tmp_path):
    from napari_focus_stack.io import StackWriteError, check_outputs

    with pytest.raises(StackWriteError, match="cannot write the fused image /dev/null: it is not a regular file"):
        check_outputs({"fused image": Path("/dev/null")})


def test_14_sigterm_in_a_batch_keeps_finished_stacks_and_nothing_of_the_one_in_progress(tmp_path):
    root = tmp_path / "scans"
    for name in ("a", "b", "c"):
        write_folder(root / name, focal_frames())
    out = tmp_path / "out"
    process = start_stalled(tmp_path / "ready", "b_depth.tif", "batch", root, "-o", out, "--depth", "-q")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and stdout == ""
    assert stderr == (
        "napari-focus-stack: terminated; finished stacks are complete, the stack in progress left nothing; "
        "rerun with --resume to do the rest\n"
    )
    assert sorted(os.listdir(out)) == ["a.json", "a.tif", "a_depth.tif"]


def test_an_output_folder_with_a_fused_image_of_ours_but_no_manifest_is_reused(tmp_path, capsys):
    """A batch killed between renaming a fused image and its manifest: the rerun goes on."""
    root = tmp_path / "scans"
    write_folder(root / "a", focal_frames())
    assert run_cli(capsys, "batch", root, "-o", tmp_path / "out", "-q")[0] == 0
    (tmp_path / "out" / "a.json").unlink()
    code, _, err = run_cli(capsys, "batch", root, "-o", tmp_path / "out", "-q", "--resume")
    assert code == 0 and err == ""
    assert sorted(os.listdir(tmp_path / "out")) == ["a.json", "a.tif"]
