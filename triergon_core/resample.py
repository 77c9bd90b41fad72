"""Resampling with torchaudio when the host has it, PyAV (ffmpeg's libswresample) otherwise.

torchaudio is optional: current ComfyUI no longer installs it, and its releases trail torch's, so a pack that
required it would pull a mismatched build into the host. PyAV is a dependency anyway (all decoding goes through
it). When torchaudio imports, `resample` uses `torchaudio.functional.resample` (windowed sinc, default width):
it runs on the tensor's device and keeps autograd. Otherwise libswresample's default filter runs on the CPU.
On a tone the two agree within 3e-4 of full scale below a quarter of the lower Nyquist frequency and within
1.5e-3 at half of it; nearer Nyquist their low-pass filters differ (by 20 % of a tone's amplitude at 0.85
Nyquist), and so do the first and last ~50 output samples, where torchaudio pads with zeros
(tests/test_resample.py measures this).
"""

from __future__ import annotations

import logging
import math

import av
import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = ["resample", "resampler_backend"]

try:  # optional: the host's torchaudio if it has one (see the module docstring)
    import torchaudio.functional as _torchaudio_functional
except (ImportError, OSError) as _err:  # OSError: a torchaudio build whose native parts do not match torch
    _torchaudio_functional = None
    logger.debug("torchaudio unavailable (%s); resampling uses PyAV", _err)

_BACKENDS = ("torchaudio", "av")
_AV_CHUNK = 1 << 16  # samples per frame fed to libswresample (bounds its buffers on long inputs)


def resampler_backend() -> str:
    """The backend `resample` uses by default: "torchaudio" when it can be imported, else "av"."""
    return "torchaudio" if _torchaudio_functional is not None else "av"


def resample(audio: torch.Tensor, orig_rate: int, new_rate: int, *, backend: str | None = None) -> torch.Tensor:
    """Resample `[..., samples]` float audio from `orig_rate` to `new_rate` Hz along the last axis.

    The output has torchaudio's length, `ceil(samples * new_rate / orig_rate)` (computed as torchaudio does,
    see `_torchaudio_length`), with either backend, and the input's dtype and device.

    Args:
        audio: float tensor `[..., samples]`.
        orig_rate: rate of `audio` in Hz.
        new_rate: rate wanted in Hz.
        backend: "torchaudio" (its windowed-sinc filter, default width), "av" (PyAV / libswresample, on the
            CPU), or None for `resampler_backend()`.
    """
    backend = resampler_backend() if backend is None else backend
    if backend not in _BACKENDS:
        raise ValueError(f"resampling backend must be one of {_BACKENDS} or None, got {backend!r}")
    if orig_rate <= 0 or new_rate <= 0 or int(orig_rate) != orig_rate or int(new_rate) != new_rate:
        raise ValueError(f"sample rates must be positive integers of Hz, got {orig_rate} -> {new_rate}")
    if not audio.is_floating_point():
        raise ValueError(f"resample needs float audio, got {audio.dtype}")
    if orig_rate == new_rate:
        return audio
    if backend == "torchaudio":
        if _torchaudio_functional is None:
            raise ValueError("backend='torchaudio' needs torchaudio, which is not installed; use backend='av'")
        return _torchaudio_functional.resample(audio, int(orig_rate), int(new_rate))
    length = _torchaudio_length(audio.shape[-1], int(orig_rate), int(new_rate))
    rows = audio.detach().reshape(-1, audio.shape[-1]).to("cpu", torch.float32).numpy()
    out = np.stack([_av_resample_row(row, int(orig_rate), int(new_rate), length) for row in rows])
    return torch.from_numpy(out).reshape(*audio.shape[:-1], length).to(audio.device, audio.dtype)


def _torchaudio_length(samples: int, orig_rate: int, new_rate: int) -> int:
    """torchaudio's output length: ceil of the ratio evaluated in float32 after reducing the rates by their
    gcd, which can be one below the exact ceiling (e.g. 240123 samples 48 -> 44.1 kHz: 220613, not 220614)."""
    gcd = math.gcd(orig_rate, new_rate)
    ratio = torch.tensor(new_rate // gcd * samples / (orig_rate // gcd), dtype=torch.float32)
    return int(torch.ceil(ratio))


def _av_resample_row(row: np.ndarray, orig_rate: int, new_rate: int, length: int) -> np.ndarray:
    """One channel through libswresample (mono frames of `_AV_CHUNK` samples), trimmed or zero-padded to
    `length` (libswresample already compensates its filter delay; the count can differ by a sample)."""
    resampler = av.AudioResampler(format="fltp", layout="mono", rate=new_rate)
    chunks = []
    for start in range(0, len(row), _AV_CHUNK):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(row[None, start:start + _AV_CHUNK]),
                                           format="fltp", layout="mono")
        frame.sample_rate = orig_rate
        frame.pts = start
        chunks.extend(out.to_ndarray()[0] for out in resampler.resample(frame))
    chunks.extend(out.to_ndarray()[0] for out in resampler.resample(None))
    out = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    return np.pad(out[:length], (0, max(0, length - len(out))))
