"""Audio embedders for the distribution metrics: one interface for the SynthFoley classifier trained here and
for OpenL3 and PaSST built from a user's weights file (the paper's FD_openl3 and KL_passt).

Every embedder takes a batch `[B, C, N]` at any rate, mixes it to mono (the channel mean; OpenL3 can also embed
L and R apart), resamples it with `resample_sinc` (plain PyTorch, so embeddings do not depend on whether
torchaudio is installed) and returns
`(embeddings [B, D], probabilities [B, K] or None)`: a clip-level embedding for `metrics.frechet_distance` and,
for classifiers, per-class probabilities for `metrics.kl_divergence`.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Set
from pathlib import Path

import numpy as np
import torch

from .checkpoint import CheckpointError, read_state_dict
from .languagebind_audio_features import resample_sinc

__all__ = ["EMBEDDERS", "AudioEmbedder", "check_batch", "load_embedder", "load_weights", "mono_batch",
           "peak_normalise"]

# kind -> (module, loader function): modules are imported on use, so one embedder's code never loads another's
EMBEDDERS = {
    "synthfoley": (".synthfoley.classifier", "load_classifier"),
    "openl3": (".openl3", "load_openl3"),
    "passt": (".passt", "load_passt"),
}


def check_batch(audio: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
    """`[B, C, N]` audio as a float32 tensor, after checking its shape, values and rate.

    Raises:
        ValueError: not three axes, no samples, NaN/inf samples or a bad rate.
    """
    audio = torch.as_tensor(audio)
    if audio.ndim != 3 or audio.shape[-1] == 0 or audio.shape[1] == 0:
        raise ValueError(f"audio must be a batch [clips, channels, samples] with samples, got shape "
                         f"{tuple(audio.shape)}; add a batch axis with audio[None] for one clip")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate}")
    audio = audio.float()
    if not torch.isfinite(audio).all():
        raise ValueError("audio contains NaN/inf samples; fix or remove them")
    return audio


def mono_batch(audio: torch.Tensor | np.ndarray, sample_rate: int, target_rate: int) -> torch.Tensor:
    """`[B, C, N]` audio at `sample_rate` -> float32 mono `[B, N']` at `target_rate` (channel mean, then sinc
    resampling); checked as `check_batch` does."""
    return resample_sinc(check_batch(audio, sample_rate).mean(1), int(sample_rate), target_rate)


def peak_normalise(audio: torch.Tensor, peak_db: float = -1.0) -> torch.Tensor:
    """Scale each clip of `[B, ...]` so that its sample peak is `peak_db` dBFS (silent clips stay silent), as
    stable-audio-metrics does before OpenL3 and PaSST: the embeddings then do not depend on the level."""
    peak = audio.abs().flatten(1).amax(1).clamp_min(1e-12)
    return audio * (10 ** (peak_db / 20) / peak).view(-1, *([1] * (audio.ndim - 1)))


def load_weights(module: torch.nn.Module, path: str | os.PathLike, *, what: str,
                 adapt: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = dict,
                 may_miss: Set[str] = frozenset()) -> torch.nn.Module:
    """Load a weights file (safetensors, or a weights-only pickle) into `module`, strictly.

    Args:
        module: the network to fill.
        path: the file.
        what: what the file should hold, for the error message (e.g. "an OpenL3 mel256 state dict").
        adapt: maps the file's keys to the module's (drops wrappers' prefixes, extra entries).
        may_miss: keys the file may lack (the module's values are kept).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: an unreadable file or one that does not fit, in one line naming the file and the first
            missing, unexpected or mis-shaped keys.
    """
    path = Path(path)
    try:
        state = adapt(read_state_dict(path)[0])
    except CheckpointError as e:
        raise CheckpointError(" ".join(str(e).split())) from None
    expected = module.state_dict()
    problems = []
    for title, keys in (("missing", sorted(set(expected) - set(state) - set(may_miss))),
                        ("unexpected", sorted(set(state) - set(expected))),
                        ("mis-shaped", sorted(k for k in set(expected) & set(state)
                                              if state[k].shape != expected[k].shape))):
        if keys:
            problems.append(f"{len(keys)} {title} key(s) ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    if problems:
        raise CheckpointError(f"{path} is not {what}: {'; '.join(problems)}")
    module.load_state_dict({**expected, **state})
    return module.eval()


class AudioEmbedder(torch.nn.Module, ABC):
    """A frozen audio network with `embed(audio [B, C, N], sample_rate) -> (embeddings [B, D], probabilities
    [B, K] or None)`. Subclasses set `sample_rate` (the rate their network reads), `dim` (D), `labels` (the K
    class names, empty for a pure embedder) and implement `forward(mono [B, N] at sample_rate)`."""

    sample_rate: int
    dim: int
    labels: tuple[str, ...] = ()

    @abstractmethod
    def forward(self, mono: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Mono `[B, N]` at `self.sample_rate` -> (embeddings `[B, D]`, probabilities `[B, K]` or None)."""

    @torch.inference_mode()
    def embed(self, audio: torch.Tensor | np.ndarray, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Embed a batch of clips.

        Args:
            audio: `[B, C, N]` float audio (any channel count; mixed to mono).
            sample_rate: its rate in Hz (resampled to `self.sample_rate`).

        Returns:
            embeddings `[B, D]` float32 on the CPU, and class probabilities `[B, K]` (None for an embedder
            without classes).
        """
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            emb, probs = self(mono_batch(audio, sample_rate, self.sample_rate).to(device))
        finally:
            self.train(was_training)
        return emb.float().cpu(), None if probs is None else probs.float().cpu()


def load_embedder(kind: str, path: str | os.PathLike | None = None, **options) -> AudioEmbedder:
    """Build an embedder from a weights file.

    Args:
        kind: "synthfoley" (the classifier trained by `synthfoley.classifier.train_classifier`; path None: the
            shipped `weights/synthfoley-classifier.safetensors`), "openl3" (a torchopenl3 state dict) or "passt"
            (a hear21passt state dict). See each module's loader for the file layouts accepted.
        path: the weights file.
        options: passed to the kind's loader (e.g. OpenL3's `embedding_size`, PaSST's `activation`).

    Raises:
        ValueError: an unknown kind, no path for OpenL3 / PaSST, or a file that does not fit (a CheckpointError: one
            line naming the file).
    """
    if kind not in EMBEDDERS:
        raise ValueError(f"unknown embedder {kind!r}; choose from {', '.join(EMBEDDERS)}")
    if path is None and kind != "synthfoley":
        raise ValueError(f"the {kind} embedder needs your weights file (nothing is downloaded); pass its path")
    module, loader = EMBEDDERS[kind]
    return getattr(importlib.import_module(module, __package__), loader)(path, **options)
