"""The frame-aligned LUFS path (beyond the paper, `ConditioningConfig.lufs_frame_aligned`): the resampling to the
latent rate, its zero-initialised projection into the DiT's input, CFG's unconditional half, the prepared
sampling path, checkpoints and a training run with it; and, off, the model exactly as before."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from _helpers import max_rel_err, perturb_, train_on_cpu

from triergon.train.trainers.dit import Denoiser, with_lufs_frame_aligned
from triergon.triergon_core.checkpoint import load_checkpoint, save_checkpoint
from triergon.triergon_core.conditioning import Conditions, lufs_at_latent_rate
from triergon.triergon_core.config import ModelConfig
from triergon.triergon_core.dit import DiT
from triergon.triergon_core.generate import generate, sample_latents
from triergon.triergon_core.model import build_model
from triergon.triergon_core.presets import PRESETS, get_preset
from triergon.triergon_core.sampling import GuidedDenoiser, sample

LATENT_RATE = 44100 / 2048
FP32_TOL = 1e-5  # as test_inference_paths: measured 0 here, the margin is for other BLAS builds


def _curves(b: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(b, 2, frames, generator=torch.Generator().manual_seed(seed))


def _conditions(b: int, frames: int, seed: int = 0) -> Conditions:
    g = torch.Generator().manual_seed(seed)
    return Conditions(seconds_start=torch.zeros(b), seconds_total=torch.full((b,), frames / 6),
                      text=torch.randn(b, 1, 64, generator=g), video=torch.randn(b, 1, 64, generator=g),
                      lufs=torch.rand(b, 2, frames, generator=g))


def _first(cond: Conditions) -> Conditions:
    """Item 0 of a batch of conditions (what `generate` takes)."""
    return Conditions(**{f.name: None if getattr(cond, f.name) is None else getattr(cond, f.name)[:1]
                         for f in dataclasses.fields(cond)})


def _on_model(seed: int = 1):
    """The tiny model with the path added to random weights, every weight (the projection too) perturbed."""
    return perturb_(with_lufs_frame_aligned(build_model("tiny", seed=0)), seed=seed).requires_grad_(False)


# ------------------------------------------------------------------------------------------------ resampling


def test_resampling_of_a_known_curve():
    """Curve [0, 1] at 6 frames/s: values at 1/12 s and 3/12 s, the curve ends at 1/3 s."""
    out = lufs_at_latent_rate(torch.tensor([[[0.0, 1.0], [1.0, 0.5]]]), max_frames=2, lufs_rate=6.0,
                              latent_rate=LATENT_RATE, latent_frames=9)
    centres = (np.arange(9) + 0.5) / LATENT_RATE
    ramp = np.clip((centres - 1 / 12) * 6, 0, 1)  # left: 0 up to 1/12 s, 1 from 3/12 s on
    inside = centres < 1 / 3
    assert inside.tolist() == [True] * 7 + [False] * 2
    np.testing.assert_allclose(out[0, 0].numpy(), np.where(inside, ramp, 0), rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[0, 1].numpy(), np.where(inside, 1 - 0.5 * ramp, 0), rtol=0, atol=1e-6)
    # latent frame 3 (centre 0.1625 s) is 47.5 % of the way from the first value to the second
    assert abs(out[0, 0, 3].item() - (3.5 * 2048 / 44100 - 1 / 12) * 6) < 1e-6 and abs(out[0, 0, 3] - 0.4752) < 1e-4


@pytest.mark.parametrize("frames", [1, 7, 60])
def test_resampling_equals_numpy_interpolation_at_frame_centres(frames):
    curves = _curves(3, frames, seed=frames)
    out = lufs_at_latent_rate(curves, max_frames=60, lufs_rate=6.0, latent_rate=LATENT_RATE, latent_frames=216)
    assert out.shape == (3, 2, 216)
    centres = (np.arange(216) + 0.5) / LATENT_RATE
    for b in range(3):
        for c in range(2):
            want = np.interp(centres, (np.arange(frames) + 0.5) / 6, curves[b, c].double().numpy())
            want[centres >= frames / 6] = 0  # zero past the curve's end, as E_L's padding
            np.testing.assert_allclose(out[b, c].numpy(), want, rtol=0, atol=1e-6)


def test_resampling_rejects_too_long_and_empty_curves():
    with pytest.raises(ValueError, match="61 frames, more than the maximum 60"):
        lufs_at_latent_rate(_curves(1, 61), max_frames=60, lufs_rate=6.0, latent_rate=LATENT_RATE, latent_frames=216)
    with pytest.raises(ValueError, match="no frames"):
        lufs_at_latent_rate(_curves(1, 0), max_frames=60, lufs_rate=6.0, latent_rate=LATENT_RATE, latent_frames=216)


def test_conditioner_gives_the_curves_at_the_latent_rate_and_drops_them_with_e():
    model = build_model(get_preset("tiny").with_lufs_frame_aligned(), seed=0)
    cond = _conditions(4000, 12)
    with torch.no_grad():
        _, _, frames = model.conditioner(cond)
        expected = lufs_at_latent_rate(cond.lufs, max_frames=360, lufs_rate=6.0, latent_rate=LATENT_RATE,
                                       latent_frames=1292)
        assert frames.shape == (4000, 2, 1292) and torch.equal(frames, expected)
        assert torch.count_nonzero(model.conditioner(cond.without("lufs"))[2]) == 0  # no curve: zeros
        e_drop, _, frames_drop = model.conditioner(cond, dropout=True, generator=torch.Generator().manual_seed(3))
    dropped = (e_drop.flatten(1) == 0).all(dim=1)
    assert 300 < int(dropped.sum()) < 500  # cfg_dropout 0.1
    assert torch.count_nonzero(frames_drop[dropped]) == 0 and torch.equal(frames_drop[~dropped], frames[~dropped])


# ------------------------------------------------------------------------------------------------ config


def test_presets_keep_it_off_and_old_configs_load_with_it_off():
    for name in PRESETS:
        config = get_preset(name)
        assert not config.conditioning.lufs_frame_aligned and config.dit.frame_cond_dim == 0, name
    data = get_preset("tiny").to_dict()
    del data["conditioning"]["lufs_frame_aligned"], data["dit"]["frame_cond_dim"]  # a checkpoint from before
    assert ModelConfig.from_dict(data) == get_preset("tiny")
    on = get_preset("tiny").with_lufs_frame_aligned()
    assert on.conditioning.lufs_frame_aligned and on.dit.frame_cond_dim == 2
    assert ModelConfig.from_json(on.to_json()) == on and on.with_lufs_frame_aligned(False) == get_preset("tiny")
    with pytest.raises(ValueError, match="frame-aligned input must take the conditioner's 2 channels"):
        dataclasses.replace(on, dit=get_preset("tiny").dit)


def test_off_adds_no_keys_and_on_adds_one():
    config = get_preset("tiny").dit
    off = set(DiT(config=config).state_dict())
    on = set(DiT(config=dataclasses.replace(config, frame_cond_dim=2)).state_dict())
    assert not any("frame" in k for k in off) and on - off == {"to_frame_embed.weight"} and off <= on


def test_off_outputs_equal_the_code_before():
    """Sums of the tiny model's outputs (float64, every weight random) recorded with the code before the path
    existed (the two agreed bit for bit): E with training dropout, one DiT evaluation, 4 CFG sampling steps."""
    model = build_model("tiny", seed=0).double()
    g = torch.Generator().manual_seed(1)
    b = 4
    with torch.no_grad():
        for _, p in sorted([*model.dit.named_parameters(), *model.conditioner.named_parameters()]):
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.05)
        cond = Conditions(seconds_start=torch.tensor([0.0, 1.0, 2.0, 0.5]),
                          seconds_total=torch.tensor([3.0, 4.0, 5.0, 2.0]),
                          text=torch.randn(b, 1, 64, generator=g, dtype=torch.float64),
                          video=torch.randn(b, 1, 64, generator=g, dtype=torch.float64),
                          lufs=torch.rand(b, 2, 12, generator=g, dtype=torch.float64))
        x, t = torch.randn(b, 16, 23, generator=g, dtype=torch.float64), torch.rand(b, generator=g, dtype=torch.float64)
        noise = torch.randn(1, 16, 23, generator=g, dtype=torch.float64)
        e, global_cond, frames = model.conditioner(cond, dropout=True, generator=torch.Generator().manual_seed(5))
        assert frames is None
        v = model.dit(x, t.float(), e, global_cond)
        e1, g1, _ = model.conditioner(_first(cond))
        z = sample(GuidedDenoiser(model.dit, e1, g1, cfg_scale=7.0), noise, steps=4)
    recorded = {"e": (25.986011472281472, 472.52796548210193), "v": (10.834466944567682, 140.5780638565784),
                "z": (-4.5403000470250845, 238.54086674936116)}
    for name, out, rtol in (("e", e, 1e-13), ("v", v, 1e-12), ("z", z, 1e-6)):
        got = (out.double().sum().item(), out.double().abs().sum().item())
        np.testing.assert_allclose(got, recorded[name], rtol=rtol, err_msg=name)


# ------------------------------------------------------------------------------------------------ the DiT


def test_zero_initialised_path_is_a_no_op():
    off = perturb_(build_model("tiny", seed=0), seed=1).requires_grad_(False)
    on = with_lufs_frame_aligned(off)
    assert on.config.conditioning.lufs_frame_aligned and torch.count_nonzero(on.dit.to_frame_embed.weight) == 0
    assert all(torch.equal(v, on.state_dict()[k]) for k, v in off.state_dict().items())
    cond = _conditions(2, 12)
    x, t = torch.randn(2, 16, 45), torch.rand(2)
    with torch.no_grad():
        e, g, frames = on.conditioner(cond)
        assert torch.count_nonzero(frames) > 0
        assert torch.equal(on.dit(x, t, e, g, frame_cond=frames), off.dit(x, t, *off.conditioner(cond)[:2]))
    noise = torch.randn(1, 16, 45)
    runs = [sample_latents(m, _first(cond), noise, steps=3) for m in (off, on)]  # CFG, prepared conditioning
    assert torch.equal(runs[0], runs[1])


def test_gradients_reach_the_projection_and_not_from_dropped_rows():
    model = with_lufs_frame_aligned(build_model("tiny", seed=0))  # fresh: the projection is zero
    denoiser = Denoiser(dit=model.dit, conditioner=model.conditioner).train()
    cond, z, t = _conditions(2, 6), torch.randn(2, 16, 22), torch.rand(2)
    denoiser(z, t, cond, dropout=False).pow(2).mean().backward()
    grad = model.dit.to_frame_embed.weight.grad
    assert grad is not None and grad.abs().max() > 1e-6
    model.dit.zero_grad()
    model.conditioner.config = dataclasses.replace(model.conditioner.config, cfg_dropout=1.0)
    denoiser(z, t, cond, dropout=True).pow(2).mean().backward()
    assert torch.count_nonzero(model.dit.to_frame_embed.weight.grad) == 0  # every row dropped: no curve seen


def test_cfg_unconditional_half_sees_zeros_and_guidance_is_the_two_halves():
    model = _on_model()
    cond = _conditions(1, 12)
    z, t = torch.randn(1, 16, 45), torch.rand(1)
    seen = []
    model.dit.to_frame_embed.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with torch.no_grad():
        e, g, frames = model.conditioner(cond)
        ref = model.dit(z, t, e, g, frame_cond=frames)
        uncond = model.dit(z, t, torch.zeros_like(e), g, frame_cond=torch.zeros_like(frames))
        assert max_rel_err(model.dit(z, t, e, g), ref) > 1e-3  # the path matters with these weights
        for cache in (False, True):
            seen.clear()
            guided = GuidedDenoiser(model.dit, e, g, cfg_scale=7.0, frame_cond=frames, cache_conditioning=cache)(z, t)
            (inputs,) = seen[-1:]  # prepared: the whole window once; else the step's 45 frames
            assert inputs.shape[:2] == (2, 1292 if cache else 45)
            assert torch.equal(inputs[0], frames[0, :, :inputs.shape[1]].T)
            assert torch.count_nonzero(inputs[1]) == 0
            assert max_rel_err(guided, uncond + (ref - uncond) * 7.0) <= FP32_TOL, cache


def test_prepared_path_equals_the_unprepared_one():
    model = _on_model(seed=2)
    cond = _conditions(3, 12, seed=4)
    with torch.no_grad():
        e, g, frames = model.conditioner(cond)
        e[1], frames[1] = 0, 0  # an unconditional row: its cross-attention is skipped
        prepared = model.dit.prepare(e, g, frame_cond=frames)
        assert prepared.cross[0].rows.tolist() == [0, 2] and prepared.frame_embed.shape == (3, 1292, 128)
        for frames_n in (45, 17):
            x, t = torch.randn(3, 16, frames_n), torch.rand(3)
            err = max_rel_err(model.dit(x, t, prepared=prepared), model.dit(x, t, e, g, frame_cond=frames))
            assert err <= FP32_TOL, (frames_n, err)


def test_a_dit_without_the_path_refuses_a_frame_condition():
    dit = build_model("tiny", seed=0).dit
    with pytest.raises(AssertionError, match="takes no frame-aligned condition"):
        dit(torch.randn(1, 16, 5), torch.rand(1), torch.randn(1, 8, 64), torch.randn(1, 128),
            frame_cond=torch.zeros(1, 2, 1292))


# ------------------------------------------------------------------------------------------------ files, training


def test_checkpoint_round_trip_keeps_the_path(tmp_path):
    model = _on_model()
    path = save_checkpoint(model, tmp_path / "on.safetensors")
    loaded = load_checkpoint(path)
    assert loaded.config == model.config and loaded.config.conditioning.lufs_frame_aligned
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    noise = torch.randn(1, 16, 22)
    runs = [sample_latents(m, _conditions(1, 6), noise, steps=2) for m in (model, loaded)]
    assert torch.equal(runs[0], runs[1])


def test_training_with_the_path_on(train_data, tmp_path):
    from triergon.train.export import export_run

    trainer = train_on_cpu("cpu-smoke", tmp_path / "run", [
        f"data.path={train_data['cache']}", "run.steps=1", "run.save_every=1", "run.sample_every=1",
        "run.sample_steps=1", "model.lufs_frame_aligned=true"])
    assert trainer.model_config.conditioning.lufs_frame_aligned
    weight = trainer.parts["denoiser"].module.dit.to_frame_embed.weight
    assert torch.isfinite(weight).all() and torch.count_nonzero(weight) > 0  # it trained away from zero
    path, _ = export_run(tmp_path / "run", tmp_path / "model.safetensors")
    model = load_checkpoint(path)
    assert model.config.conditioning.lufs_frame_aligned and torch.count_nonzero(model.dit.to_frame_embed.weight)
    audio = generate(model, seconds=0.5, lufs=torch.full((2, 3), -20.0), steps=2)
    assert audio.shape == (1, 2, 22050) and torch.isfinite(audio).all()
