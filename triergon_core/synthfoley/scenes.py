"""The SynthFoley scene kinds. Each scene is an analytic description of motion and sound over time: `draw`
samples it at the frame times, `sound` at the audio sample times, so every sound is caused by what is drawn.

A scene lives in a horizontal band of the frame (`width` x `height` pixels); x positions are fractions of the
band's width and drive the stereo position with an equal-power pan law (0 = left, 1 = right).
"""

from __future__ import annotations

import re

import numpy as np

from ._signal import (
    SAMPLE_RATE,
    band_noise,
    box_mask,
    disk_mask,
    interp,
    keyframes,
    paint,
    pan_gains,
    place_events,
)

# Named colours, so captions can say what is drawn.
COLOURS = {"red": (220, 60, 50), "orange": (235, 140, 40), "yellow": (230, 210, 60), "green": (70, 190, 80),
           "blue": (70, 120, 230), "purple": (150, 80, 200), "white": (235, 235, 235)}


def _tone(t: np.ndarray, freq: float, phase: float, harmonics: tuple[float, ...]) -> np.ndarray:
    return sum(a * np.sin(2 * np.pi * freq * (k + 1) * t + phase * (k + 1)) for k, a in enumerate(harmonics))


class Scene:
    """Base class: `kind`, caption `phrases` (with a `{colour}` slot), `draw`, `sound`, `metadata`."""

    kind = ""
    phrases: tuple[str, ...] = ()

    def __init__(self, rng: np.random.Generator, *, seconds: float, width: int, height: int) -> None:
        self.seconds, self.width, self.height = seconds, width, height
        self.colour = str(rng.choice(list(COLOURS)))
        self.noise_seed = int(rng.integers(2**62))

    def caption(self, wording: int) -> str:
        text = self.phrases[wording % len(self.phrases)].format(colour=self.colour)
        return re.sub(r"\b([Aa]) (?=[aeiou])", r"\1n ", text)

    def draw(self, canvas: np.ndarray, t: np.ndarray) -> None:
        """Paint the scene into `canvas` (uint8 [T, height, width, 3]) at frame times `t`."""
        raise NotImplementedError

    def sound(self, t: np.ndarray) -> np.ndarray:
        """Stereo float64 [2, len(t)] at the sample times `t = arange(N) / 44100` (events are placed by sample
        index, so `t` must start at 0)."""
        raise NotImplementedError

    def metadata(self, t: np.ndarray) -> dict:
        """JSON-able parameters and the drawn quantities at frame times `t` (what the sound follows)."""
        return {"kind": self.kind, "colour": self.colour}

    def _noise(self, n: int, lo: float, hi: float, *, stream: int = 0, tilt: float = 0.0) -> np.ndarray:
        return band_noise(np.random.default_rng([self.noise_seed, stream]), n, lo, hi, tilt=tilt)


class Ball(Scene):
    """A ball bouncing on a floor; every floor impact is a knock whose amplitude grows with the drop height."""

    kind = "ball"
    phrases = ("a {colour} ball bounces on the floor", "a bouncing {colour} ball knocks on the ground",
               "knocks of a {colour} ball bouncing")
    GRAVITY = 8.0  # band heights per s^2: a hop from 0.85 of the band takes about 0.9 s

    def __init__(self, rng: np.random.Generator, **size) -> None:
        super().__init__(rng, **size)
        heights, starts = [float(rng.uniform(0.15, 0.85))], []
        starts.append(-self._hop(heights[0]) * float(rng.uniform(0.25, 0.5)))
        while starts[-1] < self.seconds + 1.0:
            starts.append(starts[-1] + self._hop(heights[-1]))
            heights.append(float(rng.uniform(0.15, 0.85)))
        # hop i starts at starts[i] with an upward speed that reaches heights[i]; it ends with an impact
        self.starts, self.heights = np.asarray(starts), np.asarray(heights)
        self.drift = (float(rng.uniform(0, 1)), float(rng.uniform(0.05, 0.2)) * rng.choice([-1, 1]))
        self.knock_freq, self.knock_decay = float(rng.uniform(120, 320)), float(rng.uniform(0.02, 0.05))

    def _hop(self, h: float) -> float:
        return 2 * np.sqrt(2 * h / self.GRAVITY)

    @property
    def impacts(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, drop heights as fractions of the band) of the floor impacts in [0, seconds)."""
        times, falls = self.starts[1:], self.heights[:-1]
        keep = (times >= 0) & (times < self.seconds)
        return times[keep], falls[keep]

    def x(self, t: np.ndarray) -> np.ndarray:
        phase = (self.drift[0] + self.drift[1] * t) % 2.0
        return 0.1 + 0.8 * np.where(phase < 1, phase, 2 - phase)  # a triangle wave between the walls

    def y(self, t: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(self.starts, t, "right") - 1, 0, len(self.starts) - 1)
        tau = t - self.starts[i]
        speed = np.sqrt(2 * self.GRAVITY * self.heights[i])
        return np.maximum(speed * tau - self.GRAVITY * tau**2 / 2, 0.0)

    def _geometry(self) -> tuple[float, float, float]:
        radius = max(1.0, 0.09 * self.height)
        floor = self.height - max(1.0, 0.06 * self.height)
        return radius, floor, floor - 2 * radius

    def draw(self, canvas: np.ndarray, t: np.ndarray) -> None:
        radius, floor, travel = self._geometry()
        canvas[:, int(floor):] = (110, 100, 90)
        cy = floor - radius - self.y(t) / 0.85 * travel
        paint(canvas, disk_mask(self.x(t) * self.width, cy, radius, self.height, self.width), COLOURS[self.colour])

    def sound(self, t: np.ndarray) -> np.ndarray:
        times, falls = self.impacts
        tau = np.arange(int(0.25 * SAMPLE_RATE)) / SAMPLE_RATE
        click = self._noise(len(tau), 800, 6000) * np.exp(-tau / 0.003)
        taper = np.minimum(1.0, (tau[-1] - tau) / 0.05)  # no step where the kernel ends
        kernel = (np.exp(-tau / self.knock_decay) * np.sin(2 * np.pi * self.knock_freq * tau) + 0.4 * click) * taper
        gains = 0.8 * falls / 0.85 * pan_gains(self.x(times))
        onsets = np.round(times * SAMPLE_RATE).astype(np.int64)
        return np.stack([place_events(len(t), onsets, g, kernel) for g in gains])

    def metadata(self, t: np.ndarray) -> dict:
        times, falls = self.impacts
        return {**super().metadata(t), "impact_times": times.tolist(), "impact_heights": falls.tolist(),
                "x": self.x(t).tolist(), "height_above_floor": self.y(t).tolist()}


class Lamp(Scene):
    """A lamp whose brightness is the amplitude of a hum: brighter is louder, off is silent."""

    kind = "lamp"
    phrases = ("a {colour} lamp hums louder as it glows brighter", "the hum of a flickering {colour} light",
               "a {colour} light bulb buzzes while it dims and brightens")

    def __init__(self, rng: np.random.Generator, **size) -> None:
        super().__init__(rng, **size)
        self.keys = keyframes(rng, self.seconds, spacing=(0.3, 1.2), low=0.1, high=1.0, off=0.2)
        self.position = float(rng.uniform(0.15, 0.85))
        self.freq, self.phase = float(rng.uniform(180, 520)), float(rng.uniform(0, 2 * np.pi))

    def brightness(self, t: np.ndarray) -> np.ndarray:
        return interp(t, *self.keys)

    def draw(self, canvas: np.ndarray, t: np.ndarray) -> None:
        b = self.brightness(t)[:, None]
        cx, cy = np.full(len(t), self.position * self.width), np.full(len(t), 0.4 * self.height)
        radius = max(1.5, 0.16 * min(self.height, self.width))
        stand = box_mask(cx - max(0.5, radius / 4), cx + max(0.5, radius / 4), cy[0], self.height, self.height,
                         self.width)
        paint(canvas, stand, np.array([90, 90, 90]))
        lit = np.asarray(COLOURS[self.colour], np.float32)
        paint(canvas, disk_mask(cx, cy, radius, self.height, self.width), 30 + b * (lit - 30))

    def sound(self, t: np.ndarray) -> np.ndarray:
        hum = _tone(t, self.freq, self.phase, (1.0, 0.35, 0.15))
        return 0.3 * self.brightness(t) * hum * pan_gains(self.position)[:, None]

    def metadata(self, t: np.ndarray) -> dict:
        return {**super().metadata(t), "x": self.position, "brightness": self.brightness(t).tolist()}


class Slider(Scene):
    """A humming machine gliding left and right; its position pans the sound between the channels."""

    kind = "slider"
    phrases = ("a {colour} machine hums as it slides left and right", "a buzzing {colour} box moves from side to side",
               "the drone of a {colour} engine panning between left and right")

    def __init__(self, rng: np.random.Generator, **size) -> None:
        super().__init__(rng, **size)
        self.swing = (float(rng.uniform(0.3, 0.42)), float(rng.uniform(0.15, 0.5)), float(rng.uniform(0, 2 * np.pi)))
        self.freq = float(rng.uniform(70, 160))

    def x(self, t: np.ndarray) -> np.ndarray:
        amp, freq, phase = self.swing
        return 0.5 + amp * np.sin(2 * np.pi * freq * t + phase)

    def draw(self, canvas: np.ndarray, t: np.ndarray) -> None:
        half = max(1.0, 0.07 * self.width)
        cx = self.x(t) * self.width
        paint(canvas, box_mask(cx - half, cx + half, 0.3 * self.height, 0.75 * self.height, self.height, self.width),
              COLOURS[self.colour])

    def sound(self, t: np.ndarray) -> np.ndarray:
        buzz = _tone(t, self.freq, 0.0, (1.0, 0.5, 0.33, 0.25)) + 0.6 * self._noise(len(t), 200, 3000)
        return 0.12 * buzz * pan_gains(self.x(t))

    def metadata(self, t: np.ndarray) -> dict:
        return {**super().metadata(t), "x": self.x(t).tolist()}


class Vehicle(Scene):
    """Vehicles passing by: louder near the centre, panned by position, pitch raised while approaching
    (Doppler)."""

    kind = "vehicle"
    phrases = ("a {colour} car drives past", "a {colour} vehicle passes by with its engine running",
               "the engine of a passing {colour} car")
    EDGE = 0.25  # passes run from -EDGE to 1 + EDGE (off screen at both ends)
    DISTANCE = 0.12  # the listener's distance from the road, in band widths

    def __init__(self, rng: np.random.Generator, **size) -> None:
        super().__init__(rng, **size)
        starts, speeds, dirs = [float(rng.uniform(-1.0, 0.5))], [], []
        while True:
            speeds.append(float(rng.uniform(0.35, 0.9)))
            dirs.append(float(rng.choice([-1.0, 1.0])))
            end = starts[-1] + (1 + 2 * self.EDGE) / speeds[-1]
            if end > self.seconds:
                break
            starts.append(end + float(rng.uniform(0.0, 1.5)))
        self.starts, self.speeds, self.dirs = np.asarray(starts), np.asarray(speeds), np.asarray(dirs)
        self.freq = float(rng.uniform(60, 120))

    def _state(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, pass index) at `t`; x is NaN between passes."""
        i = np.clip(np.searchsorted(self.starts, t, "right") - 1, 0, len(self.starts) - 1)
        progress = self.speeds[i] * (t - self.starts[i])
        on = (t >= self.starts[i]) & (progress < 1 + 2 * self.EDGE)
        x = np.where(self.dirs[i] > 0, -self.EDGE + progress, 1 + self.EDGE - progress)
        return np.where(on, x, np.nan), i

    def x(self, t: np.ndarray) -> np.ndarray:
        return self._state(t)[0]

    def draw(self, canvas: np.ndarray, t: np.ndarray) -> None:
        cx = self.x(t) * self.width
        half, h = max(1.5, 0.12 * self.width), self.height
        paint(canvas, box_mask(cx - half, cx + half, 0.45 * h, 0.75 * h, h, self.width), COLOURS[self.colour])
        paint(canvas, box_mask(cx - half / 2, cx + half / 2, 0.3 * h, 0.45 * h, h, self.width), COLOURS[self.colour])
        for side in (-0.6, 0.6):
            paint(canvas, disk_mask(cx + side * half, np.full(len(t), 0.78 * h), max(1.0, 0.1 * h), h, self.width),
                  np.array([25, 25, 25]))

    def sound(self, t: np.ndarray) -> np.ndarray:
        x, i = self._state(t)
        on = ~np.isnan(x)
        offset = np.where(on, x - 0.5, 0.0)
        distance = np.hypot(offset, self.DISTANCE)
        fade = np.clip((0.5 + self.EDGE - np.abs(offset)) / 0.1, 0.0, 1.0) * on
        approach = -self.dirs[i] * offset / distance  # cosine of the angle to the listener: > 0 while approaching
        freq = self.freq * (1 + 0.1 * self.speeds[i] * approach)
        phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE
        engine = sum(a * np.sin(k * phase) for k, a in ((1, 1.0), (2, 0.6), (3, 0.4), (4, 0.2)))
        rumble = engine + 0.5 * self._noise(len(t), 150, 2500)
        return 0.3 * rumble * fade * self.DISTANCE / distance * pan_gains(np.where(on, x, 0.5))

    def metadata(self, t: np.ndarray) -> dict:
        x = self.x(t)
        return {**super().metadata(t), "engine_hz": self.freq, "pass_starts": self.starts.tolist(),
                "speeds": self.speeds.tolist(), "directions": self.dirs.tolist(),
                "x": [None if np.isnan(v) else float(v) for v in x]}


class Rain(Scene):
    """Falling drops: the hiss follows the number of drops on screen, each landing drop ticks."""

    kind = "rain"
    phrases = ("rain falls harder and softer", "raindrops patter as the shower changes",
               "the hiss of rain whose strength comes and goes")

    def __init__(self, rng: np.random.Generator, **size) -> None:
        super().__init__(rng, **size)
        self.colour = "blue"
        self.keys = keyframes(rng, self.seconds, spacing=(0.5, 1.5), low=0.03, high=1.0)
        self.fall = float(rng.uniform(0.35, 0.6))  # seconds from the top of the band to the bottom
        peak = max(4.0, float(rng.uniform(20, 50)) * self.width / 128)
        rate = peak / self.fall
        n = rng.poisson(rate * (self.seconds + self.fall))
        spawn = np.sort(rng.uniform(-self.fall, self.seconds, n))
        keep = rng.random(n) < interp(spawn, *self.keys)  # thinning: drops per second follow the density curve
        self.spawn, self.xs = spawn[keep], rng.uniform(0, 1, int(keep.sum()))
        self.gains = rng.uniform(0.5, 1.0, len(self.spawn))

    def _visible(self, t: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Sum of `weights` over the drops on screen at each time in `t` (spawn <= t < spawn + fall)."""
        cum = np.concatenate([[0.0], np.cumsum(weights)])
        return cum[np.searchsorted(self.spawn, t, "right")] - cum[np.searchsorted(self.spawn + self.fall, t, "right")]

    def count(self, t: np.ndarray) -> np.ndarray:
        return np.rint(self._visible(t, np.ones(len(self.spawn)))).astype(np.int64)

    def draw(self, canvas: np.ndarray, t: np.ndarray) -> None:
        first = np.searchsorted(t, self.spawn, "left")
        counts = np.searchsorted(t, self.spawn + self.fall, "left") - first
        drop = np.repeat(np.arange(len(self.spawn)), counts)
        frame = first[drop] + np.arange(len(drop)) - np.repeat(np.cumsum(counts) - counts, counts)
        y = ((t[frame] - self.spawn[drop]) / self.fall * self.height).astype(np.int64)
        x = np.minimum((self.xs[drop] * self.width).astype(np.int64), self.width - 1)
        for j in range(max(2, self.height // 12)):  # a short streak above the drop's head
            row = y - j
            ok = row >= 0
            canvas[frame[ok], row[ok], x[ok]] = (150, 180, 255)

    def sound(self, t: np.ndarray) -> np.ndarray:
        power = pan_gains(self.xs) ** 2  # each drop adds power to the channels by its x
        hiss = np.stack([np.sqrt(self._visible(t, w)) * self._noise(len(t), 1500, 12000, stream=c + 1)
                         for c, w in enumerate(power)])
        tau = np.arange(int(0.006 * SAMPLE_RATE)) / SAMPLE_RATE
        kernel = self._noise(len(tau), 2000, 10000, stream=3) * np.exp(-tau / 0.0015)
        onsets = np.round((self.spawn + self.fall) * SAMPLE_RATE).astype(np.int64)
        gains = 0.05 * self.gains * pan_gains(self.xs)
        ticks = np.stack([place_events(len(t), onsets, g, kernel) for g in gains])
        return 0.02 * hiss + ticks

    def metadata(self, t: np.ndarray) -> dict:
        return {**super().metadata(t), "fall_seconds": self.fall, "drops": len(self.spawn),
                "count": self.count(t).tolist()}


SCENES: dict[str, type[Scene]] = {cls.kind: cls for cls in (Ball, Lamp, Slider, Vehicle, Rain)}
