"""`triergon lufs measure|edit|plot|predict` and `generate --lufs / --lufs-from`: the predict -> edit ->
generate workflow from the command line."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _videos import write_video

import triergon
from triergon.triergon_core.cli import main
from triergon.triergon_core.lufs_curve import LufsCurve


@pytest.fixture(scope="module")
def tone(tmp_path_factory):
    """2 s: a loud 1 kHz tone on the left, a quieter one on the right, silence in the last half second."""
    t = torch.arange(2 * 44100) / 44100
    wave = torch.stack([0.5 * torch.sin(2 * math.pi * 1000 * t), 0.05 * torch.sin(2 * math.pi * 1000 * t)])
    wave[:, int(1.5 * 44100):] = 0
    return triergon.write_audio(tmp_path_factory.mktemp("audio") / "tone.wav", wave, bits=32)


def test_measure_prints_the_json_format(tone, capsys):
    assert main(["lufs", "measure", str(tone), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data) == {"rate", "channels", "values"}
    assert data["rate"] == 6.0 and data["channels"] == ["L", "R"] and len(data["values"][0]) == 12
    left, right = data["values"]
    assert abs(left[3] - right[3] - 20.0) < 0.01  # 0.5 vs 0.05 amplitude: 20 dB apart
    assert left[-1] == right[-1] == -70.0  # silence
    expected = LufsCurve.measure(triergon.load_audio(tone)).values
    assert torch.allclose(torch.tensor(data["values"]), expected, atol=1e-3)


def test_measure_csv_file_and_plot(tone, tmp_path, capsys):
    out, png = tmp_path / "m.csv", tmp_path / "m.png"
    assert main(["lufs", "measure", str(tone), "-o", str(out), "--plot", str(png)]) == 0
    assert capsys.readouterr().out == ""  # with -o and no --json/--csv nothing goes to stdout
    assert out.read_text().splitlines()[0] == "time,L,R"
    assert LufsCurve.load(out).num_frames == 12
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["lufs", "measure", str(tone), "--csv"]) == 0
    assert capsys.readouterr().out.startswith("time,L,R\n0")


def test_edit_operations(tmp_path):
    src = tmp_path / "flat.json"
    LufsCurve.constant(-30.0, duration=3.0).save(src)
    out = tmp_path / "edited.json"
    assert main(["lufs", "edit", str(src), "--offset", "-10", "--start", "1", "--end", "2", "--channels", "L",
                 "--fade-in", "0.5", "-o", str(out)]) == 0
    v = LufsCurve.load(out).values
    assert v.shape == (2, 18)
    # The offset, then a 0.5 s fade-in opening the same range, on L only; R and the rest of L are untouched.
    assert v[0, 6:12].tolist() == [-70.0, -60.0, -50.0, -40.0, -40.0, -40.0]
    assert torch.equal(v[0, :6], torch.full((6,), -30.0)) and torch.equal(v[0, 12:], torch.full((6,), -30.0))
    assert torch.equal(v[1], torch.full((18,), -30.0))
    assert main(["lufs", "edit", str(out), "--swap", "--resample", "6", "-o", str(tmp_path / "s.json")]) == 0
    swapped = LufsCurve.load(tmp_path / "s.json")
    assert swapped.num_frames == 36 and torch.equal(swapped.values[0], torch.full((36,), -30.0))
    # The faded L is now R (to the file's 3 decimals).
    assert (swapped.values[1] - LufsCurve.load(out).resample(6.0).values[0]).abs().max() <= 5e-4


def test_plot_with_overlay_and_errors(tmp_path, caplog, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    LufsCurve.constant(-20.0, duration=2.0).save(a)
    LufsCurve.constant(-25.0, duration=2.0).save(b)
    assert main(["lufs", "plot", str(a), "--overlay", str(b), "-o", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").stat().st_size > 1000
    assert main(["lufs", "plot", str(tmp_path / "none.json"), "-o", str(tmp_path / "q.png")]) == 2
    assert "none.json" in caplog.text and not (tmp_path / "q.png").exists()


def test_predict_edit_generate(dinov2_dir, tlufs_weights, tmp_path, capsys):
    video = write_video(tmp_path / "clip.mp4", fps=25, num_frames=50, size=(72, 96))
    predicted, edited, wav = tmp_path / "pred.json", tmp_path / "edit.json", tmp_path / "out.wav"
    assert main(["lufs", "predict", str(video), "--dinov2", str(dinov2_dir), "--weights", str(tlufs_weights),
                 "-o", str(predicted)]) == 0
    assert LufsCurve.load(predicted).num_frames == 12
    assert main(["lufs", "edit", str(predicted), "--set-level", "-12", "--start", "0.5", "--end", "1",
                 "-o", str(edited)]) == 0
    assert main(["generate", "--seconds", "2", "--lufs", str(edited), "--steps", "4", "-q", "-o", str(wav)]) == 0
    assert triergon.load_audio(wav).shape == (2, 88200)


def test_generate_lufs_from_audio_and_fit_policy(tone, tmp_path, caplog):
    wav = tmp_path / "g.wav"
    args = ["generate", "--seconds", "1.5", "--lufs-from", str(tone), "--steps", "3", "-q", "-o", str(wav)]
    assert main(args) == 2  # the tone's curve covers 2 s
    assert "covers 2 s" in caplog.text and not wav.exists()
    assert main([*args, "--lufs-fit", "trim"]) == 0
    assert triergon.load_audio(wav).shape == (2, 66150)
