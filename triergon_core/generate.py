"""`generate`: audio of an exact length from a Tri-Ergon model.

Until the DiT and its samplers land (the generator issue), the latent is a Gaussian draw from the
diffusion prior, decoded by the VAE: the plumbing (lengths, seeds, batching, progress, output format) is
final, the sound is not.
"""

from __future__ import annotations

import torch

from .model import TriErgon
from .vae import ProgressFn


def initial_noise(model: TriErgon, *, seconds: float, seed: int, batch_size: int,
                  device: torch.device) -> torch.Tensor:
    """Latent noise [batch, latent_dim, frames]; item i is drawn with seed + i, so a batch is a set of
    variations and item 0 equals the single-item result."""
    frames = model.config.sequence.latent_frames(seconds)
    shape = (model.config.vae.latent_dim, frames)
    draws = [torch.randn(shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(batch_size)]
    return torch.stack(draws).to(device)


@torch.inference_mode()
def generate(model: TriErgon, *, seconds: float, seed: int = 0, batch_size: int = 1,
             progress: ProgressFn | None = None) -> torch.Tensor:
    """Generate `batch_size` stereo clips of exactly `round(seconds * 44100)` samples.

    Args:
        model: a Tri-Ergon model (see `build_model` / `load_checkpoint`).
        seconds: duration; must fit the preset's window.
        seed: seed of item 0; item i uses seed + i.
        batch_size: number of variations.
        progress: called as progress(done, total) while decoding.

    Returns:
        float32 audio [batch, 2, samples] at 44 100 Hz.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    seq = model.config.sequence
    seq.check_seconds(seconds)
    param = next(model.parameters())
    latents = initial_noise(model, seconds=seconds, seed=seed, batch_size=batch_size,
                            device=param.device).to(param.dtype)
    audio = model.vae.decode(latents, num_samples=seq.num_samples(seconds), progress=progress)
    return audio.float()
