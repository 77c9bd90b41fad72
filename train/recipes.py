"""Recipes as code: name -> a complete `TrainConfig`, each with its effective batch, step count and hardware.

Effective batch = data.batch_size (per rank) x ranks x optim.accum_steps. Paths (`data.path`,
`model.init`) are set on the command line with `--set data.path=...`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from .config import DataConfig, ModelSection, OptimConfig, RunConfig, TrainConfig, VAELossConfig
from .parallelize import ParallelConfig


def _cpu_smoke_dit() -> TrainConfig:
    return TrainConfig(
        recipe="cpu-smoke", trainer="dit", hardware="CPU, 1-2 processes (gloo)",
        description="tiny DiT for a few steps on cached latents: checks the whole loop in CI",
        model=ModelSection(preset="tiny"),
        data=DataConfig(crop_seconds=1.0, batch_size=2),
        optim=OptimConfig(lr=1e-3, warmup_steps=2, ema_decay=0.9),
        run=RunConfig(steps=6, save_every=3, log_every=1, keep=2))


def _cpu_smoke_vae() -> TrainConfig:
    return TrainConfig(
        recipe="cpu-smoke-vae", trainer="vae", hardware="CPU, 1-2 processes (gloo)",
        description="tiny VAE with the discriminator from step 2 for a few steps on packed shards (CI)",
        model=ModelSection(preset="tiny"),
        data=DataConfig(crop_seconds=0.5, batch_size=2),
        optim=OptimConfig(lr=1e-3, ema_decay=0.9),
        vae_loss=VAELossConfig(fft_sizes=(512, 128, 32), discriminator_start=2, discriminator_channels=8,
                               discriminator_ffts=(256, 64)),
        run=RunConfig(steps=4, save_every=2, log_every=1, keep=2))


def _cpu_smoke_lufs() -> TrainConfig:
    return TrainConfig(
        recipe="cpu-smoke-lufs", trainer="lufs", hardware="CPU, 1-2 processes (gloo)",
        description="tiny T_LUFS for a few steps on cached DINOv2 features (CI)",
        model=ModelSection(preset="tiny"),
        data=DataConfig(crop_seconds=1.0, batch_size=2),
        optim=OptimConfig(lr=1e-3, ema_decay=0.9),
        run=RunConfig(steps=4, save_every=2, log_every=1, keep=2))


def _cpu_smoke_encoders() -> TrainConfig:
    return TrainConfig(
        recipe="cpu-smoke-encoders", trainer="encoders", hardware="CPU, 1-2 processes (gloo)",
        description="the tiny preset's LanguageBind towers, contrastive, for a few steps on packed shards (CI)",
        model=ModelSection(preset="tiny"),
        data=DataConfig(batch_size=4),
        optim=OptimConfig(lr=1e-3, ema_decay=0.9),
        run=RunConfig(steps=4, save_every=2, log_every=1, keep=2, sample_every=0))


def _1gpu_finetune_from_sao() -> TrainConfig:
    return TrainConfig(
        recipe="1gpu-finetune-from-sao", trainer="dit", hardware="1 GPU with >= 40 GB (A100 / H100), bf16",
        description="fine-tune triergon-s from converted Stable Audio Open weights (`triergon convert --from-sao`); "
                    "effective batch 64 = 8 x 1 GPU x 8 accumulation, 50k steps",
        model=ModelSection(preset="triergon-s"),
        data=DataConfig(crop_seconds=10.0, batch_size=8, num_workers=4),
        optim=OptimConfig(lr=5e-5, warmup_steps=1000, accum_steps=8),
        parallel=ParallelConfig(activation_checkpointing=True),
        run=RunConfig(steps=50_000, save_every=1000, log_every=50))


def _paper_s_32gpu() -> TrainConfig:
    return TrainConfig(
        recipe="paper-s-32gpu", trainer="dit", hardware="32 x A100 80 GB (4 nodes x 8), bf16, FSDP2",
        description="the paper's Tri-Ergon-S: 720k steps, effective batch 256 = 8 x 32 GPUs x 1",
        model=ModelSection(preset="triergon-s"),
        data=DataConfig(crop_seconds=10.0, batch_size=8, num_workers=6),
        optim=OptimConfig(lr=1e-4, warmup_steps=2000, accum_steps=1),
        parallel=ParallelConfig(mode="fsdp", param_dtype="bf16"),
        run=RunConfig(steps=720_000, save_every=5000, log_every=100))


def _paper_l_32gpu() -> TrainConfig:
    return TrainConfig(
        recipe="paper-l-32gpu", trainer="dit", hardware="32 x A100 80 GB (4 nodes x 8), bf16, FSDP2",
        description="the paper's Tri-Ergon-L (60 s windows): 220k steps, effective batch 256 = 4 x 32 GPUs x 2",
        model=ModelSection(preset="triergon-l"),
        data=DataConfig(crop_seconds=60.0, batch_size=4, num_workers=6),
        optim=OptimConfig(lr=1e-4, warmup_steps=2000, accum_steps=2),
        parallel=ParallelConfig(mode="fsdp", param_dtype="bf16", activation_checkpointing=True),
        run=RunConfig(steps=220_000, save_every=5000, log_every=100))


def _vae_8gpu() -> TrainConfig:
    return TrainConfig(
        recipe="vae-8gpu", trainer="vae", hardware="8 x A100 80 GB, DDP",
        description="the paper's Oobleck VAE: 1M steps, effective batch 64 = 8 x 8 GPUs, crops of 1.5 s",
        model=ModelSection(preset="triergon-s"),
        data=DataConfig(crop_seconds=1.486, batch_size=8, num_workers=6),
        optim=OptimConfig(lr=1.5e-4, betas=(0.8, 0.99), ema_decay=0.999),
        vae_loss=VAELossConfig(discriminator_start=20_000, discriminator_lr=3e-4, discriminator_channels=64),
        run=RunConfig(steps=1_000_000, save_every=10_000, log_every=100, autocast="off"))


def _lufs_8gpu() -> TrainConfig:
    return TrainConfig(
        recipe="lufs-8gpu", trainer="lufs", hardware="8 x A100 80 GB, DDP",
        description="T_LUFS (S) on cached DINOv2 features at 6 fps: 100k steps, effective batch 256 = 32 x 8 GPUs, "
                    "60 s crops",
        model=ModelSection(preset="s"),
        data=DataConfig(crop_seconds=60.0, batch_size=32, num_workers=4),
        optim=OptimConfig(lr=1e-4, warmup_steps=1000),
        run=RunConfig(steps=100_000, save_every=5000, log_every=100))


def _synthfoley_vae() -> TrainConfig:
    # Profiled on 2 CPU cores (4 x 2 s stereo): the A-weighted 7-resolution STFT loss alone costs more than the
    # model step, 3 unweighted resolutions 0.17 s. The loudness term (K-weighted energy per 1/6 s window, per
    # channel) is what moves a small VAE off the near-silent plateau; KL at stable-audio-tools' 1e-4. The data-dependent
    # init makes the latent carry the input from step 0, and the per-channel STFT and balance terms score the stereo
    # image. Its spread: at 1 (every convolution's output at unit spread) every Snake works far in its nonlinear range
    # and the decoder renders one spectrum whatever the latent; at 0.3, with the residual branches at 0.1 of that, and
    # the octave-band spectrum term, the demo VAE learns each scene's timbre and the stereo image on all 1600 clips
    # from scratch (weights/demo/MODEL_CARD.md: "Where the one timbre comes from").
    return TrainConfig(
        recipe="synthfoley-vae", trainer="vae", hardware="CPU, 1 process, 2 threads (hours)",
        description="the demo preset's VAE on SynthFoley shards: 4 x 2 s crops, deterministic encoder with "
                    "data-dependent init at 0.3 spread, per-channel 3-resolution STFT + per-window loudness, L - R "
                    "balance and octave-band levels + KL, "
                    "no discriminator (its cost is not affordable on 2 cores)",
        model=ModelSection(preset="demo"),
        data=DataConfig(crop_seconds=2.0, batch_size=4),
        optim=OptimConfig(lr=1e-3, betas=(0.8, 0.99), warmup_steps=100, min_lr_ratio=0.1, ema_decay=0.995),
        vae_loss=VAELossConfig(fft_sizes=(2048, 512, 128), perceptual=False, stft_layout="channels", loudness=3.0,
                               balance=3.0, spectrum=2.0, kl=1e-4, decode_mean=True, data_init=True,
                               data_init_scale=0.3, data_init_residual=0.1, discriminator_start=10**9,
                               discriminator_channels=8, discriminator_ffts=(512, 128)),
        # a checkpoint every 100 steps, 10 kept: the demo's VAE is exported at chosen steps (`export --step`)
        run=RunConfig(steps=20_000, save_every=100, log_every=25, keep=10, threads=2, sample_every=1000))


def _synthfoley_encoders() -> TrainConfig:
    # The demo's towers (LanguageBind's at tiny size, 2 layers of width 32) start from the seeded random weights
    # of `LanguageBindEncoders.tiny_random(embed_dim=128)`. A scratch probe with this loss on the 1600 training
    # clips: 1500 steps of 64 in 3.4 min on one thread took the nearest-centroid scene-kind accuracy of e_V from
    # 0.33 to 0.98 and of e_L from 0.48 to 0.98 (40 new clips, 8 per kind). Each clip's inputs are prepared once.
    return TrainConfig(
        recipe="synthfoley-encoders", trainer="encoders", hardware="CPU, 1 process, 2 threads (minutes)",
        description="the demo's LanguageBind towers (text, video, audio) trained contrastively on SynthFoley "
                    "shards: batches of 64 clips, symmetric InfoNCE between caption, frames and sound",
        model=ModelSection(preset="demo"),
        data=DataConfig(batch_size=64),
        optim=OptimConfig(lr=5e-4, warmup_steps=100, weight_decay=0.05, min_lr_ratio=0.1, ema_decay=0.99),
        run=RunConfig(steps=2000, save_every=250, log_every=50, keep=3, threads=2, sample_every=0))


def _synthfoley_dit() -> TrainConfig:
    # On the cache of the trained demo VAE (`--set model.init=` its export, the file the cache was made with) and
    # the demo's LanguageBind towers (weights/demo/languagebind). The 10 M DiT takes well under a second per step of
    # 16 x 5 s latents on 2 cores (DESIGN.md: 0.15-0.4 s at 1-5 M).
    return TrainConfig(
        recipe="synthfoley-dit", trainer="dit", hardware="CPU, 1 process, 2 threads (hours)",
        description="the demo preset's DiT and conditioner on cached SynthFoley latents and embeddings: 16 x 5 s "
                    "crops, v-loss with the paper's condition dropout",
        model=ModelSection(preset="demo"),
        data=DataConfig(crop_seconds=5.0, batch_size=16),
        optim=OptimConfig(lr=1e-3, warmup_steps=500, min_lr_ratio=0.1, ema_decay=0.999),
        run=RunConfig(steps=20_000, save_every=250, log_every=25, keep=3, threads=2, sample_every=1000))


def _synthfoley_lufs() -> TrainConfig:
    # On cached features of the demo's DINOv2 (weights/demo/dinov2) at 6 fps, pooled "cls+grid" (`triergon data
    # cache --frame-pooling cls+grid`): in a probe on the same clips and schedule the image quarters took the test
    # error from 5.1 to 3.8 LU (the CLS output alone does not say where the sound's source is). T_LUFS at 128 x 4
    # runs about 200 samples/s on 2 cores, so this is minutes, not hours.
    return TrainConfig(
        recipe="synthfoley-lufs", trainer="lufs", hardware="CPU, 1 process, 2 threads (minutes)",
        description="the demo T_LUFS (128 wide, 4 layers) on cached SynthFoley DINOv2 features at 6 fps (CLS and "
                    "image quarters): 16 x 5 s crops, MSE on normalised L/R curves",
        model=ModelSection(preset="demo"),
        data=DataConfig(crop_seconds=5.0, batch_size=16),
        optim=OptimConfig(lr=1e-3, warmup_steps=200, min_lr_ratio=0.1, ema_decay=0.999),
        run=RunConfig(steps=10_000, save_every=250, log_every=50, keep=3, threads=2, sample_every=1000))


def _synthfoley_lufs_frames() -> TrainConfig:
    # DINOv2 trained with T_LUFS (beyond the paper): `--set model.dinov2=DIR`, the demo's seeded random DINOv2 as
    # `triergon demo encoders -o DIR` writes it (DIR/dinov2), and `--set data.path=` the training shards. The demo's
    # run: 3.01 LU on the 200 validation clips at step 6000 (3.92 at 1500), where `synthfoley-lufs` on that
    # DINOv2's frozen features reached 3.59 at step 10000 (4.02 at 2000); 70 min on 1 thread, beside another run.
    base = _synthfoley_lufs()
    return dataclasses.replace(
        base, recipe="synthfoley-lufs-frames", hardware="CPU, 1 process, 1-2 threads (about 1 hour)",
        description="the demo T_LUFS and the demo's small DINOv2 trained together on SynthFoley frames at 6 fps "
                    "(DINOv2 at 0.3 x the learning rate): 16 x 5 s crops, MSE on normalised L/R curves",
        model=dataclasses.replace(base.model, dinov2_lr_scale=0.3),
        run=dataclasses.replace(base.run, steps=6000))


RECIPES: dict[str, Callable[[], TrainConfig]] = {
    "cpu-smoke": _cpu_smoke_dit,
    "cpu-smoke-vae": _cpu_smoke_vae,
    "cpu-smoke-lufs": _cpu_smoke_lufs,
    "cpu-smoke-encoders": _cpu_smoke_encoders,
    "1gpu-finetune-from-sao": _1gpu_finetune_from_sao,
    "paper-s-32gpu": _paper_s_32gpu,
    "paper-l-32gpu": _paper_l_32gpu,
    "vae-8gpu": _vae_8gpu,
    "lufs-8gpu": _lufs_8gpu,
    "synthfoley-vae": _synthfoley_vae,
    "synthfoley-dit": _synthfoley_dit,
    "synthfoley-lufs": _synthfoley_lufs,
    "synthfoley-lufs-frames": _synthfoley_lufs_frames,
    "synthfoley-encoders": _synthfoley_encoders,
}


def get_recipe(name: str) -> TrainConfig:
    try:
        return RECIPES[name]()
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}") from None
