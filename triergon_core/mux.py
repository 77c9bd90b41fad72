"""Put generated audio into a copy of a video: the video stream is remuxed untouched, the audio is encoded.

`mux_audio(video, audio, out)` writes `out` (MP4, MOV or MKV, by extension) with two streams: the input's
first video stream, its packets copied as they are (no re-encode: same bytes, same frame timing; Matroska
stores timestamps in its 1 ms clock), and the generated audio encoded as AAC or FLAC. Everything else in the input is
dropped: its audio tracks (the generated audio replaces them), further video streams, subtitles, data and
attachment streams, chapters. The container's descriptive metadata (title, creation time, ...) and the video
stream's language are kept.

Timing. The audio is trimmed or zero-padded to the video's duration as `probe_video` measures it (first frame's
timestamp to the end of the last frame) and starts with the first video frame. The output's timeline starts at
that frame: video timestamps are the input's minus its `start_time` (a uniform shift in the input's time base,
so frame intervals are untouched; ffmpeg's CLI does the same unless -copyts), and the audio starts at 0. Keeping
a non-zero start is not an option for AAC in MP4/MOV: ffmpeg's MOV muxer then writes the audio edit list as an
empty edit (rounded to 1 ms) followed by the media from its first sample, so the 1024 priming samples are
played and the audio, as read back, starts 24 ms before the video (measured with a 0.4 s start).

AAC priming. ffmpeg's AAC encoder emits 1024 priming samples first: its first packet is stamped 1024 samples
before the audio's start. The muxers record this — MP4/MOV with an edit list that starts the track 1024 samples
in, Matroska with CodecDelay and a negative first timestamp — and ffmpeg's demuxer passes it to the decoder as
samples to skip, so decoding gives the first real sample at the audio's start time (measured: PyAV/ffmpeg 8
outputs no priming samples in either container; other players that ignore edit lists would play 23 ms of
near-silence first). The end is padded to a whole 1024-sample frame: MP4/MOV record the true length (the last
packet's duration, so the declared stream duration equals the video's to the sample), but decoders output the
whole last frame, i.e. up to 1023 extra silent samples; Matroska stores 1 ms timestamps and whole-frame
durations. FLAC has neither priming nor padding.

Codecs: AAC (default for .mp4/.mov) or FLAC (default for .mkv; also .mp4, where ffmpeg stores it as 'fLaC' —
most browsers and ffmpeg play it, some older Apple players do not). ffmpeg's MOV muxer refuses FLAC, so .mov
with FLAC is a ValueError.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from ._fs import atomic_write_path
from .audio import interleaved_pcm
from .checks import check_output_path
from .config import SAMPLE_RATE
from .video import VideoError, probe_video

logger = logging.getLogger(__name__)

__all__ = ["MUX_FORMATS", "check_mux_output", "mux_audio"]

# Output extension -> (ffmpeg muxer, default audio codec, allowed audio codecs).
MUX_FORMATS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    ".mp4": ("mp4", "aac", ("aac", "flac")),
    ".mov": ("mov", "aac", ("aac",)),  # ffmpeg's MOV muxer: "flac only supported in MP4."
    ".mkv": ("matroska", "flac", ("flac", "aac")),
}
FLAC_BITS = (16, 24)
AAC_BIT_RATE = 192_000  # stereo; ffmpeg's native encoder is transparent-ish here
# Rates the AAC bitstream can signal (ffmpeg's encoder refuses others).
AAC_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_CHUNK = 1 << 16  # samples per frame handed to the encoder (bounded temporary memory)
_MOV_FAMILY = "mov,mp4,m4a,3gp,3g2,mj2"
# Container metadata written by muxers themselves: not copied.
_MUXER_KEYS = {"encoder", "major_brand", "minor_version", "compatible_brands", "duration"}


def mux_audio(
    video_path: str | os.PathLike[str],
    audio: torch.Tensor | np.ndarray,
    output_path: str | os.PathLike[str],
    *,
    sample_rate: int = SAMPLE_RATE,
    codec: str | None = None,
    bits: int | None = None,
) -> Path:
    """Write a copy of `video_path` whose audio track is `audio`, to `output_path` (atomically).

    The first video stream is copied packet for packet (not re-encoded); `audio` is cut or zero-padded to the
    video's duration, starts with the video's first frame, and is encoded as AAC or FLAC. The output's timeline
    starts at the first frame: video timestamps are shifted by the input's `start_time` (usually 0). The
    input's audio tracks, subtitles, data streams and other video streams are dropped.

    Args:
        video_path: the source video (anything ffmpeg demuxes with real timestamps).
        audio: float `[2, samples]`, `[1, samples]` (mono: duplicated to stereo) or `[1, 2, samples]`, nominal
            range [-1, 1], at `sample_rate`.
        output_path: `.mp4`, `.mov` or `.mkv`; parent folders are created; must not be `video_path`.
        sample_rate: rate of `audio` in Hz; the audio track is stored at this rate (no resampling).
        codec: "aac" or "flac"; None: AAC for .mp4/.mov, FLAC for .mkv. FLAC is not possible in .mov.
        bits: FLAC sample depth, 16 (default) or 24; samples are `round(x * 2**(bits - 1))`, clipped to the
            integer range (as `audio.write_audio` does). Must be None for AAC (a lossy float codec).

    Returns:
        `output_path` as a Path.

    Raises:
        ValueError: unsupported extension, codec, bits or sample rate; bad audio shape/dtype; NaN/inf
            samples; output path equal to the input or a directory; a video codec the container cannot hold.
        FileNotFoundError: `video_path` does not exist.
        VideoError (a ValueError): the input is not a usable video (no video stream, no timestamps, ...).
    """
    video_path, output_path = Path(video_path), Path(output_path)
    muxer, codec, bits = _check_format(output_path, codec, bits)
    if sample_rate <= 0 or int(sample_rate) != sample_rate:
        raise ValueError(f"sample_rate must be a positive whole number of Hz, got {sample_rate}")
    sample_rate = int(sample_rate)
    if codec == "aac" and sample_rate not in AAC_RATES:
        raise ValueError(f"AAC cannot store {sample_rate} Hz audio; resample to one of "
                         f"{', '.join(map(str, AAC_RATES))} Hz, or use codec='flac' (in .mkv/.mp4)")
    stereo = _stereo(audio)
    # the input is read while the output is written: never the same file
    check_output_path(output_path, formats=MUX_FORMATS, what="output", inputs={"the input video": video_path})

    info = probe_video(video_path)  # FileNotFoundError / VideoError for missing or unusable inputs
    num_samples = round(info.duration * sample_rate)
    have = stereo.shape[-1]
    if have != num_samples:
        logger.info("%s: audio is %.3f s, video %.3f s: %s to the video's length", output_path,
                    have / sample_rate, info.duration, "trimmed" if have > num_samples else "zero-padded")
    fitted = np.zeros((2, num_samples), np.float32)
    fitted[:, :min(have, num_samples)] = stereo[:, :num_samples]

    try:
        with atomic_write_path(output_path) as tmp:
            _write(video_path, tmp, muxer, codec, bits, fitted, sample_rate, info.start_time)
    except av.FFmpegError as err:
        if isinstance(err, OSError):  # disk full, permissions, ...: not something another container fixes
            raise
        if codec == "flac" and muxer == "mp4":
            raise ValueError(f"this ffmpeg build cannot store FLAC in MP4 ({err}); write .mkv, or use "
                             "codec='aac'") from err
        raise ValueError(f"cannot write {str(output_path)!r} ({err}); try another container (.mkv holds "
                         "almost any video codec)") from err
    logger.debug("muxed %s: %s %d Hz audio (%d samples from %.3f s) into %s", output_path, codec, sample_rate,
                 num_samples, info.start_time, video_path)
    return output_path


def check_mux_output(path: str | os.PathLike[str], *, codec: str | None = None, bits: int | None = None) -> int | None:
    """Raise a ValueError unless `mux_audio` can write `path` with `codec` and `bits` (check before long work);
    return the bits it will use (None for AAC)."""
    return _check_format(Path(path), codec, bits)[2]


def _check_format(path: Path, codec: str | None, bits: int | None) -> tuple[str, str, int | None]:
    """(muxer, codec, bits) for the output's extension and the options; ValueError when unsupported."""
    spec = MUX_FORMATS.get(path.suffix.lower())
    if spec is None:
        supported = "; ".join(f"{ext} ({', '.join(codecs)})" for ext, (_, _, codecs) in MUX_FORMATS.items())
        raise ValueError(f"cannot write {path.name!r}: supported containers (audio codecs) are {supported}")
    muxer, default, allowed = spec
    codec = default if codec is None else str(codec).lower()
    if codec not in allowed:
        hint = " (ffmpeg's MOV muxer cannot store FLAC: use .mkv or .mp4)" if codec == "flac" else ""
        raise ValueError(f"{path.suffix.lower()} output supports audio codecs {', '.join(allowed)}, not "
                         f"{codec!r}{hint}")
    if codec == "flac":
        bits = 16 if bits is None else bits
        if bits not in FLAC_BITS:
            raise ValueError(f"FLAC bits must be one of {FLAC_BITS}, got {bits}")
    elif bits is not None:
        raise ValueError(f"bits={bits} applies to FLAC only; AAC is lossy and has no sample depth (drop bits)")
    return muxer, codec, bits


def _stereo(audio: torch.Tensor | np.ndarray) -> np.ndarray:
    """Float32 `[2, samples]` numpy array from `[2|1, samples]` or `[1, 2|1, samples]` float audio."""
    if isinstance(audio, np.ndarray):
        audio = torch.from_numpy(np.ascontiguousarray(audio))
    if not isinstance(audio, torch.Tensor):
        raise ValueError(f"audio must be a torch tensor or numpy array, got {type(audio).__name__}")
    audio = audio.detach().cpu()
    if audio.ndim == 3 and audio.shape[0] == 1:
        audio = audio[0]
    if audio.ndim != 2 or audio.shape[0] not in (1, 2) or not audio.is_floating_point() or audio.shape[1] == 0:
        raise ValueError(f"audio must be a non-empty float tensor [2, samples], [1, samples] or [1, 2, samples]; "
                         f"got {audio.dtype} {tuple(audio.shape)}")
    bad = int((~torch.isfinite(audio)).sum())
    if bad:
        raise ValueError(f"audio contains {bad} NaN/inf samples (of {audio.numel()}); nothing was written")
    if audio.shape[0] == 1:
        audio = audio.expand(2, -1)
    return audio.to(torch.float32).numpy()


def _write(video_path: Path, tmp: Path, muxer: str, codec: str, bits: int | None, audio: np.ndarray,
           sample_rate: int, start_time: float) -> None:
    options = {"movflags": "+faststart"} if muxer in ("mp4", "mov") else {}
    with av.open(str(video_path)) as source, av.open(str(tmp), "w", format=muxer, options=options) as out:
        if not source.streams.video:  # probe_video checked, but the file could have changed since
            raise VideoError(f"{str(video_path)!r} has no video stream; pass a file with a video track")
        video_in = source.streams.video[0]
        try:
            video_out = out.add_stream_from_template(video_in, opaque=True)
        except ValueError as err:  # the muxer cannot hold this codec
            raise ValueError(f"cannot copy {video_in.codec_context.name} video into a {out.format.name} file "
                             f"({err}); write .mkv instead") from err
        if source.format.name == _MOV_FAMILY and muxer in ("mp4", "mov") and video_in.codec_tag.strip("\x00"):
            video_out.codec_tag = video_in.codec_tag  # keep e.g. 'hvc1' (Apple players refuse 'hev1' HEVC)
        if "language" in video_in.metadata:
            video_out.metadata["language"] = video_in.metadata["language"]
        out.metadata.update({k: v for k, v in source.metadata.items() if k.lower() not in _MUXER_KEYS})

        audio_out = out.add_stream(codec, rate=sample_rate, layout="stereo")
        if codec == "aac":
            audio_out.format, audio_out.bit_rate = "fltp", AAC_BIT_RATE
        else:
            audio_out.format = "s16" if bits == 16 else "s32"
        # All audio is encoded first (a few MB per minute) so that it can be interleaved with the video by time.
        audio_packets = list(_encode(audio_out, audio, sample_rate, codec, bits))
        # start_time is float(first_pts * time_base): rounding recovers the integer timestamp exactly.
        first_pts = round(Fraction(start_time) / video_in.time_base)
        _mux_interleaved(out, _video_packets(source, video_in, video_out, first_pts, video_path), audio_packets)


def _encode(stream, audio: np.ndarray, sample_rate: int, codec: str, bits: int | None) -> Iterator[av.Packet]:
    """Encoded packets of `[2, samples]` float audio whose first sample is at time 0 (AAC: the first packet, of
    priming samples, is stamped -1024 samples)."""
    time_base = Fraction(1, sample_rate)
    for offset in range(0, audio.shape[1], _CHUNK):
        chunk = audio[:, offset:offset + _CHUNK]
        if codec == "aac":
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
        else:
            pcm = interleaved_pcm(torch.from_numpy(chunk), bits, what="encoding FLAC")
            frame = av.AudioFrame.from_ndarray(pcm, format=stream.format.name, layout="stereo")
        frame.sample_rate, frame.pts, frame.time_base = sample_rate, offset, time_base
        yield from stream.encode(frame)
    yield from stream.encode(None)


def _video_packets(source, video_in, video_out, first_pts: int, path: Path) -> Iterator[av.Packet]:
    """The input video stream's packets, re-addressed to the output stream, shifted so that the first frame is
    at 0 (data untouched)."""
    for packet in source.demux(video_in):
        if packet.size == 0:  # demuxer's end-of-stream marker
            continue
        if packet.dts is None and packet.pts is None:
            raise VideoError(f"{str(path)!r} has video packets without timestamps; remux it first, e.g. "
                             f"`ffmpeg -i {path.name} -c copy {path.stem}.mkv`")
        if packet.pts is not None:
            packet.pts -= first_pts
        if packet.dts is not None:
            packet.dts -= first_pts
        packet.stream = video_out
        yield packet


def _seconds(packet: av.Packet) -> Fraction:
    ts = packet.dts if packet.dts is not None else packet.pts
    return ts * packet.time_base


def _mux_interleaved(out, video: Iterable[av.Packet], audio: list[av.Packet]) -> None:
    """Mux both streams in decode-time order (the muxer's own interleaving would buffer the whole video)."""
    i = 0
    for packet in video:
        t = _seconds(packet)
        while i < len(audio) and _seconds(audio[i]) <= t:
            out.mux(audio[i])
            i += 1
        out.mux(packet)
    for packet in audio[i:]:
        out.mux(packet)
