"""Known-answer tests of the loudness-control and distribution metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from triergon.triergon_core.lufs_curve import LufsCurve
from triergon.triergon_core.metrics import (
    frechet_distance,
    gaussian_frechet_distance,
    kl_divergence,
    lufs_tracking,
    stereo_placement,
)


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


def _cross(mean, std) -> np.ndarray:
    """2 * D points whose sample mean is `mean` and whose unbiased covariance is diag(std ** 2) exactly."""
    mean, std = np.asarray(mean, float), np.asarray(std, float)
    d = len(mean)
    offsets = np.diag(std * math.sqrt((2 * d - 1) / 2))
    return np.concatenate([mean + offsets, mean - offsets])


def test_frechet_distance_known_gaussians():
    a = np.random.default_rng(0).standard_normal((50, 8))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # diagonal covariances: |mu_a - mu_b|^2 + sum (sigma_a - sigma_b)^2 = (9 + 16) + (1 + 0 + 4)
    x, y = _cross([0, 0, 0], [1, 2, 3]), _cross([3, 4, 0], [2, 2, 1])
    assert frechet_distance(x, y) == pytest.approx(30.0)
    # a rotation of both sets changes nothing
    rot, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
    assert frechet_distance(x @ rot, y @ rot) == pytest.approx(30.0)
    # general covariances: the textbook formula with scipy's sqrtm
    sqrtm = pytest.importorskip("scipy.linalg").sqrtm
    rng = np.random.default_rng(2)
    m1, m2 = rng.standard_normal(4), rng.standard_normal(4)
    c1, c2 = (w @ w.T + 0.1 * np.eye(4) for w in rng.standard_normal((2, 4, 4)))
    want = ((m1 - m2) ** 2).sum() + np.trace(c1 + c2 - 2 * sqrtm(c1 @ c2).real)
    assert gaussian_frechet_distance(m1, c1, m2, c2) == pytest.approx(want, rel=1e-9)
    # fewer items than dimensions (singular covariances) stays finite and symmetric
    p, q = rng.standard_normal((5, 16)), rng.standard_normal((6, 16)) + 1
    assert frechet_distance(p, q) == pytest.approx(frechet_distance(q, p), rel=1e-8)  # measured: 1.4e-9


def test_frechet_distance_rejects_bad_sets():
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="one size"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        frechet_distance(np.full((4, 3), np.nan), np.zeros((4, 3)))


def test_kl_divergence_known_values():
    p = np.array([[0.5, 0.9], [0.2, 0.2]])
    assert kl_divergence(p, p) == pytest.approx(0.0, abs=1e-12)
    assert kl_divergence(p, torch.tensor(p), mode="categorical") == pytest.approx(0.0, abs=1e-12)
    # one Bernoulli: 0.5 ln(0.5 / 0.25) + 0.5 ln(0.5 / 0.75) = 0.5 ln(4 / 3)
    assert kl_divergence([[0.5]], [[0.25]]) == pytest.approx(0.5 * math.log(4 / 3))
    # per clip summed over classes, then averaged over clips
    per_clip = [0.5 * math.log(4 / 3) + 0.0, 0.2 * math.log(0.2 / 0.6) + 0.8 * math.log(0.8 / 0.4)]
    assert kl_divergence([[0.5, 0.3], [0.2, 0.2]], [[0.25, 0.3], [0.6, 0.2]]) == pytest.approx(np.mean(per_clip))
    # categorical: rows renormalised ([0.5, 0.5] -> [0.25, 0.75]); a certain class against a coin flip is ln 2
    assert kl_divergence([[0.2, 0.2]], [[0.1, 0.3]], mode="categorical") == pytest.approx(
        0.5 * math.log(2) + 0.5 * math.log(2 / 3))
    assert kl_divergence([[1.0, 0.0]], [[0.5, 0.5]], mode="categorical") == pytest.approx(math.log(2), abs=1e-4)
    # a confident miss costs about ln(1 / eps), not infinity
    assert kl_divergence([[1.0]], [[0.0]], eps=1e-6) == pytest.approx(math.log(1e6), rel=1e-3)


def test_kl_divergence_rejects_bad_input():
    with pytest.raises(ValueError, match="one shape"):
        kl_divergence(np.full((2, 3), 0.5), np.full((3, 3), 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        kl_divergence([[2.0]], [[0.5]])
    with pytest.raises(ValueError, match="mode"):
        kl_divergence([[0.5]], [[0.5]], mode="softmax")
