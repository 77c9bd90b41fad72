"""Video decoding by time: frame choice at CFR/VFR rates, seeking, rotation, errors, bounded memory."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from _videos import (
    index_image,
    read_index,
    write_audio_only_mkv,
    write_video,
    write_wav,
)

from triergon.triergon_core import video
from triergon.triergon_core.video import VideoError, probe_video, read_frames

RATES = [Fraction(24000, 1001), Fraction(25), Fraction(30000, 1001), Fraction(60000, 1001), Fraction(120)]


def indices(frames: torch.Tensor) -> list[int]:
    return [read_index(frame) for frame in frames.numpy()]


def on_screen(instant: Fraction, fps: Fraction) -> int:
    """Index of the CFR frame on screen at `instant` (exact arithmetic)."""
    return math.floor(instant * fps)


@pytest.fixture(scope="module")
def cfr_videos(tmp_path_factory) -> dict[Fraction, tuple[Path, int]]:
    folder = tmp_path_factory.mktemp("cfr")
    out = {}
    for fps in RATES:
        count = math.ceil(2 * fps) + 3  # ~2 s, not a whole number of 1/6 s steps
        out[fps] = write_video(folder / f"{float(fps):.3f}.mp4", fps=fps, num_frames=count), count
    return out


@pytest.mark.parametrize("fps", RATES, ids=lambda f: f"{float(f):.3f}fps")
def test_cfr_probe_duration_from_timestamps(cfr_videos, fps):
    path, count = cfr_videos[fps]
    info = probe_video(path)
    assert abs(info.duration - count / fps) < 1 / fps  # in fact exact in mp4's timescale
    assert info.fps == pytest.approx(float(fps))
    assert (info.width, info.height, info.rotation) == (64, 48, 0)
    assert not info.variable_frame_rate
    assert info.num_frames == count
    assert not info.has_audio


@pytest.mark.parametrize("fps", RATES, ids=lambda f: f"{float(f):.3f}fps")
def test_cfr_six_fps_picks_frame_on_screen(cfr_videos, fps):
    path, count = cfr_videos[fps]
    out = read_frames(path, fps=6)
    duration = Fraction(count) / fps
    assert len(out) == math.ceil(duration * 6)
    expected = [on_screen(Fraction(k, 6), fps) for k in range(len(out))]
    # Exact, boundaries included: at 25 fps t = 1 s is frame 25's own timestamp, and frame 25 is returned.
    assert indices(out.frames) == expected
    assert out.times.dtype == torch.float64
    torch.testing.assert_close(out.times, torch.arange(len(out), dtype=torch.float64) / 6)
    torch.testing.assert_close(out.source_times, torch.tensor([float(i / fps) for i in expected],
                                                             dtype=torch.float64))
    assert out.frames.shape == (len(out), 48, 64, 3) and out.frames.dtype == torch.uint8


@pytest.mark.parametrize("fps", RATES, ids=lambda f: f"{float(f):.3f}fps")
def test_cfr_num_frames_segment_centres(cfr_videos, fps):
    path, count = cfr_videos[fps]
    out = read_frames(path, num_frames=8)
    duration = Fraction(count) / fps
    centres = [(i + Fraction(1, 2)) * duration / 8 for i in range(8)]
    torch.testing.assert_close(out.times, torch.tensor([float(c) for c in centres], dtype=torch.float64))
    assert indices(out.frames) == [on_screen(c, fps) for c in centres]


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_vfr_frame_on_screen_by_timestamp(tmp_path, ext):
    # Irregular gaps (1 ms multiples so Matroska's 1 ms clock stores them exactly), in a 1/90000 time base.
    ms = [0, 20, 35, 180, 190, 400, 410, 415, 800, 1100]
    path = write_video(tmp_path / f"vfr.{ext}", fps=30, pts=[m * 90 for m in ms], time_base=Fraction(1, 90000))
    info = probe_video(path)
    assert info.variable_frame_rate
    assert ms[-1] / 1000 < info.duration < ms[-1] / 1000 + 0.2  # last pts + the last frame's duration

    def expected(t: float) -> int:
        return max(i for i, m in enumerate(ms) if m <= t * 1000 + 1e-6)

    for out in (read_frames(path, fps=6), read_frames(path, num_frames=8)):
        assert indices(out.frames) == [expected(t) for t in out.times.tolist()]
        torch.testing.assert_close(out.source_times, torch.tensor([ms[expected(t)] / 1000 for t in out.times.tolist()],
                                                                  dtype=torch.float64))
    # Explicit instants, unordered, on and around frame timestamps; returned in the given order.
    times = [0.4, 0.0, 0.179, 0.18, 0.181, 0.0349, 1.1, 0.9, 0.41]
    out = read_frames(path, times=times)
    assert indices(out.frames) == [expected(t) for t in times]
    assert out.times.tolist() == times


@pytest.mark.parametrize("ext", ["mp4", "mkv"])
def test_long_vfr_end_found_by_seeking(tmp_path, ext):
    # More packets than the probe scans from the start: the end comes from a seek to the last keyframe.
    gaps = np.random.default_rng(0).integers(10, 60, 400)
    ms = [0, *np.cumsum(gaps).tolist()]
    path = write_video(tmp_path / f"vfr.{ext}", fps=30, pts=[m * 90 for m in ms], time_base=Fraction(1, 90000),
                       gop=50)
    info = probe_video(path)
    assert info.variable_frame_rate
    assert ms[-1] / 1000 < info.duration < ms[-1] / 1000 + 0.1
    out = read_frames(path, fps=6)
    assert len(out) == math.ceil(info.duration * 6)
    assert indices(out.frames) == [max(i for i, m in enumerate(ms) if m <= k * 1000 / 6) % 512
                                   for k in range(len(out))]


def test_cfr_probe_is_not_vfr_in_millisecond_clock(tmp_path):
    # 29.97 fps in Matroska's 1 ms clock alternates 33/34 ms steps: rounding, not a variable rate.
    info = probe_video(write_video(tmp_path / "a.mkv", fps=Fraction(30000, 1001), num_frames=40))
    assert not info.variable_frame_rate
    assert abs(info.duration - 40 * 1001 / 30000) < 1001 / 30000


@pytest.mark.parametrize(("ext", "gop"), [("mp4", 15), ("mkv", 15), ("mp4", 150), ("mkv", 150)])
def test_seeking_gives_the_same_frames(tmp_path, monkeypatch, ext, gop):
    # 12 s at 30 fps with B-frames, a keyframe every 0.5 s or 5 s: sparse instants make read_frames seek
    # (with long GOPs some seeks would land behind the decoder: the index, or the landing, stops those).
    fps = Fraction(30)
    path = write_video(tmp_path / f"gop.{ext}", fps=fps, num_frames=360, gop=gop,
                       options={"preset": "veryfast", "crf": "8", "bframes": "2", "sc_threshold": "0"})
    times = [0.05, 3.3, 3.35, 11.9, 7.77, 6.0, 9.99, 2.5, 11.95]
    requests = [{"times": times}, {"fps": 0.25}, {"num_frames": 5}, {"fps": 2, "start": 9.0}]
    with_seek = [read_frames(path, **r) for r in requests]
    monkeypatch.setattr(video, "_SEEK_AHEAD_S", math.inf)
    without = [read_frames(path, **r) for r in requests]
    # The exact instants meant (12 s clip): the library compares float instants with a 1 us tolerance, so the
    # float centre 3.5999999999999996 s still gets frame 108, on screen from 3.6 s.
    exact = [[Fraction(repr(t)) for t in times], [Fraction(4 * k) for k in range(3)],
             [(i + Fraction(1, 2)) * 12 / 5 for i in range(5)], [9 + Fraction(k, 2) for k in range(6)]]
    for a, b, instants in zip(with_seek, without, exact, strict=True):
        assert torch.equal(a.frames, b.frames)
        assert torch.equal(a.source_times, b.source_times)
        assert indices(a.frames) == [on_screen(t, fps) for t in instants]
        if gop == 15:
            assert a.decoded_frames < b.decoded_frames  # seeking skipped decoding
    assert sum(a.decoded_frames for a in with_seek) < sum(b.decoded_frames for b in without)


def test_start_end_and_clipping(cfr_videos):
    fps = Fraction(25)
    path, count = cfr_videos[fps]
    out = read_frames(path, fps=6, start=0.5, end=1.5)
    torch.testing.assert_close(out.times, 0.5 + torch.arange(6, dtype=torch.float64) / 6)
    assert indices(out.frames) == [on_screen(Fraction(1, 2) + Fraction(k, 6), fps) for k in range(6)]
    # An end past the video is clipped to its end.
    clipped = read_frames(path, fps=6, start=1.0, end=100.0)
    assert clipped.times.max() < count / 25 and len(clipped) == math.ceil((count / 25 - 1.0) * 6)
    centres = read_frames(path, num_frames=2, start=1.0, end=2.0)
    torch.testing.assert_close(centres.times, torch.tensor([1.25, 1.75], dtype=torch.float64))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"fps": 6, "num_frames": 8}, "exactly one"),
        ({"fps": 6, "times": [0.1]}, "exactly one"),
        ({"fps": 0}, "fps must be"),
        ({"fps": -6}, "fps must be"),
        ({"fps": float("nan")}, "fps must be"),
        ({"fps": 6, "start": 1.5, "end": 1.0}, "before end"),
        ({"fps": 6, "start": 5.0}, "before end"),
        ({"fps": 6, "start": -1.0}, "start must be"),
        ({"num_frames": 0}, "num_frames must be"),
        ({"num_frames": 2.5}, "num_frames must be"),
        ({"times": []}, "empty"),
        ({"times": [-0.1]}, "within the video"),
        ({"times": [0.5, 9.0]}, "within the video"),
        ({"times": [0.5], "start": 0.2}, "drop start/end"),
        ({"fps": 6, "size": (0, 10)}, "size must be"),
        ({"fps": 6, "size": (224,)}, "size must be"),
    ],
)
def test_bad_arguments(cfr_videos, kwargs, match):
    path, _ = cfr_videos[Fraction(25)]
    with pytest.raises(ValueError, match=match):
        read_frames(path, **kwargs)


def test_size_and_float_layout(cfr_videos):
    path, _ = cfr_videos[Fraction(30000, 1001)]
    out = read_frames(path, times=torch.tensor([0.5, 1.0]), size=(30, 90))
    assert out.frames.shape == (2, 30, 90, 3)
    assert indices(out.frames) == [14, 29]  # the index stripes survive the stretch
    image = out.to_float()
    assert image.dtype == torch.float32 and image.shape == (2, 30, 90, 3)
    assert image.min() >= 0.0 and image.max() <= 1.0
    torch.testing.assert_close(image, out.frames.float() / 255)


def corner_image(index: int, height: int, width: int) -> np.ndarray:
    """Black with a white top-left quadrant: shows where the stored picture's top-left ends up."""
    image = np.zeros((height, width, 3), np.uint8)
    image[: height // 2, : width // 2] = 255
    return image


@pytest.mark.parametrize(
    ("degrees", "corner"),
    # Counter-clockwise display rotation (ffmpeg's display matrix convention, PyAV's VideoFrame.rotation):
    # turning the picture 90 degrees counter-clockwise brings its top-left corner to the bottom-left.
    [(0, "top-left"), (90, "bottom-left"), (-90, "top-right"), (180, "bottom-right")],
)
def test_rotation_frames_come_out_upright(tmp_path, degrees, corner):
    path = write_video(tmp_path / "rot.mp4", fps=25, num_frames=5, size=(48, 64), image=corner_image,
                       rotation=degrees)
    info = probe_video(path)
    assert info.rotation == degrees
    upright = (64, 48) if degrees in (90, -90) else (48, 64)
    assert (info.height, info.width) == upright
    for size in (None, (40, 20)):
        out = read_frames(path, times=[0.1], size=size)
        frame = out.frames[0].float().mean(-1).numpy()
        assert frame.shape == (size or upright)
        h, w = frame.shape
        quadrants = {"top-left": frame[: h // 2, : w // 2], "top-right": frame[: h // 2, w // 2:],
                     "bottom-left": frame[h // 2:, : w // 2], "bottom-right": frame[h // 2:, w // 2:]}
        brightest = max(quadrants, key=lambda q: quadrants[q].mean())
        assert brightest == corner and quadrants[corner].mean() > 200


def test_rotate_tag_fallback():
    # Files muxed by older ffmpeg carry a clockwise `rotate` tag instead of a display matrix on the frames.
    class Frame:
        rotation = 0

    class Stream:
        metadata = {"rotate": "90"}  # noqa: RUF012

    assert video._rotation(Frame(), Stream(), Path("x.mp4")) == -90


def test_all_zero_display_matrix_means_no_rotation(tmp_path, caplog):
    # Some muxers write an all-zero matrix; ffmpeg reads no rotation from it (PyAV reports INT_MIN degrees).
    path = write_video(tmp_path / "zero.mp4", fps=25, num_frames=5, size=(48, 64), image=corner_image,
                       display_matrix=[0] * 9)
    with caplog.at_level(logging.WARNING, logger=video.__name__):
        info = probe_video(path)
        frame = read_frames(path, times=[0.1]).frames[0].float().mean(-1)
    assert (info.rotation, info.height, info.width) == (0, 48, 64)
    assert frame.shape == (48, 64) and frame[:24, :32].mean() > 200  # the lit corner stays top-left
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_rotation_warning_appears_once_per_file(tmp_path, caplog):
    odd = write_video(tmp_path / "odd.mp4", fps=25, num_frames=5, rotation=30.0)
    other = write_video(tmp_path / "other.mp4", fps=25, num_frames=5, rotation=30.0)
    with caplog.at_level(logging.WARNING, logger=video.__name__):
        for _ in range(2):  # as one `generate` run does: probe, then read for each consumer
            assert probe_video(odd).rotation == 0
            read_frames(odd, num_frames=2)
            read_frames(other, fps=6)
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(messages) == 2, messages  # PyAV reads the stored matrix back as 29 degrees
    for path, message in zip((odd, other), messages, strict=True):
        assert message.startswith(f"{path}: display rotation 29.0 degrees is not a multiple of 90; using 0")


def test_has_audio(tmp_path):
    with_audio = write_video(tmp_path / "a.mp4", fps=25, num_frames=25, audio=True)
    assert probe_video(with_audio).has_audio
    assert not probe_video(write_video(tmp_path / "b.mp4", fps=25, num_frames=25)).has_audio
    assert indices(read_frames(with_audio, fps=6).frames) == [on_screen(Fraction(k, 6), 25) for k in range(6)]


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_frames(tmp_path / "nope.mp4", fps=6)
    with pytest.raises(VideoError, match="is a directory"):
        probe_video(tmp_path)


def test_not_a_video(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(VideoError, match="cannot open"):
        read_frames(text, fps=6)
    with pytest.raises(VideoError, match="has no video stream"):
        read_frames(write_wav(tmp_path / "sound.wav"), fps=6)


def test_video_stream_without_frames(tmp_path):
    with pytest.raises(VideoError, match="no decodable video frame"):
        probe_video(write_audio_only_mkv(tmp_path / "empty.mkv"))


def test_truncated_before_first_frame(tmp_path):
    path = write_video(tmp_path / "a.mkv", fps=25, num_frames=25, size=(96, 128))
    data = path.read_bytes()
    cluster = data.index(b"\x1f\x43\xb6\x75")  # Matroska Cluster id: the frames follow
    path.write_bytes(data[: cluster + 40])  # complete headers, the first frame cut short
    with pytest.raises(VideoError, match="no decodable video frame"):
        read_frames(path, fps=6)


def test_raw_stream_without_timestamps_is_refused(tmp_path):
    path = write_video(tmp_path / "raw.h264", fps=30, num_frames=10, container_format="h264")
    with pytest.raises(VideoError, match=r"no frame timestamps.*-framerate"):
        read_frames(path, fps=6)


def test_timestamps_out_of_order_are_refused(tmp_path):
    # AVI stores no presentation times: with B-frames the decoded frames' pts come out scrambled.
    path = write_video(tmp_path / "b.avi", fps=25, num_frames=20,
                       options={"preset": "medium", "crf": "10", "bframes": "3"})
    with pytest.raises(VideoError, match="out of presentation order"):
        read_frames(path, fps=6)


def one_warning(caplog) -> logging.LogRecord:
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    return warnings[0]


def test_truncated_in_the_middle_decodes_what_is_there(tmp_path, caplog):
    path = write_video(tmp_path / "a.mkv", fps=25, num_frames=100, codec="mpeg4", gop=10)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger=video.__name__):
        out = read_frames(path, fps=6, end=4.0)
    one_warning(caplog)
    got = indices(out.frames)
    assert got[:6] == [on_screen(Fraction(k, 6), 25) for k in range(6)]  # the first second is intact
    assert got == sorted(got) and got[-1] < 100


def test_truncated_mp4(tmp_path, caplog):
    # Index at the front (faststart): the frames before the cut decode, and the shortfall is reported.
    path = write_video(tmp_path / "fast.mp4", fps=25, num_frames=100, codec="mpeg4", gop=10,
                       container_options={"movflags": "faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with caplog.at_level(logging.WARNING, logger=video.__name__):
        info = probe_video(path)
    assert "truncated" in one_warning(caplog).getMessage()
    assert 1.0 < info.duration < 3.0
    got = indices(read_frames(path, fps=6).frames)
    assert got == [on_screen(Fraction(k, 6), 25) for k in range(len(got))]
    # Index at the end (ffmpeg's default): a cut loses the index, nothing can be placed in time.
    path = write_video(tmp_path / "plain.mp4", fps=25, num_frames=100, codec="mpeg4", gop=10)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(VideoError, match="cannot open"):
        read_frames(path, fps=6)


def test_garbage_in_the_middle_decodes_what_is_valid(tmp_path, caplog):
    path = write_video(tmp_path / "a.mp4", fps=25, num_frames=100, codec="mpeg4", gop=10)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 3000] = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger=video.__name__):
        out = read_frames(path, fps=6)
    assert "damaged" in one_warning(caplog).getMessage()
    got = indices(out.frames)
    expected = [on_screen(Fraction(k, 6), 25) for k in range(len(out))]
    assert len(out) == 24 and got[:6] == expected[:6] and got[-3:] == expected[-3:]


MEMORY_SCRIPT = r"""
import json, sys
from triergon.triergon_core.video import read_frames

def kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1])

def peak_increase(path):
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    before = kib("VmRSS")
    out = read_frames(path, fps=6, size=(224, 224))
    return {"frames": len(out), "rss_before_kib": before, "peak_kib": kib("VmHWM"),
            "increase_kib": kib("VmHWM") - before}

short, long_ = sys.argv[1:]
read_frames(short, fps=6, size=(224, 224))  # warm-up: codec, threads, allocator pools
print(json.dumps({"short": peak_increase(short), "long": peak_increase(long_)}))
"""


def write_big(path: Path, seconds: float, *, width: int = 2560, height: int = 1440, fps: int = 15) -> Path:
    """A fast-to-make high-resolution video: a bright block moving over grey, written as YUV directly."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        luma = np.empty((height, width), np.uint8)
        chroma = np.full(width * height // 4, 128, np.uint8)
        for i in range(int(seconds * fps)):
            luma[:] = 60
            x = (i * 37) % (width - 200)
            luma[100:300, x : x + 200] = 200
            frame = av.VideoFrame(width, height, "yuv420p")
            frame.planes[0].update(luma)
            frame.planes[1].update(chroma)
            frame.planes[2].update(chroma)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux /proc/self/clear_refs")
def test_memory_bounded_for_long_high_resolution_video(tmp_path):
    short = write_big(tmp_path / "short.mp4", 2)
    long_ = write_big(tmp_path / "long.mp4", 20)
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(short), str(long_)], capture_output=True,
                            text=True, timeout=120, check=True)
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    print(json.dumps(stats))
    assert stats["long"]["frames"] == 120 and stats["short"]["frames"] == 12
    # The long read may grow by its larger output (108 extra 224x224 frames, 16 MB) plus 32 MiB of slack;
    # decoding all 300 frames at 2560x1440 RGB would take 3.3 GB, a tenth of the frames 330 MB.
    output_extra_kib = (120 - 12) * 224 * 224 * 3 // 1024
    assert stats["long"]["increase_kib"] <= stats["short"]["increase_kib"] + output_extra_kib + 32 * 1024


def test_index_pattern_round_trip():
    assert [read_index(index_image(i, 12, 30)) for i in (0, 7, 8, 63, 64, 511)] == [0, 7, 8, 63, 64, 511]
