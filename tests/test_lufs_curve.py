"""`LufsCurve`: validation, duration policies, edits, conversions to the model's scale, files and plots."""

from __future__ import annotations

import json
import logging
import math
import shutil

import numpy as np
import pytest
import torch

from triergon.triergon_core.conditioning import Conditioner
from triergon.triergon_core.config import ConditioningConfig, SequenceConfig
from triergon.triergon_core.lufs_curve import FIT_POLICIES, LufsCurve, frames_for, plot_curves

LOGGER = "triergon.triergon_core.lufs_curve"


def curve(left, right=None, *, rate: float = 6.0) -> LufsCurve:
    left = [float(x) for x in left]
    return LufsCurve(torch.tensor([left, left if right is None else [float(x) for x in right]]), rate=rate)


def rows(c: LufsCurve) -> list[list[float]]:
    return [[round(x, 4) for x in row] for row in c.values.tolist()]


def random_curve(frames: int, *, seed: int = 0) -> LufsCurve:
    g = torch.Generator().manual_seed(seed)
    return LufsCurve(torch.rand(2, frames, generator=g) * -70)


# ----------------------------------------------------------------------------------------------- validation


def test_basic_properties_and_repr():
    c = LufsCurve.constant(-23.0, duration=2.0)
    assert c.values.shape == (2, 12) and c.values.dtype == torch.float32
    assert (c.rate, c.channels, c.num_frames, c.duration) == (6.0, ("L", "R"), 12, 2.0)
    assert np.allclose(c.times, np.arange(12) / 6)
    assert repr(c) == "LufsCurve(2.00 s, 12 frames at 6/s, channels=L,R, min=-23.0, max=-23.0 LUFS)"
    c.values[0, 0] = 0.0  # `values` is a copy: the curve cannot be changed through it
    assert c.values[0, 0] == -23.0
    assert c == LufsCurve.constant(-23.0, duration=2.0) and c != c.offset(1.0) and c != "x"
    assert c != LufsCurve.constant(-23.0, duration=2.0, rate=5.0)


@pytest.mark.parametrize("bad, where", [(float("nan"), "'R', frame 3"), (float("inf"), "'R', frame 3"),
                                        (float("-inf"), "'R', frame 3")])
def test_non_finite_values_are_rejected_with_their_location(bad, where):
    v = torch.full((2, 6), -20.0)
    v[1, 3] = bad
    v[1, 5] = bad
    with pytest.raises(ValueError, match=rf"2 LUFS value\(s\) are NaN or infinite; the first is channel {where}"):
        LufsCurve(v)


def test_out_of_range_values_are_clipped_with_one_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        c = curve([-90, -70, -20, 0, 5, 12])
    assert rows(c)[0] == [-70, -70, -20, 0, 0, 0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "clipped 6 of 12 LUFS value(s) to [-70, 0]" in warnings[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        curve([-10, -5]).offset(20.0)  # edits clip silently
    assert not caplog.records


def test_shape_channels_empty_and_rate_are_checked():
    with pytest.raises(ValueError, match=r"3 channel\(s\) but 2 names"):
        LufsCurve(torch.zeros(3, 6) - 20)
    with pytest.raises(ValueError, match=r"must be \[channels, frames\]"):
        LufsCurve(torch.zeros(6) - 20)
    with pytest.raises(ValueError, match="empty LUFS curve"):
        LufsCurve(torch.zeros(2, 0))
    for rate in (0.0, -6.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="rate must be a positive number"):
            LufsCurve(torch.zeros(2, 6) - 20, rate=rate)
    with pytest.raises(ValueError, match="distinct non-empty names"):
        LufsCurve(torch.zeros(2, 6) - 20, channels=("L", "L"))
    mono = LufsCurve(torch.zeros(1, 6) - 20, channels=("M",))
    assert mono.channels == ("M",)
    for stereo_only in (mono.to_normalized, mono.swap_channels, lambda: mono.pan(0.5), mono.require_stereo):
        with pytest.raises(ValueError, match=r"needs a stereo curve \(2 channels: left, right\); this one has 1"):
            stereo_only()
    assert curve([-20]).require_stereo() is not None


def test_frames_for_matches_the_sequence_config():
    seq = SequenceConfig(max_seconds=60.0)
    for seconds in (0.1, 1 / 6, 1.0, 2.37, 2.5, 10.0, 59.99, 60.0):
        assert frames_for(seconds) == seq.lufs_frames(seconds)
    assert frames_for(2.37) == 15 and frames_for(1.0) == 6


# ------------------------------------------------------------------------------------------- fit_duration


def test_fit_duration_policies():
    c = curve([-30, -20, -10])  # 0.5 s
    assert FIT_POLICIES == ("error", "resample", "pad", "trim", "pad_or_trim")
    for policy in FIT_POLICIES:
        assert c.fit_duration(0.5, policy=policy) is c  # already the right length
        assert c.fit_duration(0.45, policy=policy) is c  # ceil(2.7) = 3 frames too
    with pytest.raises(ValueError) as e:
        c.fit_duration(1.0)
    assert str(e.value) == ("the LUFS curve covers 0.5 s (3 frames at 6/s) but the audio is 1 s (6 frames); "
                            "edit the curve to 1 s or pass policy='pad' or 'resample'")
    with pytest.raises(ValueError, match=r"audio is 0.25 s \(2 frames\).*policy='trim' or 'resample'"):
        c.fit_duration(0.25)
    assert rows(c.fit_duration(1.0, policy="pad")) == [[-30, -20, -10, -10, -10, -10]] * 2
    assert rows(c.fit_duration(1.0, policy="pad_or_trim")) == [[-30, -20, -10, -10, -10, -10]] * 2
    assert rows(c.fit_duration(0.25, policy="trim")) == [[-30, -20]] * 2
    assert rows(c.fit_duration(0.25, policy="pad_or_trim")) == [[-30, -20]] * 2
    assert rows(c.fit_duration(5 / 6, policy="resample")) == [[-30, -25, -20, -15, -10]] * 2
    with pytest.raises(ValueError, match=r"0.25 s \(2 frames\).*policy='trim'"):
        c.fit_duration(0.25, policy="pad")
    with pytest.raises(ValueError, match="policy='pad'"):
        c.fit_duration(1.0, policy="trim")
    with pytest.raises(ValueError, match="unknown duration policy 'stretch'"):
        c.fit_duration(1.0, policy="stretch")
    with pytest.raises(ValueError, match="positive number of seconds"):
        c.fit_duration(0.0, policy="pad")


# ----------------------------------------------------------------------------------------------- keyframes


def test_keyframes_linear_step_smooth():
    times, levels = [0.5, 1.5], [-60.0, -20.0]
    lin = LufsCurve.from_keyframes(times, levels, duration=2.0)
    # Frames start at i / 6 s: keyframes at frames 3 and 9; held before 3 and after 9.
    expected = [-60, -60, -60, -60, -53.3333, -46.6667, -40, -33.3333, -26.6667, -20, -20, -20]
    assert rows(lin) == [expected, expected]
    step = LufsCurve.from_keyframes(times, levels, duration=2.0, interpolation="step")
    assert rows(step)[0] == [-60] * 9 + [-20] * 3
    smooth = LufsCurve.from_keyframes(times, levels, duration=2.0, interpolation="smooth")
    u = np.arange(1, 6) / 6
    eased = (-60 + 40 * u * u * (3 - 2 * u)).round(4).tolist()
    assert rows(smooth)[0] == [-60] * 4 + eased + [-20] * 3
    assert smooth.values[0, 6] == -40.0  # smoothstep passes the midpoint at half way
    # Per-channel levels, one keyframe = constant, and a keyframe at 1/3 s lands exactly on frame 2.
    pair = LufsCurve.from_keyframes([0.0, 1 / 3], [(-30, -10), (-40, -20)], duration=0.5, interpolation="step")
    assert rows(pair) == [[-30, -30, -40], [-10, -10, -20]]
    assert rows(LufsCurve.constant((-12, -18), duration=0.5)) == [[-12] * 3, [-18] * 3]


def test_keyframe_errors():
    with pytest.raises(ValueError, match="strictly increasing"):
        LufsCurve.from_keyframes([1.0, 1.0], [-10, -20], duration=2)
    with pytest.raises(ValueError, match="one level per keyframe"):
        LufsCurve.from_keyframes([0.0, 1.0], [-10], duration=2)
    with pytest.raises(ValueError, match="one level per keyframe"):
        LufsCurve.from_keyframes([], [], duration=2)
    with pytest.raises(ValueError, match="unknown interpolation 'cubic'"):
        LufsCurve.from_keyframes([0.0], [-10], duration=2, interpolation="cubic")
    with pytest.raises(ValueError, match="expected one value or 2"):
        LufsCurve.from_keyframes([0.0], [(-10, -20, -30)], duration=2)
    with pytest.raises(ValueError, match="positive number of seconds"):
        LufsCurve.constant(-20, duration=0)
    with pytest.raises(ValueError, match="must be a finite number"):
        LufsCurve.constant(float("nan"), duration=1)


# ------------------------------------------------------------------------------------------------- editing


def test_offset_and_set_level_over_a_range():
    c = LufsCurve.constant(-30.0, duration=1.0)
    # [0.5, 5/6) s = frames 3 and 4.
    assert rows(c.offset(6.0, start=0.5, end=5 / 6)) == [[-30, -30, -30, -24, -24, -30]] * 2
    assert rows(c.offset(-10.0, channels="R")) == [[-30] * 6, [-40] * 6]
    assert rows(c.offset(40.0, start=0.9)) == [[-30] * 5 + [0]] * 2  # clipped to 0 LUFS
    assert rows(c.offset(3.0, start=-5.0, end=1 / 3, channels=["L", "R"])) == [[-27, -27] + [-30] * 4] * 2
    assert c.offset(3.0, start=5.0, end=9.0) == c  # outside the curve: nothing to change
    # A range selects every frame it overlaps: [0.2, 0.4) s touches frames 1 ([1/6, 2/6)) and 2.
    assert rows(c.offset(1.0, start=0.2, end=0.4))[0] == [-30, -29, -29, -30, -30, -30]
    assert c.offset(1.0, start=0.2, end=0.2) == c  # an empty range
    assert rows(c.set_level(-12.0, start=1 / 6, end=0.5, channels="L")) == [[-30, -12, -12, -30, -30, -30], [-30] * 6]
    assert rows(c.set_level(-80.0, start=None, end=None)) == [[-70] * 6] * 2
    with pytest.raises(ValueError, match=r"start \(0.8 s\) is after end \(0.2 s\)"):
        c.offset(1.0, start=0.8, end=0.2)
    with pytest.raises(ValueError, match=r"unknown channel\(s\) \['C'\]; this curve has \['L', 'R'\]"):
        c.offset(1.0, channels="C")
    assert c == LufsCurve.constant(-30.0, duration=1.0)  # none of the edits changed the original


def test_fades_are_linear_in_db():
    c = LufsCurve.constant(-10.0, duration=1.0)
    assert rows(c.fade_in(0.5)) == [[-70, -50, -30, -10, -10, -10]] * 2
    assert rows(c.fade_out(0.5)) == [[-10, -10, -10, -30, -50, -70]] * 2
    assert rows(c.fade_in(0.5, floor=-40.0, channels="L")) == [[-40, -30, -20, -10, -10, -10], [-10] * 6]
    # A 5 s fade on a 1 s curve: its last 1 s (weights 5/30 ... 0) falls on the curve.
    assert rows(c.fade_out(5.0)) == [[-60, -62, -64, -66, -68, -70]] * 2
    quiet = curve([-65, -65, -65])
    assert quiet.fade_in(0.5, floor=-40.0) == quiet  # a fade never makes anything louder
    assert c.fade_in(0.0) == c
    with pytest.raises(ValueError, match="fade length must be >= 0"):
        c.fade_in(-1.0)


def test_copy_and_swap_channels():
    c = curve([-10, -20], [-30, -40])
    assert rows(c.copy_channel("L", "R")) == [[-10, -20], [-10, -20]]
    assert rows(c.copy_channel("R", "L")) == [[-30, -40], [-30, -40]]
    assert rows(c.swap_channels()) == [[-30, -40], [-10, -20]]
    assert c.swap_channels().swap_channels() == c
    with pytest.raises(ValueError, match="unknown channel"):
        c.copy_channel("L", "X")


def test_pan_law_values():
    c = LufsCurve.constant(-20.0, duration=1.0)
    assert c.pan(0.0) == c
    assert rows(c.pan(-1.0)) == [[-20] * 6, [-44] * 6]  # all left: right down by range_db
    assert rows(c.pan(1.0, range_db=12.0)) == [[-32] * 6, [-20] * 6]
    for amount, drop in ((0.25, 3.5), (0.5, 7.66), (0.75, 14.0), (0.9, 22.1)):
        expected = 20 * math.log10(1 / math.tan(math.pi / 4 * (1 - amount)))
        assert abs(expected - drop) < 0.05
        panned = c.pan(amount)
        assert panned.values[1].tolist() == [-20.0] * 6
        assert torch.allclose(panned.values[0], torch.tensor(-20.0 - expected))
        assert torch.equal(c.pan(-amount).values, panned.values.flip(0))
    assert rows(c.pan(0.5, start=0.5))[0] == [-20, -20, -20] + [-27.6555] * 3
    for bad in (1.5, -1.01, float("nan")):
        with pytest.raises(ValueError, match="pan amount"):
            c.pan(bad)


def test_smooth_keeps_a_constant_and_softens_a_step():
    c = LufsCurve.constant(-23.0, duration=3.0)
    assert torch.allclose(c.smooth(1.0).values, c.values)
    step = curve([-60] * 6 + [-20] * 6)
    soft = step.smooth(0.5)  # 3 frames
    assert rows(soft)[0] == [-60] * 5 + [-46.6667, -33.3333] + [-20] * 5
    assert soft.values.diff().abs().max() < step.values.diff().abs().max() / 2
    assert step.smooth(0.1) == step  # under one frame: unchanged
    assert step.smooth(2 / 6).values.diff().abs().max() < 40  # an even window is made odd (3 frames)
    assert step.smooth(60.0).num_frames == 12  # a window longer than the curve is fine


def test_clamp_resample_slice_concat():
    c = curve([-60, -40, -20, -10, -5, 0])
    assert rows(c.clamp(-50, -10)) == [[-50, -40, -20, -10, -10, -10]] * 2
    with pytest.raises(ValueError, match="lo <= hi"):
        c.clamp(-10, -50)
    longer = c.resample(2.0)
    assert longer.num_frames == 12 and longer.values[0, 0] == -60 and longer.values[0, -1] == 0
    shorter = c.resample(0.5)
    assert rows(shorter)[0] == [-60, -15, 0]  # align_corners: positions 0, 2.5, 5
    assert c.resample(2.37).num_frames == 15
    sliced = c.slice(1 / 6, 0.5)
    assert rows(sliced)[0] == [-40, -20] and sliced.duration == pytest.approx(1 / 3)
    assert rows(c.slice(0.5, 99.0))[0] == [-10, -5, 0]
    with pytest.raises(ValueError, match="holds no frame"):
        c.slice(2.0, 3.0)
    both = c.concat(c.slice(0, 1 / 3))
    assert rows(both)[0] == [-60, -40, -20, -10, -5, 0, -60, -40]
    with pytest.raises(ValueError, match="different rates or channels"):
        c.concat(curve([-1], rate=5.0))


# ---------------------------------------------------------------------------------------- the model's scale


def test_normalized_round_trip():
    c = random_curve(360)
    n = c.to_normalized()
    assert n.shape == (2, 360) and n.min() >= 0 and n.max() <= 1
    assert torch.allclose(n, (c.values + 70) / 70)
    back = LufsCurve.from_normalized(n)
    err = (back.values - c.values).abs().max().item()
    assert err < 2e-5  # measured 5.7e-6 dB (float32 rounding of (l + 70) / 70 * 70 - 70)
    exact = LufsCurve.from_normalized(torch.tensor([[0.0, 1.0], [0.5, 0.25]]))
    assert exact.values.tolist() == [[-70, 0], [-35, -52.5]]
    with pytest.raises(ValueError, match=r"normalised curves are \[2, frames\] \(left, right\), got shape \(1, 4\)"):
        LufsCurve.from_normalized(torch.zeros(1, 4))


def test_to_embedding_equals_the_conditioner():
    torch.manual_seed(0)
    cond = Conditioner(config=ConditioningConfig(embed_dim=64), sequence=SequenceConfig(max_seconds=60.0))
    for frames in (1, 60, 359, 360):
        c = random_curve(frames, seed=frames)
        expected = cond.lufs_tokens(c.to_normalized()[None], 1)[0]
        got = c.to_embedding(max_frames=cond.max_lufs_frames, tokens=1, dim=64)
        assert got.shape == (2, 64) and torch.equal(got, expected)
    cond8 = Conditioner(config=ConditioningConfig(embed_dim=96, tokens_per_embedding=3),
                        sequence=SequenceConfig(max_seconds=10.0))
    c = random_curve(45)
    expected = cond8.lufs_tokens(c.to_normalized()[None], 1)[0]
    assert torch.equal(c.to_embedding(max_frames=60, tokens=3, dim=96), expected)
    with pytest.raises(ValueError, match="more than the maximum 60"):
        random_curve(61).to_embedding(max_frames=60, tokens=1, dim=64)


def test_embedding_round_trips():
    kw = {"max_frames": 360, "tokens": 1, "dim": 768}  # the L preset: 60 s -> 360 frames -> 768 values
    keyframed = LufsCurve.from_keyframes([0, 10, 20, 30, 45, 60], [-60, -20, -35, -10, -50, -30], duration=60,
                                         interpolation="smooth")
    for c, lstsq_err, interp_err in ((random_curve(360), 2e-3, 20.0), (random_curve(100, seed=1), 1e-3, 20.0),
                                     (keyframed, 1e-4, 0.02)):
        e = c.to_embedding(**kw)
        exact = LufsCurve.from_embedding(e, frames=c.num_frames, **kw)
        approx = LufsCurve.from_embedding(e, frames=c.num_frames, method="interpolate", **kw)
        assert exact.num_frames == approx.num_frames == c.num_frames
        # Measured: lstsq 6.7e-4 / 1.7e-4 / 9.5e-6 dB; interpolation 13.8 / 12.1 / 0.0068 dB (exact only on
        # straight stretches: 768 samples do not fall on the 360 frames, so corners are cut).
        assert (exact.values - c.values).abs().max() < lstsq_err
        assert (approx.values - c.values).abs().max() < interp_err
    # The 10 s preset: 60 frames -> 768 values puts a sample on every frame (767 = 13 x 59): both are exact.
    c = random_curve(60, seed=2)
    for method in ("lstsq", "interpolate"):
        back = LufsCurve.from_embedding(c.to_embedding(max_frames=60, tokens=1, dim=768), frames=60, max_frames=60,
                                        tokens=1, dim=768, method=method)
        assert (back.values - c.values).abs().max() < 1e-3
    with pytest.raises(ValueError, match="not \\(2 \\* tokens, dim\\)"):
        LufsCurve.from_embedding(torch.zeros(2, 10), frames=5, **kw)
    with pytest.raises(ValueError, match="frames must be in"):
        LufsCurve.from_embedding(torch.zeros(2, 768), frames=400, **kw)


# -------------------------------------------------------------------------------------------------- files


def test_json_exact_format_and_round_trip(tmp_path):
    c = curve([-23.4567, -70, 0], [-10.0001, -20, -30])
    assert json.loads(c.to_json()) == {"rate": 6.0, "channels": ["L", "R"],
                                       "values": [[-23.457, -70.0, 0.0], [-10.0, -20.0, -30.0]]}
    assert "-0.0" not in curve([-0.0001, -1]).to_json()
    back = LufsCurve.from_json(c.to_json())
    assert (back.values - c.values).abs().max() < 5e-4
    assert LufsCurve.from_json(back.to_json()) == back  # exact once on the 3-decimal grid
    path = c.save(tmp_path / "curve.json")
    assert LufsCurve.load(path) == back
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.json"]  # no temporary file left behind


def test_json_ignores_unknown_keys_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        c = LufsCurve.from_json('{"rate": 6, "channels": ["L", "R"], "values": [[-1], [-2]], "note": "x"}')
    assert rows(c) == [[-1], [-2]] and "ignoring unknown key(s) ['note']" in caplog.text


def test_csv_format_and_round_trip(tmp_path):
    c = LufsCurve.from_keyframes([0, 2], [-40, (-10, -20)], duration=2.5)
    text = c.to_csv()
    lines = text.splitlines()
    assert lines[0] == "time,L,R" and len(lines) == 16
    assert lines[1] == "0.0,-40.0,-40.0" and lines[2] == "0.166666667,-37.5,-38.333"
    assert LufsCurve.from_csv(text) == LufsCurve.from_json(c.to_json())
    path = c.save(tmp_path / "curve.csv")
    assert LufsCurve.load(path) == LufsCurve.from_json(c.to_json())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curve.csv"]
    # Other rates and channel names survive; a one-row file needs its rate (or is read at 6/s).
    odd = LufsCurve(torch.tensor([[-1.0, -2.0, -3.0]]), rate=7.0, channels=("M",))
    assert LufsCurve.from_csv(odd.to_csv()) == odd
    assert LufsCurve.from_csv("time,L,R\n0,-20,-21\n").rate == 6.0
    assert LufsCurve.from_csv("time,L,R\n0,-20,-21\n", rate=10.0).rate == 10.0
    # Times rounded in a spreadsheet are fine within 1% of a frame.
    assert LufsCurve.from_csv("time,L,R\n0,-20,-21\n0.1667,-20,-21\n0.3333,-1,-2\n0.5,-1,-2\n").rate == 6.0
    assert LufsCurve.from_csv("time,L,R\n0,-20,-21\n0.1667,-20,-21\n").rate == 6.0
    ten = tmp_path / "ten.csv"
    ten.write_text("time,L,R\n0,-20,-21\n")
    assert LufsCurve.load(ten, rate=10.0).rate == 10.0
    with pytest.raises(ValueError, match=rf"^{ten}: times must start at 0 and be uniform at 10 frames/s"):
        LufsCurve.load(c.save(tmp_path / "six.csv").rename(ten), rate=10.0)


@pytest.mark.parametrize("name, text, message", [
    ("a.json", "{not json", "not valid JSON"),
    ("a.json", "[1, 2]", "expected a JSON object"),
    ("a.json", '{"rate": 6, "values": [[-1]]}', r"missing key\(s\) \['channels'\]"),
    ("a.json", '{"rate": 6, "channels": ["L", "R"], "values": [[-1, -2], [-1]]}', r"ragged values.*\[2, 1\]"),
    ("a.json", '{"rate": 6, "channels": ["L", "R"], "values": [[-1, "x"], [-1, -2]]}', r"values\[0\]\[1\]"),
    ("a.json", '{"rate": 6, "channels": ["L", "R"], "values": [[-1, NaN], [-1, -2]]}', "NaN or infinite"),
    ("a.json", '{"rate": 6, "channels": ["L"], "values": [[-1], [-1]]}', r"2 channel\(s\) but 1 names"),
    ("a.json", '{"rate": 6, "channels": ["L", "R"], "values": []}', "one list of numbers per channel"),
    ("a.json", '{"rate": "6", "channels": ["L", "R"], "values": [[-1], [-1]]}', "rate must be a number"),
    ("a.json", '{"rate": 0, "channels": ["L", "R"], "values": [[-1], [-1]]}', "rate must be a positive"),
    ("a.csv", "", "empty file"),
    ("a.csv", "t,L,R\n0,-1,-1\n", "header must be `time`"),
    ("a.csv", "time,L,R\n", "no frames after the header"),
    ("a.csv", "time,L,R\n0,-1,-1\n0.1667,-1\n", "line 3 has 2 cells"),
    ("a.csv", "time,L,R\n0,-1,-1\n0.1667,-1,loud\n", "line 3: non-numeric cell"),
    ("a.csv", "time,L,R\n0,-1,-1\n0.1667,-1,-1\n0.3333,-1,-1\n0.6,-1,-1\n0.6667,-1,-1\n",
     r"times must start at 0 and be uniform at 6 frames/s; line 5 has 0.6 s, expected 0.5 s"),
    ("a.csv", "time,L,R\n1,-1,-1\n2,-1,-1\n", "times must start at 0"),
    ("a.csv", "time,L,R\n0,-1,nan\n", "NaN or infinite"),
    ("a.txt", "", "unknown LUFS curve format"),
])
def test_bad_files_name_the_file(tmp_path, name, text, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as e:
        LufsCurve.load(path)
    assert str(e.value).startswith(f"{path}: ")


def test_save_rejects_unknown_extensions_and_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    c = LufsCurve.constant(-20.0, duration=1.0)
    with pytest.raises(ValueError, match=r"use a \.json or \.csv file"):
        c.save(tmp_path / "curve.txt")
    path = c.save(tmp_path / "curve.json")
    before = path.read_text()
    monkeypatch.setattr(LufsCurve, "to_json", lambda self: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        c.offset(-5).save(path)
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["curve.json"]


# --------------------------------------------------------------------------------------------------- plots


def test_plot_with_overlay_writes_a_png_of_the_returned_image(tmp_path):
    from PIL import Image

    target = (LufsCurve.from_keyframes([0, 2, 4, 6, 8], [-60, -18, (-25, -40), (-12, -30), -50], duration=10,
                                       interpolation="smooth").fade_in(0.5).fade_out(1.0))
    measured = target.offset(-2.0).smooth(0.5).pan(0.2, start=5.0).offset(3.0, start=1.0, end=2.0)
    path = tmp_path / "plot.png"
    image = plot_curves(target, overlay=measured, path=path, title="target vs measured")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as png:
        assert png.size == (image.shape[1], image.shape[0])
        assert np.array_equal(np.asarray(png.convert("RGB")), image)
    colours = np.unique(image.reshape(-1, 3), axis=0)
    assert len(colours) > 20  # not blank: lines, text, grid, legend
    blue, red = np.array([31, 119, 180]), np.array([214, 39, 40])  # tab:blue (L), tab:red (R)
    assert any(np.abs(colours.astype(int) - blue).sum(1) < 30) and any(np.abs(colours.astype(int) - red).sum(1) < 30)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plot.png"]
    shutil.copyfile(path, "/tmp/lufs_plot_example.png")  # for a person to look at


def test_plot_without_overlay_and_mono():
    image = plot_curves(LufsCurve.constant(-70.0, duration=1.0), size=(4.0, 2.0), dpi=50)
    assert image.shape == (100, 200, 3)
    mono = LufsCurve(torch.full((1, 6), -20.0), channels=("M",))
    assert plot_curves(mono, overlay=LufsCurve.constant(-30.0, duration=2.0)).shape[2] == 3
