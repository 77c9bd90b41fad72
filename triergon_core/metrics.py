"""Evaluation metrics.

- Loudness control: how well generated audio follows a requested LUFS curve (`lufs_tracking`), and whether it
  sits on the requested side of the stereo image (`stereo_placement`). Both compare a requested `LufsCurve`
  with a measured one (or with audio, measured here with `LufsCurve.measure`). The two curves must have the
  same rate; their lengths may differ by one frame (a measured clip of d seconds has ceil-or-round(d * rate)
  frames), and the longer one is trimmed.
- Audio-visual synchrony: `av_align` (AV-Align, Yariv et al. 2024), on frames and audio or on files.
- Distributions: `frechet_distance` between two sets of embeddings and `kl_divergence` between paired class
  probabilities, both from an `audio_embedders` embedder.

AV-Align needs OpenCV and librosa, the `eval` extra; they are imported when it runs.
"""

from __future__ import annotations

import importlib
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from types import ModuleType

import numpy as np
import torch

from .audio import load_audio
from .lufs_curve import LufsCurve
from .video import exact_fps, probe_video, read_frames

__all__ = ["StereoPlacement", "Tracking", "audio_onsets", "av_align", "av_align_file", "flow_energy",
           "frechet_distance", "gaussian_frechet_distance", "kl_divergence", "lufs_tracking", "peak_iou",
           "stereo_placement"]

_EXTRA = {"cv2": "opencv-python-headless", "librosa": "librosa"}
ONSET_RATE = 22050  # librosa.load's default rate, at which the AV-Align reference detects onsets


@dataclass(frozen=True)
class Tracking:
    """Per-channel LUFS tracking: mean absolute error in LU, Pearson correlation (NaN when either curve is
    constant over the frames used), and how many frames were used."""

    mae: tuple[float, ...]
    correlation: tuple[float, ...]
    frames: tuple[int, ...]


@dataclass(frozen=True)
class StereoPlacement:
    """Share of the frames with a clear requested side (|L - R| > threshold) whose measured L - R has the same
    sign (NaN when there is no such frame), and how many frames were counted."""

    accuracy: float
    frames: int


def _pair(requested: LufsCurve, measured: LufsCurve | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(measured, LufsCurve):
        measured = LufsCurve.measure(torch.as_tensor(measured, dtype=torch.float32), rate=requested.rate)
    if measured.rate != requested.rate:
        raise ValueError(f"the curves have different rates ({requested.rate:g} and {measured.rate:g} frames/s); "
                         "resample one with `with_rate`")
    if requested.channels != measured.channels:
        raise ValueError(f"the curves have different channels ({requested.channels} and {measured.channels})")
    a, b = requested.values.double().numpy(), measured.values.double().numpy()
    if abs(a.shape[1] - b.shape[1]) > 1:
        raise ValueError(f"the requested curve has {a.shape[1]} frames and the measured one {b.shape[1]}; "
                         "they must cover the same duration (fit one with `fit_duration`)")
    n = min(a.shape[1], b.shape[1])
    return a[:, :n], b[:, :n]


def lufs_tracking(requested: LufsCurve, measured: LufsCurve | torch.Tensor, *, floor: float = -60.0) -> Tracking:
    """Per-channel MAE (LU) and Pearson correlation between a requested and a measured loudness curve, over
    the frames where the request is above `floor` LUFS (quieter requests mean "silence", where the measured
    level is arbitrary).

    Args:
        requested: the curve the audio was asked to follow.
        measured: the audio's curve, or the audio itself ([2, samples] at 44.1 kHz).
        floor: frames whose requested value is at or below this are left out, per channel.
    """
    want, got = _pair(requested, measured)
    mae, corr, frames = [], [], []
    for w, g in zip(want, got, strict=True):
        keep = w > floor
        w, g = w[keep], g[keep]
        frames.append(int(keep.sum()))
        mae.append(float(np.abs(w - g).mean()) if len(w) else math.nan)
        corr.append(_pearson(w, g))
    return Tracking(mae=tuple(mae), correlation=tuple(corr), frames=tuple(frames))


def stereo_placement(requested: LufsCurve, measured: LufsCurve | torch.Tensor, *,
                     threshold: float = 6.0) -> StereoPlacement:
    """Share of frames where the sign of L - R loudness matches the request, over the frames where the
    requested L and R differ by more than `threshold` LU.

    Args:
        requested: a stereo curve (L, R).
        measured: the audio's stereo curve, or the audio itself ([2, samples] at 44.1 kHz).
        threshold: the smallest requested |L - R| (LU) that counts as a side.
    """
    requested.require_stereo()
    want, got = _pair(requested, measured)
    want_diff, got_diff = want[0] - want[1], got[0] - got[1]
    keep = np.abs(want_diff) > threshold
    if not keep.any():
        return StereoPlacement(accuracy=math.nan, frames=0)
    hits = np.sign(got_diff[keep]) == np.sign(want_diff[keep])
    return StereoPlacement(accuracy=float(hits.mean()), frames=int(keep.sum()))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2:
        return math.nan
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else math.nan


def _extra(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"AV-Align needs {_EXTRA[module]}, which is missing: pip install 'triergon[eval]'") from e


def flow_energy(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mean optical-flow magnitude (pixels) into each frame: `[T]` for uint8 RGB frames `[T, H, W, 3]`.

    Entry k > 0 is OpenCV's Farneback flow from frame k - 1 to frame k (pyramid scale 0.5, 3 levels, 15-pixel
    window, 3 iterations, poly_n 5, poly_sigma 1.2), averaged over the picture; entry 0 repeats entry 1, as in
    the AV-Align reference.
    """
    cv2 = _extra("cv2")
    frames = np.asarray(frames.cpu() if isinstance(frames, torch.Tensor) else frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) < 2:
        raise ValueError(f"frames must be uint8 RGB [frames, height, width, 3] with at least 2 frames, got "
                         f"{frames.dtype} {tuple(frames.shape)}")
    gray = [cv2.cvtColor(np.ascontiguousarray(f), cv2.COLOR_RGB2GRAY) for f in frames]
    energy = np.empty(len(gray))
    for k in range(1, len(gray)):
        flow = cv2.calcOpticalFlowFarneback(gray[k - 1], gray[k], None, 0.5, 3, 15, 3, 5, 1.2, 0)
        energy[k] = float(np.hypot(flow[..., 0], flow[..., 1]).mean())
    energy[0] = energy[1]
    return energy


def audio_onsets(audio: np.ndarray | torch.Tensor, sample_rate: int) -> np.ndarray:
    """Onset times (seconds) of `[C, N]` (or `[N]`) audio: librosa's onset detector with its defaults on the
    channel mean resampled to 22.05 kHz (what `librosa.load` gives the AV-Align reference)."""
    librosa = _extra("librosa")
    y = np.asarray(audio.cpu() if isinstance(audio, torch.Tensor) else audio, dtype=np.float32)
    if y.ndim not in (1, 2) or y.shape[-1] == 0 or not np.isfinite(y).all():
        raise ValueError(f"audio must be finite [channels, samples] or [samples], got shape {y.shape}")
    y = y.reshape(-1, y.shape[-1]).mean(0)
    if sample_rate != ONSET_RATE:
        y = librosa.resample(y, orig_sr=sample_rate, target_sr=ONSET_RATE)
    envelope = librosa.onset.onset_strength(y=y, sr=ONSET_RATE)
    onsets = librosa.onset.onset_detect(onset_envelope=envelope, sr=ONSET_RATE)
    return librosa.frames_to_time(onsets, sr=ONSET_RATE)


def peak_iou(audio_peaks: np.ndarray, video_peaks: np.ndarray, fps: float) -> float:
    """AV-Align's intersection over union of two sets of peak times (seconds).

    An audio peak is matched when some video peak lies strictly within one frame (1 / fps) of it; with m
    matched audio peaks the score is m / (len(audio_peaks) + len(video_peaks) - m). As in the authors' code, each
    audio peak is matched on its own, so two onsets within one frame of the same motion peak both count (the
    score can then exceed 1). NaN when there is no peak at all.
    """
    a, v = np.asarray(audio_peaks, float).reshape(-1), np.asarray(video_peaks, float).reshape(-1)
    if len(a) + len(v) == 0:
        return math.nan
    matched = int((np.abs(a[:, None] - v[None, :]) < 1 / fps).any(1).sum()) if len(v) else 0
    return matched / (len(a) + len(v) - matched)


def av_align(frames: np.ndarray | torch.Tensor, fps: float | int | str | Fraction,
             audio: np.ndarray | torch.Tensor, sample_rate: int) -> float:
    """AV-Align (Yariv et al. 2024): how well audio onsets coincide with peaks of motion, in [0, 1] (higher is
    better; see `peak_iou` for the rare case above 1).

    Video peaks are the strict local maxima of `flow_energy` (frame k at k / fps); audio peaks are
    `audio_onsets`; the score is `peak_iou` with a window of one frame either side.

    Args:
        frames: uint8 RGB `[T, H, W, 3]`, frame k shown at k / fps.
        fps: the frame rate (see `video.exact_fps`).
        audio: `[C, N]` float audio starting with frame 0.
        sample_rate: its rate in Hz.

    Returns:
        the score; NaN when neither the video nor the audio has a peak (a still, silent clip).
    """
    rate = float(exact_fps(fps))
    energy = flow_energy(frames)
    inner = energy[1:-1]
    peaks = np.flatnonzero((inner > energy[:-2]) & (inner > energy[2:])) + 1
    return peak_iou(audio_onsets(audio, sample_rate), peaks / rate, rate)


def av_align_file(video: str | os.PathLike, audio: str | os.PathLike | None = None) -> float:
    """`av_align` of a video file, every frame at its average frame rate, with its own audio track or the audio
    file `audio` (decoded with PyAV and brought to 22.05 kHz by `audio.load_audio`'s resampler, where the reference
    uses `librosa.load`)."""
    info = probe_video(video)
    frames = read_frames(video, fps=info.fps).frames
    sound = load_audio(video if audio is None else audio, target_rate=ONSET_RATE)
    return av_align(frames, exact_fps(info.fps), sound, ONSET_RATE)


def _matrix(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"{what} must be a finite [items, dims] array, got shape {x.shape}")
    return x


def gaussian_frechet_distance(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet distance between N(mean_a, cov_a) and N(mean_b, cov_b):
    |mean_a - mean_b|^2 + tr(cov_a) + tr(cov_b) - 2 tr((cov_a cov_b)^(1/2)).

    The trace of the matrix square root is computed as the sum of the square roots of the eigenvalues of the
    symmetric matrix S cov_b S, S = cov_a^(1/2) (the same eigenvalues as cov_a cov_b), with both
    eigendecompositions symmetric (numpy `eigh`) and round-off negatives set to 0: stable for singular
    covariances (fewer items than dimensions), where `scipy.linalg.sqrtm` of the product can turn complex.
    """
    mean_a, mean_b = np.asarray(mean_a, np.float64), np.asarray(mean_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    d = mean_a.shape[0]
    if mean_b.shape != (d,) or cov_a.shape != (d, d) or cov_b.shape != (d, d):
        raise ValueError(f"the Gaussians have different sizes: means {mean_a.shape} and {mean_b.shape}, "
                         f"covariances {cov_a.shape} and {cov_b.shape}")
    w, v = np.linalg.eigh((cov_a + cov_a.T) / 2)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = root_a @ cov_b @ root_a
    trace_root = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())
    diff = mean_a - mean_b
    return max(0.0, float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_root))


def frechet_distance(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> float:
    """Fréchet distance (FD, as FAD / FD_openl3) between Gaussian fits of two embedding sets `[N, D]` and
    `[M, D]`: their means and unbiased covariances, through `gaussian_frechet_distance`. Lower is closer; 0
    for identical sets.

    Raises:
        ValueError: fewer than 2 items in a set, different dimensions, or non-finite values.
    """
    a, b = _matrix(a, "the first embedding set"), _matrix(b, "the second embedding set")
    if len(a) < 2 or len(b) < 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"FD needs two sets of at least 2 embeddings of one size, got {a.shape} and {b.shape}")
    return gaussian_frechet_distance(a.mean(0), np.cov(a, rowvar=False).reshape(a.shape[1], -1),
                                     b.mean(0), np.cov(b, rowvar=False).reshape(b.shape[1], -1))


def kl_divergence(reference: np.ndarray | torch.Tensor, generated: np.ndarray | torch.Tensor, *,
                  mode: str = "bernoulli", eps: float = 1e-6) -> float:
    """Mean per-clip KL(reference || generated) in nats between paired class probabilities `[B, K]` (row i of
    both: the reference clip of video i and the audio generated for it), as PaSST-KL.

    Modes:
        "bernoulli" (default): each class is an independent yes/no event with probability p (what a sigmoid
            multi-label classifier such as PaSST or the SynthFoley classifier models, and the scenes of one clip
            are not exclusive): sum_k p log(p / q) + (1 - p) log((1 - p) / (1 - q)). It counts a missing
            class and a spurious one alike and does not depend on which other classes are present.
        "categorical": the rows normalised to sum 1 and sum_k p log(p / q) (the softmax reading of
            multi-label outputs some papers report; it only sees the relative weights of the classes).

    Args:
        reference, generated: probabilities in [0, 1] of the same shape `[B, K]`.
        mode: see above.
        eps: probabilities are clipped to [eps, 1 - eps] (categorical: eps, then renormalised) so that a
            confident miss costs a finite amount (about log(1 / eps)).
    """
    p, q = _matrix(reference, "the reference probabilities"), _matrix(generated, "the generated probabilities")
    if p.shape != q.shape or len(p) == 0:
        raise ValueError(f"KL needs paired probabilities of one shape, got {p.shape} and {q.shape}")
    if p.min() < 0 or p.max() > 1 or q.min() < 0 or q.max() > 1:
        raise ValueError("KL needs probabilities in [0, 1]; apply a sigmoid or softmax to logits first")
    if mode == "bernoulli":
        p, q = np.clip(p, eps, 1 - eps), np.clip(q, eps, 1 - eps)
        kl = p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))
    elif mode == "categorical":
        p, q = (np.clip(x, eps, None) for x in (p, q))
        p, q = p / p.sum(1, keepdims=True), q / q.sum(1, keepdims=True)
        kl = p * np.log(p / q)
    else:
        raise ValueError(f"mode must be 'bernoulli' or 'categorical', got {mode!r}")
    return float(kl.sum(1).mean())
