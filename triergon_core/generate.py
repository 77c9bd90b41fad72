"""`generate`: conditions in, stereo 44.1 kHz audio of an exact length out.

Three stages, as the design asks: `prepare_conditions` encodes the inputs once (reused across sampling
steps and across runs, e.g. ComfyUI re-executions), `sample_latents` runs the DiT sampler with CFG, and the
VAE decodes in overlapping windows. Every argument is checked before the first input is encoded or the first
step is sampled; `resolve_seconds`, `fit_lufs` and `resolve_encoders` need only the model's config, so a caller
(the CLI) can run them before it builds the model.
"""

from __future__ import annotations

import contextlib
import math
import os

import torch

from .audio import load_audio
from .cache import CachedEncoders, EmbeddingCache
from .checks import check_seed
from .conditioning import MODALITIES, Conditions
from .config import ModelConfig, frames_for
from .encoders import ConditionEncoders, build_encoders
from .lufs_curve import LufsCurve
from .model import TriErgon
from .sampling import GuidedDenoiser, SamplingSettings, StepCallback, check_compile, sample
from .vae import ProgressFn

Video = torch.Tensor | str | os.PathLike


def initial_noise(model: TriErgon, *, seconds: float, seed: int, batch_size: int,
                  device: torch.device) -> torch.Tensor:
    """Latent noise [batch, latent_dim, frames]; item i is drawn with seed + i, so a batch is a set of
    variations and item 0 equals the single-item result."""
    frames = model.config.sequence.latent_frames(seconds)
    shape = (model.config.vae.latent_dim, frames)
    draws = [torch.randn(shape, generator=torch.Generator().manual_seed(seed + i)) for i in range(batch_size)]
    return torch.stack(draws).to(device)


def resolve_seconds(config: ModelConfig, seconds: float | None, video: Video | None = None,
                    video_fps: float | None = None) -> float:
    """The duration to generate, checked against the preset's window: `seconds` when given, else the video's (a
    file's from its stream timestamps, frames' from video_fps). Only the generated part of a longer video is
    used, so the window limits the duration, not the video."""
    if seconds is None:
        if isinstance(video, (str, os.PathLike)):
            from .video import probe_video

            seconds = probe_video(video).duration
        elif video is not None and video_fps is not None:
            seconds = video.shape[0] / video_fps
        else:
            raise ValueError("give `seconds`, or a video (a file, or frames with video_fps) to take the duration "
                             "from")
        limit = config.sequence.max_seconds
        if seconds > limit:
            raise ValueError(f"the video is {seconds:.2f} s long, longer than the {limit:g} s window of preset "
                             f"{config.name!r}; trim it to {limit:g} s or less, or give a duration of at most "
                             f"{limit:g} s (--seconds) to use its start (long-form generation comes later)")
    config.sequence.check_seconds(seconds)
    return float(seconds)


def fit_lufs(config: ModelConfig, lufs: LufsCurve | torch.Tensor | None, seconds: float,
             lufs_fit: str = "error") -> torch.Tensor | None:
    """The normalised curve [1, 2, frames] the model takes, fitted to `seconds` (see `LufsCurve.fit_duration`).

    Args:
        config: the model's config (its LUFS frame rate).
        lufs: a `LufsCurve`, or a tensor [2, frames] in LUFS (left, right) at the model's rate; None: none.
        seconds: the output's duration.
        lufs_fit: what to do when the curve does not cover `seconds` exactly.
    """
    if lufs is None:
        return None
    rate = config.sequence.lufs_rate
    if not isinstance(lufs, LufsCurve):
        lufs = LufsCurve(lufs, rate=rate)
    return lufs.require_stereo().with_rate(rate).fit_duration(seconds, policy=lufs_fit).to_normalized()[None]


def resolve_encoders(config: ModelConfig, requested: list[str],
                     encoders: ConditionEncoders | None = None) -> ConditionEncoders | None:
    """The encoders for the `requested` modalities ("text", "audio", "video"), checked to fit the model.

    Without `encoders`, the preset's own (the tiny preset's random towers). Raises a one-line ValueError when the
    towers are missing, or when their embedding width differs from the model's conditioning width (naming
    both); `encoders.require` checks, without loading weights, that each requested tower is there.
    """
    if not requested:
        return encoders
    if encoders is None:  # building the preset's towers costs an import: only when needed
        encoders = build_encoders(config.conditioning)
    if encoders is None:
        raise ValueError(
            f"{' / '.join(requested)} conditioning needs LanguageBind towers for preset {config.name!r}: "
            "give their folder with `--languagebind DIR` (Python: `encoders=load_languagebind(DIR)`); "
            "the `tiny` preset carries its own random towers"
        )
    width, want = encoders.embed_dim, config.conditioning.embed_dim
    if width != want:
        fits = _presets_of_width(width)
        use = f"--preset {' / '.join(fits)}, or " if fits else ""
        drop = (", or leave the towers out (the tiny preset carries its own)"
                if config.conditioning.encoder == "tiny-random" else "")
        raise ValueError(f"the encoders give {width}-wide embeddings but model {config.name!r} takes {want}-wide "
                         f"conditions: use a model made for {width}-wide embeddings ({use}a checkpoint of one){drop}")
    encoders.require(requested)
    return encoders


def _presets_of_width(width: int) -> list[str]:
    from .presets import PRESETS

    return [name for name, make in PRESETS.items() if make().conditioning.embed_dim == width]


@contextlib.contextmanager
def staged(module: torch.nn.Module | ConditionEncoders | None, device: torch.device, offload: bool):
    """With `offload`, `module` (anything with `.to(device)`: a VAE, condition encoders) is on `device` for the
    block and back on the CPU after it, so that it holds no GPU memory while the DiT samples; without it (or
    with no module) nothing moves."""
    if not offload or module is None:
        yield
        return
    module.to(device)
    try:
        yield
    finally:
        module.to("cpu")


def prepare_conditions(model: TriErgon, *, seconds: float, text: str | None = None,
                       audio: torch.Tensor | str | os.PathLike | None = None, video: Video | None = None,
                       video_fps: float | None = None, lufs: LufsCurve | torch.Tensor | None = None,
                       lufs_fit: str = "error", encoders: ConditionEncoders | None = None,
                       cache: EmbeddingCache | None = None, offload: bool = False) -> Conditions:
    """Encode the given inputs once into `Conditions` (batch of one; `Conditions.repeat` widens it).

    Args:
        model: the model the conditions are for (its preset fixes sizes and the window).
        seconds: output duration (seconds_total; seconds_start is 0 at inference).
        text: a prompt for e_L.
        audio: reference audio for e_A: a file path, or a tensor [channels, samples] at 44.1 kHz.
        video: for e_V: a video file (frames read by timestamps), or frames [T, H, W, 3] in [0, 1]. Only the
            generated part is encoded: a file's first `seconds`, and with `video_fps` the frames that cover them.
        video_fps: frame rate of video frames (to keep only the first `seconds` of them).
        lufs: loudness curve (a `LufsCurve`, or a tensor [2, frames] in LUFS, left/right, at 6 frames/s).
        lufs_fit: what to do when the curve does not cover `seconds` exactly: "error" (default), "resample",
            "pad", "trim" or "pad_or_trim" (see `LufsCurve.fit_duration`).
        encoders: condition encoders; default: the ones the preset carries (the tiny preset's random towers).
        cache: an embedding cache; inputs seen before (same content, same encoders) are not re-encoded.
        offload: the encoders move to the model's device for this call and back to the CPU after it.
    """
    config = model.config
    seconds = resolve_seconds(config, seconds)
    curve = fit_lufs(config, lufs, seconds, lufs_fit)
    values = {"text": text, "audio": audio, "video": video}
    requested = [name for name in MODALITIES if values[name] is not None]
    encoders = resolve_encoders(config, requested, encoders)
    towers = encoders if requested else None  # moved only when they encode something
    if encoders is not None and cache is not None:
        encoders = CachedEncoders(encoders, identity=encoders.identity, cache=cache)
    param = next(model.conditioner.parameters())
    embeddings: dict[str, torch.Tensor] = {}
    with torch.inference_mode(), staged(towers, param.device, offload):
        if text is not None:
            embeddings["text"] = encoders.encode_text([text])
        if audio is not None:
            wave = load_audio(audio) if isinstance(audio, (str, os.PathLike)) else audio
            embeddings["audio"] = encoders.encode_audio(wave[None])
        if isinstance(video, (str, os.PathLike)):
            embeddings["video"] = encoders.encode_video_file(video, start=0.0, end=seconds)
        elif video is not None:
            frames = video if video_fps is None else video[:frames_for(seconds, video_fps)]
            embeddings["video"] = encoders.encode_video(frames[None])
    timing = {"seconds_start": torch.zeros(1), "seconds_total": torch.tensor([float(seconds)])}
    return Conditions(**timing, lufs=curve, **embeddings).to(param.device)


def check_conditions(config: ModelConfig, conditions: Conditions, seconds: float | None) -> float:
    """Check prepared conditions against the model and the duration asked for; return the duration (default:
    the one they were prepared for)."""
    if conditions.batch_size != 1:
        raise ValueError(f"conditions must be a batch of one (batch_size widens them), got {conditions.batch_size}")
    prepared = float(conditions.seconds_total[0])
    if seconds is None:
        seconds = prepared
    elif not math.isclose(seconds, prepared, rel_tol=1e-6, abs_tol=1e-6):
        raise ValueError(f"the conditions were prepared for {prepared:g} s but seconds={seconds:g}: prepare them "
                         "for the duration you generate")
    config.sequence.check_seconds(seconds)
    want = config.conditioning.embed_dim
    for name in MODALITIES:
        emb = getattr(conditions, name)
        if emb is not None and emb.shape[-1] != want:
            raise ValueError(f"the {name} condition is {emb.shape[-1]} wide but model {config.name!r} takes "
                             f"{want}-wide conditions: prepare them with encoders of that width")
    if conditions.lufs is not None and conditions.lufs.shape[-1] != config.sequence.lufs_frames(seconds):
        raise ValueError(f"the conditions' LUFS curve has {conditions.lufs.shape[-1]} frames, but {seconds:g} s "
                         f"take {config.sequence.lufs_frames(seconds)}: prepare them for this duration")
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


def sampling_settings(model: TriErgon, *, steps: int | None = None, cfg_scale: float | None = None,
                      sampler: str | None = None) -> SamplingSettings:
    """The settings a generation with `model` uses: those given, the model's own (`model.sampling`) for the rest;
    checked (errors name the setting)."""
    return model.sampling.override(steps=steps, cfg_scale=cfg_scale, sampler=sampler)


@torch.inference_mode()
def sample_latents(model: TriErgon, conditions: Conditions, noise: torch.Tensor, *,
                   steps: int | None = None, cfg_scale: float | None = None, sampler: str | None = None,
                   callback: StepCallback | None = None, dtype: torch.dtype | str | None = None,
                   compile: str | None = None) -> torch.Tensor:
    """Denoise `noise` [B, latent_dim, frames] under `conditions` (batch B) into clean latents; the DiT runs
    under autocast to `dtype` when given (see `compute_dtype`). The latents are float32.

    Args:
        steps, cfg_scale, sampler: sampling settings; each left None is the model's (`model.sampling`: its
            checkpoint's recommendation, else the paper's).
        compile: `torch.compile` mode of the sampling step (see `generate`); None: eager.
    """
    settings = sampling_settings(model, steps=steps, cfg_scale=cfg_scale, sampler=sampler)
    steps, cfg_scale, sampler = settings.steps, settings.cfg_scale, settings.sampler
    check_compile(compile)
    if conditions.batch_size != noise.shape[0]:
        raise ValueError(f"conditions are a batch of {conditions.batch_size}, the noise of {noise.shape[0]}")
    context, global_cond, frame_cond = model.conditioner(conditions)
    with compute_dtype(model, dtype):
        denoiser = GuidedDenoiser(model.dit, context, global_cond, cfg_scale=cfg_scale, frame_cond=frame_cond,
                                  compile=compile)
        return sample(denoiser, noise, sampler=sampler, steps=steps, callback=callback)


@torch.inference_mode()
def generate(model: TriErgon, *, seconds: float | None = None, text: str | None = None,
             audio: torch.Tensor | str | os.PathLike | None = None, video: Video | None = None,
             video_fps: float | None = None, lufs: LufsCurve | torch.Tensor | None = None,
             lufs_fit: str = "error", conditions: Conditions | None = None,
             encoders: ConditionEncoders | None = None, cache: EmbeddingCache | None = None, seed: int = 0,
             batch_size: int = 1, steps: int | None = None, cfg_scale: float | None = None,
             sampler: str | None = None, callback: StepCallback | None = None,
             decode_progress: ProgressFn | None = None, dtype: torch.dtype | str | None = None,
             compile: str | None = None, offload: bool = False) -> torch.Tensor:
    """Generate `batch_size` stereo clips of exactly `round(seconds * 44100)` samples.

    Args:
        model: a Tri-Ergon model (`build_model` / `load_checkpoint`).
        seconds: duration; default: the video's (a file's duration from its timestamps, or frames / video_fps
            for frames), or with `conditions` the one they were prepared for.
        text, audio, video, video_fps, lufs, lufs_fit: the conditions (any subset); see `prepare_conditions`.
        conditions: already prepared conditions (batch of one), instead of text/audio/video/lufs (giving both
            is an error); their duration must be `seconds`.
        encoders: condition encoders (default: the preset's own).
        cache: embedding cache (see `prepare_conditions`).
        seed: seed of item 0; item i uses seed + i.
        batch_size: number of variations.
        steps, cfg_scale, sampler: sampling settings; each left None is the model's (`model.sampling`): what its
            checkpoint recommends, else the paper's `PAPER_SAMPLING` (100 steps, CFG 7, DPM-Solver++(2M)).
        callback: called after each sampling step as callback(step, steps, predicted_x0); raise to stop.
        decode_progress: called as decode_progress(done, total) over the VAE's decode windows.
        dtype: run the DiT under autocast to this dtype ("bfloat16" on a GPU: about half the time and
            memory of float32); the VAE decodes in its weights' dtype, so the audio keeps float32 precision.
        compile: `torch.compile` the sampling step (the DiT on the prepared conditioning, CFG included):
            "default", "reduce-overhead" (also CUDA graphs: one replay per step instead of a launch per kernel)
            or "max-autotune"; None (default): eager. The first generation of each model and duration pays the
            compilation (tens of seconds to minutes); later ones in the process reuse it.
        offload: for small GPUs: the VAE and the condition encoders live on the CPU and move to the DiT's
            device only for their stage (encoding, decoding), so that the DiT samples without them in GPU
            memory; each generation then copies their weights over twice. The model's VAE stays on the CPU
            after the call.

    Returns:
        float32 audio [batch, 2, samples] at 44 100 Hz.
    """
    settings = sampling_settings(model, steps=steps, cfg_scale=cfg_scale, sampler=sampler)
    steps, cfg_scale, sampler = settings.steps, settings.cfg_scale, settings.sampler
    check_seed(seed, batch_size=batch_size)
    check_compile(compile)
    device = next(model.dit.parameters()).device
    if offload:
        model.vae.to("cpu")  # its home with offload: no GPU memory while the encoders and the DiT run
    if conditions is None:
        seconds = resolve_seconds(model.config, seconds, video, video_fps)
        conditions = prepare_conditions(model, seconds=seconds, text=text, audio=audio, video=video,
                                        video_fps=video_fps, lufs=lufs, lufs_fit=lufs_fit, encoders=encoders,
                                        cache=cache, offload=offload)
    else:
        raw = {"text": text, "audio": audio, "video": video, "video_fps": video_fps, "lufs": lufs,
               "encoders": encoders, "cache": cache, "lufs_fit": None if lufs_fit == "error" else lufs_fit}
        given = [name for name, value in raw.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} cannot be combined with conditions=, which already hold the "
                             "encoded inputs: pass them to prepare_conditions instead")
        seconds = check_conditions(model.config, conditions, seconds)
    noise = initial_noise(model, seconds=seconds, seed=seed, batch_size=batch_size, device=device)
    latents = sample_latents(model, conditions.repeat(batch_size), noise, steps=steps, cfg_scale=cfg_scale,
                             sampler=sampler, callback=callback, dtype=dtype, compile=compile)
    with staged(model.vae, device, offload):
        vae_dtype = next(model.vae.parameters()).dtype
        audio_out = model.decode(latents.to(vae_dtype), num_samples=model.config.sequence.num_samples(seconds),
                                 progress=decode_progress)
    return audio_out.float()
