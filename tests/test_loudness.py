"""Loudness (BS.1770-4): K-weighting, momentary LUFS and integrated loudness against pyloudnorm.

The momentary reference is pyloudnorm computed the same way: its own K-weighting filters over each whole
channel (`Meter._filters`, as `Meter.integrated_loudness` applies them), then the same windows, mean square
and -0.691 + 10 log10, floored at -70. Integrated loudness is compared with `Meter.integrated_loudness`.
Run with `-s` to see the worst errors and the 60 s timing.

The tolerances sit near the measured agreement (float64 arithmetic on both sides), so a bias of even 1e-6 LU
fails; the EBU Tech 3341 case is the one known answer that does not depend on pyloudnorm.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pyloudnorm
import pytest
import torch

from triergon.triergon_core.loudness import (
    LUFS_FLOOR,
    integrated_loudness,
    k_weighting,
    momentary_lufs,
    normalize_loudness,
)

SR = 44100
# Measured on x86-64 (numpy 2, torch 2.x): momentary worst 2.4e-10 LU (a -63 LUFS sine next to noise);
# integrated worst 3.2e-14 LU in float64 and 4.6e-10 LU for float32 input. A margin of 20x and more covers
# other CPUs' rounding; any real error in the filters, windows or gates is orders of magnitude larger.
MOMENTARY_TOL = 1e-8  # LU
INTEGRATED_TOL = 1e-8  # LU
NORMALIZED_TOL = 1e-6  # LU: measured 6.2e-8, the float32 rounding of the normalised samples


def _ref_weighted(x: np.ndarray, rate: int) -> np.ndarray:
    """pyloudnorm's K-weighting over the whole signal, along the last axis (zero initial state)."""
    y = np.asarray(x, dtype=np.float64)
    for stage in pyloudnorm.Meter(rate)._filters.values():
        y = stage.apply_filter(y)  # scipy.signal.lfilter(b, a, y) along the last axis, times passband gain 1
    return y


def _ref_momentary(x: np.ndarray, rate: int, window: int) -> np.ndarray:
    """`[..., samples]` -> `[..., frames]` with consecutive `window`-sample windows; a short last window."""
    power = _ref_weighted(x, rate) ** 2
    n = power.shape[-1]
    frames = -(-n // window)
    ms = np.stack([power[..., k * window : min((k + 1) * window, n)].mean(-1) for k in range(frames)], -1)
    with np.errstate(divide="ignore"):
        return np.maximum(-0.691 + 10.0 * np.log10(ms), -70.0)


def _check_momentary(name: str, x: np.ndarray, rate: int = SR) -> float:
    """Compare with the reference: close above the floor, exactly -70 on it. Returns the worst error (LU)."""
    ours = momentary_lufs(torch.from_numpy(x), rate).numpy()
    ref = _ref_momentary(x, rate, round(rate / 6))
    assert ours.shape == ref.shape, f"{ours.shape=} {ref.shape=}"
    live = ref > LUFS_FLOOR
    err = float(np.abs(ours[live] - ref[live]).max()) if live.any() else 0.0
    print(f"momentary {name}: worst error {err:.2e} LU over {int(live.sum())} windows, {int((~live).sum())} at floor")
    assert err < MOMENTARY_TOL, name
    assert (ours[~live] == LUFS_FLOOR).all(), f"{name}: {ours[~live]}"
    return err


def _sine(freq: float, amp: float, seconds: float, rate: int = SR, phase: float = 0.3) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return amp * np.sin(2 * np.pi * freq * t + phase)


def _pink(n: int, rng: np.random.Generator) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0
    pink = np.fft.irfft(spectrum, n)
    return pink / np.abs(pink).max()


def _log_sweep(seconds: float, rate: int, f0: float = 20.0, f1: float = 20000.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    k = math.log(f1 / f0)
    return 0.5 * np.sin(2 * np.pi * f0 * seconds / k * (np.exp(t * k / seconds) - 1))


def test_k_weighting_matches_pyloudnorm_filters():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 20000)) * 0.5
    for rate in (44100, 48000, 16000):
        ours = k_weighting(torch.from_numpy(x), rate)
        assert ours.dtype == torch.float64 and ours.shape == x.shape
        np.testing.assert_allclose(ours.numpy(), _ref_weighted(x, rate), rtol=0, atol=1e-11)  # measured 1.4e-12
    as_float32 = k_weighting(torch.from_numpy(x).float(), SR)
    assert as_float32.dtype == torch.float32
    np.testing.assert_allclose(as_float32.numpy(), _ref_weighted(x, SR), rtol=0, atol=2e-6)  # measured 2.5e-7


def test_momentary_sines_across_spectrum():
    freqs = (20, 50, 100, 1000, 4000, 10000, 16000, 20000)
    amps = (1.0, 0.1, 0.003)
    x = np.stack([_sine(f, a, 2.0)[None] for f in freqs for a in amps])  # [batch, 1, samples]
    _check_momentary("sines 20 Hz-20 kHz", x)
    # BS.1770 calibrates a full-scale 997 Hz sine to -3.01 LUFS; pyloudnorm's RBJ high-pass has 0.043 dB less
    # passband gain than the standard's b = [1, -2, 1], so it (and we) read -3.052 (measured -3.056 .. -3.050:
    # the ripple of windows that cut the sine at different phases).
    settled = momentary_lufs(torch.from_numpy(_sine(997, 1.0, 2.0)[None]))[0, 1:]
    assert torch.allclose(settled, torch.full_like(settled, -3.052), atol=0.006), settled


@pytest.mark.parametrize("rate", [48000, 44100])
def test_ebu_tech_3341_case_1_stereo_1khz_at_minus_23_dbfs(rate):
    # EBU Tech 3341 (2016), minimum requirements, case 1: a stereo 1 kHz sine at -23 dBFS in both channels reads
    # -23.0 +/- 0.1 LUFS (momentary, short-term and integrated; loudness sums the channels). Measured -23.035 at
    # 48 kHz and 44.1 kHz integrated, -23.039 .. -23.032 momentary (pyloudnorm's high-pass, see above).
    tone = _sine(1000, 10 ** (-23 / 20), 20.0, rate, phase=0.0)
    stereo = torch.from_numpy(np.stack([tone, tone]))
    assert abs(integrated_loudness(stereo, rate) - -23.0) <= 0.1
    per_channel = momentary_lufs(stereo, rate).double()
    summed = 10 * torch.log10((10 ** (per_channel / 10)).sum(0))  # the momentary loudness of the pair
    assert ((summed - -23.0).abs() <= 0.1).all(), summed


def test_momentary_noise_and_sweep():
    rng = np.random.default_rng(1)
    n = round(3.3 * SR)
    _check_momentary("white noise", np.stack([rng.standard_normal(n) * 0.1, rng.uniform(-1, 1, n)]))
    _check_momentary("pink noise", np.stack([_pink(n, rng), 0.01 * _pink(n, rng)]))
    _check_momentary("log sweep", _log_sweep(5.0, SR)[None])


def test_momentary_impulses():
    x = np.zeros((2, round(4.0 * SR)))
    x[0, [100, 7349, 7350, 30000]] = [1.0, -0.5, 0.5, 0.01]  # clicks at window edges and mid-window
    x[1, 20000] = 0.05  # energy 2.4e-3 after K-weighting: about -65 LUFS over a 7350-sample window
    _check_momentary("impulses", x)
    ours = momentary_lufs(torch.from_numpy(x))
    assert (ours[0, 5:] == LUFS_FLOOR).all() and (ours[1, :2] == LUFS_FLOOR).all()
    assert (ours[0, :2] > LUFS_FLOOR).all() and ours[1, 2] > LUFS_FLOOR


def test_momentary_stereo_different_channels_and_batch():
    rng = np.random.default_rng(2)
    n = round(4.0 * SR)
    left = rng.standard_normal(n) * 0.2
    left[n // 2 :] = 0.0  # silence in the second half of one channel
    right = _sine(1000, 0.001, 4.0)  # about -63 LUFS: above the floor
    stereo = np.stack([left, right])
    _check_momentary("stereo noise / quiet sine", stereo)
    ours = momentary_lufs(torch.from_numpy(stereo))
    assert (ours[0, 13:] == LUFS_FLOOR).all(), ours[0]  # past the filter tail the silent half is exactly -70
    assert ((ours[1, 1:] + 63.046).abs() < 0.01).all(), ours[1]  # measured -63.049 .. -63.044

    batch = np.stack([stereo, stereo[::-1] * 0.5, np.stack([_pink(n, rng), _log_sweep(4.0, SR)])])
    _check_momentary("batch", batch)
    batched = momentary_lufs(torch.from_numpy(batch))
    assert batched.shape == (3, 2, 24)
    assert torch.equal(batched[0], ours)


def test_momentary_48k():
    rng = np.random.default_rng(3)
    n = round(2.5 * 48000)
    x = np.stack([_pink(n, rng) * 0.3, _log_sweep(2.5, 48000)])
    _check_momentary("48 kHz pink / sweep", x, 48000)
    assert momentary_lufs(torch.from_numpy(x), 48000).shape == (2, 15)


def test_silence_and_near_silence_are_floor():
    silent = torch.zeros(2, SR)
    assert torch.equal(momentary_lufs(silent), torch.full((2, 6), LUFS_FLOOR))
    quiet = torch.randn(1, 2, SR, generator=torch.Generator().manual_seed(0)) * 1e-6  # about -120 LUFS
    assert torch.equal(momentary_lufs(quiet), torch.full((1, 2, 6), LUFS_FLOOR))
    assert integrated_loudness(silent) == LUFS_FLOOR
    assert integrated_loudness(quiet[0]) == LUFS_FLOOR


def test_frame_counts_and_dtype():
    assert momentary_lufs(torch.zeros(2, round(2.37 * SR))).shape == (2, 15)
    assert momentary_lufs(torch.zeros(2, SR)).shape == (2, 6)
    assert momentary_lufs(torch.zeros(1, 7351)).shape == (1, 2)
    assert momentary_lufs(torch.zeros(1, 1)).shape == (1, 1)
    assert momentary_lufs(torch.zeros(2, SR)).dtype == torch.float32
    assert momentary_lufs(torch.zeros(2, SR, dtype=torch.float64)).dtype == torch.float64
    assert momentary_lufs(torch.zeros(2, SR, dtype=torch.float16)).dtype == torch.float32
    x = torch.from_numpy(_sine(1000, 0.5, 3.0)[None]).float()
    assert (momentary_lufs(x) - momentary_lufs(x.double())).abs().max() < 2e-6  # measured 3.4e-7


def test_non_integer_window_rate():
    x = torch.from_numpy(np.stack([_sine(1000, 0.5, 3.0), np.zeros(3 * SR)]))
    for rate, frames in ((6.5, 20), (10.0, 30), (0.25, 1), (7.0, 21)):
        lufs = momentary_lufs(x, SR, rate=rate)
        assert lufs.shape == (2, frames), (rate, lufs.shape)
        assert (lufs[1] == LUFS_FLOOR).all()
        # A steady 1 kHz sine at half scale reads the same in every settled window, whatever the window length
        # (measured -9.0702 .. -9.0624).
        settled = lufs[0, 1:] if frames > 1 else lufs[0]
        assert (settled - (-9.066)).abs().max() < 0.006, (rate, settled)


@pytest.mark.parametrize("seconds", [0.4, 0.55, 1.0, 2.37, 5.123])
def test_integrated_matches_pyloudnorm(seconds):
    rng = np.random.default_rng(round(seconds * 1000))
    n = round(seconds * SR)
    meter = pyloudnorm.Meter(SR)
    stereo = np.stack([rng.standard_normal(n) * 0.1, _pink(n, rng) * 0.5])
    stereo[:, n // 3 : n // 2] *= 0.01  # a quiet passage for the relative gate to drop
    mono = (_sine(440, 0.2, seconds) * np.linspace(0, 1, n) ** 3)[None]  # fade-in: partly below the gates
    sweep = _log_sweep(seconds, SR)[None]
    for name, x in (("stereo noise", stereo), ("mono fade-in sine", mono), ("sweep", sweep)):
        ours, ref = integrated_loudness(torch.from_numpy(x)), meter.integrated_loudness(x.T)
        print(f"integrated {name} {seconds} s: {ours:.6f} vs pyloudnorm {ref:.6f}, error {abs(ours - ref):.2e} LU")
        assert abs(ours - ref) < INTEGRATED_TOL, (name, ours, ref)


def test_integrated_48k_and_float32():
    rng = np.random.default_rng(5)
    x = np.stack([_pink(3 * 48000, rng) * 0.3, np.zeros(3 * 48000)])
    ref = pyloudnorm.Meter(48000).integrated_loudness(x.T)
    for tensor in (torch.from_numpy(x), torch.from_numpy(x).float()):
        ours = integrated_loudness(tensor, 48000)
        print(f"integrated 48 kHz {tensor.dtype}: error {abs(ours - ref):.2e} LU")
        assert abs(ours - ref) < INTEGRATED_TOL


@pytest.mark.parametrize("target", [-23.0, -14.0, -40.0])
def test_normalize_loudness_hits_target(target):
    rng = np.random.default_rng(6)
    x = torch.from_numpy(np.stack([_pink(2 * SR, rng) * 0.05, rng.standard_normal(2 * SR) * 0.01])).float()
    out = normalize_loudness(x, target)
    assert out.shape == x.shape and out.dtype == x.dtype
    measured = pyloudnorm.Meter(SR).integrated_loudness(out.double().numpy().T)
    assert abs(measured - target) < NORMALIZED_TOL, measured
    assert abs(integrated_loudness(out) - target) < NORMALIZED_TOL


def test_errors():
    good = torch.zeros(2, SR)
    nan, inf = good.clone(), good.clone()
    nan[0, 5], inf[1, 7] = float("nan"), float("inf")
    for bad in (nan, inf):
        with pytest.raises(ValueError, match="NaN or inf"):
            momentary_lufs(bad)
        with pytest.raises(ValueError, match="NaN or inf"):
            integrated_loudness(bad)
    for shape in ((SR,), (1, 1, 2, SR)):
        with pytest.raises(ValueError, match="channels, samples"):
            momentary_lufs(torch.zeros(shape))
    with pytest.raises(ValueError, match="channels, samples"):
        integrated_loudness(torch.zeros(1, 2, SR))
    with pytest.raises(ValueError, match="mono or stereo"):
        integrated_loudness(torch.zeros(6, SR))
    with pytest.raises(ValueError, match="400 ms"):
        integrated_loudness(torch.ones(2, round(0.39 * SR)))
    with pytest.raises(ValueError, match="floating point"):
        momentary_lufs(torch.zeros(2, SR, dtype=torch.int16))
    with pytest.raises(ValueError, match="no samples"):
        momentary_lufs(torch.zeros(2, 0))
    with pytest.raises(ValueError, match="rate"):
        momentary_lufs(good, SR, rate=0.0)
    with pytest.raises(ValueError, match="sample_rate"):
        momentary_lufs(good, 0)
    with pytest.raises(ValueError, match="silent"):
        normalize_loudness(good, -23.0)
    with pytest.raises(ValueError, match="target_lufs"):
        normalize_loudness(torch.ones(2, SR) * 0.1, float("nan"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    x = torch.randn(2, 2, 3 * SR, dtype=torch.float64, generator=torch.Generator().manual_seed(7)) * 0.1
    cpu, gpu = momentary_lufs(x), momentary_lufs(x.cuda())
    assert gpu.device.type == "cuda" and (gpu.cpu() - cpu).abs().max() < 1e-9
    assert abs(integrated_loudness(x[0].cuda()) - integrated_loudness(x[0])) < 1e-9


def test_timing_60s_stereo():
    x = torch.randn(2, 60 * SR, generator=torch.Generator().manual_seed(8)) * 0.1
    start = time.perf_counter()
    lufs = momentary_lufs(x)
    elapsed = time.perf_counter() - start
    print(f"momentary_lufs on 60 s of 44.1 kHz stereo: {elapsed:.3f} s on {torch.get_num_threads()} threads")
    assert lufs.shape == (2, 360)
