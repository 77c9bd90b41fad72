"""`ModelConfig.latent_scale` (Stable Audio's pretransform scale): the DiT samples VAE latents divided by it.

Generation decodes the DiT's latents times the scale, the DiT trainer's crops are the cached latents divided by it,
checkpoints keep it, older configs read as 1, and `triergon data stats` measures the value for a cache. Also the
crop alignment of `LatentCrops`: a crop starts at the latent frame nearest a LUFS window's start.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from _helpers import train_on_cpu

from triergon.train.data.cache import CacheIndex, latent_stats
from triergon.train.data.datasets import LatentCrops
from triergon.train.sampler import SampleRef
from triergon.triergon_core.checkpoint import load_checkpoint, save_checkpoint
from triergon.triergon_core.conditioning import normalize_lufs
from triergon.triergon_core.config import ModelConfig
from triergon.triergon_core.generate import generate
from triergon.triergon_core.model import build_model
from triergon.triergon_core.presets import get_preset

LATENT_RATE = 44100 / 2048


def _scaled(model, scale: float):
    model.config = dataclasses.replace(model.config, latent_scale=scale)
    return model


def test_config_keeps_the_scale_and_older_configs_read_as_one():
    config = dataclasses.replace(get_preset("tiny"), latent_scale=0.3)
    assert ModelConfig.from_json(config.to_json()) == config
    old = get_preset("tiny").to_dict()
    del old["latent_scale"]
    assert ModelConfig.from_dict(old).latent_scale == 1.0
    assert all(get_preset(name).latent_scale == 1.0 for name in ("tiny", "demo", "triergon-s", "sao-1.0"))
    for bad in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="latent_scale"):
            dataclasses.replace(get_preset("tiny"), latent_scale=bad)


def test_generate_decodes_the_dit_latents_times_the_scale(monkeypatch):
    model = build_model("tiny", seed=0)
    decode = model.vae.decode
    seen = []

    def recording(latents, **kwargs):
        seen.append(latents.clone())
        return decode(latents, **kwargs)

    monkeypatch.setattr(model.vae, "decode", recording)
    outputs = [generate(_scaled(model, s), seconds=0.5, steps=2, seed=3) for s in (1.0, 2.0)]
    assert torch.equal(seen[1], 2 * seen[0])  # the same DiT latents, times 2 (exact in binary)
    assert not torch.equal(outputs[0], outputs[1])
    with torch.inference_mode():
        assert torch.equal(model.decode(seen[0]), decode(seen[1]))


def test_checkpoints_keep_the_scale(tmp_path):
    model = _scaled(build_model("tiny", seed=0), 0.25)
    assert load_checkpoint(save_checkpoint(model, tmp_path / "m.safetensors")).config.latent_scale == 0.25


def test_latent_crops_divide_by_the_scale(train_data):
    kwargs = {"crop_seconds": 1.5, "seed": 0, "latent_rate": LATENT_RATE, "sample_latents": False}
    plain, scaled = LatentCrops(train_data["cache"], **kwargs), LatentCrops(train_data["cache"], **kwargs,
                                                                            latent_scale=0.5)
    for ref in (SampleRef(1, 0, 1.0), SampleRef(0, 0, 1.0)):
        assert torch.equal(scaled[ref]["latents"], plain[ref]["latents"] / 0.5)
        assert torch.equal(scaled[ref]["lufs"], plain[ref]["lufs"])


def test_latent_crops_start_at_a_lufs_window(train_data):
    data = LatentCrops(train_data["cache"], crop_seconds=0.5, seed=0, latent_rate=LATENT_RATE,
                       sample_latents=False)
    cache = CacheIndex(train_data["cache"])
    item = cache.item(1)
    starts = set()
    for epoch in range(40):
        crop = data[SampleRef(1, epoch, 1.0)]
        start = round(float(crop["seconds_start"]) * LATENT_RATE)
        window = round(float(crop["seconds_start"]) * 6)
        starts.add(start)
        # within half a latent frame (23 ms) of the window's start; the curve is cut from that window
        assert abs(start / LATENT_RATE - window / 6) <= 0.5 / LATENT_RATE + 1e-9
        assert torch.equal(crop["latents"], item["latent_mean"][:, start:start + data.crop])
        assert torch.equal(crop["lufs"], normalize_lufs(item["lufs"])[:, window:window + 3])
        assert start + data.crop <= item["latent_mean"].shape[-1]
    assert len(starts) > 3  # the starts vary between epochs


def test_latent_stats_and_the_stats_command(train_data, capsys):
    from triergon.triergon_core.cli import main

    cache = CacheIndex(train_data["cache"])
    means = torch.cat([cache.item(i)["latent_mean"].flatten() for i in range(len(cache))]).double()
    stds = torch.cat([cache.item(i)["latent_std"].flatten() for i in range(len(cache))]).double()
    stats = latent_stats(train_data["cache"])
    assert stats["clips"] == len(cache)
    assert stats["mean_std"] == pytest.approx(float(means.std(unbiased=False)), rel=1e-9)
    assert stats["mean_mean"] == pytest.approx(float(means.mean()), rel=1e-9, abs=1e-12)
    assert stats["posterior_std"] == pytest.approx(float(stds.mean()), rel=1e-9)
    assert main(["data", "stats", str(train_data["cache"])]) == 0
    assert f"--set model.latent_scale={stats['mean_std']:.4g}" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no clips of split 'test'"):
        latent_stats(train_data["cache"], split="test")


def test_a_dit_run_sets_the_scale_and_its_export_keeps_it(train_data, tmp_path):
    from triergon.train.export import export_run

    trainer = train_on_cpu("cpu-smoke", tmp_path / "run", [
        f"data.path={train_data['cache']}", "run.steps=1", "run.save_every=1", "run.sample_every=0",
        "model.latent_scale=0.5", "data.sample_latents=false"])
    assert trainer.model_config.latent_scale == 0.5
    path, _ = export_run(tmp_path / "run", tmp_path / "model.safetensors")
    assert load_checkpoint(path).config.latent_scale == 0.5
