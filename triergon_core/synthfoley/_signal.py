"""Shared building blocks of the SynthFoley scenes: random curves, noise, panning and drawing primitives.

Everything is vectorised over time: a curve is a function of an array of times (frame times for drawing,
sample times for audio), so the frames and the audio are two samplings of the same analytic description.
"""

from __future__ import annotations

import numpy as np

SAMPLE_RATE = 44100


def keyframes(rng: np.random.Generator, seconds: float, *, spacing: tuple[float, float], low: float, high: float,
              off: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Random piecewise-linear keyframes (times, values) covering [0, seconds]; each value is 0 with
    probability `off`, else uniform in [low, high]."""
    times = [0.0]
    while times[-1] < seconds:
        times.append(times[-1] + float(rng.uniform(*spacing)))
    values = rng.uniform(low, high, len(times))
    values[rng.random(len(times)) < off] = 0.0
    return np.asarray(times), values


def interp(t: np.ndarray, times: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.interp(t, times, values)


def band_noise(rng: np.random.Generator, n: int, lo: float, hi: float, *, tilt: float = 0.0) -> np.ndarray:
    """White noise shaped in the frequency domain to [lo, hi] Hz (soft edges, optional 1/f^tilt slope),
    normalised to unit RMS."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    gain = 1 / (1 + (lo / np.maximum(f, 1e-3)) ** 4) / (1 + (f / hi) ** 4)
    if tilt:
        gain = gain / np.maximum(f, 20.0) ** (tilt / 2)
    x = np.fft.irfft(spectrum * gain, n)
    return x / max(float(np.sqrt(np.mean(x**2))), 1e-12)


def pan_gains(position: np.ndarray | float) -> np.ndarray:
    """Equal-power pan law: position 0 = left, 0.5 = centre, 1 = right -> gains [2, ...]."""
    angle = np.clip(position, 0.0, 1.0) * (np.pi / 2)
    return np.stack([np.cos(angle), np.sin(angle)])


def place_events(n: int, onsets: np.ndarray, gains: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Mono signal of length n with `kernel` added at each onset sample, scaled by its gain (sample-accurate)."""
    out = np.zeros(n + len(kernel))
    keep = (onsets >= 0) & (onsets < n)
    onsets, gains = onsets[keep], gains[keep]
    if len(onsets) < len(kernel):  # few events (knocks): one slice each
        for onset, gain in zip(onsets, gains, strict=True):
            out[onset:onset + len(kernel)] += gain * kernel
    else:  # many short events (raindrops): one scatter-add per kernel tap
        for j in range(len(kernel)):
            np.add.at(out, onsets + j, gains * kernel[j])
    return out[:n]


def disk_mask(cx: np.ndarray, cy: np.ndarray, r: float, height: int, width: int) -> np.ndarray:
    """[T, height, width] bool: pixels whose centres lie within r of (cx[t], cy[t]) (pixel units)."""
    ys = np.arange(height)[None, :, None] + 0.5
    xs = np.arange(width)[None, None, :] + 0.5
    return (xs - cx[:, None, None]) ** 2 + (ys - cy[:, None, None]) ** 2 <= r * r


def box_mask(x0: np.ndarray, x1: np.ndarray, y0: float, y1: float, height: int, width: int) -> np.ndarray:
    """[T, height, width] bool: the box [x0[t], x1[t]) x [y0, y1) (pixel units; a NaN x0 draws nothing)."""
    xs = np.arange(width)[None, :] + 0.5
    cols = (xs >= x0[:, None]) & (xs < x1[:, None])
    ys = np.arange(height) + 0.5
    rows = (ys >= y0) & (ys < y1)
    return cols[:, None, :] & rows[None, :, None]


def paint(canvas: np.ndarray, mask: np.ndarray, colour: np.ndarray) -> None:
    """canvas[mask] = colour (rounded to the canvas' uint8); colour is RGB [3] or per-frame [T, 3]."""
    colour = np.clip(np.rint(colour), 0, 255).astype(canvas.dtype)
    if colour.ndim == 1:
        canvas[mask] = colour
    else:
        canvas[mask] = np.broadcast_to(colour[:, None, None, :], canvas.shape)[mask]
