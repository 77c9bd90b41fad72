"""The Tri-Ergon model container and `build_model`.

`TriErgon` owns the sub-models under fixed names, so checkpoint keys are `vae.*` (Oobleck VAE, SAO's
names), `dit.*` (SAO's DiT names) and `conditioner.*` (task embedding and timing embedders). The condition
encoders (LanguageBind, or the tiny preset's random towers) are separate: they are not trained here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from .conditioning import Conditioner
from .config import ModelConfig
from .dit import DiT
from .presets import get_preset
from .sampling import PAPER_SAMPLING, SamplingSettings
from .vae import OobleckVAE

COMPONENTS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "vae": lambda c: OobleckVAE(config=c.vae),
    "dit": lambda c: DiT(config=c.dit),
    "conditioner": lambda c: Conditioner(config=c.conditioning, sequence=c.sequence),
}


class TriErgon(nn.Module):
    """Tri-Ergon: Oobleck VAE, DiT denoiser and the conditioner that builds E.

    `sampling` holds the sampling settings the weights are tuned for: the defaults of `generate` and of every
    entry point (CLI, nodes, Table 3). It is the paper's (`PAPER_SAMPLING`) unless the checkpoint recommends
    others (metadata `SAMPLING_KEY`); `save_checkpoint` stores it when it is not the paper's.
    """

    vae: OobleckVAE
    dit: DiT
    conditioner: Conditioner
    sampling: SamplingSettings

    def __init__(self, *, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.sampling = PAPER_SAMPLING
        for name, make in COMPONENTS.items():
            self.add_module(name, make(config))

    def decode(self, latents: torch.Tensor, **kwargs) -> torch.Tensor:
        """Audio from the DiT's latents: `vae.decode` of them times `config.latent_scale` (keyword arguments go
        to `OobleckVAE.decode`)."""
        scale = self.config.latent_scale
        return self.vae.decode(latents if scale == 1 else latents * scale, **kwargs)


def resolve_config(preset: str | ModelConfig) -> ModelConfig:
    return preset if isinstance(preset, ModelConfig) else get_preset(preset)


def build_model(preset: str | ModelConfig, *, device: torch.device | str | None = None,
                dtype: torch.dtype | None = None, seed: int | None = None) -> TriErgon:
    """Build a Tri-Ergon model with freshly initialised weights.

    Args:
        preset: a preset name (`triergon presets` lists them) or a `ModelConfig`.
        device: where to build it; "meta" builds without memory (for shapes and parameter counts).
        dtype: parameter dtype (default float32).
        seed: seeds the initialisation, for reproducible random-weight models.
    """
    config = resolve_config(preset)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        with torch.device(device or "cpu"):
            model = TriErgon(config=config)
    if dtype is not None:
        model = model.to(dtype=dtype)
    return model.eval()


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def parameter_counts(preset: str | ModelConfig) -> dict[str, int]:
    """Parameter counts per sub-model, computed from the modules built on the meta device."""
    model = build_model(preset, device="meta")
    counts = {name: count_parameters(child) for name, child in model.named_children()}
    counts["total"] = count_parameters(model)
    return counts
