"""Kaldi's log-mel filter bank in plain PyTorch, for hosts without torchaudio.

`kaldi_fbank` computes what `torchaudio.compliance.kaldi.fbank` does with the options LanguageBind's audio
processor passes (channel 0, Hann window, no dither, no energy column, 0.97 pre-emphasis, per-frame DC removal,
power spectrum, FFT size rounded up to a power of two, frames that fit entirely: `snip_edges`, mel bins from 20 Hz
to Nyquist), step for step in the same order, so the two agree to float32 rounding (tests/test_fbank.py).
torchaudio is optional (see `resample.py`); this keeps the LanguageBind audio path free of it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["kaldi_fbank"]

_PREEMPHASIS = 0.97
_LOW_HZ = 20.0


def _mel(hz: torch.Tensor | float) -> torch.Tensor | float:
    if isinstance(hz, torch.Tensor):
        return 1127.0 * (1.0 + hz / 700.0).log()
    return 1127.0 * math.log(1.0 + hz / 700.0)


def _mel_banks(num_bins: int, fft_size: int, sample_rate: float) -> torch.Tensor:
    """Triangular filters `[num_bins, fft_size // 2]` equally spaced on Kaldi's mel scale (float32, as Kaldi)."""
    mel_low, mel_high = _mel(_LOW_HZ), _mel(0.5 * sample_rate)
    delta = (mel_high - mel_low) / (num_bins + 1)
    index = torch.arange(num_bins).unsqueeze(1)
    left, center, right = (mel_low + (index + k) * delta for k in (0.0, 1.0, 2.0))
    mel = _mel(sample_rate / fft_size * torch.arange(fft_size / 2)).unsqueeze(0)
    return torch.max(torch.zeros(1), torch.min((mel - left) / (center - left), (right - mel) / (right - center)))


def kaldi_fbank(wave: torch.Tensor, *, sample_rate: float, num_mel_bins: int, frame_length_ms: float = 25.0,
                frame_shift_ms: float = 10.0) -> torch.Tensor:
    """Log-mel filter bank `[frames, num_mel_bins]` of channel 0 of `wave` `[channels, samples]`.

    Args:
        wave: float audio, channels first; only channel 0 is analysed (as Kaldi's `channel=-1`/0).
        sample_rate: rate of `wave` in Hz.
        num_mel_bins: number of triangular mel filters (more than 3).
        frame_length_ms: analysis window in milliseconds.
        frame_shift_ms: hop between frames in milliseconds.
    """
    if wave.dim() != 2 or not wave.is_floating_point():
        raise ValueError(f"kaldi_fbank needs float audio [channels, samples], got {wave.dtype} {tuple(wave.shape)}")
    if num_mel_bins <= 3:
        raise ValueError(f"num_mel_bins must be more than 3, got {num_mel_bins}")
    signal = wave[0]
    shift = int(sample_rate * frame_shift_ms * 0.001)
    size = int(sample_rate * frame_length_ms * 0.001)
    if not 2 <= size <= signal.shape[0] or shift <= 0:
        raise ValueError(f"a {frame_length_ms} ms frame ({size} samples) needs 2 to {signal.shape[0]} samples "
                         f"and a positive shift ({shift}); pass a longer clip")
    fft_size = 2 ** (size - 1).bit_length()  # Kaldi rounds the FFT up to a power of two
    frames = signal.unfold(0, size, shift)  # [m, size]: only frames that fit (snip_edges)
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = F.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)[:, :-1]
    frames = frames - _PREEMPHASIS * previous
    frames = frames * torch.hann_window(size, periodic=False, device=wave.device, dtype=wave.dtype)
    frames = F.pad(frames, (0, fft_size - size))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = F.pad(_mel_banks(num_mel_bins, fft_size, sample_rate).to(wave.device, wave.dtype), (0, 1))
    eps = torch.tensor(torch.finfo(torch.float).eps, device=wave.device, dtype=wave.dtype)
    return torch.max(torch.mm(power, banks.T), eps).log()
