"""ComfyUI's core `VIDEO` type, and a stand-in with the same interface for use without ComfyUI.

ComfyUI's `VIDEO` values are `comfy_api` `VideoInput`s: `VideoFromFile` (a file or a BytesIO) and
`VideoFromComponents` (frames `[T, H, W, 3]`, a `Fraction` frame rate, optional AUDIO). Each has
`get_components()`, `get_duration()`, `get_dimensions()`, `save_to(path, format, codec, metadata)`, and the file
kind `get_stream_source()`. The nodes make `VideoFromFile`s (so core `SaveVideo` copies our muxed streams as they
are) and read any `VideoInput` by its stream source, or by its components when it has none.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from .host import comfy

logger = logging.getLogger(__name__)


@dataclass
class Components:
    """What `get_components()` returns (as comfy_api's `VideoComponents`)."""

    images: torch.Tensor
    frame_rate: Fraction
    audio: Any = None
    metadata: dict | None = None


class FileVideo:
    """A video file as ComfyUI's `VideoFromFile` presents it; used when comfy_api is not importable."""

    def __init__(self, file: str | os.PathLike) -> None:
        self._file = str(file)

    def get_stream_source(self) -> str:
        return self._file

    def get_duration(self) -> float:
        from ..triergon_core.video import probe_video

        return probe_video(self._file).duration

    def get_dimensions(self) -> tuple[int, int]:
        from ..triergon_core.video import probe_video

        info = probe_video(self._file)
        return info.width, info.height

    def get_container_format(self) -> str:
        import av

        with av.open(self._file) as container:
            return container.format.name

    def get_components(self) -> Components:
        """Every frame at full size (what comfy_api does; the nodes never call this on files)."""
        from ..triergon_core.audio import load_audio
        from ..triergon_core.video import probe_video, read_frames

        info = probe_video(self._file)
        frames = read_frames(self._file, fps=info.fps)
        audio = None
        if info.has_audio:
            audio = {"waveform": load_audio(self._file)[None], "sample_rate": 44100}
        return Components(frames.to_float(), Fraction(info.fps).limit_denominator(1001), audio)

    def save_to(self, path: str | os.PathLike, format: str = "auto", codec: str = "auto",
                metadata: dict | None = None) -> None:
        format, codec = getattr(format, "value", format), getattr(codec, "value", codec)  # enums or strings
        if format not in ("auto", "mp4") or codec not in ("auto", "h264"):
            raise ValueError("this stand-in VIDEO only copies its file (format and codec 'auto')")
        shutil.copyfile(self._file, path)

    def __repr__(self) -> str:
        return f"FileVideo({self._file!r})"


def video_from_file(path: str | os.PathLike) -> Any:
    """A core `VIDEO` for a file: comfy_api's `VideoFromFile` when ComfyUI is present, else `FileVideo`."""
    for module, attr in (("comfy_api.latest", "InputImpl"), ("comfy_api.input_impl", None)):
        mod = comfy(module)
        impl = getattr(mod, attr, None) if attr else mod
        if impl is not None and hasattr(impl, "VideoFromFile"):
            return impl.VideoFromFile(str(path))
    return FileVideo(path)


def stream_source(video: Any) -> str | io.BytesIO | None:
    """The file (or bytes) behind a `VIDEO`, or None when it only has components."""
    getter = getattr(video, "get_stream_source", None)
    if getter is None:
        return None
    if type(video).__name__ == "VideoFromComponents":  # its default stream source re-encodes every frame
        return None
    return getter()


def components(video: Any) -> tuple[torch.Tensor, Fraction]:
    """(frames [T, H, W, 3] in [0, 1], frame rate) of a `VIDEO` that only has components."""
    parts = video.get_components()
    return parts.images, Fraction(parts.frame_rate)


def check_video(video: Any) -> None:
    if not (hasattr(video, "get_components") or hasattr(video, "get_stream_source")):
        raise ValueError(f"expected a VIDEO (e.g. from Load Video), got {type(video).__name__}")


def file_of(source: str | io.BytesIO, folder: Path) -> Path:
    """A path for a stream source; bytes are written to `folder` once (named by their content)."""
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    import hashlib

    data = source.getvalue()
    path = folder / f"video_{hashlib.sha256(data).hexdigest()[:20]}.mp4"
    if not path.exists():
        tmp = path.with_suffix(".part")
        tmp.write_bytes(data)
        tmp.replace(path)
    return path
