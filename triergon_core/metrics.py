"""Loudness-control metrics: how well generated audio follows a requested LUFS curve, and whether it sits on
the requested side of the stereo image.

Both compare a requested `LufsCurve` with a measured one (or with audio, measured here with
`LufsCurve.measure`). The two curves must have the same rate; their lengths may differ by one frame (a
measured clip of d seconds has ceil-or-round(d * rate) frames), and the longer one is trimmed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .lufs_curve import LufsCurve

__all__ = ["StereoPlacement", "Tracking", "lufs_tracking", "stereo_placement"]


@dataclass(frozen=True)
class Tracking:
    """Per-channel LUFS tracking: mean absolute error in LU, Pearson correlation (NaN when either curve is
    constant over the frames used), and how many frames were used."""

    mae: tuple[float, ...]
    correlation: tuple[float, ...]
    frames: tuple[int, ...]


@dataclass(frozen=True)
class StereoPlacement:
    """Share of the frames with a clear requested side (|L - R| > threshold) whose measured L - R has the same
    sign (NaN when there is no such frame), and how many frames were counted."""

    accuracy: float
    frames: int


def _pair(requested: LufsCurve, measured: LufsCurve | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(measured, LufsCurve):
        measured = LufsCurve.measure(torch.as_tensor(measured, dtype=torch.float32), rate=requested.rate)
    if measured.rate != requested.rate:
        raise ValueError(f"the curves have different rates ({requested.rate:g} and {measured.rate:g} frames/s); "
                         "resample one with `with_rate`")
    if requested.channels != measured.channels:
        raise ValueError(f"the curves have different channels ({requested.channels} and {measured.channels})")
    a, b = requested.values.double().numpy(), measured.values.double().numpy()
    if abs(a.shape[1] - b.shape[1]) > 1:
        raise ValueError(f"the requested curve has {a.shape[1]} frames and the measured one {b.shape[1]}; "
                         "they must cover the same duration (fit one with `fit_duration`)")
    n = min(a.shape[1], b.shape[1])
    return a[:, :n], b[:, :n]


def lufs_tracking(requested: LufsCurve, measured: LufsCurve | torch.Tensor, *, floor: float = -60.0) -> Tracking:
    """Per-channel MAE (LU) and Pearson correlation between a requested and a measured loudness curve, over
    the frames where the request is above `floor` LUFS (quieter requests mean "silence", where the measured
    level is arbitrary).

    Args:
        requested: the curve the audio was asked to follow.
        measured: the audio's curve, or the audio itself ([2, samples] at 44.1 kHz).
        floor: frames whose requested value is at or below this are left out, per channel.
    """
    want, got = _pair(requested, measured)
    mae, corr, frames = [], [], []
    for w, g in zip(want, got, strict=True):
        keep = w > floor
        w, g = w[keep], g[keep]
        frames.append(int(keep.sum()))
        mae.append(float(np.abs(w - g).mean()) if len(w) else math.nan)
        corr.append(_pearson(w, g))
    return Tracking(mae=tuple(mae), correlation=tuple(corr), frames=tuple(frames))


def stereo_placement(requested: LufsCurve, measured: LufsCurve | torch.Tensor, *,
                     threshold: float = 6.0) -> StereoPlacement:
    """Share of frames where the sign of L - R loudness matches the request, over the frames where the
    requested L and R differ by more than `threshold` LU.

    Args:
        requested: a stereo curve (L, R).
        measured: the audio's stereo curve, or the audio itself ([2, samples] at 44.1 kHz).
        threshold: the smallest requested |L - R| (LU) that counts as a side.
    """
    requested.require_stereo()
    want, got = _pair(requested, measured)
    want_diff, got_diff = want[0] - want[1], got[0] - got[1]
    keep = np.abs(want_diff) > threshold
    if not keep.any():
        return StereoPlacement(accuracy=math.nan, frames=0)
    hits = np.sign(got_diff[keep]) == np.sign(want_diff[keep])
    return StereoPlacement(accuracy=float(hits.mean()), frames=int(keep.sum()))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else math.nan
