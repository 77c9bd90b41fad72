"""Audio I/O: decode any file ffmpeg reads (or an in-memory array) to stereo float32, and write wav/flac.

Audio is a float32 tensor `[channels, samples]` with a nominal range of [-1, 1]. `load_audio` always returns
stereo at the requested rate (44 100 Hz by default); `write_audio` writes wav (16/24-bit PCM or 32-bit
float) or flac (16/24-bit) atomically. Decoding and encoding use PyAV.

Resampling uses `resample` (torchaudio when installed, else PyAV's libswresample; see `resample.py`).
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import av
import numpy as np
import torch

from ._fs import atomic_write_path
from .config import SAMPLE_RATE
from .resample import resample, resampler_backend

logger = logging.getLogger(__name__)

__all__ = ["SAMPLE_RATE", "AudioError", "check_audio_output", "interleaved_pcm", "load_audio", "resample",
           "resampler_backend", "to_stereo", "write_audio"]


_CENTER = 0.7071  # -3 dB, ITU-R BS.775
# Per channel name: (gain into L, gain into R). LFE is dropped.
_DOWNMIX = {
    "FL": (1.0, 0.0),
    "FR": (0.0, 1.0),
    "FC": (_CENTER, _CENTER),
    "LFE": (0.0, 0.0),
    "BL": (_CENTER, 0.0),
    "BR": (0.0, _CENTER),
    "SL": (_CENTER, 0.0),
    "SR": (0.0, _CENTER),
}
# Channel order assumed for arrays (and files whose layout names no channels): WAV/SMPTE order.
_DEFAULT_NAMES = {
    6: ("FL", "FR", "FC", "LFE", "BL", "BR"),
    8: ("FL", "FR", "FC", "LFE", "BL", "BR", "SL", "SR"),
}
# Output format per extension: bits -> (codec, PyAV sample format).
_ENCODERS = {
    ".wav": {16: ("pcm_s16le", "s16"), 24: ("pcm_s24le", "s32"), 32: ("pcm_f32le", "flt")},
    ".flac": {16: ("flac", "s16"), 24: ("flac", "s32")},
}
AUDIO_FORMATS = tuple(_ENCODERS)
_LAYOUTS = {1: "mono", 2: "stereo", 6: "5.1", 8: "7.1"}


class AudioError(ValueError):
    """An audio input or option the user has to fix (the message says what is wrong and what to change)."""


def to_stereo(audio: torch.Tensor, channel_names: Sequence[str] | None = None) -> torch.Tensor:
    """Convert `[..., channels, samples]` audio to stereo `[..., 2, samples]`.

    One channel is duplicated and two channels are returned as they are. Surround layouts are downmixed per
    ITU-R BS.775: L = FL + 0.7071*FC + 0.7071*(BL + SL), R = FR + 0.7071*FC + 0.7071*(BR + SR); LFE is
    dropped. The result is not renormalised, so a loud downmix can exceed [-1, 1].

    Args:
        audio: tensor `[channels, samples]` or `[batch, channels, samples]`.
        channel_names: ffmpeg channel names (e.g. `("FL", "FR", "FC", "LFE", "SL", "SR")`), one per channel.
            Without names, 6 channels are taken as FL FR FC LFE BL BR and 8 as FL FR FC LFE BL BR SL SR
            (WAV/SMPTE order); any other count above 2 is an error.
    """
    if audio.ndim < 2:
        raise AudioError(f"audio needs a channel axis, [channels, samples], got shape {tuple(audio.shape)}")
    channels = audio.shape[-2]
    if channels == 1:
        return torch.cat([audio, audio], dim=-2)
    if channels == 2:
        return audio
    if channel_names is None:
        if channels not in _DEFAULT_NAMES:
            raise AudioError(
                f"cannot convert {channels} channels to stereo: only 1, 2, 6 (5.1) or 8 (7.1) channels are "
                "supported without channel names; for a [samples, channels] array, transpose it"
            )
        channel_names = _DEFAULT_NAMES[channels]
    if len(channel_names) != channels:
        raise AudioError(f"{len(channel_names)} channel names {list(channel_names)} for {channels} channels")
    unknown = [name for name in channel_names if name not in _DOWNMIX]
    if unknown:
        raise AudioError(
            f"cannot downmix channel layout {list(channel_names)} to stereo: unknown channels {unknown} "
            f"(supported: {', '.join(_DOWNMIX)})"
        )
    mix = torch.tensor([_DOWNMIX[name] for name in channel_names], dtype=audio.dtype, device=audio.device)
    return mix.T @ audio


def load_audio(
    source: str | os.PathLike[str] | bytes | np.ndarray | torch.Tensor,
    *,
    sample_rate: int | None = None,
    target_rate: int = SAMPLE_RATE,
    offset: float = 0.0,
    duration: float | None = None,
) -> torch.Tensor:
    """Load audio from a file or an array as float32 stereo `[2, samples]` at `target_rate`.

    Files are decoded with PyAV (anything ffmpeg reads: wav, flac, mp3, ogg, m4a, or a video with an audio
    track); the first audio stream is used. Channels become stereo with `to_stereo`, using the file's
    channel layout; the part is selected before the conversion and resampling.

    Args:
        source: a file path, the bytes of an encoded file (e.g. a FLAC read from a data shard), or an array
            `[samples]` (mono) / `[channels, samples]` (numpy or torch). Integer arrays are scaled from their
            full range to [-1, 1].
        sample_rate: the rate of an array `source`: required for arrays, an error with a file (whose rate
            is read from the file).
        target_rate: rate of the returned audio.
        offset: start of the part to load, in seconds.
        duration: length of the part to load in seconds (None: up to the end).

    Raises:
        FileNotFoundError: the file does not exist.
        AudioError: a directory, an undecodable file or one without an audio stream, no samples in the
            selected part, NaN/inf samples, an unsupported channel count or layout, or a bad option.
    """
    if target_rate <= 0:
        raise AudioError(f"target_rate must be a positive number of Hz, got {target_rate}")
    if isinstance(source, (str, os.PathLike)):
        if sample_rate is not None:
            raise AudioError(
                f"sample_rate={sample_rate} is only for in-memory arrays; the rate of {os.fspath(source)!r} "
                "is read from the file (use target_rate to choose the output rate)"
            )
        audio, rate, names, what = _decode_file(Path(source), offset, duration)
    elif isinstance(source, bytes):
        if sample_rate is not None:
            raise AudioError(f"sample_rate={sample_rate} is only for in-memory arrays; the rate of encoded audio "
                             "is read from it (use target_rate to choose the output rate)")
        audio, rate, names, what = _decode_file(io.BytesIO(source), offset, duration)
    elif isinstance(source, (np.ndarray, torch.Tensor)):
        if sample_rate is None:
            raise AudioError("an in-memory array needs its rate: pass sample_rate=<Hz>")
        if sample_rate <= 0:
            raise AudioError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
        audio, rate, names, what = _array_to_tensor(source), sample_rate, None, "in-memory audio"
        start, stop = _sample_range(rate, offset, duration)
        audio = _select(audio, start, stop, rate, offset, what)
    else:
        raise AudioError(f"source must be a path, bytes, numpy array or torch tensor, got {type(source).__name__}")

    bad = int((~torch.isfinite(audio)).sum())
    if bad:
        raise AudioError(f"{what} contains {bad} NaN/inf samples (of {audio.numel()}); fix or remove them")
    stereo = to_stereo(audio, names)
    if rate != target_rate:
        stereo = resample(stereo, rate, target_rate)
    logger.debug("loaded %s: %d channels at %d Hz -> %s at %d Hz", what, audio.shape[0], rate,
                 tuple(stereo.shape), target_rate)
    return stereo.contiguous()


def write_audio(
    path: str | os.PathLike[str],
    audio: torch.Tensor,
    *,
    sample_rate: int = SAMPLE_RATE,
    bits: int = 16,
) -> Path:
    """Write `audio` to a wav or flac file (format from the extension), atomically.

    Integer formats clip samples outside [-1, 1] (with one warning saying how many); integer samples are
    `round(x * 2**(bits - 1))`, so +1.0 becomes the largest code. 24-bit FLAC is encoded from 32-bit
    samples, which ffmpeg's FLAC encoder stores as 24 bits per sample. The file is written next to `path`
    under a temporary name and renamed into place, so a failure never leaves a partial file.

    Args:
        path: output file, `.wav` or `.flac`; parent folders are created.
        audio: float tensor `[channels, samples]` (or `[1, channels, samples]`).
        sample_rate: rate of `audio` in Hz.
        bits: wav: 16 or 24 (integer PCM) or 32 (float); flac: 16 or 24.
    """
    path = Path(path)
    encoders = check_audio_output(path, bits=bits)
    from .checks import check_output_path

    check_output_path(path, formats=AUDIO_FORMATS, what="output")
    if sample_rate <= 0:
        raise AudioError(f"sample_rate must be a positive number of Hz, got {sample_rate}")
    audio = torch.as_tensor(audio).detach().cpu()
    if audio.ndim == 3 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 2 or not audio.is_floating_point() or audio.numel() == 0:
        raise AudioError(
            f"write_audio needs a non-empty float tensor [channels, samples], got {audio.dtype} "
            f"{tuple(audio.shape)}"
        )
    if path.suffix.lower() == ".flac" and audio.shape[0] > 8:
        raise AudioError(f"FLAC stores at most 8 channels, got {audio.shape[0]}; write a .wav instead")
    bad = int((~torch.isfinite(audio)).sum())
    if bad:
        raise AudioError(f"audio for {str(path)!r} contains {bad} NaN/inf samples; nothing was written")

    codec, sample_format = encoders[bits]
    samples = _to_samples(audio, bits, sample_format, path)
    layout = _LAYOUTS.get(audio.shape[0], f"{audio.shape[0]} channels")
    with atomic_write_path(path) as tmp, av.open(str(tmp), "w", format=path.suffix.lower()[1:]) as container:
        stream = container.add_stream(codec, rate=sample_rate)
        stream.layout = layout
        stream.format = sample_format
        frame = av.AudioFrame.from_ndarray(samples, format=sample_format, layout=layout)
        frame.sample_rate = sample_rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    logger.debug("wrote %s: %s at %d Hz, %d-bit", path, tuple(audio.shape), sample_rate, bits)
    return path


def check_audio_output(path: str | os.PathLike[str], *, bits: int) -> dict[int, tuple[str, str]]:
    """Raise an AudioError unless `write_audio` can write `path` at `bits` (check before long work).

    Args:
        path: the output file; its extension picks the format.
        bits: the bit depth asked for.
    """
    path = Path(path)
    encoders = _ENCODERS.get(path.suffix.lower())
    if encoders is None or bits not in encoders:
        supported = "; ".join(f"{ext}: bits {', '.join(map(str, enc))}" for ext, enc in _ENCODERS.items())
        raise AudioError(f"cannot write {path.name!r} with bits={bits}: supported formats are {supported}")
    return encoders


def _to_samples(audio: torch.Tensor, bits: int, sample_format: str, path: Path) -> np.ndarray:
    """Interleave `[channels, samples]` float audio into a packed PyAV array `[1, samples * channels]`."""
    if sample_format != "flt":
        return interleaved_pcm(audio, bits, what=f"writing {path}")
    return np.ascontiguousarray(audio.float().numpy().T).reshape(1, -1)


def interleaved_pcm(audio: torch.Tensor, bits: int, *, what: str) -> np.ndarray:
    """Float `[channels, samples]` -> packed PyAV integer samples `[1, samples * channels]`.

    Codes are round(x * 2**(bits - 1)), clipped to the integer range with one warning saying how many samples
    were outside [-1, 1]; 16 bits as int16, 24 bits in the top of int32 words (what ffmpeg's encoders store
    as 24-bit).

    Args:
        audio: float samples, channels first.
        bits: 16 or 24.
        what: what is being written, for the warning (e.g. "writing out.wav").
    """
    clipped = int((audio.abs() > 1).sum())
    if clipped:
        logger.warning("clipped %d of %d samples outside [-1, 1] while %s as %d-bit", clipped, audio.numel(),
                       what, bits)
    scale = 2 ** (bits - 1)
    codes = (audio.double() * scale).round().clamp(-scale, scale - 1).numpy()
    out = codes.astype(np.int16) if bits == 16 else codes.astype(np.int32) << (32 - bits)
    return np.ascontiguousarray(out.T).reshape(1, -1)


def _array_to_tensor(source: np.ndarray | torch.Tensor) -> torch.Tensor:
    """An in-memory array as float32 `[channels, samples]` on the CPU; integer samples scaled to [-1, 1]."""
    audio = torch.from_numpy(np.ascontiguousarray(source)) if isinstance(source, np.ndarray) else source
    audio = audio.detach().cpu()
    if audio.ndim == 1:
        audio = audio[None]
    if audio.ndim != 2:
        raise AudioError(f"an audio array must be [samples] or [channels, samples], not {tuple(audio.shape)}")
    if audio.is_floating_point():
        return audio.to(torch.float32, copy=True)  # never share memory with the caller's array
    if audio.dtype in (torch.int8, torch.int16, torch.int32, torch.int64):
        return (audio.double() / 2 ** (torch.iinfo(audio.dtype).bits - 1)).float()
    raise AudioError(f"unsupported sample type {audio.dtype}: use a float or signed integer array")


def _sample_range(rate: int, offset: float, duration: float | None) -> tuple[int, int | None]:
    """`offset`/`duration` in seconds as a sample range `[start, stop)` (stop None: to the end)."""
    if offset < 0:
        raise AudioError(f"offset must be >= 0 seconds, got {offset}")
    start = round(offset * rate)
    if duration is None:
        return start, None
    length = round(duration * rate)
    if length <= 0:
        raise AudioError(f"duration={duration} s is less than one sample at {rate} Hz; use a longer duration")
    return start, start + length


def _select(
    audio: torch.Tensor, start: int, stop: int | None, rate: int, offset: float, what: str
) -> torch.Tensor:
    """Slice `[channels, samples]` audio to `[start, stop)`; AudioError if nothing is left."""
    total = audio.shape[-1]
    if total == 0:
        raise AudioError(f"{what} contains no audio samples")
    audio = audio[:, start:stop]
    if audio.shape[-1] == 0:
        raise AudioError(
            f"offset={offset} s is past the end of {what} ({total / rate:.3f} s long); use a smaller offset"
        )
    return audio


def _decoded_frames(container: av.container.InputContainer, stream: av.AudioStream, name: str):
    """The stream's decoded frames. A packet the decoder rejects as invalid data is skipped, as the ffmpeg command
    line does: FFmpeg's FLAC parser can split off a piece of a valid frame at a false sync code (about one clip in
    two thousand of SynthFoley's), a piece that decodes to nothing while the frame itself decodes whole. Skipping
    is logged: at debug level when every sample the stream declares came out, else as a warning."""
    skipped, samples = 0, 0
    for packet in container.demux(stream):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            skipped += 1
            continue
        for frame in frames:
            samples += frame.samples
            yield frame
    if skipped:
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = round(stream.duration * stream.time_base * stream.codec_context.sample_rate)
        complete = declared is not None and samples >= declared
        logger.log(logging.DEBUG if complete else logging.WARNING,
                   "%s: skipped %d packet(s) of invalid data; %d samples decoded%s", name, skipped, samples,
                   "" if declared is None else f" of the {declared} the stream declares")


def _decode_file(
    path: Path | io.BytesIO, offset: float, duration: float | None
) -> tuple[torch.Tensor, int, list[str] | None, str]:
    """Decode the selected part of the first audio stream of `path` (a file, or an encoded file in memory).

    Returns the audio `[channels, samples]`, its rate, the layout's channel names (None when the layout does
    not name its channels) and a description of the file for messages.
    """
    if isinstance(path, io.BytesIO):
        name, what, opened = "the encoded audio in memory", "encoded audio in memory", path
    else:
        name, opened = repr(str(path)), str(path)
        what = f"audio file {name}"
        if not path.exists():
            raise FileNotFoundError(f"audio file not found: {str(path)!r}")
        if path.is_dir():
            raise AudioError(f"{str(path)!r} is a directory; pass the path of an audio or video file")
    try:
        with av.open(opened) as container:
            if not container.streams.audio:
                raise AudioError(
                    f"{name} has no audio stream (streams: "
                    f"{[s.type for s in container.streams] or 'none'}); pass a file with an audio track"
                )
            stream = container.streams.audio[0]
            ctx = stream.codec_context
            rate = ctx.sample_rate
            if not rate or rate <= 0:
                raise AudioError(f"{what} reports an invalid sample rate ({rate})")
            names = [channel.name for channel in ctx.layout.channels]
            start, stop = _sample_range(rate, offset, duration)
            resampler = av.AudioResampler(format="fltp", layout=ctx.layout, rate=rate)
            chunks, decoded = [], 0
            for frame in _decoded_frames(container, stream, name):
                for converted in resampler.resample(frame):
                    chunks.append(converted.to_ndarray())
                    decoded += chunks[-1].shape[-1]
                if stop is not None and decoded >= stop:
                    break  # the selected part is complete: skip the rest of the file
            else:  # decoded to the end: flush the resampler
                chunks.extend(converted.to_ndarray() for converted in resampler.resample(None))
    except av.FFmpegError as err:
        raise AudioError(
            f"cannot decode {name} as audio ({err}); pass an audio file (wav, flac, mp3, ogg, m4a, "
            "...) or a video file with an audio track"
        ) from err
    audio = torch.from_numpy(np.concatenate(chunks, axis=-1)) if chunks else torch.zeros(len(names), 0)
    channel_names = None if "NONE" in names else names
    return _select(audio, start, stop, rate, offset, what), rate, channel_names, what
