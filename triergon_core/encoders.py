"""Condition encoders: text, reference audio and video -> pooled embeddings e_L, e_A, e_V [B, M, D].

The encoders are LanguageBind's towers (`languagebind.py`): the released checkpoints, loaded from a local folder
(`load_languagebind`), or, for the `tiny` preset, the same architecture at tiny size with seeded random weights,
built in memory (`LanguageBindEncoders.tiny_random`), so that every conditioning path runs in tests and demos
without any download. The tiny towers' embeddings carry no meaning.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from typing import Protocol

import torch

from .config import ConditioningConfig


class ConditionEncoders(Protocol):
    """What `generate` needs from an encoder set; each encode method returns unit-norm [B, M, D] embeddings.

    `identity` names the encoders and their weights (it keys the embedding cache). `embed_dim` is D, read
    cheaply (from config files, never by loading weights): a model's `conditioning.embed_dim` must equal it.
    `require` raises, again without loading weights, unless each named modality ("text", "audio", "video")
    can be encoded (e.g. its tower's folder is there), so a missing tower is reported before a model is built.
    `encode_video_file` encodes the span [start, end] seconds of the file (end None: to its end). `to(device)`
    moves the towers (offloading: on the GPU only while they encode).
    """

    identity: str
    embed_dim: int

    def require(self, modalities: Collection[str]) -> None: ...

    def to(self, device: torch.device | str) -> ConditionEncoders: ...

    def encode_text(self, texts: list[str]) -> torch.Tensor: ...

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor: ...

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor: ...

    def encode_video_file(self, path: str | os.PathLike, *, start: float = 0.0,
                          end: float | None = None) -> torch.Tensor: ...


def build_encoders(config: ConditioningConfig) -> ConditionEncoders | None:
    """The encoders a preset carries by itself: for "tiny-random" (the `tiny` preset), LanguageBind's towers at
    tiny size with seeded random weights, projecting to `config.embed_dim` (built once per process, then
    shared); None for "languagebind", whose released towers come from a local folder (`load_languagebind`)."""
    if config.encoder != "tiny-random":
        return None
    if config.tokens_per_embedding != 1:
        raise ValueError(f"LanguageBind's towers give one pooled embedding per condition (tokens_per_embedding 1), "
                         f"not {config.tokens_per_embedding}")
    from .languagebind import LanguageBindEncoders

    return LanguageBindEncoders.tiny_random(embed_dim=config.embed_dim)
