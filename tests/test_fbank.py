"""`kaldi_fbank` (plain PyTorch) against `torchaudio.compliance.kaldi.fbank` with LanguageBind's options."""

from __future__ import annotations

import pytest
import torch

from triergon.triergon_core.fbank import kaldi_fbank


@pytest.mark.parametrize(("rate", "samples", "bins"), [(16000, 16000 * 3 + 77, 112), (16000, 400, 112),
                                                       (22050, 9000, 64)])
def test_matches_torchaudio(rate, samples, bins):
    kaldi = pytest.importorskip("torchaudio.compliance.kaldi")
    wave = torch.randn(2, samples, generator=torch.Generator().manual_seed(samples)) * 0.3
    wave[:, samples // 2:] *= 0.001  # a quiet half: log energies span a wide range
    ours = kaldi_fbank(wave, sample_rate=rate, num_mel_bins=bins)
    theirs = kaldi.fbank(wave, htk_compat=True, sample_frequency=rate, use_energy=False, window_type="hanning",
                         num_mel_bins=bins, dither=0.0, frame_length=25.0, frame_shift=10.0)
    assert ours.shape == theirs.shape
    # measured: identical (max difference 0.0) for these inputs on CPU
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)


def test_reads_channel_zero_and_checks_input():
    wave = torch.randn(2, 4000)
    assert torch.equal(kaldi_fbank(wave, sample_rate=16000, num_mel_bins=40),
                       kaldi_fbank(wave[:1], sample_rate=16000, num_mel_bins=40))
    with pytest.raises(ValueError, match="pass a longer clip"):
        kaldi_fbank(torch.zeros(1, 100), sample_rate=16000, num_mel_bins=40)
    with pytest.raises(ValueError, match="float audio"):
        kaldi_fbank(torch.zeros(4000, dtype=torch.int16)[None], sample_rate=16000, num_mel_bins=40)
