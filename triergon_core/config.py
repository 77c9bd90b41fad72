"""Typed configuration: VAE, DiT, conditioning and sequence sizes, and the whole-model config.

Derived sizes are properties, so a config holds only what a user chooses. JSON is used only to store a
config inside a checkpoint's metadata (`ModelConfig.to_json` / `ModelConfig.from_json`).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any

SAMPLE_RATE = 44100
LUFS_RATE = 6.0
# T_LUFS frame poolings (`lufs_predictor.FrameFeatures`) -> the feature size in DINOv2 hidden sizes
FRAME_POOLINGS = {"cls": 1, "cls+grid": 5}


def frames_for(seconds: float, rate: float = LUFS_RATE) -> int:
    """Frames covering `seconds`: ceil(seconds * rate), rounded to 6 decimals first so 2.37 s at 6/s is 15.

    Args:
        seconds: a duration in seconds.
        rate: frames per second.
    """
    return math.ceil(round(seconds * rate, 6))


@dataclass(frozen=True, kw_only=True)
class VAEConfig:
    """Oobleck VAE (Stable Audio Open's autoencoder) sizes.

    The encoder emits `2 * latent_dim` channels (mean and scale of the VAE bottleneck); the decoder takes
    `latent_dim`. Channel widths are `channels * [1, *c_mults]`, one encoder/decoder block per stride.
    """

    audio_channels: int = 2
    channels: int = 128
    c_mults: tuple[int, ...] = (1, 2, 4, 8, 16)
    strides: tuple[int, ...] = (2, 4, 4, 8, 8)
    latent_dim: int = 64
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        if len(self.c_mults) != len(self.strides):
            raise ValueError(f"c_mults and strides need one entry per block: {self.c_mults=} {self.strides=}")
        if min(self.strides) < 1 or self.channels < 1 or self.latent_dim < 1:
            raise ValueError(f"sizes must be positive: {self}")

    @property
    def downsampling_ratio(self) -> int:
        return math.prod(self.strides)

    @property
    def encoder_out_channels(self) -> int:
        return 2 * self.latent_dim

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(self.channels * m for m in (1, *self.c_mults))


@dataclass(frozen=True, kw_only=True)
class DiTConfig:
    """Stable-Audio-style diffusion transformer sizes (cross-attention in every block).

    `frame_cond_dim` is the channel count of a frame-aligned condition [B, frame_cond_dim, frames] projected
    and added to the input projection (SAO's `input_concat_dim`, see `DiT`); 0: none, SAO's DiT as is.
    """

    io_channels: int = 64
    embed_dim: int = 1536
    depth: int = 24
    num_heads: int = 24
    cond_token_dim: int = 768
    global_cond_dim: int = 1536
    ff_mult: int = 4
    project_cond_tokens: bool = False
    frame_cond_dim: int = 0

    def __post_init__(self) -> None:
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim must split into heads: {self.embed_dim=} {self.num_heads=}")
        if self.head_dim < 32:
            raise ValueError(f"head_dim below 32 breaks the rotary layout of SAO: {self.head_dim=}")
        if self.frame_cond_dim < 0:
            raise ValueError(f"frame_cond_dim must be 0 (none) or a channel count, got {self.frame_cond_dim}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads


@dataclass(frozen=True, kw_only=True)
class ConditioningConfig:
    """Sizes of the conditioning tensor E = [E_M, E_L, E_T] (DESIGN.md, "Conditioning E").

    `tokens_per_embedding` is M: e_task, e_L, e_A and e_V are each M x `embed_dim`, E_L and E_T are 2M each.
    `encoder` names the condition encoders: "languagebind" (towers from a local folder) or "tiny-random"
    (LanguageBind's towers at tiny size with seeded random weights, built in memory: the tiny preset's).
    `lufs_frame_aligned` (beyond the paper, off in its presets) also gives the DiT the L/R curves resampled
    to the latent frame rate, added to its input projection (`lufs_at_latent_rate`); `DiTConfig.frame_cond_dim`
    must then be `frame_cond_dim` (2), and `ModelConfig.with_lufs_frame_aligned` sets both.
    """

    embed_dim: int = 768
    tokens_per_embedding: int = 1
    num_tasks: int = 8
    lufs_rate: float = LUFS_RATE
    timing_max_seconds: float = 512.0
    modality_dropout: float = 0.3
    cfg_dropout: float = 0.1
    encoder: str = "languagebind"
    lufs_frame_aligned: bool = False

    def __post_init__(self) -> None:
        if self.encoder not in ("languagebind", "tiny-random"):
            raise ValueError(f"unknown condition encoder {self.encoder!r}; use 'languagebind' or 'tiny-random'")

    @property
    def num_tokens(self) -> int:
        m = self.tokens_per_embedding
        return 4 * m + 2 * m + 2 * m

    @property
    def frame_cond_dim(self) -> int:
        """Channels of the frame-aligned condition: the L and R curves when `lufs_frame_aligned`, else none."""
        return 2 if self.lufs_frame_aligned else 0


@dataclass(frozen=True, kw_only=True)
class SequenceConfig:
    """Audio, latent and LUFS sequence lengths for a preset's window."""

    max_seconds: float
    sample_rate: int = SAMPLE_RATE
    downsampling_ratio: int = 2048
    lufs_rate: float = LUFS_RATE

    @property
    def latent_rate(self) -> float:
        return self.sample_rate / self.downsampling_ratio

    def num_samples(self, seconds: float) -> int:
        return round(seconds * self.sample_rate)

    def latent_frames(self, seconds: float) -> int:
        # round() first so that e.g. 2.37 s is not pushed one frame up by float noise.
        return math.ceil(self.num_samples(seconds) / self.downsampling_ratio)

    def lufs_frames(self, seconds: float) -> int:
        return frames_for(seconds, self.lufs_rate)

    @property
    def max_latent_frames(self) -> int:
        return self.latent_frames(self.max_seconds)

    @property
    def max_lufs_frames(self) -> int:
        return self.lufs_frames(self.max_seconds)

    def check_seconds(self, seconds: float) -> None:
        """Raise a ValueError naming the limit when `seconds` does not fit this window."""
        if not math.isfinite(seconds) or seconds <= 0:
            raise ValueError(f"duration must be a positive number of seconds, got {seconds!r}")
        if self.num_samples(seconds) < 1:
            raise ValueError(f"duration {seconds:g} s is shorter than one sample at {self.sample_rate} Hz; give at "
                             f"least {1 / self.sample_rate:.6f} s")
        if seconds > self.max_seconds:
            raise ValueError(
                f"duration {seconds:g} s is longer than this preset's window of {self.max_seconds:g} s"
            )


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Everything needed to build a Tri-Ergon model; stored as JSON in checkpoint metadata."""

    name: str
    vae: VAEConfig = field(default_factory=VAEConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    conditioning: ConditioningConfig = field(default_factory=ConditioningConfig)
    sequence: SequenceConfig = field(default_factory=lambda: SequenceConfig(max_seconds=10.0))
    # The DiT samples VAE latents divided by this (Stable Audio's pretransform `scale`): set near the spread of
    # the VAE's posterior means, the DiT's data has unit scale, as its noise schedule assumes. 1: the paper's.
    latent_scale: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latent_scale) and self.latent_scale > 0):
            raise ValueError(f"latent_scale must be a positive number, got {self.latent_scale!r}")
        if self.sequence.downsampling_ratio != self.vae.downsampling_ratio:
            raise ValueError(
                f"sequence and VAE disagree on the latent rate: {self.sequence.downsampling_ratio=} "
                f"{self.vae.downsampling_ratio=}"
            )
        if self.dit.io_channels != self.vae.latent_dim:
            raise ValueError(f"DiT io channels must equal the VAE latent size: {self.dit=} {self.vae=}")
        if self.sequence.sample_rate != self.vae.sample_rate:
            raise ValueError(f"{self.sequence.sample_rate=} differs from {self.vae.sample_rate=}")
        d = self.conditioning.embed_dim
        if self.dit.cond_token_dim != d or self.dit.global_cond_dim != 2 * d:
            raise ValueError(
                f"the DiT must take the conditioning's tokens ({d}) and its two timing embeddings ({2 * d}) "
                f"as global conditioning: {self.dit.cond_token_dim=} {self.dit.global_cond_dim=}"
            )
        if self.dit.frame_cond_dim != self.conditioning.frame_cond_dim:
            raise ValueError(
                f"the DiT's frame-aligned input must take the conditioner's {self.conditioning.frame_cond_dim} "
                f"channels (lufs_frame_aligned={self.conditioning.lufs_frame_aligned}): {self.dit.frame_cond_dim=}; "
                "ModelConfig.with_lufs_frame_aligned sets both"
            )

    def with_lufs_frame_aligned(self, on: bool = True) -> ModelConfig:
        """This config with the frame-aligned LUFS path turned on (or off): the conditioner's flag and the
        DiT's input together."""
        conditioning = dataclasses.replace(self.conditioning, lufs_frame_aligned=on)
        return dataclasses.replace(self, conditioning=conditioning,
                                   dit=dataclasses.replace(self.dit, frame_cond_dim=conditioning.frame_cond_dim))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        sections = {"vae": VAEConfig, "dit": DiTConfig, "conditioning": ConditioningConfig,
                    "sequence": SequenceConfig}
        unknown = set(data) - {"name", "latent_scale", *sections}
        if unknown:
            raise ValueError(f"unknown model config fields: {sorted(unknown)}")
        kwargs: dict[str, Any] = {"name": data["name"]}
        if "latent_scale" in data:  # older checkpoints lack it: 1
            kwargs["latent_scale"] = float(data["latent_scale"])
        for key, section in sections.items():
            if key in data:
                kwargs[key] = _section_from_dict(section, data[key])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


def _section_from_dict(cls: type, data: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {sorted(unknown)}")
    # JSON has no tuples; the dataclasses use tuples so that configs stay hashable.
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})
