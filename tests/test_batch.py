"""Batch processing: grouping rules, safe output names, manifests and resume,
failure isolation and the ``batch`` command line (serial path)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_focus_stack import io
from napari_focus_stack.batch import (
    BatchOptions,
    BatchPlanError,
    Stack,
    group_by_regex,
    group_by_size,
    group_by_subfolder,
    group_by_sweeps,
    is_complete,
    list_images,
    plan_outputs,
    safe_output_name,
    stack_outputs,
)
from napari_focus_stack.cli import main
from napari_focus_stack.distributed import process_one
from napari_focus_stack.io import save_image, writing
from napari_focus_stack.synthetic import simulate_stack

SHAPE = (48, 64)
SCENES = [("mixed", "dome"), ("cells", "slope"), ("noise", "waves"), ("grid", "steps")]


def write_frames(folder, frames, pattern="z{:02d}.png", start=1):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, frame in enumerate(frames, start=start):
        paths.append(folder / pattern.format(k))
        save_image(frame, paths[-1])
    return paths


def scene(index, n_slices=6, shape=SHAPE):
    texture, depth = SCENES[index % len(SCENES)]
    sim = simulate_stack(shape, max(n_slices, 3), texture=texture, depth=depth, rgb=True, noise=0.01, seed=index)
    return sim.frames[:n_slices]


@pytest.fixture
def scans(tmp_path):
    """ROOT with one stack per sub-folder: field_1 ... field_4."""
    root = tmp_path / "scans"
    for i in range(4):
        write_frames(root / f"field_{i + 1}", scene(i))
    return root


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_outputs(outdir):
    """Pixels of every image in ``outdir``, by file name."""
    return {path.name: tifffile.imread(path) for path in sorted(Path(outdir).glob("*.tif"))}


# --- Grouping -------------------------------------------------------------------


def test_group_by_subfolder_nested_sorted_and_skipping(tmp_path):
    root = tmp_path / "root"
    for folder in ("s10", "s2", "plate/A01", ".hidden", "out"):
        write_frames(root / folder, scene(0, 2))
    (root / "s2" / "notes.txt").write_text("sidecar")
    (root / "s2" / "Z03.PNG").write_bytes((root / "s2" / "z01.png").read_bytes())
    write_frames(root, scene(1, 2))  # loose frames in ROOT belong to no stack
    stacks = group_by_subfolder(root, exclude=[root / "out"])
    assert [s.name for s in stacks] == ["plate/A01", "s2", "s10"]
    assert [Path(p).name for p in stacks[1].paths] == ["z01.png", "z02.png", "Z03.PNG"]


def test_group_by_size_uses_natural_order():
    paths = [f"f{k}.png" for k in (10, 1, 2, 9, 3, 11)]
    stacks = group_by_size(paths, 3)
    assert [s.name for s in stacks] == ["stack_001", "stack_002"]
    assert [Path(p).name for p in stacks[1].paths] == ["f9.png", "f10.png", "f11.png"]
    with pytest.raises(ValueError, match="1 file is left over"):
        group_by_size(paths[:4], 3)


def test_group_by_regex():
    names = ["b_z2.tif", "a_z10.tif", "a_z9.tif", "b_z1.tif", "readme.tif"]
    stacks = group_by_regex(names, r"(?P<stack>.+)_z\d+\.tif")
    assert [(s.name, s.paths) for s in stacks] == [("a", ("a_z9.tif", "a_z10.tif")), ("b", ("b_z1.tif", "b_z2.tif"))]
    with pytest.raises(ValueError, match=r"needs a named group \(\?P<stack>"):
        group_by_regex(names, r"(.+)_z\d+\.tif")
    with pytest.raises(ValueError, match="not a regular expression"):
        group_by_regex(names, r"(?P<stack>.+")


def write_sweeps(folder, sweeps):
    """Sweeps of frames into one flat folder, numbered continuously; returns the first index of each."""
    starts, paths = [], []
    for frames in sweeps:
        starts.append(len(paths))
        paths += write_frames(folder, frames, "img_{:04d}.png", start=len(paths) + 1)
    return starts, paths


def test_auto_finds_sweeps_of_different_scenes(tmp_path):
    starts, paths = write_sweeps(
        tmp_path / "flat", [scene(0, 7, (96, 128)), scene(1, 6, (96, 128)), scene(2, 8, (96, 128))]
    )
    split = group_by_sweeps(paths)
    assert [len(s.paths) for s in split.stacks] == [7, 6, 8]
    assert split.starts == (7, 13)
    assert min(split.jumps[[6, 12]]) > 3 * max(np.delete(split.jumps, [6, 12]))
    assert "found 3 focus sweep(s) in 21 frames" in split.describe()


def test_auto_repeated_sweeps_of_one_scene_and_a_single_sweep(tmp_path):
    frames = scene(0, 7, (96, 128))
    _, paths = write_sweeps(tmp_path / "timelapse", [frames, frames, frames])
    assert group_by_sweeps(paths).starts == (7, 14)
    assert len(group_by_sweeps(paths[:7]).stacks) == 1


# --- Output names and planning --------------------------------------------------


@pytest.mark.parametrize(
    "name, safe",
    [
        ("field 1", "field_1"),
        ("plate1/A01", "plate1_A01"),
        ("../../etc/passwd", "etc_passwd"),
        ("/absolute/path", "absolute_path"),
        ("C:\\Windows\\x", "C_Windows_x"),
        (".hidden", "hidden"),
        ("-rf", "rf"),
        ("a\nb\x00c", "a_b_c"),
        ("Präparat 3", "Präparat_3"),
        ("con", "con_"),
        ("x" * 300, "x" * 100),
    ],
)
def test_safe_output_name(name, safe):
    assert safe_output_name(name) == safe


@pytest.mark.parametrize("name", ["", "..", "/", "...///", "\x00"])
def test_unusable_names_are_refused(name):
    with pytest.raises(ValueError, match="gives no usable file name"):
        safe_output_name(name)


def test_every_planned_output_stays_in_outdir(tmp_path):
    names = ["../up", "/abs/x", "a/../../b", "ok", "sub/dir/deep"]
    stacks = [Stack(name, [tmp_path / "in" / f"{i}.png"]) for i, name in enumerate(names)]
    outdir = tmp_path / "out"
    for outputs in plan_outputs(stacks, outdir, BatchOptions(depth=True, confidence=True)):
        for path in (*outputs.images().values(), outputs.manifest):
            assert path.resolve().parent == outdir.resolve()


def test_plan_refuses_collisions_and_writing_among_inputs(tmp_path):
    options = BatchOptions(depth=True)
    with pytest.raises(BatchPlanError, match="would both write"):
        plan_outputs([Stack("a b", ["x/1.png"]), Stack("a_b", ["y/1.png"])], tmp_path / "out", options)
    with pytest.raises(BatchPlanError, match="would both write"):
        plan_outputs([Stack("Field", ["x/1.png"]), Stack("field", ["y/1.png"])], tmp_path / "out", options)
    with pytest.raises(BatchPlanError, match="would both write a_depth.tif"):
        plan_outputs([Stack("a", ["x/1.png"]), Stack("a_depth", ["y/1.png"])], tmp_path / "out", options)
    with pytest.raises(BatchPlanError, match="holds input frames"):
        plan_outputs([Stack("a", [tmp_path / "1.png"])], tmp_path, options)
    with pytest.raises(BatchPlanError, match="gives no usable file name"):
        plan_outputs([Stack("..", ["x/1.png"])], tmp_path / "out", options)


def test_options_are_checked():
    with pytest.raises(ValueError, match="radius must be from 1 to 20"):
        BatchOptions(radius=0)
    with pytest.raises(ValueError, match="format must be one of"):
        BatchOptions(format="gif")
    assert BatchOptions(format=".PNG").format == "png"


# --- Manifests and resume ----------------------------------------------------------


@pytest.fixture
def one_stack(tmp_path):
    paths = write_frames(tmp_path / "in", scene(0))
    outdir = tmp_path / "out"
    outdir.mkdir()
    return Stack("s", paths), outdir


def test_manifest_decides_completeness(one_stack):
    stack, outdir = one_stack
    options = BatchOptions(radius=4, depth=True)
    outputs = stack_outputs(stack, outdir, options)
    assert not is_complete(stack, outputs, options)
    assert process_one(stack, outdir, options).status == "done"
    assert is_complete(stack, outputs, options)
    record = json.loads(outputs.manifest.read_text())
    assert record["parameters"]["radius"] == 4 and set(record["outputs"]) == {"depth map", "fused image"}

    fewer = BatchOptions(radius=4)
    assert is_complete(stack, stack_outputs(stack, outdir, fewer), fewer)  # depth map not asked for: still fine
    more = BatchOptions(radius=4, depth=True, confidence=True)
    assert not is_complete(stack, stack_outputs(stack, outdir, more), more)
    other = BatchOptions(radius=5, depth=True)
    assert not is_complete(stack, stack_outputs(stack, outdir, other), other)
    assert is_complete(stack, outputs, BatchOptions(radius=4, depth=True, device="cpu", threads_per_stack=1))

    Path(stack.paths[2]).write_bytes(Path(stack.paths[3]).read_bytes())  # an input changed
    assert not is_complete(stack, outputs, options)


def test_a_stack_without_maps_skips_the_depth_and_fuses_the_same(one_stack, tmp_path, monkeypatch):
    from napari_focus_stack import distributed

    stack, outdir = one_stack
    asked = []
    real = distributed.iter_focus_stack

    def spy(*args, **kwargs):
        asked.append(kwargs.get("maps", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(distributed, "iter_focus_stack", spy)
    assert process_one(stack, outdir, BatchOptions(radius=4)).status == "done"
    alone = (outdir / "s.tif").read_bytes()
    assert sorted(p.name for p in outdir.iterdir()) == ["s.json", "s.tif"]
    for flag in ("depth", "confidence"):
        assert process_one(stack, outdir, BatchOptions(radius=4, **{flag: True})).status == "done"
        assert (outdir / "s.tif").read_bytes() == alone
        assert (outdir / f"s_{flag}.tif").exists()
    assert asked == [False, True, True]


def test_missing_or_replaced_output_is_not_complete(one_stack):
    stack, outdir = one_stack
    options = BatchOptions(depth=True)
    outputs = stack_outputs(stack, outdir, options)
    process_one(stack, outdir, options)
    outputs.depth.write_bytes(b"half")
    assert not is_complete(stack, outputs, options)
    outputs.depth.unlink()
    assert not is_complete(stack, outputs, options)
    outputs.manifest.write_text("{not json")
    assert not is_complete(stack, outputs, options)


def test_rewrite_removes_the_old_manifest_first(one_stack, monkeypatch):
    """Outputs of run A, overwritten by an interrupted run B, must not pass for run A's."""
    stack, outdir = one_stack
    first = BatchOptions(radius=4, depth=True)
    outputs = stack_outputs(stack, outdir, first)
    process_one(stack, outdir, first)

    def interrupted(image, path, metadata=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(writing, "image_writer", interrupted)
    with pytest.raises(KeyboardInterrupt):
        process_one(stack, outdir, BatchOptions(radius=8, depth=True))
    assert not outputs.manifest.exists()
    assert not is_complete(stack, outputs, first)
    assert not list(outdir.glob(".*.tmp"))


def test_temporaries_of_a_killed_run_are_removed_and_nothing_else(one_stack):
    stack, outdir = one_stack
    options = BatchOptions(radius=4, depth=True)
    outputs = stack_outputs(stack, outdir, options)
    stale = [
        outputs.fused.with_name(f".{outputs.fused.name}.0a1b2c3d.tmp"),
        outputs.manifest.with_name(f".{outputs.manifest.name}.ffffffff.tmp"),
    ]
    kept = [outdir / ".notes.tmp", outdir / f".{outputs.fused.name}.not-ours.tmp", outdir / "other.0a1b2c3d.tmp"]
    for path in stale + kept:
        path.write_bytes(b"half a file")
    assert process_one(stack, outdir, options).status == "done"
    assert not any(path.exists() for path in stale)
    assert all(path.read_bytes() == b"half a file" for path in kept)
    assert sorted(p.name for p in outdir.iterdir() if not p.name.startswith(".")) == sorted(
        [outputs.fused.name, outputs.depth.name, outputs.manifest.name, "other.0a1b2c3d.tmp"]
    )


def test_process_one_reports_bad_data_instead_of_raising(tmp_path):
    outdir = tmp_path / "out"
    outdir.mkdir()
    single = Stack("single", write_frames(tmp_path / "single", scene(0, 1)))
    outcome = process_one(single, outdir, BatchOptions())
    assert outcome.failed and "only one frame" in outcome.reason

    floats = simulate_stack(SHAPE, 3, dtype="float32").frames
    stack = Stack("floats", write_frames(tmp_path / "floats", floats, "z{}.tif"))
    outcome = process_one(stack, outdir, BatchOptions(format="png"))
    assert outcome.failed and "PNG stores uint8 or uint16" in outcome.reason
    assert list(outdir.iterdir()) == []


# --- Command line -----------------------------------------------------------------


def test_dry_run_lists_stacks_and_writes_nothing(scans, tmp_path, capsys):
    outdir = tmp_path / "out"
    code, out, err = run_cli(capsys, "batch", scans, "-o", outdir, "--dry-run", "--format", "png")
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["field_1", "6", "frames", "z01.png", "..", "z06.png", "->", "field_1.png"]
    assert lines[-1] == "4 stacks, 24 frames; dry run: nothing written"
    assert not outdir.exists()


def test_auto_dry_run_prints_what_it_found(tmp_path, capsys):
    flat = tmp_path / "flat"
    write_sweeps(flat, [scene(0, 7, (96, 128)), scene(1, 6, (96, 128)), scene(2, 8, (96, 128))])
    code, out, err = run_cli(capsys, "batch", flat, "-o", tmp_path / "out", "--auto", "--dry-run")
    assert code == 0
    assert "found 3 focus sweep(s) in 21 frames" in err and "largest change inside a sweep" in err
    assert [line.split()[3:6] for line in out.splitlines()[:3]] == [
        ["img_0001.png", "..", "img_0007.png"],
        ["img_0008.png", "..", "img_0013.png"],
        ["img_0014.png", "..", "img_0021.png"],
    ]


def test_stack_size_and_group_from_a_flat_folder(tmp_path, capsys):
    flat = tmp_path / "flat"
    for name in ("b", "a"):
        write_frames(flat, scene(0, 3), name + "_z{}.png")
    (flat / "overview.png").write_bytes((flat / "a_z1.png").read_bytes())
    code, out, err = run_cli(
        capsys, "batch", flat, "-o", tmp_path / "o", "--group", r"(?P<stack>\w)_z\d+\.png", "--dry-run"
    )
    assert code == 0 and "1 file(s) match no stack, e.g. overview.png" in err
    assert [line.split()[:2] for line in out.splitlines()[:2]] == [["a", "3"], ["b", "3"]]
    code, out, _ = run_cli(capsys, "batch", flat, "-o", tmp_path / "o", "--stack-size", 7, "--dry-run")
    assert code == 0 and out.splitlines()[-1] == "1 stacks, 7 frames; dry run: nothing written"


def test_batch_writes_every_output_like_the_single_stack_form(scans, tmp_path, capsys):
    outdir = tmp_path / "out"
    code, _, err = run_cli(capsys, "batch", scans, "-o", outdir, "--depth", "--confidence", "--radius", 4)
    assert code == 0
    assert "4 stacks: 4 done, in" in err
    names = sorted(p.name for p in outdir.iterdir())
    assert names[:4] == ["field_1.json", "field_1.tif", "field_1_confidence.tif", "field_1_depth.tif"]
    assert len(names) == 16
    single = tmp_path / "single.tif"
    assert main([str(scans / "field_2"), "-o", str(single), "--radius", "4", "-q"]) == 0
    np.testing.assert_array_equal(tifffile.imread(outdir / "field_2.tif"), tifffile.imread(single))
    assert io.read_metadata(outdir / "field_2_depth.tif")["content"] == "depth map"


def test_one_bad_stack_does_not_stop_the_batch(scans, tmp_path, capsys):
    corrupt = scans / "field_2" / "z03.png"
    corrupt.write_bytes(corrupt.read_bytes()[:200])
    write_frames(scans / "lonely", scene(0, 1))
    outdir = tmp_path / "out"
    code, _, err = run_cli(capsys, "batch", scans, "-o", outdir, "-q")
    assert code == 1
    assert "5 stacks: 3 done, 2 failed" in err
    assert "failed field_2: " in err and "z03.png" in err
    assert "failed lonely: " in err and "only one frame" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in outdir.iterdir()) == [
        "field_1.json",
        "field_1.tif",
        "field_3.json",
        "field_3.tif",
        "field_4.json",
        "field_4.tif",
    ]


def test_resume_after_an_interruption_matches_an_uninterrupted_run(scans, tmp_path, capsys, monkeypatch):
    reference = tmp_path / "reference"
    assert run_cli(capsys, "batch", scans, "-o", reference, "--depth", "-q")[0] == 0

    outdir = tmp_path / "out"
    real_writer = writing.image_writer
    written = []

    def dies_during_the_third_fused_image(image, path, metadata=None):
        written.append(Path(path).name)
        if Path(path).name == "field_3.tif":
            raise KeyboardInterrupt  # after field_3's depth map was written to its temporary
        return real_writer(image, path, metadata=metadata)

    monkeypatch.setattr(writing, "image_writer", dies_during_the_third_fused_image)
    code, _, err = run_cli(capsys, "batch", scans, "-o", outdir, "--depth", "-q")
    assert code == 130 and "rerun with --resume" in err
    monkeypatch.undo()
    assert "field_3_depth.tif" in written
    # all or nothing: the interrupted stack left none of its files, not even a temporary
    assert sorted(p.name for p in outdir.iterdir()) == [
        "field_1.json",
        "field_1.tif",
        "field_1_depth.tif",
        "field_2.json",
        "field_2.tif",
        "field_2_depth.tif",
    ]
    (outdir / "field_4.tif").write_bytes(b"a half-written file from some other program")
    before = {name: (outdir / name).stat().st_mtime_ns for name in ("field_1.tif", "field_2.json")}

    code, _, err = run_cli(capsys, "batch", scans, "-o", outdir, "--depth", "--resume")
    assert code == 0 and "2 done, 2 skipped (already complete)" in err
    assert {name: (outdir / name).stat().st_mtime_ns for name in before} == before
    expected, got = read_outputs(reference), read_outputs(outdir)
    assert expected.keys() == got.keys() and len(got) == 8
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])
    assert not list(outdir.glob(".*.tmp"))


def test_resume_after_the_process_is_killed(tmp_path):
    root = tmp_path / "scans"
    for i in range(8):
        write_frames(root / f"s{i}", scene(i, 6, (192, 256)))
    command = [sys.executable, "-m", "napari_focus_stack.cli", "batch", str(root), "-q", "--radius", "3"]
    reference, outdir = tmp_path / "reference", tmp_path / "out"
    subprocess.run([*command, "-o", str(reference)], check=True)
    process = subprocess.Popen([*command, "-o", str(outdir)])
    deadline = time.monotonic() + 30
    while not list(outdir.glob("*.json")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert len(list(outdir.glob("*.json"))) < 8  # killed part-way
    done = subprocess.run([*command, "-o", str(outdir), "--resume"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected, got = read_outputs(reference), read_outputs(outdir)
    assert expected.keys() == got.keys() and len(got) == 8
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--radius", "30"], "radius must be from 1 to 20, got 30"),
        (["--stack-size", "1"], "stack_size must be at least 2"),
        (["--group", "(.+)"], "needs a named group (?P<stack>...)"),
        (["--group", r"(?P<stack>x)\.jpg"], "matches none of the"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
def test_usage_errors_are_one_line(tmp_path, capsys, extra, message):
    flat = tmp_path / "flat"
    write_frames(flat, scene(0, 4))
    code, _, err = run_cli(capsys, "batch", flat, "-o", tmp_path / "out", *extra)
    assert code == 2 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_root_without_stacks_and_outdir_among_inputs(tmp_path, capsys):
    flat = tmp_path / "flat"
    write_frames(flat, scene(0, 4))
    code, _, err = run_cli(capsys, "batch", flat, "-o", tmp_path / "out")
    assert code == 2 and "no sub-folder of" in err and "use --stack-size N, --group REGEX or --auto" in err
    code, _, err = run_cli(capsys, "batch", flat, "-o", flat, "--stack-size", 2)
    assert code == 2 and "holds input frames; choose another one" in err
    code, _, err = run_cli(capsys, "batch", tmp_path / "nowhere", "-o", tmp_path / "out")
    assert code == 2 and "not a folder" in err


def test_outdir_inside_root_is_not_a_stack(scans, capsys):
    outdir = scans / "fused"
    assert run_cli(capsys, "batch", scans, "-o", outdir, "-q")[0] == 0
    code, out, _ = run_cli(capsys, "batch", scans, "-o", outdir, "--dry-run", "--resume")
    assert code == 0 and "fused" not in out and out.count("(complete: skipped)") == 4


def test_inputs_are_only_read(scans, tmp_path, capsys):
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in scans.rglob("*") if p.is_file()}
    assert run_cli(capsys, "batch", scans, "-o", tmp_path / "out", "--depth", "-q")[0] == 0
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in scans.rglob("*") if p.is_file()}
    assert after == before


def test_list_images_skips_hidden_and_other_files(tmp_path):
    write_frames(tmp_path, scene(0, 2))
    (tmp_path / ".z00.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("")
    (tmp_path / "sub").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["z01.png", "z02.png"]


def test_single_stack_form_does_not_import_dask_or_batch(tmp_path):
    folder = tmp_path / "frames"
    write_frames(folder, scene(0, 3))
    code = (
        "import sys; from napari_focus_stack.cli import main; "
        f"main([{str(folder)!r}, '-o', {str(tmp_path / 'f.tif')!r}, '-q']); "
        "print(sorted(m for m in ('dask', 'distributed', 'napari_focus_stack.batch') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_cli_refuses_an_output_folder_full_of_frames(tmp_path, capsys):
    from napari_focus_stack.cli import main
    from napari_focus_stack.io import save_image
    from napari_focus_stack.synthetic import simulate_stack

    for name in ("field_1", "field_2"):
        (tmp_path / name).mkdir()
        for k, frame in enumerate(simulate_stack((32, 32), 3, seed=1).frames):
            save_image(frame, tmp_path / name / f"z{k}.png")
    code = main(["batch", str(tmp_path), "-o", str(tmp_path / "field_1"), "-q"])
    assert code == 2
    assert "holds input frames; choose another one" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "field_1").iterdir()) == ["z0.png", "z1.png", "z2.png"]


def test_an_interrupted_first_stack_can_be_resumed(tmp_path, capsys, monkeypatch):
    # the depth map is written, then the run stops before the fused image and the manifest
    from napari_focus_stack.cli import main
    from napari_focus_stack.io import save_image as real_save
    from napari_focus_stack.synthetic import simulate_stack

    for name in ("a", "b"):
        (tmp_path / "scans" / name).mkdir(parents=True)
        for k, frame in enumerate(simulate_stack((32, 32), 3, seed=2).frames):
            real_save(frame, tmp_path / "scans" / name / f"z{k}.png")

    real_writer = writing.image_writer

    def interrupted(image, path, **kwargs):
        if not str(path).endswith("_depth.tif"):
            raise KeyboardInterrupt
        return real_writer(image, path, **kwargs)

    monkeypatch.setattr(writing, "image_writer", interrupted)
    assert main(["batch", str(tmp_path / "scans"), "-o", str(tmp_path / "out"), "--depth", "-q"]) == 130
    assert list((tmp_path / "out").iterdir()) == []  # the interrupted stack left nothing
    monkeypatch.setattr(writing, "image_writer", real_writer)
    assert main(["batch", str(tmp_path / "scans"), "-o", str(tmp_path / "out"), "--depth", "-q", "--resume"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == [
        "a.json",
        "a.tif",
        "a_depth.tif",
        "b.json",
        "b.tif",
        "b_depth.tif",
    ]


def test_earlier_results_inside_root_are_not_stacks(tmp_path, capsys):
    from napari_focus_stack.cli import main
    from napari_focus_stack.io import save_image
    from napari_focus_stack.synthetic import simulate_stack

    (tmp_path / "a").mkdir()
    for k, frame in enumerate(simulate_stack((32, 32), 3, seed=3).frames):
        save_image(frame, tmp_path / "a" / f"z{k}.png")
    assert main(["batch", str(tmp_path), "-o", str(tmp_path / "fused"), "-q"]) == 0
    capsys.readouterr()
    assert main(["batch", str(tmp_path), "-o", str(tmp_path / "fused_png"), "--format", "png", "--dry-run"]) == 0
    listed = capsys.readouterr().out
    assert "a " in listed and "fused" not in listed.split("->")[0]
    assert "1 stacks" in listed


def test_an_optional_stack_group_that_does_not_match_is_no_stack(tmp_path):
    from napari_focus_stack.batch import group_by_regex

    stacks = group_by_regex([tmp_path / "a_z1.png", tmp_path / "x.png"], r"(?:(?P<stack>a)_z\d)?.*")
    assert [stack.name for stack in stacks] == ["a"]


def test_batch_depth_from_is_checked():
    from napari_focus_stack.batch import BatchOptions

    with pytest.raises(ValueError, match="depth_from must be 'all' or a channel index, got 'green'"):
        BatchOptions(depth_from="green")
    assert (
        BatchOptions(depth_from="1").depth_from == 1
        and BatchOptions().recorded() == BatchOptions(depth_from="all").recorded()
    )
    assert BatchOptions(depth_from=1).recorded()["depth_from"] == 1
