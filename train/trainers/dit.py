"""The DiT trainer: v-loss on cached VAE latents with the conditioning dropout of DESIGN.md.

The trained module holds the DiT and the conditioner (task embedding, timing embedders) under the keys of a
Tri-Ergon checkpoint (`dit.*`, `conditioner.*`); the VAE and the condition encoders stay frozen and out of
the loop (their outputs are in the cache).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import nn

from ...triergon_core.conditioning import Conditioner, Conditions
from ...triergon_core.dit import DiT
from ...triergon_core.model import TriErgon, build_model
from ..data.datasets import LatentCrops
from ..samples import Sample, decoded_sample, generate_latents
from ..trainer import Trainer


class Denoiser(nn.Module):
    """DiT + conditioner as one module (one forward for DDP / FSDP2)."""

    def __init__(self, *, dit: DiT, conditioner: Conditioner) -> None:
        super().__init__()
        self.dit, self.conditioner = dit, conditioner

    def forward(self, z: torch.Tensor, t: torch.Tensor, cond: Conditions, *, dropout: bool,
                generator: torch.Generator | None = None) -> torch.Tensor:
        context, global_cond, frame_cond = self.conditioner(cond, dropout=dropout, generator=generator)
        return self.dit(z, t, context, global_cond, frame_cond=frame_cond)


def initial_model(config) -> TriErgon:
    """The Tri-Ergon model training starts from: `model.init` (e.g. converted SAO weights) or a seeded new one,
    its VAE replaced by `model.init_vae`'s when given, with the frame-aligned LUFS path added when
    `model.lufs_frame_aligned` asks for it."""
    from ...triergon_core.checkpoint import load_checkpoint

    if config.model.init:
        model = load_checkpoint(config.model.init)
    else:
        model = build_model(config.model.preset, seed=config.run.seed)
    if config.model.init_vae:
        other = load_checkpoint(config.model.init_vae)
        if other.config.vae != model.config.vae:
            raise ValueError(f"model.init_vae {config.model.init_vae} has another VAE architecture than the model "
                             f"it goes into ({other.config.vae} against {model.config.vae})")
        model.vae.load_state_dict(other.vae.state_dict())
    if config.model.lufs_frame_aligned and not model.config.conditioning.lufs_frame_aligned:
        model = with_lufs_frame_aligned(model, seed=config.run.seed)
    if config.model.latent_scale:
        model.config = dataclasses.replace(model.config, latent_scale=config.model.latent_scale)
    return model


def with_lufs_frame_aligned(model: TriErgon, *, seed: int = 0) -> TriErgon:
    """`model` with the frame-aligned LUFS path added: its weights (the same tensors) and a zero projection, so
    the same outputs until training moves it."""
    from ...triergon_core.checkpoint import assemble_model

    config = model.config.with_lufs_frame_aligned()
    state = model.state_dict()
    with torch.device("meta"):
        added = {f"dit.{k}" for k in DiT(config=config.dit).state_dict()} - set(state)
    new, _ = assemble_model(config, state, allowed_missing=added, seed=seed, what=f"model {config.name!r}")
    return new


class DiTTrainer(Trainer):
    def build(self) -> None:
        model = initial_model(self.config)
        self.model_config = model.config
        seq = model.config.sequence
        if self.config.data.crop_seconds > seq.max_seconds:
            raise ValueError(f"data.crop_seconds {self.config.data.crop_seconds:g} is longer than the preset's window "
                             f"of {seq.max_seconds:g} s")
        self.add_part("denoiser", Denoiser(dit=model.dit, conditioner=model.conditioner), lr=self.config.optim.lr)
        # the frozen VAE that made the cached latents: decodes the TensorBoard samples
        self.vae = model.vae.to(self.device).eval().requires_grad_(False) if self.config.run.sample_every else None

    sample_part = "denoiser"

    def sample_module(self) -> Denoiser:
        mc = self.model_config
        return Denoiser(dit=DiT(config=mc.dit), conditioner=Conditioner(config=mc.conditioning, sequence=mc.sequence))

    def sample(self, module: Denoiser, item: dict[str, Any]) -> Sample:
        run = self.config.run
        latents = generate_latents(module, item, steps=run.sample_steps, cfg_scale=run.sample_cfg, seed=run.seed)
        mc = self.model_config
        return decoded_sample(self.vae, latents * mc.latent_scale, item, mc.sequence.latent_rate,
                              labels=("target", "generated"))

    def dataset(self) -> LatentCrops:
        data = LatentCrops(self.config.data.path, crop_seconds=self.config.data.crop_seconds, seed=self.config.run.seed,
                           latent_rate=self.model_config.sequence.latent_rate, split=self.config.data.split,
                           sample_latents=self.config.data.sample_latents,
                           latent_scale=self.model_config.latent_scale)
        self.tokens_per_sample = data.crop
        return data

    def loss(self, part: str, batch: dict[str, Any], step: int, micro: int) -> tuple[torch.Tensor, dict[str, float]]:
        x0, mask = batch["latents"], batch["mask"]
        g = self.generator(step, micro)
        b = x0.shape[0]
        t = torch.rand(b, generator=g).to(self.device)
        eps = torch.randn(x0.shape, generator=g).to(self.device)
        alpha, sigma = torch.cos(t * math.pi / 2)[:, None, None], torch.sin(t * math.pi / 2)[:, None, None]
        cond = Conditions(seconds_start=batch["seconds_start"], seconds_total=batch["seconds_total"],
                          text=batch.get("text"), audio=batch.get("audio"), video=batch.get("video"),
                          lufs=batch["lufs"])
        v = self.parts[part].net(alpha * x0 + sigma * eps, t, cond, dropout=True, generator=g)
        target = alpha * eps - sigma * x0
        m = mask[:, None].to(v.dtype)
        per_sample = ((v.float() - target) ** 2 * m).sum((1, 2)) / (m.sum((1, 2)) * x0.shape[1]).clamp(min=1)
        return self.weighted_mean(per_sample, batch), {}
