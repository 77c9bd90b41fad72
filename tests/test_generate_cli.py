"""`triergon.generate` and `triergon generate`: exact lengths, stereo 44.1 kHz files, seeds, errors."""

from __future__ import annotations

import pytest
import torch

import triergon
from triergon.triergon_core.cli import main

STEPS = 8  # lengths, seeds and files, not sound quality


@pytest.fixture(scope="module")
def tiny():
    return triergon.build_model("tiny", seed=0)


@pytest.mark.parametrize("seconds", [1.0, 2.37, 4.0])
def test_generate_exact_length_and_reproducible(tiny, seconds):
    audio = triergon.generate(tiny, seconds=seconds, seed=3, steps=STEPS)
    assert audio.shape == (1, 2, round(seconds * 44100)) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all()
    assert torch.equal(audio, triergon.generate(tiny, seconds=seconds, seed=3, steps=STEPS))
    assert not torch.equal(audio, triergon.generate(tiny, seconds=seconds, seed=4, steps=STEPS))


def test_batch_items_are_seeded_variations(tiny):
    batch = triergon.generate(tiny, seconds=1.0, seed=7, batch_size=3, steps=STEPS)
    assert batch.shape == (3, 2, 44100)
    # item i equals a single generation with seed + i (up to batched-convolution rounding)
    for i in range(3):
        torch.testing.assert_close(batch[i], triergon.generate(tiny, seconds=1.0, seed=7 + i, steps=STEPS)[0],
                                   rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])


def test_generate_rejects_bad_requests(tiny):
    with pytest.raises(ValueError, match="window of 60 s"):
        triergon.generate(tiny, seconds=61.0)
    with pytest.raises(ValueError, match="positive"):
        triergon.generate(tiny, seconds=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        triergon.generate(tiny, seconds=1.0, batch_size=0)


def test_cli_generate_writes_stereo_44k_wav(tmp_path, capsys):
    out = tmp_path / "clip.wav"
    assert main(["generate", "--preset", "tiny", "--seconds", "2.37", "--seed", "1", "--steps", "8", "-q",
                 "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    audio = triergon.load_audio(out)
    assert audio.shape == (2, 104517)
    assert audio.abs().max() > 0


def test_cli_generate_batch_and_flac(tmp_path):
    out = tmp_path / "var.flac"
    assert main(["generate", "--seconds", "1", "--batch-size", "2", "--bits", "24", "--steps", "8", "-q",
                 "-o", str(out)]) == 0
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["var_0.flac", "var_1.flac"]
    assert triergon.load_audio(tmp_path / "var_1.flac").shape == (2, 44100)


def test_cli_errors_are_messages_not_tracebacks(tmp_path, caplog):
    assert main(["generate", "--preset", "tiny", "--seconds", "99", "-q", "-o", str(tmp_path / "x.wav")]) == 2
    assert "window of 60 s" in caplog.text
    assert main(["generate", "--seconds", "11", "-q", "-o", str(tmp_path / "x.wav")]) == 2  # the demo model's
    assert "window of 10 s" in caplog.text
    assert main(["generate", "--seconds", "1", "--checkpoint", str(tmp_path / "none.safetensors"),
                 "-o", str(tmp_path / "x.wav")]) == 2
    assert "checkpoint not found" in caplog.text
    assert not (tmp_path / "x.wav").exists()


def test_cli_generate_from_checkpoint(tmp_path):
    model = triergon.build_model("tiny", seed=5)
    ckpt = triergon.save_checkpoint(model, tmp_path / "tiny.safetensors")
    out = tmp_path / "from_ckpt.wav"
    assert main(["generate", "--checkpoint", str(ckpt), "--seconds", "1.5", "--seed", "2", "-q",
                 "--bits", "32", "--steps", "8", "-o", str(out)]) == 0
    expected = triergon.generate(model, seconds=1.5, seed=2, steps=8)[0]
    torch.testing.assert_close(triergon.load_audio(out), expected, rtol=0, atol=1e-6)


def test_cli_generate_samples_with_the_checkpoints_recommendation(tmp_path, monkeypatch, caplog):
    """--steps / --cfg-scale / --sampler left out are what the checkpoint recommends (logged), each given one
    replaces its own; a checkpoint without a recommendation samples with the paper's settings."""
    import logging

    from triergon.triergon_core import generate as gen_module
    from triergon.triergon_core.sampling import SamplingSettings

    seen = []
    monkeypatch.setattr(gen_module, "sample", lambda denoise, noise, *, sampler, steps, callback: seen.append(
        (steps, denoise.cfg_scale, sampler)) or noise)
    model = triergon.build_model("tiny", seed=5)
    plain = triergon.save_checkpoint(model, tmp_path / "plain.safetensors")
    model.sampling = SamplingSettings(steps=30, cfg_scale=3.0, sampler="ddim")
    tuned = triergon.save_checkpoint(model, tmp_path / "tuned.safetensors")
    base = ["generate", "--seconds", "0.3", "-q", "-o", str(tmp_path / "out.wav"), "--checkpoint"]
    with caplog.at_level(logging.INFO, logger="triergon"):
        assert main([*base, str(tuned)]) == 0
    assert "tuned.safetensors recommends" in caplog.text and "30 steps, CFG 3, ddim" in caplog.text
    assert main([*base, str(tuned), "--cfg-scale", "5", "--steps", "2"]) == 0
    assert main([*base, str(tuned), "--sampler", "dpmpp-2m"]) == 0
    assert main([*base, str(plain)]) == 0
    assert seen == [(30, 3.0, "ddim"), (2, 5.0, "ddim"), (30, 3.0, "dpmpp-2m"), (100, 7.0, "dpmpp-2m")]


def test_cli_generate_for_a_video(tmp_path, caplog):
    from fractions import Fraction

    from _videos import write_video

    video = write_video(tmp_path / "clip.mp4", fps=Fraction(30000, 1001), num_frames=45)
    out = tmp_path / "clip.wav"
    assert main(["generate", str(video), "--text", "door", "--steps", "2", "-q", "-o", str(out)]) == 0
    assert triergon.load_audio(out).shape == (2, round(45 * 1001 / 30000 * 44100))
    assert main(["generate", str(tmp_path / "missing.mp4"), "--steps", "2", "-q", "-o", str(out)]) == 2
    assert "missing.mp4" in caplog.text
    assert main(["generate", "--steps", "2", "-q", "-o", str(out)]) == 2
    assert "give `seconds`" in caplog.text


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_cli_generate_muxes_into_a_copy_of_the_video(tmp_path, suffix):
    import av
    from _videos import write_video

    from triergon.triergon_core.video import probe_video

    video = write_video(tmp_path / "in.mp4", fps=25, num_frames=40, audio=True)
    out = tmp_path / f"out{suffix}"
    assert main(["generate", str(video), "--steps", "2", "-q", "-o", str(out)]) == 0
    with av.open(str(out)) as c:
        assert len(c.streams.video) == 1 and len(c.streams.audio) == 1
        assert c.streams.audio[0].codec_context.sample_rate == 44100
    info = probe_video(out)
    assert info.has_audio and abs(info.duration - 1.6) < 1e-3


def test_cli_video_output_needs_a_video(tmp_path, caplog):
    assert main(["generate", "--seconds", "1", "--steps", "2", "-q", "-o", str(tmp_path / "x.mp4")]) == 2
    assert "give the input VIDEO" in caplog.text


def test_cli_checks_the_output_before_sampling(tmp_path, caplog, monkeypatch):
    import triergon.triergon_core.generate as gen

    monkeypatch.setattr(gen, "sample_latents", lambda *a, **k: pytest.fail("sampled before checking the output"))
    assert main(["generate", "--seconds", "1", "-q", "-o", str(tmp_path / "x.ogg")]) == 2
    assert "cannot write 'x.ogg'" in caplog.text
    assert main(["generate", "--seconds", "1", "--bits", "32", "-q", "-o", str(tmp_path / "x.flac")]) == 2
    assert "bits=32" in caplog.text
