"""Video input: decode with PyAV at the real timestamps, then sample frames BY TIME for each consumer.

No frame rate is ever assumed. Time 0 is the first frame's presentation time; a frame is on screen from its
timestamp until the next frame's, and `read_frames` returns, per requested instant, the frame on screen then
(the last frame whose pts <= the instant), so CFR (23.976, 29.97, 59.94, ...) and VFR video stay in sync with
the audio timeline. Consumers ask for instants: `fps=6` (LUFS predictor), `num_frames=8` (LanguageBind), times.

- Duration: from timestamps, the end of the last frame (largest pts + its packet duration, or the median frame
  interval when the container stores none) minus the first frame's pts; metadata only if that is unusable.
- Rotation: PyAV 18 exposes no stream side data, but decoded frames carry the display matrix
  (`VideoFrame.rotation`, degrees counter-clockwise); the old clockwise `rotate` tag is the fallback. Frames
  come out upright; mirroring display matrices are not handled.
- Damage part-way (undecodable packets, truncation): the valid frames are used, instants without a good frame
  show the last good one, and one warning says so. No decodable frame at all is a VideoError.
- No timestamps (raw .h264/.mjpeg streams, whose demuxer invents 25 fps; frames without pts) or timestamps out
  of presentation order (AVI with B-frames): VideoError saying how to remux/re-encode, as guessing a rate is
  exactly what desynchronises the audio.
- Bounded memory: one frame is decoded at a time, only selected frames are converted (resized by swscale as
  they are converted), and far-apart instants are reached by seeking to the keyframe before them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

logger = logging.getLogger(__name__)

__all__ = ["MAX_FPS", "VideoError", "VideoFrames", "VideoInfo", "exact_fps", "probe_video", "read_frames"]

# Seek when the next instant is this far (s) past the last decoded frame; nearer, decoding on is cheaper than
# restarting at a keyframe. Results are identical either way.
_SEEK_AHEAD_S = 2.0
# Instants within 1 us before a frame's timestamp count as at it, so float rounding of k/fps or of segment
# centres never picks the previous frame at an exact boundary.
_EPS_S = 1e-6
_AVFMT_NOTIMESTAMPS = 0x80  # demuxer flag of raw elementary streams: their timestamps are made up
_SCAN_PACKETS = 256  # packets read from the start to measure frame intervals (VFR detection)
_MAX_THREADS = 8  # frame threading keeps a frame per thread in flight: more threads buy little, cost memory
_BIG_OUTPUT_BYTES = 4 << 30
_TRUNCATION_S = 0.5  # frames ending this much before the stream's declared duration: a truncated file
_WARNED: set[tuple[str, str]] = set()  # (file, message) pairs already warned about in this process

_Spans = list[tuple[int, int]]  # (pts, duration) per packet


MAX_FPS = 1000.0


def exact_fps(value: float | int | str | Fraction) -> Fraction:
    """An exact frame rate: 24, 25.0, "30000/1001", or the NTSC decimals 23.976 / 29.97 / 59.94 (also as the float
    29.970029970029973) read as 24000/1001, 30000/1001, 60000/1001; other rates as the nearest fraction with a
    denominator up to 1001. Frame counts divided by it give exact durations.

    Raises:
        ValueError: not a number, or not in (0, MAX_FPS].
    """
    try:
        fps = Fraction(value) if not isinstance(value, float) else Fraction(str(value))
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"frame rate {value!r} is not a number; give e.g. 24, 29.97 or 30000/1001") from None
    if not 0 < fps <= MAX_FPS:
        raise ValueError(f"frame rate {value!r} must be positive and at most {MAX_FPS:g} frames per second")
    ntsc = fps * Fraction(1001, 1000)
    if fps.denominator != 1 and abs(ntsc - round(ntsc)) < Fraction(1, 1000):
        return Fraction(round(ntsc) * 1000, 1001)
    return fps.limit_denominator(1001)


class VideoError(ValueError):
    """A video input or option the user has to fix (the message says what is wrong and what to change)."""


@dataclass(frozen=True)
class VideoInfo:
    """The first video stream of a file, as `probe_video` finds it."""

    path: str
    duration: float  # seconds from the first frame's timestamp to the end of the last frame
    width: int  # of the upright picture (after rotation)
    height: int
    rotation: int  # degrees counter-clockwise the stored picture is turned for display: 0, 90, 180 or -90
    fps: float  # average frame rate, informational only: nothing is sampled by it
    variable_frame_rate: bool  # frame intervals differ by more than the rounding of the container's clock
    num_frames: int | None  # when cheaply known (container index or a full packet scan)
    has_audio: bool
    start_time: float  # the first frame's timestamp on the container's timeline, in seconds (time 0 here)


@dataclass
class VideoFrames:
    """Frames sampled at requested instants."""

    frames: torch.Tensor  # uint8 [T, H, W, 3] RGB, upright
    times: torch.Tensor  # float64 [T]: the requested instants in seconds (0 = first frame)
    source_times: torch.Tensor  # float64 [T]: the timestamp of the frame used for each instant
    info: VideoInfo
    decoded_frames: int = 0  # diagnostics: seeking keeps this low for sparse reads of long videos

    def __len__(self) -> int:
        return self.frames.shape[0]

    def to_float(self) -> torch.Tensor:
        """The frames as float32 `[T, H, W, 3]` in [0, 1] (ComfyUI IMAGE layout)."""
        return self.frames.to(torch.float32).div_(255.0)


@dataclass(frozen=True)
class _Timing:
    first_pts: int
    last_pts: int  # largest packet pts the probe saw: decoding should get there
    time_base: Fraction
    problems: tuple[str, ...]  # damage the probe ran into


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe a file's first video stream: duration from timestamps, upright size, rotation, frame rate.

    Decodes only the first frame and demuxes the packets near the start and the end.

    Args:
        path: a video file (anything ffmpeg demuxes with real timestamps: mp4, mov, mkv, webm, avi, ...).

    Raises:
        FileNotFoundError: the file does not exist.
        VideoError: a directory, not a video, no video stream, no decodable frame, or no usable timestamps.
    """
    info, timing = _probe(Path(path))
    if timing.problems:
        _warn_once(path, "%s is damaged (%s)", path, "; ".join(dict.fromkeys(timing.problems)))
    return info


def read_frames(
    path: str | os.PathLike[str],
    *,
    times: Sequence[float] | np.ndarray | torch.Tensor | None = None,
    fps: float | None = None,
    num_frames: int | None = None,
    size: tuple[int, int] | None = None,
    start: float = 0.0,
    end: float | None = None,
) -> VideoFrames:
    """Return the frames on screen at chosen instants (seconds from the first frame): resampling by time.

    Exactly one of `times`, `fps`, `num_frames` picks the instants; for each, the frame returned is the last
    one whose timestamp is <= the instant.

    Args:
        path: the video file.
        times: explicit instants in [0, duration], in any order (returned in the given order).
        fps: instants start, start + 1/fps, ... before `end`: ceil((end - start) * fps) of them (6 for the LUFS
            predictor: frame k at k/6 s).
        num_frames: n instants at the centres of n equal segments of [start, end], start + (i + 0.5) * (end -
            start) / n (e.g. LanguageBind's 8 frames spread over the clip, none at the very edges).
        size: `(height, width)` of the returned frames: the upright picture is stretched to it while it is
            converted (aspect ratio not kept: crop afterwards if needed). None: the upright size.
        start: start of the span for `fps` / `num_frames`, in seconds.
        end: end of that span (None: the video's end). An end past the video's end is clipped to it (logged at
            INFO): callers often pass a nominal length that overshoots the video by a fraction of a frame.

    Raises:
        FileNotFoundError: the file does not exist.
        VideoError (a ValueError): bad options (not exactly one of times / fps / num_frames, fps <= 0, start >=
            end, instants outside the video, bad size) or a file that `probe_video` refuses.
    """
    chosen = [name for name, value in (("times", times), ("fps", fps), ("num_frames", num_frames))
              if value is not None]
    if len(chosen) != 1:
        raise VideoError(f"pass exactly one of times=, fps=, num_frames= to choose the instants, got "
                         f"{chosen or 'none'}")
    if size is not None and (len(size) != 2 or any(int(v) != v or v <= 0 for v in size)):
        raise VideoError(f"size must be (height, width) in positive whole pixels, got {size!r}")
    path = Path(path)
    info, timing = _probe(path)
    instants = _instants(info.duration, times=times, fps=fps, num_frames=num_frames, start=start, end=end)
    out_hw = (int(size[0]), int(size[1])) if size is not None else (info.height, info.width)
    nbytes = len(instants) * out_hw[0] * out_hw[1] * 3
    if nbytes > _BIG_OUTPUT_BYTES:
        logger.warning("%d frames of %dx%d take %.1f GiB; pass size=(height, width) to read smaller frames",
                       len(instants), out_hw[1], out_hw[0], nbytes / 2**30)
    frames = np.empty((len(instants), *out_hw, 3), np.uint8)
    source = np.empty(len(instants), np.float64)
    with _open(path) as (container, stream):
        stream.codec_context.thread_type = "AUTO"
        stream.codec_context.thread_count = min(_MAX_THREADS, os.cpu_count() or 1)
        try:
            decoded = _decode_at(container, stream, instants, timing, info.rotation, frames, source, path)
        except av.FFmpegError as err:
            raise VideoError(f"cannot decode {str(path)!r} ({err}); the file may be damaged: re-encode it or "
                             "pass another file") from err
    logger.debug("read %d frames of %s (%d decoded)", len(instants), path, decoded)
    return VideoFrames(torch.from_numpy(frames), torch.from_numpy(instants), torch.from_numpy(source), info,
                       decoded)


@contextlib.contextmanager
def _open(path: Path) -> Iterator[tuple[av.container.InputContainer, av.video.stream.VideoStream]]:
    """Open `path`, yield (container, first video stream); ffmpeg failures become VideoError."""
    if not path.exists():
        raise FileNotFoundError(f"video file not found: {str(path)!r}")
    if path.is_dir():
        raise VideoError(f"{str(path)!r} is a directory; pass the path of a video file")
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise VideoError(f"cannot open {str(path)!r} as a video ({err}); pass a complete video file (mp4, mov, "
                         "mkv, webm, avi, ...)") from err
    try:
        if not container.streams.video:
            raise VideoError(f"{str(path)!r} has no video stream (streams: "
                             f"{[s.type for s in container.streams] or 'none'}); pass a file with a video track")
        if container.format.flags & _AVFMT_NOTIMESTAMPS:
            raise _no_timestamps(path, f"it is a raw {container.format.name} stream without a container")
        yield container, container.streams.video[0]
    finally:
        container.close()


def _no_timestamps(path: Path, why: str) -> VideoError:
    return VideoError(f"{str(path)!r} has no frame timestamps ({why}), so its frames cannot be placed in time "
                      "without guessing the frame rate; put it in a container with its true rate, e.g. "
                      f"`ffmpeg -framerate <fps> -i {path.name} -c copy {path.stem}.mp4`")


def _packets(container, stream, problems: list[str]) -> Iterator[av.Packet]:
    """Demux `stream`; a read error ends the stream (noted in `problems`) instead of raising."""
    demux = container.demux(stream)
    while True:
        try:
            yield next(demux)
        except StopIteration:
            return
        except av.FFmpegError as err:
            problems.append(f"reading stopped at a damaged or truncated part ({err})")
            return


def _spans(container, stream, problems: list[str]) -> _Spans:
    return [(p.pts, p.duration or 0) for p in _packets(container, stream, problems) if p.pts is not None]


def _probe(path: Path) -> tuple[VideoInfo, _Timing]:
    problems: list[str] = []
    with _open(path) as (container, stream):
        tb = stream.time_base
        first, spans, at_eof = None, [], True
        for packet in _packets(container, stream, problems):
            if packet.pts is not None:
                spans.append((packet.pts, packet.duration or 0))
            if first is None:
                try:
                    decoded = packet.decode()
                except av.FFmpegError:
                    continue  # damaged data before the first good frame
                first = decoded[0] if decoded else None
            if first is not None and len(spans) >= _SCAN_PACKETS:
                at_eof = False
                break
        if first is None:
            raise VideoError(f"{str(path)!r} contains no decodable video frame (empty, or damaged before the "
                             "first frame); pass a complete video file")
        if first.pts is None:
            raise _no_timestamps(path, "its frames carry no presentation time")
        steps = np.diff(np.unique([pts for pts, _ in spans]))
        step = int(np.median(steps)) if len(steps) else 0
        tail: _Spans = []
        if not at_eof:  # the packets from the last keyframe on: seek to "infinity"
            with contextlib.suppress(av.FFmpegError):  # no seeking: read every packet below
                container.seek(2**62, stream=stream, backward=True)
                tail = _spans(container, stream, problems)
        rotation = _rotation(first, stream, path)
        width, height = (first.height, first.width) if rotation in (90, -90) else (first.width, first.height)
        declared = _declared_duration(stream)
        container_end = container.duration / av.time_base if container.duration else None
        count, fps_avg, has_audio = stream.frames or None, stream.average_rate, bool(container.streams.audio)
    if not at_eof and (not tail or max(tail)[0] < max(spans)[0]):
        with _open(path) as (container, stream):  # could not seek to the end: read every packet
            spans, at_eof = _spans(container, stream, problems), True
    if at_eof:
        tail, count = spans, len(spans)
    end_pts = max((pts + (dur or step) for pts, dur in tail), default=None)
    if end_pts is not None and end_pts > first.pts:
        duration = float((end_pts - first.pts) * tb)
    elif declared or container_end:
        duration = declared or container_end
        _warn_once(path, "%s: no usable packet timestamps; duration %.3f s taken from metadata", path, duration)
    else:
        raise VideoError(f"{str(path)!r} has a single frame and no duration information; pass a real video")
    if declared and duration < declared - _TRUNCATION_S:
        problems.append(f"it looks truncated: the stream declares {declared:.3f} s but its frames end at "
                        f"{duration:.3f} s")
    # Steps that differ by more than the rounding of the container's clock (2 ticks: 29.97 fps in a 1 ms
    # clock alternates 33/34 ms), or a whole-file average unlike the start's.
    vfr = len(steps) >= 2 and int(steps.max() - steps.min()) > max(2, 0.01 * step)
    if count and len(steps) >= 2:
        mean_step = float(steps.mean() * tb)
        vfr = vfr or abs(duration / count - mean_step) > 0.01 * mean_step + float(tb)
    fps = float(fps_avg) if fps_avg else (float(1 / (step * tb)) if step else 0.0)
    fps = count / duration if vfr and count else fps  # a VFR header's rate may be nominal (Matroska)
    info = VideoInfo(str(path), duration, width, height, rotation, fps, vfr, count, has_audio,
                     float(first.pts * tb))
    return info, _Timing(first.pts, max(tail, default=(first.pts, 0))[0], tb, tuple(problems))


def _declared_duration(stream) -> float | None:
    """The video stream's own declared duration (mp4 index, Matroska DURATION tag), or None. Not the
    container's: that also covers audio, which may legitimately run longer."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    try:  # "HH:MM:SS.nnnnnnnnn", written by ffmpeg's Matroska muxer
        hours, minutes, seconds = stream.metadata.get("DURATION", "").split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except ValueError:
        return None


def _rotation(frame: av.VideoFrame, stream, path: Path) -> int:
    """Counter-clockwise display rotation, rounded to a multiple of 90 degrees."""
    degrees = float(frame.rotation or 0)
    if not -180 <= degrees <= 180:
        # A display matrix without a rotation in it (all zero, as some muxers write, or a zero column): ffmpeg's
        # av_display_rotation_get returns NaN, which PyAV hands over as INT_MIN. ffmpeg then does not rotate.
        logger.debug("%s: degenerate display matrix (%g); no rotation", path, degrees)
        degrees = 0.0
    if not degrees and stream.metadata.get("rotate"):
        with contextlib.suppress(ValueError):  # an unreadable tag means no rotation
            degrees = -float(stream.metadata["rotate"])  # the old tag is clockwise
    rounded = {0: 0, 1: 90, 2: 180, 3: -90}[round(degrees / 90) % 4]
    if abs(degrees - 90 * round(degrees / 90)) > 1:
        _warn_once(path, "%s: display rotation %.1f degrees is not a multiple of 90; using %d", path, degrees,
                   rounded)
    return rounded


def _warn_once(path: Path | str, message: str, *args) -> None:
    """Logs a warning about a file once per process: one run probes and decodes a video several times."""
    key = (os.path.abspath(path), message % args)
    if key not in _WARNED:
        _WARNED.add(key)
        logger.warning(message, *args)


def _instants(duration: float, *, times, fps, num_frames, start: float, end: float | None) -> np.ndarray:
    """The requested instants in seconds (float64), checked against the video's duration."""
    if times is not None:
        if start != 0.0 or end is not None:
            raise VideoError("start=/end= set the span for fps= or num_frames=; times= are absolute, so drop "
                             "start/end")
        arr = times.detach().cpu().numpy() if isinstance(times, torch.Tensor) else np.asarray(times)
        arr = arr.astype(np.float64).reshape(-1)
        if arr.size == 0:
            raise VideoError("times= is empty; pass at least one instant in seconds")
        bad = arr[~np.isfinite(arr) | (arr < 0) | (arr > duration + _EPS_S)]
        if bad.size:
            raise VideoError(f"times must lie within the video, [0, {duration:.6g}] s; got {bad[:5].tolist()}")
        return arr
    if not (math.isfinite(start) and start >= 0):
        raise VideoError(f"start must be a finite number of seconds >= 0, got {start}")
    if end is None or end > duration:
        if end is not None:
            logger.info("end=%.6g s is past the video's end (%.6g s); using the video's end", end, duration)
        end = duration
    if not start < end:
        raise VideoError(f"start ({start:.6g} s) must be before end ({end:.6g} s); the video lasts "
                         f"{duration:.6g} s")
    span = end - start
    if fps is not None:
        if not (math.isfinite(fps) and fps > 0):
            raise VideoError(f"fps must be a positive number of frames per second, got {fps}")
        count = max(1, math.ceil(span * fps - 1e-9))  # 1e-9: 10 s at 6 fps is 60 instants, not 61
        return start + np.arange(count, dtype=np.float64) / fps
    if isinstance(num_frames, bool) or int(num_frames) != num_frames or num_frames < 1:
        raise VideoError(f"num_frames must be a whole number >= 1, got {num_frames!r}")
    return start + (np.arange(int(num_frames), dtype=np.float64) + 0.5) * (span / int(num_frames))


def _keyframe_after(stream, first_pts: int, after_pts: int, until_pts: int) -> bool | None:
    """Whether the container's index (mp4 sample table; Matroska loads cues late) has a keyframe shown in
    (after_pts, until_pts]; None when it cannot tell. Index timestamps are decode times, early by the B-frame
    delay (estimated from the first entry); a wrong answer only costs speed, never a wrong frame."""
    entries = stream.index_entries
    if len(entries) < 2:
        return None
    delay = max(0, first_pts - entries[0].timestamp)
    k = entries.search_timestamp(until_pts - delay, backward=True)
    return None if k < 0 else entries[k].timestamp + delay > after_pts


def _decode_at(container, stream, instants: np.ndarray, timing: _Timing, rotation: int, frames: np.ndarray,
               source: np.ndarray, path: Path) -> int:
    """Fill frames[j] / source[j] with the frame on screen at instants[j]; return the number decoded.

    Decodes in order, keeping only the candidate (latest frame not after the next instant); a frame is
    converted only when an instant selects it.
    """
    tb, first_pts, n = timing.time_base, timing.first_pts, len(instants)
    order = np.argsort(instants, kind="stable")
    targets = instants[order]
    out_h, out_w = frames.shape[1:3]
    scale_w, scale_h = (out_w, out_h) if rotation in (0, 180) else (out_h, out_w)  # rotated after scaling
    reformatter = VideoReformatter()
    problems = list(timing.problems)  # one warning at the end covers the probe's findings too
    i = decoded = skipped = 0
    cand = cand_rgb = None
    cand_t = prev_pts = -math.inf
    # Seeking allowed; instant last sought; next frame is the first after a seek; a seek landed behind the
    # candidate (no keyframe in between), so wait for a newer keyframe before seeking again.
    can_seek, seek_for, check_seek, wait_key = True, -1, False, False

    def take(j: int) -> None:
        nonlocal cand_rgb
        if cand_rgb is None:
            rgb = reformatter.reformat(cand, width=scale_w, height=scale_h, format="rgb24").to_ndarray()
            cand_rgb = np.rot90(rgb, k=rotation // 90) if rotation else rgb
        frames[order[j]], source[order[j]] = cand_rgb, cand_t

    packets = _packets(container, stream, problems)
    while i < n and (packet := next(packets, None)) is not None:
        try:
            output = packet.decode()
        except av.FFmpegError:
            skipped += 1  # undecodable packet: the previous frame stays on screen
            continue
        for frame in output:
            decoded += 1
            if frame.pts is None:
                raise _no_timestamps(path, f"frame {decoded} carries no presentation time")
            if frame.pts < prev_pts:
                raise VideoError(f"{str(path)!r} has frame timestamps out of presentation order (typical of AVI "
                                 "files with B-frames), so frames cannot be placed in time; re-encode it, e.g. "
                                 f"`ffmpeg -i {path.name} -c:v libx264 -crf 18 {path.stem}.mp4`")
            prev_pts, t = frame.pts, float((frame.pts - first_pts) * tb)
            wait_key = wait_key and not (frame.key_frame and not check_seek)
            if check_seek:  # first frame after a seek: it must not be past the instant sought
                check_seek, wait_key = False, t <= cand_t
                if t > targets[i] + _EPS_S:
                    logger.debug("%s: seek overshot (%.3f > %.3f s); decoding on without seeking", path, t,
                                 targets[i])
                    can_seek, prev_pts = False, -math.inf
                    container.seek(cand.pts if cand is not None else first_pts, stream=stream, backward=True)
                    packets = _packets(container, stream, problems)
                    break
            if t <= cand_t:
                continue  # re-decoded after a seek, or a repeated timestamp: already considered
            while cand is not None and i < n and targets[i] + _EPS_S < t:  # `cand` was on screen until t
                take(i)
                i += 1
            cand, cand_t, cand_rgb = frame, t, None
        ahead = targets[i] - (cand_t if cand is not None else 0.0) if i < n else 0.0
        if can_seek and not wait_key and seek_for != i and ahead > _SEEK_AHEAD_S:
            seek_for, target_pts = i, first_pts + int(targets[i] / tb)
            if _keyframe_after(stream, first_pts, cand.pts if cand is not None else first_pts, target_pts) is False:
                continue  # the index shows no keyframe in between: the seek would land behind us
            check_seek, prev_pts = True, -math.inf
            try:  # to the keyframe at or before the next instant
                container.seek(target_pts, stream=stream, backward=True)
            except av.FFmpegError as err:
                logger.debug("%s: cannot seek (%s); decoding on", path, err)
                can_seek = check_seek = False
            packets = _packets(container, stream, problems)
    if cand is None:
        raise VideoError(f"{str(path)!r}: no video frame could be decoded; the file is damaged")
    if i < n and cand.pts < timing.last_pts:
        problems.append(f"decoding ended at {cand_t:.3f} s though packets go on to "
                        f"{float((timing.last_pts - first_pts) * tb):.3f} s")
    while i < n:  # past the last decoded frame: it stays on screen
        take(i)
        i += 1
    if skipped:
        problems.insert(0, f"{skipped} packets could not be decoded")
    if problems:
        _warn_once(path, "%s is damaged (%s); instants without a good frame show the last good one", path,
                   "; ".join(dict.fromkeys(problems)))
    return decoded
