"""`triergon eval`: scoring generated audio against a manifest's clips, and Table 3 in miniature."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from triergon.triergon_core import table3
from triergon.triergon_core.audio import load_audio, write_audio
from triergon.triergon_core.cli import main
from triergon.triergon_core.encoders import build_encoders
from triergon.triergon_core.evaluation import load_clips, reference_audio
from triergon.triergon_core.lufs_curve import LufsCurve
from triergon.triergon_core.lufs_predictor import load_dinov2, load_predictor, predict_lufs
from triergon.triergon_core.model import build_model
from triergon.triergon_core.synthfoley.dataset import write_dataset
from triergon.triergon_core.video import probe_video

pytest.importorskip("cv2")  # AV-Align: the eval extra
pytest.importorskip("librosa")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """Three 1 s SynthFoley clips at 32x32, all in the test split (a set of 3 would hold one test clip)."""
    root = tmp_path_factory.mktemp("eval-data")
    path = write_dataset(root, clips=3, seconds=1.0, fps=24, width=32, height=32, seed=0)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    path.write_text("".join(json.dumps({**row, "split": "test"}) + "\n" for row in rows))
    return path


def _scores(manifest, folder, out) -> dict:
    assert main(["eval", str(folder), "--manifest", str(manifest), "-o", str(out), "-q"]) == 0
    return json.loads((out / "scores.json").read_text())


def test_scoring_the_reference_itself_gives_zero(manifest, tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    for clip in load_clips(manifest):
        shutil.copy(clip.audio, gen / f"{clip.id}.flac")
    report = _scores(manifest, gen, tmp_path / "out")
    assert report["num_clips"] == 3 and report["missing"] == []
    for clip in report["clips"]:
        assert clip["lufs_mae"] == 0.0 and clip["lufs_corr"] == pytest.approx(1.0)
        assert clip["kl"] == pytest.approx(0.0, abs=1e-6)
    mean = report["mean"]
    assert mean["fd"] == pytest.approx(0.0, abs=1e-3) and mean["lufs_mae"] == 0.0
    assert math.isfinite(mean["av_align"]) and "av_align_shuffled" in mean
    md = (tmp_path / "out" / "scores.md").read_text()
    assert "| FD ↓ | KL ↓ | AV-Align ↑ | AV-Align, shuffled video |" in md and md.count("| synth-") == 3


def test_kl_from_another_embedder(manifest, tmp_path):
    gen = tmp_path / "gen"
    gen.mkdir()
    for clip in load_clips(manifest):
        shutil.copy(clip.audio, gen / f"{clip.id}.flac")
    out = tmp_path / "out"
    assert main(["eval", str(gen), "--manifest", str(manifest), "-o", str(out), "-q", "--kl-embedder",
                 "synthfoley"]) == 0
    report = json.loads((out / "scores.json").read_text())
    assert report["embedder"] == "synthfoley for FD, synthfoley for KL"
    assert report["mean"]["kl"] == pytest.approx(0.0, abs=1e-6)


def test_scoring_louder_audio_and_missing_clips(manifest, tmp_path, caplog):
    # twice the amplitude is +6.02 LU in every frame (float WAV keeps samples above 1); one clip not generated
    gen = tmp_path / "gen"
    clips = load_clips(manifest)
    for clip in clips[:2]:
        write_audio(gen / f"{clip.id}.wav", 2 * load_audio(clip.audio), bits=32)
    report = _scores(manifest, gen, tmp_path / "out")
    assert report["num_clips"] == 2 and report["missing"] == [clips[2].id]
    assert "1 of 3 clips have no generated file" in caplog.text
    for clip in report["clips"]:
        assert clip["lufs_mae_lr"] == pytest.approx([6.02, 6.02], abs=0.01)
    assert report["mean"]["fd"] > 0.1


def _table3_args(manifest, out, dinov2_dir, tlufs_weights, *extra) -> list[str]:
    return ["eval", "--table3", "--manifest", str(manifest), "--limit", "2", "--seconds", "0.5", "--steps", "2",
            "--preset", "tiny", "--dinov2", str(dinov2_dir), "--lufs-predictor", str(tlufs_weights), "-o", str(out),
            "-q", *extra]


def test_table3_cli_writes_eight_rows(manifest, dinov2_dir, tlufs_weights, tmp_path, caplog):
    out = tmp_path / "t3"
    args = _table3_args(manifest, out, dinov2_dir, tlufs_weights)
    assert main(args) == 0
    result = json.loads((out / "table3.json").read_text())
    assert [row["key"] for row in result["rows"]] == [row.key for row in table3.ROWS]
    for row in result["rows"]:
        assert row["num_clips"] == 2
        for metric in ("fd", "kl", "av_align", "lufs_mae"):
            assert math.isfinite(row["mean"][metric]), (row["key"], metric)
    assert result["settings"]["steps"] == 2 and result["settings"]["seconds"] == 0.5
    assert result["settings"]["cfg_scale"] == 7.0  # a preset with random weights: the paper's
    assert result["settings"]["checkpoint"] is None
    md = (out / "table3.md").read_text()
    assert sum(line.startswith("| ✓ |") for line in md.splitlines()) == 8
    assert "2 test clips (the first 0.5 s of each clip), 2 dpmpp-2m steps" in md
    assert load_audio(out / "audio" / "vta-gt" / "synth-000001.wav").shape == (2, 22050)
    # other settings in the same folder are refused
    assert main([*args, "--seed", "5"]) == 2
    assert "holds a Table 3 run with other settings (seed)" in caplog.text


def test_table3_defaults_to_the_shipped_demo_model(manifest, tmp_path):
    from triergon.triergon_core.demo import DemoFiles

    out = tmp_path / "t3"
    assert main(["eval", "--table3", "--manifest", str(manifest), "--limit", "1", "--seconds", "0.5", "--steps", "1",
                 "-o", str(out), "-q"]) == 0
    settings = json.loads((out / "table3.json").read_text())["settings"]
    assert settings["checkpoint"] == str(DemoFiles().model) and settings["preset"] == "demo"
    assert settings["cfg_scale"] == 3.0  # the demo model's recommended scale, without --cfg-scale


def test_table3_rows_get_their_conditions_and_resume(manifest, dinov2_dir, tlufs_weights, tmp_path, monkeypatch):
    """Each row generates with its own subset of e_L / e_A and its own E_L, every row of a clip with one seed;
    e_A is the clip's own audio, the ground-truth E_L its measured curve, the other one T_LUFS's. A second run
    in the same folder generates nothing."""
    model = build_model("tiny", seed=0)
    calls = []

    def fake_generate(model, *, conditions, seed, **kwargs):
        calls.append((conditions, seed))
        return torch.zeros(1, 2, model.config.sequence.num_samples(float(conditions.seconds_total[0])))

    scored = []
    monkeypatch.setattr(table3, "generate", fake_generate)
    monkeypatch.setattr(table3, "score_folder", lambda folder, clips, **k: scored.append(folder) or {})
    clips = load_clips(manifest, limit=2)
    features, predictor = load_dinov2(dinov2_dir), load_predictor(tlufs_weights)
    run = dict(output=tmp_path, features=features, predictor=predictor, embedder=None, steps=2, cfg_scale=7.0,
               sampler="ddim", seed=10)
    result = table3.run_table3(model, clips, **run)
    assert len(calls) == 16 and [row["key"] for row in result["rows"]] == [row.key for row in table3.ROWS]
    assert scored == [tmp_path / "audio" / row.key for row in table3.ROWS]
    encoders = build_encoders(model.config.conditioning)
    for i, clip in enumerate(clips):
        own_audio = encoders.encode_audio(reference_audio(clip)[None])
        curves = {"predicted": predict_lufs(clip.video, features=features, predictor=predictor),
                  "measured": LufsCurve.measure(reference_audio(clip))}
        for row, (conditions, seed) in zip(table3.ROWS, calls[8 * i:8 * i + 8], strict=True):
            assert seed == 10 + i
            assert conditions.video is not None
            assert (conditions.text is not None) == row.text and (conditions.audio is not None) == row.audio
            if row.audio:
                torch.testing.assert_close(conditions.audio, own_audio)
            want = curves[row.lufs].fit_duration(probe_video(clip.video).duration, policy="pad_or_trim")
            torch.testing.assert_close(conditions.lufs, want.to_normalized()[None])
    # a second run generates only what is missing: here the rows of a third clip
    calls.clear()
    table3.run_table3(model, load_clips(manifest), **run)
    assert [seed for _, seed in calls] == [12] * 8
    assert len(list((tmp_path / "audio").glob("*/*.wav"))) == 24
    # --seconds longer than a clip generates the clip whole
    calls.clear()
    table3.run_table3(model, clips[:1], **{**run, "output": tmp_path / "long", "seconds": 5.0})
    assert {float(c.seconds_total[0]) for c, _ in calls} == {probe_video(clips[0].video).duration}


@pytest.mark.parametrize(("args", "message"), [
    (["gen", "--manifest", "none.jsonl"], "--manifest not found"),
    (["gen", "--manifest", "{m}", "--split", "dev"], "split 'dev' is not in"),
    (["gen", "--manifest", "{m}"], "folder of generated audio not found"),
    (["{m}", "--manifest", "{m}"], "is a file; give the folder"),
    (["--manifest", "{m}"], "give the folder of generated audio"),
    (["{d}", "--manifest", "{m}"], "no file in"),
    (["{d}", "--manifest", "{m}", "--checkpoint", "x.safetensors"], "--checkpoint only apply to --table3"),
    (["{d}", "--manifest", "{m}", "--cfg-scale", "3"], "--cfg-scale only apply to --table3"),
    (["{d}", "--manifest", "{m}", "--embedder", "openl3"], "--embedder openl3 needs its weights file"),
    (["{d}", "--manifest", "{m}", "--embedder-weights", "none.safetensors"], "--embedder-weights not found"),
    (["{d}", "--manifest", "{m}", "--kl-embedder-weights", "{m}"], "--kl-embedder-weights needs --kl-embedder"),
    (["{d}", "--manifest", "{m}", "--kl-embedder", "passt"], "--kl-embedder passt needs its weights file"),
    (["--table3", "--manifest", "{m}", "--preset", "tiny"], "--table3 needs T_LUFS"),
    (["{d}", "--table3", "--manifest", "{m}"], "--table3 generates its own audio"),
    (["--table3", "--manifest", "{m}", "--limit", "0"], "--limit must be at least 1"),
])
def test_bad_inputs_are_one_line_errors(manifest, tmp_path, capsys, args, message):
    (tmp_path / "empty").mkdir()
    argv = [a.format(m=manifest, d=tmp_path / "empty") for a in args]
    assert main(["eval", *argv, "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()
