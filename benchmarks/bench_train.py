"""Trainer throughput at demo-like sizes, a tiny DiT over-fit and a short VAE run, in one process on the CPU.

    python benchmarks/bench_train.py --out /tmp/bench-train [--what throughput,overfit,vae]

Throughput: DiT 256 wide x 8 deep on 16 x 5 s latent crops, VAE of width 16 on 4 x 2 s stereo crops (STFT +
KL + adversarial + feature matching), T_LUFS 128 wide x 4 deep on 16 x 5 s of frame features; samples/s
is measured over the steps after the first, data loading included. Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
from pathlib import Path

import torch

from triergon.train.config import DataConfig, ModelSection, OptimConfig, RunConfig, TrainConfig, VAELossConfig
from triergon.train.distributed import init_distributed
from triergon.train.trainers import trainer_class
from triergon.triergon_core.audio import write_audio
from triergon.triergon_core.checkpoint import save_checkpoint
from triergon.triergon_core.config import ConditioningConfig, DiTConfig, ModelConfig, SequenceConfig, VAEConfig
from triergon.triergon_core.lufs_predictor import LufsPredictor, LufsPredictorConfig, save_predictor
from triergon.triergon_core.model import build_model


def demo_like() -> ModelConfig:
    return ModelConfig(
        name="demo-like",
        vae=VAEConfig(channels=16, c_mults=(1, 2, 4, 8, 8), strides=(2, 4, 4, 8, 8), latent_dim=16),
        dit=DiTConfig(io_channels=16, embed_dim=256, depth=8, num_heads=4, cond_token_dim=64, global_cond_dim=128),
        conditioning=ConditioningConfig(embed_dim=64, encoder="tiny-random"),
        sequence=SequenceConfig(max_seconds=10.0))


def make_data(folder: Path, *, clips: int, seconds: float, dinov2: Path | None, vae) -> tuple[Path, Path]:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    from _videos import write_video

    from triergon.train.data.cache import build_cache
    from triergon.train.data.pack import pack_manifest
    from triergon.triergon_core.encoders import build_encoders

    rows = []
    g = torch.Generator().manual_seed(0)
    for i in range(clips):
        n = round(seconds * 44100)
        t = torch.arange(n) / 44100
        env = (0.5 + 0.5 * torch.sin(2 * math.pi * (0.3 + 0.1 * i) * t)) * 0.3
        audio = torch.stack([env * torch.sin(2 * math.pi * (200 + 40 * i) * t),
                             0.1 * torch.randn(n, generator=g) * env])
        write_audio(folder / f"a{i}.wav", audio)
        write_video(folder / f"v{i}.mp4", fps=6, num_frames=math.ceil(seconds * 6), size=(32, 32))
        rows.append({"video": f"v{i}.mp4", "audio": f"a{i}.wav", "caption": f"clip {i}"})
    (folder / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pack_manifest(folder / "m.jsonl", folder / "shards", short_side=32)
    features = None
    if dinov2 is not None:
        from triergon.triergon_core.lufs_predictor import load_dinov2

        features = load_dinov2(dinov2)
    build_cache(folder / "shards", folder / "cache", vae=vae,
                encoders=build_encoders(ConditioningConfig(embed_dim=64, encoder="tiny-random")), features=features)
    return folder / "shards", folder / "cache"


def tiny_dinov2(folder: Path) -> Path:
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=56, patch_size=14)).save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"size": {"shortest_edge": 64}, "crop_size": {"height": 56, "width": 56}}))
    return folder


def run(config: TrainConfig, run_dir: Path, info) -> tuple[list[float], list[float]]:
    """Train and return (per-step total losses, per-step samples/s)."""
    trainer = trainer_class(config.trainer)(config, info, run_dir)
    losses, speeds = [], []
    original = trainer._train_step

    def recording(micro):
        logs = original(micro)
        losses.append(logs)
        return logs

    trainer._train_step = recording
    orig_log = trainer._log

    def log(logs, writer):
        speeds.append(logs["time/samples_per_s"])
        orig_log(logs, writer)

    trainer._log = log
    trainer.fit()
    return losses, speeds


def base(recipe: str, trainer: str, **kw) -> TrainConfig:
    return TrainConfig(recipe=recipe, trainer=trainer, run=RunConfig(log_every=1, save_every=10_000, keep=1),
                       **kw)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--what", default="throughput,overfit,vae")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--overfit-steps", type=int, default=300)
    p.add_argument("--vae-steps", type=int, default=40)
    p.add_argument("--trainers", default="dit,vae,lufs", help="trainers whose throughput to measure")
    p.add_argument("--vae-crop", type=float, default=0.5, help="seconds per crop of the VAE loss-fall run")
    p.add_argument("--vae-batch", type=int, default=4)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    info = init_distributed(device="cpu")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    what = set(args.what.split(","))
    rows = []
    if "throughput" in what:
        model = build_model(demo_like(), seed=0)
        init = save_checkpoint(model, out / "demo-like.safetensors")
        data = out / "data-5s"
        data.mkdir(exist_ok=True)
        shards, cache = make_data(data, clips=16, seconds=5.0, dinov2=tiny_dinov2(out / "dinov2"), vae=model.vae)
        lufs_init = out / "tlufs.safetensors"
        save_predictor(LufsPredictor(config=LufsPredictorConfig(name="demo-like", feature_dim=32, dim=128, depth=4,
                                                                heads=4)), lufs_init)
        configs = {
            "DiT 256x8, 16 x 5 s": base("bench-dit", "dit", model=ModelSection(init=str(init)),
                                       data=DataConfig(path=str(cache), crop_seconds=5.0, batch_size=16)),
            "VAE w16, 4 x 2 s": base("bench-vae", "vae", model=ModelSection(init=str(init)),
                                     data=DataConfig(path=str(shards), crop_seconds=2.0, batch_size=4),
                                     vae_loss=VAELossConfig(discriminator_start=0, discriminator_channels=16)),
            "T_LUFS 128x4, 16 x 5 s": base("bench-lufs", "lufs", model=ModelSection(init=str(lufs_init)),
                                          data=DataConfig(path=str(cache), crop_seconds=5.0, batch_size=16)),
        }
        chosen = args.trainers.split(",")
        for name, config in configs.items():
            if config.trainer not in chosen:
                continue
            config = dataclasses.replace(config, run=dataclasses.replace(config.run, steps=args.steps))
            _, speeds = run(config, out / f"run-{config.recipe}", info)
            rows.append((name, sum(speeds[1:]) / len(speeds[1:])))
            print(f"{name}: {rows[-1][1]:.2f} samples/s (steps after the first: {[round(s, 2) for s in speeds[1:]]})",
                  flush=True)
    if "overfit" in what:
        data = out / "data-overfit"
        data.mkdir(exist_ok=True)
        _, cache = make_data(data, clips=4, seconds=2.0, dinov2=None, vae=build_model("tiny", seed=0).vae)
        config = base("bench-overfit", "dit", model=ModelSection(preset="tiny"),
                      data=DataConfig(path=str(cache), crop_seconds=2.0, batch_size=4, sample_latents=False),
                      optim=OptimConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1))
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, steps=args.overfit_steps,
                                                                     log_every=50))
        losses, _ = run(config, out / "run-overfit", info)
        first = sum(x["loss/denoiser"] for x in losses[:20]) / 20
        last = sum(x["loss/denoiser"] for x in losses[-20:]) / 20
        print(f"tiny DiT over-fit on 4 clips, {len(losses)} steps: v-loss {first:.4f} (first 20) -> {last:.4f} "
              f"(last 20), factor {first / last:.1f}", flush=True)
    if "vae" in what:
        data = out / "data-vae"
        data.mkdir(exist_ok=True)
        shards, _ = make_data(data, clips=4, seconds=2.0, dinov2=None, vae=build_model("tiny", seed=0).vae)
        config = base("bench-vae-fall", "vae", model=ModelSection(preset="tiny"),
                      data=DataConfig(path=str(shards), crop_seconds=args.vae_crop, batch_size=args.vae_batch),
                      optim=OptimConfig(lr=1e-3),
                      vae_loss=VAELossConfig(fft_sizes=(2048, 512, 128, 32), discriminator_start=10**9))
        config = dataclasses.replace(config, run=dataclasses.replace(config.run, steps=args.vae_steps, log_every=5))
        losses, _ = run(config, out / "run-vae", info)
        first = sum(x["vae/stft"] for x in losses[:5]) / 5
        last = sum(x["vae/stft"] for x in losses[-5:]) / 5
        print(f"tiny VAE, {len(losses)} steps of {args.vae_batch} x {args.vae_crop} s: STFT loss {first:.3f} "
              f"(first 5) -> {last:.3f} (last 5)",
              flush=True)


if __name__ == "__main__":
    main()
