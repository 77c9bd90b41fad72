"""Resampling backends (torchaudio when installed, PyAV's libswresample otherwise) and life without torchaudio."""

from __future__ import annotations

import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from triergon.triergon_core.resample import resample, resampler_backend

ROOT = Path(__file__).resolve().parents[1]
RATE_PAIRS = [(48000, 44100), (16000, 44100), (44100, 16000), (22050, 44100)]
EDGE = 64  # output samples at each end where the backends' edge handling differs (measured: up to ~50)


def _tone(rate: int, hz: float, seconds: float = 1.0, amplitude: float = 0.5) -> torch.Tensor:
    t = torch.arange(round(rate * seconds), dtype=torch.float64) / rate
    return (amplitude * torch.sin(2 * math.pi * hz * t)).float()[None]


@pytest.mark.parametrize(("orig", "new"), RATE_PAIRS)
def test_backends_agree_in_band(orig, new):
    pytest.importorskip("torchaudio")
    nyquist = min(orig, new) / 2
    # Measured max |difference| on a 0.5-amplitude tone, away from the ends: <= 2.5e-4 at 5 % and 25 % of the
    # lower Nyquist frequency, <= 1.4e-3 at 50 % (the filters' passbands part ways above that).
    for fraction, tolerance in ((0.05, 4e-4), (0.25, 4e-4), (0.5, 2e-3)):
        audio = _tone(orig, fraction * nyquist)
        a = resample(audio, orig, new, backend="torchaudio")
        b = resample(audio, orig, new, backend="av")
        assert a.shape == b.shape
        diff = (a - b)[..., EDGE:-EDGE].abs().max().item()
        assert diff < tolerance, f"{orig}->{new} Hz, tone at {fraction} Nyquist: backends differ by {diff:.2e}"


def test_av_backend_keeps_shape_dtype_and_length_rule():
    audio = torch.randn(3, 2, 48000 * 5 + 123, dtype=torch.float64)
    out = resample(audio, 48000, 44100, backend="av")
    # torchaudio's length: its float32 ceiling gives 220613 here, one below the exact ceiling (220613.006)
    assert out.shape == (3, 2, 220613) and out.dtype == torch.float64
    assert torch.equal(out[1, 0], resample(audio[1, 0], 48000, 44100, backend="av"))
    same = torch.randn(2, 100)
    assert resample(same, 44100, 44100, backend="av") is same


def test_av_backend_chunks_join_seamlessly(monkeypatch):
    from triergon.triergon_core import resample as module

    audio = torch.randn(1, 200_000)
    chunked = resample(audio, 32000, 44100, backend="av")
    monkeypatch.setattr(module, "_AV_CHUNK", 1 << 30)
    assert torch.equal(chunked, resample(audio, 32000, 44100, backend="av"))


def test_bad_arguments_say_what_to_change():
    with pytest.raises(ValueError, match="backend must be one of"):
        resample(torch.zeros(1, 10), 8000, 16000, backend="sox")
    with pytest.raises(ValueError, match="positive integers"):
        resample(torch.zeros(1, 10), 0, 16000)
    with pytest.raises(ValueError, match="float audio"):
        resample(torch.zeros(1, 10, dtype=torch.int16), 8000, 16000)


# `import torchaudio` raises ImportError in the child, as if it were not installed.
_HIDE = 'import sys; sys.modules["torchaudio"] = None\n'

_AUDIO_WITHOUT_TORCHAUDIO = _HIDE + textwrap.dedent("""
    import types

    import numpy as np
    import torch

    # The modules on their own, without the package's __init__ (which also imports the LanguageBind wrapper).
    package = types.ModuleType("triergon")
    package.__path__ = [sys.argv[1]]
    sys.modules["triergon"] = package
    from triergon.triergon_core.audio import load_audio, write_audio
    from triergon.triergon_core.lufs_curve import LufsCurve
    from triergon.triergon_core.resample import resampler_backend

    assert resampler_backend() == "av", resampler_backend()
    t = np.arange(48000) / 48000
    tone = torch.from_numpy(np.stack([np.sin(2 * np.pi * 997 * t)] * 2) * 0.5).float()
    write_audio(sys.argv[2], tone, sample_rate=48000)
    audio = load_audio(sys.argv[2])  # 48 kHz file -> 44.1 kHz stereo through PyAV's resampler
    assert audio.shape == (2, 44100), audio.shape
    print("LUFS", float(LufsCurve.measure(audio).values[:, 5:].mean()))
""")


def _run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=300)


def test_audio_and_loudness_work_without_torchaudio(tmp_path):
    done = _run(_AUDIO_WITHOUT_TORCHAUDIO, str(ROOT), str(tmp_path / "tone.wav"))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    # a 0.5-amplitude 997 Hz sine: -3.05 - 6.02 = -9.07 LUFS (pyloudnorm's K-weighting, see loudness.py)
    lufs = float(done.stdout.split("LUFS")[1])
    assert abs(lufs - (-9.07)) < 0.05, lufs


def test_import_triergon_without_torchaudio():
    # the package, and LanguageBind's audio preprocessing (Kaldi filter bank, its own resampling), need no torchaudio
    done = _run(_HIDE + (
        "import torch, triergon\n"
        "from triergon.triergon_core.languagebind import LanguageBindEncoders\n"
        "emb = LanguageBindEncoders.tiny_random(embed_dim=64).encode_audio(0.1 * torch.randn(1, 2, 44100))\n"
        "assert emb.shape == (1, 1, 64), emb.shape\n"
        "print('IMPORT-OK')"))
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "IMPORT-OK" in done.stdout, out[-3000:]


def test_default_backend_follows_torchaudio():
    try:
        import torchaudio  # noqa: F401
    except ImportError:
        assert resampler_backend() == "av"
    else:
        assert resampler_backend() == "torchaudio"
