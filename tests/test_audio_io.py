"""Audio I/O: decoding files and arrays to stereo, downmix, resampling, wav/flac writing and errors.

All test audio is generated here, with numpy and PyAV (files written directly with PyAV do not depend on
`write_audio`).
"""

from __future__ import annotations

import logging
import wave

import av
import numpy as np
import pytest
import torch

from triergon.triergon_core.audio import SAMPLE_RATE, AudioError, load_audio, to_stereo, write_audio

G = 0.7071  # ITU-R BS.775 centre/surround gain


def _write_raw(path, data: np.ndarray, *, rate: int = SAMPLE_RATE, layout: str = "stereo"):
    """Write float32 `[channels, samples]` as a 32-bit float wav with PyAV and the given channel layout."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_f32le", rate=rate)
        stream.layout = layout
        stream.format = "flt"
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(data.T, dtype=np.float32).reshape(1, -1), format="flt", layout=layout
        )
        frame.sample_rate = rate
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _write_mp4(path, audio: np.ndarray | None, *, rate: int = SAMPLE_RATE):
    """A small MPEG-4 video (10 frames of 64x48) with an optional mono AAC track."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("mpeg4", rate=10)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        if audio is not None:
            sound = container.add_stream("aac", rate=rate)
            sound.layout = "mono"
            # 192 kb/s: at the encoder's default (69 kb/s) a 0.5 sine decodes with peaks of 0.521 (FFmpeg 8,
            # PyAV 18) or 0.552 (FFmpeg 9, PyAV 19); at 192 kb/s 0.5004 with both
            sound.bit_rate = 192_000
        for i in range(10):
            image = np.full((48, 64, 3), 20 * i, dtype=np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(video.encode(None))
        if audio is not None:
            frame = av.AudioFrame.from_ndarray(audio[None].astype(np.float32), format="fltp", layout="mono")
            frame.sample_rate = rate
            container.mux(sound.encode(frame))
            container.mux(sound.encode(None))
    return path


def _sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    return (amplitude * np.sin(2 * np.pi * freq * np.arange(round(seconds * rate)) / rate)).astype(np.float32)


def _peak_hz(x: torch.Tensor, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x.numpy().astype(np.float64)))
    return float(np.argmax(spectrum) * rate / len(x))


def _file_rate(path) -> int:
    with av.open(str(path)) as container:
        return container.streams.audio[0].codec_context.sample_rate


@pytest.fixture
def stereo() -> torch.Tensor:
    rng = np.random.default_rng(0)
    x = rng.uniform(-0.99, 0.99, size=(2, 3000)).astype(np.float32)
    x[:, :4] = [[1.0, -1.0, 0.0, 0.5], [-1.0, 1.0, 0.25, -0.5]]  # exact extremes survive every format
    return torch.from_numpy(x)


@pytest.mark.parametrize(
    ("suffix", "bits", "tol"),
    [
        (".wav", 16, 2**-15),
        (".wav", 24, 2**-23),
        (".wav", 32, 0.0),
        (".flac", 16, 2**-15),
        (".flac", 24, 2**-23),
    ],
)
def test_round_trip(tmp_path, stereo, suffix, bits, tol):
    path = write_audio(tmp_path / "sub" / f"clip{suffix}", stereo, sample_rate=48000, bits=bits)
    assert path == tmp_path / "sub" / f"clip{suffix}"
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
    assert _file_rate(path) == 48000
    loaded = load_audio(path, target_rate=48000)
    assert loaded.dtype == torch.float32 and loaded.shape == stereo.shape
    assert (loaded - stereo).abs().max().item() <= tol
    assert loaded[0, 1].item() == -1.0 and loaded[1, 0].item() == -1.0
    if bits != 32:  # quantisation really happened at the requested depth
        codes = loaded * 2 ** (bits - 1)
        assert torch.equal(codes, codes.round())


def test_flac_24_bit_stores_24_bits(tmp_path, stereo):
    path = write_audio(tmp_path / "a.flac", stereo, bits=24)
    data = path.read_bytes()
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO comes first
    fields = int.from_bytes(data[8 + 10 : 8 + 18], "big")
    assert (fields >> 44) == SAMPLE_RATE
    assert ((fields >> 36) & 0x1F) + 1 == 24  # bits per sample


def test_write_accepts_batch_of_one_and_overwrites(tmp_path, stereo):
    path = tmp_path / "a.wav"
    path.write_bytes(b"old")
    write_audio(path, stereo[None], bits=32)
    assert torch.equal(load_audio(path), stereo)


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, stereo, monkeypatch):
    path = write_audio(tmp_path / "old.flac", torch.zeros(2, 100))
    before = path.read_bytes()

    def fail(src, dst):
        assert src != dst and src.exists() and src.stat().st_size > 0  # the encoded temp file
        raise OSError("disk full")

    monkeypatch.setattr("triergon.triergon_core.audio.os.replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_audio(path, stereo)
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_resample_48k_to_44k1(tmp_path):
    rate, seconds = 48000, 0.5
    path = _write_raw(tmp_path / "sine48k.wav", np.stack([_sine(1000, seconds, rate)] * 2), rate=rate)
    audio = load_audio(path)
    expected = round(seconds * rate * SAMPLE_RATE / rate)
    assert audio.shape[0] == 2 and abs(audio.shape[1] - expected) <= 1
    assert abs(_peak_hz(audio[0], SAMPLE_RATE) - 1000) < 5
    assert audio.abs().max().item() == pytest.approx(0.5, abs=0.02)


def test_mono_file_duplicated(tmp_path):
    mono = _sine(440, 0.1, SAMPLE_RATE)
    audio = load_audio(_write_raw(tmp_path / "mono.wav", mono[None], layout="mono"))
    assert audio.shape == (2, len(mono))
    assert torch.equal(audio[0], audio[1])
    assert torch.equal(audio[0], torch.from_numpy(mono))


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_in_memory_arrays(kind):
    wrap = np.asarray if kind == "numpy" else torch.as_tensor
    mono = _sine(440, 0.05, SAMPLE_RATE)
    out = load_audio(wrap(mono), sample_rate=SAMPLE_RATE)
    assert out.shape == (2, len(mono)) and out.dtype == torch.float32
    assert torch.equal(out[0], torch.from_numpy(mono)) and torch.equal(out[1], out[0])
    pair = wrap(np.stack([mono, -mono]))
    out = load_audio(pair, sample_rate=SAMPLE_RATE)
    assert torch.equal(out, torch.as_tensor(pair))
    out.zero_()  # the result never aliases the caller's array
    assert np.asarray(pair).any()
    out = load_audio(wrap(np.stack([mono, -mono]).astype(np.float64)), sample_rate=22050)
    assert out.dtype == torch.float32 and out.shape == (2, 2 * len(mono))


def test_integer_arrays_scaled():
    out = load_audio(np.array([0, 16384, -32768, 32767], dtype=np.int16), sample_rate=SAMPLE_RATE)
    assert out[0].tolist() == pytest.approx([0.0, 0.5, -1.0, 32767 / 32768])
    out = load_audio(np.array([[2**30], [-(2**31)]], dtype=np.int32), sample_rate=SAMPLE_RATE)
    assert out[:, 0].tolist() == [0.5, -1.0]


SURROUND_LEVELS = [0.1, 0.2, 0.3, 0.4, 0.05, 0.15]  # FL FR FC LFE (surround L) (surround R)
EXPECTED_LR = [0.1 + G * 0.3 + G * 0.05, 0.2 + G * 0.3 + G * 0.15]


@pytest.mark.parametrize("layout", ["5.1", "5.1(side)"])
def test_5_1_file_downmix(tmp_path, layout):
    data = np.array(SURROUND_LEVELS, dtype=np.float32)[:, None].repeat(500, axis=1)
    audio = load_audio(_write_raw(tmp_path / "surround.wav", data, layout=layout))
    assert audio.shape == (2, 500)
    assert audio[:, 0].tolist() == pytest.approx(EXPECTED_LR, abs=1e-6)
    assert torch.equal(audio[:, 0:1].expand(2, 500), audio)


def test_surround_arrays_downmix():
    data = np.array(SURROUND_LEVELS, dtype=np.float32)[:, None].repeat(10, axis=1)
    assert load_audio(data, sample_rate=SAMPLE_RATE)[:, 0].tolist() == pytest.approx(EXPECTED_LR, abs=1e-6)
    seven = np.array([*SURROUND_LEVELS, 0.02, 0.04], dtype=np.float32)[:, None].repeat(10, axis=1)
    expected = [EXPECTED_LR[0] + G * 0.02, EXPECTED_LR[1] + G * 0.04]
    assert load_audio(seven, sample_rate=SAMPLE_RATE)[:, 0].tolist() == pytest.approx(expected, abs=1e-6)
    with pytest.raises(AudioError, match="3 channels"):
        load_audio(np.zeros((3, 100), np.float32), sample_rate=SAMPLE_RATE)
    with pytest.raises(AudioError, match=r"44100 channels.*transpose"):
        load_audio(np.zeros((SAMPLE_RATE, 2), np.float32), sample_rate=SAMPLE_RATE)


def test_to_stereo_batch_and_names():
    batch = torch.tensor(SURROUND_LEVELS)[None, :, None].repeat(3, 1, 4)
    out = to_stereo(batch)
    assert out.shape == (3, 2, 4)
    assert out[2, :, 3].tolist() == pytest.approx(EXPECTED_LR, abs=1e-6)
    side = to_stereo(torch.ones(4, 1), ["FL", "FR", "SL", "SR"])
    assert side[:, 0].tolist() == pytest.approx([1 + G, 1 + G])  # no renormalisation
    with pytest.raises(AudioError, match="BC"):
        to_stereo(torch.ones(4, 1), ["FL", "FR", "FC", "BC"])


def test_offset_and_duration(tmp_path):
    ramp = np.arange(SAMPLE_RATE, dtype=np.float32) / SAMPLE_RATE
    out = load_audio(ramp, sample_rate=SAMPLE_RATE, offset=0.25, duration=0.5)
    assert torch.equal(out[0], torch.from_numpy(ramp[11025:33075]))
    path = _write_raw(tmp_path / "ramp.wav", np.stack([ramp, -ramp]))
    out = load_audio(path, offset=0.5)
    assert torch.equal(out, torch.from_numpy(np.stack([ramp, -ramp])[:, 22050:]))
    assert load_audio(path, offset=0.9, duration=5.0).shape == (2, SAMPLE_RATE - 39690)
    with pytest.raises(AudioError, match="past the end"):
        load_audio(path, offset=2.0)



def test_encoded_bytes_decode_like_the_file(tmp_path, stereo):
    """An encoded file in memory (e.g. a FLAC from a data shard) decodes exactly as the file does."""
    path = write_audio(tmp_path / "clip.flac", stereo, bits=24)
    data = path.read_bytes()
    assert torch.equal(load_audio(data), load_audio(path))
    assert torch.equal(load_audio(data, offset=0.01, duration=0.02), load_audio(path, offset=0.01, duration=0.02))
    with pytest.raises(AudioError, match="cannot decode the encoded audio in memory"):
        load_audio(b"not audio at all\n" * 20)
    with pytest.raises(AudioError, match="only for in-memory arrays"):
        load_audio(data, sample_rate=SAMPLE_RATE)

def test_video_audio_track(tmp_path):
    sine = _sine(1000, 1.0, SAMPLE_RATE)
    audio = load_audio(_write_mp4(tmp_path / "clip.mp4", sine))
    assert audio.shape[0] == 2 and audio.shape[1] >= len(sine)  # AAC adds priming/padding samples
    assert torch.equal(audio[0], audio[1])
    assert abs(_peak_hz(audio[0], SAMPLE_RATE) - 1000) < 5
    assert audio[0, 4096:-4096].abs().max().item() == pytest.approx(0.5, abs=0.005)  # away from codec edges
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(_write_mp4(tmp_path / "silent.mp4", None))


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.wav"):
        load_audio(tmp_path / "missing.wav")
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n" * 20)
    with pytest.raises(AudioError, match=r"cannot decode .*notes\.wav"):
        load_audio(text)
    with pytest.raises(AudioError, match="directory"):
        load_audio(tmp_path)
    empty = tmp_path / "empty.wav"
    with wave.open(str(empty), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(empty)
    bad = np.zeros((2, 100), np.float32)
    bad[0, 10], bad[1, 20], bad[1, 30] = np.nan, np.inf, np.nan
    with pytest.raises(AudioError, match="3 NaN/inf samples"):
        load_audio(_write_raw(tmp_path / "nan.wav", bad))
    with pytest.raises(AudioError, match="only for in-memory arrays"):
        load_audio(empty, sample_rate=SAMPLE_RATE)


def test_array_errors():
    with pytest.raises(AudioError, match="2 NaN/inf samples"):
        load_audio(np.array([0.0, np.nan, 0.1, np.nan], np.float32), sample_rate=SAMPLE_RATE)
    with pytest.raises(AudioError, match="sample_rate"):
        load_audio(np.zeros(100, np.float32))
    with pytest.raises(AudioError, match="positive"):
        load_audio(np.zeros(100, np.float32), sample_rate=0)
    with pytest.raises(AudioError, match="no audio samples"):
        load_audio(np.zeros((2, 0), np.float32), sample_rate=SAMPLE_RATE)
    with pytest.raises(AudioError, match="offset"):
        load_audio(np.zeros(100, np.float32), sample_rate=SAMPLE_RATE, offset=-1.0)
    with pytest.raises(AudioError, match="source must be"):
        load_audio([0.0, 0.1], sample_rate=SAMPLE_RATE)


def test_write_errors(tmp_path, stereo):
    with pytest.raises(AudioError, match=r"\.wav.*\.flac"):
        write_audio(tmp_path / "a.mp3", stereo)
    with pytest.raises(AudioError, match="bits=32"):
        write_audio(tmp_path / "a.flac", stereo, bits=32)
    with pytest.raises(AudioError, match="at most 8 channels"):
        write_audio(tmp_path / "a.flac", torch.zeros(9, 100))
    bad = stereo.clone()
    bad[0, 5] = float("nan")
    with pytest.raises(AudioError, match="1 NaN/inf"):
        write_audio(tmp_path / "a.wav", bad)
    with pytest.raises(AudioError, match="channels, samples"):
        write_audio(tmp_path / "a.wav", torch.zeros(2, 2, 10))
    assert list(tmp_path.iterdir()) == []


def test_write_clips_with_warning(tmp_path, caplog):
    audio = torch.tensor([[0.5, 1.5, -2.0, 1.0], [0.0, -1.0, 1.0001, 0.25]])
    with caplog.at_level(logging.WARNING, logger="triergon.triergon_core.audio"):
        path = write_audio(tmp_path / "loud.wav", audio, bits=16)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "clipped 3 of 8 samples" in warnings[0].getMessage()
    out = load_audio(path)
    top = 32767 / 32768
    assert torch.equal(out, torch.tensor([[0.5, top, -1.0, top], [0.0, -1.0, top, 0.25]]))
    caplog.clear()
    write_audio(tmp_path / "float.wav", audio, bits=32)  # float output keeps the values
    assert not caplog.records
    assert torch.equal(load_audio(tmp_path / "float.wav"), audio)


def test_flac_with_a_false_sync_code_decodes_whole(caplog):
    """tests/data/flac-false-sync.flac is the tail (3924 samples) of a SynthFoley clip as `write_audio` encodes it:
    FFmpeg's FLAC parser splits a piece off its last frame at a false sync code, a packet the decoder rejects,
    while the frame itself decodes whole. The packet is skipped and every sample comes out, bit-exact against
    libsndfile."""
    from pathlib import Path

    sf = pytest.importorskip("soundfile")
    path = Path(__file__).parent / "data" / "flac-false-sync.flac"
    with caplog.at_level(logging.DEBUG, logger="triergon"):
        audio = load_audio(path)
    expected, rate = sf.read(path, dtype="float32", always_2d=True)
    assert rate == SAMPLE_RATE and audio.shape == (2, 3924)
    assert torch.equal(audio, torch.from_numpy(expected.T.copy()))
    skipped = [r for r in caplog.records if "skipped 1 packet" in r.getMessage()]
    assert skipped and skipped[0].levelno == logging.DEBUG  # all 3924 declared samples came out: no warning
    assert torch.equal(load_audio(path.read_bytes()), audio)  # the same from memory (shards hold bytes)
