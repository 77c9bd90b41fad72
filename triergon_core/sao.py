"""The one adapter between Stable Audio Open checkpoints and Tri-Ergon keys.

SAO's released `model.safetensors` (and the `state_dict` of `model.ckpt`) holds the module tree of
stable-audio-tools' `ConditionedDiffusionModelWrapper`:
- `pretransform.model.` + VAE key  -> `vae.` + the same key (our VAE keeps SAO's names);
- `model.model.` + DiT key, `conditioner.conditioners.seconds_{start,total}.` + number-conditioner key:
  reported as not converted until the DiT lands (the generator issue maps them).
VAE convs saved with `torch.nn.utils.parametrizations.weight_norm` (`parametrizations.weight.original0/1`)
are renamed to the `weight_g` / `weight_v` form.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import check_state_dict, read_state_dict, save_checkpoint
from .config import ModelConfig, SequenceConfig, VAEConfig
from .model import build_model, resolve_config
from .presets import get_preset

VAE_PREFIX = "pretransform.model."
DEFERRED_PREFIXES = ("model.model.", "conditioner.conditioners.")
_PARAMETRIZED = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}


@dataclass
class ConversionReport:
    converted: int = 0
    deferred: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"converted {self.converted} VAE tensors"]
        if self.deferred:
            lines.append(f"left out {len(self.deferred)} DiT / conditioner tensors (their conversion "
                         "arrives with the generator)")
        if self.unexpected:
            lines.append(f"ignored {len(self.unexpected)} unknown keys, e.g. {self.unexpected[:3]}")
        return "; ".join(lines)


def sao_to_triergon(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename a Stable Audio Open state dict to Tri-Ergon keys.

    Args:
        state: the tensors of SAO's `model.safetensors`, or the `state_dict` of its `model.ckpt`.
    """
    out: dict[str, torch.Tensor] = {}
    report = ConversionReport()
    for key, value in state.items():
        if key.startswith(VAE_PREFIX):
            inner = key[len(VAE_PREFIX):]
            for old, new in _PARAMETRIZED.items():
                inner = inner.replace(old, new)
            out["vae." + inner] = value
            report.converted += 1
        elif key.startswith(DEFERRED_PREFIXES):
            report.deferred.append(key)
        else:
            report.unexpected.append(key)
    if not out:
        raise ValueError(f"no Stable Audio Open VAE tensors (prefix {VAE_PREFIX!r}) in this state dict; "
                         f"first keys: {list(state)[:5]}")
    return out, report


def infer_vae_config(state: Mapping[str, torch.Tensor]) -> VAEConfig:
    """Read the Oobleck VAE sizes off converted (`vae.`-prefixed) tensors' shapes."""
    try:
        first = state["vae.encoder.layers.0.weight_v"].shape
        latent_dim = state["vae.decoder.layers.0.weight_v"].shape[1]
    except KeyError as e:
        raise ValueError(f"not an Oobleck VAE: key {e} is missing") from None
    downs = sorted(
        (int(m.group(1)), state[k].shape)
        for k in state
        if (m := re.fullmatch(r"vae\.encoder\.layers\.(\d+)\.layers\.4\.weight_v", k))
    )
    channels = first[0]
    return VAEConfig(
        audio_channels=first[1],
        channels=channels,
        c_mults=tuple(shape[0] // channels for _, shape in downs),
        strides=tuple(shape[2] // 2 for _, shape in downs),
        latent_dim=latent_dim,
    )


def config_for_vae(vae: VAEConfig) -> ModelConfig:
    """The model config for a converted SAO checkpoint: `sao-1.0` when the VAE is SAO's, else a custom one."""
    sao = get_preset("sao-1.0")
    if vae == sao.vae:
        return sao
    return dataclasses.replace(
        sao, name="sao-custom", vae=vae, dit=dataclasses.replace(sao.dit, io_channels=vae.latent_dim),
        sequence=SequenceConfig(max_seconds=sao.sequence.max_seconds, sample_rate=vae.sample_rate,
                                downsampling_ratio=vae.downsampling_ratio),
    )


def convert_sao_checkpoint(source: str | os.PathLike, output: str | os.PathLike, *,
                           preset: str | ModelConfig | None = None) -> tuple[ModelConfig, ConversionReport]:
    """Convert a Stable Audio Open checkpoint into a Tri-Ergon safetensors checkpoint.

    Args:
        source: SAO's `model.safetensors`, or its `model.ckpt` (read weights-only).
        output: the `.safetensors` file to write.
        preset: the preset the weights must fit; default: sizes read off the checkpoint (`sao-1.0` for
            the released model).
    """
    state, _ = read_state_dict(source)
    converted, report = sao_to_triergon(state)
    config = resolve_config(preset) if preset is not None else config_for_vae(infer_vae_config(converted))
    model = build_model(config, device="meta")
    check_state_dict({k: v.shape for k, v in model.state_dict().items()}, converted,
                     what=f"converted {source}")
    model.load_state_dict(converted, strict=True, assign=True)
    save_checkpoint(model, output, metadata={"converted_from": "stable-audio-open",
                                             "source": Path(source).name})
    return config, report
