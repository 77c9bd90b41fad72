"""The one adapter between Stable Audio Open checkpoints and Tri-Ergon keys.

SAO's released `model.safetensors` (and the `state_dict` of `model.ckpt`) holds the module tree of
stable-audio-tools' `ConditionedDiffusionModelWrapper`; our modules keep SAO's names, so only prefixes move:

| SAO                                          | Tri-Ergon                   |
| -------------------------------------------- | --------------------------- |
| `pretransform.model.` + VAE key              | `vae.` + the same key       |
| `model.model.` + DiT key                     | `dit.` + the same key       |
| `conditioner.conditioners.seconds_start.` .. | `conditioner.seconds_start.` |
| `conditioner.conditioners.seconds_total.` .. | `conditioner.seconds_total.` |

VAE convs saved with `torch.nn.utils.parametrizations.weight_norm` (`parametrizations.weight.original0/1`)
are renamed to the `weight_g` / `weight_v` form. What SAO lacks (the task embedding; the whole DiT and
conditioner for a VAE-only file) is newly initialised and reported by name.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import assemble_model, read_state_dict, save_checkpoint, stored_dtype
from .checks import check_output_path
from .config import ConditioningConfig, DiTConfig, ModelConfig, SequenceConfig, VAEConfig
from .model import COMPONENTS, resolve_config
from .presets import get_preset

PREFIXES = (
    ("pretransform.model.", "vae."),
    ("model.model.", "dit."),
    ("conditioner.conditioners.seconds_start.", "conditioner.seconds_start."),
    ("conditioner.conditioners.seconds_total.", "conditioner.seconds_total."),
)
# Tri-Ergon parameters that no SAO checkpoint has: always newly initialised on conversion.
TRIERGON_ONLY = frozenset({"conditioner.task_embedding.weight"})
SAO_HEAD_DIM = 64
LANGUAGEBIND_DIM = 768  # not recoverable from weight shapes; every SAO DiT uses 64
_PARAMETRIZED = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}


@dataclass
class ConversionReport:
    converted: dict[str, int] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    dtype: torch.dtype = torch.float32

    def summary(self) -> str:
        parts = [f"converted {sum(self.converted.values())} tensors ("
                 + ", ".join(f"{name} {n}" for name, n in self.converted.items()) + ")"]
        if self.dtype != torch.float32:
            parts.append(f"stored as {str(self.dtype).removeprefix('torch.')}, as in the source (loading casts to "
                         "float32 unless told otherwise)")
        if self.new:
            parts.append("newly initialised (not in the SAO checkpoint): " + _group_names(self.new))
        if self.ignored:
            parts.append(f"ignored {len(self.ignored)} keys outside SAO's DiT / VAE / timing conditioners, "
                         f"e.g. {self.ignored[:3]}")
        return "\n".join(parts)


def sao_to_triergon(state: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Rename a Stable Audio Open state dict to Tri-Ergon keys (no tensor is changed).

    Args:
        state: the tensors of SAO's `model.safetensors`, or the `state_dict` of its `model.ckpt`.
    """
    out: dict[str, torch.Tensor] = {}
    report = ConversionReport()
    for key, value in state.items():
        for old, new in PREFIXES:
            if key.startswith(old):
                inner = key[len(old):]
                for before, after in _PARAMETRIZED.items():
                    inner = inner.replace(before, after)
                out[new + inner] = value
                component = new.split(".")[0]
                report.converted[component] = report.converted.get(component, 0) + 1
                break
        else:
            report.ignored.append(key)
    if not any(k.startswith("vae.") for k in out):
        raise ValueError(f"no Stable Audio Open VAE tensors (prefix 'pretransform.model.') in this state dict; "
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


def infer_dit_config(state: Mapping[str, torch.Tensor]) -> DiTConfig | None:
    """Read the DiT sizes off converted (`dit.`-prefixed) tensors; None when there is no DiT."""
    if "dit.transformer.project_in.weight" not in state:
        return None
    embed_dim, io_channels = state["dit.transformer.project_in.weight"].shape
    cond_out, cond_dim = state["dit.to_cond_embed.0.weight"].shape
    depth = len({m.group(1) for k in state if (m := re.match(r"dit\.transformer\.layers\.(\d+)\.", k))})
    return DiTConfig(
        io_channels=io_channels, embed_dim=embed_dim, depth=depth, num_heads=embed_dim // SAO_HEAD_DIM,
        cond_token_dim=cond_dim, global_cond_dim=state["dit.to_global_embed.0.weight"].shape[1],
        ff_mult=state["dit.transformer.layers.0.ff.ff.2.weight"].shape[1] // embed_dim,
        project_cond_tokens=cond_out != cond_dim,
    )


def config_for_checkpoint(state: Mapping[str, torch.Tensor]) -> ModelConfig:
    """The model config that converted SAO tensors fit: `sao-1.0` for the released model.

    A file without a DiT gets SAO's DiT sizes when its VAE is SAO's, else the `tiny` preset's DiT sizes.
    """
    sao = get_preset("sao-1.0")
    vae = infer_vae_config(state)
    dit = infer_dit_config(state)
    tiny = get_preset("tiny")
    if dit is None:
        base = sao.dit if vae == sao.vae else tiny.dit
        dit = dataclasses.replace(base, io_channels=vae.latent_dim)
    if dit.global_cond_dim != 2 * dit.cond_token_dim:
        raise ValueError(f"this DiT's global conditioning ({dit.global_cond_dim}) is not two timing embeddings of "
                         f"its token width ({dit.cond_token_dim}), which Tri-Ergon's conditioning needs")
    config = ModelConfig(
        name="sao-custom", vae=vae, dit=dit,
        # LanguageBind's embeddings are 768-wide; narrower tokens can only come from the tiny random towers
        conditioning=ConditioningConfig(embed_dim=dit.cond_token_dim, encoder="languagebind"
                                        if dit.cond_token_dim == LANGUAGEBIND_DIM else "tiny-random"),
        sequence=SequenceConfig(max_seconds=sao.sequence.max_seconds, sample_rate=vae.sample_rate,
                                downsampling_ratio=vae.downsampling_ratio),
    )
    return sao if dataclasses.replace(config, name=sao.name) == sao else config


def convert_sao_checkpoint(source: str | os.PathLike, output: str | os.PathLike, *,
                           preset: str | ModelConfig | None = None, seed: int = 0,
                           ) -> tuple[ModelConfig, ConversionReport]:
    """Convert a Stable Audio Open checkpoint into a Tri-Ergon safetensors checkpoint.

    Args:
        source: SAO's `model.safetensors`, or its `model.ckpt` (read weights-only).
        output: the `.safetensors` file to write.
        preset: the preset the weights must fit; default: sizes read off the checkpoint (`sao-1.0` for
            the released model).
        seed: seeds the initialisation of what the checkpoint lacks.
    """
    check_output_path(output, formats=(".safetensors",), what="output", inputs={"the source checkpoint": source})
    state, _ = read_state_dict(source)
    converted, report = sao_to_triergon(state)
    config = resolve_config(preset) if preset is not None else config_for_checkpoint(converted)
    model, report.new = assemble_model(config, converted, partial=True, allowed_missing=TRIERGON_ONLY, seed=seed,
                                       what=f"converted {source}")
    # one dtype for the whole file: what SAO lacks is initialised in float32, the rest keeps the source's
    report.dtype = stored_dtype(converted)
    model = model.to(dtype=report.dtype)
    save_checkpoint(model, output, metadata={"converted_from": "stable-audio-open", "source": Path(source).name,
                                             "newly_initialised": ",".join(report.new)})
    return config, report


def _group_names(keys: list[str]) -> str:
    """Key names, with whole components shortened to `name.* (N tensors)`."""
    out = []
    for component in COMPONENTS:
        mine = [k for k in keys if k.startswith(component + ".")]
        if len(mine) > 4:
            out.append(f"{component}.* ({len(mine)} tensors)")
        else:
            out.extend(mine)
    return ", ".join(out)
