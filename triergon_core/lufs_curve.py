"""`LufsCurve`: a per-channel loudness curve over time (DESIGN.md, "Signal conventions": LUFS curve).

A curve holds `values [channels, frames]` in LUFS at `rate` frames per second (6 by default); frame i
covers [i / rate, (i + 1) / rate). It is a value object: every edit returns a new curve. It converts to
the model's normalised [0, 1] scale and to the E_L conditioning tokens, and reads and writes JSON and CSV.
Plotting lives in `lufs_plot` (re-exported here as `plot_curves`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ._fs import atomic_write_path
from .conditioning import LUFS_CEIL, LUFS_FLOOR, lufs_embedding, normalize_lufs
from .config import LUFS_RATE, SAMPLE_RATE, frames_for
from .loudness import momentary_lufs
from .lufs_io import format_csv, parse_csv, parse_json
from .lufs_plot import plot_curves

logger = logging.getLogger(__name__)

__all__ = ["FIT_POLICIES", "LufsCurve", "frames_for", "plot_curves"]

FIT_POLICIES = ("error", "resample", "pad", "trim", "pad_or_trim")
INTERPOLATIONS = ("linear", "step", "smooth")
ChannelSel = str | Iterable[str] | None
Level = float | Sequence[float]


class LufsCurve:
    """Loudness over time, per channel, in LUFS.

    Validation policy (constructor and every `from_*` reader):
    - NaN or inf -> ValueError with the count and the first offending channel and frame;
    - values outside [-70, 0] LUFS (the model's range; -70 = silence) -> clipped, with one warning that
      says how many values were clipped;
    - `values` not 2-D, a channel count different from `len(channels)`, no frames, duplicate channel names,
      or a rate that is not a positive finite number -> ValueError. Stereo-only operations (`to_normalized`,
      `to_embedding`, `pan`, `swap_channels`) call `require_stereo()`.

    Edits clip their results to [-70, 0] silently: pushing past the range is normal while editing (+10 dB
    on a passage near 0 LUFS) and the model cannot represent more. Times are in seconds; a range
    [start, end) selects every frame it overlaps, clipped to the curve (None = the curve's start / end);
    `channels` selects one channel name, several, or all (None).

    Args:
        values: [channels, frames] loudness in LUFS (anything `torch.as_tensor` takes; stored as float32).
        rate: frames per second.
        channels: channel names, one per row of `values`.
    """

    __hash__ = None  # type: ignore[assignment]  # equality compares tensors; curves are not dict keys

    def __init__(self, values: Any, *, rate: float = LUFS_RATE, channels: Sequence[str] = ("L", "R")) -> None:
        self._rate, self._channels = _check_rate(rate), _check_channels(channels)
        self._values = _check_values(values, self._channels)

    def _with(self, values: torch.Tensor) -> LufsCurve:
        # Clipping first keeps the constructor's out-of-range warning for user input only.
        return LufsCurve(values.clamp(LUFS_FLOOR, LUFS_CEIL), rate=self._rate, channels=self._channels)

    @property
    def values(self) -> torch.Tensor:
        """[channels, frames] float32 LUFS (a copy: the curve never changes)."""
        return self._values.clone()

    @property
    def rate(self) -> float:
        return self._rate

    @property
    def channels(self) -> tuple[str, ...]:
        return self._channels

    @property
    def num_frames(self) -> int:
        return self._values.shape[1]

    @property
    def duration(self) -> float:
        return self.num_frames / self._rate

    @property
    def times(self) -> np.ndarray:
        """Start time of each frame in seconds."""
        return np.arange(self.num_frames) / self._rate

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LufsCurve):
            return NotImplemented
        return (self._rate == other._rate and self._channels == other._channels
                and self._values.shape == other._values.shape and torch.equal(self._values, other._values))

    def __repr__(self) -> str:
        return (f"LufsCurve({self.duration:.2f} s, {self.num_frames} frames at {self._rate:g}/s, "
                f"channels={','.join(self._channels)}, min={self._values.min().item():.1f}, "
                f"max={self._values.max().item():.1f} LUFS)")

    def require_stereo(self) -> LufsCurve:
        """Returns the curve itself, or raises a ValueError when it does not have exactly 2 channels (L, R)."""
        if len(self._channels) != 2:
            raise ValueError(f"this needs a stereo curve (2 channels: left, right); this one has "
                             f"{len(self._channels)}: {list(self._channels)}")
        return self

    # ---------------------------------------------------------------------------------------- constructors

    @classmethod
    def measure(cls, audio: torch.Tensor, *, sample_rate: int = SAMPLE_RATE, rate: float = LUFS_RATE) -> LufsCurve:
        """The momentary loudness of stereo audio [2, samples], per channel (BS.1770 K-weighting, windows of
        1 / rate s). Loudness above 0 LUFS is clipped to 0 (the model's range), silence reads -70.

        Args:
            audio: [2, samples] (use `load_audio` for files: it resamples and makes stereo).
            sample_rate: rate of `audio`.
            rate: curve frames per second.
        """
        values = momentary_lufs(audio, sample_rate, rate=rate).clamp(max=LUFS_CEIL)
        return cls(values, rate=rate).require_stereo()

    @classmethod
    def constant(cls, level: Level, *, duration: float, rate: float = LUFS_RATE,
                 channels: Sequence[str] = ("L", "R")) -> LufsCurve:
        """A flat curve.

        Args:
            level: LUFS, one for all channels or one per channel.
            duration, rate, channels: as in `from_keyframes`.
        """
        return cls.from_keyframes([0.0], [level], duration=duration, rate=rate, channels=channels)

    @classmethod
    def from_keyframes(cls, times: Sequence[float], levels: Sequence[Level], *, duration: float,
                       rate: float = LUFS_RATE, interpolation: str = "linear",
                       channels: Sequence[str] = ("L", "R")) -> LufsCurve:
        """A curve through keyframes, sampled at each frame's start time; the end keyframes' levels hold beyond.

        Args:
            times: keyframe times in seconds, strictly increasing (they may lie past `duration`).
            levels: one per keyframe: a LUFS value for all channels or a sequence with one per channel.
            duration: seconds (frames = ceil(duration * rate)).
            rate: frames per second.
            interpolation: "linear" (straight lines in dB), "step" (hold each level until the next keyframe)
                or "smooth" (smoothstep easing 3u^2 - 2u^3: flat at every keyframe, no corners).
            channels: channel names.
        """
        rate, channels = _check_rate(rate), _check_channels(channels)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {interpolation!r}; use one of {INTERPOLATIONS}")
        if len(times) == 0 or len(times) != len(levels):
            raise ValueError(f"need one level per keyframe and at least one keyframe: "
                             f"{len(times)} times, {len(levels)} levels")
        # Frame coordinates, rounded like `frames_for` so a keyframe at 1/3 s lands exactly on frame 2.
        pos = np.array([round(_finite("keyframe time", t) * rate, 6) for t in times])
        if np.any(np.diff(pos) <= 0):
            raise ValueError(f"keyframe times must be strictly increasing, got {list(times)}")
        lv = np.stack([_per_channel(level, len(channels), f"level of keyframe {k}") for k, level in enumerate(levels)])
        x = np.arange(_duration_frames(duration, rate), dtype=np.float64)
        k = np.clip(np.searchsorted(pos, x, side="right") - 1, 0, len(pos) - 1)  # keyframe at or before x
        k1 = np.minimum(k + 1, len(pos) - 1)
        u = np.clip((x - pos[k]) / np.where(k1 > k, pos[k1] - pos[k], 1.0), 0.0, 1.0)[:, None]
        u = {"linear": u, "step": 0 * u, "smooth": u * u * (3 - 2 * u)}[interpolation]
        return cls(torch.from_numpy((lv[k] + (lv[k1] - lv[k]) * u).T.copy()), rate=rate, channels=channels)

    # --------------------------------------------------------------------------------------------- editing

    def offset(self, db: float, *, start: float | None = None, end: float | None = None,
               channels: ChannelSel = None) -> LufsCurve:
        """Adds `db` decibels (negative = quieter) over [start, end) on the selected channels.

        Args:
            db: decibels to add.
            start, end, channels: the range and channels to change (see the class docstring).
        """
        v, (i0, i1), rows = self._values.clone(), self._span(start, end), self._rows(channels)
        v[rows, i0:i1] += _finite("db", db)
        return self._with(v)

    def set_level(self, level: float, *, start: float | None, end: float | None,
                  channels: ChannelSel = None) -> LufsCurve:
        """Sets [start, end) to a constant `level` (pass start=None, end=None for the whole curve).

        Args:
            level: LUFS.
            start, end, channels: the range and channels to change (see the class docstring).
        """
        v, (i0, i1), rows = self._values.clone(), self._span(start, end), self._rows(channels)
        v[rows, i0:i1] = _finite("level", level)
        return self._with(v)

    def fade_in(self, seconds: float, *, floor: float = LUFS_FLOOR, channels: ChannelSel = None) -> LufsCurve:
        """Ramps the first `seconds` up from `floor` onto the curve's own values, linearly in dB.

        With n = ceil(seconds * rate), frame i < n becomes floor + (i / n) * (value - floor), so the first frame
        is at `floor`; a fade never makes a frame louder, and one longer than the curve is cut, not squeezed.

        Args:
            seconds: fade length.
            floor: LUFS where the fade starts (-70 = silence).
            channels: the channels to fade.
        """
        return self._fade(seconds, floor, channels, reverse=False)

    def fade_out(self, seconds: float, *, floor: float = LUFS_FLOOR, channels: ChannelSel = None) -> LufsCurve:
        """Ramps the last `seconds` down to `floor`, linearly in dB: the mirror image of `fade_in`.

        Args:
            seconds: fade length.
            floor: LUFS of the last frame (-70 = silence).
            channels: the channels to fade.
        """
        return self._fade(seconds, floor, channels, reverse=True)

    def _fade(self, seconds: float, floor: float, channels: ChannelSel, *, reverse: bool) -> LufsCurve:
        if _finite("fade length", seconds) < 0:
            raise ValueError(f"fade length must be >= 0 seconds, got {seconds}")
        n = frames_for(seconds, self._rate)
        m = min(n, self.num_frames)
        if m == 0:
            return self
        w = torch.arange(m, dtype=torch.float32) / n  # 0 at the faded end
        frames = slice(self.num_frames - m, None) if reverse else slice(0, m)
        w = w.flip(0) if reverse else w
        v, rows, floor = self._values.clone(), self._rows(channels), _finite("floor", floor)
        v[rows, frames] = torch.minimum(v[rows, frames], floor + w * (v[rows, frames] - floor))
        return self._with(v)

    def copy_channel(self, src: str, dst: str) -> LufsCurve:
        """Copies channel `src`'s values onto channel `dst` ("L" -> "R" makes a centred curve).

        Args:
            src: source channel name.
            dst: destination channel name.
        """
        if not isinstance(src, str) or not isinstance(dst, str):
            raise ValueError(f"copy_channel takes two channel names, got {src!r}, {dst!r}")
        v = self._values.clone()
        v[self._rows(dst)] = v[self._rows(src)]
        return self._with(v)

    def swap_channels(self) -> LufsCurve:
        """Swaps the left and right values (mirrors the stereo picture)."""
        return self._with(self.require_stereo()._values.flip(0))

    def pan(self, amount: float, *, start: float | None = None, end: float | None = None,
            range_db: float = 24.0) -> LufsCurve:
        """Moves loudness towards one side over [start, end) by attenuating the other side.

        Pan law: the side panned away from drops by the level difference of the equal-power (sin/cos) pan
        law, 20 * log10(1 / tan(pi / 4 * (1 - |amount|))) dB, capped at `range_db`; the side panned towards
        keeps its level, so 0 changes nothing. |amount| 0.25 -> 3.5 dB, 0.5 -> 7.66 dB, 0.75 -> 14.0 dB,
        0.9 -> 22.1 dB, 1 -> `range_db`.

        Args:
            amount: in [-1, 1]; negative = towards the left (right gets quieter), positive = to the right.
            start, end: the range to pan (see the class docstring).
            range_db: the most the far side is attenuated.
        """
        amount, range_db = _finite("pan amount", amount), _finite("range_db", range_db)
        if not -1.0 <= amount <= 1.0:
            raise ValueError(f"pan amount must be in [-1, 1] (-1 = left, 1 = right), got {amount}")
        if range_db < 0:
            raise ValueError(f"range_db must be >= 0, got {range_db}")
        ratio = math.tan(math.pi / 4 * (1 - abs(amount)))
        drop = range_db if ratio == 0 else min(range_db, -20 * math.log10(ratio))
        v, (i0, i1) = self.require_stereo()._values.clone(), self._span(start, end)
        v[1 if amount < 0 else 0, i0:i1] -= drop
        return self._with(v)

    def smooth(self, seconds: float) -> LufsCurve:
        """Centred moving average over `seconds`, rounded to an odd number of frames (one or less: no change).

        The edges repeat the first / last value, so a constant stays constant and the ends do not droop.

        Args:
            seconds: window length.
        """
        if _finite("smoothing window", seconds) < 0:
            raise ValueError(f"smoothing window must be >= 0 seconds, got {seconds}")
        n = max(1, round(seconds * self._rate))
        n += 1 - n % 2  # odd, so the window is centred on its frame
        if n == 1:
            return self
        padded = F.pad(self._values[None], (n // 2, n // 2), mode="replicate")
        return self._with(F.avg_pool1d(padded, kernel_size=n, stride=1)[0])

    def clamp(self, lo: float = LUFS_FLOOR, hi: float = LUFS_CEIL) -> LufsCurve:
        """Limits the values to [lo, hi] LUFS (e.g. hi=-10 as a ceiling).

        Args:
            lo: lowest LUFS.
            hi: highest LUFS.
        """
        if _finite("lo", lo) > _finite("hi", hi):
            raise ValueError(f"clamp needs lo <= hi, got lo={lo}, hi={hi}")
        return self._with(self._values.clamp(lo, hi))

    def resample(self, duration: float) -> LufsCurve:
        """Stretches or squeezes the curve linearly to `duration`; the first and last values are kept.

        Args:
            duration: seconds (frames = ceil(duration * rate)).
        """
        n = _duration_frames(duration, self._rate)
        if n == self.num_frames:
            return self
        return self._with(F.interpolate(self._values[None], size=n, mode="linear", align_corners=True)[0])

    def with_rate(self, rate: float) -> LufsCurve:
        """The same loudness over the same duration at another frame rate (linear in time).

        Args:
            rate: the new frames per second.
        """
        rate = _check_rate(rate)
        if rate == self._rate:
            return self
        new_times = np.arange(_duration_frames(self.duration, rate)) / rate
        values = np.stack([np.interp(new_times, self.times, row) for row in self._values.numpy()])
        return LufsCurve(values, rate=rate, channels=self._channels)

    def slice(self, start: float, end: float) -> LufsCurve:
        """The frames that overlap [start, end), as a new curve starting at 0 s.

        Args:
            start, end: seconds, clipped to the curve.
        """
        i0, i1 = self._span(start, end)
        if i1 <= i0:
            raise ValueError(f"slice [{start}, {end}) s holds no frame of this {self.duration:g} s curve")
        return self._with(self._values[:, i0:i1])

    def concat(self, other: LufsCurve) -> LufsCurve:
        """This curve followed by `other` (same rate and channel names).

        Args:
            other: the curve to append.
        """
        if other.rate != self._rate or other.channels != self._channels:
            raise ValueError(f"cannot concatenate curves with different rates or channels: "
                             f"{self._rate:g}/s {self._channels} and {other.rate:g}/s {other.channels}")
        return self._with(torch.cat([self._values, other._values], dim=1))

    def fit_duration(self, seconds: float, *, policy: str = "error") -> LufsCurve:
        """The curve made to cover exactly `seconds` of audio (ceil(seconds * rate) frames).

        Policies when the frame counts differ:
        - "error": ValueError saying how long the curve and the audio are, and how to fix it;
        - "resample": stretch or squeeze linearly (`resample`);
        - "pad": extend a shorter curve by holding its last value (a sound keeps its level rather than
          dropping to silence mid-clip); a longer curve is an error;
        - "trim": cut a longer curve; a shorter curve is an error;
        - "pad_or_trim": "pad" or "trim", whichever is needed.

        Args:
            seconds: the audio's duration.
            policy: one of FIT_POLICIES.
        """
        if policy not in FIT_POLICIES:
            raise ValueError(f"unknown duration policy {policy!r}; use one of {FIT_POLICIES}")
        n = _duration_frames(seconds, self._rate)
        if n == self.num_frames:
            return self
        longer = self.num_frames > n
        if policy == "resample":
            return self.resample(seconds)
        if policy == "pad_or_trim" or policy == ("trim" if longer else "pad"):
            held = self._values[:, -1:].expand(-1, max(n - self.num_frames, 0))
            return self._with(torch.cat([self._values[:, :n], held], dim=1))
        fix = "policy='trim' or 'resample'" if longer else "policy='pad' or 'resample'"
        raise ValueError(f"the LUFS curve covers {self.duration:g} s ({self.num_frames} frames at {self._rate:g}/s) "
                         f"but the audio is {seconds:g} s ({n} frames); edit the curve to {seconds:g} s or pass {fix}")

    def _rows(self, channels: ChannelSel) -> list[int]:
        if channels is None:
            return list(range(len(self._channels)))
        names = [channels] if isinstance(channels, str) else list(channels)
        unknown = [c for c in names if c not in self._channels]
        if unknown or not names:
            raise ValueError(f"unknown channel(s) {unknown or names}; this curve has {list(self._channels)}")
        return [self._channels.index(c) for c in names]

    def _span(self, start: float | None, end: float | None) -> tuple[int, int]:
        s = 0.0 if start is None else _finite("start", start)
        e = self.duration if end is None else _finite("end", end)
        if s > e:
            raise ValueError(f"start ({s:g} s) is after end ({e:g} s)")
        # Every frame that overlaps [s, e), with times rounded as in `frames_for`.
        i0 = min(max(math.floor(round(s * self._rate, 6)), 0), self.num_frames)
        return i0, i0 if s == e else min(max(frames_for(e, self._rate), i0), self.num_frames)

    # ----------------------------------------------------------------------------------------- model scale

    def to_normalized(self) -> torch.Tensor:
        """[2, frames] in [0, 1] by (l + 70) / 70: the model's scale (`Conditions.lufs` takes a batch of them)."""
        return normalize_lufs(self.require_stereo()._values)

    @classmethod
    def from_normalized(cls, normalized: Any, *, rate: float = LUFS_RATE) -> LufsCurve:
        """The inverse of `to_normalized`: [2, frames] in [0, 1] (e.g. the LUFS predictor's output).

        Args:
            normalized: [2, frames] (values outside [0, 1] are clipped with a warning, as in the constructor).
            rate: frames per second.
        """
        n = torch.as_tensor(normalized, dtype=torch.float32).detach().cpu()
        if n.dim() != 2 or n.shape[0] != 2:
            raise ValueError(f"normalised curves are [2, frames] (left, right), got shape {tuple(n.shape)}")
        return cls(n * (LUFS_CEIL - LUFS_FLOOR) + LUFS_FLOOR, rate=rate)

    def to_embedding(self, *, max_frames: int, tokens: int, dim: int) -> torch.Tensor:
        """E_L for this curve, [2 * tokens, dim], exactly as `Conditioner.lufs_tokens` builds it.

        The normalised curve is zero-padded to `max_frames` and linearly interpolated (align_corners=True)
        to tokens * dim values per channel; left tokens first, then right.

        Args:
            max_frames: the preset's maximum LUFS frames (`SequenceConfig.max_lufs_frames`).
            tokens: M, tokens per embedding.
            dim: the embedding width D.
        """
        return lufs_embedding(self.to_normalized()[None], max_frames=max_frames, tokens=tokens, dim=dim)[0]

    @classmethod
    def from_embedding(cls, embedding: torch.Tensor, *, frames: int, max_frames: int, tokens: int, dim: int,
                       rate: float = LUFS_RATE, method: str = "lstsq") -> LufsCurve:
        """The inverse of `to_embedding`: E_L [2 * tokens, dim] -> the first `frames` frames.

        Args:
            embedding: [2 * tokens, dim].
            frames: frames of the curve that was embedded.
            max_frames, tokens, dim: as given to `to_embedding`.
            rate: frames per second.
            method: "lstsq" solves the interpolation's linear system: exact up to float error when
                tokens * dim >= max_frames. "interpolate" interpolates back to `max_frames`: exact on straight
                stretches, but it cuts corners (up to 14 dB on a random 360-frame curve into 768 values).
        """
        emb = torch.as_tensor(embedding, dtype=torch.float32).detach().cpu()
        if emb.shape != (2 * tokens, dim):
            raise ValueError(f"embedding shape {tuple(emb.shape)} is not (2 * tokens, dim) = {(2 * tokens, dim)}")
        if not 1 <= frames <= max_frames:
            raise ValueError(f"frames must be in [1, max_frames={max_frames}], got {frames}")
        flat = emb.reshape(2, tokens * dim)
        if method == "interpolate":
            norm = F.interpolate(flat[None], size=max_frames, mode="linear", align_corners=True)[0, :, :frames]
        elif method == "lstsq":
            # Row j of `basis` embeds a unit impulse at frame j; the padding frames are known zeros.
            eye = torch.eye(max_frames, dtype=torch.float64)[None]
            basis = F.interpolate(eye, size=tokens * dim, mode="linear", align_corners=True)[0, :frames]
            norm = torch.linalg.lstsq(basis.T, flat.T.double()).solution.T.float()
        else:
            raise ValueError(f"unknown method {method!r}; use 'lstsq' or 'interpolate'")
        # Float error can leave a value a hair outside [0, 1]: not worth the constructor's warning.
        return cls(norm.clamp(0, 1) * (LUFS_CEIL - LUFS_FLOOR) + LUFS_FLOOR, rate=rate)

    # --------------------------------------------------------------------------------------- serialisation

    def _rounded(self) -> list[list[float]]:
        # 3 decimals (a thousandth of a dB); `+ 0.0` turns -0.0 into 0.0 so files never show "-0.0".
        return [[round(x, 3) + 0.0 for x in row] for row in self._values.double().tolist()]

    def to_json(self) -> str:
        """JSON text: {"rate": 6.0, "channels": ["L", "R"], "values": [[...], [...]]} (LUFS, 3 decimals)."""
        return json.dumps({"rate": self._rate, "channels": list(self._channels), "values": self._rounded()})

    @classmethod
    def from_json(cls, text: str, *, source: str = "<json text>") -> LufsCurve:
        """Parses `to_json`'s format (unknown keys are ignored with a warning).

        Args:
            text: the JSON text.
            source: what errors call the text (they are ValueErrors starting with it, e.g. a file name).
        """
        with _reading(source):
            values, rate, channels = parse_json(text, source=source)
            return cls(values, rate=rate, channels=channels)

    def to_csv(self) -> str:
        """CSV text: a header `time,L,R` (the channel names), then per frame its start time in seconds and values.

        The rate is not stored: `from_csv` infers it from the uniform time column (written with 9 decimals).
        """
        return format_csv(self.times.tolist(), self._rounded(), self._channels)

    @classmethod
    def from_csv(cls, text: str, *, rate: float | None = None, source: str = "<csv text>") -> LufsCurve:
        """Parses `to_csv`'s format. Times must start at 0 and step by 1 / rate (within 1% of a frame).

        Unless `rate` is given it is (rows - 1) / last time, to 0.01 frames/s where the times allow (so times
        rounded in a spreadsheet still give 6/s), else to 6 decimals; a one-row file is read at 6/s.

        Args:
            text: the CSV text.
            rate: frames per second, when known (the times are checked against it).
            source: what errors call the text (they are ValueErrors starting with it, e.g. a file name).
        """
        with _reading(source):
            values, rate, channels = parse_csv(text, rate=rate, check_rate=_check_rate)
            return cls(values, rate=rate, channels=channels)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the curve atomically as JSON (`.json`) or CSV (`.csv`); returns the path.

        Args:
            path: the file; its extension picks the format.
        """
        path = Path(path)
        text = {".json": self.to_json, ".csv": self.to_csv}[_format(path)]()
        with atomic_write_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, rate: float | None = None) -> LufsCurve:
        """Reads a `.json` or `.csv` curve (see `from_json`, `from_csv`); errors name the file.

        Args:
            path: the file.
            rate: CSV only: frames per second, instead of inferring it from the times.
        """
        path = Path(path)
        if _format(path) == ".json":
            return cls.from_json(path.read_text(encoding="utf-8"), source=str(path))
        return cls.from_csv(path.read_text(encoding="utf-8"), rate=rate, source=str(path))


# ------------------------------------------------------------------------------------------------ helpers


@contextmanager
def _reading(source: str) -> Iterator[None]:
    """Prefixes any ValueError raised inside with the text's source (the file being read)."""
    try:
        yield
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e


def _format(path: Path) -> str:
    if (suffix := path.suffix.lower()) not in (".json", ".csv"):
        raise ValueError(f"{path}: unknown LUFS curve format; use a .json or .csv file")
    return suffix


def _finite(name: str, x: float) -> float:
    if not math.isfinite(x := float(x)):
        raise ValueError(f"{name} must be a finite number, got {x!r}")
    return x


def _duration_frames(duration: float, rate: float) -> int:
    if not math.isfinite(duration) or duration <= 0:
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    return max(1, frames_for(duration, rate))


def _check_rate(rate: float) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not math.isfinite(rate) or rate <= 0:
        raise ValueError(f"rate must be a positive number of frames per second, got {rate!r}")
    return float(rate)


def _check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    names = (channels,) if isinstance(channels, str) else tuple(channels)
    if not names or not all(isinstance(c, str) and c for c in names) or len(set(names)) != len(names):
        raise ValueError(f"channels must be distinct non-empty names, got {channels!r}")
    return names


def _check_values(values: Any, channels: tuple[str, ...]) -> torch.Tensor:
    v = torch.as_tensor(values).detach().cpu()
    if v.dim() != 2:
        raise ValueError(f"values must be [channels, frames], got shape {tuple(v.shape)}")
    if v.shape[0] != len(channels):
        raise ValueError(f"values have {v.shape[0]} channel(s) but {len(channels)} names were given: {list(channels)}")
    if v.shape[1] == 0:
        raise ValueError("empty LUFS curve: it has no frames")
    v = v.to(torch.float32)
    if (bad := ~torch.isfinite(v)).any():
        c, i = bad.nonzero()[0].tolist()
        raise ValueError(f"{int(bad.sum())} LUFS value(s) are NaN or infinite; the first is channel "
                         f"{channels[c]!r}, frame {i}")
    if outside := int(((v < LUFS_FLOOR) | (v > LUFS_CEIL)).sum()):
        logger.warning("clipped %d of %d LUFS value(s) to [%g, %g] (the model's range; %g = silence)",
                       outside, v.numel(), LUFS_FLOOR, LUFS_CEIL, LUFS_FLOOR)
    return v.clamp(LUFS_FLOOR, LUFS_CEIL).clone()


def _per_channel(level: Level, n: int, what: str) -> np.ndarray:
    if np.ndim(level) == 0:
        return np.full(n, _finite(what, level))
    if len(lv := list(level)) != n:
        raise ValueError(f"{what}: expected one value or {n} (one per channel), got {len(lv)}")
    return np.array([_finite(what, x) for x in lv])
