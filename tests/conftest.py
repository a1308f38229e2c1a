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
