"""Known-answer tests of AV-Align: motion bursts against clicks, and SynthFoley ball clips against their own
audio with the frames out of order."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from triergon.triergon_core.metrics import av_align, av_align_file, flow_energy, peak_iou
from triergon.triergon_core.synthfoley import render_clip
from triergon.triergon_core.synthfoley.dataset import write_clip

pytest.importorskip("cv2")
pytest.importorskip("librosa")

FPS, RATE = 24, 44100
BURSTS = (10, 22, 37)  # frames at which the square jumps


def _jumping_square(frames: int = 48) -> np.ndarray:
    """A still textured square that jumps 6 pixels right at each of BURSTS: flow only into those frames."""
    texture = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    video = np.full((frames, 64, 64, 3), 40, np.uint8)
    x = 8
    for k in range(frames):
        x += 6 * (k in BURSTS)
        video[k, 24:40, x:x + 16] = texture
    return video


def _clicks(times, seconds: float = 2.0) -> np.ndarray:
    """Stereo decaying noise bursts starting at `times`."""
    rng = np.random.default_rng(1)
    audio = np.zeros((2, round(seconds * RATE)), np.float32)
    for t in times:
        start = round(t * RATE)
        audio[:, start:start + 2000] = 0.5 * rng.standard_normal(2000) * np.exp(-np.arange(2000) / 300)
    return audio


def test_peak_iou_known_values():
    # window 1/24 s: 0.10~0.11 and 0.50~0.52 match, 0.90 has no partner; 2 / (3 + 3 - 2)
    assert peak_iou([0.1, 0.5, 0.9], [0.11, 0.52, 2.0], 24) == pytest.approx(0.5)
    assert peak_iou([0.5], [0.75], 4) == 0.0  # the window is open: exactly one frame apart is a miss
    assert peak_iou([0.5], [0.74], 4) == 1.0
    assert peak_iou([0.1, 0.3], [], 24) == 0.0
    assert math.isnan(peak_iou([], [], 24))
    # two onsets near one motion peak both count, as in the authors' code: 2 / (2 + 1 - 2)
    assert peak_iou([0.50, 0.53], [0.51], 24) == pytest.approx(2.0)


def test_flow_energy_is_zero_between_identical_frames():
    energy = flow_energy(_jumping_square())
    moving = np.flatnonzero(energy > 0.5)
    assert moving.tolist() == list(BURSTS)
    assert np.abs(np.delete(energy, moving)).max() < 1e-3


def test_aligned_clicks_score_one_and_shifted_clicks_zero():
    video = _jumping_square()
    assert av_align(video, FPS, _clicks([k / FPS for k in BURSTS]), RATE) == pytest.approx(1.0)
    assert av_align(video, FPS, _clicks([k / FPS + 0.25 for k in BURSTS]), RATE) == pytest.approx(0.0)


def test_ball_clips_score_above_their_frames_out_of_order():
    # measured on these seeds: 0.50 and 0.50 in order; 0.00 - 0.11 reversed or shuffled (seeds 0-7: 0.29 - 0.50
    # in order, 0.00 - 0.24 out of order)
    aligned, scrambled = [], []
    for seed in (3, 7):
        clip = render_clip(seed=seed, seconds=5, width=96, height=96, kinds=["ball"])
        order = np.random.default_rng(seed).permutation(len(clip.frames))
        aligned.append(av_align(clip.frames, clip.fps, clip.audio, clip.sample_rate))
        scrambled.append(av_align(clip.frames[::-1].copy(), clip.fps, clip.audio, clip.sample_rate))
        scrambled.append(av_align(clip.frames[order], clip.fps, clip.audio, clip.sample_rate))
    assert min(aligned) > 0.4
    assert max(scrambled) < 0.2


def test_av_align_file_matches_arrays(tmp_path: Path):
    # a clip whose motion peaks H.264 (crf 18) leaves in place (on seed 3 it moves one by a frame: 0.50 -> 0.33)
    clip = render_clip(seed=7, seconds=3, width=96, height=96, kinds=["ball"])
    write_clip(clip, tmp_path / "ball.mp4", tmp_path / "ball.flac")
    direct = av_align(clip.frames, clip.fps, clip.audio, clip.sample_rate)
    assert direct > 0.4
    assert av_align_file(tmp_path / "ball.mp4", tmp_path / "ball.flac") == pytest.approx(direct)
    assert av_align_file(tmp_path / "ball.mp4") == pytest.approx(direct)  # its own AAC track


def test_eval_scores_a_clip_against_its_frames_and_against_them_shuffled(tmp_path: Path):
    from triergon.triergon_core.evaluation import SHUFFLE_SEED, _av_align

    clip = render_clip(seed=7, seconds=3, width=96, height=96, kinds=["ball"])
    write_clip(clip, tmp_path / "ball.mp4", tmp_path / "ball.flac")
    direct = av_align(clip.frames, clip.fps, clip.audio, clip.sample_rate)
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(clip.frames))
    aligned, shuffled = _av_align(tmp_path / "ball.mp4", torch.as_tensor(clip.audio))
    assert aligned == pytest.approx(direct) and aligned > 0.4
    # H.264 moves no peak of this clip (above), so the shuffled baseline equals the shuffled arrays' score
    assert shuffled == pytest.approx(av_align(clip.frames[order], clip.fps, clip.audio, clip.sample_rate))
    assert shuffled < 0.2


def test_bad_inputs_and_missing_extra(monkeypatch):
    with pytest.raises(ValueError, match="uint8 RGB"):
        av_align(np.zeros((1, 8, 8, 3), np.uint8), FPS, _clicks([0.1]), RATE)
    with pytest.raises(ValueError, match="frame rate"):
        av_align(_jumping_square(), 0, _clicks([0.1]), RATE)
    monkeypatch.setitem(sys.modules, "cv2", None)  # an import of cv2 now fails
    with pytest.raises(ImportError, match=r"opencv-python-headless.*triergon\[eval\]"):
        flow_energy(_jumping_square())
