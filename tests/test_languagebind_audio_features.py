"""LanguageBind's audio features without torchaudio == torchaudio's functions (where torchaudio is installed)."""

from __future__ import annotations

import pytest
import torch

from triergon.triergon_core.languagebind_audio_features import kaldi_fbank, resample_sinc

pytestmark = pytest.mark.encoders
torchaudio = pytest.importorskip("torchaudio")


@pytest.mark.parametrize(("orig", "new"), [(44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000)])
def test_resampling_matches_torchaudio(orig, new):
    g = torch.Generator().manual_seed(orig)
    wave = torch.randn(2, 3, orig // 3 + 7, generator=g) * 0.3
    ours = resample_sinc(wave, orig, new)
    want = torchaudio.functional.resample(wave, orig_freq=orig, new_freq=new)
    assert ours.shape == want.shape
    assert (ours - want).abs().max() < 1e-6  # measured: 0 (the same kernel and convolution)


@pytest.mark.parametrize(("rate", "bins", "seconds"), [(16000, 112, 1.3), (16000, 32, 0.3), (8000, 64, 0.05)])
def test_filter_bank_matches_kaldi_compliance(rate, bins, seconds):
    g = torch.Generator().manual_seed(bins)
    wave = torch.randn(2, round(rate * seconds), generator=g) * 0.2
    wave = wave - wave.mean()
    ours = kaldi_fbank(wave, sample_frequency=rate, num_mel_bins=bins)
    want = torchaudio.compliance.kaldi.fbank(wave, htk_compat=True, sample_frequency=rate, use_energy=False,
                                             window_type="hanning", num_mel_bins=bins, dither=0.0, frame_length=25.0,
                                             frame_shift=10.0)
    assert ours.shape == want.shape
    assert (ours - want).abs().max() < 1e-5  # log-mel values of order 10 (measured: 0, the same arithmetic)


def test_silence_and_bad_rates():
    assert torch.equal(kaldi_fbank(torch.zeros(1, 800), sample_frequency=16000, num_mel_bins=8),
                       torch.full((3, 8), torch.finfo(torch.float32).eps).log())
    with pytest.raises(ValueError, match="positive integers"):
        resample_sinc(torch.zeros(10), 44100.5, 16000)
    with pytest.raises(ValueError, match="does not fit"):
        kaldi_fbank(torch.zeros(1, 100), sample_frequency=16000, num_mel_bins=8)
