"""The conditioning tensor E = [E_M, E_L, E_T] and the DiT's global conditioning (DESIGN.md, "Conditioning E").

- E_M = [e_task, e_L, e_A, e_V], each M x D: the task id 4*text + 2*audio + 1*video picks a learned e_task;
  a missing modality is zeros.
- E_L: the left and right normalised LUFS curves, zero-padded to the preset's maximum frames and linearly
  interpolated to M x D each (2M tokens).
- E_T: seconds_start and seconds_total through learned Fourier-feature number embedders (0-512 s, as SAO),
  each repeated M times (2M tokens); the two embeddings concatenated are the global conditioning.
- Beyond the paper, with `lufs_frame_aligned` (off in its presets): the same curves at the latent frame rate
  (`lufs_at_latent_rate`), which the DiT adds to its input projection, dropped with E for CFG.

`Conditions` holds the inputs and is built once per generation; `Conditioner` turns it into tensors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConditioningConfig, SequenceConfig

MODALITIES = ("text", "audio", "video")
TASK_WEIGHTS = {"text": 4, "audio": 2, "video": 1}  # the paper's task id: the one place its weights are written
LUFS_FLOOR, LUFS_CEIL = -70.0, 0.0


def normalize_lufs(lufs: torch.Tensor) -> torch.Tensor:
    """LUFS values -> [0, 1] by (clip(l, -70, 0) + 70) / 70 (the model boundary's scale)."""
    return (lufs.clamp(LUFS_FLOOR, LUFS_CEIL) - LUFS_FLOOR) / (LUFS_CEIL - LUFS_FLOOR)


def task_ids(present):
    """The paper's task id, 4*text + 2*audio + 1*video (<e_L, mask, e_V> = 5), by `TASK_WEIGHTS`, from presence
    flags per modality: bools (an int), or integer tensors [B] for a batch (a tensor of ids)."""
    return sum(TASK_WEIGHTS[name] * present[name] for name in MODALITIES)


@dataclass(frozen=True)
class Conditions:
    """Everything that conditions one generation, for a batch of B items.

    Args:
        seconds_start: [B] start of the clip within its source, in seconds (0 at inference).
        seconds_total: [B] the source's total duration in seconds (the clip's duration at inference).
        text, audio, video: pooled embeddings e_L, e_A, e_V, each [B, M, D], or None when absent.
        lufs: normalised loudness [B, 2, frames] in [0, 1] at 6 frames/s (left, right), or None.
    """

    seconds_start: torch.Tensor
    seconds_total: torch.Tensor
    text: torch.Tensor | None = None
    audio: torch.Tensor | None = None
    video: torch.Tensor | None = None
    lufs: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.seconds_total.shape[0]

    def present(self, name: str) -> bool:
        return getattr(self, name) is not None

    def _map(self, fn) -> Conditions:
        return Conditions(**{f.name: None if (x := getattr(self, f.name)) is None else fn(x) for f in fields(self)})

    def repeat(self, n: int) -> Conditions:
        """The same conditions for a batch n times larger (item-major, as `repeat_interleave`)."""
        return self._map(lambda x: x.repeat_interleave(n, dim=0))

    def to(self, device: torch.device | str) -> Conditions:
        return self._map(lambda x: x.to(device))

    def without(self, *names: str) -> Conditions:
        return replace(self, **dict.fromkeys(names))


class LearnedFourierFeatures(nn.Module):
    """x in [0, 1] -> [x, sin(2 pi x w), cos(2 pi x w)] with learned w (SAO's number-embedder features)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weights = nn.Parameter(torch.randn(dim // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, None]
        freqs = x * self.weights[None] * 2 * math.pi
        return torch.cat([x, freqs.sin(), freqs.cos()], dim=-1)


class _NumberEmbedder(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Sequential(LearnedFourierFeatures(256), nn.Linear(257, dim))


class NumberConditioner(nn.Module):
    """Seconds -> [B, 1, dim], clamped to [min_val, max_val] and scaled to [0, 1] (keys as SAO)."""

    def __init__(self, *, dim: int, min_val: float = 0.0, max_val: float = 512.0) -> None:
        super().__init__()
        self.min_val, self.max_val = min_val, max_val
        self.embedder = _NumberEmbedder(dim)

    def forward(self, seconds: torch.Tensor) -> torch.Tensor:
        x = (seconds.float().clamp(self.min_val, self.max_val) - self.min_val) / (self.max_val - self.min_val)
        return self.embedder.embedding(x.to(self.embedder.embedding[1].weight.dtype))[:, None]


class Conditioner(nn.Module):
    """Builds E [B, 8M, D], the global conditioning [B, 2D] and the frame-aligned curves from `Conditions`."""

    def __init__(self, *, config: ConditioningConfig, sequence: SequenceConfig) -> None:
        super().__init__()
        self.config = config
        self.max_lufs_frames = sequence.max_lufs_frames
        self.max_latent_frames = sequence.max_latent_frames
        self.lufs_rate, self.latent_rate = sequence.lufs_rate, sequence.latent_rate
        self.task_embedding = nn.Embedding(config.num_tasks, config.embed_dim)
        self.seconds_start = NumberConditioner(dim=config.embed_dim, max_val=config.timing_max_seconds)
        self.seconds_total = NumberConditioner(dim=config.embed_dim, max_val=config.timing_max_seconds)

    @property
    def num_tokens(self) -> int:
        return self.config.num_tokens

    def forward(self, cond: Conditions, *, dropout: bool = False, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Returns (E [B, 8M, D], global conditioning [B, 2D], frame-aligned curves [B, 2, max latent frames]
        or None when `lufs_frame_aligned` is off).

        Args:
            cond: the conditions.
            dropout: training-mode dropout: each of text / audio / video dropped with p = modality_dropout
                (the task id follows), then the whole E zeroed with p = cfg_dropout, and the frame-aligned
                curves with it (the unconditional model sees no curve on either path).
            generator: seeds the dropout draws.
        """
        b, m, d = cond.batch_size, self.config.tokens_per_embedding, self.config.embed_dim
        dev = self.task_embedding.weight.device
        dtype = self.task_embedding.weight.dtype
        keep = {name: torch.full((b,), cond.present(name), dtype=torch.bool, device=dev) for name in MODALITIES}
        if dropout:
            for name in MODALITIES:
                keep[name] &= _bernoulli(b, 1 - self.config.modality_dropout, generator, dev)
        ids = task_ids({name: flag.long() for name, flag in keep.items()})
        tokens = [self.task_embedding(ids)[:, None].expand(b, m, d)]
        for name in MODALITIES:
            emb = getattr(cond, name)
            if emb is None:
                tokens.append(torch.zeros(b, m, d, device=dev, dtype=dtype))
            else:
                assert emb.shape == (b, m, d), f"{name}: {emb.shape=}, expected {(b, m, d)}"
                tokens.append(emb.to(device=dev, dtype=dtype) * keep[name][:, None, None])
        tokens.append(self.lufs_tokens(cond.lufs, b).to(dtype))
        start, total = self.seconds_start(cond.seconds_start.to(dev)), self.seconds_total(cond.seconds_total.to(dev))
        tokens += [start.expand(b, m, d), total.expand(b, m, d)]
        e = torch.cat(tokens, dim=1)
        frames = self.aligned_lufs(cond.lufs, b).to(dtype) if self.config.lufs_frame_aligned else None
        if dropout:
            keep_all = _bernoulli(b, 1 - self.config.cfg_dropout, generator, dev)[:, None, None]
            e = e * keep_all
            frames = None if frames is None else frames * keep_all
        return e, torch.cat([start[:, 0], total[:, 0]], dim=-1), frames

    def lufs_tokens(self, lufs: torch.Tensor | None, batch: int) -> torch.Tensor:
        """E_L: [B, 2, frames] normalised curves -> [B, 2M, D] (left M tokens, then right M tokens)."""
        m, d = self.config.tokens_per_embedding, self.config.embed_dim
        dev = self.task_embedding.weight.device
        if lufs is None:
            return torch.zeros(batch, 2 * m, d, device=dev)
        assert lufs.dim() == 3 and lufs.shape[:2] == (batch, 2), f"{lufs.shape=} {batch=}"
        return lufs_embedding(lufs.float().to(dev), max_frames=self.max_lufs_frames, tokens=m, dim=d)

    def aligned_lufs(self, lufs: torch.Tensor | None, batch: int) -> torch.Tensor:
        """The frame-aligned path: [B, 2, frames] normalised curves -> [B, 2, max latent frames] float32 (zeros
        without a curve, as E_L)."""
        dev = self.task_embedding.weight.device
        if lufs is None:
            return torch.zeros(batch, 2, self.max_latent_frames, device=dev)
        assert lufs.dim() == 3 and lufs.shape[:2] == (batch, 2), f"{lufs.shape=} {batch=}"
        return lufs_at_latent_rate(lufs.float().to(dev), max_frames=self.max_lufs_frames, lufs_rate=self.lufs_rate,
                                   latent_rate=self.latent_rate, latent_frames=self.max_latent_frames)


def lufs_embedding(curves: torch.Tensor, *, max_frames: int, tokens: int, dim: int) -> torch.Tensor:
    """E_L of normalised curves [B, 2, frames]: each zero-padded to `max_frames` and linearly interpolated
    (align_corners=True) to tokens * dim values -> [B, 2 * tokens, dim], left tokens first."""
    frames = curves.shape[-1]
    _check_frames(frames, max_frames)
    padded = F.pad(curves, (0, max_frames - frames))
    return F.interpolate(padded, size=tokens * dim, mode="linear", align_corners=True).reshape(-1, 2 * tokens, dim)


def lufs_at_latent_rate(curves: torch.Tensor, *, max_frames: int, lufs_rate: float, latent_rate: float,
                        latent_frames: int) -> torch.Tensor:
    """Normalised curves [B, 2, frames] at `lufs_rate` -> [B, 2, latent_frames] at `latent_rate`.

    Frames sit at their centres: curve frame k measures [k, k + 1) / lufs_rate s (`momentary_lufs`'s windows)
    and stands at (k + 0.5) / lufs_rate; latent frame i covers [i, i + 1) / latent_rate and stands at
    (i + 0.5) / latent_rate. A latent frame takes the curve linearly interpolated at its centre, the first and
    last values held out to the curve's edges (0 and frames / lufs_rate s); latent frames whose centre lies past
    the curve's end are zero, as E_L zero-pads the curve to `max_frames`.

    Args:
        curves: normalised curves [B, 2, frames], at most `max_frames` frames.
        max_frames: the preset's maximum curve frames (the same limit as E_L's).
        lufs_rate, latent_rate: frames per second of the curve and of the latents.
        latent_frames: output frames (the preset's maximum latent frames; the DiT takes the first ones).
    """
    frames = curves.shape[-1]
    _check_frames(frames, max_frames)
    if frames < 1:
        raise ValueError("LUFS curve has no frames; give at least one")
    centres = (torch.arange(latent_frames, dtype=torch.float64, device=curves.device) + 0.5) / latent_rate
    pos = (centres * lufs_rate - 0.5).clamp(0, frames - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=frames - 1)
    w = (pos - lo).to(curves.dtype)
    inside = (centres < frames / lufs_rate).to(curves.dtype)
    return (curves[..., lo] * (1 - w) + curves[..., hi] * w) * inside


def _check_frames(frames: int, max_frames: int) -> None:
    if frames > max_frames:
        raise ValueError(f"LUFS curve has {frames} frames, more than the maximum {max_frames} of the preset's window")


def _bernoulli(n: int, p_keep: float, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=generator) < p_keep).to(device)
