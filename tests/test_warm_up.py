"""``napari-focus-stack --warm-up``: every GPU code path run once, so CuPy compiles and caches its kernels."""

import pytest

from napari_focus_stack import warm_up as wu
from napari_focus_stack.cli import main


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "kernel_cache"
    monkeypatch.setenv("CUPY_CACHE_DIR", str(folder))
    return folder


def test_warm_up_runs_every_method_dtype_and_the_warp_on_the_gpu(fake_gpu, cache, monkeypatch):
    import fake_cupy

    fake_gpu()
    warps = []
    kernel = fake_cupy.KERNELS["napari_focus_stack_warp_cubic"]
    monkeypatch.setitem(fake_cupy.KERNELS, "napari_focus_stack_warp_cubic", lambda *a: warps.append(1) or kernel(*a))
    seen = []
    done = wu.warm_up("gpu", progress=lambda k, total, what: seen.append((k, total, what)))
    assert done["runs"] == len(seen) == 12 and done["device"] == "gpu:0" and done["cache"] == cache
    assert cache.is_dir()
    assert [k for k, _, _ in seen] == list(range(1, 13)) and {t for _, t, _ in seen} == {12}
    whats = [what for _, _, what in seen]
    for method in ("weighted", "depthmap", "pyramid"):
        for kind in ("RGB uint8", "gray uint16"):
            assert f"{method}, {kind}, still" in whats and f"{method}, {kind}, warped" in whats
    # every warped run resamples its frames on the device (the reference frame is not warped)
    assert len(warps) >= 6 * (wu.WARM_UP_FRAMES - 1)


def test_warm_up_from_the_command_line(fake_gpu, cache, capsys):
    fake_gpu()
    assert main(["--warm-up"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "warm-up 1/12: weighted, RGB uint8, still"
    assert err[-1].startswith("GPU kernels ready on gpu:0: 12 runs in ") and err[-1].endswith(
        f"CuPy keeps them in {cache}"
    )
    assert main(["--warm-up", "--quiet"]) == 0 and capsys.readouterr().err == ""


def test_warm_up_says_why_it_cannot_run(capsys, monkeypatch):
    assert main(["--warm-up", "--device", "cpu"]) == 2
    assert capsys.readouterr().err.strip() == (
        "napari-focus-stack: error: --warm-up compiles GPU kernels: give --device gpu or gpu:N, not cpu"
    )
    from napari_focus_stack.engine import backend

    def no_gpu(name):
        raise backend.DeviceUnavailableError("GPU requested but no NVIDIA driver was found on this machine (test)")

    monkeypatch.setattr(backend, "get_backend", no_gpu)
    assert main(["--warm-up"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["napari-focus-stack: error: GPU requested but no NVIDIA driver was found on this machine (test)"]


def test_an_unwritable_kernel_cache_falls_back_to_the_temporary_folder(tmp_path, monkeypatch):
    import os

    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CUPY_CACHE_DIR", str(blocker / "cache"))  # cannot be made: a file is in the way
    folder = wu.usable_cache_dir()
    assert folder.is_dir() and folder.name.startswith("napari-focus-stack-cupy-")
    assert os.environ["CUPY_CACHE_DIR"] == str(folder)
    # a writable place: left to CuPy, nothing created
    monkeypatch.setenv("CUPY_CACHE_DIR", str(tmp_path / "fine" / "kernels"))
    assert wu.usable_cache_dir() == tmp_path / "fine" / "kernels" and not (tmp_path / "fine").exists()
    # every GPU backend asks first, before its kernel check compiles anything
    from napari_focus_stack.engine.backend import gpu

    asked = []
    monkeypatch.setattr(gpu, "usable_cache_dir", lambda: asked.append(1))
    try:
        gpu._cupy_backend(0)
    except gpu.DeviceUnavailableError:
        pass  # no GPU here
    assert asked == [1]
    from napari_focus_stack.engine.align.policy import MIN_ALIGN_SIDE

    assert wu.WARM_UP_SIDE >= MIN_ALIGN_SIDE  # the warped runs are aligned, not skipped as too small
