"""The trainers, by name."""

from __future__ import annotations


def trainer_class(name: str):
    from .dit import DiTTrainer
    from .encoders import EncoderTrainer
    from .lufs import LufsTrainer
    from .vae import VAETrainer

    return {"dit": DiTTrainer, "vae": VAETrainer, "lufs": LufsTrainer, "encoders": EncoderTrainer}[name]
