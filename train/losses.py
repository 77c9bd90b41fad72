"""VAE training losses: multi-resolution sum-and-difference STFT (auraloss), a multi-scale STFT
discriminator (EnCodec style, stereo) with hinge and feature-matching losses, a per-window loudness loss and a
per-window octave-band level loss.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm

from ..triergon_core.config import LUFS_RATE, SAMPLE_RATE
from ..triergon_core.loudness import k_weighting

LUFS_FLOOR = -70.0


def stft_loss(fft_sizes: tuple[int, ...], *, sample_rate: int = SAMPLE_RATE, perceptual: bool = True,
              layout: str = "sum-difference") -> nn.Module:
    """Multi-resolution STFT loss (auraloss), hops of a quarter window, with A-weighting (`perceptual_weighting`).

    `layout="sum-difference"` is Stable Audio's: the loss of L + R plus that of L - R. Both magnitudes are the same
    for a stereo clip and its mirror image, so this loss cannot tell left from right (only the per-window loudness
    term can). `layout="channels"` scores L and R each on its own, which does. The A-weighting filter costs more
    than the STFTs themselves on a CPU (0.5 s of 0.7 s per step for 3 resolutions of 4 x 2 s stereo on 2 cores);
    `perceptual=False` leaves it out (the demo recipe, which has the loudness term for level instead)."""
    try:
        from auraloss.freq import MultiResolutionSTFTLoss, SumAndDifferenceSTFTLoss
    except ImportError as e:
        raise ImportError("the VAE trainer needs auraloss: pip install 'triergon[train]'") from e
    sizes = list(fft_sizes)
    options = dict(fft_sizes=sizes, hop_sizes=[s // 4 for s in sizes], win_lengths=sizes,
                   perceptual_weighting=perceptual, sample_rate=sample_rate)
    if layout == "sum-difference":
        return SumAndDifferenceSTFTLoss(**options)
    if layout == "channels":
        return _PerChannel(MultiResolutionSTFTLoss(**options))
    raise ValueError(f"unknown STFT loss layout {layout!r}: 'sum-difference' or 'channels'")


class _PerChannel(nn.Module):
    """A loss on [B, 1, N] applied to every channel of [B, C, N] as its own signal."""

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        return self.loss(fake.reshape(-1, 1, fake.shape[-1]), real.reshape(-1, 1, real.shape[-1]))


class STFTDiscriminator(nn.Module):
    """One scale of EnCodec's MS-STFT discriminator: 2-D convolutions over the complex STFT of every channel
    (real and imaginary parts as input channels), dilated in time, strided in frequency."""

    def __init__(self, *, audio_channels: int, channels: int, n_fft: int) -> None:
        super().__init__()
        self.n_fft = n_fft
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        c = channels
        self.convs = nn.ModuleList([
            weight_norm(nn.Conv2d(2 * audio_channels, c, (3, 9), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(1, 1), padding=(1, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(2, 1), padding=(2, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 9), stride=(1, 2), dilation=(4, 1), padding=(4, 4))),
            weight_norm(nn.Conv2d(c, c, (3, 3), padding=(1, 1))),
        ])
        self.out = weight_norm(nn.Conv2d(c, 1, (3, 3), padding=(1, 1)))

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        b, ch, n = audio.shape
        spec = torch.stft(audio.reshape(b * ch, n).float(), self.n_fft, self.n_fft // 4, window=self.window,
                          return_complex=True, normalized=True)
        x = torch.view_as_real(spec).reshape(b, ch, *spec.shape[-2:], 2)  # [B, C, F, T, 2]
        x = x.permute(0, 1, 4, 3, 2).reshape(b, 2 * ch, spec.shape[-1], spec.shape[-2])  # [B, 2C, T, F]
        features = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            features.append(x)
        return self.out(x), features


class MultiScaleSTFTDiscriminator(nn.Module):
    def __init__(self, *, audio_channels: int = 2, channels: int = 32,
                 fft_sizes: tuple[int, ...] = (2048, 1024, 512, 256, 128)) -> None:
        super().__init__()
        self.discriminators = nn.ModuleList(
            STFTDiscriminator(audio_channels=audio_channels, channels=channels, n_fft=n) for n in fft_sizes)

    def forward(self, audio: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [d(audio) for d in self.discriminators]


def discriminator_loss(real: list, fake: list) -> torch.Tensor:
    """Hinge: mean(relu(1 - D(real))) + mean(relu(1 + D(fake))), summed over scales."""
    return sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for (r, _), (f, _) in zip(real, fake, strict=True))


def generator_losses(real: list, fake: list) -> tuple[torch.Tensor, torch.Tensor]:
    """(hinge adversarial loss, feature matching) of the generator: mean(relu(1 - D(fake))) over scales, and
    the L1 distance of the discriminator features of real and fake audio, averaged over layers."""
    adv = sum(F.relu(1 - f).mean() for f, _ in fake)
    fm = [(fr.detach() - ff).abs().mean() for (_, fr_list), (_, ff_list) in zip(real, fake, strict=True)
          for fr, ff in zip(fr_list, ff_list, strict=True)]
    return adv, sum(fm) / len(fm) * len(real)


def window_loudness(audio: torch.Tensor, *, sample_rate: int = SAMPLE_RATE, rate: float = LUFS_RATE) -> torch.Tensor:
    """Per-channel K-weighted loudness of each 1/`rate` s window, [B, C, windows] in LUFS, with a soft floor at
    -70 LUFS: the floor's power is added rather than clamped, so that a silent output still has a gradient
    towards louder (a clamp would leave a model stuck at silence with none)."""
    power = _windows(k_weighting(audio, sample_rate), sample_rate, rate).pow(2).mean(-1)
    floor = 10 ** ((LUFS_FLOOR + 0.691) / 10)
    return 10 * torch.log10(power + floor) - 0.691


def loudness_losses(fake: torch.Tensor, real: torch.Tensor, *,
                    sample_rate: int = SAMPLE_RATE) -> tuple[torch.Tensor, torch.Tensor]:
    """(loudness, balance) of a reconstruction against its input [B, C, N], from one `window_loudness` of each.

    loudness: mean absolute per-channel, per-window loudness difference in LU, divided by 10 (so ~1 for a 10 LU miss).
    balance: mean absolute difference of the per-window first-minus-last-channel (L - R) loudness in LU, divided by
    10: the stereo image alone, whatever the overall level (a mirrored copy of a clip panned 10 LU to one side scores
    2; mono audio has no image and scores 0).
    """
    lf, lr = window_loudness(fake, sample_rate=sample_rate), window_loudness(real, sample_rate=sample_rate)
    balance = ((lf[:, 0] - lf[:, -1]) - (lr[:, 0] - lr[:, -1])).abs().mean() / 10
    return (lf - lr).abs().mean() / 10, balance


def _windows(audio: torch.Tensor, sample_rate: int, rate: float) -> torch.Tensor:
    """[..., N] -> [..., windows, hop]: the whole 1/`rate` s windows of `audio` (a partial last one dropped)."""
    hop = round(sample_rate / rate)
    return audio[..., :audio.shape[-1] // hop * hop].unflatten(-1, (-1, hop))


# octave bands centred on 31.5 Hz ... 16 kHz (edges at the geometric midpoints, the last one up to Nyquist)
OCTAVE_CENTRES = tuple(1000 * 2.0 ** k for k in range(-5, 5))


def band_levels(audio: torch.Tensor, *, sample_rate: int = SAMPLE_RATE, rate: float = LUFS_RATE,
                centres: tuple[float, ...] = OCTAVE_CENTRES) -> torch.Tensor:
    """Per-channel level of each octave band in each 1/`rate` s window: [B, C, bands, windows], the band's share of
    the window's mean square in dB (a sine of amplitude 1 gives -3 dB in its band), Hann-windowed, with the soft
    floor of `window_loudness` at -70 dB so that a silent band still has a gradient."""
    hop = round(sample_rate / rate)
    frames = _windows(audio, sample_rate, rate) * torch.hann_window(hop, device=audio.device, dtype=audio.dtype)
    power = torch.fft.rfft(frames, dim=-1).abs().pow(2) * (2 / (hop * hop * 0.375))
    freqs = torch.fft.rfftfreq(hop, 1 / sample_rate).to(audio.device)
    edges = [0.0, *(c * 2 ** 0.5 for c in centres[:-1]), sample_rate / 2 + 1]
    onehot = torch.stack([(freqs >= lo) & (freqs < hi) for lo, hi in itertools.pairwise(edges)], 1).to(power.dtype)
    bands = power @ onehot  # [B, C, windows, bands]
    return (10 * torch.log10(bands + 10 ** (LUFS_FLOOR / 10))).transpose(-1, -2)


def spectrum_loss(fake: torch.Tensor, real: torch.Tensor, *, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """Mean absolute difference of `band_levels` between a reconstruction and its input [B, C, N], in dB divided
    by 10: the spectral envelope of each channel in each 1/6 s window (the timbre at the loudness term's time
    resolution), which a per-window loudness cannot see (a low and a high noise of one loudness score 0 there)."""
    return (band_levels(fake, sample_rate=sample_rate) - band_levels(real, sample_rate=sample_rate)).abs().mean() / 10
