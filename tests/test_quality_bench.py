"""The helpers of benchmarks/quality.py and benchmarks/peers.py (the suite itself is run by hand)."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import peers
import quality


def test_affine_fit_recovers_arbitrary_depth_units():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 11, (32, 32)).astype(np.float32)
    estimate = 255 - 23 * truth  # reversed, 8-bit-like units
    mask = np.ones_like(truth, bool)
    np.testing.assert_allclose(quality.affine_fit(estimate, truth, mask), truth, atol=1e-3)


def test_naive_argmax_takes_the_sharp_frame():
    rng = np.random.default_rng(1)
    sharp = (rng.random((24, 24)) * 255).astype(np.uint8)
    flat = np.full_like(sharp, 128)
    frames = np.stack([flat, sharp, flat])
    fused, index = quality.naive_argmax(frames)
    assert np.all(index == 1) and np.array_equal(fused, sharp)


def test_speckle_counts_isolated_outliers_and_coverage():
    depth = np.full((60, 60), 5.0, np.float32)
    depth[10, 10] = 9.0
    depth[30, 30] = np.nan
    value, coverage = quality.speckle(depth)
    assert value == pytest.approx(1 / (3600 - 1))
    assert coverage == pytest.approx(3599 / 3600)


def test_conform_brings_outputs_to_the_input_layout():
    like = np.zeros((8, 8), np.uint16)
    grey_alpha_8bit = np.dstack([np.full((8, 8), 255, np.uint8)] * 3 + [np.zeros((8, 8), np.uint8)])
    notes = []
    out = peers.conform(grey_alpha_8bit, like, notes)
    assert out.shape == (8, 8) and out.dtype == np.uint16 and out.max() == 65535
    assert notes == ["uint8 output scaled to uint16"]


def test_a_missing_peer_is_reported_not_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("FOCUSWEAVE", str(tmp_path / "nowhere" / "focusweave"))
    peer = peers.FocusWeave()
    assert not peer.available()
    frame = tmp_path / "frame_00.png"
    peers.write_image(frame, np.zeros((8, 8, 3), np.uint8))
    output, error = peers.run_peer(peer, tmp_path, [frame, frame], tmp_path / "out", 8)
    assert output is None and "could not start" in error
