"""LanguageBind's input preprocessing, re-implemented without decord, OpenCV, pytorchvideo or torchvision.

Each function mirrors a piece of the `languagebind` package's processors (0.1.0, `*/processing_*.py`):

- video (`LanguageBindVideoProcessor`, decord backend, the default of every LanguageBind video config):
  `num_frames` (8) frame indices `np.linspace(0, n - 1, num_frames, dtype=int)` over the clip's n frames (first
  and last frame included, truncated towards 0), then on the uint8 clip `[C, T, H, W]`: `x / 255`, normalise
  with the OpenAI CLIP mean/std, pytorchvideo's `ShortSideScale(224)` (bilinear, align_corners=False, no
  antialias, long side floor(long / short * 224)), torchvision's `CenterCropVideo(224)` (offsets
  int(round((h - 224) / 2)), Python rounding). The processor ends with `RandomHorizontalFlipVideo(p=0.5)`, a
  training augmentation left in at inference: it is left out here, so embeddings are deterministic.
- audio (`LanguageBindAudioProcessor`'s `AudioTransform`; its two torchaudio calls are restated in
  `languagebind_audio_features`, so torchaudio stays optional): resample to 16 kHz (`torchaudio.functional.
  resample`, default filter), subtract the mean over all channels and samples, Kaldi filter bank of the FIRST
  channel (`torchaudio.compliance.kaldi.fbank` reads channel 0 only: htk_compat, hanning window, 25 ms / 10 ms,
  no dither, no energy, `num_mel_bins` (112) bins); `target_length` (1036) frames: shorter banks are tiled,
  longer ones give 3 chunks of `target_length` frames starting in the first, middle and last third of the
  possible starts (the processor picks each start at random in its third; here the middle of each third);
  the 3 chunks (or 3 copies) become the 3 "colour" channels; finally (x - audio_mean) / (2 * audio_std).
- text: the CLIP BPE tokenizer, padded / truncated to 77 tokens (`languagebind.py` calls the package's class).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .languagebind_audio_features import kaldi_fbank, resample_sinc

__all__ = [
    "AUDIO_MEAN",
    "AUDIO_SAMPLE_RATE",
    "AUDIO_STD",
    "CONTEXT_LENGTH",
    "OPENAI_DATASET_MEAN",
    "OPENAI_DATASET_STD",
    "audio_chunk_starts",
    "audio_filterbank",
    "center_crop",
    "frame_indices",
    "frame_times",
    "preprocess_audio",
    "preprocess_video",
    "short_side_scale",
]

OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT_LENGTH = 77  # tokens per prompt, as the processors' `context_length`
AUDIO_SAMPLE_RATE = 16000  # LanguageBind_Audio_FT's `audio_sample_rate`
AUDIO_MEAN, AUDIO_STD = -4.2677393, 4.5689974  # LanguageBind_Audio_FT's `audio_mean`, `audio_std`
_FRAME_LENGTH_MS, _FRAME_SHIFT_MS = 25.0, 10.0


# --- video ---------------------------------------------------------------------------------------------------


def frame_indices(num_available: int, num_frames: int = 8) -> np.ndarray:
    """The frames LanguageBind's decord/OpenCV loaders take: `np.linspace(0, n - 1, num_frames, dtype=int)`."""
    if num_available < 1:
        raise ValueError(f"a video needs at least one frame, got {num_available}")
    return np.linspace(0, num_available - 1, num_frames, dtype=int)


def frame_times(duration: float, frame_count: int, num_frames: int = 8, *, start: float = 0.0,
                end: float | None = None) -> np.ndarray:
    """Instants (s, 0 = first frame) at which a by-time reader shows the frames `frame_indices` picks.

    The clip [start, end] of a `duration`-second video of `frame_count` frames holds n = round((end - start) /
    (duration / frame_count)) frames; index k is taken at the middle of its display interval, start + (k + 0.5)
    * (end - start) / n, so float rounding of frame timestamps never shifts it to a neighbour. For a
    constant-frame-rate file read whole, these are exactly the frames decord's `get_batch(frame_indices(n))`
    returns; for variable frame rates they are the same fractions of the time line.
    """
    end = duration if end is None else min(end, duration)
    if not 0 <= start < end:
        raise ValueError(f"need 0 <= start < end <= duration, got start={start}, end={end}, {duration=}")
    span = end - start
    n = max(1, round(span * frame_count / duration))
    return start + (frame_indices(n, num_frames) + 0.5) * (span / n)


def short_side_scale(x: torch.Tensor, size: int) -> torch.Tensor:
    """pytorchvideo's `short_side_scale`: `[C, T, H, W]` float, short side to `size`, bilinear, no antialias."""
    h, w = x.shape[-2:]
    if w < h:
        new_h, new_w = math.floor((float(h) / w) * size), size
    else:
        new_h, new_w = size, math.floor((float(w) / h) * size)
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """torchvision's `CenterCropVideo(size)` on `[..., H, W]` (offsets rounded with Python's `round`)."""
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ValueError(f"cannot crop {size}x{size} from {h}x{w}")
    i, j = round((h - size) / 2.0), round((w - size) / 2.0)
    return x[..., i:i + size, j:j + size]


def preprocess_video(frames: torch.Tensor, *, num_frames: int = 8, size: int = 224,
                     mean: Sequence[float] = OPENAI_DATASET_MEAN,
                     std: Sequence[float] = OPENAI_DATASET_STD) -> torch.Tensor:
    """One clip `[T, H, W, 3]` (float in [0, 1], or uint8) -> LanguageBind pixel values `[3, num_frames, size,
    size]`: `frame_indices(T, num_frames)` of the frames, normalised, short side scaled to `size`, centre
    cropped (in the processor's order). One chosen frame at a time is converted to float (the processor's
    operations act on each frame alone), which bounds the memory for 4K input."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected video frames [T, H, W, 3], got shape {tuple(frames.shape)}")
    m = torch.tensor(mean, dtype=torch.float32, device=frames.device)[:, None, None, None]
    s = torch.tensor(std, dtype=torch.float32, device=frames.device)[:, None, None, None]
    out = []
    for i in frame_indices(frames.shape[0], num_frames):
        x = frames[int(i)].permute(2, 0, 1)[:, None]  # [C, 1, H, W]: one frame of decord's [C, T, H, W] batch
        x = x / 255.0 if x.dtype == torch.uint8 else x.float()
        out.append(center_crop(short_side_scale((x - m) / s, size), size))
    return torch.cat(out, dim=1)


# --- audio ---------------------------------------------------------------------------------------------------


def audio_filterbank(wave: torch.Tensor, *, sample_rate: int = AUDIO_SAMPLE_RATE,
                     num_mel_bins: int = 112) -> torch.Tensor:
    """`AudioTransform.get_mel`: `[channels, samples]` at the model's rate -> log-mel `[frames, num_mel_bins]` of
    channel 0 after subtracting the mean of all channels (as the processor: Kaldi's fbank reads channel 0)."""
    min_samples = int(sample_rate * _FRAME_LENGTH_MS / 1000)
    if wave.shape[-1] < min_samples:
        raise ValueError(f"reference audio of {wave.shape[-1]} samples at {sample_rate} Hz is shorter than one "
                         f"{_FRAME_LENGTH_MS:g} ms analysis frame ({min_samples} samples); pass a longer clip")
    wave = wave - wave.mean()
    return kaldi_fbank(wave, sample_frequency=sample_rate, num_mel_bins=num_mel_bins, frame_length=_FRAME_LENGTH_MS,
                       frame_shift=_FRAME_SHIFT_MS)


def audio_chunk_starts(total_frames: int, target_length: int) -> list[int]:
    """Start frames of the 3 chunks of a filter bank longer than `target_length`: the processor draws one
    start at random in each third of `range(total - target + 1)` (np.array_split; an empty third -> 0); this
    takes the middle element of each third instead (deterministic, centred on the processor's draws)."""
    ranges = np.array_split(np.arange(total_frames - target_length + 1), 3)
    return [int(r[len(r) // 2]) if len(r) else 0 for r in ranges]


def preprocess_audio(wave: torch.Tensor, sample_rate: int, *, target_rate: int = AUDIO_SAMPLE_RATE,
                     num_mel_bins: int = 112, target_length: int = 1036, audio_mean: float = AUDIO_MEAN,
                     audio_std: float = AUDIO_STD) -> torch.Tensor:
    """One clip `[channels, samples]` at `sample_rate` -> LanguageBind audio pixel values `[3, num_mel_bins,
    target_length]` (resample to `target_rate`, filter bank, tile or 3 chunks, normalise; see the module doc).
    The defaults are LanguageBind_Audio_FT's config values (`languagebind.py` passes the loaded config's)."""
    if wave.dim() != 2:
        raise ValueError(f"expected audio [channels, samples], got shape {tuple(wave.shape)}")
    wave = wave.float()
    if sample_rate != target_rate:
        wave = resample_sinc(wave, sample_rate, target_rate)
    mel = audio_filterbank(wave, sample_rate=target_rate, num_mel_bins=num_mel_bins)
    total = mel.shape[0]
    if total > target_length:
        chunks = [mel[i:i + target_length] for i in audio_chunk_starts(total, target_length)]
    else:
        if total < target_length:
            mel = mel.repeat(target_length // total + 1, 1)[:target_length]
        chunks = [mel, mel, mel]
    fused = torch.stack(chunks).transpose(1, 2)  # [3, num_mel_bins, target_length]
    return (fused - audio_mean) / (audio_std * 2)
