"""The editing operations of `LufsCurve` (a mixin: `LufsCurve` is the value object that holds the data).

Every edit returns a new curve, clipped to [-70, 0] LUFS silently (pushing past the range is normal while
editing, and the model cannot represent more). Times are in seconds; a range [start, end) selects every frame
it overlaps, clipped to the curve (None = the curve's start / end), and `channels` selects one channel name,
several, or all (None). Operations that work across both channels (`pan`, `swap_channels`, `copy_channel`)
take a range but no channel selection.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from ._lufs_checks import check_rate, duration_frames, finite
from .conditioning import LUFS_CEIL, LUFS_FLOOR
from .config import frames_for

if TYPE_CHECKING:
    from .lufs_curve import LufsCurve

FIT_POLICIES = ("error", "resample", "pad", "trim", "pad_or_trim")
ChannelSel = str | Iterable[str] | None


class CurveEdits:
    """Editing operations; the class using it provides `_values`, `_rate`, `_channels` and `_with`."""

    _values: torch.Tensor
    _rate: float
    _channels: tuple[str, ...]

    def offset(self, db: float, *, start: float | None = None, end: float | None = None,
               channels: ChannelSel = None) -> LufsCurve:
        """Adds `db` decibels (negative = quieter) over [start, end) on the selected channels.

        Args:
            db: decibels to add.
            start, end, channels: the range and channels to change (see the module docstring).
        """
        v, (i0, i1), rows = self._values.clone(), self._span(start, end), self._rows(channels)
        v[rows, i0:i1] += finite("db", db)
        return self._with(v)

    def set_level(self, level: float, *, start: float | None, end: float | None,
                  channels: ChannelSel = None) -> LufsCurve:
        """Sets [start, end) to a constant `level` (pass start=None, end=None for the whole curve).

        Args:
            level: LUFS.
            start, end, channels: the range and channels to change (see the module docstring).
        """
        v, (i0, i1), rows = self._values.clone(), self._span(start, end), self._rows(channels)
        v[rows, i0:i1] = finite("level", level)
        return self._with(v)

    def fade_in(self, seconds: float, *, floor: float = LUFS_FLOOR, start: float | None = None,
                end: float | None = None, channels: ChannelSel = None) -> LufsCurve:
        """Ramps the first `seconds` of [start, end) up from `floor` onto the curve's own values, linearly in dB.

        With n = ceil(seconds * rate), the range's frame i < n becomes floor + (i / n) * (value - floor), so its
        first frame is at `floor`; frames before the range are left alone. A fade never makes a frame louder,
        and one longer than the range is cut at the range's end, not squeezed.

        Args:
            seconds: fade length.
            floor: LUFS where the fade starts (-70 = silence).
            start, end, channels: the range the fade opens and the channels to fade (default: the whole curve).
        """
        return self._fade(seconds, floor, start, end, channels, reverse=False)

    def fade_out(self, seconds: float, *, floor: float = LUFS_FLOOR, start: float | None = None,
                 end: float | None = None, channels: ChannelSel = None) -> LufsCurve:
        """Ramps the last `seconds` of [start, end) down to `floor`, linearly in dB: the mirror image of `fade_in`.

        Args:
            seconds: fade length.
            floor: LUFS of the range's last frame (-70 = silence).
            start, end, channels: the range the fade closes and the channels to fade (default: the whole curve).
        """
        return self._fade(seconds, floor, start, end, channels, reverse=True)

    def _fade(self, seconds: float, floor: float, start: float | None, end: float | None, channels: ChannelSel,
              *, reverse: bool) -> LufsCurve:
        if finite("fade length", seconds) < 0:
            raise ValueError(f"fade length must be >= 0 seconds, got {seconds}")
        (i0, i1), rows, floor = self._span(start, end), self._rows(channels), finite("floor", floor)
        n = frames_for(seconds, self._rate)
        m = min(n, i1 - i0)
        if m == 0:
            return self
        w = torch.arange(m, dtype=torch.float32) / n  # 0 at the faded end
        frames = slice(i1 - m, i1) if reverse else slice(i0, i0 + m)
        w = w.flip(0) if reverse else w
        v = self._values.clone()
        v[rows, frames] = torch.minimum(v[rows, frames], floor + w * (v[rows, frames] - floor))
        return self._with(v)

    def copy_channel(self, src: str, dst: str, *, start: float | None = None, end: float | None = None) -> LufsCurve:
        """Copies channel `src`'s values onto channel `dst` over [start, end) ("L" -> "R" makes a centred curve).

        Args:
            src: source channel name.
            dst: destination channel name.
            start, end: the range to copy (default: the whole curve).
        """
        if not isinstance(src, str) or not isinstance(dst, str):
            raise ValueError(f"copy_channel takes two channel names, got {src!r}, {dst!r}")
        v, (i0, i1) = self._values.clone(), self._span(start, end)
        v[self._rows(dst), i0:i1] = v[self._rows(src), i0:i1]
        return self._with(v)

    def swap_channels(self, *, start: float | None = None, end: float | None = None) -> LufsCurve:
        """Swaps the left and right values over [start, end) (mirrors the stereo picture).

        Args:
            start, end: the range to mirror (default: the whole curve).
        """
        v, (i0, i1) = self.require_stereo()._values.clone(), self._span(start, end)
        v[:, i0:i1] = v[:, i0:i1].flip(0)
        return self._with(v)

    def pan(self, amount: float, *, start: float | None = None, end: float | None = None,
            range_db: float = 24.0) -> LufsCurve:
        """Moves loudness towards one side over [start, end) by attenuating the other side.

        Pan law: the side panned away from drops by the level difference of the equal-power (sin/cos) pan
        law, 20 * log10(1 / tan(pi / 4 * (1 - |amount|))) dB, capped at `range_db`; the side panned towards
        keeps its level, so 0 changes nothing. |amount| 0.25 -> 3.5 dB, 0.5 -> 7.66 dB, 0.75 -> 14.0 dB,
        0.9 -> 22.1 dB, 1 -> `range_db`.

        Args:
            amount: in [-1, 1]; negative = towards the left (right gets quieter), positive = to the right.
            start, end: the range to pan (see the module docstring).
            range_db: the most the far side is attenuated.
        """
        amount, range_db = finite("pan amount", amount), finite("range_db", range_db)
        if not -1.0 <= amount <= 1.0:
            raise ValueError(f"pan amount must be in [-1, 1] (-1 = left, 1 = right), got {amount}")
        if range_db < 0:
            raise ValueError(f"range_db must be >= 0, got {range_db}")
        ratio = math.tan(math.pi / 4 * (1 - abs(amount)))
        drop = range_db if ratio == 0 else min(range_db, -20 * math.log10(ratio))
        v, (i0, i1) = self.require_stereo()._values.clone(), self._span(start, end)
        v[self._rows("R" if amount < 0 else "L"), i0:i1] -= drop
        return self._with(v)

    def smooth(self, seconds: float, *, start: float | None = None, end: float | None = None,
               channels: ChannelSel = None) -> LufsCurve:
        """Centred moving average over `seconds`, rounded to an odd number of frames (one or less: no change).

        The curve's edges repeat the first / last value, so a constant stays constant and the ends do not
        droop. Over a range, the frames inside it are averaged with their neighbours outside it (so the range
        joins the rest of the curve), and the frames outside it keep their values.

        Args:
            seconds: window length.
            start, end, channels: the range and channels to smooth (default: the whole curve).
        """
        if finite("smoothing window", seconds) < 0:
            raise ValueError(f"smoothing window must be >= 0 seconds, got {seconds}")
        (i0, i1), rows = self._span(start, end), self._rows(channels)
        n = max(1, round(seconds * self._rate))
        n += 1 - n % 2  # odd, so the window is centred on its frame
        if n == 1:
            return self
        padded = F.pad(self._values[None], (n // 2, n // 2), mode="replicate")
        smoothed, v = F.avg_pool1d(padded, kernel_size=n, stride=1)[0], self._values.clone()
        v[rows, i0:i1] = smoothed[rows, i0:i1]
        return self._with(v)

    def clamp(self, lo: float = LUFS_FLOOR, hi: float = LUFS_CEIL) -> LufsCurve:
        """Limits the values to [lo, hi] LUFS (e.g. hi=-10 as a ceiling).

        Args:
            lo: lowest LUFS.
            hi: highest LUFS.
        """
        if finite("lo", lo) > finite("hi", hi):
            raise ValueError(f"clamp needs lo <= hi, got lo={lo}, hi={hi}")
        return self._with(self._values.clamp(lo, hi))

    def resample(self, duration: float) -> LufsCurve:
        """Stretches or squeezes the curve linearly to `duration`; the first and last values are kept.

        Args:
            duration: seconds (frames = ceil(duration * rate)).
        """
        n = duration_frames(duration, self._rate)
        if n == self._values.shape[1]:
            return self
        return self._with(F.interpolate(self._values[None], size=n, mode="linear", align_corners=True)[0])

    def with_rate(self, rate: float) -> LufsCurve:
        """The same loudness over the same duration at another frame rate (linear in time).

        Args:
            rate: the new frames per second.
        """
        rate = check_rate(rate)
        if rate == self._rate:
            return self
        frames = self._values.shape[1]
        new_times = np.arange(duration_frames(frames / self._rate, rate)) / rate
        old_times = np.arange(frames) / self._rate
        values = np.stack([np.interp(new_times, old_times, row) for row in self._values.numpy()])
        return self._with(torch.from_numpy(values).float(), rate=rate)

    def slice(self, start: float, end: float) -> LufsCurve:
        """The frames that overlap [start, end), as a new curve starting at 0 s.

        Args:
            start, end: seconds, clipped to the curve.
        """
        i0, i1 = self._span(start, end)
        if i1 <= i0:
            raise ValueError(f"slice [{start}, {end}) s holds no frame of this "
                             f"{self._values.shape[1] / self._rate:g} s curve")
        return self._with(self._values[:, i0:i1])

    def concat(self, other: LufsCurve) -> LufsCurve:
        """This curve followed by `other` (same rate and channel names).

        Args:
            other: the curve to append.
        """
        if other.rate != self._rate or other.channels != self._channels:
            raise ValueError(f"cannot concatenate curves with different rates or channels: "
                             f"{self._rate:g}/s {self._channels} and {other.rate:g}/s {other.channels}")
        return self._with(torch.cat([self._values, other.values], dim=1))

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
        n, frames = duration_frames(seconds, self._rate), self._values.shape[1]
        if n == frames:
            return self
        longer = frames > n
        if policy == "resample":
            return self.resample(seconds)
        if policy == "pad_or_trim" or policy == ("trim" if longer else "pad"):
            held = self._values[:, -1:].expand(-1, max(n - frames, 0))
            return self._with(torch.cat([self._values[:, :n], held], dim=1))
        fix = "policy='trim' or 'resample'" if longer else "policy='pad' or 'resample'"
        raise ValueError(f"the LUFS curve covers {frames / self._rate:g} s ({frames} frames at {self._rate:g}/s) "
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
        frames = self._values.shape[1]
        s = 0.0 if start is None else finite("start", start)
        e = frames / self._rate if end is None else finite("end", end)
        if s > e:
            raise ValueError(f"start ({s:g} s) is after end ({e:g} s)")
        # Every frame that overlaps [s, e), with times rounded as in `frames_for`.
        i0 = min(max(math.floor(round(s * self._rate, 6)), 0), frames)
        return i0, i0 if s == e else min(max(frames_for(e, self._rate), i0), frames)
