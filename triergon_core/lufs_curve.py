"""`LufsCurve`: a per-channel loudness curve over time (DESIGN.md, "Signal conventions": LUFS curve).

A curve holds `values [channels, frames]` in LUFS at `rate` frames per second (6 by default); frame i
covers [i / rate, (i + 1) / rate). It is a value object: every edit returns a new curve. It converts to
the model's normalised [0, 1] scale and to the E_L conditioning tokens, and reads and writes JSON and CSV.
The edits live in `lufs_edit`, the inversion of E_L in `lufs_embedding`, the text formats in `lufs_io`, and
plotting in `lufs_plot` (re-exported here as `plot_curves`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._fs import atomic_write_path
from ._lufs_checks import Level, check_rate, duration_frames, finite, per_channel
from .conditioning import LUFS_CEIL, LUFS_FLOOR, lufs_embedding, normalize_lufs
from .config import LUFS_RATE, SAMPLE_RATE, frames_for
from .loudness import momentary_lufs
from .lufs_edit import FIT_POLICIES, CurveEdits
from .lufs_embedding import invert_lufs_embedding
from .lufs_io import format_csv, parse_csv, parse_json
from .lufs_plot import plot_curves

logger = logging.getLogger(__name__)

__all__ = ["CHANNEL_LAYOUTS", "FIT_POLICIES", "LufsCurve", "frames_for", "plot_curves"]

INTERPOLATIONS = ("linear", "step", "smooth")
# The channel names a curve may carry, in the order it stores them: rows are matched to channels by name,
# never by position, so a file that lists R before L still drives the right side with its R row.
CHANNEL_LAYOUTS = (("L", "R"), ("M",))


class LufsCurve(CurveEdits):
    """Loudness over time, per channel, in LUFS.

    Validation policy (constructor and every `from_*` reader):
    - NaN or inf -> ValueError with the count and the first offending channel and frame;
    - values outside [-70, 0] LUFS (the model's range; -70 = silence) -> clipped, with one warning that
      says how many values were clipped;
    - `values` not 2-D, a channel count different from `len(channels)`, no frames, duplicate channel names,
      names other than L and R (stereo) or M (mono), or a rate that is not a positive finite number ->
      ValueError. Stereo-only operations (`to_normalized`, `to_embedding`, `pan`, `swap_channels`) call
      `require_stereo()`.

    Rows are matched to channels by name: `channels=("R", "L")` takes the first row as the right channel, and
    the curve stores (and writes) L before R. The edits (see `lufs_edit`) clip their results to [-70, 0]
    silently; times are in seconds, a range [start, end) selects every frame it overlaps, and `channels`
    selects one channel name, several, or all (None).

    Args:
        values: [channels, frames] loudness in LUFS (anything `torch.as_tensor` takes; stored as float32).
        rate: frames per second.
        channels: channel names, one per row of `values`: "L" and "R" in either order, or "M".
    """

    __hash__ = None  # type: ignore[assignment]  # equality compares tensors; curves are not dict keys

    def __init__(self, values: Any, *, rate: float = LUFS_RATE, channels: Sequence[str] = ("L", "R")) -> None:
        names = _check_channels(channels)
        values = _check_values(values, names)
        self._rate, self._channels = check_rate(rate), _layout(names)
        self._values = values[[names.index(c) for c in self._channels]] if names != self._channels else values

    def _with(self, values: torch.Tensor, *, rate: float | None = None) -> LufsCurve:
        # Clipping first keeps the constructor's out-of-range warning for user input only.
        return LufsCurve(values.clamp(LUFS_FLOOR, LUFS_CEIL), rate=self._rate if rate is None else rate,
                         channels=self._channels)

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
        rate, channels = check_rate(rate), _check_channels(channels)
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"unknown interpolation {interpolation!r}; use one of {INTERPOLATIONS}")
        if len(times) == 0 or len(times) != len(levels):
            raise ValueError(f"need one level per keyframe and at least one keyframe: "
                             f"{len(times)} times, {len(levels)} levels")
        # Frame coordinates, rounded like `frames_for` so a keyframe at 1/3 s lands exactly on frame 2.
        pos = np.array([round(finite("keyframe time", t) * rate, 6) for t in times])
        if np.any(np.diff(pos) <= 0):
            raise ValueError(f"keyframe times must be strictly increasing, got {list(times)}")
        lv = np.stack([per_channel(level, len(channels), f"level of keyframe {k}") for k, level in enumerate(levels)])
        x = np.arange(duration_frames(duration, rate), dtype=np.float64)
        k = np.clip(np.searchsorted(pos, x, side="right") - 1, 0, len(pos) - 1)  # keyframe at or before x
        k1 = np.minimum(k + 1, len(pos) - 1)
        u = np.clip((x - pos[k]) / np.where(k1 > k, pos[k1] - pos[k], 1.0), 0.0, 1.0)[:, None]
        u = {"linear": u, "step": 0 * u, "smooth": u * u * (3 - 2 * u)}[interpolation]
        return cls(torch.from_numpy((lv[k] + (lv[k1] - lv[k]) * u).T.copy()), rate=rate, channels=channels)

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
        norm = invert_lufs_embedding(embedding, frames=frames, max_frames=max_frames, tokens=tokens, dim=dim,
                                     method=method)
        return cls(norm * (LUFS_CEIL - LUFS_FLOOR) + LUFS_FLOOR, rate=rate)

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
        """Parses `to_csv`'s format. Times must start at 0 and step by 1 / rate, as closely as their rounding
        allows: half a unit in the last decimal written (0.005 s for "0.17"), or 1% of a frame if that is more.

        Unless `rate` is given it is inferred from the times: 6/s if every row fits it (so times rounded in a
        spreadsheet still give 6/s), else the simplest rate that fits (a whole number, else the fewest
        decimals); a one-row file is read at 6/s. Columns are matched to channels by their header names.

        Args:
            text: the CSV text.
            rate: frames per second, when known (the times are checked against it).
            source: what errors call the text (they are ValueErrors starting with it, e.g. a file name).
        """
        with _reading(source):
            values, rate, channels = parse_csv(text, rate=rate, check_rate=check_rate)
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
            return cls.from_json(_read_text(path), source=str(path))
        return cls.from_csv(_read_text(path), rate=rate, source=str(path))


# ------------------------------------------------------------------------------------------------ helpers


@contextmanager
def _reading(source: str) -> Iterator[None]:
    """Prefixes any ValueError raised inside with the text's source (the file being read)."""
    try:
        yield
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e


def _read_text(path: Path) -> str:
    """The file's text; anything but a missing file that cannot be read as UTF-8 text is a ValueError naming it."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise ValueError(f"{path}: cannot read the LUFS curve ({e.strerror or e})") from e
    try:
        return data.decode("utf-8-sig")  # -sig: a byte-order mark (Windows editors) is not part of the text
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a LUFS curve: byte {e.start} ({data[e.start]:#04x}) is not UTF-8 text; "
                         "give a .json or .csv curve as `triergon lufs measure -o` writes") from e


def _format(path: Path) -> str:
    if (suffix := path.suffix.lower()) not in (".json", ".csv"):
        raise ValueError(f"{path}: unknown LUFS curve format; use a .json or .csv file")
    return suffix


def _check_channels(channels: Sequence[str]) -> tuple[str, ...]:
    names = (channels,) if isinstance(channels, str) else tuple(channels)
    if not names or not all(isinstance(c, str) and c for c in names) or len(set(names)) != len(names):
        raise ValueError(f"channels must be distinct non-empty names, got {channels!r}")
    return names


def _layout(names: tuple[str, ...]) -> tuple[str, ...]:
    """The layout of CHANNEL_LAYOUTS with these names (in any order); other names are an error."""
    for layout in CHANNEL_LAYOUTS:
        if sorted(names) == sorted(layout):
            return layout
    raise ValueError(f"unknown channel names {list(names)}: name the channels "
                     f"{' and '.join(CHANNEL_LAYOUTS[0])} (stereo, in either order) or {CHANNEL_LAYOUTS[1][0]} (mono)")


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
