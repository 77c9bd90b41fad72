"""Generation nodes: Encode Conditions, Sample, Decode, Mux Audio into Video."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

import torch

from ..triergon_core import sampling
from ..triergon_core.conditioning import Conditions
from ..triergon_core.generate import fit_lufs, initial_noise, prepare_conditions, resolve_seconds, sample_latents
from ..triergon_core.lufs_curve import FIT_POLICIES
from ..triergon_core.mux import mux_audio
from ..triergon_core.presets import PRESETS, get_preset
from . import host
from .media import audio_output, audio_stereo, resolve_video
from .nodes_lufs import FPS, TAKE, check_fps
from .video_type import video_from_file

CATEGORY = "Tri-Ergon"
# The paper's sampling setting, as the core pins it.
DEFAULT_STEPS = sampling.PAPER_SAMPLING.steps
DEFAULT_CFG = sampling.PAPER_SAMPLING.cfg_scale
DEFAULT_SAMPLER = sampling.PAPER_SAMPLING.sampler
# the longest preset window (each model's own window is checked when it runs)
MAX_SECONDS = max(get_preset(name).sequence.max_seconds for name in PRESETS)
MAX_SEED = 2**63 - 1 - 64  # seeds seed .. seed + batch - 1 stay valid


@dataclass(frozen=True)
class EncodedConditions:
    """A `TRIERGON_CONDITIONS` value: conditions (batch of one) for `seconds` of audio from one model config."""

    conditions: Conditions
    seconds: float
    config: object


@dataclass(frozen=True)
class Latents:
    """A `TRIERGON_LATENT` value: clean latents [takes, channels, frames] on the CPU, and what made them."""

    latents: torch.Tensor
    seconds: float
    seeds: tuple[int, ...]
    config: object


def check_duration(duration) -> str | bool:
    if duration is not None and not 0 <= float(duration) <= MAX_SECONDS:
        return (f"duration must be between 0 (take the video's) and {MAX_SECONDS:g} s, got {duration}; trim the "
                "video or generate it in parts")
    return True


class TriErgonEncodeConditions:
    DESCRIPTION = ("Encodes the conditions once: video (a VIDEO, or IMAGE frames with their fps), text and "
                   "reference audio, for a duration (0 = the video's).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("TRIERGON_MODEL",),
                "text": ("STRING", {"default": "", "multiline": True, "tooltip": "What should be heard (optional)"}),
                "duration": ("FLOAT", {"default": 0.0, "min": 0.0, "max": MAX_SECONDS, "step": 0.01, "tooltip":
                                       "Seconds of audio; 0 = the video's exact duration"}),
            },
            "optional": {"video": ("VIDEO",), "images": ("IMAGE",), "fps": FPS, "reference_audio": ("AUDIO",)},
        }

    RETURN_TYPES = ("TRIERGON_CONDITIONS",)
    RETURN_NAMES = ("conditions",)
    FUNCTION = "encode"
    CATEGORY = CATEGORY

    def encode(self, model, text="", duration=0.0, video=None, images=None, fps=0.0, reference_audio=None):
        source = resolve_video(video, images, fps)
        frames_or_file = None if source is None else (source.frames if source.path is None else source.path)
        if not duration and source is None:
            raise ValueError("set a duration, or connect a video to take the duration from")
        video_fps = None if source is None or source.fps is None else float(source.fps)
        seconds = resolve_seconds(model.config, duration or None, frames_or_file, video_fps)
        wanted = [name for name, value in (("text", text.strip()), ("video", source), ("reference audio",
                                                                                   reference_audio)) if value]
        if wanted and model.encoders is None:
            raise ValueError(f"{' / '.join(wanted)} conditioning needs LanguageBind towers for {model.name!r}: put "
                             "a LanguageBind folder in models/triergon/languagebind/ and choose it in Load Tri-Ergon "
                             "Model")
        reference = None if reference_audio is None else audio_stereo(reference_audio, what="reference_audio")
        model.use("encoders")
        conditions = prepare_conditions(model.model, seconds=seconds, text=text.strip() or None, audio=reference,
                                        video=frames_or_file, video_fps=video_fps, encoders=model.encoders)
        model.manage_encoders()  # towers that loaded just now
        return (EncodedConditions(conditions, float(seconds), model.config),)

    @classmethod
    def VALIDATE_INPUTS(cls, duration=None, fps=None):
        checked = check_duration(duration)
        return checked if checked is not True else check_fps(fps)


class TriErgonSample:
    DESCRIPTION = ("Samples latents with the DiT: `batch_size` takes with seeds seed .. seed + n - 1, optionally "
                   "following a loudness curve. The widgets' defaults are the paper's (100 steps, CFG 7, "
                   "DPM-Solver++ 2M); connect Load Tri-Ergon Model's cfg and steps for the model's recommended ones.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": ("TRIERGON_MODEL",),
                "conditions": ("TRIERGON_CONDITIONS",),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED, "control_after_generate": True}),
                "steps": ("INT", {"default": DEFAULT_STEPS, "min": 1, "max": 1000, "tooltip": "Sampling steps "
                          "(Load Tri-Ergon Model's steps output: what the checkpoint recommends)"}),
                "cfg": ("FLOAT", {"default": DEFAULT_CFG, "min": 0.0, "max": 30.0, "step": 0.1, "round": 0.01,
                        "tooltip": "Classifier-free guidance scale (Load Tri-Ergon Model's cfg output: what the "
                        "checkpoint recommends; the demo model's is 3)"}),
                "sampler": (list(sampling.SAMPLERS), {"default": DEFAULT_SAMPLER}),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64, "tooltip": "Takes to generate"}),
            },
            "optional": {
                "lufs_curve": ("LUFS_CURVE",),
                "lufs_fit": (list(FIT_POLICIES), {"default": "error", "tooltip": "What to do when the curve's "
                             "length differs from the duration"}),
            },
        }

    RETURN_TYPES = ("TRIERGON_LATENT",)
    RETURN_NAMES = ("latent",)
    FUNCTION = "sample"
    CATEGORY = CATEGORY

    def sample(self, model, conditions, seed=0, steps=DEFAULT_STEPS, cfg=DEFAULT_CFG, sampler=DEFAULT_SAMPLER,
               batch_size=1, lufs_curve=None, lufs_fit="error"):
        if conditions.config != model.config:
            raise ValueError("these conditions were encoded for another model: connect the same model to Encode "
                             "Conditions and Sample")
        cond, seconds = conditions.conditions, conditions.seconds
        if lufs_curve is not None:
            cond = replace(cond, lufs=fit_lufs(model.config, lufs_curve, seconds, lufs_fit))
        device = model.use("dit")
        noise = initial_noise(model.model, seconds=seconds, seed=seed, batch_size=batch_size, device=device)
        bar = host.progress(steps)
        latents = sample_latents(model.model, cond.repeat(batch_size).to(device), noise, steps=steps, cfg_scale=cfg,
                                 sampler=sampler, callback=lambda step, total, x0: bar(step, total))
        seeds = tuple(range(seed, seed + batch_size))
        return (Latents(latents.float().cpu(), seconds, seeds, model.config),)


class TriErgonDecode:
    DESCRIPTION = ("Decodes latents to 44.1 kHz stereo AUDIO of exactly the requested duration. The loudness is "
                   "never renormalised (ComfyUI's core audio VAE decode would undo the LUFS control).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("TRIERGON_MODEL",), "latent": ("TRIERGON_LATENT",)}}

    RETURN_TYPES = ("AUDIO",)
    RETURN_NAMES = ("audio",)
    FUNCTION = "decode"
    CATEGORY = CATEGORY

    def decode(self, model, latent):
        if latent.config != model.config:
            raise ValueError("these latents come from another model: decode with the model that sampled them")
        device = model.use("vae")
        dtype = next(model.model.vae.parameters()).dtype
        with torch.inference_mode():
            audio = model.model.decode(latent.latents.to(device=device, dtype=dtype),
                               num_samples=model.config.sequence.num_samples(latent.seconds),
                               progress=host.progress(1))
        return (audio_output(audio),)


class TriErgonMuxVideo:
    DESCRIPTION = ("Puts one take of the audio into the video (copied, not re-encoded; AAC or FLAC), cut or padded "
                   "to the video's exact duration. The result is a core VIDEO for Save Video.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {"audio": ("AUDIO",), "take": TAKE,
                         "codec": (["aac", "flac"], {"default": "aac", "tooltip": "Audio codec in the MP4"})},
            "optional": {"video": ("VIDEO",), "images": ("IMAGE",), "fps": FPS},
        }

    RETURN_TYPES = ("VIDEO",)
    RETURN_NAMES = ("video",)
    FUNCTION = "mux"
    CATEGORY = CATEGORY

    def mux(self, audio, take=0, codec="aac", video=None, images=None, fps=0.0):
        source = resolve_video(video, images, fps)
        if source is None:
            raise ValueError("connect a video (VIDEO, or IMAGE frames with their fps) to put the audio into")
        out = host.temp_directory() / f"muxed_{uuid.uuid4().hex[:16]}.mp4"
        mux_audio(source.as_file(), audio_stereo(audio, take=take), out, codec=codec)
        return (video_from_file(out),)

    @classmethod
    def VALIDATE_INPUTS(cls, fps=None):
        return check_fps(fps)
