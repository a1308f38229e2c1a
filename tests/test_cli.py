"""Command line: outputs, provenance, and one-line errors for user mistakes."""

import subprocess
import sys

import numpy as np
import pytest
import tifffile

from napari_focus_stack import focus_stack, simulate_stack
from napari_focus_stack.cli import main
from napari_focus_stack.io import read_metadata, save_image


@pytest.fixture
def frames_dir(tmp_path):
    sim = simulate_stack((48, 64), 6, rgb=True, seed=1)
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, frame in enumerate(sim.frames):
        save_image(frame, folder / f"z{k + 1}.png")
    return folder, sim


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


def test_writes_fused_depth_and_confidence(tmp_path, frames_dir, capsys):
    folder, sim = frames_dir
    out, depth, conf = tmp_path / "fused.tif", tmp_path / "depth.tif", tmp_path / "conf.tif"
    code, err = run_cli(capsys, folder, "-o", out, "--depth", depth, "--confidence", conf, "--radius", 4, "-q")
    assert code == 0 and err == ""
    expected = focus_stack(sim.frames, radius=4, device="cpu")
    np.testing.assert_array_equal(tifffile.imread(out), expected.fused)
    np.testing.assert_allclose(tifffile.imread(depth), expected.depth, atol=1e-6)
    assert tifffile.imread(conf).dtype == np.float32
    info = read_metadata(out)
    assert info["radius"] == 4 and info["smoothing"] == 1 and info["method"] == "weighted"
    assert info["n_frames"] == 6
    assert read_metadata(depth)["content"] == "depth map"


def test_progress_and_summary_on_stderr(tmp_path, frames_dir, capsys):
    folder, _ = frames_dir
    code, err = run_cli(capsys, folder, "-o", tmp_path / "fused.png")
    assert code == 0
    assert "fused 6 frames into" in err and "(64x48, cpu)" in err


def test_several_files_and_scale_factor(tmp_path, frames_dir, capsys):
    folder, _ = frames_dir
    files = sorted(folder.iterdir())
    out = tmp_path / "fused.tif"
    code, _ = run_cli(capsys, *files, "-o", out, "--scale-factor", 2, "-q")
    assert code == 0 and tifffile.imread(out).shape == (96, 128, 3)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--radius", "30"], "radius must be from 1 to 20, got 30"),
        (["--scale-factor", "0"], "scale_factor must be from 1 to 4, got 0"),
        (["--device", "tpu"], "device must be 'auto', 'cpu', 'gpu', 'gpu:N' or 'gpu:all'"),
        (["--depth", "depth.png"], "the depth map is written as float32 TIFF: use a .tif name"),
    ],
)
def test_bad_options(tmp_path, frames_dir, capsys, extra, message):
    folder, _ = frames_dir
    code, err = run_cli(capsys, folder, "-o", tmp_path / "fused.tif", *extra)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "fused.tif").exists()


def test_unknown_output_format(tmp_path, frames_dir, capsys):
    folder, _ = frames_dir
    code, err = run_cli(capsys, folder, "-o", tmp_path / "fused.xyz")
    assert code == 2 and "cannot write fused.xyz: the fused image can be saved as .tif" in err


def test_missing_output_folder(tmp_path, frames_dir, capsys):
    folder, _ = frames_dir
    code, err = run_cli(capsys, folder, "-o", tmp_path / "nowhere" / "fused.tif")
    assert code == 2 and "folder" in err and "does not exist" in err


def test_never_overwrites_an_input(frames_dir, capsys):
    folder, _ = frames_dir
    target = folder / "z3.png"
    before = target.read_bytes()
    code, err = run_cli(capsys, folder, "-o", target)
    assert code == 2 and f"refusing to overwrite input file {target}" in err
    assert target.read_bytes() == before


def test_same_path_twice(tmp_path, frames_dir, capsys):
    folder, _ = frames_dir
    code, err = run_cli(capsys, folder, "-o", tmp_path / "a.tif", "--depth", tmp_path / "a.tif")
    assert code == 2 and "would both be written to" in err


def test_empty_folder_is_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_cli(capsys, empty, "-o", tmp_path / "fused.tif")
    assert code == 2
    assert err.startswith("napari-focus-stack: error: ") and "No image files found" in err
    assert err.count("\n") == 1


def test_corrupt_frame_leaves_no_output(tmp_path, frames_dir, capsys):
    folder, _ = frames_dir
    data = (folder / "z4.png").read_bytes()
    (folder / "z4.png").write_bytes(data[: len(data) // 2])  # truncated
    out = tmp_path / "fused.tif"
    code, err = run_cli(capsys, folder, "-o", out, "-q")
    assert code == 2 and "z4.png" in err
    assert list(tmp_path.glob("fused*")) == []


def test_console_script_runs(tmp_path, frames_dir):
    folder, _ = frames_dir
    out = tmp_path / "fused.tif"
    done = subprocess.run(
        [sys.executable, "-m", "napari_focus_stack.cli", str(folder), "-o", str(out), "-q"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert tifffile.imread(out).shape == (48, 64, 3)


@pytest.mark.parametrize(
    "text, size", [("2GB", 2 * 2**30), ("512 MiB", 512 * 2**20), ("1.5g", 3 * 2**29), ("1000", 1000)]
)
def test_memory_sizes(text, size):
    from napari_focus_stack.cli import parse_size

    assert parse_size(text) == size


def test_max_memory_tiles_with_the_same_result(tmp_path, frames_dir, capsys):
    folder, _ = frames_dir
    whole, tiled = tmp_path / "whole.tif", tmp_path / "tiled.tif"
    assert run_cli(capsys, folder, "-o", whole, "-q")[0] == 0
    assert run_cli(capsys, folder, "-o", tiled, "-q", "--radius", "2", "--smoothing", "1")[0] == 0
    code, err = run_cli(capsys, folder, "-o", tiled, "-q", "--max-memory", "700KB", "--radius", "2", "--smoothing", "1")
    assert code == 0, err
    small = focus_stack(frames_dir[1].frames, radius=2, smoothing=1, device="cpu")
    assert np.abs(tifffile.imread(tiled).astype(int) - small.fused).max() <= 1


def test_unreadable_max_memory(tmp_path, frames_dir, capsys):
    folder, _ = frames_dir
    with pytest.raises(SystemExit) as stop:
        main([str(folder), "-o", str(tmp_path / "f.tif"), "--max-memory", "lots"])
    assert stop.value.code == 2
    assert "not a memory size: 'lots' (for example 2GB or 512MB)" in capsys.readouterr().err


def test_too_small_max_memory(tmp_path, frames_dir, capsys):
    folder, _ = frames_dir
    code, err = run_cli(capsys, folder, "-o", tmp_path / "f.tif", "--max-memory", "1KB")
    assert code == 2
    assert "a memory budget of 1.0 KiB is too small for these parameters; at least" in err
    assert not (tmp_path / "f.tif").exists()


def test_alignment_options(tmp_path, capsys):
    sim = simulate_stack((160, 192), 5, rgb=True, breathing=0.05, drift=5, seed=9)
    folder = tmp_path / "moving"
    folder.mkdir()
    for k, frame in enumerate(sim.frames):
        save_image(frame, folder / f"z{k}.png")
    out = tmp_path / "fused.tif"
    assert run_cli(capsys, folder, "-o", out, "-q", "--reference", "0")[0] == 0
    info = read_metadata(out)
    assert info["align"] == "similarity" and info["alignment"]["reference"] == 0
    assert np.allclose(info["transforms"][0], np.eye(3))
    assert run_cli(capsys, folder, "-o", out, "-q", "--align", "none")[0] == 0
    assert "transforms" not in read_metadata(out)
    code, err = run_cli(capsys, folder, "-o", out, "--reference", "7")
    assert code == 2 and "reference frame 7 is not one of the 5 frames (0 to 4)" in err


def test_unknown_align_mode(tmp_path, frames_dir, capsys):
    folder, _ = frames_dir
    with pytest.raises(SystemExit):
        main([str(folder), "-o", str(tmp_path / "f.tif"), "--align", "wobbly"])
    assert "invalid choice: 'wobbly'" in capsys.readouterr().err


def test_one_stack_runs_on_small_pages_and_restores_numpys_setting(tmp_path, frames_dir, monkeypatch):
    # a one-shot run touches every array for the first time: NumPy's huge
    # pages cost more there than they save (engine/backend/memory.py, small_pages)
    from napari_focus_stack.engine import backend, pipeline

    switch = backend._hugepage_switch()
    if switch is None:
        pytest.skip("this NumPy has no huge-page switch")
    monkeypatch.delenv("NUMPY_MADVISE_HUGEPAGE", raising=False)
    seen = []
    real = pipeline.run_pipeline

    def spy(*args, **kwargs):
        previous = switch(False)  # reads the setting (and leaves it as it was)
        switch(previous)
        seen.append(previous)
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_pipeline", spy)
    folder, _ = frames_dir
    before = switch(True)
    try:
        assert main([str(folder), "-o", str(tmp_path / "f.tif"), "-q"]) == 0
        assert seen == [False]
        assert switch(True) is True  # restored
        # the pyramid method re-allocates its levels per frame: huge pages pay there
        assert main([str(folder), "-o", str(tmp_path / "p.tif"), "--method", "pyramid", "-q"]) == 0
        assert seen == [False, True]
        monkeypatch.setenv("NUMPY_MADVISE_HUGEPAGE", "1")  # the user's choice wins
        assert main([str(folder), "-o", str(tmp_path / "g.tif"), "-q"]) == 0
        assert seen == [False, True, True]
    finally:
        switch(before)


@pytest.mark.parametrize("method", ["weighted", "pyramid", "depthmap"])
def test_the_fused_image_alone_skips_the_depth_and_is_the_same(tmp_path, frames_dir, monkeypatch, method):
    # without an output that needs the depth, the methods whose fused image
    # does not depend on it (weighted, pyramid) select no depth at all
    from napari_focus_stack.engine import pipeline

    asked = []
    real = pipeline.run_pipeline

    def spy(*args, **kwargs):
        asked.append(kwargs.get("maps", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "run_pipeline", spy)
    folder, _ = frames_dir
    alone, with_depth = tmp_path / "alone.tif", tmp_path / "with_depth.tif"
    assert main([str(folder), "-o", str(alone), "--method", method, "-q"]) == 0
    depth = ["--depth", str(tmp_path / "depth.tif")]
    assert main([str(folder), "-o", str(with_depth), "--method", method, *depth, "-q"]) == 0
    assert alone.read_bytes() == with_depth.read_bytes()  # pixels and metadata alike
    assert tifffile.imread(tmp_path / "depth.tif").shape == (48, 64)
    # every other output that needs the depth asks for it
    for extra in (["--confidence", str(tmp_path / "conf.tif")], ["--mark-unfocused"]):
        assert main([str(folder), "-o", str(tmp_path / "other.tif"), "--method", method, *extra, "-q"]) == 0
    assert asked == [False, True, True, True]


# --- microscope files: channels along one depth, time points -------------------------


@pytest.fixture
def hyperstack(tmp_path):
    """An OME-TIFF (T=2, C=2, Z=8) of two fluorescence channels, the second time point mirrored."""
    from napari_focus_stack.synthetic import render_channels

    channels, _, _ = render_channels((96, 96), 8, seed=0)
    data = np.stack([np.stack(channels), np.stack(channels)[:, :, :, ::-1]])
    path = tmp_path / "cells.ome.tif"
    metadata = {"axes": "TCZYX", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5, "PhysicalSizeZ": 2.0}
    tifffile.imwrite(path, data, ome=True, metadata={**metadata, "Channel": {"Name": ["nuclei", "actin"]}})
    return path, [c[:, :, ::-1] for c in channels]


def test_channels_of_a_microscope_file_share_one_depth(tmp_path, hyperstack, capsys):
    pytest.importorskip("bioio_ome_tiff")
    from napari_focus_stack import focus_stack_channels

    path, mirrored = hyperstack
    out, depth = tmp_path / "fused.tif", tmp_path / "depth.tif"
    code, err = run_cli(capsys, str(path), "-o", str(out), "--depth", str(depth), "--time", "1", "--align", "none")
    assert code == 0 and "fused 2 channels of 8 frames" in err
    expected = focus_stack_channels(mirrored, align="none")
    fused = tifffile.imread(out)
    assert fused.shape == (2, 96, 96) and fused.dtype == np.uint16
    np.testing.assert_array_equal(fused, expected.fused)
    np.testing.assert_array_equal(tifffile.imread(depth), expected.depth)
    info = read_metadata(out)
    assert info["axes"] == "CYX" and info["channels"]["names"] == ["nuclei", "actin"]
    assert info["channels"]["depth_from"] == "all"


def test_one_channel_or_depth_from_one_channel(tmp_path, hyperstack, capsys):
    pytest.importorskip("bioio_ome_tiff")
    path, mirrored = hyperstack
    out = tmp_path / "actin.tif"
    code, _ = run_cli(capsys, str(path), "-o", str(out), "--time", "1", "--channel", "actin", "--align", "none")
    assert code == 0
    np.testing.assert_array_equal(tifffile.imread(out), focus_stack(mirrored[1], align="none").fused)
    depth = tmp_path / "depth.tif"
    code, _ = run_cli(
        capsys,
        str(path),
        "-o",
        str(tmp_path / "f.tif"),
        "--depth",
        str(depth),
        "--time",
        "0",
        "--depth-from",
        "0",
        "--align",
        "none",
    )
    assert code == 0
    np.testing.assert_array_equal(tifffile.imread(depth), focus_stack(tifffile.imread(path)[0, 0], align="none").depth)


@pytest.mark.parametrize(
    "extra, message",
    [
        ((), "has 2 time points: pick one with --time T (0 to 1)"),
        (("--time", "1", "--channel", "dapi"), "no channel named 'dapi'; it has nuclei, actin"),
        (("--time", "1", "--depth-from", "2"), "depth_from channel 2 does not exist: there are 2 channels"),
        (("--time", "5"), "time point 5 out of range: the file has 2"),
    ],
)
def test_microscope_file_mistakes_are_one_line(tmp_path, hyperstack, capsys, extra, message):
    pytest.importorskip("bioio_ome_tiff")
    path, _ = hyperstack
    code, err = run_cli(capsys, str(path), "-o", str(tmp_path / "f.tif"), *extra)
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "f.tif").exists()


def test_several_channels_need_a_tiff(tmp_path, hyperstack, capsys):
    pytest.importorskip("bioio_ome_tiff")
    path, _ = hyperstack
    code, err = run_cli(capsys, str(path), "-o", str(tmp_path / "f.png"), "--time", "0")
    assert code == 2 and "2 channels are written as one multi-channel TIFF: use a .tif name" in err


def test_depth_from_on_a_stack_of_one_channel_is_a_warning(tmp_path, frames_dir, capsys):
    folder, _ = frames_dir
    code, err = run_cli(capsys, str(folder), "-o", str(tmp_path / "f.tif"), "--depth-from", "1", "-q")
    assert code == 0 and "warning: --depth-from applies to stacks of several channels; this one has one" in err


def test_the_command_keeps_freed_frame_sized_blocks_and_runs_without_glibc(monkeypatch, tmp_path):
    import ctypes.util

    from napari_focus_stack import _process, cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append("tuned"))
    frames = simulate_stack((32, 32), 3, seed=0).frames
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, frame in enumerate(frames):
        save_image(frame, folder / f"f{k}.png")
    assert cli.main([str(folder), "-o", str(tmp_path / "out.tif"), "--quiet"]) == 0
    assert calls == ["tuned"]
    monkeypatch.undo()
    # no C library found (or not glibc): nothing to tune, no error
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert _process.keep_freed_memory() is None
    assert _process.MALLOC_MMAP_THRESHOLD == 64 * 2**20 > 12_000_000 * 3  # a 12 MP RGB uint8 frame's block is kept
