"""Small test videos made with PyAV, with each frame's index written into its pixels."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# The index is written as 3 base-8 digits in 3 vertical stripes of solid grey (24 + 29 * digit): 29 grey
# levels between digits survive YUV conversion, lossy coding and resizing; decoded from each stripe's middle.
_BASE, _LOW, _STEP = 8, 24, 29
MAX_INDEX = _BASE**3 - 1


def index_image(index: int, height: int, width: int) -> np.ndarray:
    """An RGB uint8 `[height, width, 3]` image showing `index` (0..511) as three grey stripes."""
    digits = (index // _BASE**2, index // _BASE % _BASE, index % _BASE)
    image = np.empty((height, width, 3), np.uint8)
    edges = np.linspace(0, width, 4).round().astype(int)
    for digit, a, b in zip(digits, edges[:-1], edges[1:], strict=True):
        image[:, a:b] = _LOW + _STEP * digit
    return image


def read_index(image: np.ndarray) -> int:
    """The index shown by an `index_image` (after coding/resizing), from the middle of each stripe."""
    image = np.asarray(image, dtype=np.float64)
    height, width = image.shape[:2]
    edges = np.linspace(0, width, 4)
    digits = []
    for a, b in itertools.pairwise(edges):
        margin_x, margin_y = (b - a) / 4, height / 4
        patch = image[int(margin_y):int(height - margin_y), int(a + margin_x):int(b - margin_x)]
        digits.append(int(np.clip(round((patch.mean() - _LOW) / _STEP), 0, _BASE - 1)))
    return digits[0] * _BASE**2 + digits[1] * _BASE + digits[2]


def write_video(
    path: Path,
    *,
    fps: Fraction | int = 25,
    num_frames: int | None = None,
    pts: Sequence[int] | None = None,
    time_base: Fraction | None = None,
    size: tuple[int, int] = (48, 64),
    codec: str = "libx264",
    image: Callable[[int, int, int], np.ndarray] = index_image,
    rotation: float | None = None,
    display_matrix: Sequence[int] | None = None,
    audio: bool = False,
    gop: int | None = None,
    options: dict[str, str] | None = None,
    container_format: str | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Write a video whose frame i shows `image(i, height, width)`.

    Args:
        path: output file (the extension picks the container unless `container_format`).
        fps: the frame rate (constant frame rate: frame i at i / fps).
        num_frames: frame count for constant frame rate.
        pts: explicit timestamps in `time_base` units instead (variable frame rate).
        time_base: the stream's time base for `pts`.
        size: (height, width).
        codec: encoder; libx264 is lossless (qp 0) unless `options` say otherwise, mpeg4 uses qscale 2.
        image: frame painter (index, height, width) -> RGB uint8.
        rotation: display rotation in degrees counter-clockwise (written as a display matrix).
        display_matrix: the 9 integers of a display matrix to write as they are (e.g. all zero).
        audio: also write a 1 kHz stereo AAC track covering the video.
        gop: keyframe interval.
        options: encoder options.
        container_format: ffmpeg muxer name (e.g. "h264" for a raw elementary stream).
        container_options: muxer options (e.g. {"movflags": "faststart"}).
    """
    height, width = size
    if pts is None:
        assert num_frames is not None
        pts = list(range(num_frames))
        time_base = 1 / Fraction(fps)
    assert time_base is not None
    with av.open(str(path), "w", format=container_format, options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=Fraction(fps))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream.codec_context.time_base = time_base
        if gop is not None:
            stream.gop_size = gop
        defaults = {"libx264": {"preset": "ultrafast", "qp": "0"}, "mpeg4": {"qscale": "2"}}
        stream.options = options if options is not None else defaults.get(codec, {})
        if codec == "mpeg4" and options is None:
            stream.codec_context.qscale = 2
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if display_matrix is not None:
            stream.set_display_matrix(list(display_matrix))
        sound = container.add_stream("aac", rate=44100, layout="stereo") if audio else None
        for i, p in enumerate(pts):
            frame = av.VideoFrame.from_ndarray(image(i, height, width), format="rgb24")
            frame.pts, frame.time_base = p, time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if sound is not None:
            seconds = float((pts[-1] + 1) * time_base)
            t = np.arange(int(seconds * 44100)) / 44100
            tone = (0.1 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
            for offset in range(0, len(tone), 1024):
                chunk = np.ascontiguousarray(np.stack([tone[offset:offset + 1024]] * 2))
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate, frame.pts = 44100, offset
                for packet in sound.encode(frame):
                    container.mux(packet)
            for packet in sound.encode():
                container.mux(packet)
    return path


def write_wav(path: Path, seconds: float = 0.5) -> Path:
    """A silent mono 16-bit WAV (a file with no video stream)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, int(16000 * seconds)), np.int16), format="s16",
                                           layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    return path


def write_audio_only_mkv(path: Path) -> Path:
    """A Matroska file with a video stream that holds no frames (next to a short audio stream)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=25)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        sound = container.add_stream("pcm_s16le", rate=16000, layout="mono")
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 8000), np.int16), format="s16", layout="mono")
        frame.sample_rate, frame.pts = 16000, 0
        for packet in [*sound.encode(frame), *sound.encode(), *video.encode()]:
            container.mux(packet)
    return path
