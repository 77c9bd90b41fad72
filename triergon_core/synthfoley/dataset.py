"""Write SynthFoley clips to disk: MP4 (H.264 video with the AAC audio muxed in), FLAC audio, a JSONL
manifest in the training format (`id`, `video`, `audio`, `caption`, `split`) and per-clip scene metadata."""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch

from .._fs import atomic_write_path
from ..audio import write_audio
from ..mux import mux_audio
from .clip import MIN_BAND, SCENE_KINDS, SynthClip, clip_seed, render_clip

logger = logging.getLogger(__name__)

__all__ = ["SPLITS", "split_of", "write_clip", "write_dataset"]

SPLITS = ("train", "validation", "test")
MANIFEST, METADATA = "manifest.jsonl", "scenes.jsonl"


def split_of(index: int) -> str:
    """The fixed split of clip `index`: 8 of every 10 train, 1 validation, 1 test (stable as a set grows)."""
    return {0: "test", 1: "validation"}.get(index % 10, "train")


def write_video(clip: SynthClip, path: Path) -> Path:
    """Encode `clip.frames` as H.264 (yuv420p; yuv444p when a side is odd) at `clip.fps`, no audio."""
    _, height, width, _ = clip.frames.shape
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=clip.fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        stream.options = {"crf": "18", "preset": "veryfast"}
        for k, image in enumerate(clip.frames):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = k
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_clip(clip: SynthClip, video: Path, audio: Path | None = None) -> None:
    """Write `video` (.mp4 with the clip's audio as AAC) and, optionally, `audio` (.flac/.wav, lossless).

    Both hold exactly the video's duration, frames / fps, which differs from the requested seconds by under half
    a frame when seconds * fps is not whole: the audio is cut there or padded with silence.
    """
    video.parent.mkdir(parents=True, exist_ok=True)
    silent = video.with_name(f".{video.stem}.{uuid.uuid4().hex[:8]}.silent.mp4")
    num_samples = round(len(clip.frames) / clip.fps * clip.sample_rate)
    track = np.zeros((2, num_samples), np.float32)
    track[:, :clip.audio.shape[1]] = clip.audio[:, :num_samples]
    try:
        write_video(clip, silent)
        mux_audio(silent, torch.from_numpy(track), video, sample_rate=clip.sample_rate)
    finally:
        silent.unlink(missing_ok=True)
    if audio is not None:
        write_audio(audio, torch.from_numpy(track), sample_rate=clip.sample_rate)


def write_dataset(
    output: str | os.PathLike[str],
    *,
    clips: int,
    seconds: float = 5.0,
    fps: float | str = 24,
    width: int = 128,
    height: int = 128,
    seed: int = 0,
    max_scenes: int = 2,
    audio_files: bool = True,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Render `clips` clips into `output`; returns the manifest's path.

    Clip i is rendered from `clip_seed(seed, i)` and lands in split `split_of(i)`, so the same seed gives the
    same clips and splits whatever `clips` is. Files: `clips/<id>.mp4` (and `.flac`), `manifest.jsonl`
    (paths relative to `output`), `scenes.jsonl` (id, seed, fps, scene metadata). The manifests are written
    atomically at the end, and also when the run stops early (an error, Ctrl-C): they then list the clips
    finished so far.
    """
    if clips < 1:
        raise ValueError(f"--clips must be at least 1, got {clips}")
    if not 1 <= max_scenes <= len(SCENE_KINDS):
        raise ValueError(f"--max-scenes must be between 1 and {len(SCENE_KINDS)}, got {max_scenes}")
    if width < MIN_BAND or height < MIN_BAND * max_scenes:
        raise ValueError(f"--size {width}x{height} is too small for {max_scenes} scene(s) in a clip: each needs "
                         f"{MIN_BAND}x{MIN_BAND} pixels; make it at least {MIN_BAND}x{MIN_BAND * max_scenes} or "
                         "lower --max-scenes")
    root = Path(output)
    if root.exists() and not root.is_dir():
        raise ValueError(f"output {str(root)!r} is a file; give a folder")
    rows: list[dict] = []
    metas: list[dict] = []
    try:
        _render_all(root, rows, metas, clips=clips, seconds=seconds, fps=fps, width=width, height=height,
                    seed=seed, max_scenes=max_scenes, audio_files=audio_files, progress=progress)
    finally:
        if rows:
            for name, lines in ((METADATA, metas), (MANIFEST, rows)):
                with atomic_write_path(root / name) as tmp:
                    tmp.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
        if len(rows) < clips:
            logger.warning("stopped after %d of %d clips; %s lists those", len(rows), clips, root / MANIFEST)
    logger.info("wrote %d clips to %s", clips, root)
    return root / MANIFEST


def _render_all(root: Path, rows: list[dict], metas: list[dict], *, clips: int, seconds: float, fps: float | str,
                width: int, height: int, seed: int, max_scenes: int, audio_files: bool,
                progress: Callable[[int], None] | None) -> None:
    for i in range(clips):
        clip = render_clip(seed=clip_seed(seed, i), seconds=seconds, fps=fps, width=width, height=height,
                           max_scenes=max_scenes)
        clip_id = f"synth-{i:06d}"
        video = Path("clips") / f"{clip_id}.mp4"
        audio = video.with_suffix(".flac") if audio_files else None
        write_clip(clip, root / video, root / audio if audio else None)
        row = {"id": clip_id, "video": str(video), "caption": clip.caption, "split": split_of(i)}
        if audio:
            row["audio"] = str(audio)
        rows.append(row)
        metas.append({"id": clip_id, "seed": clip.seed, "fps": str(clip.fps), "frames": len(clip.frames),
                      "seconds": float(len(clip.frames) / clip.fps), "captions": list(clip.captions),
                      "scenes": list(clip.scenes)})
        if progress:
            progress(i + 1)
