"""VAE validation scores: known answers with a stand-in autoencoder, and `validate_run` over a real tiny run
(each checkpoint scored once, repeated calls append nothing)."""

from __future__ import annotations

import json
import math

import pytest
import torch
from _helpers import train_on_cpu

from triergon.train.config import apply_overrides
from triergon.train.distributed import init_distributed
from triergon.train.recipes import get_recipe
from triergon.train.trainers import trainer_class
from triergon.train.validate import load_checkpoint_of_run, predictor_scores, reconstruction_scores, validate_run


class _Scaled(torch.nn.Module):
    """encode -> the audio itself; decode -> the audio times `gain` (a reconstruction off by a known level)."""

    def __init__(self, gain: float) -> None:
        super().__init__()
        self.gain = gain

    def encode(self, audio, sample=False):
        return audio

    def decode(self, latents, num_samples=None):
        return latents[..., :num_samples] * self.gain


def _clips():
    t = torch.arange(44100 * 2) / 44100
    tone = torch.sin(2 * math.pi * 440 * t)
    quiet_tail = torch.cat([torch.ones(44100), torch.full((44100,), 1e-5)])  # the tail is below -60 LUFS
    return [torch.stack([0.3 * tone, 0.1 * tone]), torch.stack([0.2 * tone * quiet_tail, 0.2 * tone])]


class _Swapped(_Scaled):
    """decode -> the audio with its channels swapped: every level right, every side wrong."""

    def decode(self, latents, num_samples=None):
        return latents[..., :num_samples].flip(1)


def test_perfect_reconstruction_scores_zero():
    s = reconstruction_scores(_Scaled(1.0), _clips())
    assert s.clips == 2 and s.loudness_mae == 0 and s.loudness_bias == 0
    assert s.mrstft == pytest.approx(0, abs=1e-6) and s.band_error == 0
    # the first clip's L is 9.5 LU above its R in all 12 windows of 1/6 s; the second's channels differ only in
    # its last second, which is below -60 LUFS on the left (6 more windows with a clear side)
    assert s.stereo_placement == 1 and s.stereo_frames == 18


def test_swapped_channels_lose_every_side():
    s = reconstruction_scores(_Swapped(1.0), _clips())
    assert s.stereo_placement == 0 and s.stereo_frames == 18


def test_mono_reconstruction_counts_no_frames():
    s = reconstruction_scores(_Scaled(1.0), [c.mean(0, keepdim=True) for c in _clips()])
    assert s.stereo_frames == 0 and math.isnan(s.stereo_placement)


def test_half_amplitude_is_six_lu_too_quiet():
    s = reconstruction_scores(_Scaled(0.5), _clips())
    six = 20 * math.log10(2)
    # the soft -70 LUFS floor of window_loudness moves the quieter (-20 dBFS) tone by 0.004 LU
    assert s.loudness_bias == pytest.approx(-six, abs=0.006)
    assert s.loudness_mae == pytest.approx(six, abs=0.006)
    assert s.mrstft > 0.1 and s.band_error == pytest.approx(six, abs=0.006)


class _Hissing(_Scaled):
    """decode -> the audio plus an 8 kHz tone of amplitude 0.1 in both channels, where the input has nothing."""

    def decode(self, latents, num_samples=None):
        t = torch.arange(latents.shape[-1]) / 44100
        return latents[..., :num_samples] + 0.1 * torch.sin(2 * math.pi * 8000 * t)


def test_added_energy_counts_its_excess_over_silence():
    from triergon.train.losses import band_levels

    clips = _clips()
    s = reconstruction_scores(_Hissing(1.0), clips)
    # the 440 Hz input leaves the 8 kHz band near -110 dB; the tone puts it at 20 log10(0.1) - 3 = -23 dB in every
    # window and channel: 37 dB above the -60 dB line there, and (nearly) nothing changes in the input's own bands
    heard = sum(int((band_levels(c[None]) > -60).sum()) for c in clips)
    added = sum(c.shape[0] * 12 for c in clips)  # one band, 12 windows of 1/6 s per 2 s channel
    assert s.band_error == pytest.approx(37 * added / (heard + added), abs=0.01)


def test_validate_run_scores_each_checkpoint_once(train_data, tmp_path):
    train_on_cpu("cpu-smoke-vae", tmp_path, [f"data.path={train_data['shards']}", "run.steps=2", "run.save_every=1",
                                             "run.sample_every=0"])
    rows = validate_run(tmp_path, train_data["shards"], limit=2)
    assert [r["step"] for r in rows] == [1, 2] and all(r["clips"] == 2 for r in rows)
    assert all(math.isfinite(r["mrstft"]) and r["loudness_mae"] >= 0 for r in rows)
    lines = (tmp_path / "validation.jsonl").read_text().splitlines()
    assert validate_run(tmp_path, train_data["shards"], limit=2) == rows
    assert (tmp_path / "validation.jsonl").read_text().splitlines() == lines
    assert json.loads(lines[0])["step"] == 1
    vae, trainer, step = load_checkpoint_of_run(tmp_path, sorted((tmp_path / "checkpoints").iterdir())[-1])
    assert (trainer, step) == ("vae", 2) and not vae.training


def test_export_of_one_step(train_data, tmp_path, caplog):
    """`triergon train export RUN --step N`: that checkpoint's weights, not the latest's; a missing step is named."""
    from triergon.train.export import load_run
    from triergon.triergon_core.checkpoint import load_checkpoint
    from triergon.triergon_core.cli import main
    from triergon.triergon_core.sampling import PAPER_SAMPLING

    train_on_cpu("cpu-smoke-vae", tmp_path / "run", [f"data.path={train_data['shards']}", "run.steps=2",
                                                     "run.save_every=1", "run.sample_every=0"])
    out = tmp_path / "one.safetensors"
    assert main(["train", "export", str(tmp_path / "run"), "-o", str(out), "--step", "1", "--raw"]) == 0
    first = load_run(tmp_path / "run", ema=False, checkpoint=tmp_path / "run" / "checkpoints" / "step-00000001")[0]
    latest = load_run(tmp_path / "run", ema=False)[0]
    got = load_checkpoint(out).vae.state_dict()
    assert all(torch.equal(got[k], v) for k, v in first.vae.state_dict().items())
    assert any(not torch.equal(got[k], v) for k, v in latest.vae.state_dict().items())
    caplog.clear()
    assert main(["train", "export", str(tmp_path / "run"), "-o", str(out), "--step", "7"]) == 2
    assert "no complete checkpoint of step 7; it has steps 1, 2" in caplog.text
    # --cfg-scale stores the weights' recommended scale (what generate and the nodes then default to)
    assert load_checkpoint(out).sampling.cfg_scale == 7.0
    assert main(["train", "export", str(tmp_path / "run"), "-o", str(out), "--cfg-scale", "3"]) == 0
    assert load_checkpoint(out).sampling == PAPER_SAMPLING.override(cfg_scale=3.0)
    caplog.clear()
    assert main(["train", "--recipe", "cpu-smoke-vae", "--run-dir", str(tmp_path / "x"), "--cfg-scale", "3"]) == 2
    assert "--cfg-scale go with `triergon train export" in caplog.text and not (tmp_path / "x").exists()


@pytest.mark.parametrize("decode_mean", [False, True])
def test_decoder_only_run_keeps_the_encoder_and_its_latents(train_data, tmp_path, decode_mean):
    from triergon.train.export import export_run
    from triergon.triergon_core.checkpoint import load_checkpoint

    info = init_distributed(device="cpu")
    base = [f"data.path={train_data['shards']}", "run.save_every=1", "run.sample_every=0"]
    config = apply_overrides(get_recipe("cpu-smoke-vae"), [*base, "run.steps=1"])
    trainer_class("vae")(config, info, tmp_path / "a").fit()
    start, _ = export_run(tmp_path / "a", tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match=r"model\.init"):
        trainer_class("vae")(apply_overrides(config, ["vae_loss.train_encoder=false"]), info, tmp_path / "x").build()
    frozen = apply_overrides(config, ["vae_loss.train_encoder=false", f"model.init={start}", "run.steps=2",
                                      f"vae_loss.decode_mean={str(decode_mean).lower()}"])
    trainer_class("vae")(frozen, info, tmp_path / "b").fit()
    after, _ = export_run(tmp_path / "b", tmp_path / "b.safetensors")
    before, now = load_checkpoint(start).vae, load_checkpoint(after).vae
    assert all(torch.equal(v, now.encoder.state_dict()[k]) for k, v in before.encoder.state_dict().items())
    assert any(not torch.equal(v, now.decoder.state_dict()[k]) for k, v in before.decoder.state_dict().items())


def test_vae_forward_decodes_the_posterior_mean_when_asked():
    from triergon.triergon_core.model import build_model

    vae = build_model("tiny", seed=0).vae
    x = torch.randn(1, 2, 4096, generator=torch.Generator().manual_seed(0))
    a, kl = vae(x, sample=False, generator=torch.Generator().manual_seed(1))
    b, _ = vae(x, sample=False, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and torch.equal(a, vae.decoder(vae.encode(x, sample=False)))
    drawn, kl_drawn = vae(x, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, drawn) and torch.equal(kl, kl_drawn)


class _Constant(torch.nn.Module):
    """A stand-in T_LUFS predicting `value` (normalised) everywhere."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value
        self.config = type("C", (), {"max_frames": 360, "rate": 6.0})()

    def forward(self, features):
        return torch.full((features.shape[0], 2, features.shape[1]), self.value)


def test_predictor_scores_in_lu_over_audible_frames():
    # measured -35 LUFS on audible frames and -65 (left out) on the rest; predicted 0.5 -> -35 LUFS
    lufs = torch.tensor([[-35.0, -35.0, -65.0], [-35.0, -65.0, -65.0]])
    item = {"dinov2": torch.zeros(3, 4), "lufs": lufs}
    exact = predictor_scores(_Constant(0.5), [item])
    assert (exact.mae, exact.bias, exact.clips) == (0.0, 0.0, 1)
    s = predictor_scores(_Constant(0.6), [item])  # -28 LUFS: 7 LU too loud on the 3 audible frames
    assert s.mae == pytest.approx(7.0, abs=1e-4) and s.bias == pytest.approx(7.0, abs=1e-4) and s.clips == 1


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_validate_run_scores_a_lufs_run(train_data, tmp_path, kind):
    train_on_cpu("cpu-smoke-lufs", tmp_path, [f"data.path={train_data['cache']}", "run.steps=1", "run.save_every=1",
                                              "run.sample_every=0", f"lufs_loss.kind={kind}"])
    rows = validate_run(tmp_path, train_data["cache"], limit=3)
    assert [r["step"] for r in rows] == [1] and rows[0]["clips"] == 3 and rows[0]["mae"] > 0
    (config,) = tmp_path.rglob("step-*/config.json")
    assert json.loads(config.read_text())["lufs_loss"]["kind"] == kind


def test_curve_loss_known_answers():
    """0.1 too high on the kept frames: MSE 0.01, L1 0.1; masked frames (error 0.5) count in neither."""
    from triergon.train.trainers.lufs import curve_loss

    target = torch.full((2, 2, 4), 0.5)
    pred = target + 0.1
    pred[..., 3] = 1.0
    mask = torch.tensor([[True, True, True, False], [True, False, False, False]])
    assert curve_loss(pred, target, mask, kind="mse").tolist() == pytest.approx([0.01, 0.01], abs=1e-6)
    assert curve_loss(pred, target, mask, kind="l1").tolist() == pytest.approx([0.1, 0.1], abs=1e-6)
    with pytest.raises(ValueError, match=r"lufs_loss\.kind must be one of"):
        apply_overrides(get_recipe("synthfoley-lufs"), ["lufs_loss.kind=huber"])


def _swelling_tone(swap: bool = False) -> torch.Tensor:
    """2 s of a 440 Hz tone swelling from 0.05 to 0.5, the right channel a third of the left (9.5 LU quieter)."""
    t = torch.arange(44100 * 2) / 44100
    tone = torch.sin(2 * math.pi * 440 * t) * torch.linspace(0.05, 0.5, t.numel())
    audio = torch.stack([tone, tone / 3])
    return audio.flip(0) if swap else audio


@pytest.mark.parametrize("swap", [False, True])
def test_generation_scores_known_answers(monkeypatch, swap):
    """A stand-in generator that returns audio whose curve is exactly the request scores 0 LU, correlation 1 and
    stereo placement 1; the same audio with its channels swapped scores 9.5 LU and placement 0."""
    from triergon.train import validate
    from triergon.triergon_core import generate as generate_module
    from triergon.triergon_core.lufs_curve import LufsCurve
    from triergon.triergon_core.model import build_model

    calls = []

    def fake_generate(model, *, seconds, conditions, steps, cfg_scale, seed):
        calls.append((seconds, tuple(conditions.lufs.shape), steps, cfg_scale, seed))
        return _swelling_tone(swap)[None]

    monkeypatch.setattr(generate_module, "generate", fake_generate)
    curve = LufsCurve.measure(_swelling_tone()).values
    items = [{"lufs": curve, "seconds": torch.tensor(2.0), "text": torch.randn(1, 64)} for _ in range(2)]
    s = validate.generation_scores(build_model("tiny", seed=0), items, steps=3, cfg_scale=5.0, seed=10)
    assert calls == [(2.0, (1, 2, 12), 3, 5.0, 10), (2.0, (1, 2, 12), 3, 5.0, 11)]
    assert (s.clips, s.steps, s.cfg_scale) == (2, 3, 5.0) and s.stereo_frames == 2 * 12
    if swap:
        assert s.lufs_mae == pytest.approx(20 * math.log10(3), abs=0.01) and s.stereo_placement == 0.0
    else:
        assert s.lufs_mae == pytest.approx(0, abs=1e-4) and s.stereo_placement == 1.0
        assert s.lufs_correlation == pytest.approx(1.0, abs=1e-6)


def test_validate_run_scores_a_dit_run(train_data, tmp_path):
    train_on_cpu("cpu-smoke", tmp_path, [f"data.path={train_data['cache']}", "run.steps=1", "run.save_every=1",
                                         "run.sample_every=0"])
    rows = validate_run(tmp_path, train_data["cache"], limit=2, steps=2)
    assert [r["step"] for r in rows] == [1] and rows[0]["clips"] == 2 and rows[0]["steps"] == 2
    assert math.isfinite(rows[0]["lufs_mae"]) and rows[0]["lufs_mae"] >= 0
