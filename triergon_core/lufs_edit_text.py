"""A small text format for LUFS curve edits: one edit per line, applied in order through `LufsCurve`'s methods.

    offset -6 start=2 end=4 channels=L     # 6 dB quieter from 2 s to 4 s on the left
    set_level -20 start=0 end=1
    pan -0.5 start=3                      # towards the left from 3 s on
    fade_in 0.5
    fade_out 1 floor=-60 end=8            # the last second before 8 s
    smooth 0.5 start=1 end=3 channels=R
    swap start=4                          # every edit but clamp and resample takes start= / end=
    copy L R                              # or: copy L:R
    clamp -40 -10                         # or: clamp lo=-40 hi=-10
    resample 8

An operation name (`set-level` and `set_level` are the same), then its positional values, then `key=value`
options; `#` starts a comment; blank lines are skipped; `channels=` takes `L`, `R` or `L,R`. Parsing checks names,
numbers and options and raises a ValueError naming the line, so a mistake is reported before any work runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .lufs_curve import LufsCurve

__all__ = ["OPERATIONS", "CurveEdit", "apply_edits", "edit_curve", "parse_edits", "widget_edits"]


@dataclass(frozen=True)
class _Spec:
    method: str
    positional: tuple[str, ...]  # names of the positional values, all numbers unless listed in `names`
    options: tuple[str, ...] = ()  # allowed key=value options
    names: tuple[str, ...] = ()  # positional values that are channel names, not numbers


_SPAN = ("start", "end")
OPERATIONS: dict[str, _Spec] = {
    "offset": _Spec("offset", ("db",), (*_SPAN, "channels")),
    "set_level": _Spec("set_level", ("level",), (*_SPAN, "channels")),
    "pan": _Spec("pan", ("amount",), (*_SPAN, "range_db")),
    "fade_in": _Spec("fade_in", ("seconds",), ("floor", *_SPAN, "channels")),
    "fade_out": _Spec("fade_out", ("seconds",), ("floor", *_SPAN, "channels")),
    "smooth": _Spec("smooth", ("seconds",), (*_SPAN, "channels")),
    "swap": _Spec("swap_channels", (), _SPAN),
    "copy": _Spec("copy_channel", ("src", "dst"), _SPAN, names=("src", "dst")),
    "clamp": _Spec("clamp", ("lo", "hi"), ("lo", "hi")),
    "resample": _Spec("resample", ("duration",)),
}
_ALIASES = {"set-level": "set_level", "fade-in": "fade_in", "fade-out": "fade_out", "swap_channels": "swap",
            "copy_channel": "copy"}


@dataclass(frozen=True)
class CurveEdit:
    """One parsed edit: the operation's name, its arguments by name, and the line it came from (1-based)."""

    op: str
    args: dict[str, object] = field(default_factory=dict)
    line: int = 0

    def apply(self, curve: LufsCurve) -> LufsCurve:
        spec = OPERATIONS[self.op]
        kwargs = dict(self.args)
        if self.op == "set_level":  # its start/end are keyword-only without defaults
            kwargs.setdefault("start", None)
            kwargs.setdefault("end", None)
        return getattr(curve, spec.method)(**kwargs)

    def __str__(self) -> str:
        return " ".join([self.op, *(f"{k}={v}" for k, v in self.args.items())])


def parse_edits(text: str) -> list[CurveEdit]:
    """Parse edit lines (see the module doc) into `CurveEdit`s; a ValueError names the first bad line.

    Args:
        text: the edits, one per line.
    """
    edits = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line:
            try:
                edits.append(_parse_line(line, number))
            except ValueError as e:
                raise ValueError(f"LUFS edit line {number} ({raw.strip()!r}): {e}") from None
    return edits


def _parse_line(line: str, number: int) -> CurveEdit:
    words = line.split()
    op = _ALIASES.get(words[0].lower(), words[0].lower())
    if op not in OPERATIONS:
        raise ValueError(f"unknown edit {words[0]!r}; use one of {', '.join(OPERATIONS)}")
    spec = OPERATIONS[op]
    values = [w for w in words[1:] if "=" not in w]
    options = [w for w in words[1:] if "=" in w]
    if op == "copy" and len(values) == 1 and ":" in values[0]:
        values = values[0].split(":", 1)
    args: dict[str, object] = {}
    if len(values) > len(spec.positional):
        want = " ".join(f"<{n}>" for n in spec.positional) or "no values"
        raise ValueError(f"{op} takes {want}, got {len(values)} value(s)")
    for name, value in zip(spec.positional, values, strict=False):
        args[name] = _channel(value) if name in spec.names else _number(name, value)
    for option in options:
        key, _, value = option.partition("=")
        key = key.strip().lower()
        if key not in spec.options:
            allowed = ", ".join(f"{k}=" for k in spec.options) or "no options"
            raise ValueError(f"{op} does not take {key}= (it takes {allowed})")
        if key in args:
            raise ValueError(f"{key} is given twice")
        args[key] = _channels(value) if key == "channels" else _number(key, value)
    if missing := [n for n in spec.positional if n not in args]:
        raise ValueError(f"{op} needs {', '.join(missing)}")
    return CurveEdit(op, args, number)


def _number(name: str, value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(x):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return x


def _channel(value: str) -> str:
    name = value.strip().upper()
    if name not in ("L", "R"):
        raise ValueError(f"channel {value!r} is not L or R")
    return name


def _channels(value: str) -> str | tuple[str, ...]:
    names = tuple(_channel(v) for v in value.split(",") if v.strip())
    if not names:
        raise ValueError("channels= needs L, R or L,R")
    return names[0] if len(names) == 1 else names


def apply_edits(curve: LufsCurve, edits: Sequence[CurveEdit]) -> LufsCurve:
    """Apply `edits` in order; an edit the curve refuses (e.g. pan 2) raises a ValueError naming its line."""
    for edit in edits:
        try:
            curve = edit.apply(curve)
        except ValueError as e:
            where = f"line {edit.line} " if edit.line else ""
            raise ValueError(f"LUFS edit {where}({edit}): {e}") from None
    return curve


def edit_curve(curve: LufsCurve, text: str) -> LufsCurve:
    """`apply_edits(curve, parse_edits(text))`: the curve with the text's edits applied in order."""
    return apply_edits(curve, parse_edits(text))


def widget_edits(*, offset_db: float = 0.0, start: float = 0.0, end: float = 0.0, channels: str = "both",
                 pan: float = 0.0, smooth: float = 0.0, fade_in: float = 0.0, fade_out: float = 0.0,
                 ) -> list[CurveEdit]:
    """The edits of simple settings (a GUI's widgets); zero values are left out, in the CLI's order.

    Args:
        offset_db: decibels added over [start, end) on `channels`.
        start, end: the edited range in seconds; end 0 means the curve's end.
        channels: "both", "L" or "R" (for the offset and the fades).
        pan: -1 (all left) .. 1 (all right) over [start, end).
        smooth: moving-average window in seconds.
        fade_in, fade_out: fade lengths in seconds.
    """
    span = {"start": start or None, "end": end or None}
    chans = {} if channels == "both" else {"channels": _channel(channels)}
    edits = []
    if offset_db:
        edits.append(CurveEdit("offset", {"db": offset_db, **span, **chans}))
    if pan:
        edits.append(CurveEdit("pan", {"amount": pan, **span}))
    if smooth:
        edits.append(CurveEdit("smooth", {"seconds": smooth}))
    if fade_in:
        edits.append(CurveEdit("fade_in", {"seconds": fade_in, **chans}))
    if fade_out:
        edits.append(CurveEdit("fade_out", {"seconds": fade_out, **chans}))
    return edits
