from pathlib import Path

import pytest

#: Real stacks live in ../shared/data/stacks beside the checkout (never copied in).
REAL_STACKS = Path(__file__).resolve().parents[2] / "shared" / "data" / "stacks"


@pytest.fixture
def real_stack():
    """Path of a real stack by name; skips the test when it is not there."""

    def get(name):
        path = REAL_STACKS / name
        if not path.is_dir():
            pytest.skip(f"real stack {name} not present at {path}")
        return path

    return get


@pytest.fixture
def fake_gpu(monkeypatch):
    """Installs the CuPy stand-in (tests/fake_cupy.py): ``fake_gpu(devices=1, memory=...)`` returns its state."""
    import fake_cupy

    def install(devices=1, memory=16 * 2**30):
        return fake_cupy.install(monkeypatch, devices, memory)

    return install
