"""The two torchaudio functions LanguageBind's audio processor calls, restated in plain PyTorch so that
torchaudio stays optional (its releases trail torch's) and embeddings do not depend on whether it is installed:

- `resample_sinc`: `torchaudio.functional.resample` with its defaults (windowed-sinc interpolation, Hann window,
  lowpass_filter_width 6, rolloff 0.99), the same kernel and the same strided convolution;
- `kaldi_fbank`: `torchaudio.compliance.kaldi.fbank` for the options the processor passes (hanning window, no
  dither, no energy) and Kaldi's defaults for the rest: DC offset removed per frame, pre-emphasis 0.97, frames
  zero-padded to a power of two, power spectrum, triangular mel banks from 20 Hz to Nyquist, log floored at
  float32's epsilon, frames only where they fit (snip_edges).

The tests compare both with torchaudio where it is installed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["kaldi_fbank", "mel_banks", "resample_sinc"]

_EPSILON = torch.finfo(torch.float32).eps  # Kaldi's log floor, as torchaudio's EPSILON


def resample_sinc(wave: torch.Tensor, orig_freq: int, new_freq: int, *, lowpass_filter_width: int = 6,
                  rolloff: float = 0.99) -> torch.Tensor:
    """`[..., samples]` float at `orig_freq` -> `[..., ceil(samples * new / orig)]` at `new_freq` (torchaudio's
    `functional.resample`, "sinc_interp_hann")."""
    if orig_freq <= 0 or new_freq <= 0 or int(orig_freq) != orig_freq or int(new_freq) != new_freq:
        raise ValueError(f"sample rates must be positive integers, got {orig_freq} and {new_freq}")
    if orig_freq == new_freq:
        return wave
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    base = min(orig, new) * rolloff  # the low-pass cut-off, just under the lower Nyquist frequency
    width = math.ceil(lowpass_filter_width * orig / base)
    dtype, device = wave.dtype, wave.device
    idx = torch.arange(-width, width + orig, dtype=dtype, device=device)[None, None] / orig
    t = (torch.arange(0, -new, -1, dtype=dtype, device=device)[:, None, None] / new + idx) * base
    t = t.clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0).to(t), t.sin() / t) * (window * (base / orig))
    shape = wave.shape
    flat = wave.reshape(-1, shape[-1])
    out = F.conv1d(F.pad(flat, (width, width + orig))[:, None], kernel, stride=orig)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)
    target = math.ceil(new * shape[-1] / orig)
    return out[..., :target].reshape(*shape[:-1], -1)


def mel_banks(num_bins: int, padded: int, sample_freq: float, low_freq: float = 20.0,
              high_freq: float | None = None) -> torch.Tensor:
    """Kaldi's triangular mel filters `[num_bins, padded // 2 + 1]` from `low_freq` to `high_freq` Hz (None:
    Nyquist), without VTLN warping (`torchaudio.compliance.kaldi.get_mel_banks`); the last FFT bin gets none."""
    if num_bins <= 3:
        raise ValueError(f"Kaldi's filter bank needs more than 3 mel bins, got {num_bins}")
    high = 0.5 * sample_freq if high_freq is None else high_freq
    if not 0.0 <= low_freq < high <= 0.5 * sample_freq:
        raise ValueError(f"mel banks need 0 <= low_freq < high_freq <= Nyquist, got {low_freq} and {high} Hz at "
                         f"{sample_freq} Hz")
    mel_low, mel_high = 1127.0 * math.log(1.0 + low_freq / 700.0), 1127.0 * math.log(1.0 + high / 700.0)
    delta = (mel_high - mel_low) / (num_bins + 1)
    b = torch.arange(num_bins).unsqueeze(1)
    left, center, right = (mel_low + (b + k) * delta for k in (0.0, 1.0, 2.0))
    mel = 1127.0 * (1.0 + (sample_freq / padded) * torch.arange(padded / 2) / 700.0).log()[None]
    banks = torch.max(torch.zeros(1), torch.min((mel - left) / (center - left), (right - mel) / (right - center)))
    return F.pad(banks, (0, 1))


def kaldi_fbank(wave: torch.Tensor, *, sample_frequency: float, num_mel_bins: int, frame_length: float = 25.0,
                frame_shift: float = 10.0) -> torch.Tensor:
    """Log mel filter bank `[frames, num_mel_bins]` of channel 0 of `[channels, samples]` (see the module doc)."""
    x = wave[0]
    shift = int(sample_frequency * frame_shift * 0.001)
    size = int(sample_frequency * frame_length * 0.001)
    padded = 1 if size == 0 else 2 ** (size - 1).bit_length()
    if not 2 <= size <= x.shape[0]:
        raise ValueError(f"a {frame_length} ms frame ({size} samples) does not fit in {x.shape[0]} samples")
    frames = x.contiguous().as_strided((1 + (x.shape[0] - size) // shift, size), (shift * x.stride(0), x.stride(0)))
    frames = frames - frames.mean(dim=1, keepdim=True)
    previous = F.pad(frames.unsqueeze(0), (1, 0), mode="replicate").squeeze(0)[:, :-1]
    frames = frames - 0.97 * previous
    frames = frames * torch.hann_window(size, periodic=False, dtype=x.dtype, device=x.device)[None]
    frames = F.pad(frames, (0, padded - size))
    power = torch.fft.rfft(frames).abs().pow(2.0)
    banks = mel_banks(num_mel_bins, padded, sample_frequency).to(device=x.device, dtype=x.dtype)
    eps = torch.tensor(_EPSILON, device=x.device, dtype=x.dtype)
    return torch.max(power @ banks.T, eps).log()
