"""The over-fit measurement of the DiT trainer (test_train_overfit.py): train the tiny DiT on the 5 test clips,
then measure (a) the fall of a fixed-noise v-loss and (b) how closely generation under a clip's conditions
reproduces that clip's loudness curve, both decoded through the same (random, tiny) VAE at `gain` times the
latents (why: test_train_overfit.py)."""

from __future__ import annotations

import math
import time

import torch

from triergon.train.config import apply_overrides
from triergon.train.data.datasets import LatentCrops, collate
from triergon.train.recipes import get_recipe
from triergon.train.sampler import SampleRef
from triergon.train.samples import conditions, ema_copy, generate_latents
from triergon.train.trainers.dit import Denoiser, DiTTrainer
from triergon.triergon_core.lufs_curve import LufsCurve
from triergon.triergon_core.metrics import lufs_tracking
from triergon.triergon_core.model import build_model


def clips(cache, latent_rate: float) -> dict:
    """All clips, whole (2 s crops cover the 1-2 s clips), posterior means: the items trained on."""
    data = LatentCrops(cache, crop_seconds=2.0, seed=0, latent_rate=latent_rate, sample_latents=False)
    return collate([data[SampleRef(index=i, epoch=0, weight=1.0)] for i in range(len(data))])


@torch.no_grad()
def fixed_loss(denoiser: Denoiser, batch: dict) -> float:
    """The masked v-loss at t = 0.1 ... 0.9 with fixed noise and no condition dropout."""
    x0, m = batch["latents"], batch["mask"][:, None].float()
    g = torch.Generator().manual_seed(1234)
    total = 0.0
    times = (0.1, 0.3, 0.5, 0.7, 0.9)
    for t in times:
        eps = torch.randn(x0.shape, generator=g)
        tt = torch.full((x0.shape[0],), t)
        a, s = math.cos(t * math.pi / 2), math.sin(t * math.pi / 2)
        v = denoiser(a * x0 + s * eps, tt, conditions(batch), dropout=False)
        total += float((((v - (a * eps - s * x0)) ** 2) * m).sum() / (m.sum() * x0.shape[1]))
    return total / len(times)


@torch.no_grad()
def generation_errors(denoiser: Denoiser, vae, batch: dict, *, steps: int, cfg_scale: float,
                      gain: float = 1.0) -> tuple[list, float]:
    """Per clip: (MAE L, MAE R) in LU between the curve of the generated audio and that of the clip's own
    latents, both decoded by `vae`, over frames above -60 LUFS; and the latent error: the mean squared
    difference of generated and clip latents over the clips' valid frames, relative to the clip latents' variance."""
    out, num, den = [], 0.0, 0.0
    for i in range(batch["latents"].shape[0]):
        item = {k: v[i:i + 1] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        frames = int(item["mask"][0].sum())
        z = generate_latents(denoiser, item, steps=steps, cfg_scale=cfg_scale, seed=i)[:, :, :frames]
        ref = item["latents"][:, :, :frames]
        num += float(((z - ref) ** 2).sum())
        den += float(((ref - ref.mean()) ** 2).sum())
        made, own = vae.decode(z * gain)[0], vae.decode(ref * gain)[0]
        out.append(lufs_tracking(LufsCurve.measure(own), LufsCurve.measure(made)).mae)
    return out, num / den


def measure(cache, run_dir, info, *, steps: int, lr: float = 2e-3, sample_steps: int = 25,
            cfg_scale: float = 1.0, generate: bool = True, gain: float = 1.0) -> dict:
    overrides = [f"data.path={cache}", f"run.steps={steps}", f"run.save_every={steps}", "run.log_every=50",
                 "run.sample_every=0", "data.sample_latents=false", "data.crop_seconds=2.0", "data.batch_size=5",
                 f"optim.lr={lr}", "optim.warmup_steps=10", "optim.ema_decay=0.99", "optim.min_lr_ratio=0.1"]
    config = apply_overrides(get_recipe("cpu-smoke"), overrides)
    model = build_model(config.model.preset, seed=config.run.seed)  # the trainer's starting weights
    rate = model.config.sequence.latent_rate
    batch = clips(cache, rate)
    untrained = Denoiser(dit=model.dit, conditioner=model.conditioner).eval()
    before = fixed_loss(untrained, batch)
    baseline = generation_errors(untrained, model.vae, batch, steps=sample_steps, cfg_scale=cfg_scale, gain=gain) \
        if generate else None
    trainer = DiTTrainer(config, info, run_dir)
    t0 = time.perf_counter()
    trainer.fit()
    seconds = time.perf_counter() - t0
    ema = ema_copy(trainer, "denoiser")
    after = fixed_loss(ema, batch)
    result = {"steps": steps, "train_seconds": seconds, "loss_before": before, "loss_after": after,
              "loss_factor": before / after}
    if generate:
        errors, latent = generation_errors(ema, model.vae, batch, steps=sample_steps, cfg_scale=cfg_scale, gain=gain)
        result.update(lu_max=max(max(e) for e in errors), lu_mean=sum(sum(e) for e in errors) / (2 * len(errors)),
                      latent_error=latent, untrained_lu_max=max(max(e) for e in baseline[0]),
                      untrained_latent_error=baseline[1])
    return result
