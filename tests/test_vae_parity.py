"""Oobleck VAE and SnakeBeta against Stable Audio Open (stable-audio-tools 0.0.19) reference outputs."""

from __future__ import annotations

import json

import pytest
import torch
from _helpers import DATA, load_case, max_rel_err, split_case

from triergon.kernels.snake import snake_beta_reference
from triergon.triergon_core.config import VAEConfig
from triergon.triergon_core.layers import SnakeBeta
from triergon.triergon_core.model import build_model
from triergon.triergon_core.sao import infer_vae_config
from triergon.triergon_core.vae import OobleckVAE, split_bottleneck

TOL = 1e-5


@pytest.fixture(scope="module")
def vae_case():
    tensors, desc = load_case("vae_tiny")
    state, io = split_case(tensors)
    enc = desc["config"]["model"]["encoder"]["config"]
    dec = desc["config"]["model"]["decoder"]["config"]
    assert enc["c_mults"] == dec["c_mults"] and enc["strides"] == dec["strides"]
    config = VAEConfig(audio_channels=enc["in_channels"], channels=enc["channels"],
                       c_mults=tuple(enc["c_mults"]), strides=tuple(enc["strides"]),
                       latent_dim=dec["latent_dim"])
    vae = OobleckVAE(config=config).eval()
    vae.load_state_dict(state, strict=True)
    return vae, io


def test_snakebeta_forward_and_gradients():
    tensors, _ = load_case("snakebeta")
    layer = SnakeBeta(tensors["alpha"].numel())
    layer.load_state_dict({"alpha": tensors["alpha"], "beta": tensors["beta"]}, strict=True)
    x = tensors["input.x"].clone().requires_grad_(True)
    y = layer(x)
    (y**2).sum().backward()
    errors = {
        "y": max_rel_err(y, tensors["output.y"]),
        "grad_x": max_rel_err(x.grad, tensors["output.grad_x"]),
        "grad_alpha": max_rel_err(layer.alpha.grad, tensors["output.grad_alpha"]),
        "grad_beta": max_rel_err(layer.beta.grad, tensors["output.grad_beta"]),
    }
    print("SnakeBeta max relative errors:", errors)
    assert all(e <= TOL for e in errors.values()), errors
    torch.testing.assert_close(snake_beta_reference(x.detach(), layer.alpha, layer.beta), y.detach())


def test_vae_encoder_and_layers(vae_case):
    vae, io = vae_case
    with torch.no_grad():
        h = io["input.audio"]
        for i, layer in enumerate(vae.encoder.layers):
            h = layer(h)
            if f"debug.encoder.layers.{i}" in io:
                assert max_rel_err(h, io[f"debug.encoder.layers.{i}"]) <= TOL, f"encoder layer {i}"
        err = max_rel_err(h, io["output.encoder_out"])
    print(f"encoder_out max relative error: {err:.2e}")
    assert err <= TOL


def test_vae_bottleneck(vae_case):
    vae, io = vae_case
    dist = split_bottleneck(io["output.encoder_out"])
    checks = {
        "mean": max_rel_err(dist.mean, io["output.bottleneck_mean"]),
        "stdev": max_rel_err(dist.stdev, io["output.bottleneck_stdev"]),
        "latents": max_rel_err(dist.sample(noise=io["input.bottleneck_noise"]), io["output.bottleneck_latents"]),
        "kl": max_rel_err(dist.kl(), io["output.kl"]),
    }
    print("bottleneck max relative errors:", checks)
    assert all(e <= TOL for e in checks.values()), checks
    # `encode` (unchunked, no sampling) gives the same mean end to end
    with torch.no_grad():
        mean = vae.encode(io["input.audio"], sample=False, chunk_frames=None)
    assert max_rel_err(mean, io["output.bottleneck_mean"]) <= TOL


def test_vae_decoder_and_layers(vae_case):
    vae, io = vae_case
    with torch.no_grad():
        h = io["input.latent"]
        for i, layer in enumerate(vae.decoder.layers):
            h = layer(h)
            if f"debug.decoder.layers.{i}" in io:
                assert max_rel_err(h, io[f"debug.decoder.layers.{i}"]) <= TOL, f"decoder layer {i}"
        errors = {
            "decoder_out": max_rel_err(vae.decode(io["input.latent"], chunk_frames=None), io["output.decoder_out"]),
            "decoder_out_from_mean": max_rel_err(vae.decode(io["output.bottleneck_mean"], chunk_frames=None),
                                                 io["output.decoder_out_from_mean"]),
        }
    print("decoder max relative errors:", errors)
    assert all(e <= TOL for e in errors.values()), errors


def test_infer_vae_config_from_weights(vae_case):
    vae, _ = vae_case
    state = {f"vae.{k}": v for k, v in vae.state_dict().items()}
    assert infer_vae_config(state) == vae.config


def test_full_size_vae_matches_sao_manifest():
    manifest = json.loads((DATA / "manifest_vae.json").read_text())
    model = build_model("sao-1.0", device="meta")
    ours = {k: list(v.shape) for k, v in model.vae.state_dict().items()}
    theirs = {e["key"]: e["shape"] for e in manifest["state_dict"]}
    assert set(ours) == set(theirs), (sorted(set(ours) ^ set(theirs))[:10])
    assert ours == theirs
    n_params = sum(p.numel() for p in model.vae.parameters())
    n_enc = sum(p.numel() for p in model.vae.encoder.parameters())
    n_dec = sum(p.numel() for p in model.vae.decoder.parameters())
    print(f"full-size VAE parameters: {n_params:,} (encoder {n_enc:,}, decoder {n_dec:,})")
    assert n_params == manifest["total_parameters"] == 156_112_514
    assert (n_enc, n_dec) == (manifest["encoder_parameters"], manifest["decoder_parameters"])
    # every conv and SnakeBeta has SAO's hyper-parameters
    modules = dict(model.vae.named_modules())
    for name, spec in manifest["modules"].items():
        module = modules[name]
        if spec["type"] == "SnakeBeta":
            assert isinstance(module, SnakeBeta) and module.alpha.numel() == spec["in_features"], name
            continue
        assert type(module).__name__.removeprefix("WN") == spec["type"], name
        got = (module.in_channels, module.out_channels, module.kernel_size[0], module.stride[0],
               module.padding[0], module.dilation[0], module.bias is not None)
        want = (spec["in_channels"], spec["out_channels"], spec["kernel_size"], spec["stride"],
                spec["padding"], spec["dilation"], spec["bias"])
        assert got == want, name
