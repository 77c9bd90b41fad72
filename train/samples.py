"""Samples written to TensorBoard at intervals (`run.sample_every`): audio and LUFS-curve plots on rank 0.

Each trainer says which part it samples (`sample_part`), how to build a plain copy of it (`sample_module`)
and what one sample is (`sample`: the DiT generates from its fixed validation item, the VAE reconstructs it,
T_LUFS predicts its curve). The part's EMA weights go into the plain copy, so the training modules, their
DDP / FSDP2 wrappers and every RNG the run draws from are left untouched (resume stays bit-identical).
"""

from __future__ import annotations

import io
import logging
import time
import wave
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..triergon_core.config import SAMPLE_RATE
from .data.datasets import collate
from .sampler import SampleRef

if TYPE_CHECKING:
    from ..triergon_core.lufs_curve import LufsCurve
    from .trainer import Trainer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    """One sample: the audio (None for T_LUFS), the reference curve and the curve of the output."""

    audio: torch.Tensor | None  # [channels, samples] at 44.1 kHz
    target: LufsCurve
    measured: LufsCurve
    labels: tuple[str, str]  # legend names of target and measured


def validation_item(data: Any) -> dict[str, Any]:
    """The fixed item samples are drawn from: the data set's first clip, cropped as epoch 0 reads it."""
    return collate([data[SampleRef(index=0, epoch=0, weight=1.0)]])


def ema_copy(trainer: Trainer, name: str) -> torch.nn.Module | None:
    """A plain module with the part's EMA weights (its current weights if it has no EMA) on rank 0; None on
    the other ranks. Every rank must call it: gathering a sharded part is a collective."""
    part = trainer.parts[name]
    source = part.ema if part.ema is not None else dict(part.module.named_parameters())
    weights = {k: _full(v).detach() for k, v in source.items()}
    buffers = {k: _full(b) for k, b in part.module.named_buffers()}
    if not trainer.info.is_main:
        return None
    module = trainer.sample_module()
    missing, _ = module.load_state_dict({**buffers, **weights}, strict=False)
    params = {k for k, _ in module.named_parameters()}
    if params & set(missing):
        raise RuntimeError(f"the sample copy of {name} lacks weights: {sorted(params & set(missing))[:5]}")
    return module.to(trainer.device).eval().requires_grad_(False)


def write_samples(trainer: Trainer, writer, data: Any) -> None:
    """Write the trainer's sample at its current step (called on every rank; only rank 0 writes)."""
    if trainer.sample_part is None:
        return
    t0 = time.perf_counter()
    module = ema_copy(trainer, trainer.sample_part)
    if module is None or writer is None:
        return
    # The sample draws only from its own seeded generators; fork_rng guards the run's global CPU RNG anyway.
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        item = {k: v.to(trainer.device) if isinstance(v, torch.Tensor) else v
                for k, v in validation_item(data).items()}
        sample = trainer.sample(module, item)
    log_sample(writer, sample, trainer.step)
    logger.info("step %d: wrote a sample to TensorBoard in %.1f s", trainer.step, time.perf_counter() - t0)


def log_sample(writer, sample: Sample, step: int) -> None:
    from ..triergon_core.lufs_plot import plot_curves
    from ..triergon_core.metrics import lufs_tracking

    if sample.audio is not None:
        writer._get_file_writer().add_summary(audio_summary("sample/audio", sample.audio), step)
    image = plot_curves(sample.target, overlay=sample.measured, labels=sample.labels,
                        title=f"step {step}: {sample.labels[0]} vs {sample.labels[1]}")
    writer.add_image("sample/lufs", image, step, dataformats="HWC")
    tracking = lufs_tracking(sample.target, sample.measured)
    for channel, mae in zip(sample.target.channels, tracking.mae, strict=True):
        if np.isfinite(mae):
            writer.add_scalar(f"sample/lufs_mae_{channel}", mae, step)
    writer.flush()


def audio_summary(tag: str, audio: torch.Tensor, sample_rate: int = SAMPLE_RATE):
    """A TensorBoard audio summary of [channels, samples] (SummaryWriter.add_audio takes mono only)."""
    from tensorboard.compat.proto.summary_pb2 import Summary

    pcm = (audio.detach().float().cpu().clamp(-1, 1).T.numpy() * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(pcm.shape[1])
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(pcm.tobytes())
    clip = Summary.Audio(sample_rate=sample_rate, num_channels=pcm.shape[1], length_frames=pcm.shape[0],
                         encoded_audio_string=buf.getvalue(), content_type="audio/wav")
    return Summary(value=[Summary.Value(tag=tag, audio=clip)])


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def conditions(item: dict[str, Any]):
    """The `Conditions` of a DiT batch (cached embeddings, timing, normalised LUFS curve)."""
    from ..triergon_core.conditioning import Conditions

    return Conditions(seconds_start=item["seconds_start"], seconds_total=item["seconds_total"],
                      text=item.get("text"), audio=item.get("audio"), video=item.get("video"), lufs=item["lufs"])


def generate_latents(denoiser: torch.nn.Module, item: dict[str, Any], *, steps: int, cfg_scale: float,
                     seed: int) -> torch.Tensor:
    """Latents like `item["latents"]` generated by `denoiser` (a DiT + conditioner) under the item's conditions,
    from seeded noise, with the paper's sampler."""
    from ..triergon_core.sampling import GuidedDenoiser, sample

    context, global_cond, frame_cond = denoiser.conditioner(conditions(item), dropout=False)
    guided = GuidedDenoiser(denoiser.dit, context, global_cond, cfg_scale=cfg_scale, frame_cond=frame_cond)
    shape = item["latents"].shape
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(item["latents"].device)
    return sample(guided, noise, steps=steps)


def decoded_sample(vae: torch.nn.Module, latents: torch.Tensor, item: dict[str, Any], latent_rate: float, *,
                   labels: tuple[str, str]) -> Sample:
    """Decode the first of `latents` over the item's valid frames; its measured curve against the item's."""
    from ..triergon_core.config import LUFS_RATE
    from ..triergon_core.lufs_curve import LufsCurve

    frames = int(item["mask"][0].sum())
    audio = vae.decode(latents[:1, :, :frames].float())[0]
    lufs_frames = max(1, round(frames / latent_rate * LUFS_RATE))
    target = LufsCurve.from_normalized(item["lufs"][0, :, :lufs_frames].float().clamp(0, 1))
    return Sample(audio=audio, target=target, measured=LufsCurve.measure(audio.cpu()), labels=labels)
