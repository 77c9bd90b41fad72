"""SynthFoley: determinism, exact lengths, and audio that follows what is drawn (measured from the pixels)."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from triergon.triergon_core.cli import main
from triergon.triergon_core.lufs_curve import LufsCurve
from triergon.triergon_core.metrics import stereo_placement
from triergon.triergon_core.synthfoley import SCENE_KINDS, render_clip
from triergon.triergon_core.synthfoley.dataset import split_of
from triergon.triergon_core.video import exact_fps, probe_video

SR = 44100


def _windows(values: np.ndarray, times: np.ndarray, frames: int) -> np.ndarray:
    """Mean of per-video-frame `values` over each 1/6 s loudness window."""
    idx = np.minimum((times * 6).astype(int), frames - 1)
    return np.array([values[idx == i].mean() if (idx == i).any() else np.nan for i in range(frames)])


def _foreground(clip, band=None) -> np.ndarray:
    """[T, H, W] bool: pixels that differ from the clip's background colour."""
    bg = np.asarray(clip.scenes[0]["background"])
    frames = clip.frames if band is None else clip.frames[:, band[0]:band[1]]
    return np.abs(frames.astype(int) - bg).max(-1) > 3


def test_same_seed_same_clip_other_seed_differs():
    a, b = (render_clip(seed=7, seconds=1.0, fps=12, width=32, height=32, max_scenes=3) for _ in range(2))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert a.caption == b.caption and a.scenes == b.scenes
    c = render_clip(seed=8, seconds=1.0, fps=12, width=32, height=32, max_scenes=3)
    assert not np.array_equal(a.audio, c.audio)


@pytest.mark.parametrize(("fps", "exact"), [(23.976, Fraction(24000, 1001)), (25, Fraction(25)),
                                            (29.97, Fraction(30000, 1001)), (60, Fraction(60)),
                                            (59.94, Fraction(60000, 1001)), ("30000/1001", Fraction(30000, 1001))])
@pytest.mark.parametrize("seconds", [0.7, 1.3])
def test_exact_lengths(fps, exact, seconds):
    clip = render_clip(seed=1, seconds=seconds, fps=fps, width=24, height=16, kinds=["ball"])
    assert clip.fps == exact
    assert clip.frames.shape == (round(seconds * exact), 16, 24, 3) and clip.frames.dtype == np.uint8
    assert clip.audio.shape == (2, round(seconds * SR)) and clip.audio.dtype == np.float32
    assert np.allclose(np.diff(clip.frame_times), 1 / float(exact))
    assert np.abs(clip.audio).max() <= 0.95


def test_every_kind_renders_and_bad_input_is_refused():
    for kind in SCENE_KINDS:
        clip = render_clip(seed=3, seconds=0.5, fps=10, width=16, height=16, kinds=[kind])
        assert clip.scenes[0]["kind"] == kind and kind not in ("",) and clip.caption
        assert len(set(clip.captions)) == 3
    with pytest.raises(ValueError, match="unknown scene"):
        render_clip(seed=0, kinds=["piano"])
    with pytest.raises(ValueError, match="too small"):
        render_clip(seed=0, width=16, height=12, kinds=["ball", "lamp"])
    with pytest.raises(ValueError, match="less than one frame"):
        render_clip(seed=0, seconds=0.01, fps=24)
    with pytest.raises(ValueError, match="frame rate"):
        exact_fps("fast")


def test_lamp_loudness_follows_drawn_brightness():
    clip = render_clip(seed=11, seconds=6.0, fps=24, width=32, height=32, kinds=["lamp"])
    scene = clip.scenes[0]
    # the bulb's centre pixel, read from the frames
    pixel = clip.frames[:, int(0.4 * 32), int(scene["x"] * 32)].astype(float).max(-1)
    curve = LufsCurve.measure(torch.from_numpy(clip.audio))
    drawn = _windows(pixel - 30, clip.frame_times, curve.num_frames)
    loud = curve.values.max(0).values.numpy()
    lit = drawn > 10
    assert lit.sum() > 10
    r = np.corrcoef(20 * np.log10(drawn[lit]), loud[lit])[0, 1]
    assert r > 0.985, r
    assert loud[drawn < 0.5].max(initial=-70) < -60  # a dark lamp is silent


def test_slider_pan_follows_drawn_position():
    clip = render_clip(seed=5, seconds=6.0, fps=24, width=64, height=32, kinds=["slider"])
    mask = _foreground(clip)
    cols = np.arange(64) + 0.5
    x = (mask.sum(1) * cols).sum(-1) / mask.sum((1, 2)) / 64  # drawn centroid, 0..1
    measured = LufsCurve.measure(torch.from_numpy(clip.audio))
    pos = _windows(x, clip.frame_times, measured.num_frames)
    # the side the drawing asks for, as a curve: equal-power pan of the drawn position
    angle = np.clip(pos, 0, 1) * np.pi / 2
    requested = LufsCurve(np.stack([20 * np.log10(np.cos(angle) + 1e-6), 20 * np.log10(np.sin(angle) + 1e-6)]) - 20)
    score = stereo_placement(requested, measured)
    assert score.frames > 10
    assert score.accuracy >= 0.95, score


@pytest.mark.parametrize("fps", [24, 23.976, 60])
@pytest.mark.parametrize("seed", [0, 2])
def test_ball_knocks_start_at_drawn_impacts_and_grow_with_height(fps, seed):
    clip = render_clip(seed=seed, seconds=5.0, fps=fps, width=32, height=48, kinds=["ball"])
    fps, end = float(clip.fps), 5.0
    floor = 48 - max(1, int(np.ceil(0.06 * 48)))
    ball = _foreground(clip)[:, :floor]
    cy = (ball.sum(2) * np.arange(floor)).sum(1) / ball.sum((1, 2))
    # drawn impacts: frames where the ball is lowest (near the floor, so pixel jitter at the apex is no impact)
    lowest = [k for k in range(1, len(cy) - 1)
              if cy[k] >= cy[k - 1] and cy[k] > cy[k + 1] and cy[k] > cy.max() - floor / 4]
    drawn = np.array(lowest) / fps
    envelope = np.sqrt((clip.audio.astype(float) ** 2).sum(0))
    above = envelope > 0.05 * envelope.max()
    onsets = np.array([n / SR for n in np.flatnonzero(above) if not above[max(0, n - 2205):n].any()])
    inside = onsets[(onsets > 1 / fps) & (onsets < end - 1 / fps)]
    drawn_inside = drawn[(drawn > 1 / fps) & (drawn < end - 1 / fps)]
    assert len(inside) >= 4
    for t in inside:  # every knock has a drawn impact within one frame, and every drawn impact a knock
        assert np.abs(drawn - t).min() <= 1 / fps, (t, drawn)
    for t in drawn_inside:
        assert np.abs(onsets - t).min() <= 1 / fps, (t, onsets)
    # louder knocks after higher drops (drop height as drawn: from the highest point before each impact)
    heights, peaks = [], []
    for t in inside:
        k = round(float(t) * fps)
        start = max([j for j in lowest if j < k - 1], default=0)
        heights.append(cy[k - 1] - cy[start:k].min())
        n = round(float(t) * SR)
        peaks.append(envelope[n:n + 2205].max())
    assert np.corrcoef(heights[1:], peaks[1:])[0, 1] > 0.95


def test_knocks_start_on_the_exact_sample_of_each_impact():
    clip = render_clip(seed=9, seconds=4.0, fps=25, width=16, height=16, kinds=["ball"])
    impacts = np.round(np.array(clip.scenes[0]["impact_times"]) * SR).astype(int)
    assert len(impacts) >= 3
    sound = np.abs(clip.audio).sum(0) > 0
    starts = np.flatnonzero(sound & ~np.concatenate([[False], sound[:-1]]))
    assert np.array_equal(starts, impacts)


def test_rain_loudness_rises_with_drawn_drops():
    clip = render_clip(seed=4, seconds=6.0, fps=24, width=64, height=32, kinds=["rain"])
    drops = _foreground(clip).sum((1, 2)).astype(float)
    curve = LufsCurve.measure(torch.from_numpy(clip.audio))
    drawn = _windows(drops, clip.frame_times, curve.num_frames)
    power = 10 * np.log10((10 ** (curve.values.numpy() / 10)).mean(0))
    ok = drawn > 0
    assert np.corrcoef(np.log10(drawn[ok]), power[ok])[0, 1] > 0.98


def test_vehicle_is_loudest_when_drawn_near_the_centre():
    clip = render_clip(seed=6, seconds=6.0, fps=24, width=64, height=32, kinds=["vehicle"])
    mask = _foreground(clip)
    seen = mask.sum((1, 2)) > 0
    x = np.where(seen, (mask.sum(1) * (np.arange(64) + 0.5)).sum(-1) / np.maximum(mask.sum((1, 2)), 1) / 64, np.nan)
    curve = LufsCurve.measure(torch.from_numpy(clip.audio))
    power = 10 * np.log10((10 ** (curve.values.numpy() / 10)).mean(0))
    pos = _windows(x, clip.frame_times, curve.num_frames)
    central, away = np.abs(pos - 0.5) < 0.15, ~(np.abs(pos - 0.5) < 0.6)
    assert central.any() and away.any()
    assert power[central].min() > power[away].max() + 6


def test_splits_are_fixed():
    splits = [split_of(i) for i in range(100)]
    assert splits.count("train") == 80 and splits.count("validation") == 10 and splits.count("test") == 10
    assert splits[:3] == ["test", "validation", "train"]


def test_cli_writes_readable_videos_and_manifest(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["synth", "-o", str(out), "--clips", "3", "--seconds", "1.2", "--fps", "29.97", "--size", "32x24",
                 "--seed", "3", "-q"]) == 0
    rows = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["split"] for r in rows] == ["test", "validation", "train"]
    for row in rows:
        assert set(row) <= {"id", "video", "audio", "caption", "split"} and row["caption"]
        info = probe_video(out / row["video"])
        assert info.has_audio and (info.width, info.height) == (32, 24)
        assert info.num_frames == round(1.2 * 30000 / 1001)
        assert info.duration == pytest.approx(info.num_frames * 1001 / 30000, abs=1e-3)
        assert (out / row["audio"]).is_file()
    meta = [json.loads(line) for line in (out / "scenes.jsonl").read_text().splitlines()]
    assert [m["id"] for m in meta] == [r["id"] for r in rows] and all(m["scenes"] for m in meta)
    # the same seed gives the same clips whatever the count
    again = tmp_path / "again"
    assert main(["synth", "-o", str(again), "--clips", "1", "--seconds", "1.2", "--fps", "29.97", "--size", "32x24",
                 "--seed", "3", "-q"]) == 0
    assert json.loads((again / "manifest.jsonl").read_text())["caption"] == rows[0]["caption"]
    assert main(["synth", "-o", str(tmp_path / "bad"), "--clips", "1", "--fps", "0"]) == 2


def test_vehicle_pitch_drops_as_it_passes_the_centre():
    """Doppler: the engine sounds higher while the drawn vehicle approaches the centre than after it."""
    checked = 0
    for seed in range(3):
        clip = render_clip(seed=seed, seconds=6.0, fps=24, width=64, height=16, kinds=["vehicle"])
        mask = _foreground(clip)
        x = (mask.sum(1) * (np.arange(64) + 0.5)).sum(-1) / np.maximum(mask.sum((1, 2)), 1) / 64
        seen = mask.sum((1, 2)) > 0
        crossings = [k for k in range(1, len(x)) if seen[k - 1] and seen[k] and (x[k - 1] - 0.5) * (x[k] - 0.5) <= 0]
        for k in crossings:
            centre = clip.frame_times[k]
            if not 0.5 < centre < 5.5:
                continue
            fourth = 4 * clip.scenes[0]["engine_hz"]

            mono = clip.audio.sum(0)
            before = _peak_hz(mono, centre - 0.45, centre - 0.1, fourth)
            after = _peak_hz(mono, centre + 0.1, centre + 0.45, fourth)
            assert before > after * 1.03, (seed, centre, before, after)
            checked += 1
    assert checked >= 2


def _peak_hz(mono: np.ndarray, start: float, end: float, near: float) -> float:
    """The strongest frequency within 15 % of `near` in mono[start:end] (seconds; zero-padded FFT)."""
    a, b = round(start * SR), round(end * SR)
    spec = np.abs(np.fft.rfft(mono[a:b] * np.hanning(b - a), 1 << 18))
    f = np.fft.rfftfreq(1 << 18, 1 / SR)
    band = (f > 0.85 * near) & (f < 1.15 * near)
    return float(f[band][spec[band].argmax()])


@pytest.mark.parametrize(("size", "fps"), [((32, 24), "25"), ((33, 21), "59.94"), ((16, 16), "24")])
def test_written_clip_holds_the_rendered_frames_and_audio(tmp_path, size, fps):
    from triergon.triergon_core.audio import load_audio
    from triergon.triergon_core.synthfoley import clip_seed
    from triergon.triergon_core.video import read_frames

    width, height = size
    assert main(["synth", "-o", str(tmp_path), "--clips", "1", "--seconds", "0.8", "--fps", fps, "--size",
                 f"{width}x{height}", "--seed", "5", "-q"]) == 0
    clip = render_clip(seed=clip_seed(5, 0), seconds=0.8, fps=fps, width=width, height=height)
    row = json.loads((tmp_path / "manifest.jsonl").read_text())
    assert row["caption"] == clip.caption
    decoded = read_frames(tmp_path / row["video"], times=clip.frame_times).frames.numpy()
    assert decoded.shape == clip.frames.shape
    rendered, decoded = clip.frames.astype(int), decoded.astype(int)
    assert np.abs(decoded - rendered).mean() < 4  # lossy H.264 (crf 18, 4:2:0 chroma on tiny frames)
    # where the picture changes from one frame to the next, each decoded frame is its own, not its neighbour
    moved = np.abs(rendered[1:] - rendered[:-1]).max(-1) > 40
    own = np.abs(decoded[1:] - rendered[1:]).max(-1)[moved].mean()
    previous = np.abs(decoded[1:] - rendered[:-1]).max(-1)[moved].mean()
    assert own < previous / 2
    flac = load_audio(tmp_path / row["audio"]).numpy()  # the video's duration, frames / fps
    assert flac.shape == (2, round(len(clip.frames) / clip.fps * SR))
    n = min(flac.shape[1], clip.audio.shape[1])
    assert np.abs(flac[:, :n] - clip.audio[:, :n]).max() < 1 / 32768 and not flac[:, n:].any()
    # AAC, aligned with the video's start; as long as the video (FFmpeg 9 trims the last frame's padding)
    muxed = load_audio(tmp_path / row["video"]).numpy()
    assert muxed.shape[1] >= flac.shape[1] - 1
    n = min(muxed.shape[1], clip.audio.shape[1])
    assert np.corrcoef(muxed[:, :n].ravel(), clip.audio[:, :n].ravel())[0, 1] > 0.98


def test_a_stopped_run_keeps_the_manifest_of_finished_clips(tmp_path, monkeypatch):
    from triergon.triergon_core.synthfoley import dataset

    real, calls = dataset.write_clip, []

    def failing(clip, video, audio=None):
        calls.append(video)
        if len(calls) == 3:
            raise KeyboardInterrupt
        real(clip, video, audio)

    monkeypatch.setattr(dataset, "write_clip", failing)
    with pytest.raises(KeyboardInterrupt):
        dataset.write_dataset(tmp_path, clips=5, seconds=0.3, fps=10, width=16, height=16)
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["synth-000000", "synth-000001"]
    assert len((tmp_path / "scenes.jsonl").read_text().splitlines()) == 2


def test_dataset_refuses_bad_settings_before_writing(tmp_path):
    from triergon.triergon_core.synthfoley.dataset import write_dataset

    with pytest.raises(ValueError, match="too small"):
        write_dataset(tmp_path / "a", clips=2, width=16, height=12, max_scenes=2)
    with pytest.raises(ValueError, match="max-scenes"):
        write_dataset(tmp_path / "b", clips=2, max_scenes=0)
    with pytest.raises(ValueError, match="clips"):
        write_dataset(tmp_path / "c", clips=0)
    assert not any(tmp_path.iterdir())
