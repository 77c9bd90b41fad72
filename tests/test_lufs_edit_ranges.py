"""Every `LufsCurve` edit and `triergon lufs edit` option honours the --start/--end range and --channels,
or refuses a combination that has no meaning (fade, smooth, swap, pan and copy used to edit the whole curve)."""

from __future__ import annotations

import re

import pytest
import torch

from triergon.triergon_core.cli import main
from triergon.triergon_core.lufs_curve import LufsCurve


def ramp() -> LufsCurve:
    """3 s at 6 frames/s: L climbs -60 .. -26 LUFS in 2 dB steps, R holds -30."""
    left = -60.0 + 2.0 * torch.arange(18.0)
    return LufsCurve(torch.stack([left, torch.full((18,), -30.0)]))


def changed(before: LufsCurve, after: LufsCurve) -> list[list[int]]:
    """Per channel, the frames whose value changed."""
    diff = (before.values != after.values).tolist()
    return [[i for i, d in enumerate(row) if d] for row in diff]


def test_fades_open_and_close_the_range():
    c = LufsCurve.constant(-10.0, duration=3.0)
    faded = c.fade_in(0.5, start=1.0, end=2.0, channels="L")
    assert changed(c, faded) == [[6, 7, 8], []]  # 0.5 s = 3 frames from 1 s on, left only
    assert faded.values[0, 6:9].tolist() == [-70.0, -50.0, -30.0]
    out = c.fade_out(0.5, start=1.0, end=2.0)
    assert changed(c, out) == [[9, 10, 11]] * 2 and out.values[0, 9:12].tolist() == [-30.0, -50.0, -70.0]
    # A fade longer than the range is cut at the range's end, not squeezed.
    assert changed(c, c.fade_in(5.0, start=1.0, end=2.0)) == [list(range(6, 12))] * 2
    assert c.fade_in(0.5) == c.fade_in(0.5, start=0.0, end=None)  # the default range is the whole curve


def test_smooth_changes_only_the_range_and_uses_its_neighbours():
    step = LufsCurve(torch.tensor([[-60.0] * 9 + [-20.0] * 9] * 2))
    whole = step.smooth(0.5)
    part = step.smooth(0.5, start=1.5, end=2.0, channels="R")
    assert changed(step, part) == [[], [9]]  # frames 9..11 lie in the range; only 9 has a different neighbour
    assert part.values[1, 9] == whole.values[1, 9]  # averaged with frame 8 outside the range
    assert changed(step, step.smooth(0.5, end=1.0)) == [[], []]  # a flat stretch stays flat


def test_swap_pan_and_copy_take_a_range():
    c = ramp()
    swapped = c.swap_channels(start=0.5, end=1.0)
    assert changed(c, swapped) == [[3, 4, 5]] * 2
    assert torch.equal(swapped.values[:, 3:6], c.values.flip(0)[:, 3:6])
    panned = c.pan(-1.0, start=2.0)
    assert changed(c, panned) == [[], list(range(12, 18))]  # right attenuated by range_db from 2 s on
    copied = c.copy_channel("L", "R", end=1 / 3)
    assert changed(c, copied) == [[], [0, 1]]


def _edit(tmp_path, *options: str) -> tuple[int, LufsCurve | None]:
    src, out = tmp_path / "in.json", tmp_path / "out.json"
    ramp().save(src)
    out.unlink(missing_ok=True)
    rc = main(["lufs", "edit", str(src), *options, "-o", str(out)])
    return rc, LufsCurve.load(out) if out.exists() else None


@pytest.mark.parametrize("options, frames", [
    # A 7-frame average leaves a straight ramp alone except where the curve's end is repeated as padding;
    # over the whole curve, frames 0-2 would change too.
    (["--smooth", "1", "--start", "2", "--end", "3"], [[15, 16, 17], []]),
    (["--fade-in", "0.5", "--start", "1", "--channels", "R"], [[], [6, 7, 8]]),
    (["--fade-out", "0.5", "--end", "1", "--channels", "L"], [[3, 4, 5], []]),
    (["--swap", "--start", "0.5", "--end", "1"], [[3, 4, 5]] * 2),
    (["--pan", "0.5", "--end", "0.5"], [[0, 1, 2], []]),
    (["--copy", "L:R", "--end", "0.5"], [[], [0, 1, 2]]),
])
def test_cli_edits_honour_start_end_and_channels(tmp_path, options, frames):
    rc, edited = _edit(tmp_path, *options)
    assert rc == 0 and changed(ramp(), edited) == frames


@pytest.mark.parametrize("options, message", [
    (["--pan", "0.5", "--channels", "L"], r"--channels cannot narrow --pan: they work on both channels"),
    (["--swap", "--copy", "L:R", "--channels", "R"], r"--channels cannot narrow --swap, --copy"),
    (["--resample", "4", "--start", "1"], r"--start, --end and --channels select what .* change"),
    (["--channels", "L"], r"give one of them"),
    (["--copy", "LR"], r"--copy takes SRC:DST, e.g. L:R"),
])
def test_cli_refuses_combinations_without_a_meaning(tmp_path, caplog, options, message):
    rc, edited = _edit(tmp_path, *options)
    assert rc == 2 and edited is None
    assert re.search(message, caplog.records[-1].getMessage()), caplog.records[-1].getMessage()


@pytest.mark.parametrize(("line", "call"), [
    ("fade_in 0.5 start=1 end=3 channels=L", lambda c: c.fade_in(0.5, start=1, end=3, channels="L")),
    ("fade_out 1 floor=-60 end=4", lambda c: c.fade_out(1, floor=-60, end=4)),
    ("smooth 0.5 start=1 end=3 channels=R", lambda c: c.smooth(0.5, start=1, end=3, channels="R")),
    ("swap start=2", lambda c: c.swap_channels(start=2)),
    ("copy L R start=1 end=2", lambda c: c.copy_channel("L", "R", start=1, end=2)),
])
def test_text_edits_take_the_ranges_the_methods_take(line, call):
    """The node pack's edit text reaches every range the CLI and the methods have (it used to refuse them)."""
    from triergon.triergon_core.lufs_edit_text import apply_edits, parse_edits

    g = torch.Generator().manual_seed(0)
    curve = LufsCurve(-40 + 30 * torch.rand(2, 36, generator=g))
    edited = apply_edits(curve, parse_edits(line))
    assert torch.equal(edited.values, call(curve).values)
    assert not torch.equal(edited.values, curve.values)
