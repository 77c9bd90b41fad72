"""The VAE trainer: Oobleck autoencoder against a multi-scale STFT discriminator.

Generator loss: sum-and-difference (or per-channel) multi-resolution STFT (A-weighted) + adversarial hinge + feature
matching + KL (+ optional per-window loudness, L - R balance and octave-band level terms), with the paper's weights;
the discriminator (hinge) joins after `vae_loss.discriminator_start` steps, updated after the autoencoder on the same
micro-batches.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ...triergon_core.layers import WNConv1d, WNConvTranspose1d
from ...triergon_core.lufs_curve import LufsCurve
from ...triergon_core.vae import OobleckVAE, ResidualUnit
from ..data.datasets import AudioCrops
from ..losses import (
    MultiScaleSTFTDiscriminator,
    discriminator_loss,
    generator_losses,
    loudness_losses,
    spectrum_loss,
    stft_loss,
)
from ..sampler import SampleRef
from ..samples import Sample
from ..trainer import Trainer
from .dit import initial_model


@torch.no_grad()
def weight_norm_data_init(module: nn.Module, run, *, targets: dict[nn.Module, float] | None = None,
                          scale: float = 1.0, eps: float = 1e-8) -> None:
    """Salimans and Kingma's data-dependent initialisation of weight-normalised convolutions (2016, section 3): one
    pass of `run()` (which calls `module` on a batch of data) in which every `WNConv1d` / `WNConvTranspose1d` of
    `module`, in the order they run, has its gains and bias set so that its output over that batch has zero mean
    and standard deviation `scale` per channel (`targets[conv]` instead where given; without a bias only the
    scale), and the later layers see the re-normalised outputs.

    Why a new Oobleck VAE needs it: with PyTorch's default initialisation the biases dominate every layer's output
    and audio at speech / effects levels (RMS about 0.08) shrinks layer by layer, so the encoder's output hardly
    depends on its input (the input's share of the latent's spread is about 10%, and unchanged when the input is
    20 dB quieter): the decoder learns to ignore the latent and the reconstruction's level and stereo image stop
    following the input. A transposed convolution's gain is per input channel, so its outputs are scaled by one
    number (their overall spread) and centred per channel.
    """
    targets = targets or {}

    def hook(conv: nn.Module, inputs, out: torch.Tensor) -> torch.Tensor:
        mean = out.mean(dim=(0, 2))
        if isinstance(conv, WNConvTranspose1d):
            gain = torch.full_like(mean, targets.get(conv, scale) / (float(out.std()) + eps))
            conv.weight_g.mul_(gain[0])
        else:
            gain = targets.get(conv, scale) / (out.std(dim=(0, 2)) + eps)
            conv.weight_g.mul_(gain.view(-1, *([1] * (conv.weight_g.dim() - 1))))
        if conv.bias is None:
            return out * gain[:, None]
        conv.bias.sub_(mean).mul_(gain)
        return (out - mean[:, None]) * gain[:, None]

    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, WNConv1d | WNConvTranspose1d)]
    try:
        run()
    finally:
        for h in handles:
            h.remove()


class VAETrainer(Trainer):
    def build(self) -> None:
        model = initial_model(self.config)
        self.model_config = model.config
        lc = self.config.vae_loss
        if not lc.train_encoder:
            if not self.config.model.init:
                raise ValueError("vae_loss.train_encoder=false freezes the encoder of a trained VAE: give "
                                 "model.init (an export of the run whose latents should stay valid)")
            model.vae.encoder.requires_grad_(False)
        if lc.data_init and not self.config.model.init:
            self.data_init(model.vae)
        self.add_part("vae", model.vae, lr=self.config.optim.lr)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.run.seed + 1)
            disc = MultiScaleSTFTDiscriminator(audio_channels=model.config.vae.audio_channels,
                                               channels=lc.discriminator_channels, fft_sizes=lc.discriminator_ffts)
        self.add_part("disc", disc, lr=lc.discriminator_lr, ema=False)
        self.stft = stft_loss(lc.fft_sizes, perceptual=lc.perceptual, layout=lc.stft_layout).to(self.device)

    def data_init(self, vae: OobleckVAE) -> None:
        """`weight_norm_data_init` of a new VAE on the first batch of the data set (clips 0..batch-1 as epoch 0
        crops them: the same on every rank and on resume, where the checkpoint's weights then replace these): every
        convolution's output to `vae_loss.data_init_scale`, the residual branches' last one to that times
        `data_init_residual`, the decoder's last layer to the batch's audio spread."""
        audio = self.init_batch()
        lc = self.config.vae_loss
        targets = {m.layers[-1]: lc.data_init_scale * lc.data_init_residual
                   for m in vae.modules() if isinstance(m, ResidualUnit)}
        targets[vae.decoder.layers[-1]] = float(audio.std())
        weight_norm_data_init(vae, lambda: vae(audio, sample=False), targets=targets, scale=lc.data_init_scale)

    def init_batch(self) -> torch.Tensor:
        """The audio `data_init` initialises on: clips 0..batch-1 as epoch 0 crops them, [B, C, N] float."""
        data = self.dataset()
        return torch.stack([data[SampleRef(i, 0, 1.0)]["audio"]
                            for i in range(min(len(data), self.config.data.batch_size))]).float()

    def dataset(self) -> AudioCrops:
        return AudioCrops(self.config.data.path, crop_seconds=self.config.data.crop_seconds, seed=self.config.run.seed,
                          multiple=self.model_config.vae.downsampling_ratio)

    sample_part = "vae"

    def sample_module(self) -> OobleckVAE:
        return OobleckVAE(config=self.model_config.vae)

    def sample(self, module: OobleckVAE, item: dict[str, Any]) -> Sample:
        """The EMA autoencoder's reconstruction of the validation crop, and its curve against the input's."""
        valid = int(item["mask"][0].sum())
        real = item["audio"][:1, :, :valid].float()
        fake = module.decode(module.encode(real, sample=False), num_samples=valid)[0].cpu()
        return Sample(audio=fake, target=LufsCurve.measure(real[0].cpu()), measured=LufsCurve.measure(fake),
                      labels=("input", "reconstruction"))

    def parts_at(self, step: int) -> list[str]:
        return ["vae", "disc"] if step >= self.config.vae_loss.discriminator_start else ["vae"]

    def loss(self, part: str, batch: dict[str, Any], step: int, micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        lc = self.config.vae_loss
        # padding places (weight 0) and the padded tails of short clips are silence on both sides
        keep = (batch["mask"][:, None] * batch["weight"][:, None, None]).float()
        real = batch["audio"] * keep
        scale = real.shape[0] * self.info.world_size / batch["_real"]
        disc = self.parts["disc"]
        if part == "disc":
            out = disc.net(torch.cat([real, batch["_fake"]]))
            n = real.shape[0]
            loss = discriminator_loss([(x[:n], f) for x, f in out], [(x[n:], f) for x, f in out])
            return loss * scale, {}
        fake, kl = self.parts["vae"].net(real, generator=self.generator(step, micro), sample=not lc.decode_mean)
        fake = fake * keep
        batch["_fake"] = fake.detach()
        terms = {"stft": self.stft(fake.float(), real.float()), "kl": kl}
        if lc.loudness > 0 or lc.balance > 0:
            loudness, balance = loudness_losses(fake.float(), real.float())  # one K-weighting pass for both
            if lc.loudness > 0:
                terms["loudness"] = loudness
            if lc.balance > 0:
                terms["balance"] = balance
        if lc.spectrum > 0:
            terms["spectrum"] = spectrum_loss(fake.float(), real.float())
        if step >= lc.discriminator_start:
            disc.module.requires_grad_(False)  # the generator's loss must not leave gradients in the discriminator
            try:
                terms["adversarial"], terms["feature_matching"] = generator_losses(disc.module(real), disc.module(fake))
            finally:
                disc.module.requires_grad_(True)
        weights = {"stft": lc.stft, "kl": lc.kl, "loudness": lc.loudness, "balance": lc.balance,
                   "spectrum": lc.spectrum, "adversarial": lc.adversarial, "feature_matching": lc.feature_matching}
        loss = sum(weights[k] * v for k, v in terms.items())
        return loss * scale, {f"vae/{k}": float(v.detach()) for k, v in terms.items()}
