"""The three trainers, by name."""

from __future__ import annotations


def trainer_class(name: str):
    from .dit import DiTTrainer
    from .lufs import LufsTrainer
    from .vae import VAETrainer

    return {"dit": DiTTrainer, "vae": VAETrainer, "lufs": LufsTrainer}[name]
