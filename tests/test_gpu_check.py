"""benchmarks/gpu_check.py is run by whichever session is lent a GPU, once:
it must not fail there for want of having run before. Here it runs, tiny, on
the CuPy stand-in."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    return gpu_check


@pytest.mark.slow
def test_gpu_check_runs_and_prints_its_tables(fake_gpu, capsys):
    fake_gpu()
    gpu_check = load_script()
    code = gpu_check.main(["--sizes", "0.05", "--frames", "4", "--repeat", "1", "--budget-sizes", "0.05"])
    out = capsys.readouterr().out
    assert code == 0
    assert "Device: Fake GPU 0" in out
    for title in ("CPU vs GPU agreement", "transfers and warp", "GPU speed", "Within a 2 GB budget"):
        assert f"### {title}" in out or title in out
    agreement = out.split("### CPU vs GPU agreement")[1].split("###")[0]
    rows = [line for line in agreement.splitlines() if line.startswith("| ") and "case" not in line]
    assert len(rows) == 5
    for row in rows:  # every case agrees within the tolerances tests/engine/test_gpu.py asserts
        cells = [c.strip() for c in row.strip("|").split("|")]
        tolerance = 5e-3 if "moving" in cells[0] else 1e-4
        assert float(cells[1]) <= tolerance and float(cells[2]) <= tolerance and int(cells[3]) <= 1
    speed = out.split("### GPU speed")[1].split("###")[0]
    assert "MP x 4 | none |" in speed and "MP x 4 | similarity |" in speed
    assert "skipped" not in speed
    # fresh processes have no stand-in (here: exit 2, said so), but the section runs to its table
    processes = out.split("### Fresh processes")[1].split("###")[0]
    assert "| first --warm-up |" in processes and "| 0.05 MP x 4 JPEG, --align similarity (run 2) |" in processes


def test_a_failing_section_keeps_the_others(fake_gpu, capsys, monkeypatch):
    fake_gpu()
    gpu_check = load_script()

    def broken(*args):
        raise RuntimeError("cuFFT went missing")

    monkeypatch.setattr(gpu_check, "agreement", broken)
    code = gpu_check.main(["--sizes", "0.05", "--frames", "3", "--repeat", "1", "--budget-sizes", ""])
    out = capsys.readouterr().out
    assert code == 1
    assert "### agreement: FAILED" in out and "RuntimeError: cuFFT went missing" in out
    assert "### GPU speed" in out and "transfers and warp" in out
    assert out.rstrip().endswith("failed: agreement")


def test_without_a_gpu_it_says_why(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "cupy", None)
    assert load_script().main([]) == 1
    assert "No GPU: GPU requested but CuPy is not installed" in capsys.readouterr().out


def test_sections_can_be_chosen(fake_gpu, capsys):
    fake_gpu()
    code = load_script().main(["--sizes", "0.05", "--frames", "3", "--repeat", "1", "--sections", "speed"])
    out = capsys.readouterr().out
    assert code == 0
    assert "### GPU speed" in out
    assert "agreement" not in out and "transfers and warp" not in out and "2 GB budget" not in out
