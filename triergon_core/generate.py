"""`generate`: conditions in, stereo 44.1 kHz audio of an exact length out.

Three stages, as the design asks: `prepare_conditions` encodes the inputs once (reused across sampling
steps and across runs, e.g. ComfyUI re-executions), `sample_latents` runs the DiT sampler with CFG, and the
VAE decodes in overlapping windows.
"""

from __future__ import annotations

import contextlib
import os

import torch

from .audio import load_audio
from .cache import CachedEncoders, EmbeddingCache
from .conditioning import Conditions
from .encoders import ConditionEncoders, build_encoders
from .lufs_curve import LufsCurve
from .model import TriErgon
from .sampling import GuidedDenoiser, StepCallback, sample
from .vae import ProgressFn


def initial_noise(model: TriErgon, *, seconds: float, seed: int, batch_size: int,
                  device: torch.device) -> torch.Tensor:
    """Latent noise [batch, latent_dim, frames]; item i is drawn with seed + i, so a batch is a set of
    variations and item 0 equals the single-item result."""
    frames = model.config.sequence.latent_frames(seconds)
    shape = (model.config.vae.latent_dim, frames)
    draws = [torch.randn(shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(batch_size)]
    return torch.stack(draws).to(device)


def prepare_conditions(model: TriErgon, *, seconds: float, text: str | None = None,
                       audio: torch.Tensor | str | os.PathLike | None = None,
                       video: torch.Tensor | str | os.PathLike | None = None,
                       lufs: LufsCurve | torch.Tensor | None = None, lufs_fit: str = "error",
                       encoders: ConditionEncoders | None = None, cache: EmbeddingCache | None = None,
                       ) -> Conditions:
    """Encode the given inputs once into `Conditions` (batch of one; `Conditions.repeat` widens it).

    Args:
        model: the model the conditions are for (its preset fixes sizes and the window).
        seconds: output duration (seconds_total; seconds_start is 0 at inference).
        text: a prompt for e_L.
        audio: reference audio for e_A: a file path, or a tensor [channels, samples] at 44.1 kHz.
        video: for e_V: a video file (frames read by timestamps), or frames [T, H, W, 3] in [0, 1].
        lufs: loudness curve (a `LufsCurve`, or a tensor [2, frames] in LUFS, left/right, at 6 frames/s).
        lufs_fit: what to do when the curve does not cover `seconds` exactly: "error" (default), "resample",
            "pad", "trim" or "pad_or_trim" (see `LufsCurve.fit_duration`).
        encoders: condition encoders; default: the ones the preset carries (the tiny preset's random towers).
        cache: an embedding cache; inputs seen before (same content, same encoders) are not re-encoded.
    """
    seq = model.config.sequence
    seq.check_seconds(seconds)
    requested = [name for name, value in (("text", text), ("audio", audio), ("video", video)) if value is not None]
    if encoders is None and requested:  # building the preset's towers costs an import: only when needed
        encoders = build_encoders(model.config.conditioning)
    if requested and encoders is None:
        raise ValueError(
            f"{' / '.join(requested)} conditioning needs LanguageBind towers for preset {model.config.name!r}: "
            "give their folder with `--languagebind DIR` (Python: `encoders=load_languagebind(DIR)`); "
            "the `tiny` preset carries its own random towers"
        )
    if encoders is not None and cache is not None:
        encoders = CachedEncoders(encoders, identity=encoders.identity, cache=cache)
    param = next(model.conditioner.parameters())
    embeddings: dict[str, torch.Tensor] = {}
    with torch.inference_mode():
        if text is not None:
            embeddings["text"] = encoders.encode_text([text])
        if audio is not None:
            wave = load_audio(audio) if isinstance(audio, (str, os.PathLike)) else audio
            embeddings["audio"] = encoders.encode_audio(wave[None])
        if isinstance(video, (str, os.PathLike)):
            embeddings["video"] = encoders.encode_video_file(video)
        elif video is not None:
            embeddings["video"] = encoders.encode_video(video[None])
    curve = None
    if lufs is not None:
        if not isinstance(lufs, LufsCurve):
            lufs = LufsCurve(lufs, rate=seq.lufs_rate)
        curve = lufs.require_stereo().with_rate(seq.lufs_rate).fit_duration(seconds, policy=lufs_fit)
        curve = curve.to_normalized()[None]
    timing = {"seconds_start": torch.zeros(1), "seconds_total": torch.tensor([float(seconds)])}
    return Conditions(**timing, lufs=curve, **embeddings).to(param.device)


def video_duration(model: TriErgon, video: torch.Tensor | str | os.PathLike | None,
                   video_fps: float | None) -> float:
    """The duration to generate for a video: a file's from its stream timestamps, frames' from their rate.
    A video longer than the preset's window is an error naming the limit."""
    if isinstance(video, (str, os.PathLike)):
        from .video import probe_video

        seconds = probe_video(video).duration
    elif video is not None and video_fps is not None:
        seconds = video.shape[0] / video_fps
    else:
        raise ValueError("give `seconds`, or a video (a file, or frames with video_fps) to take the duration from")
    limit = model.config.sequence.max_seconds
    if seconds > limit:
        raise ValueError(f"the video is {seconds:.2f} s long, longer than the {limit:g} s window of preset "
                         f"{model.config.name!r}; trim it to {limit:g} s or less (long-form generation comes later)")
    return seconds


DTYPES = ("float32", "bfloat16", "float16")


def compute_dtype(model: TriErgon, dtype: torch.dtype | str | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` ("bfloat16", torch.float16, ...) on the model's device; None or the weights' own
    dtype: no autocast. Timestep features, rotary angles, softmax statistics and the sampler's state stay
    float32 either way."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
        dtype = getattr(torch, dtype)
    param = next(model.dit.parameters())
    if dtype is None or dtype == param.dtype:
        return contextlib.nullcontext()
    if dtype not in (torch.bfloat16, torch.float16):
        raise ValueError(f"dtype {dtype} needs weights in that dtype (build_model / load_checkpoint dtype=); "
                         "autocast runs bfloat16 or float16")
    return torch.autocast(param.device.type, dtype=dtype)


@torch.inference_mode()
def sample_latents(model: TriErgon, conditions: Conditions, noise: torch.Tensor, *, steps: int = 100,
                   cfg_scale: float = 7.0, sampler: str = "dpmpp-2m", callback: StepCallback | None = None,
                   dtype: torch.dtype | str | None = None) -> torch.Tensor:
    """Denoise `noise` [B, latent_dim, frames] under `conditions` (batch B) into clean latents; the DiT runs
    under autocast to `dtype` when given (see `compute_dtype`). The latents are float32."""
    assert conditions.batch_size == noise.shape[0], f"{conditions.batch_size=} {noise.shape=}"
    context, global_cond = model.conditioner(conditions)
    with compute_dtype(model, dtype):
        denoiser = GuidedDenoiser(model.dit, context, global_cond, cfg_scale=cfg_scale)
        return sample(denoiser, noise, sampler=sampler, steps=steps, callback=callback)


@torch.inference_mode()
def generate(model: TriErgon, *, seconds: float | None = None, text: str | None = None,
             audio: torch.Tensor | str | os.PathLike | None = None,
             video: torch.Tensor | str | os.PathLike | None = None, video_fps: float | None = None,
             lufs: LufsCurve | torch.Tensor | None = None, lufs_fit: str = "error",
             conditions: Conditions | None = None, encoders: ConditionEncoders | None = None,
             cache: EmbeddingCache | None = None, seed: int = 0, batch_size: int = 1, steps: int = 100,
             cfg_scale: float = 7.0, sampler: str = "dpmpp-2m",
             callback: StepCallback | None = None, decode_progress: ProgressFn | None = None,
             dtype: torch.dtype | str | None = None) -> torch.Tensor:
    """Generate `batch_size` stereo clips of exactly `round(seconds * 44100)` samples.

    Args:
        model: a Tri-Ergon model (`build_model` / `load_checkpoint`).
        seconds: duration; default: the video's (a file's duration from its timestamps, or frames / video_fps
            for frames); otherwise required.
        text, audio, video, lufs, lufs_fit: the conditions (any subset); see `prepare_conditions`.
        video_fps: frame rate of `video`, to derive the duration.
        conditions: already prepared conditions (batch of one), instead of text/audio/video/lufs.
        encoders: condition encoders (default: the preset's own).
        cache: embedding cache (see `prepare_conditions`).
        seed: seed of item 0; item i uses seed + i.
        batch_size: number of variations.
        steps, cfg_scale, sampler: sampling settings (defaults: 100 steps, CFG 7, DPM-Solver++(2M)).
        callback: called after each sampling step as callback(step, steps, predicted_x0); raise to stop.
        decode_progress: called as decode_progress(done, total) over the VAE's decode windows.
        dtype: run the DiT under autocast to this dtype ("bfloat16" on a GPU: about half the time and
            memory of float32); the VAE decodes in its weights' dtype, so the audio keeps float32 precision.

    Returns:
        float32 audio [batch, 2, samples] at 44 100 Hz.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if seconds is None:
        seconds = video_duration(model, video, video_fps)
    if conditions is None:
        conditions = prepare_conditions(model, seconds=seconds, text=text, audio=audio, video=video, lufs=lufs,
                                        lufs_fit=lufs_fit, encoders=encoders, cache=cache)
    else:
        model.config.sequence.check_seconds(seconds)
    param = next(model.parameters())
    noise = initial_noise(model, seconds=seconds, seed=seed, batch_size=batch_size, device=param.device)
    latents = sample_latents(model, conditions.repeat(batch_size), noise, steps=steps, cfg_scale=cfg_scale,
                             sampler=sampler, callback=callback, dtype=dtype)
    audio_out = model.vae.decode(latents.to(param.dtype), num_samples=model.config.sequence.num_samples(seconds),
                                 progress=decode_progress)
    return audio_out.float()
