"""Oobleck VAE, as Stable Audio Open 1.0: encoder, VAE bottleneck (mean / scale, KL) and decoder.

Module and parameter names are those of stable-audio-tools, so SAO's autoencoder weights load unchanged.
Long audio is encoded and decoded in overlapping windows (`chunk_frames`, `overlap_frames`) written into one
preallocated output, so working memory is bounded by the window, not by the audio length.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import VAEConfig
from .layers import SnakeBeta, WNConv1d, WNConvTranspose1d

STDEV_FLOOR = 1e-4
ProgressFn = Callable[[int, int], None]


class ResidualUnit(nn.Module):
    def __init__(self, *, channels: int, dilation: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            SnakeBeta(channels),
            WNConv1d(channels, channels, kernel_size=7, dilation=dilation, padding=3 * dilation),
            SnakeBeta(channels),
            WNConv1d(channels, channels, kernel_size=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.layers(x)


class EncoderBlock(nn.Module):
    def __init__(self, *, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            ResidualUnit(channels=in_channels, dilation=1),
            ResidualUnit(channels=in_channels, dilation=3),
            ResidualUnit(channels=in_channels, dilation=9),
            SnakeBeta(in_channels),
            WNConv1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                     padding=math.ceil(stride / 2)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class DecoderBlock(nn.Module):
    def __init__(self, *, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            SnakeBeta(in_channels),
            WNConvTranspose1d(in_channels, out_channels, kernel_size=2 * stride, stride=stride,
                              padding=math.ceil(stride / 2)),
            ResidualUnit(channels=out_channels, dilation=1),
            ResidualUnit(channels=out_channels, dilation=3),
            ResidualUnit(channels=out_channels, dilation=9),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OobleckEncoder(nn.Module):
    """Audio [B, audio_channels, T] -> [B, 2 * latent_dim, T / prod(strides)] (mean and scale)."""

    def __init__(self, *, config: VAEConfig) -> None:
        super().__init__()
        w = config.widths
        self.layers = nn.Sequential(
            WNConv1d(config.audio_channels, w[0], kernel_size=7, padding=3),
            *(EncoderBlock(in_channels=w[i], out_channels=w[i + 1], stride=s)
              for i, s in enumerate(config.strides)),
            SnakeBeta(w[-1]),
            WNConv1d(w[-1], config.encoder_out_channels, kernel_size=3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class OobleckDecoder(nn.Module):
    """Latent [B, latent_dim, F] -> audio [B, audio_channels, F * prod(strides)]. No final tanh."""

    def __init__(self, *, config: VAEConfig) -> None:
        super().__init__()
        w = config.widths
        self.layers = nn.Sequential(
            WNConv1d(config.latent_dim, w[-1], kernel_size=7, padding=3),
            *(DecoderBlock(in_channels=w[i + 1], out_channels=w[i], stride=config.strides[i])
              for i in reversed(range(len(config.strides)))),
            SnakeBeta(w[0]),
            WNConv1d(w[0], config.audio_channels, kernel_size=7, padding=3, bias=False),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(z)


class LatentDistribution(NamedTuple):
    mean: torch.Tensor
    stdev: torch.Tensor

    def sample(self, *, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        if noise is None:
            noise = torch.randn(self.mean.shape, generator=generator, device=self.mean.device,
                                dtype=self.mean.dtype)
        return noise * self.stdev + self.mean

    def kl(self) -> torch.Tensor:
        """KL to N(0, 1) as stable-audio-tools computes it: channel sum, mean over batch and time, no 1/2."""
        var = self.stdev * self.stdev
        return (self.mean * self.mean + var - torch.log(var) - 1).sum(1).mean()


def split_bottleneck(h: torch.Tensor) -> LatentDistribution:
    """The VAE bottleneck: first half of the encoder channels is the mean, the second half the scale."""
    mean, scale = h.chunk(2, dim=1)
    return LatentDistribution(mean, F.softplus(scale) + STDEV_FLOOR)


class OobleckVAE(nn.Module):
    """Stable Audio Open's autoencoder (keys `encoder.*`, `decoder.*`; the bottleneck has no weights).

    Decoding never renormalises loudness: the LUFS control of the generator depends on it.
    """

    def __init__(self, *, config: VAEConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = OobleckEncoder(config=config)
        self.decoder = OobleckDecoder(config=config)

    @property
    def hop(self) -> int:
        return self.config.downsampling_ratio

    def encode_distribution(self, audio: torch.Tensor, *, chunk_frames: int | None = 128,
                            overlap_frames: int = 16, progress: ProgressFn | None = None,
                            ) -> LatentDistribution:
        """Encode audio [B, C, T] into the latent mean and stdev, each [B, latent_dim, ceil(T / hop)].

        Args:
            audio: [batch, audio_channels, samples]; right-padded with zeros to a whole number of frames.
            chunk_frames: latent frames per window; None encodes in one pass.
            overlap_frames: context frames on each side of a window (discarded after encoding).
            progress: called as progress(done_windows, total_windows).
        """
        _check_audio(audio, self.config.audio_channels)
        h = apply_windowed(self.encoder, audio, in_hop=self.hop, out_hop=1,
                           out_channels=self.config.encoder_out_channels, chunk=chunk_frames,
                           overlap=overlap_frames, progress=progress)
        return split_bottleneck(h)

    def encode(self, audio: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None,
               chunk_frames: int | None = 128, overlap_frames: int = 16,
               progress: ProgressFn | None = None) -> torch.Tensor:
        """Encode audio [B, C, T] into latents [B, latent_dim, ceil(T / hop)] (sampled, or the mean)."""
        dist = self.encode_distribution(audio, chunk_frames=chunk_frames, overlap_frames=overlap_frames,
                                        progress=progress)
        return dist.sample(generator=generator) if sample else dist.mean

    def decode(self, latents: torch.Tensor, *, num_samples: int | None = None,
               chunk_frames: int | None = 128, overlap_frames: int = 16,
               progress: ProgressFn | None = None) -> torch.Tensor:
        """Decode latents [B, latent_dim, F] into audio [B, C, F * hop], trimmed to `num_samples` if given.

        Args:
            latents: [batch, latent_dim, frames].
            num_samples: output length; at most frames * hop.
            chunk_frames: latent frames per window; None decodes in one pass.
            overlap_frames: context frames on each side of a window (discarded after decoding).
            progress: called as progress(done_windows, total_windows).
        """
        assert latents.dim() == 3 and latents.shape[1] == self.config.latent_dim, (
            f"{latents.shape=} {self.config.latent_dim=}"
        )
        frames = latents.shape[-1]
        if num_samples is not None and not 0 < num_samples <= frames * self.hop:
            raise ValueError(f"num_samples {num_samples} does not fit {frames} latent frames of {self.hop}")
        audio = apply_windowed(self.decoder, latents, in_hop=1, out_hop=self.hop,
                               out_channels=self.config.audio_channels, chunk=chunk_frames,
                               overlap=overlap_frames, progress=progress)
        return audio if num_samples is None else audio[..., :num_samples]

    def forward(self, audio: torch.Tensor, *, generator: torch.Generator | None = None,
                sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Autoencode in one pass (training): returns (reconstruction, KL); `sample=False` decodes the posterior
        mean instead of a draw."""
        _check_audio(audio, self.config.audio_channels)
        dist = split_bottleneck(self.encoder(audio))
        return self.decoder(dist.sample(generator=generator) if sample else dist.mean), dist.kl()


def apply_windowed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, *, in_hop: int,
                   out_hop: int, out_channels: int, chunk: int | None, overlap: int,
                   progress: ProgressFn | None = None) -> torch.Tensor:
    """Apply a convolutional `fn` that maps n * in_hop steps to n * out_hop steps over windows of `chunk`
    units with `overlap` units of context on each side; the window centres go into one output tensor.

    `x` is right-padded with zeros to whole units, window by window, so the input is never copied whole.
    With `overlap` at least the receptive field of `fn` (in units), the result equals `fn(x)` up to float
    rounding, while peak memory is that of one window plus the output.
    """
    length = x.shape[-1]
    units = math.ceil(length / in_hop)

    def window(lo: int, hi: int) -> torch.Tensor:
        part = x[..., lo * in_hop:hi * in_hop]
        short = (hi - lo) * in_hop - part.shape[-1]
        return F.pad(part, (0, short)) if short else part

    if chunk is None or units <= chunk:
        y = fn(window(0, units))
        if progress is not None:
            progress(1, 1)
        return y
    if chunk < 1 or overlap < 0:
        raise ValueError(f"chunk must be >= 1 and overlap >= 0, got {chunk=} {overlap=}")
    out = x.new_empty(x.shape[0], out_channels, units * out_hop)
    total = math.ceil(units / chunk)
    for i, start in enumerate(range(0, units, chunk)):
        end = min(start + chunk, units)
        lo, hi = max(0, start - overlap), min(units, end + overlap)
        y = fn(window(lo, hi))
        out[..., start * out_hop:end * out_hop] = y[..., (start - lo) * out_hop:(end - lo) * out_hop]
        del y
        if progress is not None:
            progress(i + 1, total)
    return out


def _check_audio(audio: torch.Tensor, channels: int) -> None:
    if audio.dim() != 3 or audio.shape[1] != channels:
        raise ValueError(f"expected audio [batch, {channels}, samples], got shape {tuple(audio.shape)}")
    if audio.shape[-1] == 0:
        raise ValueError("audio has zero samples")
