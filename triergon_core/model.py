"""The Tri-Ergon model container and `build_model`.

`TriErgon` owns the sub-models under fixed names (`vae` now; `dit` and `conditioner` join with the
generator), so checkpoint keys are `vae.encoder.*`, `vae.decoder.*`, ...
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .presets import get_preset
from .vae import OobleckVAE


class TriErgon(nn.Module):
    """Tri-Ergon: Oobleck VAE (+ DiT and conditioning, which arrive with the generator)."""

    def __init__(self, *, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.vae = OobleckVAE(config=config.vae)

    @property
    def sequence(self):
        return self.config.sequence


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
