"""Known-answer tests of the loudness-control metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from triergon.triergon_core.lufs_curve import LufsCurve
from triergon.triergon_core.metrics import lufs_tracking, stereo_placement


def _curve(left, right) -> LufsCurve:
    return LufsCurve(torch.tensor([left, right], dtype=torch.float32))


def test_tracking_known_offset_and_correlation():
    req = _curve([-30, -20, -10, -25], [-40, -30, -35, -20])
    got = _curve([-27, -17, -7, -22], [-40, -30, -35, -20])  # L: +3 LU everywhere, R exact
    score = lufs_tracking(req, got)
    assert score.mae == pytest.approx((3.0, 0.0))
    assert score.correlation == pytest.approx((1.0, 1.0))
    assert score.frames == (4, 4)


def test_tracking_anticorrelated_and_floor():
    # frames requested at or below -60 LUFS are left out: only frames 1..3 count
    req = _curve([-70, -30, -20, -10], [-60, -20, -20, -40])
    got = _curve([0, -10, -20, -30], [-5, -20, -20, -40])
    score = lufs_tracking(req, got)
    assert score.frames == (3, 3)
    assert score.mae[0] == pytest.approx((20 + 0 + 20) / 3)
    assert score.correlation[0] == pytest.approx(-1.0)
    assert score.mae[1] == pytest.approx(0.0)
    assert score.correlation[1] == pytest.approx(1.0)


def test_tracking_constant_curve_has_no_correlation():
    req = _curve([-20] * 5, [-70] * 5)
    score = lufs_tracking(req, _curve([-22] * 5, [-30] * 5))
    assert score.mae[0] == pytest.approx(2.0) and math.isnan(score.correlation[0])
    assert score.frames[1] == 0 and math.isnan(score.mae[1])


def test_tracking_measures_audio():
    # a steady 1 kHz sine: its measured curve is flat at its integrated level, whatever that level is
    t = torch.arange(44100 * 2) / 44100
    sine = 0.1 * torch.sin(2 * math.pi * 1000 * t)
    audio = torch.stack([sine, sine * 10 ** (-12 / 20)])
    measured = LufsCurve.measure(audio)
    level = measured.values[:, 2:-2].mean(1)
    req = LufsCurve(level[:, None].repeat(1, measured.num_frames))
    score = lufs_tracking(req, audio)
    assert level[0] - level[1] == pytest.approx(12.0, abs=0.01)
    assert max(score.mae) < 0.05


def test_placement_known_share():
    # requested sides: frames 0, 1, 3 (|L-R| > 6); frame 2 differs by only 4 LU and is not counted
    req = _curve([-10, -30, -20, -10], [-30, -10, -24, -20])
    got = _curve([-15, -20, -30, -25], [-25, -15, -20, -20])  # right side on 0, 1; wrong on 3
    score = stereo_placement(req, got)
    assert score.frames == 3
    assert score.accuracy == pytest.approx(2 / 3)
    centred = stereo_placement(_curve([-20, -20], [-22, -18]), _curve([-20, -20], [-20, -20]))
    assert centred.frames == 0 and math.isnan(centred.accuracy)


def test_metrics_reject_mismatched_curves():
    req = _curve([-20] * 6, [-20] * 6)
    with pytest.raises(ValueError, match="frames"):
        lufs_tracking(req, _curve([-20] * 3, [-20] * 3))
    with pytest.raises(ValueError, match="rates"):
        lufs_tracking(req, LufsCurve(np.full((2, 6), -20.0), rate=12.0))
    assert lufs_tracking(req, _curve([-21] * 7, [-21] * 7)).mae == pytest.approx((1.0, 1.0))  # one frame longer
