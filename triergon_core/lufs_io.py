"""Reading and writing loudness curves as text: the JSON and CSV formats of `LufsCurve`.

Parsers return plain (values [channels, frames] float64 tensor, rate, channel names) and raise ValueErrors
that say what is wrong; `LufsCurve` validates the values and prefixes errors with the file name.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from .config import LUFS_RATE

logger = logging.getLogger(__name__)

KEYS = ("rate", "channels", "values")
BOM = "\ufeff"  # Windows editors start UTF-8 files with it; it is not part of the text
_FRAME_TOLERANCE = 0.01  # frames: a time may be 1% of a frame off even with many decimals
_EXACT_DECIMALS = 15  # what a time in exponent form ("1e-05") counts as: a float's precision


def parse_json(text: str, *, source: str) -> tuple[torch.Tensor, float, list[str]]:
    """`{"rate": 6.0, "channels": ["L", "R"], "values": [[...], [...]]}` -> (values, rate, channels)."""
    try:
        data = json.loads(text.removeprefix(BOM))
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object with rate, channels and values")
    if missing := [k for k in KEYS if k not in data]:
        raise ValueError(f"missing key(s) {missing}")
    if extra := sorted(set(data) - set(KEYS)):
        logger.warning("%s: ignoring unknown key(s) %s", source, extra)
    rate, channels, values = data["rate"], data["channels"], data["values"]
    if isinstance(rate, bool) or not isinstance(rate, (int, float)):
        raise ValueError(f"rate must be a number, got {rate!r}")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise ValueError(f"channels must be a list of names, got {channels!r}")
    if not isinstance(values, list) or not values or not all(isinstance(row, list) for row in values):
        raise ValueError("values must be a list with one list of numbers per channel")
    if len({len(row) for row in values}) > 1:
        raise ValueError(f"ragged values: channel lengths {[len(row) for row in values]}")
    for c, row in enumerate(values):
        for i, x in enumerate(row):
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise ValueError(f"values[{c}][{i}] is not a number: {x!r}")
    return torch.tensor(values, dtype=torch.float64).reshape(len(values), -1), rate, channels


def format_csv(times: Sequence[float], rows: Sequence[Sequence[float]], channels: Sequence[str]) -> str:
    """A header `time,<channels>`, then one line per frame: its start time (9 decimals) and its values."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["time", *channels])
    for t, frame in zip(times, zip(*rows, strict=True), strict=True):
        writer.writerow([repr(round(t, 9)), *map(repr, frame)])
    return out.getvalue()


def parse_csv(text: str, *, rate: float | None, check_rate: Callable[[float], float],
              ) -> tuple[torch.Tensor, float, list[str]]:
    """`format_csv`'s text -> (values, rate, channels); the rate is inferred from the times unless given.

    Times may be rounded (a spreadsheet showing 2 decimals): a row fits frame i when its time is within the
    rounding of i / rate, half a unit in the last decimal the file writes, or 1% of a frame if that is more.
    The inferred rate is 6/s if that fits every row, else the simplest that does: a whole number, else 1, 2, ...
    6 decimals.
    """
    rows = [(n, r) for n, r in enumerate(csv.reader(io.StringIO(text.removeprefix(BOM))), 1)
            if any(c.strip() for c in r)]
    if not rows:
        raise ValueError("empty file; expected a header `time,L,R` and one row per frame")
    header = [cell.strip() for cell in rows[0][1]]
    if len(header) < 2 or header[0] != "time":
        raise ValueError(f"header must be `time` followed by channel names, got {header}")
    table = []
    for line, r in rows[1:]:
        if len(r) != len(header):
            raise ValueError(f"line {line} has {len(r)} cells, the header has {len(header)}")
        try:
            table.append([float(cell) for cell in r])
        except ValueError as e:
            raise ValueError(f"line {line}: non-numeric cell ({e})") from e
    if not table:
        raise ValueError("no frames after the header")
    data = np.array(table)
    times = data[:, 0]
    half_unit = 0.5 * 10.0 ** -max(_decimals(r[0]) for _, r in rows[1:])  # seconds

    def misfits(r: float) -> np.ndarray:  # rows off their frame by more than the rounding (NaN times too)
        tolerance = max(_FRAME_TOLERANCE, half_unit * r) + 1e-9  # frames; 1e-9: float error in t * r
        return np.flatnonzero(~(np.abs(times * r - np.arange(len(times))) <= tolerance))

    if rate is None:
        exact = (len(times) - 1) / times[-1] if len(times) > 1 and times[-1] > 0 else LUFS_RATE
        candidates = [LUFS_RATE] + [round(exact, d) for d in range(7) if round(exact, d) > 0]
        # The project's rate if it fits (a short coarse file fits several), else the simplest rate that fits;
        # when none does, the one that fits most rows names the bad row.
        rate = next((r for r in candidates if not misfits(r).size),
                    min(candidates, key=lambda r: misfits(r).size, default=exact))
    rate = check_rate(rate)
    if len(times) > 1 and half_unit * rate > 0.5:
        raise ValueError(f"times written with {-round(math.log10(2 * half_unit))} decimals cannot tell frames "
                         f"{1 / rate:g} s apart; write the times with more decimals")
    if (bad := misfits(rate)).size:
        raise ValueError(f"times must start at 0 and be uniform at {rate:g} frames/s; line "
                         f"{rows[1 + bad[0]][0]} has {times[bad[0]]:g} s, expected {bad[0] / rate:g} s")
    return torch.from_numpy(data[:, 1:].T.copy()), rate, header[1:]


def _decimals(cell: str) -> int:
    """Digits after the decimal point as written ("0.17" -> 2, "1" -> 0); exponent forms count as exact."""
    mantissa, _, exponent = cell.strip().lower().partition("e")
    if exponent:
        return _EXACT_DECIMALS
    return len(mantissa.partition(".")[2])
