"""Curve files as users write them: channel names matched by name, rounded CSV times, a byte-order mark, and
files that are not curves at all (one-line errors naming the file and, on the command line, the option)."""

from __future__ import annotations

import json

import pytest
import torch

from triergon.triergon_core.cli import main
from triergon.triergon_core.lufs_curve import LufsCurve


def _json(channels: list[str], rows: list[list[float]]) -> str:
    return json.dumps({"rate": 6, "channels": channels, "values": rows})


# ------------------------------------------------------------------------------------------ channel names


def test_rows_are_matched_to_channels_by_name(tmp_path):
    quiet_left = [[-10.0, -12.0], [-40.0, -42.0]]  # the R row first
    reordered = LufsCurve.from_json(_json(["R", "L"], quiet_left))
    assert reordered.channels == ("L", "R")
    assert reordered.values.tolist() == [[-40.0, -42.0], [-10.0, -12.0]]
    assert torch.equal(reordered.to_normalized()[0], (torch.tensor([-40.0, -42.0]) + 70) / 70)  # left drives left
    assert reordered == LufsCurve(torch.tensor(quiet_left), channels=("R", "L"))
    assert reordered.offset(5.0, channels="R").values[1].tolist() == [-5.0, -7.0]
    assert reordered.pan(-1.0).values[1].tolist() == [-34.0, -36.0]  # panned left: R attenuated
    # CSV columns are matched by name too, and the file is written back L first.
    from_csv = LufsCurve.from_csv("time,R,L\n0,-10,-40\n0.166666667,-12,-42\n")
    assert from_csv == reordered and from_csv.to_csv().startswith("time,L,R\n0.0,-40.0,-10.0\n")
    keyframed = LufsCurve.from_keyframes([0.0], [[-10.0, -40.0]], duration=1.0, channels=("R", "L"))
    assert keyframed.values[:, 0].tolist() == [-40.0, -10.0]


@pytest.mark.parametrize("channels", [["left", "right"], ["l", "r"], ["L", "C"], ["L"], ["R"], ["mono"]])
def test_unknown_channel_names_are_refused(tmp_path, channels):
    path = tmp_path / "names.json"
    path.write_text(_json(channels, [[-20.0]] * len(channels)))
    with pytest.raises(ValueError, match=rf"^{path}: unknown channel names \[.*\]: name the channels "
                                         r"L and R \(stereo, in either order\) or M \(mono\)$"):
        LufsCurve.load(path)


# ---------------------------------------------------------------------------------------- rounded CSV times


@pytest.mark.parametrize("decimals", [1, 2, 3, 4])
def test_csv_times_rounded_like_a_spreadsheet_are_accepted(decimals):
    for frames in (2, 7, 12, 60, 361):  # ends between frames (1.83 s) and on whole seconds
        values = [-20.0 - (i % 7) for i in range(frames)]
        lines = [f"{round(i / 6, decimals):.{decimals}f},{v},{v - 3}" for i, v in enumerate(values)]
        c = LufsCurve.from_csv("time,L,R\n" + "\n".join(lines) + "\n")
        assert c.rate == 6.0 and c.values[0].tolist() == values, (decimals, frames)
    # Other rates too, and a given rate is checked with the same tolerance.
    tens = "time,L,R\n" + "".join(f"{i / 7.5:.2f},-20,-20\n" for i in range(40))
    assert LufsCurve.from_csv(tens).rate == 7.5 and LufsCurve.from_csv(tens, rate=7.5).num_frames == 40


def test_csv_tolerance_follows_the_rounding():
    # Two decimals: a time may be 0.005 s (0.03 frames) off; 0.02 s is a wrong time, not rounding.
    good = "time,L,R\n0.00,-1,-1\n0.17,-1,-1\n0.33,-1,-1\n0.50,-1,-1\n"
    assert LufsCurve.from_csv(good).num_frames == 4
    with pytest.raises(ValueError, match=r"uniform at 6 frames/s; line 3 has 0.19 s, expected 0.166667 s"):
        LufsCurve.from_csv(good.replace("0.17", "0.19"))
    # Nine decimals (as `to_csv` writes): a 0.1% slip is within 1% of a frame and still read.
    assert LufsCurve.from_csv("time,L,R\n0.0,-1,-1\n0.166833333,-1,-1\n0.333333333,-1,-1\n").rate == 6.0
    # Times too coarse to tell 6 frames/s apart.
    with pytest.raises(ValueError, match=r"times written with 0 decimals cannot tell frames 0.166667 s apart"):
        LufsCurve.from_csv("time,L,R\n0,-1,-1\n0,-1,-1\n0,-1,-1\n", rate=6.0)


# ---------------------------------------------------------------------------------- encodings and garbage


@pytest.mark.parametrize("name, text", [
    ("bom.json", _json(["L", "R"], [[-20.0, -21.0], [-22.0, -23.0]])),
    ("bom.csv", "time,L,R\n0,-20,-22\n0.166666667,-21,-23\n"),
])
def test_a_byte_order_mark_is_accepted(tmp_path, name, text):
    path = tmp_path / name
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert LufsCurve.load(path).values.tolist() == [[-20.0, -21.0], [-22.0, -23.0]]
    assert LufsCurve.load(path) == (LufsCurve.from_json if name.endswith("json") else LufsCurve.from_csv)(
        "\ufeff" + text)


def test_a_file_that_is_not_a_curve_is_a_one_line_error(tmp_path, caplog):
    garbage = tmp_path / "curve.json"
    garbage.write_bytes(bytes(range(128, 256)) * 4)  # e.g. a PNG renamed
    with pytest.raises(ValueError, match=rf"^{garbage}: not a LUFS curve: byte 0 \(0x80\) is not UTF-8 text"):
        LufsCurve.load(garbage)
    folder = tmp_path / "dir.csv"
    folder.mkdir()
    with pytest.raises(ValueError, match=rf"^{folder}: cannot read the LUFS curve"):
        LufsCurve.load(folder)
    wav = tmp_path / "out.wav"
    for args in (["generate", "--seconds", "1", "--lufs", str(garbage), "-q", "-o", str(wav)],
                 ["lufs", "edit", str(garbage), "--offset", "1"],
                 ["lufs", "plot", str(garbage), "-o", str(tmp_path / "p.png")]):
        caplog.clear()
        assert main(args) == 2, args
        message = caplog.records[-1].getMessage()
        assert str(garbage) in message and "codec can't decode" not in message and "\n" not in message
    assert not wav.exists()
    main(["generate", "--seconds", "1", "--lufs", str(garbage), "-q", "-o", str(wav)])
    assert caplog.records[-1].getMessage().startswith(f"--lufs {garbage}: not a LUFS curve")
