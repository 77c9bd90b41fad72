"""Conversions between ComfyUI's media values (VIDEO, IMAGE + fps, AUDIO) and what `triergon_core` takes.

Frame rates travel as `Fraction`s: an `fps` float such as 29.97 or VideoHelperSuite's 29.970029970029973 becomes
30000/1001, so durations are exact at any rate. Inputs are never changed in place (ComfyUI caches and shares
node outputs): every conversion makes new tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import torch

from ..triergon_core.audio import load_audio
from ..triergon_core.cache import tensor_digest
from ..triergon_core.config import SAMPLE_RATE
from ..triergon_core.video import exact_fps, probe_video
from .host import temp_directory
from .video_type import check_video, components, file_of, stream_source

logger = logging.getLogger(__name__)


def fps_fraction(fps: float | Fraction) -> Fraction:
    """The exact rate meant by an `fps` input (see `video.exact_fps`: 29.97 -> 30000/1001); a Fraction (a core
    VIDEO's rate) is already exact."""
    if isinstance(fps, Fraction):
        return fps
    try:
        return exact_fps(fps)
    except ValueError as e:
        raise ValueError(f"{e}; give the frames' real rate (e.g. VideoHelperSuite's loaded_fps)") from None


@dataclass(frozen=True)
class VideoIn:
    """A video input resolved to a file (`path`) or to frames with their rate (`frames`, `fps`)."""

    duration: float
    path: Path | None = None
    frames: torch.Tensor | None = None  # [T, H, W, 3] in [0, 1]
    fps: Fraction | None = None

    def as_file(self) -> Path:
        """A file holding the video (frames are encoded once into the temp folder, named by their content)."""
        if self.path is not None:
            return self.path
        assert self.frames is not None and self.fps is not None
        path = temp_directory() / f"frames_{tensor_digest(self.frames).hex()[:20]}_{self.fps.numerator}_" \
                                  f"{self.fps.denominator}.mp4"
        if not path.exists():
            write_frames(self.frames, self.fps, path)
        return path


def resolve_video(video: Any = None, images: torch.Tensor | None = None, fps: float | None = None,
                  ) -> VideoIn | None:
    """A node's video inputs (a core VIDEO, or IMAGE frames with an fps) as a `VideoIn`; None when none is given.

    Frames without a positive fps are refused: a guessed rate would desynchronise the audio.
    """
    if video is not None:
        check_video(video)
        source = stream_source(video)
        if source is None:
            frames, rate = components(video)
            return _frames(frames, rate)
        path = file_of(source, temp_directory())
        return VideoIn(probe_video(path).duration, path=path)
    if images is None:
        return None
    if fps is None or not fps or fps <= 0:
        raise ValueError("IMAGE frames need their frame rate: connect the fps input (VideoHelperSuite's "
                         "loaded_fps, or Get Video Components' fps) or type the rate; frames alone are refused")
    return _frames(images, fps_fraction(fps))


def _frames(frames: torch.Tensor, fps: Fraction) -> VideoIn:
    if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or frames.shape[-1] != 3 or frames.shape[0] < 1:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"expected IMAGE frames [frames, height, width, 3], got {shape}")
    return VideoIn(float(frames.shape[0] / fps), frames=frames, fps=fps)


def write_frames(frames: torch.Tensor, fps: Fraction, path: Path) -> Path:
    """Encode IMAGE frames as H.264 at exactly `fps` (time base 1 / fps, frame i at i / fps); odd sizes are padded
    by one edge row / column for 4:2:0."""
    t, h, w, _ = frames.shape
    ph, pw = h + h % 2, w + w % 2
    tmp = path.with_name(path.name + ".part.mp4")
    with av.open(str(tmp), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = pw, ph, "yuv420p"
        stream.options = {"crf": "12", "preset": "veryfast"}
        for i in range(t):
            rgb = (frames[i].detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            if (ph, pw) != (h, w):
                rgb = np.pad(rgb, ((0, ph - h), (0, pw - w), (0, 0)), mode="edge")
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, 1 / fps
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    tmp.replace(path)
    return path


# --- AUDIO ---------------------------------------------------------------------------------------------------


def audio_waveform(audio: Any, what: str = "audio") -> tuple[torch.Tensor, int]:
    """(waveform [B, C, N] float32 on the CPU, sample rate) of an AUDIO: a dict or any Mapping (VideoHelperSuite
    passes a lazy Mapping) with "waveform" and "sample_rate"."""
    if not isinstance(audio, Mapping) or "waveform" not in audio or "sample_rate" not in audio:
        raise ValueError(f"{what} must be an AUDIO ({{'waveform': [batch, channels, samples], 'sample_rate': Hz}}), "
                         f"got {type(audio).__name__}")
    wave, rate = audio["waveform"], audio["sample_rate"]
    wave = torch.as_tensor(wave)
    if wave.dim() == 2:
        wave = wave[None]
    if wave.dim() != 3 or wave.shape[-1] == 0:
        raise ValueError(f"{what}: waveform must be [batch, channels, samples] with samples, got {tuple(wave.shape)}")
    return wave.detach().float().cpu(), int(rate)


def audio_stereo(audio: Any, *, take: int = 0, what: str = "audio") -> torch.Tensor:
    """Take `take` of an AUDIO as stereo float32 [2, N] at 44.1 kHz (any rate and channel count in; new memory)."""
    wave, rate = audio_waveform(audio, what)
    if not 0 <= take < wave.shape[0]:
        raise ValueError(f"{what} holds {wave.shape[0]} take(s); choose an index from 0 to {wave.shape[0] - 1}")
    return load_audio(wave[take], sample_rate=rate)


def audio_output(wave: torch.Tensor) -> dict:
    """Our [B, 2, N] audio as ComfyUI's AUDIO: float32 on the CPU at 44.1 kHz."""
    return {"waveform": wave.detach().float().cpu().contiguous(), "sample_rate": SAMPLE_RATE}


def file_audio(path: Path) -> dict | None:
    """The audio track of a media file as AUDIO, or None when it has none (a silent video)."""
    if not probe_video(path).has_audio:
        return None
    return audio_output(load_audio(path)[None])
