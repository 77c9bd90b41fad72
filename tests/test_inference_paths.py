"""The sampler's fast paths equal the reference path: conditioning prepared once per generation (cross-attention
keys/values, global embedding, rotary tables, the unconditional half's cross-attention skipped), and bf16."""

from __future__ import annotations

import math

import pytest
import torch
from _helpers import max_rel_err, perturb_

import triergon
from triergon.triergon_core.config import DiTConfig
from triergon.triergon_core.dit import DiT
from triergon.triergon_core.generate import sample_latents
from triergon.triergon_core.sampling import GuidedDenoiser, sample

# Measured on this CPU in fp32: the prepared path gives the reference result exactly (error 0, both DiTs,
# sub-batches included); the margin covers BLAS builds whose GEMM rounding depends on the batch size.
FP32_TOL = 1e-5


def small_dit() -> DiT:
    """A small random DiT unlike the tiny preset: 3 blocks, grouped kv heads (4 query heads share 2)."""
    torch.manual_seed(3)
    config = DiTConfig(io_channels=8, embed_dim=128, depth=3, num_heads=4, cond_token_dim=64, global_cond_dim=96)
    return perturb_(DiT(config=config).eval(), seed=3)


def tiny_dit() -> DiT:
    return perturb_(triergon.build_model("tiny", seed=0).dit, seed=1)


@pytest.mark.parametrize("make", [tiny_dit, small_dit], ids=["tiny", "small"])
def test_prepared_forward_equals_forward_over_steps(make):
    dit = make()
    c = dit.config
    b, frames = 3, 37
    context = torch.randn(b, 8, c.cond_token_dim)
    context[1] = 0  # an unconditional row in the middle: its cross-attention is skipped
    global_cond = torch.randn(b, c.global_cond_dim)
    seen = []  # batch rows reaching the cross-attention's query projection
    dit.transformer.layers[0].cross_attn.to_q.register_forward_hook(lambda m, a, out: seen.append(a[0].shape[0]))
    with torch.no_grad():
        prepared = dit.prepare(context, global_cond)
        assert prepared.cross[0].rows.tolist() == [0, 2]
        dit(torch.randn(b, c.io_channels, frames), torch.rand(b), prepared=prepared)
        assert seen == [2]  # the zero row skipped its cross-attention
        errors = []
        for _ in range(3):  # the same prepared conditioning serves every step
            x, t = torch.randn(b, c.io_channels, frames), torch.rand(b)
            ref = dit(x, t, context, global_cond)
            errors.append(max_rel_err(dit(x, t, prepared=prepared), ref))
        assert list(prepared.rotary) == [frames + 1]  # one rotary table for the step shape
    print(f"{make.__name__}: prepared vs reference max relative error per step {errors}")
    assert max(errors) <= FP32_TOL


def test_prepared_with_a_context_mask_and_no_zero_rows():
    dit = small_dit()
    c = dit.config
    context, global_cond = torch.randn(2, 8, c.cond_token_dim), torch.randn(2, c.global_cond_dim)
    mask = torch.tensor([[True] * 5 + [False] * 3, [True] * 8])
    x, t = torch.randn(2, c.io_channels, 20), torch.rand(2)
    with torch.no_grad():
        prepared = dit.prepare(context, global_cond, mask)
        assert prepared.cross[0].rows is None
        err = max_rel_err(dit(x, t, prepared=prepared), dit(x, t, context, global_cond, mask))
    assert err <= FP32_TOL, err


def test_zero_context_skip_needs_bias_free_layers():
    dit = small_dit()
    c = dit.config
    context, global_cond = torch.zeros(2, 8, c.cond_token_dim), torch.randn(2, c.global_cond_dim)
    with torch.no_grad():
        assert dit.prepare(context, global_cond).cross[0].rows.numel() == 0  # all rows skipped
        block = dit.transformer.layers[1].cross_attn
        block.to_out.bias = torch.nn.Parameter(torch.randn(c.embed_dim))  # a zero context no longer gives 0
        prepared = dit.prepare(context, global_cond)
        assert prepared.cross[0].rows is None
        x, t = torch.randn(2, c.io_channels, 9), torch.rand(2)
        assert max_rel_err(dit(x, t, prepared=prepared), dit(x, t, context, global_cond)) <= FP32_TOL


@pytest.mark.parametrize("sampler", ["dpmpp-2m", "ddim"])
def test_cached_sampling_equals_reference_sampling(sampler):
    dit = tiny_dit()
    context, global_cond = torch.randn(2, 8, 64), torch.randn(2, 128)
    noise = torch.randn(2, 16, 40)
    with torch.inference_mode():
        outs = [sample(GuidedDenoiser(dit, context, global_cond, cfg_scale=7.0, cache_conditioning=cache), noise,
                       sampler=sampler, steps=6) for cache in (False, True)]
    err = max_rel_err(outs[1], outs[0])
    print(f"{sampler}: cached vs reference sampling max relative error {err:.1e}")
    assert err <= FP32_TOL


def test_rotary_inv_freq_stays_float32_when_the_model_is_cast():
    dit = triergon.build_model("tiny", seed=0).dit
    rotary = dit.transformer.rotary_pos_emb
    exact = rotary(1300)
    for cast in (lambda m: m.to(torch.bfloat16), lambda m: m.half(), lambda m: m.to("cpu", torch.bfloat16)):
        cast(dit)
        assert rotary.inv_freq.dtype == torch.float32
        assert torch.equal(rotary(1300), exact)
    assert dit.to_timestep_embed[0].weight.dtype == torch.bfloat16  # everything else was cast
    # what keeping it buys: the angle error a bf16 inv_freq would give at position 1299
    err = (torch.outer(torch.arange(1300.0), rotary.inv_freq.bfloat16().float()) - exact[:, :16]).abs().max()
    print(f"bf16 inv_freq: angle error {err:.3f} rad at position 1299")
    assert err > 0.05


def test_bfloat16_weights_run_and_stay_close_to_float32():
    model = triergon.build_model("tiny", seed=0)
    perturb_(model.dit, seed=1)
    cond = triergon.prepare_conditions(model, seconds=1.0)
    noise = torch.randn(1, 16, model.config.sequence.latent_frames(1.0))
    ref = sample_latents(model, cond, noise, steps=4)
    model.dit.to(torch.bfloat16)
    with torch.inference_mode():
        t = torch.rand(2)
        feats = model.dit.timestep_features(t)  # float32 angles, bf16 result for the next layer
        assert feats.dtype == torch.bfloat16
    bf16 = sample_latents(model, cond, noise, steps=4)
    assert bf16.dtype == torch.float32  # the sampler's state stays float32
    err = max_rel_err(bf16, ref)
    print(f"bf16 weights vs fp32: max relative error of the latents {err:.3f}")
    assert err < 0.1


def test_generate_autocast_dtype():
    model = triergon.build_model("tiny", seed=0)
    perturb_(model.dit, seed=1)
    kwargs = dict(seconds=0.5, steps=3, seed=0)
    ref = triergon.generate(model, **kwargs)
    auto = triergon.generate(model, dtype="bfloat16", **kwargs)
    assert auto.dtype == torch.float32 and auto.shape == ref.shape and torch.isfinite(auto).all()
    err = max_rel_err(auto, ref)
    print(f"autocast bf16 vs fp32 generate: max relative error {err:.3f}")
    assert 0 < err < 0.2  # bf16 did run, and stayed near float32
    with pytest.raises(ValueError, match="unknown dtype"):
        triergon.generate(model, dtype="int8", **kwargs)


def test_fourier_features_match_the_matmul_form():
    dit = triergon.build_model("tiny", seed=0).dit
    t = torch.rand(5)
    w = dit.timestep_features.weight
    f = 2 * math.pi * t[:, None] @ w.T
    torch.testing.assert_close(dit.timestep_features(t), torch.cat([f.cos(), f.sin()], -1), rtol=0, atol=0)


def test_cli_generate_dtype(tmp_path):
    from triergon.triergon_core.cli import main

    out = tmp_path / "bf16.wav"
    assert main(["generate", "--seconds", "0.5", "--steps", "2", "--dtype", "bfloat16", "-q", "-o", str(out)]) == 0
    audio = triergon.load_audio(out)
    assert audio.shape == (2, 22050) and torch.isfinite(audio).all()


def test_offload_moves_the_vae_and_encoders_only_for_their_stage(monkeypatch):
    """With offload the VAE and the encoders are on the CPU while the DiT samples and visit the DiT's device for
    their stage only; the audio equals the path without offload. On the CPU both devices are the CPU, so the
    order of the moves is what is checked."""
    from _helpers import CountingEncoders

    model = triergon.build_model("tiny", seed=0)
    perturb_(model.dit, seed=1)
    encoders = CountingEncoders()
    kwargs = dict(seconds=0.5, steps=2, seed=0, text="rain")
    ref = triergon.generate(model, encoders=encoders, **kwargs)
    assert encoders.moves == []  # nothing moves without offload

    events: list[str] = []
    vae_to = model.vae.to
    monkeypatch.setattr(model.vae, "to", lambda device: events.append(f"vae->{device}") or vae_to(device))
    monkeypatch.setattr(encoders, "encode_text", lambda texts, encode=encoders.encode_text: (
        events.append(f"encode after {len(encoders.moves)} move"), encode(texts))[1])
    model.dit.register_forward_hook(lambda *_: events.append("dit step"))
    model.vae.decoder.register_forward_hook(lambda *_: events.append("decode"))
    out = triergon.generate(model, encoders=encoders, offload=True, **kwargs)
    assert torch.equal(out, ref)
    assert events == ["vae->cpu", "encode after 1 move", "dit step", "dit step", "vae->cpu", "decode", "vae->cpu"]
    assert encoders.moves == ["cpu", "cpu"]  # to the DiT's device (here the CPU) for encoding, then home


@pytest.mark.slow  # two generations and a compilation: about a minute here
def test_cli_generate_compile_and_offload(tmp_path, monkeypatch):
    from triergon.triergon_core.cli import main
    from triergon.triergon_core.sampling import COMPILE_BACKEND_ENV

    monkeypatch.setenv(COMPILE_BACKEND_ENV, "eager")  # Dynamo's capture without inductor's minutes on a CPU
    outs = [tmp_path / "eager.wav", tmp_path / "fast.wav"]
    assert main(["generate", "--seconds", "0.5", "--steps", "2", "-q", "-o", str(outs[0])]) == 0
    assert main(["generate", "--seconds", "0.5", "--steps", "2", "--compile", "default", "--offload", "-q",
                 "-o", str(outs[1])]) == 0
    assert torch.equal(triergon.load_audio(outs[1]), triergon.load_audio(outs[0]))
    with pytest.raises(SystemExit):
        main(["generate", "--seconds", "0.5", "--compile", "fast", "-o", str(tmp_path / "x.wav")])
