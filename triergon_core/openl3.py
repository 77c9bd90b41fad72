"""OpenL3 audio embeddings (Cramer et al. 2019) from a user's weights file, for FD_openl3.

The network and its state-dict keys are those of the `torchopenl3` package (a port of the Keras model): a
Kapre-style log-mel front end (`speclayer`: DFT kernels as a strided convolution, an HTK mel filter bank with
area-normalised filters, sqrt of the mel power in dB, relative to each window's maximum, floored at -80 dB), then
`batch_normalization_1` on the spectrogram, seven 3x3 convolutions with batch norm and ReLU in pairs separated by
2x2 max pooling, `audio_embedding_layer`, and a final max pooling whose size gives 512 or 6144 dimensions. The
package itself is not needed (it pins old resampy and nnAudio). It reads 1 s windows of 48 kHz mono audio.

Clips are embedded as stable-audio-metrics does for FD_openl3: peak-normalised to -1 dBFS, windows every `hop`
seconds (the first centred on time 0), each channel separately when `channels=2` (the L and R embeddings
concatenated). `frame_embeddings` gives the per-window embeddings (their Gaussian is stable-audio-metrics' FD
statistic); `embed` gives their mean per clip.
"""

from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .audio_embedders import AudioEmbedder, check_batch, load_weights, peak_normalise
from .checkpoint import read_state_dict
from .languagebind_audio_features import resample_sinc

logger = logging.getLogger(__name__)

__all__ = ["OpenL3Config", "OpenL3Embedder", "load_openl3"]

SAMPLE_RATE = 48000
_N_DFT, _HOP = 2048, 242
_POOL = {("mel128", 512): (16, 24), ("mel128", 6144): (4, 8), ("mel256", 512): (32, 24), ("mel256", 6144): (8, 8)}
_CHANNELS = (64, 64, 128, 128, 256, 256, 512)


@dataclass(frozen=True)
class OpenL3Config:
    """`input_repr` mel128 / mel256, `embedding_size` 512 / 6144, `hop` seconds between windows, `channels` 1
    (mono mix) or 2 (L and R embedded apart and concatenated, 2 x embedding_size)."""

    input_repr: str = "mel256"
    embedding_size: int = 512
    hop: float = 0.5
    channels: int = 1

    def __post_init__(self) -> None:
        if (self.input_repr, self.embedding_size) not in _POOL:
            raise ValueError(f"OpenL3 has input_repr mel128 or mel256 and embedding_size 512 or 6144, got "
                             f"{self.input_repr!r} and {self.embedding_size}")
        if not self.hop > 0 or self.channels not in (1, 2):
            raise ValueError(f"OpenL3 needs hop > 0 seconds and channels 1 or 2, got {self.hop} and {self.channels}")

    @property
    def mels(self) -> int:
        return int(self.input_repr[3:])


def _htk_mel_filters(sample_rate: int, n_fft: int, mels: int) -> torch.Tensor:
    """Kapre's mel filters, `librosa.filters.mel(htk=True, norm="slaney", fmin=0, fmax=sample_rate / 2)`:
    triangles on the HTK mel scale divided by their width in Hz (area normalisation, what `norm=1` meant in the
    librosa OpenL3 was trained with; a per-filter scale, so it matters little after the dB re the maximum)."""
    def mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    hz = 700.0 * (10.0 ** (np.linspace(0.0, mel(sample_rate / 2), mels + 2) / 2595.0) - 1.0)
    fft = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    rise = (fft[None] - hz[:-2, None]) / np.diff(hz)[:-1, None]
    fall = (hz[2:, None] - fft[None]) / np.diff(hz)[1:, None]
    weights = np.maximum(0.0, np.minimum(rise, fall)) * (2.0 / (hz[2:] - hz[:-2]))[:, None]
    return torch.from_numpy(weights).float()


class _KapreMel(nn.Module):
    """torchopenl3's `speclayer` for one 1 s window `[B, 1, 48000]` -> `[B, 1, mels, 199]` (dB re the max)."""

    def __init__(self, mels: int) -> None:
        super().__init__()
        k = torch.arange(_N_DFT // 2 + 1, dtype=torch.float64)[:, None]
        phase = 2 * math.pi * k * torch.arange(_N_DFT, dtype=torch.float64)[None] / _N_DFT
        window = torch.hann_window(_N_DFT, periodic=True, dtype=torch.float64)
        self.register_buffer("dft_real_kernels", (phase.cos() * window)[:, None].float())
        self.register_buffer("dft_imag_kernels", (-phase.sin() * window)[:, None].float())
        self.register_buffer("mel_basis", _htk_mel_filters(SAMPLE_RATE, _N_DFT, mels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Keras "same" padding for a 1 s input: 2048 - (48000 mod 242) samples, split evenly
        pad = _N_DFT - SAMPLE_RATE % _HOP
        x = F.pad(x, (pad // 2, pad - pad // 2))
        power = F.conv1d(x, self.dft_real_kernels, stride=_HOP) ** 2 + F.conv1d(x, self.dft_imag_kernels,
                                                                                 stride=_HOP) ** 2
        db = 10 * torch.log10((self.mel_basis @ power).sqrt().clamp_min(1e-10))
        db = db - db.amax(dim=(1, 2), keepdim=True)
        return db.clamp_min(-80.0)[:, None]


class OpenL3Embedder(AudioEmbedder):
    """OpenL3 audio network with torchopenl3's parameter names; `embed` -> (mean window embedding, None)."""

    sample_rate = SAMPLE_RATE

    def __init__(self, *, config: OpenL3Config) -> None:
        super().__init__()
        self.config = config
        self.dim = config.embedding_size * config.channels
        self.speclayer = _KapreMel(config.mels)
        self.batch_normalization_1 = nn.BatchNorm2d(1, eps=1e-3)
        width = 1
        for i, c in enumerate(_CHANNELS, start=1):
            setattr(self, f"conv2d_{i}", nn.Conv2d(width, c, 3, padding=1))
            setattr(self, f"batch_normalization_{i + 1}", nn.BatchNorm2d(c, eps=1e-3))
            width = c
        self.audio_embedding_layer = nn.Conv2d(512, 512, 3, padding=1)

    def windows_forward(self, windows: torch.Tensor) -> torch.Tensor:
        """1 s windows `[W, 48000]` -> embeddings `[W, embedding_size]` (Keras channel-last flattening)."""
        x = self.batch_normalization_1(self.speclayer(windows[:, None]))
        for i in range(1, len(_CHANNELS) + 1):
            x = F.relu(getattr(self, f"batch_normalization_{i + 1}")(getattr(self, f"conv2d_{i}")(x)))
            if i % 2 == 0:
                x = F.max_pool2d(x, 2)
        pool = _POOL[(self.config.input_repr, self.config.embedding_size)]
        x = F.max_pool2d(self.audio_embedding_layer(x), pool)
        return x.permute(0, 2, 3, 1).flatten(1)

    def forward(self, mono: torch.Tensor) -> tuple[torch.Tensor, None]:
        frames = self._frames(mono)
        return frames.mean(1), None

    def _frames(self, mono: torch.Tensor) -> torch.Tensor:
        """Mono `[B, N]` at 48 kHz -> `[B, windows, embedding_size]` (torchopenl3's centred framing)."""
        hop = int(self.config.hop * SAMPLE_RATE)
        x = F.pad(mono, (SAMPLE_RATE // 2, 0))
        n = x.shape[-1]
        extra = SAMPLE_RATE - n if n < SAMPLE_RATE else -(n - SAMPLE_RATE) % hop
        x = F.pad(x, (0, extra))
        windows = x.unfold(-1, SAMPLE_RATE, hop)  # [B, W, 48000]
        b, w = windows.shape[:2]
        return self.windows_forward(windows.reshape(b * w, SAMPLE_RATE)).reshape(b, w, -1)

    @torch.inference_mode()
    def frame_embeddings(self, audio: torch.Tensor | np.ndarray, sample_rate: int) -> torch.Tensor:
        """Per-window embeddings `[B, windows, dim]` of `[B, C, N]` audio (see the module doc)."""
        audio = peak_normalise(check_batch(audio, sample_rate))
        if self.config.channels == 1:
            parts = [audio.mean(1)]
        else:
            if audio.shape[1] > 2:
                raise ValueError(f"OpenL3 with channels=2 embeds mono or stereo audio, got {audio.shape[1]} channels")
            parts = [audio[:, 0], audio[:, -1]]  # mono: the same channel twice, as stable-audio-metrics
        device = next(self.parameters()).device
        was_training = self.training
        self.eval()
        try:
            out = [self._frames(resample_sinc(p, int(sample_rate), SAMPLE_RATE).to(device)) for p in parts]
        finally:
            self.train(was_training)
        return torch.cat(out, dim=-1).float().cpu()

    def embed(self, audio: torch.Tensor | np.ndarray, sample_rate: int) -> tuple[torch.Tensor, None]:
        """(mean of `frame_embeddings` over the windows `[B, dim]`, None)."""
        return self.frame_embeddings(audio, sample_rate).mean(1), None


def load_openl3(path: str | os.PathLike, *, input_repr: str | None = None, embedding_size: int | None = None,
                hop: float = 0.5, channels: int = 1) -> OpenL3Embedder:
    """OpenL3 from a torchopenl3 state dict (`torchopenl3_<repr>_<content>_<size>.pth`, or the same tensors as
    safetensors).

    Args:
        path: the weights file. The env and music models share this layout; the file decides which it is.
        input_repr: mel128 or mel256; None: read from the file's `speclayer.mel_basis` or, without one, its name.
        embedding_size: 512 or 6144 (the same weights, a different final pooling); None: from the file name when
            it says, else 512 (stable-audio-metrics' choice).
        hop: seconds between windows.
        channels: 1 (mono mix) or 2 (stereo, L and R embeddings concatenated).

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: a file that is not an OpenL3 state dict (one line).
    """
    path = Path(path)
    name = path.name.lower()
    if input_repr is None:
        basis = read_state_dict(path)[0].get("speclayer.mel_basis")
        found = re.search(r"mel(128|256)", name)
        if basis is not None and basis.ndim == 2:
            input_repr = f"mel{basis.shape[0]}"
        elif found:
            input_repr = found.group(0)
        else:
            raise ValueError(f"cannot tell whether {path} is OpenL3 mel128 or mel256; pass input_repr=")
    if embedding_size is None:
        embedding_size = 6144 if "6144" in name else 512
    model = OpenL3Embedder(config=OpenL3Config(input_repr=input_repr, embedding_size=embedding_size, hop=hop,
                                               channels=channels))
    spec_keys = {f"speclayer.{k}" for k in ("dft_real_kernels", "dft_imag_kernels", "mel_basis")}
    counters = {k for k in model.state_dict() if k.endswith("num_batches_tracked")}
    # the front end's buffers are fixed functions of the config; files that leave them out (or the batch-norm
    # counters, which old PyTorch did not save) still load
    load_weights(model, path, what=f"an OpenL3 {input_repr} state dict (torchopenl3 layout)",
                 may_miss=spec_keys | counters)
    logger.info("loaded OpenL3 %s/%d from %s", input_repr, embedding_size, path)
    return model
