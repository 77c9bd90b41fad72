"""End to end on the tiny preset: every combination of text / audio / video, several durations."""

from __future__ import annotations

import itertools

import pytest
import torch
from _helpers import perturb_

import triergon
from triergon.triergon_core.generate import prepare_conditions
from triergon.triergon_core.lufs_curve import LufsCurve

STEPS = 8  # plumbing, not quality: a few steps keep the 24 runs fast


@pytest.fixture(scope="module")
def tiny():
    # A new DiT ignores its conditioning (zero-initialised branch outputs); perturbed weights make every
    # conditioning path reach the output.
    return perturb_(triergon.build_model("tiny", seed=0).requires_grad_(False))


@pytest.fixture(scope="module")
def inputs():
    g = torch.Generator().manual_seed(0)
    return {
        "text": "rain on a tin roof",
        "audio": torch.randn(2, 3 * 44100, generator=g) * 0.1,
        "video": torch.rand(12, 24, 32, 3, generator=g),
    }


@pytest.mark.parametrize("seconds", [1.0, 2.37, 4.0])
@pytest.mark.parametrize("present", list(itertools.product([False, True], repeat=3)),
                         ids=lambda p: "".join(n for n, on in zip("TAV", p, strict=True) if on) or "none")
def test_every_modality_combination(tiny, inputs, seconds, present):
    kwargs = {name: inputs[name] for name, on in zip(("text", "audio", "video"), present, strict=True) if on}
    audio = triergon.generate(tiny, seconds=seconds, seed=11, steps=STEPS, **kwargs)
    assert audio.shape == (1, 2, round(seconds * 44100)) and audio.dtype == torch.float32
    assert torch.isfinite(audio).all() and audio.abs().max() > 0
    assert torch.equal(audio, triergon.generate(tiny, seconds=seconds, seed=11, steps=STEPS, **kwargs))


def test_conditions_change_the_output(tiny, inputs):
    base = triergon.generate(tiny, seconds=1.0, seed=1, steps=STEPS)
    for name, value in inputs.items():
        assert not torch.allclose(base, triergon.generate(tiny, seconds=1.0, seed=1, steps=STEPS, **{name: value}))
    lufs = torch.full((2, 6), -20.0)
    assert not torch.allclose(base, triergon.generate(tiny, seconds=1.0, seed=1, steps=STEPS, lufs=lufs))


def test_prepared_conditions_are_reused(tiny, inputs):
    cond = prepare_conditions(tiny, seconds=2.0, **inputs)
    assert cond.batch_size == 1 and cond.text.shape == cond.audio.shape == cond.video.shape == (1, 1, 64)
    a = triergon.generate(tiny, seconds=2.0, conditions=cond, seed=4, steps=STEPS, batch_size=2)
    b = triergon.generate(tiny, seconds=2.0, seed=4, steps=STEPS, batch_size=2, **inputs)
    assert a.shape == (2, 2, 88200)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], a[1])  # seeds 4 and 5


def test_duration_from_video(tiny, inputs):
    audio = triergon.generate(tiny, video=inputs["video"], video_fps=6.0, seed=0, steps=STEPS)
    assert audio.shape == (1, 2, 88200)  # 12 frames at 6 fps
    with pytest.raises(ValueError, match="give `seconds`"):
        triergon.generate(tiny, text="x", steps=STEPS)


def test_default_settings_run(tiny):
    audio = triergon.generate(tiny, seconds=1.0, text="wind")  # 100 steps, CFG 7, DPM-Solver++(2M)
    assert audio.shape == (1, 2, 44100) and torch.isfinite(audio).all()


def test_missing_encoders_and_bad_lufs_are_clear_errors(tiny):
    big = triergon.build_model("triergon-s", device="meta")
    with pytest.raises(ValueError, match=r"text conditioning needs LanguageBind towers .*`--languagebind DIR`"):
        prepare_conditions(big, seconds=5.0, text="rain")
    with pytest.raises(ValueError, match=r"covers 1.66667 s .* but the audio is 2 s \(12 frames\)"):
        prepare_conditions(tiny, seconds=2.0, lufs=torch.full((2, 10), -20.0))
    with pytest.raises(ValueError, match="NaN"):
        prepare_conditions(tiny, seconds=1.0, lufs=torch.full((2, 6), float("nan")))
    with pytest.raises(ValueError, match="stereo"):
        prepare_conditions(tiny, seconds=1.0, lufs=LufsCurve(torch.full((1, 6), -20.0), channels=("M",)))


def test_lufs_curves_are_fitted_and_converted(tiny):
    short = LufsCurve(torch.full((2, 10), -20.0))
    padded = prepare_conditions(tiny, seconds=2.0, lufs=short, lufs_fit="pad").lufs
    assert padded.shape == (1, 2, 12) and torch.allclose(padded, torch.full((1, 2, 12), 50 / 70))
    # a curve at another frame rate is resampled by time to 6 frames/s
    fast = LufsCurve.from_keyframes([0.0, 2.0], [-60.0, -20.0], duration=2.0, rate=10.0)
    at6 = prepare_conditions(tiny, seconds=2.0, lufs=fast).lufs[0] * 70 - 70
    expected = fast.with_rate(6.0).values
    assert at6.shape == (2, 12) and torch.allclose(at6, expected, atol=1e-4)
    assert torch.allclose(expected[0, :3], torch.tensor([-60.0, -56.6667, -53.3333]), atol=1e-3)


def test_reference_audio_from_the_videos_own_track(tiny, tmp_path):
    from _videos import write_video

    video = write_video(tmp_path / "with_sound.mp4", fps=25, num_frames=25, audio=True)
    cond = prepare_conditions(tiny, seconds=1.0, video=video, audio=video)
    assert cond.audio.shape == cond.video.shape == (1, 1, 64)
    assert not torch.allclose(cond.audio, cond.video)
