"""The training loop in one process on a toy trainer: checkpoints (atomic, last N kept, exact resume),
SIGTERM saves and stops, a non-finite loss stops naming the step and the last good checkpoint; config
overrides; the VAE losses."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from triergon.train.checkpointing import CheckpointManager
from triergon.train.config import DataConfig, OptimConfig, RunConfig, TrainConfig, apply_overrides
from triergon.train.distributed import init_distributed
from triergon.train.trainer import NonFiniteLossError, Trainer


class _Data(Dataset):
    def __len__(self) -> int:
        return 7

    def __getitem__(self, ref):
        return {"x": torch.full((3,), float(ref.index)), "weight": torch.tensor(ref.weight)}


class _Toy(Trainer):
    hook = None

    def build(self) -> None:
        torch.manual_seed(0)
        self.add_part("toy", nn.Linear(3, 1), lr=self.config.optim.lr)

    def dataset(self) -> Dataset:
        return _Data()

    def loss(self, part, batch, step, micro):
        if self.hook is not None:
            self.hook(step)
        noise = torch.randn(batch["x"].shape, generator=self.generator(step, micro))
        per_sample = self.parts[part].net(batch["x"] * 0.1 + noise).squeeze(-1) ** 2
        return self.weighted_mean(per_sample, batch), {}


def _config(steps: int = 6, **run) -> TrainConfig:
    return TrainConfig(recipe="toy", trainer="dit", data=DataConfig(batch_size=2),
                       optim=OptimConfig(lr=1e-2, warmup_steps=1, ema_decay=0.5),
                       run=RunConfig(steps=steps, save_every=2, keep=2, log_every=1, **run))


def _weights(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.parts["toy"].module.state_dict().items()}


@pytest.fixture(scope="module")
def info():
    return init_distributed(device="cpu")


def test_resume_equals_an_uninterrupted_run_and_keeps_the_last_checkpoints(info, tmp_path):
    full = _Toy(_config(), info, tmp_path / "full")
    full.fit()
    half = _Toy(_config(), info, tmp_path / "half")
    half.hook = lambda step: os.kill(os.getpid(), signal.SIGTERM) if step == 2 else None
    half.fit()
    assert half.step == 3
    resumed = _Toy(_config(), info, tmp_path / "half")
    resumed.fit()
    assert resumed.step == 6
    for k, v in _weights(full).items():
        assert torch.equal(v, _weights(resumed)[k]), k
    for k, v in full.parts["toy"].ema.items():
        assert torch.equal(v, resumed.parts["toy"].ema[k]), k
    names = [p.name for p in CheckpointManager(tmp_path / "half", rank=0, world_size=1).all()]
    assert names == ["step-00000004", "step-00000006"]  # keep=2
    assert not list((tmp_path / "half" / "checkpoints").glob(".*.tmp"))


def test_sigterm_saves_and_stops(info, tmp_path):
    toy = _Toy(_config(steps=50), info, tmp_path)
    toy.hook = lambda step: os.kill(os.getpid(), signal.SIGTERM) if step == 2 else None
    toy.fit()
    assert toy.step == 3
    assert CheckpointManager(tmp_path, rank=0, world_size=1).latest().name == "step-00000003"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is handed back


def test_non_finite_loss_stops_naming_the_step_and_last_checkpoint(info, tmp_path):
    toy = _Toy(_config(steps=10), info, tmp_path)

    def poison(step):
        if step == 4:
            with torch.no_grad():
                toy.parts["toy"].module.weight.fill_(float("nan"))

    toy.hook = poison
    with pytest.raises(NonFiniteLossError, match=r"not finite at step 5; last good checkpoint: .*step-00000004"):
        toy.fit()
    assert CheckpointManager(tmp_path, rank=0, world_size=1).latest().name == "step-00000004"


def test_overrides_parse_types_and_reject_unknown_keys():
    from triergon.train.recipes import RECIPES, get_recipe

    c = apply_overrides(get_recipe("paper-s-32gpu"), ["optim.lr=3e-5", "data.path=/d", "parallel.compile=true",
                                                      "vae_loss.fft_sizes=[64,32]"])
    assert (c.optim.lr, c.data.path, c.parallel.compile, c.vae_loss.fft_sizes) == (3e-5, "/d", True, (64, 32))
    assert TrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError, match="valid keys here"):
        apply_overrides(c, ["optim.learning_rate=1"])
    with pytest.raises(ValueError, match=r"section\.key=value"):
        apply_overrides(c, ["optim.lr"])
    assert get_recipe("paper-s-32gpu").effective_batch(32) == 256
    assert get_recipe("paper-l-32gpu").effective_batch(32) == 256
    assert all(get_recipe(n).recipe == n for n in RECIPES)


def test_weight_norm_data_init_makes_the_latent_follow_the_input():
    """A new Oobleck VAE's latent hardly depends on quiet audio (its biases dominate); after the data-dependent init
    every latent channel has zero mean and unit spread on the batch, almost all of it from the input, a 20 dB
    quieter input moves it, and the reconstruction has the input's spread."""
    from triergon.train.trainers.vae import weight_norm_data_init
    from triergon.triergon_core.presets import get_preset
    from triergon.triergon_core.vae import OobleckVAE

    torch.manual_seed(0)
    audio = torch.randn(4, 2, 8192) * 0.05
    vae = OobleckVAE(config=get_preset("tiny").vae)

    def latent(x):
        return vae.encoder(x).chunk(2, 1)[0]

    with torch.no_grad():
        before = latent(audio) - latent(torch.zeros_like(audio))
        assert float(before.std()) < 0.2 * float(latent(audio).std())
        weight_norm_data_init(vae, lambda: vae(audio, sample=False), targets={vae.decoder.layers[-1]: 0.05})
        z = latent(audio)
        assert torch.allclose(z.mean(dim=(0, 2)), torch.zeros(z.shape[1]), atol=1e-4)
        assert torch.allclose(z.std(dim=(0, 2)), torch.ones(z.shape[1]), atol=1e-3)
        assert float((z - latent(torch.zeros_like(audio))).std()) > 0.9
        assert float((z - latent(audio * 0.1)).std()) > 0.5
        assert float(vae(audio, sample=False)[0].std()) == pytest.approx(0.05, rel=0.01)  # 0.05 per channel


def test_vae_trainer_data_init_sets_gains_and_biases(train_data, tmp_path):
    from triergon.train.recipes import get_recipe
    from triergon.train.trainers import trainer_class

    def built(name, *extra):
        config = apply_overrides(get_recipe("cpu-smoke-vae"), [f"data.path={train_data['shards']}", *extra])
        trainer = trainer_class("vae")(config, init_distributed(device="cpu"), tmp_path / name)
        trainer.build()
        return trainer

    plain, init = built("a"), built("b", "vae_loss.data_init=true")
    a, b = (dict(t.parts["vae"].module.named_parameters()) for t in (plain, init))
    assert not torch.equal(a["encoder.layers.0.weight_g"], b["encoder.layers.0.weight_g"])
    assert torch.equal(a["encoder.layers.0.weight_v"], b["encoder.layers.0.weight_v"])  # only gains and biases move
    # the EMA starts from the initialised weights
    assert torch.equal(init.parts["vae"].ema["encoder.layers.0.weight_g"], b["encoder.layers.0.weight_g"])


def test_vae_trainer_data_init_scale_and_residual_branches(train_data, tmp_path):
    """`vae_loss.data_init_scale` / `data_init_residual`: on the init batch every convolution's output has the given
    spread per channel, a residual branch's last convolution that times the residual factor, the decoder's output
    the audio's spread."""
    from triergon.train.recipes import get_recipe
    from triergon.train.trainers import trainer_class
    from triergon.triergon_core.vae import ResidualUnit

    config = apply_overrides(get_recipe("cpu-smoke-vae"), [
        f"data.path={train_data['shards']}", "vae_loss.data_init=true", "vae_loss.data_init_scale=0.3",
        "vae_loss.data_init_residual=0.1"])
    trainer = trainer_class("vae")(config, init_distributed(device="cpu"), tmp_path)
    trainer.build()
    vae = trainer.parts["vae"].module
    audio = trainer.init_batch()
    spreads = {}

    def keep_spread(module, inputs, out):
        spreads[module] = out.std(dim=(0, 2))

    hooks = [m.register_forward_hook(keep_spread)
             for m in (vae.encoder.layers[0], vae.decoder.layers[0], vae.encoder.layers[1].layers[0].layers[-1])]
    with torch.no_grad():
        out = vae(audio, sample=False)[0]
    for h in hooks:
        h.remove()
    assert isinstance(vae.encoder.layers[1].layers[0], ResidualUnit)
    plain = [spreads[vae.encoder.layers[0]], spreads[vae.decoder.layers[0]]]
    assert all(torch.allclose(x, torch.full_like(x, 0.3), rtol=1e-3) for x in plain)
    branch = spreads[vae.encoder.layers[1].layers[0].layers[-1]]
    assert torch.allclose(branch, torch.full_like(branch, 0.03), rtol=1e-3)
    assert float(out.std()) == pytest.approx(float(audio.std()), rel=0.02)


def test_vae_losses():
    from triergon.train.losses import (
        MultiScaleSTFTDiscriminator,
        discriminator_loss,
        generator_losses,
        loudness_losses,
        stft_loss,
        window_loudness,
    )

    torch.manual_seed(0)
    real = torch.randn(2, 2, 8192) * 0.1
    loss = stft_loss((256, 64))
    assert float(loss(real, real)) < 1e-6 < float(loss(real * 0.5, real))
    # Stable Audio's sum-and-difference loss cannot tell a clip from its mirror image; the per-channel one can
    mirrored = real.flip(1)
    assert float(loss(mirrored, real)) < 1e-6
    per_channel = stft_loss((256, 64), layout="channels")
    assert float(per_channel(real, real)) < 1e-6 < 0.1 < float(per_channel(mirrored, real))
    with pytest.raises(ValueError, match="layout"):
        stft_loss((256,), layout="mid-side")
    disc = MultiScaleSTFTDiscriminator(channels=4, fft_sizes=(256, 64))
    out_real, out_fake = disc(real), disc(real * 0.5)
    assert float(discriminator_loss(out_real, out_fake).detach()) > 0
    adv, fm = generator_losses(out_real, out_fake)
    assert float(adv.detach()) > 0 and float(fm.detach()) > 0
    # a 6 dB quieter copy is 6 LU quieter in every window, in both channels
    lu = window_loudness(real * 0.5) - window_loudness(real)
    assert lu.shape == (2, 2, 1) and torch.allclose(lu, torch.full_like(lu, -6.02), atol=0.01)
    loudness, balance = loudness_losses(real * 0.5, real)
    assert abs(float(loudness) - 0.602) < 0.001
    # the balance term sees only the stereo image: a quieter copy costs nothing, a 6 dB lean to the left 0.6
    assert float(balance) < 1e-4
    leaning = real * torch.tensor([1.0, 0.5])[:, None]
    assert abs(float(loudness_losses(leaning, real)[1]) - 0.602) < 0.001


def test_band_levels_and_spectrum_loss_known_answers():
    """A 1 kHz sine of amplitude 0.5 (mean square 0.125) reads -9.03 dB in the 1 kHz octave and the floor in bands
    far from it; a 6 dB quieter noise costs 0.602 in every band; a low and a high noise of equal power, which the
    loudness term barely tells apart, cost the spectrum term several times more."""
    import math

    from triergon.train.losses import band_levels, loudness_losses, spectrum_loss

    t = torch.arange(44100) / 44100
    sine = 0.5 * torch.sin(2 * math.pi * 1000 * t)
    levels = band_levels(torch.stack([sine, sine / 2])[None])
    assert levels.shape == (1, 2, 10, 6)
    assert torch.allclose(levels[0, :, 5], torch.tensor([[-9.03], [-15.05]]).expand(2, 6), atol=0.01)
    assert float(levels[0, :, :3].max()) < -69.9 and float(levels[0, :, 8:].max()) < -69.5
    noise = torch.randn(2, 2, 44100, generator=torch.Generator().manual_seed(0)) * 0.1
    assert float(spectrum_loss(noise, noise)) == 0
    assert abs(float(spectrum_loss(noise * 0.5, noise)) - 0.602) < 0.005  # 0.5995: the lowest band nears the floor
    freqs = torch.fft.rfftfreq(44100, 1 / 44100)
    low = torch.fft.irfft(torch.fft.rfft(noise) * (freqs < 1000), n=44100)
    high = torch.fft.irfft(torch.fft.rfft(noise) * (freqs >= 4000), n=44100)
    high = high * (low.pow(2).mean() / high.pow(2).mean()).sqrt()
    assert float(spectrum_loss(low, high)) > 2.0 > 4 * float(loudness_losses(low, high)[0])


def test_fsdp_on_a_pytorch_without_fsdp2_says_what_it_needs(monkeypatch):
    import sys

    from triergon.train.parallelize import ParallelConfig, parallelize

    monkeypatch.setitem(sys.modules, "torch.distributed.fsdp", None)  # as on PyTorch 2.5: no fully_shard there
    with pytest.raises(RuntimeError, match=r"parallel mode fsdp \(FSDP2's fully_shard\) needs PyTorch >= 2\.6"):
        parallelize(nn.Linear(2, 2), ParallelConfig(mode="fsdp"), device=torch.device("cpu"), blocks=[])
