"""Dask: one task per stack on a local cluster or a given client, with results
identical to a serial run; loopback-only local clusters; clear errors."""

import os
from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_focus_stack.batch import Stack, group_by_subfolder
from napari_focus_stack.cli import main
from napari_focus_stack.distributed import StackOutcome, local_client, stack_many
from napari_focus_stack.io import save_image
from napari_focus_stack.synthetic import simulate_stack

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

SCENES = [("mixed", "dome"), ("cells", "slope"), ("noise", "waves"), ("grid", "steps")]


@pytest.fixture
def scans(tmp_path):
    """Five small stacks, one per sub-folder; s3 has a truncated frame."""
    root = tmp_path / "scans"
    for i in range(5):
        texture, depth = SCENES[i % len(SCENES)]
        sim = simulate_stack((48, 64), 5, texture=texture, depth=depth, rgb=True, seed=i)
        (root / f"s{i}").mkdir(parents=True)
        for k, frame in enumerate(sim.frames):
            save_image(frame, root / f"s{i}" / f"z{k}.png")
    corrupt = root / "s3" / "z2.png"
    corrupt.write_bytes(corrupt.read_bytes()[:150])
    return root


def images(outdir):
    return {path.name: tifffile.imread(path) for path in sorted(Path(outdir).glob("*.tif"))}


def assert_same_images(got, expected):
    assert got.keys() == expected.keys() and got
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.fixture
def serial(scans, tmp_path):
    outdir = tmp_path / "serial"
    outcomes = stack_many(group_by_subfolder(scans), outdir, depth=True, confidence=True, threads_per_stack=1)
    return outdir, outcomes


def test_threaded_cluster_matches_serial(scans, serial, tmp_path):
    outdir = tmp_path / "dask"
    seen = []
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        outcomes = stack_many(
            group_by_subfolder(scans), outdir, client=client, depth=True, confidence=True, progress=seen.append
        )
    assert [(o.name, o.status) for o in outcomes] == [(o.name, o.status) for o in serial[1]]
    assert sorted(o.name for o in seen) == ["s0", "s1", "s2", "s3", "s4"]
    assert outcomes[3].failed and "z2.png" in outcomes[3].reason
    assert_same_images(images(outdir), images(serial[0]))


def test_worker_processes_on_loopback_match_serial(scans, serial, tmp_path):
    outdir = tmp_path / "dask"
    with local_client(2) as client:
        addresses = [client.scheduler.address, *client.scheduler_info()["workers"]]
        assert len(addresses) == 3
        assert all(address.startswith("tcp://127.0.0.1:") for address in addresses)
        # glibc's adaptive malloc kept: with Dask's MALLOC_TRIM_THRESHOLD_ stacking is 2-3x slower
        assert set(client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_").values()) == {None}
        outcomes = stack_many(group_by_subfolder(scans), outdir, client=client, depth=True, confidence=True)
        assert {o.status for o in outcomes} == {"done", "failed"}
    assert_same_images(images(outdir), images(serial[0]))


def test_cli_workers_resume_and_failure(scans, serial, tmp_path, capsys):
    outdir = tmp_path / "cli"
    argv = ["batch", str(scans), "-o", str(outdir), "--depth", "--confidence", "--workers", "2", "-q"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "5 stacks: 4 done, 1 failed" in err and "failed s3: " in err
    assert_same_images(images(outdir), images(serial[0]))
    assert main([*argv, "--resume", "--dry-run"]) == 0
    assert capsys.readouterr().out.count("(complete: skipped)") == 4


def test_unreachable_scheduler_is_one_line(scans, tmp_path, capsys):
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        code = main(["batch", str(scans), "-o", str(tmp_path / "out"), "--scheduler", "tcp://127.0.0.1:9", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in err
    assert err.count("\n") == 1


def test_one_way_to_run_at_a_time(tmp_path):
    with pytest.raises(ValueError, match="at most one of client, workers and scheduler"):
        stack_many([Stack("a", ["x.png"])], tmp_path, workers=2, scheduler="tcp://127.0.0.1:8786")


def test_outcome_is_failed_only_when_failed():
    assert StackOutcome("a", "failed", "why").failed and not StackOutcome("a", "skipped").failed


def test_opencv_thread_count_is_restored_when_tasks_overlap():
    import threading

    import cv2

    from napari_focus_stack.distributed import opencv_threads

    before = cv2.getNumThreads()
    inside, release = threading.Event(), threading.Event()

    def task():
        with opencv_threads(1):
            inside.set()
            release.wait(5)

    other = threading.Thread(target=task)
    other.start()
    inside.wait(5)
    with opencv_threads(1):
        assert cv2.getNumThreads() == 1
    assert cv2.getNumThreads() == 1  # the other task is still running
    release.set()
    other.join(5)
    assert cv2.getNumThreads() == before


def test_gpu_all_gives_each_worker_its_own_gpu(fake_gpu, monkeypatch):
    from types import SimpleNamespace

    from napari_focus_stack.distributed import worker_device

    fake_gpu(devices=2)
    assert worker_device("gpu:all") == "gpu:all"  # serial: each stack's tiles use both
    assert worker_device("gpu") == "gpu" and worker_device("cpu") == "cpu"
    for name, expected in [(0, "gpu:0"), (1, "gpu:1"), (2, "gpu:0"), (3, "gpu:1")]:
        monkeypatch.setattr(distributed, "get_worker", lambda name=name: SimpleNamespace(name=name))
        assert worker_device("gpu:all") == expected


def test_stacks_spread_over_gpus_on_a_cluster(scans, serial, tmp_path, fake_gpu):
    state = fake_gpu(devices=2)
    outdir = tmp_path / "gpus"
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        outcomes = stack_many(
            group_by_subfolder(scans), outdir, client=client, depth=True, confidence=True, device="gpu:all"
        )
    assert [(o.name, o.status) for o in outcomes] == [(o.name, o.status) for o in serial[1]]
    assert state.allocations[0] > 0 and state.allocations[1] > 0  # both GPUs ran stacks
    got, expected = images(outdir), images(serial[0])
    assert got.keys() == expected.keys()
    for name in expected:  # GPU and CPU agree within rounding
        difference = np.abs(got[name].astype(float) - expected[name])
        assert difference.max() <= (1 if got[name].dtype == np.uint8 else 1e-3), name
