"""Muxing generated audio into videos: stream copy, AAC/FLAC in MP4/MOV/MKV, priming, trim/pad, errors."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from _videos import write_video, write_wav

from triergon.triergon_core import mux
from triergon.triergon_core.mux import mux_audio
from triergon.triergon_core.video import VideoError, probe_video

SR = 44100
AAC_FRAME = 1024
CASES = [("mp4", "aac"), ("mov", "aac"), ("mkv", "flac"), ("mkv", "aac"), ("mp4", "flac")]


def chirp(seconds: float, rate: int = SR) -> torch.Tensor:
    """A 200 Hz -> 4 kHz sweep, [2, samples]: unlike a steady tone it correlates only when aligned."""
    t = np.arange(round(seconds * rate)) / rate
    x = 0.5 * np.sin(2 * np.pi * (200 * t + 3800 / (2 * seconds) * t**2))
    return torch.from_numpy(np.stack([x, -x]).astype(np.float32))


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("mux-src")
    return {
        # 2.4 s at 25 fps with a 1 kHz AAC track (to be replaced)
        "25fps-mp4-audio": write_video(folder / "a.mp4", fps=25, num_frames=60, audio=True),
        # 2.5025 s at 29.97 fps, no audio, Matroska (1 ms clock), B-frames
        "29.97fps-mkv": write_video(folder / "b.mkv", fps=Fraction(30000, 1001), num_frames=75,
                                    options={"preset": "medium", "crf": "18"}),
        # first frame at 0.4 s
        "offset-mkv": write_video(folder / "c.mkv", fps=25, pts=list(range(10, 60)), time_base=Fraction(1, 25)),
    }


@dataclass
class ReadBack:
    stream_types: list[str]
    video_codec: str
    video_size: tuple[int, int]
    video_packets: list[tuple[Fraction, Fraction | None, bytes]]  # pts, dts (seconds), data
    video_tick: Fraction  # the stream's time base
    audio_codec: str
    audio_rate: int
    audio_channels: int
    audio_start: float  # first decoded frame's pts, seconds
    audio_samples: np.ndarray  # decoded [2, n]: float for AAC, int16 codes for 16-bit FLAC
    audio_packet_end: float  # max(pts + duration) over packets, seconds
    audio_frame_size: int


def video_packets(path: Path) -> tuple[list[tuple[Fraction, Fraction | None, bytes]], Fraction]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pts * p.time_base, None if p.dts is None else p.dts * p.time_base, bytes(p))
                   for p in container.demux(stream) if p.size]
        return packets, stream.time_base


def read_back(path: Path) -> ReadBack:
    packets, tick = video_packets(path)
    with av.open(str(path)) as container:
        types = [s.type for s in container.streams]
        video, audio = container.streams.video[0], container.streams.audio[0]
        ends = [float((p.pts + p.duration) * p.time_base) for p in container.demux(audio) if p.size]
        codec, size = video.codec_context.name, (video.codec_context.width, video.codec_context.height)
    with av.open(str(path)) as container:
        audio = container.streams.audio[0]
        frames = list(container.decode(audio))
        ctx = audio.codec_context
        arrays = []
        for frame in frames:
            array = frame.to_ndarray()
            arrays.append(array if frame.format.is_planar else array.reshape(-1, frame.layout.nb_channels).T)
        return ReadBack(types, codec, size, packets, tick, ctx.name, ctx.sample_rate, ctx.layout.nb_channels,
                        float(frames[0].pts * frames[0].time_base), np.concatenate(arrays, axis=1), max(ends),
                        max(f.samples for f in frames))


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(np.asarray(a, np.float64), np.asarray(b, np.float64))[0, 1])


@pytest.mark.parametrize("source", ["25fps-mp4-audio", "29.97fps-mkv", "offset-mkv"])
@pytest.mark.parametrize(("ext", "codec"), CASES)
def test_mux_copies_video_and_encodes_audio(sources, tmp_path, source, ext, codec):
    src = sources[source]
    before = probe_video(src)
    signal = chirp(3.0)  # longer than every source: trimmed
    out = mux_audio(src, signal, tmp_path / "sub" / f"out.{ext}", codec=codec)
    assert out == tmp_path / "sub" / f"out.{ext}" and out.is_file()
    back, after = read_back(out), probe_video(out)

    # one video and one audio stream; the source's AAC track is gone
    assert sorted(back.stream_types) == ["audio", "video"]
    # the video is copied: same codec, size, frame count, packet data; timestamps shifted so the first frame is
    # at 0, equal to the output container's clock (Matroska: 1 ms)
    src_packets, _ = video_packets(src)
    assert back.video_codec == "h264" and back.video_size == (64, 48)
    assert len(back.video_packets) == len(src_packets) == after.num_frames
    assert [p[2] for p in back.video_packets] == [p[2] for p in src_packets]
    start = Fraction(before.start_time)
    for (pts, dts, _), (src_pts, src_dts, _) in zip(back.video_packets, src_packets, strict=True):
        assert abs(pts - (src_pts - start)) <= back.video_tick / 2
        if dts is not None and src_dts is not None:
            assert abs(dts - (src_dts - start)) <= back.video_tick / 2
    assert after.start_time == 0.0
    assert after.duration == pytest.approx(before.duration, abs=float(back.video_tick))

    # audio: 44.1 kHz stereo, starting with the video (no AAC priming samples decoded), lasting as long
    assert (back.audio_codec, back.audio_rate, back.audio_channels) == (codec, SR, 2)
    assert abs(back.audio_start - after.start_time) <= 1 / SR
    video_end, decoded_end = after.start_time + after.duration, back.audio_start + back.audio_samples.shape[1] / SR
    clock = float(back.video_tick) if ext == "mkv" else 1 / SR  # Matroska rounds the video end to 1 ms
    expected = round(before.duration * SR)
    if codec == "aac":
        assert back.audio_frame_size == AAC_FRAME
        # FFmpeg <= 8 decodes whole frames: up to 1023 padding samples past the end, never fewer samples; FFmpeg 9
        # (PyAV 19) trims the padding to the length the container records (Matroska's to its 1 ms clock)
        decoded_samples = back.audio_samples.shape[1]
        assert decoded_samples == -(-expected // AAC_FRAME) * AAC_FRAME or abs(decoded_samples - expected) <= clock * SR
        assert -clock <= decoded_end - video_end < AAC_FRAME / SR + clock
        if ext in ("mp4", "mov"):  # the edit list / last packet duration record the exact length
            assert back.audio_packet_end == pytest.approx(video_end, abs=1 / SR)
        else:
            assert abs(back.audio_packet_end - video_end) < AAC_FRAME / SR + clock
        n = min(decoded_samples, expected)
        for channel in range(2):  # aligned to the sample: a 1-sample shift of the sweep drops this to ~0.94
            assert correlation(back.audio_samples[channel, :n], signal[channel, :n]) > 0.99
    else:
        # FLAC: no priming, no padding: exactly the video's length, bit-exact 16-bit codes
        assert back.audio_samples.dtype == np.int16
        assert back.audio_samples.shape[1] == expected
        assert abs(decoded_end - video_end) <= clock + 1 / SR
        assert abs(back.audio_packet_end - video_end) <= clock + 1 / SR
        codes = (signal[:, :expected].double() * 32768).round().clamp(-32768, 32767).short().numpy()
        np.testing.assert_array_equal(back.audio_samples, codes)


@pytest.mark.parametrize(("ext", "codec"), [("mkv", "flac"), ("mp4", "aac")])
def test_short_audio_is_zero_padded(sources, tmp_path, ext, codec):
    src = sources["25fps-mp4-audio"]  # 2.4 s
    signal = chirp(1.0)
    back = read_back(mux_audio(src, signal, tmp_path / f"pad.{ext}", codec=codec))
    n = signal.shape[1]
    assert back.audio_samples.shape[1] >= round(2.4 * SR)
    if codec == "flac":
        assert np.abs(back.audio_samples[:, :n]).max() > 10_000
        assert not back.audio_samples[:, n:].any()
    else:
        head, tail = back.audio_samples[:, :n], back.audio_samples[:, n + 2 * AAC_FRAME:]  # past AAC's ringing
        assert correlation(head[0], signal[0]) > 0.99
        assert np.abs(tail).max() < 1e-3


def test_mono_batched_numpy_and_24_bit(sources, tmp_path):
    src = sources["offset-mkv"]  # 2.0 s
    mono = chirp(2.0)[:1]
    back = read_back(mux_audio(src, mono, tmp_path / "mono.mkv"))
    assert back.audio_channels == 2
    np.testing.assert_array_equal(back.audio_samples[0], back.audio_samples[1])

    batched = chirp(2.0)[None]  # [1, 2, samples]
    np.testing.assert_array_equal(read_back(mux_audio(src, batched, tmp_path / "b.mkv")).audio_samples,
                                  read_back(mux_audio(src, batched[0].numpy(), tmp_path / "c.mkv")).audio_samples)

    deep = read_back(mux_audio(src, batched, tmp_path / "d.mkv", bits=24))
    expected = (batched[0].double() * 2**23).round().clamp(-(2**23), 2**23 - 1).numpy().astype(np.int64)
    assert deep.audio_samples.dtype == np.int32
    np.testing.assert_array_equal(deep.audio_samples.astype(np.int64) >> 8, expected)


def test_other_sample_rate_is_kept(sources, tmp_path):
    back = read_back(mux_audio(sources["25fps-mp4-audio"], chirp(2.4, 48000), tmp_path / "a.mp4", sample_rate=48000))
    assert back.audio_rate == 48000
    assert back.audio_packet_end == pytest.approx(2.4, abs=1 / 48000)


def test_rotation_is_kept(tmp_path):
    src = write_video(tmp_path / "rot.mp4", fps=25, num_frames=5, rotation=90)
    for ext in ("mp4", "mkv"):
        assert probe_video(mux_audio(src, torch.zeros(2, 100), tmp_path / f"out.{ext}")).rotation == 90


def test_bad_options(sources, tmp_path):
    src, audio = sources["25fps-mp4-audio"], torch.zeros(2, SR)
    with pytest.raises(ValueError, match=r"\.mp4.*\.mov.*\.mkv"):
        mux_audio(src, audio, tmp_path / "out.webm")
    with pytest.raises(ValueError, match="MOV muxer cannot store FLAC"):
        mux_audio(src, audio, tmp_path / "out.mov", codec="flac")
    with pytest.raises(ValueError, match="not 'opus'"):
        mux_audio(src, audio, tmp_path / "out.mkv", codec="opus")
    with pytest.raises(ValueError, match="FLAC only"):
        mux_audio(src, audio, tmp_path / "out.mp4", bits=16)
    with pytest.raises(ValueError, match="FLAC bits"):
        mux_audio(src, audio, tmp_path / "out.mkv", bits=20)
    with pytest.raises(ValueError, match="AAC cannot store 12345 Hz"):
        mux_audio(src, audio, tmp_path / "out.mp4", sample_rate=12345)
    for bad in (torch.zeros(3, 100), torch.zeros(100), torch.zeros(2, 0), torch.zeros(2, 100, dtype=torch.int16)):
        with pytest.raises(ValueError, match="non-empty float tensor"):
            mux_audio(src, bad, tmp_path / "out.mp4")
    (tmp_path / "folder.mkv").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        mux_audio(src, audio, tmp_path / "folder.mkv")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder.mkv"]


def test_same_path_is_refused(sources, tmp_path):
    src = write_video(tmp_path / "v.mp4", fps=25, num_frames=10)
    data = src.read_bytes()
    for same in (src, tmp_path / "x" / ".." / "v.mp4"):
        with pytest.raises(ValueError, match="is the input video"):
            mux_audio(src, torch.zeros(2, 100), same)
    (tmp_path / "link.mp4").symlink_to(src)
    with pytest.raises(ValueError, match="is the input video"):
        mux_audio(tmp_path / "link.mp4", torch.zeros(2, 100), src)
    assert src.read_bytes() == data


def test_bad_inputs(tmp_path):
    audio = torch.zeros(2, 100)
    with pytest.raises(FileNotFoundError):
        mux_audio(tmp_path / "missing.mp4", audio, tmp_path / "out.mp4")
    with pytest.raises(VideoError, match="no video stream"):
        mux_audio(write_wav(tmp_path / "sound.wav"), audio, tmp_path / "out.mp4")
    src = write_video(tmp_path / "v.mp4", fps=25, num_frames=10)
    nan = torch.zeros(2, 100)
    nan[1, 5] = float("nan")
    with pytest.raises(ValueError, match="1 NaN/inf"):
        mux_audio(src, nan, tmp_path / "out.mp4")
    ffv1 = write_video(tmp_path / "f.mkv", fps=25, num_frames=5, codec="ffv1")
    with pytest.raises(ValueError, match="cannot copy ffv1 video into a mov file"):
        mux_audio(ffv1, audio, tmp_path / "out.mov")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.mkv", "sound.wav", "v.mp4"]


def test_failed_write_leaves_no_partial_file(sources, tmp_path, monkeypatch):
    def fail_midway(out, video, audio):
        for packet in list(video)[:10]:
            out.mux(packet)
        raise OSError("disk full")

    monkeypatch.setattr(mux, "_mux_interleaved", fail_midway)
    src = sources["25fps-mp4-audio"]
    with pytest.raises(OSError, match="disk full"):
        mux_audio(src, torch.zeros(2, 100), tmp_path / "new.mp4")
    old = tmp_path / "old.mkv"
    old.write_bytes(b"previous output")
    with pytest.raises(OSError, match="disk full"):
        mux_audio(src, torch.zeros(2, 100), old)
    assert old.read_bytes() == b"previous output"
    assert [p.name for p in tmp_path.iterdir()] == ["old.mkv"]  # no temporary file left behind
