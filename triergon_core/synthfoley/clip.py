"""Render one SynthFoley clip: frames, stereo audio, captions and per-scene metadata, all from one seed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..video import exact_fps
from ._signal import SAMPLE_RATE
from .scenes import SCENES

logger = logging.getLogger(__name__)

__all__ = ["SCENE_KINDS", "SynthClip", "clip_seed", "render_clip"]

SCENE_KINDS = tuple(SCENES)
MIN_BAND = 8  # pixels: the smallest band height a scene can be drawn in
_HEADROOM = 0.95  # the mix is scaled down (never up) so that its peak stays below this


@dataclass(frozen=True, eq=False)
class SynthClip:
    """One rendered clip.

    Attributes:
        frames: uint8 [T, height, width, 3]; frame k shows the scene at time k / fps.
        audio: float32 [2, N] stereo at `sample_rate`; N = round(seconds * sample_rate).
        fps: the frame rate as an exact fraction (e.g. 24000/1001).
        sample_rate: 44100.
        caption: the caption chosen for this clip.
        captions: every wording of the caption (the chosen one included).
        scenes: per-scene metadata (kind, band, parameters, and the drawn quantities per frame that the
            sound follows: ball impact times and heights, lamp brightness, x positions, rain drop counts).
        seed: the seed the clip was rendered from.
    """

    frames: np.ndarray
    audio: np.ndarray
    fps: Fraction
    sample_rate: int
    caption: str
    captions: tuple[str, ...]
    scenes: tuple[dict, ...]
    seed: int

    @property
    def seconds(self) -> float:
        return self.audio.shape[1] / self.sample_rate

    @property
    def frame_times(self) -> np.ndarray:
        return _frame_times(len(self.frames), self.fps)


def clip_seed(seed: int, index: int) -> int:
    """The seed of clip `index` of a data set made with `seed` (independent of how many clips are made)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> 1)


def _frame_times(num_frames: int, fps: Fraction) -> np.ndarray:
    return np.arange(num_frames) * (fps.denominator / fps.numerator)


def render_clip(
    *,
    seed: int,
    seconds: float = 5.0,
    fps: float | int | str | Fraction = 24,
    width: int = 128,
    height: int = 128,
    kinds: Sequence[str] | None = None,
    max_scenes: int = 2,
) -> SynthClip:
    """Render a clip whose sounds are caused by what is drawn.

    Args:
        seed: everything (scenes, motion, noise, caption) follows from it.
        seconds: duration; the clip has round(seconds * fps) frames and round(seconds * 44100) samples.
        fps: frame rate (see `video.exact_fps`).
        width, height: frame size in pixels.
        kinds: the scenes to show, stacked top to bottom (from `SCENE_KINDS`); None: 1 to `max_scenes`
            distinct kinds drawn from the seed.
        max_scenes: the most scenes in one clip when `kinds` is None.
    """
    fps = exact_fps(fps)
    if not np.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds must be a positive number, got {seconds}")
    num_frames, num_samples = round(seconds * fps), round(seconds * SAMPLE_RATE)
    if num_frames < 1:
        raise ValueError(f"{seconds} s at {float(fps):g} fps is less than one frame; make the clip longer")
    rng = np.random.default_rng(seed)
    if kinds is None:
        if max_scenes < 1:
            raise ValueError(f"max_scenes must be at least 1, got {max_scenes}")
        count = int(rng.integers(1, min(max_scenes, len(SCENE_KINDS)) + 1))
        kinds = [str(k) for k in rng.choice(SCENE_KINDS, count, replace=False)]
    unknown = [k for k in kinds if k not in SCENES]
    if unknown or not kinds:
        raise ValueError(f"unknown scene kind(s) {unknown}; choose from {', '.join(SCENE_KINDS)}")
    if width < MIN_BAND or height < MIN_BAND * len(kinds):
        raise ValueError(f"{width}x{height} is too small for {len(kinds)} scene(s): each needs at least "
                         f"{MIN_BAND}x{MIN_BAND} pixels; make the frame larger or use fewer scenes")

    edges = np.linspace(0, height, len(kinds) + 1).round().astype(int)
    scene_rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(len(kinds))]
    scenes = [SCENES[k](r, seconds=seconds, width=width, height=int(b - a))
              for k, r, a, b in zip(kinds, scene_rngs, edges[:-1], edges[1:], strict=True)]

    t_frames = _frame_times(num_frames, fps)
    t_audio = np.arange(num_samples) / SAMPLE_RATE
    background = rng.integers(10, 60, 3).astype(np.uint8)
    canvas = np.empty((num_frames, height, width, 3), np.uint8)
    canvas[:] = background
    audio = np.zeros((2, num_samples))
    for scene, a, b in zip(scenes, edges[:-1], edges[1:], strict=True):
        scene.draw(canvas[:, a:b], t_frames)
        audio += scene.sound(t_audio)
    peak = float(np.abs(audio).max(initial=0.0))
    gain = min(1.0, _HEADROOM / peak) if peak > 0 else 1.0

    captions = tuple(_join([s.caption(w) for s in scenes]) for w in range(3))
    meta = tuple({**s.metadata(t_frames), "band": [int(a), int(b)]}
                 for s, a, b in zip(scenes, edges[:-1], edges[1:], strict=True))
    meta = tuple({**m, "mix_gain": gain, "background": background.tolist()} for m in meta)
    return SynthClip(frames=canvas, audio=(audio * gain).astype(np.float32), fps=fps, sample_rate=SAMPLE_RATE,
                     caption=captions[int(rng.integers(len(captions)))], captions=captions, scenes=meta, seed=seed)


def _join(parts: list[str]) -> str:
    text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return text[0].upper() + text[1:]
