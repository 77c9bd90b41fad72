"""Argument checks shared by `LufsCurve` and its editing operations: one-line ValueErrors that say what to pass."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .config import frames_for

Level = float | Sequence[float]


def finite(name: str, x: float) -> float:
    if not math.isfinite(x := float(x)):
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    return x


def duration_frames(duration: float, rate: float) -> int:
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    return max(1, frames_for(duration, rate))


def check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"rate must be a positive number of frames per second, got {rate!r}")
    return float(rate)


def per_channel(level: Level, n: int, what: str) -> np.ndarray:
    if np.ndim(level) == 0:
        return np.full(n, finite(what, level))
    if len(lv := list(level)) != n:
        raise ValueError(f"{what}: expected one value or {n} (one per channel), got {len(lv)}")
    return np.array([finite(what, x) for x in lv])
