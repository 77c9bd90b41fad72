"""`triergon data pack`: a manifest of clips -> WebDataset tar shards.

Each sample holds `flac` (the clip's audio, 44.1 kHz stereo, cut to the video's duration), `frames.npy`
(uint8 [T, H, W, 3] frames at `fps`, sampled by timestamp: frame k shows the video at k / fps s, for T_LUFS's
DINOv2 features), `vframes.npy` (8 frames at the centres of 8 equal spans, LanguageBind's video input),
`txt` (the caption) and `json` (id, source files, duration, split, frame times). Clips that cannot be used
are skipped with the reason, and listed in `skipped.jsonl` next to the shards.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ...triergon_core.audio import load_audio, write_audio
from ...triergon_core.config import SAMPLE_RATE
from ...triergon_core.video import probe_video, read_frames
from .manifest import Clip, read_manifest
from .shards import ShardWriter, npy_bytes, safe_key

logger = logging.getLogger(__name__)

VIDEO_FRAMES = 8  # LanguageBind's frames per clip


@dataclass
class PackReport:
    written: int = 0
    seconds: float = 0.0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (clip id, why)
    shards: list[Path] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"packed {self.written} clips ({self.seconds / 60:.1f} min of audio) into {len(self.shards)} "
                 f"shard(s); skipped {len(self.skipped)}"]
        lines += [f"  skipped {cid}: {why}" for cid, why in self.skipped[:20]]
        if len(self.skipped) > 20:
            lines.append(f"  ... and {len(self.skipped) - 20} more (see skipped.jsonl)")
        return "\n".join(lines)


def _frame_size(height: int, width: int, short_side: int) -> tuple[int, int]:
    scale = short_side / min(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


def pack_clip(clip: Clip, *, fps: float, short_side: int, min_seconds: float, bits: int) -> dict[str, bytes]:
    """One clip's shard members; raises ValueError / OSError with the reason when it cannot be used."""
    if not clip.video.is_file():
        raise FileNotFoundError(f"video not found: {clip.video}")
    info = probe_video(clip.video)
    source = clip.audio or clip.video
    if clip.audio is None and not info.has_audio:
        raise ValueError("the video has no audio track and the manifest gives no `audio`")
    audio = load_audio(source, duration=info.duration)
    seconds = audio.shape[-1] / SAMPLE_RATE
    if seconds < min_seconds:
        raise ValueError(f"{seconds:.2f} s is shorter than the minimum of {min_seconds:g} s")
    size = _frame_size(info.height, info.width, short_side)
    frames = read_frames(clip.video, fps=fps, size=size, end=seconds)
    vframes = read_frames(clip.video, num_frames=VIDEO_FRAMES, size=size, end=seconds)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_audio(Path(tmp) / "a.flac", audio, sample_rate=SAMPLE_RATE, bits=bits)
        flac = path.read_bytes()
    meta = {"id": clip.id, "video": str(clip.video), "audio": str(source), "split": clip.split,
            "seconds": seconds, "fps": fps, "frame_times": frames.times.tolist(), "sample_rate": SAMPLE_RATE}
    return {"flac": flac, "frames.npy": npy_bytes(frames.frames.numpy()),
            "vframes.npy": npy_bytes(vframes.frames.numpy()), "txt": clip.caption.encode("utf-8"),
            "json": json.dumps(meta).encode("utf-8")}


def pack_manifest(manifest: str | os.PathLike, output: str | os.PathLike, *, split: str | None = None,
                  fps: float = 6.0, short_side: int = 224, min_seconds: float = 0.5, bits: int = 16,
                  max_samples: int = 1000, progress: Callable[[int, int], None] | None = None) -> PackReport:
    """Pack the clips of `manifest` (optionally one split) into shards in `output`.

    Args:
        manifest: the JSONL manifest.
        output: the shard folder (created).
        split: only clips of this split (default: all).
        fps: frame rate of `frames.npy` (6: T_LUFS's rate).
        short_side: frames are scaled so that their short side has this many pixels.
        min_seconds: shorter clips are skipped.
        bits: FLAC bit depth (16 or 24).
        max_samples: samples per shard.
        progress: called as progress(done, total).
    """
    clips = read_manifest(manifest, split=split)
    report = PackReport()
    out = Path(output).expanduser()
    with ShardWriter(out, max_samples=max_samples) as writer:
        for i, clip in enumerate(clips):
            try:
                members = pack_clip(clip, fps=fps, short_side=short_side, min_seconds=min_seconds, bits=bits)
            except (ValueError, OSError) as e:  # VideoError / AudioError are ValueErrors
                report.skipped.append((clip.id, str(e).splitlines()[0]))
                logger.warning("skipping clip %s: %s", clip.id, e)
            else:
                writer.write(safe_key(clip.id), members)
                report.written += 1
                report.seconds += json.loads(members["json"])["seconds"]
            if progress is not None:
                progress(i + 1, len(clips))
        report.shards = list(writer.paths)
    with open(out / "skipped.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"id": cid, "reason": why}) + "\n" for cid, why in report.skipped)
    return report
