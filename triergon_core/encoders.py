"""Condition encoders: text, reference audio and video -> pooled embeddings e_L, e_A, e_V [B, M, D].

The real encoders are LanguageBind's towers, loaded from a local folder (they arrive with the media issue).
The `tiny` preset carries `TinyEncoders`: small random-weight towers of the same interface, seeded, so that
every conditioning path runs in tests and demos without any download. Their embeddings carry no meaning.
"""

from __future__ import annotations

import os
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConditioningConfig

TINY_SEED = 1234


class ConditionEncoders(Protocol):
    """What `generate` needs from an encoder set; each method returns unit-norm [B, M, D] embeddings.

    `identity` names the encoders and their weights (it keys the embedding cache).
    """

    identity: str

    def encode_text(self, texts: list[str]) -> torch.Tensor: ...

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor: ...

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor: ...

    def encode_video_file(self, path: str | os.PathLike) -> torch.Tensor: ...


class TinyEncoders(nn.Module):
    """Random-weight stand-ins for LanguageBind's towers (for the `tiny` preset).

    text: UTF-8 bytes -> byte embedding -> mean -> linear; audio [B, 2, T] (44.1 kHz) -> log spectrum in 32
    bands, averaged over time -> linear; video frames [B, T, H, W, 3] in [0, 1] -> 8x8 thumbnails averaged over
    time -> linear. Every output is L2-normalised, as LanguageBind's pooled embeddings are.
    """

    VIDEO_FRAMES = 8
    VIDEO_SIZE = (32, 32)

    def __init__(self, *, config: ConditioningConfig, seed: int = TINY_SEED) -> None:
        super().__init__()
        self.tokens, d = config.tokens_per_embedding, config.embed_dim
        self.identity = f"tiny-random:seed={seed}:{self.tokens}x{d}"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.byte_embedding = nn.Embedding(256, 32)
            self.text_proj = nn.Linear(32, self.tokens * d)
            self.audio_proj = nn.Linear(32, self.tokens * d)
            self.video_proj = nn.Linear(3 * 8 * 8, self.tokens * d)

    def _out(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.reshape(x.shape[0], self.tokens, -1), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        dev = self.byte_embedding.weight.device
        pooled = torch.stack([
            self.byte_embedding(torch.tensor(list(t.encode("utf-8")) or [0], device=dev)).mean(0) for t in texts
        ])
        return self._out(self.text_proj(pooled))

    def encode_audio(self, audio: torch.Tensor) -> torch.Tensor:
        assert audio.dim() == 3, f"{audio.shape=}"
        mono = audio.to(self.audio_proj.weight).mean(1)
        if mono.shape[-1] < 2048:
            mono = F.pad(mono, (0, 2048 - mono.shape[-1]))
        spec = torch.stft(mono, 2048, hop_length=1024, window=torch.hann_window(2048, device=mono.device),
                          return_complex=True).abs()
        bands = F.adaptive_avg_pool1d(torch.log1p(spec).transpose(1, 2), 32).mean(1)
        return self._out(self.audio_proj(bands))

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        assert frames.dim() == 5 and frames.shape[-1] == 3, f"expected [B, T, H, W, 3], got {frames.shape=}"
        b, t = frames.shape[:2]
        x = frames.to(self.video_proj.weight).flatten(0, 1).permute(0, 3, 1, 2)
        thumbs = F.adaptive_avg_pool2d(x, 8).reshape(b, t, -1).mean(1)
        return self._out(self.video_proj(thumbs))


    def encode_video_file(self, path: str | os.PathLike) -> torch.Tensor:
        """A video file: 8 frames at segment centres, read by timestamps and scaled while decoding."""
        from .video import read_frames

        return self.encode_video(read_frames(path, num_frames=self.VIDEO_FRAMES, size=self.VIDEO_SIZE).to_float()[None])


def build_encoders(config: ConditioningConfig) -> ConditionEncoders | None:
    """The encoders a preset carries by itself: TinyEncoders for `tiny`, None where LanguageBind is needed."""
    return TinyEncoders(config=config) if config.encoder == "tiny-random" else None
